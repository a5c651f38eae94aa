"""Per-turn latency records on the audio timeline, histograms, Prometheus text.

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
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


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

_BUCKETS_S = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class LatencyMetrics:
    """Histograms over many turns, exposed as Prometheus text.

    Each instance owns its registry so several sessions, servers or benchmark
    policies can be measured side by side in one process.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._end_of_turn = Histogram(
            "duplex_end_of_turn_latency_seconds",
            "User's last voiced frame to the first assistant audio frame at the output.",
            registry=self.registry,
            buckets=_BUCKETS_S,
        )
        self._barge_in = Histogram(
            "duplex_barge_in_stop_latency_seconds",
            "User speech onset over the answer to assistant output stopped.",
            registry=self.registry,
            buckets=_BUCKETS_S,
        )
        self._stage = Histogram(
            "duplex_stage_latency_seconds",
            "Delay of each pipeline stage after the user's last voiced frame.",
            ["stage"],
            registry=self.registry,
            buckets=_BUCKETS_S,
        )
        self._turns = Counter(
            "duplex_turns", "Assistant turns by outcome.", ["outcome"], registry=self.registry
        )
        self.records: list[TurnRecord] = []

    def observe(self, record: TurnRecord) -> None:
        self.records.append(record)
        self._turns.labels(outcome=record.outcome).inc()
        if record.end_of_turn_ms is not None:
            self._end_of_turn.observe(record.end_of_turn_ms / 1000)
        if record.barge_in_stop_ms is not None:
            self._barge_in.observe(record.barge_in_stop_ms / 1000)
        for stage, ms in record.stages().items():
            self._stage.labels(stage=stage).observe(ms / 1000)

    def exposition(self) -> bytes:
        """The Prometheus text format, ready for a /metrics endpoint."""
        text: bytes = generate_latest(self.registry)
        return text


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
