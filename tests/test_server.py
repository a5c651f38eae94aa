"""The websocket server, live on loopback with the real models.

One server (module fixture) runs on its own thread and event loop; each test
talks to it as a client would: the official OpenAI SDK, openai-agents, pipecat
and LiveKit's realtime plugin for `/v1/realtime`, raw websockets for
`/v1/stream` and for bad input, plain HTTP for health and metrics.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.stack import SpeechStack
from benchmarks import remote, scenarios
from benchmarks.runner import run_one
from client.remote import RemoteError, RemoteSession
from duplex.audio import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Frame,
    Int16Array,
    float_to_pcm16,
    pcm16_to_float,
    resample,
)
from duplex.config import Settings
from duplex.session import Session
from server.app import DuplexServer, Limits, StackSessions
from tests.engine import free_port
from tests.live import LiveServer
from tests.test_faults import fail_once

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def sessions() -> StackSessions:
    return StackSessions(SpeechStack(Settings()))


@pytest.fixture(scope="module")
def live(sessions: StackSessions) -> Iterator[LiveServer]:
    server = LiveServer(
        DuplexServer(sessions, port=0, limits=Limits(max_sessions=3, max_message_bytes=200_000))
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def question(sessions: StackSessions) -> Int16Array:
    """The question at 16 kHz, with a second of silence after it."""
    sessions.load()
    pcm = sessions.stack.voice.synthesize(QUESTION)
    return np.concatenate([np.zeros(8000, np.int16), pcm, np.zeros(SAMPLE_RATE * 3, np.int16)])


def at_rate(pcm: Int16Array, rate: int) -> bytes:
    if rate == SAMPLE_RATE:
        return pcm.astype("<i2").tobytes()
    out = resample(pcm16_to_float(pcm), SAMPLE_RATE, rate)
    return float_to_pcm16(out).astype("<i2").tobytes()


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def paced(chunks: list[bytes], send: Any, chunk_ms: int = 100) -> None:
    """Send audio at about real time, as a microphone would."""
    for chunk in chunks:
        await send(chunk)
        await asyncio.sleep(chunk_ms / 1000 * 0.9)


def chunked(data: bytes, rate: int, chunk_ms: int = 100) -> list[bytes]:
    step = rate * 2 * chunk_ms // 1000
    return [data[i : i + step] for i in range(0, len(data), step)]


# HTTP ---------------------------------------------------------------------------------


def test_health_and_metrics(live: LiveServer) -> None:
    status, body = http(f"http://{live.url}/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["max_sessions"] == 3
    status, body = http(f"http://{live.url}/metrics")
    assert status == 200
    assert b"duplex_sessions_active" in body and b"duplex_end_of_turn_latency_seconds" in body
    assert http(f"http://{live.url}/no/such/thing")[0] == 404
    assert http(f"http://{live.url}/../pyproject.toml")[0] == 404


# /v1/realtime through the official SDK --------------------------------------------------


def test_openai_sdk_realtime_turn(live: LiveServer, question: Int16Array) -> None:
    from openai import AsyncOpenAI

    async def main() -> dict[str, Any]:
        client = AsyncOpenAI(api_key="unused", base_url=f"http://{live.url}/v1")
        seen: dict[str, Any] = {"types": [], "audio": b"", "transcript": "", "heard": ""}
        async with client.realtime.connect(model="duplex") as conn:
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "You are a helpful voice assistant. Answer in one sentence.",
                    "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}},
                }
            )
            audio = chunked(at_rate(question, 24_000), 24_000)

            async def send(chunk: bytes) -> None:
                await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())

            sender = asyncio.create_task(paced(audio, send))
            deadline = time.monotonic() + 60
            async for event in conn:
                seen["types"].append(event.type)
                if event.type == "response.output_audio.delta":
                    seen["audio"] += base64.b64decode(event.delta)
                elif event.type == "response.output_audio_transcript.delta":
                    seen["transcript"] += event.delta
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    seen["heard"] = event.transcript
                elif event.type == "response.done":
                    seen["status"] = event.response.status
                    seen["item"] = (event.response.output or [])[0].id
                    break
                assert time.monotonic() < deadline, "no response.done within 60 s"
            sender.cancel()
            # the client played only half a second of it: the model keeps those words
            await conn.conversation.item.truncate(
                item_id=seen["item"], content_index=0, audio_end_ms=500
            )
            async for event in conn:
                if event.type in ("conversation.item.truncated", "error"):
                    seen["truncated"] = event.type
                    break
        return seen

    seen = asyncio.run(main())
    types = seen["types"]
    assert types[0] == "session.created" and "session.updated" in types
    for kind in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "response.created",
        "response.output_audio.delta",
        "response.output_audio_transcript.done",
    ):
        assert kind in types, kind
    assert "capital" in seen["heard"].lower()
    assert seen["status"] == "completed" and seen["transcript"].strip()
    assert len(seen["audio"]) > 24_000 * 2 // 2  # over half a second of 24 kHz audio
    assert seen["truncated"] == "conversation.item.truncated"


def test_openai_sdk_typed_question_is_one_user_item(live: LiveServer) -> None:
    """A typed question and response.create: answered, with the client's item as the
    user's turn, not a second one committed as audio."""
    from openai import AsyncOpenAI

    async def main() -> list[Any]:
        client = AsyncOpenAI(api_key="unused", base_url=f"http://{live.url}/v1")
        events: list[Any] = []
        async with client.realtime.connect(model="duplex") as conn:
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "What is the capital of France?"}],
                }
            )
            await conn.response.create()
            deadline = time.monotonic() + 60
            async for event in conn:
                events.append(event)
                if event.type == "response.done":
                    break
                assert time.monotonic() < deadline, "no response.done within 60 s"
        return events

    events = asyncio.run(main())
    types = [e.type for e in events]
    assert "input_audio_buffer.committed" not in types and "error" not in types, types
    users = [
        e.item for e in events if e.type == "conversation.item.added" and e.item.role == "user"
    ]
    assert len(users) == 1 and users[0].content[0].type == "input_text"
    assert events[-1].response.status == "completed"


