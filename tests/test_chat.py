"""`duplex chat` on real PortAudio devices: PulseAudio null sinks (tests/pulse.py).

The assistant runs as a user runs it, a `duplex chat` process with the
embedded models. The test speaks into the virtual microphone with paplay and
records the virtual speaker with parec; the process writes its events to a
file, which is how the test follows the conversation.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.stack import SpeechStack
from duplex.audio import SAMPLE_RATE, Int16Array, rms_db
from duplex.config import Settings
from models.asr import WhisperRecognizer, wer
from models.tts import PiperSynthesizer
from server.app import DuplexServer, StackSessions
from tests import pulse
from tests.live import LiveServer

Events = list[dict[str, Any]]


@pytest.fixture(scope="module")
def voice() -> PiperSynthesizer:
    pulse.start()
    return PiperSynthesizer(noise_scale=0.0, noise_w=0.0)  # the same audio every run


def speech_wav(voice: PiperSynthesizer, text: str, path: Path) -> Path:
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.int16), voice.synthesize(text)])
    return pulse.write_wav(path, pcm)


class Chat:
    """A `duplex chat` process and its events file."""

    def __init__(self, tmp: Path, *options: str) -> None:
        self.path = tmp / "events.jsonl"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "chat", "--quiet", "--events", str(self.path),
             "--seconds", "240", *options],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def events(self) -> Events:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def wait(self, done: Callable[[Events], bool], seconds: float, what: str) -> Events:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            events = self.events()
            if done(events):
                return events
            assert self.process.poll() is None, f"duplex chat exited: {self.process.stderr}"
            time.sleep(0.1)
        quiet = ("response_text", "turn_estimate")
        said = [f"{e['type']}@{e.get('audio_ms')} {e.get('text', '')}".strip()
                for e in self.events() if e["type"] not in quiet]  # fmt: skip
        raise AssertionError(f"no {what} in {seconds} s: {said}")

    def stop(self) -> tuple[Events, str]:
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=30)
        return self.events(), err


def started(process: Chat) -> Iterator[Chat]:
    process.wait(lambda e: any(x["type"] == "ready" for x in e), 90, "ready")
    yield process
    if process.process.poll() is None:
        process.process.kill()


@pytest.fixture
def chat(voice: PiperSynthesizer, tmp_path: Path) -> Iterator[Chat]:
    yield from started(Chat(tmp_path))


def count(events: Events, kind: str) -> int:
    return sum(1 for e in events if e["type"] == kind)


def spoken_words(pcm: Int16Array) -> str:
    recognizer = WhisperRecognizer()
    voiced = np.flatnonzero(np.abs(pcm) > 300)
    if voiced.size == 0:
        return ""
    text, _ = recognizer.transcribe(
        pcm[voiced[0] : voiced[-1] + 1].astype(np.float32)[:480_000] / 32768.0
    )
    return text


def test_answers_a_spoken_question_through_real_devices(
    chat: Chat, voice: PiperSynthesizer, tmp_path: Path
) -> None:
    asks_and_hears_an_answer(chat, voice, tmp_path)


def test_remote_mode_talks_through_a_server(voice: PiperSynthesizer, tmp_path: Path) -> None:
    """`duplex chat --server`: the devices here, the models in a `duplex serve`."""
    server = LiveServer(DuplexServer(StackSessions(SpeechStack(Settings())), port=0))
    try:
        url = f"ws://{server.url}/v1/stream"
        for chat in started(Chat(tmp_path, "--server", url)):
            asks_and_hears_an_answer(chat, voice, tmp_path)
    finally:
        server.stop()


QUESTION = "What is the capital of France?"


def asks_and_hears_an_answer(chat: Chat, voice: PiperSynthesizer, tmp_path: Path) -> None:
    recorder = pulse.Recorder(tmp_path / "speaker.raw")
    pulse.play(speech_wav(voice, QUESTION, tmp_path / "q.wav")).wait(30)
    events = chat.wait(lambda e: count(e, "response_done") >= 1, 60, "answer")
    time.sleep(0.5)  # the last blocks leave the speaker
    answer = recorder.stop()
    events, _ = chat.stop()
    [final] = [e["text"] for e in events if e["type"] == "transcript_final"][:1]
    # every word arrived, at most one misheard: on this voice Whisper tiny's choice
    # between "France" and "friends" turns on rounding (OpenBLAS threads, device
    # filters), and the recognizer's accuracy is test_asr's to measure
    assert wer(QUESTION, final) <= 1 / len(QUESTION.split()), final
    assert rms_db(answer) > -45, "the speaker stayed silent"
    heard = spoken_words(answer)
    assert len(heard.split()) >= 2, heard


def test_echo_path_no_self_interruption_and_a_barge_in_stops_it(
    chat: Chat, voice: PiperSynthesizer, tmp_path: Path
) -> None:
    module = pulse.loopback()
    try:
        pulse.play(speech_wav(voice, "What is the capital of France?", tmp_path / "q.wav"))
        events = chat.wait(lambda e: count(e, "response_done") >= 1, 60, "first answer")
        # its own voice came back through the microphone for the whole answer
        assert count(events, "interrupted") == 0, [e["type"] for e in events]
        [done] = [e for e in events if e["type"] == "response_done"]
        assert done["status"] == "completed"

        story = "Can you tell me a long story about a dragon and a princess?"
        pulse.play(speech_wav(voice, story, tmp_path / "story.wav"))
        chat.wait(lambda e: count(e, "turn_taken") >= 2, 60, "second answer")
        time.sleep(1.5)  # it is talking, and hearing itself
        barge_in = "No, stop. Tell me about the moon instead."
        pulse.play(speech_wav(voice, barge_in, tmp_path / "barge-in.wav"))
        events = chat.wait(lambda e: count(e, "interrupted") >= 1, 30, "barge-in")
        [interrupted] = [e for e in events if e["type"] == "interrupted"]
        assert interrupted["response_id"] == 2
    finally:
        pulse.unload(module)
    events, err = chat.stop()
    [echo] = [e for e in events if e["type"] == "echo"]
    print(f"ERLE {echo['erle_db']:.1f} dB, gated blocks {echo['gated_blocks']}")
    assert echo["erle_db"] is not None and echo["erle_db"] > 10
    assert "ERLE" in err
