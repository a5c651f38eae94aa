"""One session's inference, off the event loop: a thread that owns a Session.

The websocket handler never runs a model. It pushes audio and commands into
a bounded queue; the worker thread steps the session in arrival order and
hands the events back through a callback (the server wraps it with
`loop.call_soon_threadsafe`). One slow session therefore stalls only itself.

When the client stops sending audio (push-to-talk, a text-only turn) the
worker fills the gap with silence at real-time pace, so the session keeps
ticking: answers are written, played and finished without microphone input.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from duplex.audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Frame, Framer, Int16Array
from duplex.commands import Command
from duplex.events import Error, Event
from duplex.ports import Handles

log = logging.getLogger(__name__)


class Backpressure(Exception):
    """The session's input queue is full: the client sends faster than it can be served."""


@dataclass(frozen=True)
class _Call:
    command: Command


_STOP = object()


class SessionWorker:
    """Feeds one session from a queue on its own thread.

    `max_queued_ms` bounds the audio waiting to be processed; `push_audio`
    raises `Backpressure` beyond it instead of growing without limit.
    `idle_fill_ms`: after this long without audio, silence is fed in real time.
    """

    def __init__(
        self,
        session: Handles,
        emit: Callable[[list[Event]], None],
        *,
        rate: int = SAMPLE_RATE,
        max_queued_ms: int = 2000,
        idle_fill_ms: int = 300,
        name: str = "session",
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self._emit = emit
        self._queue: queue.Queue[Frame | _Call | object] = queue.Queue()
        self._max_frames = max(1, max_queued_ms // FRAME_MS)
        self._queued_frames = 0
        self._lock = threading.Lock()
        self._framer = Framer(rate)
        self._next_index = 0
        self._idle_fill_s = idle_fill_ms / 1000
        self._last_audio = self._paced_until = time.monotonic()
        self._on_exit = on_exit  # the session is free again: return it to its pool
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def audio_ms(self) -> int:
        """Input audio accepted so far, silence fill included (ms)."""
        return self._next_index * FRAME_MS

    def push_audio(self, chunk: bytes) -> None:
        """PCM16 LE mono at the worker's rate, any whole number of samples.

        Raises ValueError (a malformed chunk) or Backpressure (too much audio
        waiting); either way nothing of the chunk was taken.
        """
        incoming = len(chunk) // 2 * SAMPLE_RATE // self._framer.rate // FRAME_SAMPLES
        with self._lock:
            if self._queued_frames + incoming > self._max_frames:
                raise Backpressure(
                    f"more than {self._max_frames * FRAME_MS} ms of audio is waiting to be "
                    "processed; send audio at real-time pace"
                )
            frames = self._framer.push(chunk)
            self._last_audio = time.monotonic()
            self._enqueue([f.pcm for f in frames])

    def call(self, command: Command) -> None:
        """Have the session handle `command` on the worker thread, in order with the audio."""
        self._queue.put(_Call(command))

    def close(self, wait: bool = True, timeout: float = 5.0) -> None:
        """Stop once what is already queued has been processed."""
        self._queue.put(_STOP)
        if wait:
            self._thread.join(timeout)

    def _enqueue(self, blocks: list[Int16Array]) -> None:
        """Number and queue frames (the caller holds the lock)."""
        for samples in blocks:
            self._queue.put(Frame(self._next_index, samples))
            self._next_index += 1
            self._queued_frames += 1

    # the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=FRAME_MS / 1000)
            except queue.Empty:
                self._fill_silence()
                continue
            if item is _STOP:
                return
            try:
                if isinstance(item, _Call):
                    events = self.session.handle(item.command)
                else:
                    assert isinstance(item, Frame)
                    with self._lock:
                        self._queued_frames -= 1
                    events = self.session.step(item)
            except Exception as error:  # one bad step must not end the session
                log.exception("session step failed")
                events = [
                    Error(
                        audio_ms=self.audio_ms,
                        clock_ms=time.monotonic() * 1000,
                        code="server_error",
                        message=f"{type(error).__name__}: {error}",
                    )
                ]
            if events:
                self._emit(events)

    def _fill_silence(self) -> None:
        """No audio for a while: queue silence at real-time pace so the session keeps ticking."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_audio < self._idle_fill_s or self._queued_frames:
                self._paced_until = now
                return
            due = int((now - self._paced_until) * 1000 // FRAME_MS)
            self._paced_until += due * FRAME_MS / 1000
            self._enqueue([np.zeros(FRAME_SAMPLES, dtype=np.int16)] * due)
