"""Benchmark report: exact numbers in the markdown, valid PNGs, every file written.

The results dict is hand-made in the runner's shape (2 policies, one scenario
per category, some values missing) so the expected strings are known exactly.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report

D = report.DASH
X = report.TIMES
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
POLICIES = ("duplex", "any-speech-interrupts")


def _none_summary() -> dict[str, Any]:
    return {"count": 0, "median": None, "p95": None}


def _run(policy: str, scenario: str, category: str, **metrics: Any) -> dict[str, Any]:
    users = {
        "pause": [
            ("question", "I was thinking about a trip to", 0, 1800),
            ("continuation", "somewhere warm by the sea", 3000, 4600),
        ],
        "turn_end": [("question", "What is the capital of France?", 0, 1900)],
        "interruption": [
            ("question", "Tell me a long story.", 0, 1400),
            ("interruption", "Wait, stop, something shorter.", 3500, 5000),
        ],
        "backchannel": [
            ("question", "How far away is the moon?", 0, 1500),
            ("backchannel", "mm-hm", 3200, 3600),
        ],
    }[category]
    interrupted = policy != "duplex" and category in ("pause", "backchannel")
    assistant = [
        {
            "response_id": 1,
            "start_ms": 2300 if category != "pause" or interrupted else 5200,
            "end_ms": 3700 if interrupted or category == "interruption" else 7000,
            "status": "interrupted" if interrupted or category == "interruption" else "completed",
        }
    ]
    if category == "interruption":
        assistant.append(
            {"response_id": 2, "start_ms": 5600, "end_ms": 8000, "status": "completed"}
        )
    base = {
        "takeover": None,
        "end_of_turn_ms": None,
        "barge_in_stop_ms": None,
        "response_after_interrupt_ms": None,
        "false_stop": None,
        "backchannel_hold_ms": None,
    }
    base.update(metrics)
    return {
        "policy": policy,
        "scenario": scenario,
        "category": category,
        "snr_db": None if category != "backchannel" else 15.0,
        "user": [{"kind": k, "text": t, "start_ms": s, "end_ms": e} for k, t, s, e in users],
        "assistant": assistant,
        "metrics": base,
        "components": {"vad_end": 210.0, "decision": 260.0, "first_token": 380.0},
        "audio_ms": 8000,
        "compute_ms": 900.0,
        "cpu_ms": 1500.0,
        "real_time_factor": 0.11,
    }


@pytest.fixture
def results() -> dict[str, Any]:
    runs = []
    for policy in POLICIES:
        other = policy != "duplex"
        runs += [
            _run(policy, "pause-01", "pause", takeover=other, end_of_turn_ms=600.0),
            _run(policy, "turn-end-01", "turn_end", end_of_turn_ms=312.4 if not other else 180.0),
            _run(
                policy,
                "interrupt-01",
                "interruption",
                barge_in_stop_ms=140.0 if not other else 95.0,
                response_after_interrupt_ms=600.0,
                end_of_turn_ms=900.0,
            ),
            _run(policy, "backchannel-01", "backchannel", false_stop=other, end_of_turn_ms=800.0),
        ]
    summary = {
        "duplex": {
            "takeover_rate": {"rate": 0.25, "count": 4},
            "end_of_turn_ms": {"count": 4, "median": 312.4, "p95": 870.6},
            "barge_in_stop_ms": {"count": 1, "median": 140.0, "p95": 140.0},
            "response_after_interrupt_ms": _none_summary(),
            "backchannel_false_stop_rate": {"rate": 0.0, "count": 3},
            "backchannel_hold_ms": {"count": 3, "median": 420.0, "p95": 610.0},
            "answer_gap_ms": {"count": 1, "median": 40.0, "p95": 40.0},
            "components": {
                "vad_end": {"count": 4, "median": 210.0, "p95": 212.5},
                "decision": {"count": 4, "median": 260.0, "p95": 300.0},
                "first_token": {"count": 4, "median": 380.0, "p95": 420.0},
            },
            "real_time_factor": {"count": 4, "median": 0.114, "p95": 0.2},
            "cpu_ms_per_audio_s": {"count": 4, "median": 187.5, "p95": 190.0},
            "peak_rss_mb": 812.0,
        },
        "any-speech-interrupts": {
            "takeover_rate": {"rate": 1.0, "count": 4},
            "end_of_turn_ms": {"count": 4, "median": 180.0, "p95": 650.0},
            "barge_in_stop_ms": {"count": 1, "median": 95.0, "p95": 95.0},
            "response_after_interrupt_ms": {"count": 1, "median": 600.0, "p95": 600.0},
            "backchannel_false_stop_rate": {"rate": None, "count": 0},
            "components": {},
            "real_time_factor": {"count": 4, "median": 0.1, "p95": 0.2},
            "cpu_ms_per_audio_s": {"count": 4, "median": 180.0, "p95": 190.0},
            "peak_rss_mb": 800.0,
        },
    }
    return {
        "command": "duplex bench --fast",
        "created": "2026-11-21T23:50:00Z",
        "mode": "fast",
        "sessions": 1,
        "machine": {"platform": "Linux-x86_64", "cpus": 16},
        "policies": list(POLICIES),
        "runs": runs,
        "summary": summary,
        "ratios": {
            "any-speech-interrupts": {
                "takeover_rate": 4.0,
                "end_of_turn_ms": 180.0 / 312.4,
                "barge_in_stop_ms": 95.0 / 140.0,
                "response_after_interrupt_ms": None,
                "backchannel_false_stop_rate": None,
            }
        },
    }


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _row(md: str, policy: str, after: str = "") -> list[str]:
    """Cells of the first table row for the policy after the given heading."""
    text = md[md.index(after) :] if after else md
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| `{policy}`"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_formatters() -> None:
    assert report.fmt_ms(312.4) == "312"
    assert report.fmt_ms(312.5) == "313"
    assert report.fmt_ms(None) == D
    assert report.fmt_rate({"rate": 0.25, "count": 4}) == "25% (1/4)"
    assert report.fmt_rate({"rate": 1 / 3, "count": 3}) == "33% (1/3)"
    assert report.fmt_rate({"rate": None, "count": 0}) == D
    assert report.fmt_spread({"count": 2, "median": 99.6, "p95": 140.0}) == "100 / 140"
    assert report.fmt_spread({"count": 0, "median": None, "p95": None}) == D
    assert report.fmt_ratio(0.5) == "0.50" + X
    assert report.fmt_ratio(None) == D


def test_markdown_main_table(results: dict[str, Any]) -> None:
    md = report.markdown(results)
    assert md.splitlines()[0].startswith("# ")
    assert "`duplex bench --fast`" in md.splitlines()[0]
    assert "fast" in md.splitlines()[0]
    assert _row(md, "duplex") == [
        "`duplex`",
        "25% (1/4)",
        D,  # no false-start counts in these runs
        "312 / 871",
        "140 / 140",
        D,
        "0% (0/3)",
        "420 / 610",
        "40 / 40",
        "0.11",
        "188",
    ]
    assert _row(md, "any-speech-interrupts") == [
        "`any-speech-interrupts`",
        "100% (4/4)",
        D,
        "180 / 650",
        "95 / 95",
        "600 / 600",
        D,
        D,
        D,
        "0.10",
        "180",
    ]


def test_markdown_ratios_and_components(results: dict[str, Any]) -> None:
    md = report.markdown(results)
    ratios = _row(md, "any-speech-interrupts", after="## Relative to")
    assert ratios == ["`any-speech-interrupts`", "4.00" + X, "0.58" + X, "0.68" + X, D, D]
    assert "| `duplex`" not in md[md.index("## Relative") : md.index("## Where")]
    comps = md[md.index("## Where") :]
    assert _row(comps, "duplex") == ["`duplex`", "210 / 213", D, D, "260 / 300", "380 / 420", D]
    assert _row(comps, "any-speech-interrupts") == ["`any-speech-interrupts`", *[D] * 6]


def test_markdown_tolerates_missing_sections(results: dict[str, Any]) -> None:
    results.pop("ratios")
    results["summary"].pop("any-speech-interrupts")
    md = report.markdown(results)
    assert "## Relative to" not in md
    assert _row(md, "any-speech-interrupts")[1:] == [D] * 10


def test_sample_scenarios(results: dict[str, Any]) -> None:
    assert report.sample_scenarios(results) == [
        "pause-01",
        "turn-end-01",
        "interrupt-01",
        "backchannel-01",
    ]
    assert report.sample_scenarios(results, max_scenarios=2) == ["pause-01", "turn-end-01"]
    assert report.sample_scenarios(results, scenarios=["interrupt-01"]) == ["interrupt-01"]


def test_plot_timelines(results: dict[str, Any], tmp_path: Path) -> None:
    path = report.plot_timelines(results, tmp_path / "t.png")
    assert path.stat().st_size > 20_000
    width, height = _png_size(path)
    assert width == round(report.TIMELINE_WIDTH_IN * report.DPI)
    assert height > width / 2  # four stacked panels

    one = report.plot_timelines(results, tmp_path / "one.png", scenarios=["interrupt-01"])
    w1, h1 = _png_size(one)
    assert w1 == width and h1 < height / 2


def test_plot_cdfs(results: dict[str, Any], tmp_path: Path) -> None:
    path = report.plot_cdfs(results, tmp_path / "c.png")
    assert path.stat().st_size > 20_000
    width, height = _png_size(path)
    panel_w, panel_h = report.CDF_PANEL_IN
    assert (width, height) == (round(3 * panel_w * report.DPI), round(panel_h * report.DPI))

    for run in results["runs"]:
        run["metrics"]["response_after_interrupt_ms"] = None
    width2, _ = _png_size(report.plot_cdfs(results, tmp_path / "c2.png"))
    assert width2 == round(2 * panel_w * report.DPI)  # empty metric's panel skipped


def test_write_all(results: dict[str, Any], tmp_path: Path) -> None:
    paths = report.write_all(results, tmp_path / "out")
    assert {p.name for p in paths.values()} == {
        "bench.json",
        "bench.md",
        "timeline.png",
        "latency-cdf.png",
        "tradeoff.png",
    }
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in paths.values())
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == results
    assert paths["markdown"].read_text(encoding="utf-8") == report.markdown(results)
    for key in ("timeline", "cdf", "tradeoff"):
        assert paths[key].read_bytes()[:8] == PNG_MAGIC


def test_markdown_reports_the_servers_memory_and_cpu(results: dict[str, Any]) -> None:
    results = {
        **results,
        "server": {
            "url": "ws://127.0.0.1:8765/v1/stream",
            "memory": {"baseline_mb": 325.0, "peak_mb": 1303.0, "per_session_mb": 244.5},
            "cpu": {"seconds": 71.2, "cores": 1.13},
        },
    }
    md = report.markdown(results)
    assert "memory 325 MB idle, 1303 MB at peak, 244 MB per concurrent session" in md
    assert "CPU 71 s, 1.13 cores busy on average" in md


def _real_run(policy: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """A real-speech run: a question, a 900 ms pause, the rest, then the turn's end."""
    run = _run(policy, "reading-00-pause", "pause", assistant=spans)
    run["source"] = "real"
    run["user"] = [
        {"kind": "question", "text": "it was the age of wisdom", "start_ms": 500, "end_ms": 2000},
        {
            "kind": "continuation",
            "text": "it was the age of foolishness",
            "start_ms": 2900,
            "end_ms": 4500,
        },
    ]
    run["metrics"].update(
        pauses=[bool(spans and spans[0]["start_ms"] < 2900)], false_start_ms=[], turn_end_ms=[400]
    )
    run["estimates"] = [
        {"audio_ms": 2100, "p_text": 0.98, "p_audio": 0.03},  # a full stop at a breath
        {"audio_ms": 4600, "p_text": 0.98, "p_audio": 0.96},
    ]
    return run


