"""Turn records, their derived latencies, the Prometheus histograms and summaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from duplex.metrics import TURN_MARKS, Summary, TurnRecord, summarize
from server.metrics import LatencyMetrics

EOT = "duplex_end_of_turn_latency_seconds"
BARGE = "duplex_barge_in_stop_latency_seconds"
STAGE = "duplex_stage_latency_seconds"
TURNS = "duplex_turns"


def full_record() -> TurnRecord:
    return TurnRecord(
        response_id=3,
        user_onset_ms=1000,
        user_last_voiced_ms=2000,
        vad_end_ms=2200,
        decision_ms=2230.5,
        first_token_ms=2300.0,
        first_tts_audio_ms=2400.25,
        first_output_ms=2480,
        barge_in_onset_ms=3000,
        output_stopped_ms=3120,
        backchannels=1,
        outcome="barged_in",
    )


def samples(metrics: LatencyMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by name and sorted labels."""
    text = metrics.exposition().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: LatencyMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


# TurnRecord


def test_derived_latencies() -> None:
    record = full_record()
    assert record.end_of_turn_ms == 480.0
    assert record.barge_in_stop_ms == 120.0
    assert isinstance(record.end_of_turn_ms, float)
    assert record.stages() == {
        "vad_end": 200.0,
        "decision": 230.5,
        "first_token": 300.0,
        "first_tts_audio": 400.25,
    }


def test_missing_marks_give_none() -> None:
    record = TurnRecord(response_id=1)
    assert record.outcome == "pending"
    assert record.backchannels == 0
    assert record.end_of_turn_ms is None
    assert record.barge_in_stop_ms is None
    assert record.stages() == {}

    # one end of each span present is still None
    record = TurnRecord(response_id=2, user_last_voiced_ms=500, barge_in_onset_ms=900)
    assert record.end_of_turn_ms is None
    assert record.barge_in_stop_ms is None
    assert record.stages() == {}
    record = TurnRecord(response_id=2, first_output_ms=500, output_stopped_ms=900)
    assert record.end_of_turn_ms is None
    assert record.barge_in_stop_ms is None
    # the user went on before any of the answer played: no stop to time (the
    # output's end is where the previous answer stopped)
    record = TurnRecord(response_id=3, barge_in_onset_ms=8560, output_stopped_ms=5600)
    assert record.barge_in_stop_ms is None


def test_stages_skip_missing_marks() -> None:
    record = TurnRecord(response_id=1, user_last_voiced_ms=100, vad_end_ms=300, first_token_ms=450)
    assert record.stages() == {"vad_end": 200.0, "first_token": 350.0}
    # without the last voiced frame no stage can be measured
    record.user_last_voiced_ms = None
    assert record.stages() == {}


def test_zero_is_a_mark_not_missing() -> None:
    record = TurnRecord(response_id=1, user_last_voiced_ms=0, first_output_ms=0, vad_end_ms=0)
    assert record.end_of_turn_ms == 0.0
    assert record.stages() == {"vad_end": 0.0}


def test_to_dict_has_fields_and_derived_values() -> None:
    data = full_record().to_dict()
    for name in TURN_MARKS:
        assert name in data
    assert data["response_id"] == 3
    assert data["user_last_voiced_ms"] == 2000
    assert data["outcome"] == "barged_in"
    assert data["backchannels"] == 1
    assert data["end_of_turn_ms"] == 480.0
    assert data["barge_in_stop_ms"] == 120.0

    empty = TurnRecord(response_id=7).to_dict()
    assert empty["end_of_turn_ms"] is None
    assert empty["barge_in_stop_ms"] is None
    assert empty["first_output_ms"] is None


def test_turn_marks_are_the_ms_fields() -> None:
    assert "user_last_voiced_ms" in TURN_MARKS
    assert "output_stopped_ms" in TURN_MARKS
    assert "backchannels" not in TURN_MARKS
    assert "end_of_turn_ms" not in TURN_MARKS  # derived, not a mark


# LatencyMetrics


