"""Runs scenarios against turn-taking policies, side by side, and summarizes them.

A session is reached through one small interface, `duplex.drive.Steps`
(one input frame in, its events out), made by a factory per run; the
in-process engine is one such factory, a remote server can be another.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import tradeoff
from benchmarks.scenarios import Placed, Scenario, UserSimulator
from benchmarks.scoring import OutputSpan, score
from duplex.clock import Clock
from duplex.config import PolicySettings
from duplex.drive import drive
from duplex.events import (
    BackchannelIgnored,
    Event,
    Interrupted,
    ResponseDone,
    TranscriptFinal,
    TurnEstimate,
    TurnMetrics,
)
from duplex.metrics import STAGES, TurnRecord, summarize
from duplex.ports import Steps

# makes a session for one run of one policy
SessionFactory = Callable[[Clock, str], Steps]


@dataclass
class Run:
    policy: str
    scenario: Scenario
    user: list[Placed] = field(default_factory=list)
    assistant: list[OutputSpan] = field(default_factory=list)
    records: list[TurnRecord] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    heard: list[dict[str, Any]] = field(default_factory=list)  # what the runtime understood
    estimates: list[dict[str, Any]] = field(default_factory=list)  # TurnEstimate events
    audio_ms: int = 0
    compute_ms: float = 0.0
    cpu_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        first = self.records[0].stages() if self.records else {}
        return {
            "policy": self.policy,
            "scenario": self.scenario.name,
            "category": self.scenario.category,
            "snr_db": self.scenario.snr_db,
            "source": self.scenario.source,
            "user": [p.to_dict() for p in self.user],
            "assistant": [s.to_dict() for s in self.assistant],
            "metrics": self.metrics,
            "components": first,
            "turns": [r.to_dict() for r in self.records],
            "heard": self.heard,
            "estimates": self.estimates,
            "audio_ms": self.audio_ms,
            "compute_ms": self.compute_ms,
            "cpu_ms": self.cpu_ms,
            "real_time_factor": self.compute_ms / self.audio_ms if self.audio_ms else None,
        }


def run_one(
    make_session: SessionFactory, policy: str, scenario: Scenario, fast: bool, ideal: bool = False
) -> Run:
    """One scenario against one policy, closed loop (`ideal`: compute is free)."""
    run = Run(policy, scenario)
    simulator = UserSimulator(scenario)
    statuses: dict[int, str] = {}
    holds: list[int] = []

    def on_event(event: Event) -> None:
        simulator.observe(event)
        if isinstance(event, ResponseDone):
            statuses[event.response_id] = event.status
        elif isinstance(event, TurnMetrics):
            run.records.append(event.record)
        elif isinstance(event, BackchannelIgnored):
            holds.append(event.held_ms)
        elif isinstance(event, TurnEstimate):
            run.estimates.append(
                {"audio_ms": event.audio_ms, "p_text": event.p_text, "p_audio": event.p_audio}
            )
        if isinstance(event, TranscriptFinal | BackchannelIgnored | Interrupted):
            fields = {"text": event.text} if not isinstance(event, Interrupted) else {}
            run.heard.append({"type": event.type, "audio_ms": event.audio_ms, **fields})

    cpu = time.process_time()
    result = drive(
        lambda clock: make_session(clock, policy),
        simulator,
        fast=fast,
        ideal=ideal,
        on_event=on_event,
    )
    run.cpu_ms = (time.process_time() - cpu) * 1000
    run.user = simulator.placed
    run.assistant = [
        OutputSpan(rid, start, end, statuses.get(rid, "unfinished"), result.played.get(rid))
        for rid, (start, end) in sorted(result.spans.items())
    ]
    run.metrics = score(scenario.category, run.user, run.assistant, holds)
    run.audio_ms, run.compute_ms = result.audio_ms, result.compute_ms
    return run


def arrival_delays(jobs: int, sessions: int, stagger_ms: int) -> list[int]:
    """Per job, ms to wait before it starts: the first `sessions` jobs (one per
    session) arrive at seeded random times within `stagger_ms`, the rest at once."""
    first = random.Random(jobs).choices(range(stagger_ms + 1), k=min(jobs, sessions))
    return first + [0] * (jobs - len(first))


def run_all(
    make_session: SessionFactory,
    scenarios: Sequence[Scenario],
    policies: Sequence[str],
    *,
    fast: bool,
    sessions: int = 1,
    stagger_ms: int = 0,
    progress: Callable[[Run], None] | None = None,
    ideal: bool = False,
) -> list[Run]:
    """Every scenario against every policy, `sessions` at a time.

    With several sessions, the first conversation of each starts after a random 0
    to `stagger_ms` (seeded), as users arrive; later ones start when one ends.
    Without it the sessions begin in the same instant, and their users, saying the
    first scenarios' same question, end their turns within milliseconds of each
    other.
    """
    jobs = [(p, s) for s in scenarios for p in policies]  # policies interleaved: same conditions
    if sessions <= 1:
        runs = []
        for policy, scenario in jobs:
            runs.append(run_one(make_session, policy, scenario, fast, ideal))
            if progress:
                progress(runs[-1])
        return runs

    delays = arrival_delays(len(jobs), sessions, stagger_ms)

    def job(policy: str, scenario: Scenario, delay_ms: int) -> Run:
        time.sleep(delay_ms / 1000)
        run = run_one(make_session, policy, scenario, fast, ideal)
        if progress:
            progress(run)
        return run

    with ThreadPoolExecutor(sessions) as pool:
        futures = [pool.submit(job, p, s, d) for (p, s), d in zip(jobs, delays, strict=True)]
        return [f.result() for f in futures]


def _rate(values: list[bool | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {"rate": sum(present) / len(present) if present else None, "count": len(present)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _pooled(metrics: Sequence[dict[str, Any]], key: str) -> list[Any]:
    return [x for m in metrics for x in m.get(key) or []]


def summarize_runs(runs: Sequence[Run], policies: Sequence[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for policy in policies:
        mine = [r for r in runs if r.policy == policy]
        metrics = [r.metrics for r in mine]
        stages = [r.records[0].stages() for r in mine if r.records]
        turn_ends = _pooled(metrics, "turn_end_ms")
        summary[policy] = {
            "takeover_rate": _rate([m["takeover"] for m in metrics]),
            "false_start_rate": _rate(_pooled(metrics, "pauses")),
            "false_start_ms": summarize(_pooled(metrics, "false_start_ms")).to_dict(),
            "answered_rate": _rate([t is not None for t in turn_ends]),
            "turn_end_ms": summarize(turn_ends).to_dict(),
            "end_of_turn_ms": summarize(m["end_of_turn_ms"] for m in metrics).to_dict(),
            "barge_in_stop_ms": summarize(m["barge_in_stop_ms"] for m in metrics).to_dict(),
            "response_after_interrupt_ms": summarize(
                m["response_after_interrupt_ms"] for m in metrics
            ).to_dict(),
            "backchannel_false_stop_rate": _rate([m["false_stop"] for m in metrics]),
            "backchannel_hold_ms": summarize(
                m.get("backchannel_hold_ms") for m in metrics
            ).to_dict(),
            "answer_gap_ms": summarize(m.get("answer_gap_ms") for m in metrics).to_dict(),
            "components": {
                stage: summarize(s.get(stage) for s in stages).to_dict()
                for stage in (name.removesuffix("_ms") for name in STAGES)
            },
            "real_time_factor": summarize(
                r.compute_ms / r.audio_ms for r in mine if r.audio_ms
            ).to_dict(),
            "cpu_ms_per_audio_s": summarize(
                r.cpu_ms / (r.audio_ms / 1000) for r in mine if r.audio_ms
            ).to_dict(),
        }
    return summary


def source_sets(runs: Sequence[Run]) -> list[str]:
    """The scenario sources in the runs (synthetic, real, user), never pooled together."""
    return list(dict.fromkeys(r.scenario.source for r in runs))


def ratios(summary: dict[str, Any], policies: Sequence[str]) -> dict[str, Any]:
    """Each other policy against the first: medians for latencies, rates for rates."""
    reference = summary[policies[0]]
    out: dict[str, Any] = {}
    for policy in policies[1:]:
        mine = summary[policy]
        out[policy] = {
            key: _ratio(mine[key]["median"], reference[key]["median"])
            for key in ("end_of_turn_ms", "barge_in_stop_ms", "response_after_interrupt_ms")
        } | {
            key: _ratio(mine[key]["rate"], reference[key]["rate"])
            for key in ("takeover_rate", "backchannel_false_stop_rate")
        }
    return out


def peak_rss_mb() -> float:
    """The process's peak resident memory (Linux /proc; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def real_tradeoff(
    runs: Sequence[dict[str, Any]], policy: str, settings: PolicySettings
) -> dict[str, Any]:
    """The policy's false starts against latency on real speech, replayed (runs as in
    the results); the knee marked is the fused estimate's."""
    mine = [r for r in runs if r["policy"] == policy and r["source"] == "real"]
    if not mine:
        return {}
    curves = tradeoff.curve(mine, settings)
    knees = [
        {"estimator": name, **point}
        for name, points in curves.items()
        if (point := tradeoff.knee(points)) is not None
    ]
    best = next((k for k in knees if k["estimator"] == "fused"), knees[0] if knees else None)
    return {"policy": policy, "curves": curves, "knees": knees, "knee": best}