def test_the_real_set_has_its_own_table_and_the_tradeoff_its_plot(
    results: dict[str, Any], tmp_path: Path
) -> None:
    from benchmarks import runner, tradeoff
    from duplex.config import PolicySettings

    answer = {"response_id": 1, "start_ms": 4900, "end_ms": 7000, "status": "completed"}
    real = [_real_run("duplex", [answer])]
    curves = tradeoff.curve(real, PolicySettings())
    at = {name: {p["bias"]: p for p in points} for name, points in curves.items()}
    # the words alone start into the pause; with the sound the pause is held
    assert at["text"][0.0]["false_start_rate"] == 1.0
    assert at["fused"][0.0]["false_start_rate"] == 0.0
    assert at["fused"][0.0]["turn_end_ms"] < at["audio"][-3.0]["turn_end_ms"]
    knee = tradeoff.knee(curves["fused"])
    assert knee is not None and knee["false_start_rate"] == 0.0
    results = {
        **results,
        "runs": results["runs"] + real,
        "sets": {
            "real": {
                "duplex": {
                    "false_start_rate": {"rate": 0.0, "count": 1},
                    "answered_rate": {"rate": 1.0, "count": 1},
                    "turn_end_ms": {"count": 1, "median": 400.0, "p95": 400.0},
                }
            }
        },
        "tradeoff": {"policy": "duplex", "curves": curves, "knee": {"estimator": "fused", **knee}},
    }
    md = report.markdown(results)
    real_row = _row(md, "duplex", "## Real speech")
    assert real_row[1:5] == ["0% (0/1)", D, "100% (1/1)", "400 / 400"]
    assert "the knee is the fused estimate" in md
    assert "real pause" in md  # false starts per category and source
    path = report.plot_tradeoff(results, tmp_path / "tradeoff.png")
    assert _png_size(path) == (round(4.6 * report.DPI), round(3.6 * report.DPI))
    assert runner.source_sets([]) == []