def test_openai_sdk_manual_text_turn_with_history_items(
    live: LiveServer, question: Int16Array
) -> None:
    """Manual turns (`turn_detection: null`): the client commits the spoken question and
    asks for a text answer of at most 12 tokens, after a system item; it retrieves
    the user's item, then deletes it. Every event parses as the SDK's own types (the
    SDK validates them)."""
    from openai import AsyncOpenAI

    async def main() -> list[Any]:
        client = AsyncOpenAI(api_key="unused", base_url=f"http://{live.url}/v1")
        events: list[Any] = []

        async def until(kind: str) -> Any:
            deadline = time.monotonic() + 60
            async for event in conn:
                events.append(event)
                if event.type in (kind, "error"):
                    return event
                assert time.monotonic() < deadline, f"no {kind} within 60 s"

        async with client.realtime.connect(model="duplex") as conn:
            await conn.session.update(
                session={
                    "type": "realtime",
                    "output_modalities": ["text"],
                    "max_output_tokens": 12,
                    "audio": {"input": {"turn_detection": None}},
                }
            )
            await until("session.updated")
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": "Answer in a few words."}],
                }
            )

            async def send(chunk: bytes) -> None:
                await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())

            await paced(chunked(at_rate(question, 24_000), 24_000), send)
            await conn.input_audio_buffer.commit()
            committed = await until("input_audio_buffer.committed")
            await conn.response.create()
            await until("response.done")
            await conn.conversation.item.retrieve(item_id=committed.item_id)
            await until("conversation.item.retrieved")
            await conn.conversation.item.delete(item_id=committed.item_id)
            await until("conversation.item.deleted")
        return events

    events = asyncio.run(main())
    types = [e.type for e in events]
    [deleted] = [e for e in events if e.type == "conversation.item.deleted"]
    assert deleted.item_id == events[types.index("input_audio_buffer.committed")].item_id, types
    assert "response.output_audio.delta" not in types and "response.output_text.delta" in types
    [done] = [e for e in events if e.type == "response.done"]
    assert done.response.status == "completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.strip() and len(text.split()) <= 12
    [retrieved] = [e for e in events if e.type == "conversation.item.retrieved"]
    assert "capital" in retrieved.item.content[0].transcript.lower()


TIMER_TOOL: Any = {
    "type": "function",
    "name": "set_timer",
    "description": "Set a timer for a number of minutes.",
    "parameters": {
        "type": "object",
        "properties": {"minutes": {"type": "integer"}},
        "required": ["minutes"],
    },
}


def test_openai_sdk_tool_call_round_trip(live: LiveServer) -> None:
    """Tools in session.update: the answer is a function call, its output goes back as
    an item, and the next answer is spoken from it; no error on the way."""
    from openai import AsyncOpenAI

    async def until_done(conn: Any, events: list[Any]) -> Any:
        deadline = time.monotonic() + 60
        async for event in conn:
            events.append(event)
            if event.type == "response.done":
                return event.response
            assert time.monotonic() < deadline, "no response.done within 60 s"
        raise AssertionError("the connection closed")

    async def main() -> tuple[list[Any], Any, Any]:
        client = AsyncOpenAI(api_key="unused", base_url=f"http://{live.url}/v1")
        events: list[Any] = []
        async with client.realtime.connect(model="duplex") as conn:
            await conn.session.update(
                session={"type": "realtime", "tools": [TIMER_TOOL], "tool_choice": "auto"}
            )
            text = [{"type": "input_text", "text": "Set a timer for ten minutes."}]
            typed: Any = {"type": "message", "role": "user", "content": text}
            await conn.conversation.item.create(item=typed)
            await conn.response.create()
            called = await until_done(conn, events)
            call = called.output[0]
            output: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "set"}
            await conn.conversation.item.create(item=output)
            await conn.response.create()
            spoken = await until_done(conn, events)
        return events, called, spoken

    events, called, spoken = asyncio.run(main())
    assert "error" not in [e.type for e in events]
    [updated] = [e for e in events if e.type == "session.updated"]
    assert updated.session.tools[0].name == "set_timer"
    call = called.output[0]
    assert call.type == "function_call" and call.name == "set_timer"
    assert json.loads(call.arguments) == {"minutes": 10}
    assert "response.function_call_arguments.done" in [e.type for e in events]
    assert spoken.status == "completed" and spoken.output[0].type == "message"
    assert spoken.output[0].content[0].transcript.strip()


