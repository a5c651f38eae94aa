"""Answers from an external engine: a real llama.cpp server on loopback.

The remote responder streams the answer (first token, many deltas), closes
its stream at once when told to stop, fails over clearly when the engine is
down or slow, and, in a live session, an engine killed mid-answer loses no
turn: the local LM writes the rest from the words already heard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.stack import SpeechStack
from duplex.audio import FRAME_SAMPLES, frames_of
from duplex.clock import VirtualClock
from duplex.config import ResponderSettings, Settings
from duplex.events import Event, ResponderFallback, ResponseAudio, ResponseDone, ResponseText
from duplex.ports import ResponderError
from duplex.tools import Tool, Tools
from models.responder import RemoteResponder
from models.tts import PiperSynthesizer
from tests.engine import MODEL, Engine, free_port

CONVERSATION = [
    {"role": "system", "content": "You are a helpful voice assistant. Keep answers short."},
    {"role": "user", "content": "Tell me about the tallest mountains in the world."},
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(tmp_path_factory.mktemp("engine") / "engine.log")
    yield engine
    engine.kill()


def responder(base_url: str, **settings: float) -> RemoteResponder:
    return RemoteResponder(
        ResponderSettings(kind="remote", base_url=base_url, model=MODEL, **settings),  # type: ignore[arg-type]
        max_tokens=40,
    )


def read_all(remote: RemoteResponder, seconds: float = 60) -> list[str]:
    deltas: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text, done = remote.read(4)
        if text:
            deltas.append(text)
        if done:
            return deltas
        time.sleep(0.01)
    raise AssertionError(f"the answer did not end in {seconds} s: {''.join(deltas)!r}")


def test_streams_an_answer_in_many_deltas(engine: Engine) -> None:
    remote = responder(engine.base_url)
    remote.start(CONVERSATION)
    deltas = read_all(remote)
    answer = "".join(deltas)
    print(f"first token after {remote.first_token_s:.3f} s: {answer!r}")
    assert remote.first_token_s is not None
    assert len(deltas) >= 3 and "mountain" in answer.lower()
    assert remote.read(4) == ("", True)  # nothing after the end


def test_stop_closes_the_stream_mid_answer_and_the_engine_serves_on(engine: Engine) -> None:
    remote = responder(engine.base_url)
    remote.start(CONVERSATION)
    while not remote.read(1)[0]:  # the first token
        time.sleep(0.01)
    stream = remote._stream
    assert stream is not None
    remote.stop()
    stream.thread.join(5)
    assert not stream.thread.is_alive()  # the socket is closed, the reader is gone
    assert remote.read(4) == ("", True)
    remote.start(CONVERSATION)  # the engine is free for the next answer
    assert "".join(read_all(remote))


def test_an_engine_that_is_down_fails_with_a_clear_reason() -> None:
    remote = responder(f"http://127.0.0.1:{free_port()}/v1")
    remote.start(CONVERSATION)
    deadline = time.monotonic() + 10
    with pytest.raises(ResponderError, match="unreachable"):
        while time.monotonic() < deadline:
            remote.read(4)
            time.sleep(0.01)


def test_a_missed_first_token_deadline_fails(engine: Engine) -> None:
    remote = responder(engine.base_url, first_token_ms=1)
    remote.start(CONVERSATION)
    time.sleep(0.005)
    with pytest.raises(ResponderError, match=r"no first token .* within 1 ms"):
        remote.read(4)


def test_an_engine_killed_mid_answer_loses_no_turn(tmp_path: Path) -> None:
    """A live session answers through the engine; the engine dies after the first
    words; the local LM writes the rest and the answer plays to its end."""
    engine = Engine(tmp_path / "engine.log")
    try:
        settings = Settings(
            responder=ResponderSettings(kind="remote", base_url=engine.base_url, model=MODEL)
        )
        stack = SpeechStack(settings)
        session = stack.new_session(VirtualClock())
        voice = PiperSynthesizer(noise_scale=0.0, noise_w=0.0)
        question = voice.synthesize("Can you tell me about the tallest mountains in the world?")
        silence = np.zeros(40 * 1000 * FRAME_SAMPLES // 20, dtype=np.int16)
        events: list[Event] = []
        for frame in frames_of(np.concatenate([question, silence])):
            step = session.step(frame)
            events += step
            if any(isinstance(e, ResponseText) for e in step) and engine.process.poll() is None:
                engine.kill()  # right after the engine's first words
            if any(isinstance(e, ResponseDone) for e in step):
                break
            if not any(isinstance(e, ResponderFallback) for e in events):
                time.sleep(0.02)  # the engine streams in real time
        [fallback] = [e for e in events if isinstance(e, ResponderFallback)]
        [done] = [e for e in events if isinstance(e, ResponseDone)]
        written = "".join(e.text for e in events if isinstance(e, ResponseText))
        print(f"fell back: {fallback.reason}; answer: {written!r}")
        assert done.status == "completed" and done.text
        assert sum(isinstance(e, ResponseAudio) for e in events) * 20 == done.played_ms
        # the LM holds the whole answer: the engine's words, then its own
        assert session.lm.messages()[-1] == {"role": "assistant", "content": written.strip()}
    finally:
        engine.kill()


def test_the_engine_gets_the_tools_and_its_call_streams_back(tmp_path: Path) -> None:
    """llama.cpp's generic tool format (chatml-function-calling) with the shipped GGUF:
    a forced call comes back as the answer's tool call, arguments valid JSON."""
    engine = Engine(tmp_path / "engine.log", chat_format="chatml-function-calling")
    try:
        weather = Tool(
            "get_weather",
            "The weather now in a city.",
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        )
        remote = responder(engine.base_url)
        question = [{"role": "user", "content": "What is the weather in Paris?"}]
        remote.start(question, Tools((weather,), choice="get_weather"))
        read_all(remote)
        call = remote.tool_call()
        assert call is not None and call.name == "get_weather"
        assert isinstance(json.loads(call.arguments).get("city"), str)
    finally:
        engine.kill()
