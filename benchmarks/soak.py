"""`duplex bench --soak MINUTES`: one conversation held for a long time, and sessions churned.

A conversation of spoken questions, each followed by `silence_s` of silence
(the answer plays in it), runs on the benchmark's charged virtual clock
(compute counts as time, so latency is what a user would get on this
machine) until `minutes` of conversation have passed. Every conversation
minute it samples the process's resident memory and the LM's cache: how
many positions it holds and how many times old turns have left it. It
reports end-of-turn latency per ten minutes, memory growth per hour after
the first tenth (warm-up), and every error event.

Then `churn` sessions are opened and closed against a real server on
loopback, each saying the start of a question (1.5 s, under the server's
queue limit) and leaving: the server's memory after them, next to where it
was after the first tenth, says whether sessions leak.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE, Frame, Int16Array
from duplex.clock import ChargedClock
from duplex.events import Error, Event, TurnMetrics

if TYPE_CHECKING:  # the composition root hands the stack in
    from app.stack import SpeechStack

log = logging.getLogger(__name__)

WINDOW_MIN = 10  # end-of-turn latency is reported per this many conversation minutes
WARM_UP = 0.1  # the share of the soak left out of the memory growth


def rss_mb() -> float:
    """This process's resident memory now (Linux), or its peak elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def growth_per_hour(samples: list[dict[str, float]], key: str = "rss_mb") -> float | None:
    """The least-squares slope of `key` over conversation time, per hour, past warm-up."""
    if not samples:
        return None
    end = samples[-1]["minute"]
    kept = [s for s in samples if s["minute"] >= WARM_UP * end]
    if len(kept) < 3:
        return None
    minutes = np.array([s["minute"] for s in kept])
    values = np.array([s[key] for s in kept])
    slope = float(np.polyfit(minutes, values, 1)[0])
    return slope * 60.0