def test_openai_agents_runner_calls_a_function_tool_and_speaks_its_result(
    live: LiveServer, sessions: StackSessions
) -> None:
    """openai-agents' RealtimeRunner against the server: a spoken request, the SDK
    runs the @function_tool the answer calls, and the result is spoken; no error."""
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner

    ran: list[int] = []
    errors: list[str] = []

    @function_tool
    def set_timer(minutes: int) -> str:
        """Set a timer for a number of minutes."""
        ran.append(minutes)
        return f"A timer for {minutes} minutes is set."

    sessions.load()
    speech = sessions.stack.voice.synthesize("Set a timer for ten minutes.")
    lead, tail = np.zeros(8000, np.int16), np.zeros(SAMPLE_RATE * 3, np.int16)
    chunks = chunked(at_rate(np.concatenate([lead, speech, tail]), 24_000), 24_000)
    spoken_end = (lead.size + speech.size) / SAMPLE_RATE  # where the words end, in s

    async def main() -> tuple[list[str], float]:
        agent = RealtimeAgent(name="Assistant", instructions="Be brief.", tools=[set_timer])
        session = await RealtimeRunner(agent).run(
            model_config={"url": f"ws://{live.url}/v1/realtime", "headers": {}}
        )
        types: list[str] = []
        called_after = -1.0
        errors.clear()
        async with session:
            started = time.monotonic()

            async def speak() -> None:
                for chunk in chunks:  # at real-time pace, as a microphone sends
                    await session.send_audio(chunk)
                    await asyncio.sleep(0.1)

            sender: asyncio.Task[None] | None = None
            deadline = time.monotonic() + 90
            async for event in session:
                types.append(event.type)
                raw = getattr(getattr(event, "data", None), "data", None)
                if sender is None and isinstance(raw, dict) and raw["type"] == "session.updated":
                    started = time.monotonic()  # a microphone opens once the session is
                    sender = asyncio.create_task(speak())
                if event.type == "error":
                    errors.append(str(event.error))
                if event.type == "tool_start" and called_after < 0:
                    called_after = time.monotonic() - started - spoken_end
                if event.type == "audio_end" and "tool_end" in types:
                    break
                assert time.monotonic() < deadline, f"no spoken result within 90 s: {types}"
            assert sender is not None
            await sender
        return types, called_after

    types, called_after = asyncio.run(main())
    print(f"function call {called_after * 1000:.0f} ms after the words ended")
    assert ran == [10]
    assert types.index("tool_end") < len(types) - 1 and types[-1] == "audio_end"
    # the call is written a few tokens a tick, so the loop keeps up with the audio
    assert errors == []


def timer_request(sessions: StackSessions, rate: int) -> tuple[list[bytes], float]:
    """ "Set a timer for ten minutes." spoken, with half a second before and 3 s of silence
    after, in 100 ms chunks at `rate`; and where the words end, in s."""
    sessions.load()
    speech = sessions.stack.voice.synthesize("Set a timer for ten minutes.")
    lead, tail = np.zeros(8000, np.int16), np.zeros(SAMPLE_RATE * 3, np.int16)
    chunks = chunked(at_rate(np.concatenate([lead, speech, tail]), rate), rate)
    return chunks, (lead.size + speech.size) / SAMPLE_RATE


