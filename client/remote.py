"""A session on a `duplex serve` server, behind the same `Steps` interface as a local one.

The benchmark drives it frame by frame in real time exactly as it drives an
in-process session, over either protocol (`/v1/stream` or `/v1/realtime`).
Audio from the server is placed where this client would play it: when it
arrives, after whatever is already queued; a barge-in flushes the queue at
the moment the client learns of it. Latencies measured through it therefore
include the network, the server's queues and its concurrent sessions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import queue
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from duplex.audio import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Frame,
    Int16Array,
    StreamResampler,
    float_to_pcm16,
    pcm16_to_float,
)
from duplex.events import (
    BackchannelIgnored,
    Error,
    Event,
    Interrupted,
    ResponseAudio,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TurnMetrics,
    TurnTaken,
    event_from_dict,
)
from server.realtime import (
    AUDIO_DELTA,
    BACKCHANNEL_IGNORED,
    INTERRUPTED,
    TURN_METRICS,
    session_status,
)

REALTIME_RATE = 24_000
# the benchmark's policies as Realtime turn detection; the stream protocol names them directly
REALTIME_POLICIES: dict[str, dict[str, Any]] = {
    "duplex": {"type": "semantic_vad", "eagerness": "auto"},
    "silence-500ms": {"type": "server_vad", "silence_duration_ms": 500},
}

T = TypeVar("T")


class RemoteError(RuntimeError):
    """The server refused or dropped the session."""


def protocol_for(url: str, policies: Sequence[str | None]) -> str:
    """ "stream" or "realtime", by the URL's path; ValueError if the path or a policy
    (None: the server's default) does not fit."""
    path = urlparse(url).path.rstrip("/")
    if path.endswith("/v1/stream"):
        return "stream"
    if not path.endswith("/v1/realtime"):
        raise ValueError(f"{url}: the server's paths are /v1/stream and /v1/realtime")
    unknown = [p for p in policies if p is not None and p not in REALTIME_POLICIES]
    if unknown:
        raise ValueError(
            f"the Realtime protocol has no turn detection for {', '.join(unknown)}: use "
            f"{' or '.join(REALTIME_POLICIES)}, or the /v1/stream protocol"
        )
    return "realtime"


class RemoteSession:
    """One conversation with a server; `step(frame)` sends the frame, returns what arrived.

    `url` is `ws://host:port/v1/stream` or `.../v1/realtime`; `policy` one of
    the runtime's policy names (None: the server's default).
    """

    def __init__(
        self,
        url: str,
        *,
        policy: str | None = None,
        token: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.protocol = protocol_for(url, [policy])
        self.url = url
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._outgoing: asyncio.Queue[str | bytes] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._input = StreamResampler(SAMPLE_RATE, REALTIME_RATE)
        self._response: int | None = None  # the answer whose audio is arriving
        self._response_ids: dict[str, int] = {}  # realtime ids -> ours
        self._output: StreamResampler | None = None  # realtime answer audio -> 16 kHz
        self._pending = np.zeros(0, np.int16)  # received, less than one frame
        self._play_end = 0  # where the queued output ends on the input timeline (ms)
        self._played: dict[int, int] = {}  # ms of audio placed, per response
        self._cleared_at: int | None = None  # where a `clear` silenced the output
        try:
            self._ws = self._run(self._open(policy, token), timeout_s)
        except BaseException:
            self._stop_loop()
            raise

    # the interface the benchmark drives ---------------------------------------------

    def step(self, frame: Frame) -> list[Event]:
        """Send one 20 ms input frame; the events (and audio) that arrived meanwhile."""
        pcm = frame.pcm.astype("<i2")
        if self.protocol == "stream":
            self._send(pcm.tobytes())
        else:
            up = float_to_pcm16(self._input.process(pcm16_to_float(pcm)))
            if up.size:
                audio = base64.b64encode(up.astype("<i2").tobytes()).decode()
                self._send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        now = frame.end_ms
        events: list[Event] = []
        while True:
            try:
                kind, data = self._inbox.get_nowait()
            except queue.Empty:
                return events
            if kind == "closed":
                raise RemoteError(f"the server closed the session: {data}")
            if kind == "audio":
                events += self._audio(data, now)
            else:
                events += self._message(data, now)

    def close(self) -> None:
        """Hang up and stop the client's thread."""
        with contextlib.suppress(Exception):  # already gone: nothing to hang up
            self._run(self._hang_up(), 10)
        self._stop_loop()

    # the connection, on the client's own event loop --------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    async def _hang_up(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._ws.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _send(self, message: str | bytes) -> None:
        assert self._outgoing is not None
        self._loop.call_soon_threadsafe(self._outgoing.put_nowait, message)

    async def _open(self, policy: str | None, token: str | None) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            url = self.url
            if self.protocol == "realtime":  # barge-ins, backchannels, metrics: ours
                url += ("&" if urlparse(url).query else "?") + "duplex_events=1"
            ws = await connect(url, additional_headers=headers, max_size=None)
        except (OSError, ConnectionClosed) as error:
            raise RemoteError(f"cannot reach {self.url}: {error}") from None
        except Exception as error:  # the handshake was refused (401, 404, ...)
            raise RemoteError(f"{self.url} refused the connection: {error}") from None
        try:
            if self.protocol == "stream":
                hello: dict[str, Any] = {"type": "hello", "sample_rate": SAMPLE_RATE}
                if policy is not None:
                    hello["policy"] = policy
                await ws.send(json.dumps(hello))
                await self._expect(ws, "ready")
            else:
                await self._expect(ws, "session.created")
                turn = REALTIME_POLICIES[policy or "duplex"]
                update = {"type": "realtime", "audio": {"input": {"turn_detection": turn}}}
                await ws.send(json.dumps({"type": "session.update", "session": update}))
                await self._expect(ws, "session.updated")
        except BaseException:
            await ws.close()
            raise
        self._outgoing = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._read(ws)),
            asyncio.create_task(self._write(ws, self._outgoing)),
        ]
        return ws

    async def _expect(self, ws: ClientConnection, kind: str) -> None:
        """The handshake's answer, or the server's error as a RemoteError."""
        try:
            message = json.loads(await ws.recv())
        except ConnectionClosed as closed:
            raise RemoteError(f"the server closed the session: {closed}") from None
        if message.get("type") == "error":
            raise RemoteError(f"the server refused the session: {message['error']['message']}")
        if message.get("type") != kind:
            raise RemoteError(f"expected {kind}, the server sent {message}")

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self._inbox.put(("audio", np.frombuffer(message, "<i2").astype(np.int16)))
                else:
                    self._inbox.put(("json", json.loads(message)))
            self._inbox.put(("closed", "connection closed"))
        except ConnectionClosed as closed:
            self._inbox.put(("closed", str(closed)))

    async def _write(self, ws: ClientConnection, outgoing: asyncio.Queue[str | bytes]) -> None:
        while True:
            message = await outgoing.get()
            try:
                await ws.send(message)
            except ConnectionClosed:
                return

    # what arrived, as the runtime's events on this client's timeline ---------------

    def _audio(self, pcm: Int16Array, now: int) -> list[Event]:
        """Received answer audio: queued for playback, one 20 ms frame per event."""
        if self._response is None:
            return []  # the tail of an answer already flushed
        self._pending = np.concatenate([self._pending, pcm])
        events: list[Event] = []
        while self._pending.size >= FRAME_SAMPLES:
            chunk, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
            events.append(self._place(chunk, now))
        return events

    def _place(self, chunk: Int16Array, now: int) -> ResponseAudio:
        assert self._response is not None
        position = max(now, self._play_end)
        self._play_end = position + FRAME_MS
        self._played[self._response] = self._played.get(self._response, 0) + FRAME_MS
        return ResponseAudio(
            audio_ms=position,
            clock_ms=_clock(),
            response_id=self._response,
            pcm=chunk,
            text="",
        )

    def _finish(self, now: int) -> list[Event]:
        """The answer's last partial frame, padded with silence."""
        events: list[Event] = []
        if self._pending.size and self._response is not None:
            padded = np.zeros(FRAME_SAMPLES, np.int16)
            padded[: self._pending.size] = self._pending
            events.append(self._place(padded, now))
        self._pending = np.zeros(0, np.int16)
        self._response = None
        return events

    def _flush(self, now: int) -> int:
        """A barge-in or cancel: nothing queued from here on is played.

        Returns where the output went silent: now, or earlier where the
        server had already stopped sending (it holds at the user's onset).
        """
        stopped = min(now, self._play_end)
        self._pending = np.zeros(0, np.int16)
        self._play_end = now
        return stopped

    def _message(self, data: dict[str, Any], now: int) -> list[Event]:
        if data.get("type") == "error":
            detail = data.get("error", data)
            return [
                Error(
                    audio_ms=now,
                    clock_ms=_clock(),
                    code=str(detail.get("code")),
                    message=str(detail.get("message")),
                )
            ]
        if self.protocol == "stream":
            return self._stream_event(data, now)
        return self._realtime_event(data, now)

    def _stream_event(self, data: dict[str, Any], now: int) -> list[Event]:
        if data.get("type") == "clear":  # the interrupted event follows
            self._cleared_at = self._flush(now)
            return []
        event = event_from_dict(data)
        if isinstance(event, TurnTaken):
            self._response = event.response_id
        elif isinstance(event, Interrupted):
            stopped = self._flush(now) if self._cleared_at is None else self._cleared_at
            self._response = self._cleared_at = None
            return [replace(event, stopped_ms=stopped)]
        elif isinstance(event, ResponseDone):
            return [*self._finish(now), event]
        return [] if event is None else [event]

    def _realtime_event(self, data: dict[str, Any], now: int) -> list[Event]:
        kind = data.get("type", "")
        at: dict[str, Any] = {"audio_ms": now, "clock_ms": _clock()}
        if kind == "response.created":
            self._response = self._response_ids.setdefault(
                data["response"]["id"], len(self._response_ids) + 1
            )
            self._output = StreamResampler(REALTIME_RATE, SAMPLE_RATE)
        elif kind in AUDIO_DELTA:
            if self._output is None:
                return []
            pcm = np.frombuffer(base64.b64decode(data["delta"]), "<i2")
            return self._audio(float_to_pcm16(self._output.process(pcm16_to_float(pcm))), now)
        elif kind == INTERRUPTED:
            stopped = self._flush(now)
            rid, self._response, self._output = self._id(data), None, None
            return [
                Interrupted(
                    **at,
                    response_id=rid,
                    played_ms=data["played_ms"],
                    played_text=data["played_text"],
                    onset_ms=data["onset_ms"],
                    stopped_ms=stopped,
                )
            ]
        elif kind == "response.done":
            response = data["response"]
            rid = self._response_ids.get(response["id"], 0)
            if self._output is not None:
                pcm = float_to_pcm16(self._output.flush())
                tail = self._audio(pcm, now) if pcm.size else []
            else:
                tail = []
            self._output = None
            status = session_status(response)
            transcript = "".join(
                part.get("transcript", "")
                for item in response.get("output", [])
                for part in item.get("content", [])
            )
            done = ResponseDone(
                **at,
                response_id=rid,
                status=status,
                played_ms=self._played.get(rid, 0),
                text=transcript,
            )
            return [*tail, *self._finish(now), done]
        elif kind == "conversation.item.input_audio_transcription.completed":
            return [TranscriptFinal(**at, text=data["transcript"])]
        elif kind == "input_audio_buffer.speech_started":
            return [SpeechStarted(audio_ms=data["audio_start_ms"], clock_ms=_clock())]
        elif kind == "input_audio_buffer.speech_stopped":
            return [SpeechStopped(audio_ms=data["audio_end_ms"], clock_ms=_clock())]
        elif kind == BACKCHANNEL_IGNORED:
            return [
                BackchannelIgnored(
                    **at,
                    response_id=self._id(data),
                    text=data["text"],
                    onset_ms=data["onset_ms"],
                    held_ms=data["held_ms"],
                )
            ]
        elif kind == TURN_METRICS:
            metrics = event_from_dict({"type": TurnMetrics.type, **at, **data["metrics"]})
            return [] if metrics is None else [metrics]
        return []

    def _id(self, data: dict[str, Any]) -> int:
        return self._response_ids.get(str(data.get("response_id")), 0)


def _clock() -> float:
    return time.monotonic() * 1000
