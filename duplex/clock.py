"""Clocks: the only source of time the core reads.

Latency is measured on the audio timeline; the clock stamps when each event
was produced, so compute time is visible. `VirtualClock` lets tests and the
benchmark's fast mode run hours of conversation in seconds, deterministically.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> float:
        """Milliseconds since an arbitrary, fixed origin."""
        ...


class RealClock:
    """Monotonic wall time."""

    def __init__(self) -> None:
        self._origin = time.monotonic()

    def now_ms(self) -> float:
        return (time.monotonic() - self._origin) * 1000.0


class VirtualClock:
    """Time that moves only when the driver says so."""

    def __init__(self, start_ms: float = 0.0) -> None:
        self._now = float(start_ms)

    def now_ms(self) -> float:
        return self._now

    def advance(self, ms: float) -> None:
        if ms < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {ms} ms)")
        self._now += ms


class Stopwatch:
    """Measures a span of compute on any clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._start = clock.now_ms()

    def elapsed_ms(self) -> float:
        return self._clock.now_ms() - self._start