def test_pipecat_realtime_service_calls_a_function_tool_and_speaks_its_result(
    live: LiveServer, sessions: StackSessions
) -> None:
    """pipecat's OpenAIRealtimeLLMService in a pipeline (its context aggregators, a
    registered function handler, ToolsSchema in the session) against the server, started
    as pipecat's own example starts it (an LLMRunFrame: the assistant speaks first): then
    the spoken request in as InputAudioRawFrame, the handler runs with the right argument,
    the result is spoken (TTSAudioRawFrame), and no error frame on the way."""
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.frames.frames import (
        EndFrame,
        ErrorFrame,
        FunctionCallResultFrame,
        InputAudioRawFrame,
        LLMFullResponseEndFrame,
        LLMRunFrame,
        TTSAudioRawFrame,
    )
    from pipecat.frames.frames import Frame as PipecatFrame  # duplex.audio has a Frame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.llm_service import FunctionCallParams
    from pipecat.services.openai.realtime.events import SessionProperties
    from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
    from pipecat.workers.runner import WorkerRunner

    rate = 24_000  # what the service sends (it would resample anything else to it)
    chunks, spoken_end = timer_request(sessions, rate)
    ran: list[Any] = []
    errors: list[str] = []
    spoken_after_result: list[int] = []  # bytes of answer audio after the tool's result
    timer = FunctionSchema(
        name="set_timer",
        description="Set a timer for a number of minutes.",
        properties={"minutes": {"type": "integer"}},
        required=["minutes"],
    )

    class Speaker(FrameProcessor):
        """The pipeline's output: counts the answer's audio once the result went back."""

        def __init__(self) -> None:
            super().__init__()
            self.result_sent = False
            self.greeted = asyncio.Event()  # the first answer (the greeting) is over
            self.done = asyncio.Event()  # the answer after the result is over

        async def process_frame(self, frame: PipecatFrame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, FunctionCallResultFrame):
                self.result_sent = True
            elif isinstance(frame, TTSAudioRawFrame) and self.result_sent:
                spoken_after_result.append(len(frame.audio))
            elif isinstance(frame, LLMFullResponseEndFrame):
                self.greeted.set()
                if spoken_after_result:
                    self.done.set()
            await self.push_frame(frame, direction)

    async def main() -> float:
        called_at = -1.0
        llm = OpenAIRealtimeLLMService(
            api_key="unused",
            base_url=f"ws://{live.url}/v1/realtime",
            settings=OpenAIRealtimeLLMService.Settings(
                model="duplex",
                system_instruction="Be brief.",
                session_properties=SessionProperties(
                    tools=ToolsSchema(standard_tools=[timer]), tool_choice="auto"
                ),
            ),
        )

        async def set_timer(params: FunctionCallParams) -> None:
            nonlocal called_at
            called_at = time.monotonic()
            minutes = params.arguments.get("minutes")
            ran.append(minutes)
            await params.result_callback(f"A timer for {minutes} minutes is set.")

        llm.register_function("set_timer", set_timer)
        user, assistant = LLMContextAggregatorPair(LLMContext())
        speaker = Speaker()
        worker = PipelineWorker(
            Pipeline([user, llm, speaker, assistant]),
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )

        @worker.event_handler("on_pipeline_error")  # type: ignore[untyped-decorator]
        async def on_error(worker: PipelineWorker, frame: ErrorFrame) -> None:
            errors.append(frame.error)

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        started = time.monotonic()
        try:
            # pipecat's example starts so: the context reaches the service, which answers
            await worker.queue_frame(LLMRunFrame())
            await asyncio.wait_for(speaker.greeted.wait(), 60)
            started = time.monotonic()
            for chunk in chunks:  # at real-time pace, as a microphone sends
                frame = InputAudioRawFrame(audio=chunk, sample_rate=rate, num_channels=1)
                await worker.queue_frame(frame)
                await asyncio.sleep(0.1)
            await asyncio.wait_for(speaker.done.wait(), 90)
        except BaseException:
            await worker.cancel()
            raise
        else:
            await worker.queue_frame(EndFrame())
        finally:
            await asyncio.wait_for(running, 30)
        return called_at - started - spoken_end

    called_after = asyncio.run(main())
    print(f"function call {called_after * 1000:.0f} ms after the words ended")
    assert ran == [10]
    assert sum(spoken_after_result) > rate  # bytes: over half a second of spoken result
    assert not errors, errors


def test_livekit_realtime_session_generate_reply_speaks(live: LiveServer) -> None:
    """LiveKit's realtime plugin (livekit-plugins-openai's RealtimeModel, no LiveKit
    server: a RealtimeSession straight from the model) against the server:
    generate_reply returns its generation (the plugin matches it by the
    `client_event_id` in the response's metadata, and gives up after 10 s), and the
    generation carries the reply's words and audio; no error event."""
    import aiohttp
    from livekit import rtc
    from livekit.plugins.openai.realtime import RealtimeModel

    errors: list[str] = []

    async def main() -> tuple[str, int, float]:
        async with aiohttp.ClientSession() as http:
            url = f"http://{live.url}/v1"
            model = RealtimeModel(model="duplex", base_url=url, api_key="unused", http_session=http)
            session = model.session()
            session.on("error", lambda event: errors.append(repr(event.error)))
            try:
                asked = time.monotonic()
                generation = await session.generate_reply(instructions="Say hello to the user.")
                created_after = time.monotonic() - asked
                assert generation.user_initiated  # matched to its response.create
                words: list[str] = []
                samples = 0

                async def read_text(stream: AsyncIterable[str]) -> None:
                    async for text in stream:
                        words.append(text)

                async def read_audio(stream: AsyncIterable[rtc.AudioFrame]) -> None:
                    nonlocal samples
                    async for frame in stream:
                        assert frame.sample_rate == 24_000
                        samples += frame.samples_per_channel

                async def read() -> None:
                    async for message in generation.message_stream:
                        await asyncio.gather(
                            read_text(message.text_stream), read_audio(message.audio_stream)
                        )

                await asyncio.wait_for(read(), 90)
            finally:
                await session.aclose()
        return "".join(words), samples, created_after

    text, samples, created_after = asyncio.run(main())
    print(f"generation created {created_after * 1000:.0f} ms after generate_reply; {text!r}")
    assert text.strip()
    assert samples > 24_000 // 2  # over half a second of speech
    assert not errors, errors


# /v1/stream --------------------------------------------------------------------------


@pytest.fixture
def stream_url(live: LiveServer) -> str:
    return f"ws://{live.url}/v1/stream"


