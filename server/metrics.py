"""Turn latencies as Prometheus histograms, for the server's /metrics endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from duplex.metrics import TurnRecord

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
