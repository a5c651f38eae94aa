"""The benchmark's metric definitions on hand-built timelines, and scenario ground truth."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.runner import Run, arrival_delays, ratios, summarize_runs
from benchmarks.scenarios import Cue, Placed, Scenario, UserSimulator
from benchmarks.scoring import OutputSpan, score
from duplex.audio import FRAME_MS, SAMPLE_RATE, Int16Array, voiced_span
from duplex.events import ResponseAudio, ResponseDone, TurnTaken


def _q(start: int, end: int, kind: str = "question") -> Placed:
    return Placed(kind, "", start, end)


def test_answer_gaps_are_the_silence_inside_an_answer_to_a_question() -> None:
    user = [_q(500, 2000)]
    smooth = score("turn_end", user, [OutputSpan(1, 2400, 5000, "completed", 2600)])
    choppy = score("turn_end", user, [OutputSpan(1, 2400, 5000, "completed", 2420)])
    unknown = score("turn_end", user, [OutputSpan(1, 2400, 5000, "completed")])
    held = score("backchannel", user, [OutputSpan(1, 2400, 5000, "completed", 2000)])
    assert (smooth["answer_gap_ms"], choppy["answer_gap_ms"]) == (0, 180)
    assert unknown["answer_gap_ms"] is None
    assert held["answer_gap_ms"] is None  # a hold over "uh-huh" is not a gap


def test_barge_in_stop_is_onset_to_the_end_of_the_answer_playing_then() -> None:
    user = [_q(500, 2000), _q(4000, 4600, "interruption")]
    answer = OutputSpan(1, 2400, 4120, "interrupted")  # output stopped 120 ms after onset
    reply = OutputSpan(2, 4950, 6000, "completed")
    m = score("interruption", user, [answer, reply])
    assert m["barge_in_stop_ms"] == 120
    assert m["response_after_interrupt_ms"] == 350
    assert m["end_of_turn_ms"] == 400
    assert m["takeover"] is None and m["false_stop"] is None


def test_interruption_after_the_answer_ended_is_not_a_barge_in() -> None:
    user = [_q(500, 2000), _q(6000, 6600, "interruption")]
    m = score("interruption", user, [OutputSpan(1, 2300, 5000, "completed")])
    assert m["barge_in_stop_ms"] is None and m["response_after_interrupt_ms"] is None


def test_takeover_during_a_pause_and_latency_to_the_real_end() -> None:
    user = [_q(500, 1200), _q(2400, 3500, "continuation")]
    took_over = score("pause", user, [OutputSpan(1, 1700, 2500, "interrupted"),
                                      OutputSpan(2, 3800, 5000, "completed")])  # fmt: skip
    assert took_over["takeover"] is True and took_over["end_of_turn_ms"] == 300
    waited = score("pause", user, [OutputSpan(1, 3650, 5000, "completed")])
    assert waited["takeover"] is False and waited["end_of_turn_ms"] == 150


def test_backchannel_false_stop() -> None:
    user = [_q(500, 2000), _q(3000, 3300, "backchannel")]
    kept = score("backchannel", user, [OutputSpan(1, 2300, 6000, "completed")])
    stopped = score("backchannel", user, [OutputSpan(1, 2300, 3500, "interrupted")])
    missed = score("backchannel", user, [OutputSpan(1, 2300, 2900, "completed")])
    assert (kept["false_stop"], stopped["false_stop"], missed["false_stop"]) == (False, True, None)
    held = score("backchannel", user, [OutputSpan(1, 2300, 6000, "completed")], [380])
    assert (kept["backchannel_hold_ms"], held["backchannel_hold_ms"]) == (0, 380)
    assert stopped["backchannel_hold_ms"] is None and missed["backchannel_hold_ms"] is None


def test_summary_rates_and_ratios() -> None:
    scenario = Scenario("p", "pause", ())
    runs = []
    for policy, takeovers, latency in (("a", [False, True], 200.0), ("b", [True, True], 500.0)):
        for takeover in takeovers:
            run = Run(policy, scenario, audio_ms=1000, compute_ms=250)
            run.metrics = {
                "takeover": takeover,
                "end_of_turn_ms": latency,
                "barge_in_stop_ms": None,
                "response_after_interrupt_ms": None,
                "false_stop": None,
            }
            runs.append(run)
    summary = summarize_runs(runs, ["a", "b"])
    assert summary["a"]["takeover_rate"] == {"rate": 0.5, "count": 2}
    assert summary["b"]["end_of_turn_ms"]["median"] == 500.0
    assert summary["a"]["real_time_factor"]["median"] == 0.25
    r = ratios(summary, ["a", "b"])["b"]
    assert r["takeover_rate"] == 2.0 and r["end_of_turn_ms"] == 2.5
    assert r["backchannel_false_stop_rate"] is None


def _tone(ms: int, lead_ms: int = 40, tail_ms: int = 100) -> Int16Array:
    n, a, b = (x * SAMPLE_RATE // 1000 for x in (lead_ms + ms + tail_ms, lead_ms, lead_ms + ms))
    pcm = np.zeros(n, dtype=np.int16)
    t = np.arange(b - a) / SAMPLE_RATE
    pcm[a:b] = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    return pcm


def test_voiced_span_finds_the_voice_inside_a_cue() -> None:
    assert voiced_span(_tone(500)) == (40, 540)


def test_closed_loop_cue_lands_on_the_assistant_output() -> None:
    scenario = Scenario(
        "s",
        "backchannel",
        (
            Cue("question", "", _tone(600), at_ms=500),
            Cue("backchannel", "", _tone(200), into_answer_ms=700),
        ),
        tail_ms=200,
    )  # fmt: skip
    sim = UserSimulator(scenario)
    frames = iter(sim)
    for _ in range(100):  # 2 s: the question, then silence
        next(frames)
    sim.observe(TurnTaken(audio_ms=2000, clock_ms=0, response_id=1, p_speak=1, silence_ms=0,
                          required_silence_ms=0))  # fmt: skip
    sim.observe(ResponseAudio(audio_ms=2060, clock_ms=0, response_id=1,
                              pcm=np.zeros(320, np.int16), text=""))  # fmt: skip
    rest = list(itertools.islice(frames, 60))
    assert sim.placed[1].start_ms == 2060 + 700
    sim.observe(ResponseDone(audio_ms=3400, clock_ms=0, response_id=1, status="completed",
                             played_ms=0, text=""))  # fmt: skip
    rest += list(frames)
    audio = np.concatenate([f.pcm for f in rest])
    onset = int(np.flatnonzero(np.abs(audio) > 1000)[0]) * 1000 // SAMPLE_RATE + 2000
    assert abs(onset - sim.placed[1].start_ms) < FRAME_MS


@pytest.fixture(scope="module")
def generated() -> list[Scenario]:
    from benchmarks.scenarios import generate
    from models.tts import PiperSynthesizer

    return generate(PiperSynthesizer(), per_category=1, seed=3, snrs=(None,))


def test_generated_timeline_matches_its_audio(generated: list[Scenario]) -> None:
    """Ground truth agrees with the rendered audio within one frame.

    Checked two ways on the clean mix the session would hear: the voiced
    frames by level (the same -40 dB rule, but on the rendered mixture, so
    placement and rendering are what is tested), and WebRTC's VAD: its onset
    within a frame, its end within its built-in hangover (up to 120 ms).
    """
    from models.vad import WebRtcVad

    pause = next(s for s in generated if s.category == "pause")
    sim = UserSimulator(pause)
    frames = list(sim)
    rendered = np.concatenate([f.pcm for f in frames])
    vad = WebRtcVad(3)
    by_vad = [f.start_ms for f in frames if vad.probability(f) > 0.5]
    for placed in sim.placed:
        lo, hi = placed.start_ms - 200, placed.end_ms + 200
        a, b = voiced_span(rendered[lo * SAMPLE_RATE // 1000 : hi * SAMPLE_RATE // 1000])
        assert abs(lo + a - placed.start_ms) <= FRAME_MS
        assert abs(lo + b - placed.end_ms) <= FRAME_MS
        inside = [t for t in by_vad if lo <= t < hi]
        assert abs(inside[0] - placed.start_ms) <= FRAME_MS
        assert -FRAME_MS <= inside[-1] + FRAME_MS - placed.end_ms <= 120
    gap = sim.placed[1].start_ms - sim.placed[0].end_ms
    assert 300 <= gap <= 1500


def test_generation_is_seeded(generated: list[Scenario]) -> None:
    assert [s.name for s in generated] == [
        "turn_end-00", "pause-00", "interruption-00", "backchannel-00"
    ]  # fmt: skip
    timings = [(c.at_ms, c.after_previous_ms, c.into_answer_ms) for s in generated for c in s.cues]
    from benchmarks.scenarios import generate
    from models.tts import PiperSynthesizer

    again = generate(PiperSynthesizer(), per_category=1, seed=3, snrs=(None,))
    assert timings == [
        (c.at_ms, c.after_previous_ms, c.into_answer_ms) for s in again for c in s.cues
    ]


def test_user_scenarios_from_a_folder(tmp_path: Path) -> None:
    from benchmarks.scenarios import load_dir
    from duplex.audio import write_wav

    write_wav(tmp_path / "q.wav", _tone(800))
    write_wav(tmp_path / "i.wav", _tone(300))
    spec: dict[str, Any] = {
        "category": "interruption",
        "snr_db": 20,
        "cues": [
            {"kind": "question", "wav": "q.wav", "text": "what time is it", "at_ms": 500},
            {"kind": "interruption", "wav": "i.wav", "into_answer_ms": 900},
        ],
    }
    (tmp_path / "mine.json").write_text(json.dumps(spec))
    [scenario] = load_dir(tmp_path)
    assert (scenario.name, scenario.category, scenario.snr_db) == ("mine", "interruption", 20)
    assert [c.into_answer_ms for c in scenario.cues] == [None, 900]
    spec["cues"][1]["at_ms"] = 100  # two timings for one cue
    (tmp_path / "mine.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="exactly one of"):
        load_dir(tmp_path)
    (tmp_path / "mine.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a scenario"):
        load_dir(tmp_path)


@pytest.mark.timeout(900)
@pytest.mark.timeout(900)  # 16 conversations on the real models: minutes on 2 slow cores
def test_duplex_bench_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    """The real command on real models, a small scenario set, two policies side by side."""
    out = tmp_path / "bench"
    command = [
        sys.executable, "-m", "app.cli", "bench", "--fast", "--per-category", "1",
        "--policies", "duplex,silence-500ms", "--understanding", "text,speech",
        "--recordings", str(tmp_path / "none"), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    # each policy with the LM hearing words, then with it hearing the speech
    labels = ["duplex", "silence-500ms", "duplex+speech", "silence-500ms+speech"]
    assert data["policies"] == labels
    synthetic = {"turn_end", "pause", "interruption", "backchannel"}
    assert len(data["runs"]) == 16 and {r["category"] for r in data["runs"]} == synthetic
    assert {r["source"] for r in data["runs"]} == {"synthetic"} and "real" not in data["sets"]
    assert data["summary"]["duplex+speech"]["end_of_turn_ms"]["count"] >= 3
    assert data["summary"]["duplex"]["end_of_turn_ms"]["count"] >= 3
    assert "silence-500ms" in data["ratios"]
    assert "| `silence-500ms`" in (out / "bench.md").read_text()
    for png in ("timeline.png", "latency-cdf.png", "tradeoff.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sessions_arrive_at_random_times_then_run_back_to_back() -> None:
    delays = arrival_delays(jobs=18, sessions=4, stagger_ms=2000)
    assert len(delays) == 18 and delays == arrival_delays(18, 4, 2000)  # seeded
    assert all(0 <= d <= 2000 for d in delays[:4]) and len(set(delays[:4])) > 1
    assert delays[4:] == [0] * 14
    assert arrival_delays(3, 4, 0) == [0, 0, 0]


def test_false_starts_are_counted_per_pause_with_what_the_user_heard() -> None:
    # a turn with two pauses (1000-1800 and 2600-3000 ms), then the turn end at 4000
    user = [_q(0, 1000), _q(1800, 2600, "continuation"), _q(3000, 4000, "continuation")]
    yielded = OutputSpan(1, 1500, 1900, "interrupted")  # 400 ms heard, then it yielded
    click = OutputSpan(2, 2700, 2780, "interrupted")  # 80 ms: under the 120 ms that count
    answer = OutputSpan(3, 4300, 6000, "completed")
    m = score("pause", user, [yielded, click, answer])
    assert m["pauses"] == [True, False]
    assert m["false_start_ms"] == [400]
    assert m["turn_end_ms"] == [300]
    # audio that begins while the user speaks after a pause counts for that pause
    late = score("pause", user, [OutputSpan(1, 2000, 2300, "interrupted"), answer])
    assert late["pauses"] == [True, False]
    held = score("pause", user, [answer])
    assert held["pauses"] == [False, False] and held["false_start_ms"] == []


def test_a_turn_end_answered_late_or_after_the_next_turn_is_a_miss() -> None:
    # a conversation: three turns of the user, the next one at 5000 and 9000
    user = [_q(0, 1000), _q(5000, 6000), _q(9000, 9500)]
    spans = [
        OutputSpan(1, 1400, 3000, "completed"),  # 400 ms after the first turn
        OutputSpan(2, 8000, 8900, "completed"),  # 2000 ms after the second: too late
    ]
    assert score("dialogue", user, spans)["turn_end_ms"] == [400, None, None]