async def _events_until(ws: ClientConnection, kind: str, seconds: float) -> AsyncIterator[Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        yield message
        if isinstance(message, str) and json.loads(message)["type"] == kind:
            return
    raise AssertionError(f"no {kind} within {seconds} s")


async def stream_turn(url: str, question: Int16Array) -> tuple[list[dict[str, Any]], int]:
    """One spoken question over /v1/stream: the JSON events and the answer's audio bytes."""
    events: list[dict[str, Any]] = []
    audio_bytes = 0
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "hello", "sample_rate": 16000}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready" and ready["output_sample_rate"] == 16000
        sender = asyncio.create_task(paced(chunked(at_rate(question, 16000), 16000), ws.send))
        async for message in _events_until(ws, "turn_metrics", 60):
            if isinstance(message, bytes):
                audio_bytes += len(message)
            else:
                events.append(json.loads(message))
        sender.cancel()
    return events, audio_bytes


def test_stream_protocol_turn(stream_url: str, question: Int16Array) -> None:
    events, audio_bytes = asyncio.run(stream_turn(stream_url, question))
    kinds = [e["type"] for e in events]
    for kind in ("speech_started", "speech_stopped", "transcript_final", "turn_taken"):
        assert kind in kinds, kind
    final = next(e for e in events if e["type"] == "transcript_final")
    assert "capital" in final["text"].lower()
    assert audio_bytes > 16000  # half a second of answer at 16 kHz
    metrics = events[-1]
    assert metrics["end_of_turn_ms"] is not None and metrics["outcome"] == "completed"


# bad input ---------------------------------------------------------------------------


def test_bad_input_gets_errors_and_the_session_goes_on(live: LiveServer) -> None:
    bad: list[tuple[str | bytes, str]] = [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_event"),
        (json.dumps({"type": "no.such.event"}), "unknown_event"),
        (json.dumps({"type": "session.update", "session": "x"}), "invalid_type"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": 5}), "invalid_type"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}), "invalid_base64"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"}), "invalid_audio"),
        (
            json.dumps({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": 1}),
            "item_not_found",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}
                    },
                }
            ),
            "unsupported_audio_format",
        ),
        (b"\x00\x01", "binary_not_supported"),
        ("x" * 250_000, "message_too_large"),
    ]

    async def main() -> list[dict[str, Any]]:
        errors = []
        async with connect(f"ws://{live.url}/v1/realtime") as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            for message, _ in bad:
                await ws.send(message)
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                errors.append(reply)
            await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Hi"}}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["type"] == "session.updated", reply
            assert reply["session"]["instructions"] == "Hi"
        return errors

    errors = asyncio.run(main())
    for (_, code), reply in zip(bad, errors, strict=True):
        assert reply["type"] == "error", reply
        assert reply["error"]["code"] == code, reply
        assert set(reply["error"]) >= {"type", "code", "message", "param"}


def test_stream_bad_input(stream_url: str) -> None:
    async def main() -> list[str]:
        codes = []
        async with connect(stream_url) as ws:
            for message in (b"\x00\x00", json.dumps({"type": "respond"})):
                await ws.send(message)
                codes.append(json.loads(await ws.recv())["error"]["code"])
            await ws.send(json.dumps({"type": "hello", "sample_rate": 12345}))
            codes.append(json.loads(await ws.recv())["error"]["code"])
            await ws.send(json.dumps({"type": "hello", "sample_rate": 24000}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(b"\x00\x00\x00")
            codes.append(json.loads(await ws.recv())["error"]["code"])
        return codes

    assert asyncio.run(main()) == [
        "audio_before_hello",
        "hello_first",
        "invalid_value",
        "invalid_audio",
    ]


# limits and security -----------------------------------------------------------------


def test_full_server_refuses_with_a_clear_error(live: LiveServer) -> None:
    async def main() -> tuple[dict[str, Any], int | None]:
        url = f"ws://{live.url}/v1/realtime"
        async with connect(url) as a, connect(url) as b, connect(url) as c:
            for ws in (a, b, c):
                assert json.loads(await ws.recv())["type"] == "session.created"
            # a full replica tells a proxy's health check to pass it by
            status, body = await asyncio.to_thread(http, f"http://{live.url}/healthz")
            assert (status, json.loads(body)["status"]) == (503, "full")
            async with connect(url) as d:
                error = json.loads(await d.recv())
                try:
                    await d.recv()
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None
                    return error, closed.rcvd.code
        return error, None

    error, code = asyncio.run(main())
    assert error["error"]["code"] == "server_full" and code == 1013


def test_client_vanishing_mid_answer_frees_its_session(
    live: LiveServer, question: Int16Array
) -> None:
    async def main() -> None:
        async with connect(f"ws://{live.url}/v1/stream") as ws:
            await ws.send(json.dumps({"type": "hello"}))
            await ws.recv()
            sender = asyncio.create_task(paced(chunked(at_rate(question, 16000), 16000), ws.send))
            async for _message in _events_until(ws, "turn_taken", 60):
                pass
            sender.cancel()
            # leave without a word, mid-answer

    asyncio.run(main())
    deadline = time.monotonic() + 15
    while json.loads(http(f"http://{live.url}/healthz")[1])["sessions"] and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert json.loads(http(f"http://{live.url}/healthz")[1])["sessions"] == 0


class FirstSessionBreaks:
    """The real sessions, with the first one's LM made to fail once mid-answer."""

    def __init__(self, inner: StackSessions) -> None:
        self.inner, self.broken = inner, False

    def load(self) -> None:
        self.inner.load()

    def acquire(self) -> Session:
        session = self.inner.acquire()
        if not self.broken:
            self.broken = True
            fail_once(session.lm, "speak", on_call=3)
        return session

    def release(self, session: Session) -> None:
        vars(session.lm).pop("speak", None)  # the next user of this LM gets it whole
        self.inner.release(session)


async def _stream_turns(url: str, question: Int16Array, turns: int) -> list[list[dict[str, Any]]]:
    """Spoken questions, one after another in one /v1/stream session: each turn's events."""
    out: list[list[dict[str, Any]]] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "hello", "sample_rate": 16000}))
        await ws.recv()
        for _ in range(turns):
            sender = asyncio.create_task(paced(chunked(at_rate(question, 16000), 16000), ws.send))
            events = [
                json.loads(m)
                async for m in _events_until(ws, "turn_metrics", 60)
                if isinstance(m, str)
            ]
            await sender
            out.append(events)
    return out


