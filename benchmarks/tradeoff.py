"""The trade-off between false starts and end-of-turn latency, as the threshold moves.

Every pause the session made an estimate in (`TurnEstimate`: the words' P(speak),
the sound's P(end)) is replayed against the policy's silence rule for a range
of biases added in log-odds, for three estimators: the text alone, the audio
alone, and the two fused (`duplex.tdm.fuse`). A pause inside a turn is a false
start when the replayed answer would begin before the user went on; a turn
end's latency is the silence the rule needs plus the run's own lag (its
measured end-of-turn latency minus the silence its decision needed). It is a
replay of the estimates one run recorded, not a rerun, so it is cheap and
shows the curve the way an end-of-turn benchmark's Pareto plot does; the
point the defaults give is the measured one in the tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from benchmarks.scenarios import Placed
from benchmarks.scoring import ANSWERED_WITHIN_MS, FALSE_START_MS, user_turns
from duplex.config import PolicySettings
from duplex.ports import StateProbs
from duplex.tdm import TurnPolicy, fuse, logit, sigmoid

BIASES = tuple(round(b, 2) for b in np.arange(-6.0, 6.01, 0.5))
MAX_FALSE_START_RATE = 0.05  # the knee: the fastest setting that keeps false starts this rare
MIN_ANSWERED_RATE = 0.95


@dataclass(frozen=True)
class Gap:
    """A silence in the user's speech, and the estimate made in it."""

    length_ms: float  # until the user went on; inf at a turn end
    p_text: float
    p_audio: float | None

    @property
    def turn_end(self) -> bool:
        return math.isinf(self.length_ms)


Estimator = Callable[[Gap, float], float | None]


def estimators(settings: PolicySettings) -> dict[str, Estimator]:
    """P(speak) per gap at a bias, for each way of estimating it (the audio alone only
    where the sound was asked: None elsewhere)."""

    def text(gap: Gap, bias: float) -> float:
        return sigmoid(logit(gap.p_text) + bias)

    def audio(gap: Gap, bias: float) -> float | None:
        return None if gap.p_audio is None else sigmoid(logit(gap.p_audio) + bias)

    def fused(gap: Gap, bias: float) -> float:
        # as the session does: words the text calls unfinished stay so, and the sound
        # was not asked about them
        if gap.p_audio is None:
            return text(gap, bias) if gap.p_text > settings.text_unfinished else gap.p_text
        shifted = replace(settings, audio_bias=settings.audio_bias + bias)
        return fuse(StateProbs(1 - gap.p_text, gap.p_text, 0.0), gap.p_audio, shifted).speak

    return {"fused": fused, "text": text, "audio": audio}


def gaps_of(run: Mapping[str, Any]) -> list[Gap]:
    """The run's pauses and turn ends, each with the last estimate made in it."""
    user = [Placed(**p) for p in run.get("user", [])]
    estimates = run.get("estimates") or []
    turns = user_turns(user)
    found = []
    for turn in turns:
        if turn[0].kind != "question":
            continue
        for j, cue in enumerate(turn):
            # a pause lasts until the user goes on; at the turn's end an answer is due
            length = float(turn[j + 1].start_ms - cue.end_ms) if j + 1 < len(turn) else math.inf
            # the last estimate made in the gap (at a turn end, while an answer was due)
            until = cue.end_ms + min(length, ANSWERED_WITHIN_MS)
            made = [e for e in estimates if cue.end_ms <= e["audio_ms"] < until]
            if made:
                last = made[-1]
                found.append(Gap(length, float(last["p_text"]), last.get("p_audio")))
    return found


def lag_ms(runs: Sequence[Mapping[str, Any]], settings: PolicySettings) -> float:
    """How much later than its required silence an answer starts (VAD, compute, playout)."""
    policy = TurnPolicy(settings)
    lags = []
    for run in runs:
        ends = [g for g in gaps_of(run) if g.turn_end]
        latencies = [t for t in (run.get("metrics") or {}).get("turn_end_ms") or [] if t]
        for gap, latency in zip(ends, latencies, strict=False):
            p = fuse(StateProbs(1 - gap.p_text, gap.p_text, 0.0), gap.p_audio, settings).speak
            lags.append(latency - policy.required_silence_ms(p))
    return float(np.median(lags)) if lags else 0.0


def curve(
    runs: Sequence[Mapping[str, Any]], settings: PolicySettings
) -> dict[str, list[dict[str, Any]]]:
    """Per estimator, per bias: false-start rate, median turn-end latency, answered rate."""
    policy = TurnPolicy(settings)
    gaps = [g for run in runs for g in gaps_of(run)]
    lag = lag_ms(runs, settings)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, estimate in estimators(settings).items():
        points = []
        for bias in BIASES:
            starts, latencies = [], []
            for gap in gaps:
                p = estimate(gap, bias)
                if p is None:
                    continue
                when = policy.required_silence_ms(p) + lag
                if gap.turn_end:
                    latencies.append(when)
                else:
                    starts.append(when + FALSE_START_MS / 2 < gap.length_ms)
            if not starts or not latencies:
                continue
            points.append(
                {
                    "bias": bias,
                    "false_start_rate": sum(starts) / len(starts),
                    "pauses": len(starts),
                    "turn_end_ms": float(np.median(latencies)),
                    "answered_rate": sum(t <= ANSWERED_WITHIN_MS for t in latencies)
                    / len(latencies),
                    "turn_ends": len(latencies),
                }
            )
        out[name] = points
    return out


def knee(points: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The fastest point that keeps false starts and misses rare; where none does, the
    one with the fewest of both (a false start and a missed turn end count alike)."""
    good = [
        p
        for p in points
        if p["false_start_rate"] <= MAX_FALSE_START_RATE and p["answered_rate"] >= MIN_ANSWERED_RATE
    ]
    if good:
        return min(good, key=lambda p: p["turn_end_ms"])
    return min(
        points,
        key=lambda p: (p["false_start_rate"] + 1 - p["answered_rate"], p["turn_end_ms"]),
        default=None,
    )
