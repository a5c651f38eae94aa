"""Benchmark report: the results of `duplex bench` as markdown, timelines and CDFs.

The runner produces one JSON-ready results dict (policies side by side over
the same scenarios); this module only renders it, so a saved `bench.json` can
be re-rendered without re-running anything. matplotlib is imported inside the
plot functions (Agg backend, no display) so that importing this module, e.g.
for `markdown()` alone, stays light.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CATEGORIES = ("pause", "turn_end", "interruption", "backchannel", "dialogue")
LATENCIES = (
    ("end_of_turn_ms", "End of turn"),
    ("barge_in_stop_ms", "Barge-in stop"),
    ("response_after_interrupt_ms", "Response after interruption"),
)
RATES = (
    ("takeover_rate", "TOR on pauses"),
    ("backchannel_false_stop_rate", "Backchannel false stops"),
)
COMPONENTS = (
    ("vad_end", "VAD end"),
    ("asr_final", "ASR final"),
    ("turn_audio", "Acoustic estimate"),
    ("decision", "Decision"),
    ("first_token", "First token"),
    ("first_tts_audio", "First TTS audio"),
)
KIND_COLORS = {
    "question": "#1f77b4",
    "continuation": "#17becf",
    "interruption": "#d62728",
    "backchannel": "#ff7f0e",
}
POLICY_COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
LINESTYLES = ("-", "--", ":", "-.")
FALSE_START_COLOR = "#d62728"
HATCHES = {"completed": "", "interrupted": "///", "cancelled": ".."}
DASH = "\u2013"  # en dash: "no data"
TIMES = "\u00d7"

# Figure geometry (inches at DPI); exact, since figures are saved without
# "tight" cropping, so the tests can check pixel sizes.
DPI = 110
TIMELINE_WIDTH_IN = 11.0
TIMELINE_LANE_IN = 0.42
TIMELINE_PAD_IN = 0.9
CDF_PANEL_IN = (4.6, 3.6)
CDF_EMPTY_IN = (4.6, 1.6)


# ----------------------------------------------------------------- markdown


def _round_half_up(x: float) -> int:
    """Conventional rounding (Python's round() is half-to-even: 312.5 -> 312)."""
    return math.floor(x + 0.5)


def fmt_ms(x: float | None) -> str:
    """Milliseconds as an integer; None as a dash."""
    return DASH if x is None else str(_round_half_up(x))


def fmt_rate(stat: Mapping[str, Any] | None) -> str:
    """A rate as "25% (1/4)": the percentage alone hides how few trials there were."""
    if not stat or stat.get("rate") is None or not stat.get("count"):
        return DASH
    rate, count = float(stat["rate"]), int(stat["count"])
    return f"{_round_half_up(rate * 100)}% ({_round_half_up(rate * count)}/{count})"


def fmt_spread(stat: Mapping[str, Any] | None) -> str:
    """Median / p95 in ms, or a dash when nothing was measured."""
    if not stat or not stat.get("count") or stat.get("median") is None:
        return DASH
    return f"{fmt_ms(stat['median'])} / {fmt_ms(stat.get('p95'))}"


def fmt_ratio(x: float | None) -> str:
    """A ratio to the reference policy, e.g. "2.50x" with a multiplication sign."""
    return DASH if x is None else f"{x:.2f}{TIMES}"


def fmt_factor(stat: Mapping[str, Any] | None) -> str:
    """Median real-time factor with two decimals."""
    if not stat or stat.get("median") is None:
        return DASH
    return f"{float(stat['median']):.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table: the first column left-aligned, the numbers right-aligned."""
    marks = [":---", *("---:" for _ in header[1:])]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _policies(results: Mapping[str, Any]) -> list[str]:
    """Policies in the results' order (first = reference), else the order runs appear."""
    names = list(results.get("policies") or [])
    for run in results.get("runs", []):
        if run["policy"] not in names:
            names.append(run["policy"])
    return names


def markdown(results: Mapping[str, Any]) -> str:
    """A compact report for a README: one main table, ratios and the latency breakdown."""
    policies = _policies(results)
    summary: Mapping[str, Any] = results.get("summary", {})
    reference = policies[0] if policies else "reference"
    mode = results.get("mode", "?")
    lines = [
        f"# Turn-taking benchmark: `{results.get('command', 'duplex bench')}` ({mode} mode)",
        "",
    ]

    machine = results.get("machine") or {}
    facts = [str(results[k]) for k in ("created",) if results.get(k)]
    if results.get("sessions") is not None:
        arriving = results.get("stagger_ms")
        spread = f" arriving over {arriving} ms" if arriving else ""
        facts.append(f"{results['sessions']} session(s){spread}")
    if machine:
        facts.append(f"{machine.get('platform', '?')}, {machine.get('cpus', '?')} CPUs")
    scenarios = {run["scenario"] for run in results.get("runs", [])}
    facts.append(f"{len(scenarios)} scenarios")
    lines += [", ".join(facts) + f"; reference policy `{reference}`.", ""]

    header = [
        "Policy",
        "TOR on pauses ↓",
        "False starts ↓",
        "End of turn ms",
        "Barge-in stop ms",
        "Response after interruption ms",
        "Backchannel false stops ↓",
        "Backchannel hold ms",
        "Gaps in answers ms",
        "RTF",
        "CPU ms per audio s",
    ]
    rows = []
    for name in policies:
        s = summary.get(name, {})
        rows.append(
            [
                f"`{name}`",
                fmt_rate(s.get("takeover_rate")),
                fmt_rate(s.get("false_start_rate")),
                *(fmt_spread(s.get(key)) for key, _ in LATENCIES),
                fmt_rate(s.get("backchannel_false_stop_rate")),
                fmt_spread(s.get("backchannel_hold_ms")),
                fmt_spread(s.get("answer_gap_ms")),
                fmt_factor(s.get("real_time_factor")),
                fmt_ms((s.get("cpu_ms_per_audio_s") or {}).get("median")),
            ]
        )
    if results.get("server"):  # RTF and CPU would be the client's, not the server's
        header, rows = header[:-2], [row[:-2] for row in rows]
    lines += _table(header, rows)
    lines += [
        "",
        "Latencies are median / p95 in ms on the audio timeline (lower is better). "
        "TOR: the assistant took the turn during a mid-utterance pause. "
        "False starts: pauses inside a turn into which 120 ms or more of answer audio began "
        "while the user still had words to say (yielded or not). "
        'Backchannel hold: how long the answer paused over an "uh-huh" it then went on from. '
        "Gaps in answers: silence inside an answer to a question (the loop busy longer than "
        "its output cushion). "
        "RTF: median compute / audio time; CPU: median process CPU per second of audio. "
        f"{DASH}: no data.",
    ]
    server = results.get("server")
    if server:
        memory = server.get("memory") or {}
        cpu = server.get("cpu") or {}
        lines += [
            "",
            f"Server `{server.get('url')}`: memory {memory.get('baseline_mb', 0):.0f} MB idle, "
            f"{memory.get('peak_mb', 0):.0f} MB at peak, "
            f"{memory.get('per_session_mb', 0):.0f} MB per concurrent session; "
            f"CPU {cpu.get('seconds', 0):.0f} s, {cpu.get('cores', 0):.2f} cores busy on "
            "average while the runs went.",
        ]
    else:
        peak = max((float(s.get("peak_rss_mb") or 0) for s in summary.values()), default=0.0)
        if peak:
            lines += ["", f"Peak memory of the benchmark process: {peak:.0f} MB."]

    ratios: Mapping[str, Any] = results.get("ratios") or {}
    others = [p for p in policies if p in ratios and p != reference]
    if others:
        keys = [RATES[0], *LATENCIES, RATES[1]]
        lines += ["", f"## Relative to `{reference}` ({TIMES} of {reference})", ""]
        ratio_rows = [
            [f"`{name}`", *(fmt_ratio(ratios[name].get(key)) for key, _ in keys)] for name in others
        ]
        header = ["Policy", *(label for _, label in keys)]
        lines += _table(header, ratio_rows)
        lines += [
            "",
            "Medians for latencies, rates for rates; "
            f"{DASH} where undefined (no data, or the reference is 0).",
        ]

    lines += _real_speech(results, policies)
    lines += ["", "## Where the end-of-turn time goes", ""]
    comp_rows = []
    for name in policies:
        comps = summary.get(name, {}).get("components") or {}
        comp_rows.append([f"`{name}`", *(fmt_spread(comps.get(key)) for key, _ in COMPONENTS)])
    lines += _table(["Policy", *(label for _, label in COMPONENTS)], comp_rows)
    lines += [
        "",
        "Median / p95 ms after the user's last voiced frame, for the first answer of each run.",
    ]
    return "\n".join(lines) + "\n"


def _real_speech(results: Mapping[str, Any], policies: Sequence[str]) -> list[str]:
    """The real-speech set's own table (never pooled with the synthetic one), false
    starts per category and source, and the trade-off's knee."""
    sets: Mapping[str, Any] = results.get("sets") or {}
    real = sets.get("real")
    lines: list[str] = []
    if real:
        header = [
            "Policy",
            "False starts ↓",
            "Heard of a false start ms",
            "Turn ends answered ≤ 1.5 s",
            "End of turn ms",
            "Backchannel false stops ↓",
        ]
        rows = [
            [
                f"`{name}`",
                fmt_rate(real.get(name, {}).get("false_start_rate")),
                fmt_spread(real.get(name, {}).get("false_start_ms")),
                fmt_rate(real.get(name, {}).get("answered_rate")),
                fmt_spread(real.get(name, {}).get("turn_end_ms")),
                fmt_rate(real.get(name, {}).get("backchannel_false_stop_rate")),
            ]
            for name in policies
        ]
        lines += ["", "## Real speech", "", *_table(header, rows)]
        lines += [
            "",
            "Recordings of real people (`--recordings`), cut only at their words. End of turn: "
            "every turn end answered within 1.5 s, median / p95 ms from the last word.",
        ]
    by = false_starts_by_category(results)
    if by:
        columns = sorted({key for counts in by.values() for key in counts})
        lines += ["", "### False starts per category and source", ""]
        rows = [
            [f"`{name}`", *(fmt_rate(by[name].get(key)) for key in columns)]
            for name in policies
            if name in by
        ]
        lines += _table(["Policy", *(f"{c[0]} {c[1]}" for c in columns)], rows)
    tradeoff = results.get("tradeoff") or {}
    knee = tradeoff.get("knee")
    if knee:
        lines += [
            "",
            f"Trade-off (real speech, `{tradeoff.get('policy')}`, replayed): the knee is the "
            f"{knee['estimator']} estimate at bias {knee['bias']:+.1f}: false starts "
            f"{knee['false_start_rate'] * 100:.0f}% of {knee['pauses']} pauses, turn ends "
            f"{fmt_ms(knee['turn_end_ms'])} ms median, {knee['answered_rate'] * 100:.0f}% "
            "answered within 1.5 s (tradeoff.png).",
        ]
    return lines


def false_starts_by_category(results: Mapping[str, Any]) -> dict[str, dict[Any, Any]]:
    """Per policy, per (source, category): the false-start rate over its pauses."""
    pooled: dict[str, dict[tuple[str, str], list[bool]]] = {}
    for run in results.get("runs", []):
        pauses = (run.get("metrics") or {}).get("pauses") or []
        if pauses:
            key = (str(run.get("source", "?")), str(run.get("category", "?")))
            pooled.setdefault(run["policy"], {}).setdefault(key, []).extend(pauses)
    return {
        policy: {
            key: {"rate": sum(v) / len(v), "count": len(v)} for key, v in sorted(counts.items())
        }
        for policy, counts in pooled.items()
    }


# -------------------------------------------------------------------- plots


def _pyplot() -> Any:
    """pyplot on the Agg backend: reports are rendered headless, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _policy_colors(policies: Sequence[str]) -> dict[str, str]:
    """One fixed color per policy, the same in every figure."""
    return {p: POLICY_COLORS[i % len(POLICY_COLORS)] for i, p in enumerate(policies)}


def sample_scenarios(
    results: Mapping[str, Any], scenarios: Sequence[str] | None = None, max_scenarios: int = 6
) -> list[str]:
    """The scenarios to draw: those asked for, else the first one of each category
    (the synthetic set's first, then real speech's pauses and conversations)."""
    runs = results.get("runs", [])
    if scenarios is not None:
        return list(scenarios)[:max_scenarios]
    first: dict[tuple[bool, str], str] = {}
    for run in runs:
        first.setdefault((run.get("source") == "real", run.get("category", "?")), run["scenario"])
    rank = {c: i for i, c in enumerate(CATEGORIES)}
    order = sorted(first, key=lambda k: (k[0], rank.get(k[1], len(rank))))
    return [first[k] for k in order][:max_scenarios]


def false_start_spans(run: Mapping[str, Any]) -> set[int]:
    """The response ids of a run's answers that began into a pause of the user's."""
    from benchmarks.scenarios import Placed
    from benchmarks.scoring import OutputSpan, pauses_of, starts_into, user_turns

    pauses = pauses_of(user_turns([Placed(**p) for p in run.get("user", [])]))
    spans = [OutputSpan(**s) for s in run.get("assistant", [])]
    return {s.response_id for pause in pauses for s in starts_into(pause, spans)}


def _label(ax: Axes, start_s: float, width_s: float, y: float, text: str, span_s: float) -> None:
    """Write text inside a bar, cut to what fits so neighbours do not overlap."""
    chars = int(width_s / span_s * TIMELINE_WIDTH_IN * 72 / (7 * 0.55))
    if chars < 3:
        return
    if len(text) > chars:
        text = text[: chars - 1] + "…"
    ax.text(start_s + span_s * 0.004, y, text, va="center", ha="left", fontsize=7, clip_on=True)


def plot_timelines(
    results: Mapping[str, Any],
    path: Path | str,
    scenarios: Sequence[str] | None = None,
    max_scenarios: int = 4,
) -> Path:
    """Who spoke when, per sample scenario: the user's speech above each policy's output."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    path = Path(path)
    policies = _policies(results)
    colors = _policy_colors(policies)
    names = sample_scenarios(results, scenarios, max_scenarios)
    by_scenario: dict[str, dict[str, Mapping[str, Any]]] = {}
    for run in results.get("runs", []):
        by_scenario.setdefault(run["scenario"], {})[run["policy"]] = run
    names = [n for n in names if n in by_scenario]

    lanes = ["user", *policies]
    panel_in = TIMELINE_LANE_IN * len(lanes) + TIMELINE_PAD_IN
    height = panel_in * max(len(names), 1) + 0.5
    fig = plt.figure(figsize=(TIMELINE_WIDTH_IN, height), dpi=DPI, layout="constrained")
    if not names:
        fig.text(0.5, 0.5, "no scenarios to draw", ha="center", va="center")
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0] if names else []

    for ax, name in zip(axes, names, strict=True):
        runs = by_scenario[name]
        any_run = next(iter(runs.values()))
        end_ms = max(
            [int(any_run.get("audio_ms") or 0)]
            + [s["end_ms"] for r in runs.values() for s in r.get("user", [])]
            + [s["end_ms"] for r in runs.values() for s in r.get("assistant", [])]
        )
        span_s = max(end_ms / 1000, 1.0)
        ax.set_xlim(0, span_s)
        for span in any_run.get("user", []):
            x0, w = span["start_ms"] / 1000, (span["end_ms"] - span["start_ms"]) / 1000
            color = KIND_COLORS.get(span.get("kind", ""), "#7f7f7f")
            ax.broken_barh([(x0, w)], (-0.35, 0.7), facecolors=color, alpha=0.45, edgecolor=color)
            _label(ax, x0, w, 0, f"{span.get('kind', '')}: {span.get('text', '')}", span_s)
        for lane, policy in enumerate(policies, start=1):
            run = runs.get(policy)
            if run is None:
                ax.text(0.01 * span_s, lane, "not run", va="center", fontsize=7, color="gray")
                continue
            false = false_start_spans(run)
            for out in run.get("assistant", []):
                x0, w = out["start_ms"] / 1000, (out["end_ms"] - out["start_ms"]) / 1000
                status = out.get("status", "completed")
                wrong = out.get("response_id") in false
                ax.broken_barh(
                    [(x0, w)],
                    (lane - 0.35, 0.7),
                    facecolors=colors[policy],
                    edgecolor=FALSE_START_COLOR if wrong else colors[policy],
                    linewidth=2.0 if wrong else 1.0,
                    alpha=0.9 if status == "completed" else 0.35,
                    hatch=HATCHES.get(status, ".."),
                )
                label = "false start" if wrong else status
                _label(ax, x0, w, lane, f"#{out.get('response_id', '?')} {label}", span_s)
        ax.set_ylim(len(policies) + 0.6, -0.6)
        ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{name} ({any_run.get('category', '?')})", fontsize=9, loc="left")
    if len(axes):
        axes[-1].set_xlabel("time (s)", fontsize=8)
        handles = [
            Patch(facecolor=c, alpha=0.45, edgecolor=c, label=f"user: {k}")
            for k, c in KIND_COLORS.items()
        ] + [
            Patch(facecolor="gray", alpha=0.9, label="assistant: completed"),
            Patch(facecolor="gray", alpha=0.35, hatch="///", label="interrupted"),
            Patch(facecolor="gray", alpha=0.35, hatch="..", label="cancelled"),
            Patch(facecolor="none", edgecolor=FALSE_START_COLOR, linewidth=2, label="false start"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=8, fontsize=7, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def latency_values(results: Mapping[str, Any], metric: str) -> dict[str, list[float]]:
    """Per policy, the metric's measured values over all runs (None dropped)."""
    values: dict[str, list[float]] = {p: [] for p in _policies(results)}
    for run in results.get("runs", []):
        x = (run.get("metrics") or {}).get(metric)
        if x is not None:
            values.setdefault(run["policy"], []).append(float(x))
    return values


def plot_cdfs(results: Mapping[str, Any], path: Path | str) -> Path:
    """The whole latency distribution per policy, where medians and p95 hide the shape."""
    plt = _pyplot()
    path = Path(path)
    policies = _policies(results)
    colors = _policy_colors(policies)
    # Dashes tell policies apart where their curves coincide.
    styles = {p: LINESTYLES[i % len(LINESTYLES)] for i, p in enumerate(policies)}
    panels = [
        (label, values)
        for key, label in LATENCIES
        if any((values := latency_values(results, key)).values())
    ]
    size = CDF_PANEL_IN if panels else CDF_EMPTY_IN
    fig = plt.figure(
        figsize=(size[0] * max(len(panels), 1), size[1]), dpi=DPI, layout="constrained"
    )
    if not panels:
        fig.text(0.5, 0.5, "no latency data", ha="center", va="center")
    axes = fig.subplots(1, len(panels), squeeze=False)[0] if panels else []
    for ax, (label, values) in zip(axes, panels, strict=True):
        for policy, xs in values.items():
            if xs:
                ax.ecdf(
                    xs,
                    label=f"{policy} (n={len(xs)})",
                    color=colors[policy],
                    linestyle=styles[policy],
                    linewidth=1.8,
                )
        top = max(max(xs) for xs in values.values() if xs)
        ax.set_xlim(min(0.0, *(min(xs) for xs in values.values() if xs)), top * 1.08 + 1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("ms", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="lower right")
    if len(axes):
        axes[0].set_ylabel("fraction of runs ≤ x", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_tradeoff(results: Mapping[str, Any], path: Path | str) -> Path:
    """False starts against end-of-turn latency as the threshold moves, per estimator."""
    plt = _pyplot()
    path = Path(path)
    tradeoff = results.get("tradeoff") or {}
    curves = tradeoff.get("curves") or {}
    fig = plt.figure(figsize=CDF_PANEL_IN, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    styles = {"fused": ("#2ca02c", "-"), "text": ("#1f77b4", "--"), "audio": ("#ff7f0e", ":")}
    for name, points in curves.items():
        if not points:
            continue
        color, style = styles.get(name, ("#7f7f7f", "-."))
        xs = [p["turn_end_ms"] for p in points]
        ys = [p["false_start_rate"] * 100 for p in points]
        ax.plot(xs, ys, style, color=color, marker=".", linewidth=1.6, label=name)
        default = next((p for p in points if p["bias"] == 0), None)
        if default:
            ax.plot(default["turn_end_ms"], default["false_start_rate"] * 100, "o", color=color)
    knee = tradeoff.get("knee")
    if knee:
        ax.plot(
            knee["turn_end_ms"], knee["false_start_rate"] * 100, "k*", markersize=10, label="knee"
        )
    if not curves:
        ax.text(
            0.5, 0.5, "no real-speech estimates", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_xlabel("median end of turn, ms (replayed)", fontsize=9)
    ax.set_ylabel("false starts, % of pauses", fontsize=9)
    ax.set_title("Real speech: false starts against latency", fontsize=10)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    if curves:
        ax.legend(fontsize=7, loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# -------------------------------------------------------------------- files


def write_all(results: Mapping[str, Any], out_dir: Path | str) -> dict[str, Path]:
    """Everything a bench run leaves behind: raw JSON, markdown report and both plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "bench.json",
        "markdown": out / "bench.md",
        "timeline": out / "timeline.png",
        "cdf": out / "latency-cdf.png",
        "tradeoff": out / "tradeoff.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(results), encoding="utf-8")
    plot_timelines(results, paths["timeline"])
    plot_cdfs(results, paths["cdf"])
    plot_tradeoff(results, paths["tradeoff"])
    return paths