def test_empty_exposition_has_the_metric_families() -> None:
    metrics = LatencyMetrics()
    names = {f.name for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert {EOT, BARGE, STAGE, TURNS} <= names
    assert value(metrics, f"{EOT}_count") == 0
    assert value(metrics, f"{BARGE}_count") == 0


def test_observe_counts_and_sums() -> None:
    metrics = LatencyMetrics()
    metrics.observe(full_record())
    metrics.observe(
        TurnRecord(response_id=4, user_last_voiced_ms=5000, vad_end_ms=5200,
                   first_output_ms=5300, outcome="completed")
    )  # fmt: skip
    metrics.observe(TurnRecord(response_id=5, outcome="completed"))
    metrics.observe(TurnRecord(response_id=6, outcome="cancelled"))

    assert len(metrics.records) == 4
    assert metrics.records[0].response_id == 3

    assert value(metrics, f"{EOT}_count") == 2
    assert value(metrics, f"{EOT}_sum") == pytest.approx(0.48 + 0.3)
    assert value(metrics, f"{BARGE}_count") == 1
    assert value(metrics, f"{BARGE}_sum") == pytest.approx(0.12)

    assert value(metrics, f"{STAGE}_count", stage="vad_end") == 2
    assert value(metrics, f"{STAGE}_sum", stage="vad_end") == pytest.approx(0.4)
    assert value(metrics, f"{STAGE}_count", stage="decision") == 1
    assert value(metrics, f"{STAGE}_sum", stage="decision") == pytest.approx(0.2305)
    assert value(metrics, f"{STAGE}_sum", stage="first_tts_audio") == pytest.approx(0.40025)

    assert value(metrics, f"{TURNS}_total", outcome="completed") == 2
    assert value(metrics, f"{TURNS}_total", outcome="barged_in") == 1
    assert value(metrics, f"{TURNS}_total", outcome="cancelled") == 1
    assert value(metrics, f"{TURNS}_total", outcome="pending") is None


def test_histogram_buckets_are_in_seconds() -> None:
    metrics = LatencyMetrics()
    metrics.observe(TurnRecord(response_id=1, user_last_voiced_ms=0, first_output_ms=480))
    # 0.48 s falls in the 0.5 s bucket, not the 0.4 s one
    assert value(metrics, f"{EOT}_bucket", le="0.4") == 0
    assert value(metrics, f"{EOT}_bucket", le="0.5") == 1
    assert value(metrics, f"{EOT}_bucket", le="+Inf") == 1


def test_instances_do_not_share_state() -> None:
    a, b = LatencyMetrics(), LatencyMetrics()
    a.observe(full_record())
    a.observe(full_record())
    b.observe(TurnRecord(response_id=9, outcome="completed"))
    assert a.registry is not b.registry
    assert value(a, f"{EOT}_count") == 2
    assert value(b, f"{EOT}_count") == 0
    assert value(a, f"{TURNS}_total", outcome="barged_in") == 2
    assert value(b, f"{TURNS}_total", outcome="barged_in") is None
    assert value(b, f"{TURNS}_total", outcome="completed") == 1
    assert len(a.records) == 2 and len(b.records) == 1
    # a third instance starts empty
    assert value(LatencyMetrics(), f"{EOT}_count") == 0


# summarize


@pytest.mark.parametrize(
    "data",
    [
        [480.0],
        [100.0, 300.0],
        [5.0, 1.0, 4.0, 2.0, 3.0],
        [float(v) for v in range(1, 101)],
        [250.0, 900.0, 120.0, 333.3, 410.0, 87.5, 1500.0],
    ],
)
def test_summarize_matches_numpy(data: Sequence[float]) -> None:
    summary = summarize(data)
    assert summary.count == len(data)
    assert summary.median == pytest.approx(float(np.median(data)))
    assert summary.p95 == pytest.approx(float(np.percentile(data, 95)))


def test_summarize_known_values() -> None:
    summary = summarize([float(v) for v in range(1, 101)])
    assert summary == Summary(100, 50.5, pytest.approx(95.05))  # type: ignore[arg-type]
    assert summarize([1.0, 2.0, 3.0]).median == 2.0


def test_summarize_skips_none() -> None:
    summary = summarize([None, 300.0, None, 100.0, 200.0])
    assert summary.count == 3
    assert summary.median == 200.0
    assert summary.p95 == pytest.approx(float(np.percentile([100.0, 200.0, 300.0], 95)))


def test_summarize_generator_of_records() -> None:
    records = [full_record(), TurnRecord(response_id=1), full_record()]
    summary = summarize(r.end_of_turn_ms for r in records)
    assert summary.count == 2
    assert summary.median == 480.0


@pytest.mark.parametrize("data", [[], [None], [None, None]])
def test_summarize_empty(data: list[float | None]) -> None:
    summary = summarize(data)
    assert summary == Summary(0, None, None)
    assert summary.to_dict() == {"count": 0, "median": None, "p95": None}


def test_summary_to_dict() -> None:
    assert summarize([1.0, 3.0]).to_dict() == {"count": 2, "median": 2.0, "p95": pytest.approx(2.9)}
