"""Drive a session over a recording: real-time pacing, or fast on a virtual clock.

In fast mode the virtual clock moves with the audio and is charged the
compute each step really took, so a slow model shows up as latency exactly
as it would live: a frame cannot be processed before it arrives, nor before
the previous one is done. In ideal mode it moves with the audio alone, as if
compute were free: what the turn-taking policy decides, on any machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from duplex.audio import FRAME_MS, FRAME_SAMPLES, Frame, Int16Array
from duplex.clock import ChargedClock, Clock, RealClock, VirtualClock
from duplex.events import Event, Interrupted, ResponseAudio
from duplex.ports import Closes, Steps


@dataclass
class DriveResult:
    """What came out of a drive: events and the assistant's audio on the input timeline."""

    events: list[Event] = field(default_factory=list)
    output: Int16Array = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)  # response -> output ms
    played: dict[int, int] = field(default_factory=dict)  # response -> ms of its audio played
    compute_ms: float = 0.0  # total compute spent in session steps
    audio_ms: int = 0  # duration of the input

    @property
    def real_time_factor(self) -> float:
        return self.compute_ms / self.audio_ms if self.audio_ms else 0.0


def drive(
    make_session: Callable[[Clock], Steps],
    frames: Iterable[Frame],
    *,
    fast: bool = True,
    ideal: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> DriveResult:
    """Feed frames through a new session and collect what it says.

    Each output frame is placed where the session says it plays (later than
    its input frame when compute made the session fall behind the audio);
    a barge-in flushes what was queued after the stop.
    """
    clock: VirtualClock | RealClock = (
        VirtualClock() if ideal else ChargedClock() if fast else RealClock()
    )  # a RealClock sleeps until each frame arrives; the others move to it
    session = make_session(clock)
    result = DriveResult()
    output: list[tuple[int, Int16Array, int]] = []  # (position, audio, response)
    start = clock.now_ms()
    try:
        for frame in frames:
            clock.wait_until(start + frame.end_ms)
            t0 = time.perf_counter()
            with clock.charging():
                events = session.step(frame)
            result.compute_ms += (time.perf_counter() - t0) * 1000
            for event in events:
                if isinstance(event, ResponseAudio):  # audio_ms is where it plays
                    output.append((event.audio_ms, event.pcm, event.response_id))
                    first = result.spans.get(event.response_id, (event.audio_ms, 0))[0]
                    result.spans[event.response_id] = (first, event.audio_ms + FRAME_MS)
                elif isinstance(event, Interrupted):  # the device flushes what it had queued
                    output = [o for o in output if o[0] < event.stopped_ms]
                    first = result.spans.get(event.response_id, (event.stopped_ms, 0))[0]
                    result.spans[event.response_id] = (first, event.stopped_ms)
                if on_event is not None:
                    on_event(event)
            result.events += events
            result.audio_ms = frame.end_ms
    finally:
        if isinstance(session, Closes):
            session.close()
    end = max((p + FRAME_MS for p, _, _ in output), default=0)
    for _, _, response in output:
        result.played[response] = result.played.get(response, 0) + FRAME_MS
    result.output = _place([(p, pcm) for p, pcm, _ in output], max(result.audio_ms, end))
    return result


def _place(chunks: list[tuple[int, Int16Array]], total_ms: int) -> Int16Array:
    out = np.zeros(total_ms * FRAME_SAMPLES // FRAME_MS, dtype=np.int16)
    for position, pcm in chunks:
        start = position * FRAME_SAMPLES // FRAME_MS
        out[start : start + pcm.size] = pcm
    return out


def mix(user: Int16Array, assistant: Int16Array, user_gain: float = 0.7) -> Int16Array:
    """Both sides in one track, so overlaps are audible."""
    n = max(user.size, assistant.size)
    total = np.zeros(n, dtype=np.float32)
    total[: user.size] += user.astype(np.float32) * user_gain
    total[: assistant.size] += assistant.astype(np.float32)
    return np.clip(total, -32768, 32767).astype(np.int16)
