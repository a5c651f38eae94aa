"""Echo cancellation for the local assistant, and a gate for the echo it leaves.

The assistant's voice comes out of the speaker and back into the microphone.
WebRTC's audio processing module (AEC3, from the `livekit` package, which
ships it prebuilt; `aec-audio-processing` needs swig and meson to build)
takes what was played as the reference and removes its echo from what was
captured, in 10 ms frames, estimating the echo path's delay itself.

No canceller is perfect, and an assistant that hears its own residual echo
as a barge-in interrupts itself. So while the assistant talks, `EchoGate`
passes a frame on only when it is clearly louder than the echo the
canceller has been leaving; quieter frames become silence.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from duplex.audio import Int16Array, rms_db

APM_RATE = 16_000
APM_SAMPLES = APM_RATE // 100  # the module works in 10 ms frames
MAX_DELAY_HINT_MS = 500  # the module refuses larger hints (it searches for the delay itself)


class EchoUnavailable(RuntimeError):
    """The echo canceller's library is missing."""


class EchoCanceller:
    """WebRTC AEC3: `reverse(played)` gives it what the speaker played, `capture(captured)`
    returns the microphone without that echo. Blocks are multiples of 10 ms at 16 kHz;
    feed the reference up to now before each captured block. `delay_ms` hints the
    echo path's delay (output plus input latency); the module refines it itself.
    """

    def __init__(self, delay_ms: int = 0, *, noise_suppression: bool = False) -> None:
        try:
            from livekit import rtc
        except ImportError as error:  # pragma: no cover - a broken install
            raise EchoUnavailable(
                f"echo cancellation needs the livekit package ({error}): pip install livekit"
            ) from None
        self._rtc = rtc
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=True, high_pass_filter=True, noise_suppression=noise_suppression
        )
        self.delay_ms = delay_ms

    def reverse(self, played: Int16Array) -> None:
        for start in range(0, _whole(played), APM_SAMPLES):
            self._apm.process_reverse_stream(self._frame(played[start : start + APM_SAMPLES]))

    def capture(self, captured: Int16Array) -> Int16Array:
        out = np.empty_like(captured)
        for start in range(0, _whole(captured), APM_SAMPLES):
            near = self._frame(captured[start : start + APM_SAMPLES])
            self._apm.set_stream_delay_ms(min(MAX_DELAY_HINT_MS, max(0, self.delay_ms)))
            self._apm.process_stream(near)
            out[start : start + APM_SAMPLES] = np.frombuffer(near.data, dtype=np.int16)
        return out

    def _frame(self, samples: Int16Array) -> Any:
        data = bytearray(samples.astype("<i2").tobytes())
        return self._rtc.AudioFrame(data, APM_RATE, 1, APM_SAMPLES)


def _whole(block: Int16Array) -> int:
    if block.size % APM_SAMPLES:
        raise ValueError(f"blocks must be multiples of {APM_SAMPLES} samples, got {block.size}")
    return block.size


class EchoGate:
    """While the assistant plays, lets through only what rises above its residual echo.

    The residual is tracked as a low percentile of (cleaned level - played
    level) over the last `window` blocks that had playback, so it follows
    the room and the canceller's convergence; user speech over it stands
    `margin_db` above. With nothing playing every block passes unchanged.
    """

    def __init__(
        self,
        *,
        margin_db: float = 10.0,
        window: int = 150,
        playing_db: float = -50.0,
        initial_residual_db: float = -10.0,
    ) -> None:
        self.margin_db = margin_db
        self.playing_db = playing_db
        self._ratios: deque[float] = deque(maxlen=window)
        self._initial = initial_residual_db
        self.gated = 0  # blocks turned to silence, all told

    @property
    def residual_db(self) -> float:
        """The echo left after cancellation, relative to the played level."""
        if len(self._ratios) < 10:
            return self._initial
        return float(np.percentile(np.array(self._ratios), 20))

    def __call__(self, cleaned: Int16Array, played: Int16Array) -> Int16Array:
        played_db = rms_db(played)
        if played_db < self.playing_db:
            return cleaned
        ratio = rms_db(cleaned) - played_db
        threshold = self.residual_db + self.margin_db
        self._ratios.append(ratio)
        if ratio >= threshold:
            return cleaned
        self.gated += 1
        return np.zeros_like(cleaned)


def erle_db(captured: Int16Array, cleaned: Int16Array) -> float:
    """Echo return loss enhancement: how much quieter the echo is after cancellation."""
    return rms_db(captured) - rms_db(cleaned)
