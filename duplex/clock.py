"""Clocks: the only source of time the core reads.

Latency is measured on the audio timeline; the clock stamps when each event
was produced, so compute time is visible. `VirtualClock` lets tests and the
benchmark's fast mode run hours of conversation in seconds, deterministically.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
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

    def wait_until(self, ms: float) -> None:
        """Sleep until `ms`: a driver paces a recording as a microphone would."""
        time.sleep(max(0.0, (ms - self.now_ms()) / 1000.0))

    def charging(self) -> AbstractContextManager[None]:
        """Wall time passes by itself while a step computes."""
        return nullcontext()


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

    def wait_until(self, ms: float) -> None:
        """Move to `ms` at once (a frame arrives); never backwards."""
        self._now = max(self._now, ms)

    def charging(self) -> AbstractContextManager[None]:
        """Compute is free on this clock: a step takes no time."""
        return nullcontext()


class ChargedClock(VirtualClock):
    """Virtual time that is also charged the compute really spent.

    Between steps it moves only when the driver advances it (with the audio);
    inside `charging()` it runs with the wall clock, so marks taken during a
    step (turn decision, first token, first audio) include the compute before
    them, and the whole step's compute is added when it ends.
    """

    def __init__(self, start_ms: float = 0.0) -> None:
        super().__init__(start_ms)
        self._charging_since: float | None = None

    def now_ms(self) -> float:
        if self._charging_since is None:
            return self._now
        return self._now + (time.perf_counter() - self._charging_since) * 1000.0

    @contextmanager
    def charging(self) -> Iterator[None]:
        """The step's compute, as the wall clock measures it, passes on this clock."""
        self._charging_since = time.perf_counter()
        try:
            yield
        finally:
            spent = (time.perf_counter() - self._charging_since) * 1000.0
            self._charging_since = None
            self._now += spent
