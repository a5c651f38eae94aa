"""Per-turn latency records on the audio timeline, and their medians and p95.

A turn's marks are positions on the input timeline (ms since the session's
first frame). Marks for compute stages (decision, first token, first TTS
audio) are the tick's position plus the compute the clock saw, so a slow
model shows up as latency even though the audio timeline itself is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np


@dataclass(slots=True)
class TurnRecord:
    """Marks of one exchange; None where the turn never reached that stage."""

    response_id: int
    user_onset_ms: int | None = None
    user_last_voiced_ms: int | None = None
    vad_end_ms: int | None = None
    asr_final_ms: float | None = None
    turn_audio_ms: float | None = None  # the acoustic end-of-turn estimate was known
    decision_ms: float | None = None
    first_token_ms: float | None = None
    first_tts_audio_ms: float | None = None
    first_output_ms: int | None = None
    barge_in_onset_ms: int | None = None
    output_stopped_ms: int | None = None
    backchannels: int = 0
    outcome: str = "pending"

    @property
    def end_of_turn_ms(self) -> float | None:
        """User's last voiced frame -> first assistant audio frame at the output."""
        return _span(self.user_last_voiced_ms, self.first_output_ms)

    @property
    def barge_in_stop_ms(self) -> float | None:
        """User's speech onset over the answer -> assistant output silent (None where
        none of the answer had played: nothing to stop)."""
        if self.first_output_ms is None:
            return None
        return _span(self.barge_in_onset_ms, self.output_stopped_ms)

    def stages(self) -> dict[str, float]:
        """Each stage's delay after the user's last voiced frame (the breakdown)."""
        out = {}
        for name in STAGES:
            span = _span(self.user_last_voiced_ms, getattr(self, name))
            if span is not None:
                out[name.removesuffix("_ms")] = span
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["end_of_turn_ms"] = self.end_of_turn_ms
        data["barge_in_stop_ms"] = self.barge_in_stop_ms
        return data


STAGES = (
    "vad_end_ms",
    "asr_final_ms",
    "turn_audio_ms",
    "decision_ms",
    "first_token_ms",
    "first_tts_audio_ms",
)


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else float(end - start)


TURN_MARKS = tuple(f.name for f in fields(TurnRecord) if f.name.endswith("_ms"))


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    median: float | None
    p95: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Iterable[float | None]) -> Summary:
    """Median and 95th percentile of the values that are present."""
    present: Sequence[float] = [v for v in values if v is not None]
    if not present:
        return Summary(0, None, None)
    return Summary(len(present), float(np.median(present)), float(np.percentile(present, 95)))
