"""A session's audio timeline against its clock: the one place the core reads time.

Positions are audio ms (the input frame with index i covers [20 i, 20 i + 20)).
When the loop runs behind the audio (compute took longer than real time), the
clock says where it really is, and marks use that instead, so slow models show
up as latency. The clock is read at each mark, not once a step: on the charged
clock of `duplex bench --fast` the compute a step spent before a mark is part
of that mark's latency.
"""

from __future__ import annotations

from typing import Any

from duplex.clock import Clock
from duplex.events import Event


class Timeline:
    """The session's position on its clock, and the stamp on each event."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._origin: float | None = None  # clock ms at audio position 0

    def start(self, position_ms: int) -> None:
        """The first frame, ending at `position_ms`, arrived now: the origin."""
        if self._origin is None:
            self._origin = self._clock.now_ms() - position_ms

    def now_ms(self) -> float:
        return self._clock.now_ms()

    def at(self, position_ms: int) -> int:
        """The later of the audio position and where the clock says the loop is."""
        if self._origin is None:
            return position_ms
        return max(position_ms, round(self._clock.now_ms() - self._origin))

    def arrived(self, position_ms: int, ahead_ms: int) -> bool:
        """Whether the audio `ahead_ms` past `position_ms` has already arrived: the loop
        runs that far behind the clock (a busy machine)."""
        return self.at(position_ms) - position_ms >= ahead_ms

    def event(self, kind: type[Event], audio_ms: int, **fields: Any) -> Event:
        """An event at an audio position, stamped with the clock."""
        return kind(audio_ms=audio_ms, clock_ms=self._clock.now_ms(), **fields)