def test_a_model_failure_ends_one_turn_of_one_session(
    sessions: StackSessions, question: Int16Array
) -> None:
    """The LM raises in one session's answer: that turn ends with an error event, the
    session answers its next question, and a session beside it is untouched."""
    live = LiveServer(DuplexServer(FirstSessionBreaks(sessions), port=0))
    try:

        async def main() -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
            url = f"ws://{live.url}/v1/stream"
            broken = asyncio.create_task(_stream_turns(url, question, 2))
            await asyncio.sleep(0.5)  # the first session gets the faulty LM
            whole = await _stream_turns(url, question, 1)
            return await broken, whole

        broken, whole = asyncio.run(main())
    finally:
        live.stop()
    failed, next_turn = broken
    [error] = [
        e["error"] for e in failed if e["type"] == "error" and e["error"]["code"] != "input_full"
    ]
    assert error["code"] == "model_error" and "speak broke" in error["message"]
    assert failed[-1]["outcome"] == "failed"
    assert next_turn[-1]["outcome"] == "completed"
    assert "capital" in next(e for e in next_turn if e["type"] == "transcript_final")["text"]
    assert all(e["error"]["code"] == "input_full" for e in whole[0] if e["type"] == "error")
    assert whole[0][-1]["outcome"] == "completed"


def test_token_is_required_beyond_loopback_and_checked(sessions: StackSessions) -> None:
    with pytest.raises(ValueError, match="token"):
        DuplexServer(sessions, host="0.0.0.0")
    live = LiveServer(DuplexServer(sessions, port=0, token="s3cret"))
    try:
        assert http(f"http://{live.url}/metrics")[0] == 401
        assert http(f"http://{live.url}/metrics", {"Authorization": "Bearer s3cret"})[0] == 200

        async def main() -> str:
            url = f"ws://{live.url}/v1/realtime"
            with pytest.raises(Exception, match="401"):
                async with connect(url):
                    pass
            async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
                first = str(json.loads(await ws.recv())["type"])
            # the subprotocol a browser's OpenAI client uses
            protocols = ["realtime", "openai-insecure-api-key.s3cret"]
            async with connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
                assert ws.subprotocol == "realtime"
                return first + " " + str(json.loads(await ws.recv())["type"])

        assert asyncio.run(main()) == "session.created session.created"
    finally:
        live.stop()


# fuzzing -----------------------------------------------------------------------------

CLIENT_TYPES = [
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
    "no.such.type",
]