def results(
    runs: Sequence[Run],
    policies: Sequence[str],
    *,
    command: str,
    fast: bool,
    sessions: int,
    cpus: int,
    stagger_ms: int = 0,
    settings: PolicySettings | None = None,
    ideal: bool = False,
) -> dict[str, Any]:
    sets = {
        source: summarize_runs([r for r in runs if r.scenario.source == source], policies)
        for source in source_sets(runs)
    }
    # the main table: the synthetic set where there is one, else the first
    main = "synthetic" if "synthetic" in sets else next(iter(sets), "synthetic")
    summary = sets.get(main) or summarize_runs([], policies)
    peak = peak_rss_mb()
    for each in sets.values():
        for entry in each.values():
            entry["peak_rss_mb"] = peak
    run_dicts = [r.to_dict() for r in runs]
    return {
        "command": command,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "ideal" if ideal else "fast" if fast else "real-time",
        "sessions": sessions,
        "stagger_ms": stagger_ms if sessions > 1 else 0,
        "machine": {"platform": platform.platform(), "cpus": cpus},
        "policies": list(policies),
        "runs": run_dicts,
        "summary": summary,
        "summary_source": main,
        "sets": sets,
        "ratios": ratios(summary, policies),
        "tradeoff": real_tradeoff(run_dicts, policies[0], settings or PolicySettings()),
    }
