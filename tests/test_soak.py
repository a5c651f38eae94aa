"""The soak's arithmetic and report on made-up samples, then a short real soak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import soak
from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE


def test_growth_is_the_slope_after_warm_up() -> None:
    # 100 MB of warm-up in the first minutes, then 2 MB per ten minutes
    samples = [
        {"minute": m, "rss_mb": 600.0 + (100.0 if m >= 5 else 20 * m) + 0.2 * max(0, m - 6)}
        for m in range(61)
    ]
    growth = soak.growth_per_hour(samples)
    assert growth is not None and growth == pytest.approx(12.0, abs=1.5)
    assert soak.growth_per_hour(samples[:2]) is None
    flat = [{"minute": m, "rss_mb": 700.0} for m in range(30)]
    assert soak.growth_per_hour(flat) == pytest.approx(0.0, abs=1e-9)


def test_latency_is_reported_per_ten_minutes_with_unanswered_turns() -> None:
    turns = [(1.0, 300), (2.0, 500), (9.9, None), (12.0, 400), (25.0, 200)]
    windows = soak.latency_windows(turns)
    assert [w["from_min"] for w in windows] == [0, 10, 20]
    first = windows[0]
    assert (first["turns"], first["unanswered"], first["p50_ms"]) == (3, 1, 400)
    assert windows[1]["p95_ms"] == 400
    assert soak.latency_windows([]) == []


def test_the_conversation_repeats_its_questions_and_samples_every_minute() -> None:
    question = np.full(SAMPLE_RATE, 1000, np.int16)  # 1 s, then 2 s of silence: 3 s a turn
    minutes: list[float] = []
    frames = list(soak.conversation([question], 2.0, 2.0, minutes.append))
    assert len(frames) == 2 * 60 * SAMPLE_RATE // FRAME_SAMPLES
    assert [f.index for f in frames[:3]] == [0, 1, 2]
    assert minutes == [0.0, 1.0]
    voiced = [bool(f.pcm.any()) for f in frames]
    per_turn = 3 * SAMPLE_RATE // FRAME_SAMPLES
    assert sum(voiced[:per_turn]) == SAMPLE_RATE // FRAME_SAMPLES
    assert voiced[per_turn] and not voiced[per_turn - 1]


def test_the_report_and_plot(tmp_path: Path) -> None:
    samples = [
        {"minute": m, "rss_mb": 700.0, "cache_tokens": 100 * m, "trims": m // 20} for m in range(61)
    ]
    data = {
        "minutes": 60,
        "turns": 200,
        "outcomes": {"completed": 199, "failed": 1},
        "errors": [{"minute": 3.0, "code": "model_error", "message": "x"}],
        "samples": samples,
        "end_of_turn": soak.latency_windows([(m / 3, 300 + m) for m in range(180)]),
        "rss_growth_mb_per_hour": soak.growth_per_hour(samples),
        "context_tokens": 4096,
        "history_tokens": 2048,
        "trims": 3,
        "trimmed_tokens": 900,
        "churn": {
            "sessions": 200,
            "rss_mb": [[20, 900.0], [200, 905.0]],
            "rss_after_warm_up_mb": 900.0,
            "rss_after_mb": 905.0,
        },
    }
    text = soak.markdown(data)
    assert "60 minutes of conversation, 200 turns" in text
    assert "0.0 MB per hour" in text and "errors: 1" in text
    assert "200 sessions opened and closed" in text and "| 50-60 |" in text
    assert "(after each tenth: 900, 905 MB)" in text
    path = soak.plot(data, tmp_path / "soak.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rss_is_measured() -> None:
    assert soak.rss_mb() > 10


@pytest.mark.timeout(600)
def test_duplex_bench_soak_runs_the_models_and_a_server(tmp_path: Path) -> None:
    """The real thing, short: half a conversation minute on the models, three sessions
    churned against a loopback server, the report and plot written."""
    out = tmp_path / "soak"
    subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--soak", "0.5", "--soak-silence", "6",
         "--churn", "3", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    data = json.loads((out / "soak.json").read_text())
    assert data["turns"] >= 2 and not data["errors"], data["errors"]
    assert all(s["rss_mb"] > 100 for s in data["samples"])
    answered = [w for w in data["end_of_turn"] if w["p50_ms"] is not None]
    assert answered and answered[0]["turns"] >= 2
    assert data["churn"]["sessions"] == 3 and len(data["churn"]["rss_mb"]) == 3
    assert (out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