def test_random_events_never_break_the_server(live: LiveServer, question: Int16Array) -> None:
    """Random client events on one session while another completes a spoken turn."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=8,
    )
    fields = ("audio", "session", "item", "item_id", "audio_end_ms", "response", "event_id")
    event = st.fixed_dictionaries(
        {"type": st.sampled_from(CLIENT_TYPES)}, optional={f: values for f in fields}
    )
    message = st.one_of(event.map(json.dumps), st.text(max_size=40), st.binary(max_size=40))

    async def spoken_turn() -> str:
        async with connect(f"ws://{live.url}/v1/stream") as ws:
            await ws.send(json.dumps({"type": "hello"}))
            await ws.recv()
            sender = asyncio.create_task(paced(chunked(at_rate(question, 16000), 16000), ws.send))
            kinds: list[str] = []
            async for reply in _events_until(ws, "turn_metrics", 120):
                if isinstance(reply, str):
                    kinds.append(json.loads(reply)["type"])
            sender.cancel()
            return kinds[-1]

    turn: list[str] = []
    other = threading.Thread(target=lambda: turn.append(asyncio.run(spoken_turn())))
    other.start()

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(message, min_size=5, max_size=25))
    def fuzz(messages: list[str | bytes]) -> None:
        async def main() -> str:
            async with connect(f"ws://{live.url}/v1/realtime") as ws:
                for m in messages:
                    await ws.send(m)
                await ws.send(json.dumps({"type": "session.update", "session": {}}))
                while True:  # the session still answers, after whatever came before
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if reply["type"] == "session.updated":
                        return str(reply["type"])

        assert asyncio.run(main()) == "session.updated"

    fuzz()
    other.join(180)
    assert turn == ["turn_metrics"]
    assert json.loads(http(f"http://{live.url}/healthz")[1])["status"] == "ok"


# `duplex bench --server`: the benchmark's session interface over both protocols ----------


@pytest.mark.parametrize("path", ["/v1/stream", "/v1/realtime"])
def test_bench_drives_a_remote_session(
    live: LiveServer, sessions: StackSessions, path: str
) -> None:
    sessions.load()
    scenario = next(
        s
        for s in scenarios.generate(sessions.stack.voice, per_category=1, snrs=(None,))
        if s.category == "interruption"
    )
    url = f"ws://{live.url}{path}"
    run = run_one(remote.session_factory(url, None, ["duplex"]), "duplex", scenario, fast=False)
    assert [h["type"] for h in run.heard][:1] == ["transcript_final"], run.heard
    assert run.assistant and run.assistant[0].status == "interrupted", run.assistant
    assert run.metrics["end_of_turn_ms"] is not None and run.metrics["end_of_turn_ms"] > 0
    assert run.metrics["barge_in_stop_ms"] is not None, run.metrics
    assert run.records, "the server's turn metrics arrive"
    assert remote.server_rss_mb(url) > 100
    assert remote.server_cpu_s(url) > 1  # it loaded the models and ran a conversation


def test_remote_session_refusals_are_clear(live: LiveServer) -> None:
    with pytest.raises(ValueError, match="/v1/stream"):
        remote.session_factory(f"ws://{live.url}/v1/realtime", None, ["any-speech-interrupts"])
    with pytest.raises(RemoteError, match="cannot reach"):
        RemoteSession("ws://127.0.0.1:9/v1/stream")
    with pytest.raises(RemoteError, match="refused the session: policy must be"):
        RemoteSession(f"ws://{live.url}/v1/stream", policy="no-such-policy")


# scale-out: replicas behind nginx ----------------------------------------------------

NGINX_EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "nginx-duplex.conf"


class Replica:
    """`duplex serve` in its own process, as a deployment runs it."""

    def __init__(self, log: Path, *options: str) -> None:
        self.port = free_port()
        self._log = log.open("wb")
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), *options]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def health(self) -> tuple[int, dict[str, Any]] | None:
        try:
            status, body = http(f"http://127.0.0.1:{self.port}/healthz")
        except OSError:
            return None
        return status, json.loads(body)

    def wait_ready(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while self.health() is None:
            assert self.process.poll() is None, "the replica exited"
            assert time.monotonic() < deadline, "the replica did not start"
            time.sleep(0.3)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._log.close()


def nginx_config(tmp: Path, listen: int, replicas: list[Replica]) -> Path:
    """The shipped example, on this test's ports, inside a minimal main config."""
    site = NGINX_EXAMPLE.read_text()
    site = site.replace("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{listen};")
    for default, replica in zip((8001, 8002), replicas, strict=True):
        site = site.replace(f"server 127.0.0.1:{default} ", f"server 127.0.0.1:{replica.port} ")
    (tmp / "duplex.conf").write_text(site)
    main = tmp / "nginx.conf"
    main.write_text(
        f"""daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/duplex.conf;
}}
"""
    )
    return main


def test_replicas_behind_nginx_share_sessions_and_survive_one_dying(
    tmp_path: Path, question: Int16Array
) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is missing: apt-get install nginx (make setup does)"
    replicas = [Replica(tmp_path / f"replica{i}.log") for i in (1, 2)]
    proxy_port = free_port()
    config = nginx_config(tmp_path, proxy_port, replicas)
    proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(config)])
    proxied = f"127.0.0.1:{proxy_port}"
    try:
        for replica in replicas:
            replica.wait_ready()

        async def two_at_once() -> list[tuple[list[dict[str, Any]], int]]:
            turns = [stream_turn(f"ws://{proxied}/v1/stream", question) for _ in range(2)]
            return list(await asyncio.gather(*turns))

        # two sessions through the proxy, one on each replica (least_conn)
        busy: list[int] = []

        def count_sessions() -> None:
            time.sleep(4)  # both sessions are talking by now
            for replica in replicas:
                health = replica.health()
                busy.append(health[1]["sessions"] if health else -1)

        watcher = threading.Thread(target=count_sessions)
        watcher.start()
        for events, audio_bytes in asyncio.run(two_at_once()):
            assert "capital" in next(e for e in events if e["type"] == "transcript_final")["text"]
            assert audio_bytes > 16000
        watcher.join()
        assert busy == [1, 1]
        # one replica dies: new sessions and the health check go to the other
        replicas[0].kill()
        assert replicas[0].health() is None
        events, audio_bytes = asyncio.run(stream_turn(f"ws://{proxied}/v1/stream", question))
        assert events[-1]["outcome"] == "completed" and audio_bytes > 16000
        status, body = http(f"http://{proxied}/healthz")
        health = json.loads(body)
        assert (status, health["status"]) == (200, "ok")
        assert health["pid"] == replicas[1].process.pid
    finally:
        proxy.terminate()
        proxy.wait(30)
        for replica in replicas:
            replica.kill()