def latency_windows(turns: Sequence[tuple[float, float | None]]) -> list[dict[str, Any]]:
    """End of turn p50/p95 per WINDOW_MIN of conversation; unanswered turns counted."""
    if not turns:
        return []
    out = []
    last = int(max(minute for minute, _ in turns) // WINDOW_MIN)
    for w in range(last + 1):
        inside = [ms for minute, ms in turns if w * WINDOW_MIN <= minute < (w + 1) * WINDOW_MIN]
        answered = sorted(ms for ms in inside if ms is not None)
        out.append(
            {
                "from_min": w * WINDOW_MIN,
                "turns": len(inside),
                "unanswered": len(inside) - len(answered),
                "p50_ms": statistics.median(answered) if answered else None,
                "p95_ms": float(np.percentile(answered, 95)) if answered else None,
            }
        )
    return out


def conversation(
    questions: list[Int16Array], minutes: float, silence_s: float, sample: Callable[[float], None]
) -> Iterator[Frame]:
    """The questions in turn, each then `silence_s` of silence, for `minutes`; `sample`
    is called at every conversation minute."""
    silence = np.zeros(int(silence_s * SAMPLE_RATE), np.int16)
    total = int(minutes * 60 * SAMPLE_RATE) // FRAME_SAMPLES
    per_minute = 60 * SAMPLE_RATE // FRAME_SAMPLES
    index = 0
    while True:
        for pcm in questions:
            audio = np.concatenate([pcm, silence])
            for start in range(0, audio.size - FRAME_SAMPLES + 1, FRAME_SAMPLES):
                if index >= total:
                    return
                if index % per_minute == 0:
                    sample(index / per_minute)
                yield Frame(index, audio[start : start + FRAME_SAMPLES])
                index += 1


def soak(
    stack: SpeechStack,
    questions: list[Int16Array],
    minutes: float,
    *,
    silence_s: float = 15.0,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Hold one conversation for `minutes` on the charged clock; what it cost over time."""
    lm = stack.new_lm()
    samples: list[dict[str, float]] = []
    turns: list[tuple[float, float | None]] = []
    errors: list[dict[str, Any]] = []
    outcomes: dict[str, int] = {}

    def sample(minute: float) -> None:
        samples.append(
            {
                "minute": minute,
                "rss_mb": round(rss_mb(), 1),
                "cache_tokens": len(lm.cache.tokens),
                "trims": lm.trims,
            }
        )
        if progress is not None:
            progress(minute)
        if minute and minute % 5 == 0:
            log.info("soak: %g conversation minutes, %.0f MB", minute, samples[-1]["rss_mb"])

    def on_event(event: Event) -> None:
        minute = event.audio_ms / 60_000
        if isinstance(event, TurnMetrics):
            turns.append((minute, event.record.end_of_turn_ms))
            outcome = event.record.outcome or "open"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        elif isinstance(event, Error):
            errors.append(
                {"minute": round(minute, 2), "code": event.code, "message": event.message}
            )

    # the charged clock, as `duplex bench --fast` drives a session, but nothing kept:
    # the driver's own record of every event would grow with the conversation
    clock = ChargedClock()
    session = stack.new_session(clock, lm=lm)
    started = time.perf_counter()
    try:
        for frame in conversation(questions, minutes, silence_s, sample):
            clock.wait_until(frame.end_ms)
            with clock.charging():
                events = session.step(frame)
            for event in events:
                on_event(event)
    finally:
        session.close()
    wall_s = time.perf_counter() - started
    sample(minutes)
    return {
        "minutes": minutes,
        "silence_s": silence_s,
        "turns": len(turns),
        "outcomes": outcomes,
        "errors": errors,
        "samples": samples,
        "end_of_turn": latency_windows(turns),
        "rss_growth_mb_per_hour": growth_per_hour(samples),
        "context_tokens": lm.cache.context_tokens,
        "history_tokens": lm.history_tokens,
        "trims": lm.trims,
        "trimmed_tokens": lm.trimmed_tokens,
        "wall_s": round(wall_s, 1),
    }


def churn(stack: SpeechStack, question: Int16Array, sessions: int) -> dict[str, Any]:
    """Open and close `sessions` against a server on loopback, each saying a little;
    the server's memory after every tenth of them: a leak climbs steadily, warm-up
    (allocator pools, caches filling) levels off."""
    from server.app import DuplexServer, StackSessions

    logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection
    served = StackSessions(stack)  # the models already loaded
    server = DuplexServer(served, port=0)
    audio = question[: SAMPLE_RATE * 3 // 2].astype("<i2").tobytes()

    async def one(url: str) -> None:
        from websockets.asyncio.client import connect

        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "hello", "sample_rate": SAMPLE_RATE}))
            await ws.recv()
            await ws.send(audio)

    async def main() -> dict[str, Any]:
        await server.start()
        url = f"ws://127.0.0.1:{server.port}/v1/stream"
        every = max(1, int(WARM_UP * sessions))
        memory: list[list[float]] = []
        try:
            for i in range(sessions):
                await one(url)
                while served.in_use:  # its worker has finished and given its LM back
                    await asyncio.sleep(0.05)
                if (i + 1) % every == 0 or i + 1 == sessions:
                    memory.append([i + 1, rss_mb()])
        finally:
            await server.stop()
        return {
            "sessions": sessions,
            "rss_mb": memory,
            "rss_after_warm_up_mb": memory[0][1],
            "rss_after_mb": memory[-1][1],
        }

    return asyncio.run(main())


def markdown(data: dict[str, Any]) -> str:
    """The soak as a short report: memory, cache, latency per ten minutes, errors."""
    growth = data["rss_growth_mb_per_hour"]
    first, last = data["samples"][0], data["samples"][-1]
    lines = [
        f"# Soak: {data['minutes']:g} minutes of conversation, {data['turns']} turns",
        "",
        f"- resident memory {first['rss_mb']:.0f} MB at the start, {last['rss_mb']:.0f} MB at "
        f"the end; growth after warm-up "
        + ("n/a" if growth is None else f"{growth:+.1f} MB per hour"),
        f"- LM cache: {data['context_tokens']} positions, {data['history_tokens']} kept for "
        f"earlier turns; old turns left it {data['trims']} times ({data['trimmed_tokens']} "
        f"positions); {last['cache_tokens']} held at the end",
        f"- turn outcomes: {', '.join(f'{k} {v}' for k, v in sorted(data['outcomes'].items()))}",
        f"- errors: {len(data['errors'])}",
    ]
    churn = data.get("churn")
    if churn:
        lines.append(
            f"- {churn['sessions']} sessions opened and closed against one server: "
            f"{churn['rss_after_warm_up_mb']:.0f} MB after the first tenth, "
            f"{churn['rss_after_mb']:.0f} MB after the last (after each tenth: "
            + ", ".join(f"{mb:.0f}" for _, mb in churn.get("rss_mb", []))
            + " MB)"
        )
    lines += [
        "",
        "| minutes | turns | unanswered | end of turn p50 | p95 |",
        "|---|---|---|---|---|",
    ]
    for w in data["end_of_turn"]:
        p50 = "n/a" if w["p50_ms"] is None else f"{w['p50_ms']:.0f} ms"
        p95 = "n/a" if w["p95_ms"] is None else f"{w['p95_ms']:.0f} ms"
        lines.append(
            f"| {w['from_min']}-{w['from_min'] + WINDOW_MIN} | {w['turns']} | {w['unanswered']} "
            f"| {p50} | {p95} |"
        )
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> Path:
    """Memory, cache fill and end-of-turn latency over the conversation, one panel each."""
    from benchmarks.report import DPI, _pyplot

    plt = _pyplot()
    fig, (mem, cache, eot) = plt.subplots(3, 1, figsize=(7, 6.5), dpi=DPI, layout="constrained")
    minutes = [s["minute"] for s in data["samples"]]
    mem.plot(minutes, [s["rss_mb"] for s in data["samples"]], color="#1f77b4")
    mem.set_ylabel("resident MB", fontsize=9)
    cache.plot(minutes, [s["cache_tokens"] for s in data["samples"]], color="#2ca02c")
    cache.axhline(data["context_tokens"], color="#d62728", linestyle=":", label="context")
    cache.set_ylabel("LM cache positions", fontsize=9)
    cache.legend(fontsize=7, loc="lower right")
    windows = [w for w in data["end_of_turn"] if w["p50_ms"] is not None]
    starts = [w["from_min"] + WINDOW_MIN / 2 for w in windows]
    eot.plot(starts, [w["p50_ms"] for w in windows], "o-", color="#2ca02c", label="p50")
    eot.plot(starts, [w["p95_ms"] for w in windows], "s--", color="#ff7f0e", label="p95")
    eot.set_ylabel("end of turn, ms", fontsize=9)
    eot.set_xlabel("conversation minutes", fontsize=9)
    eot.legend(fontsize=7)
    for ax in (mem, cache, eot):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"Soak: {data['minutes']:g} min, {data['turns']} turns", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