async def _refused(url: str) -> tuple[dict[str, Any], int | None, str]:
    """A session the server turns away: its error event, close code and reason."""
    async with connect(url) as ws:
        error = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    rcvd = closed.value.rcvd
    return error, rcvd.code if rcvd else None, rcvd.reason if rcvd else ""


def test_sigterm_drains_a_replica_behind_nginx_without_a_failed_session(
    tmp_path: Path, question: Int16Array
) -> None:
    """SIGTERM mid-answer: the answer completes, the replica's health turns to draining,
    a direct newcomer is refused with 1012, one through the proxy is served by the other
    replica; past the deadline the live session gets a notice and 1001; exit code 0."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is missing: apt-get install nginx (make setup does)"
    replicas = [Replica(tmp_path / f"replica{i}.log", "--drain-timeout", "6") for i in (1, 2)]
    draining = replicas[0]
    proxy_port = free_port()
    config = nginx_config(tmp_path, proxy_port, replicas)
    proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(config)])
    try:
        for replica in replicas:
            replica.wait_ready()

        async def main() -> dict[str, Any]:
            seen: dict[str, Any] = {"events": []}
            async with connect(f"ws://127.0.0.1:{draining.port}/v1/stream") as ws:
                await ws.send(json.dumps({"type": "hello", "sample_rate": 16000}))
                await ws.recv()
                talk = question.tolist() + [0] * SAMPLE_RATE * 20  # then silence, as a mic
                audio = np.array(talk, np.int16)
                sender = asyncio.create_task(paced(chunked(at_rate(audio, 16000), 16000), ws.send))
                try:
                    async for message in ws:
                        if isinstance(message, bytes):
                            if "signalled" not in seen:  # the answer is playing: stop now
                                draining.process.send_signal(signal.SIGTERM)
                                seen["signalled"] = time.monotonic()
                                await asyncio.sleep(0.3)
                                seen["health"] = await asyncio.to_thread(draining.health)
                                seen["direct"] = await _refused(
                                    f"ws://127.0.0.1:{draining.port}/v1/stream"
                                )
                                seen["proxied"] = await stream_turn(
                                    f"ws://127.0.0.1:{proxy_port}/v1/stream", question
                                )
                            continue
                        seen["events"].append(json.loads(message))
                except ConnectionClosed:
                    pass
                finally:
                    sender.cancel()
                seen["closed"] = (ws.close_code, ws.close_reason, time.monotonic())
            return seen

        seen = asyncio.run(main())
        assert draining.process.wait(60) == 0
        kinds = [e["type"] for e in seen["events"]]
        # the answer under way when the signal came was completed
        metrics = next(e for e in seen["events"] if e["type"] == "turn_metrics")
        assert metrics["outcome"] == "completed"
        assert seen["health"] is not None and seen["health"][0] == 503
        assert seen["health"][1]["status"] == "draining"
        error, code, reason = seen["direct"]
        assert error["error"]["code"] == "server_draining" and code == 1012 and reason
        events, audio_bytes = seen["proxied"]
        assert events[-1]["outcome"] == "completed" and audio_bytes > 16000
        # after the deadline: a notice, then a normal close frame
        assert kinds[-1] == "closing"
        assert seen["events"][-1]["error"]["code"] == "server_shutting_down"
        code, reason, at = seen["closed"]
        assert code == 1001 and reason
        assert at - seen["signalled"] >= 5.5
        other = replicas[1].health()
        assert other is not None and other[0] == 200
    finally:
        proxy.terminate()
        proxy.wait(30)
        for replica in replicas:
            replica.kill()


def test_sessions_share_the_cores(sessions: StackSessions) -> None:
    """On two cores, a session alone reads its words on two threads, and with another
    running on one; sessions read and draft at pauses while there is a core for each.
    As they leave, each goes back."""

    def shares(*running: Session) -> list[tuple[int, bool]]:
        """What each applies from its next frame on (a worker steps it: here, the test)."""
        for session in running:
            session.step(Frame(session.frames_seen, np.zeros(FRAME_SAMPLES, np.int16)))
        return [(s.lm.read_threads, s.read_at_pauses) for s in running]

    cores, sessions.cores = sessions.cores, 2
    first = sessions.acquire()
    try:
        assert shares(first) == [(2, True)]
        second = sessions.acquire()
        assert shares(first, second) == [(1, True), (1, True)]
        third = sessions.acquire()
        assert shares(first, second, third) == [(1, False)] * 3
        sessions.release(third)
        assert shares(first, second) == [(1, True), (1, True)]
        sessions.release(second)
        assert shares(first) == [(2, True)]
    finally:
        sessions.release(first)
        sessions.cores = cores
