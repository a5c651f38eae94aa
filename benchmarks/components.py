"""Component benchmark: what each model costs, in milliseconds, on this machine.

ASR update cost by utterance length, LM prefill per listen slice, time to the
first token of an answer and decode speed, TTS time to first audio and
real-time factor, and load times (the first load in the process, "cold", and
the median of later ones, "warm"; the OS file cache is not dropped). Every
number is a median and p95 over repeated runs, written as JSON.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.scenarios import QUESTIONS
from duplex.audio import SAMPLE_RATE, pcm16_to_float
from duplex.config import Settings
from duplex.metrics import summarize

SPEECH = (
    "I was thinking about taking a trip next month, maybe somewhere warm by the sea, "
    "and I wanted to ask you which places are nice in the spring, because I have never "
    "been there and I do not know where to start."
)
CLAUSE = "Sure, let me check."
SENTENCE = "The moon is about three hundred and eighty thousand kilometers away from the earth."
ASR_LENGTHS_S = (1, 2, 4, 8, 12)


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn(*args)
    return (time.perf_counter() - start) * 1000, value


def _stats(values: list[float]) -> dict[str, Any]:
    return summarize(values).to_dict()


def _loads(load: Callable[[], Any], times: int) -> tuple[dict[str, Any], Any]:
    spent = []
    model = None
    for _ in range(times):
        ms, model = _timed(load)
        spent.append(ms)
    return {"cold_ms": spent[0], "warm": _stats(spent[1:])}, model


def bench_tts(settings: Settings, repeats: int) -> tuple[dict[str, Any], Any]:
    from models.tts import PiperSynthesizer
    from models.weights import VOICE

    path = VOICE.resolve(settings.models.voice)
    load, voice = _loads(lambda: PiperSynthesizer(path, device=settings.device), 3)
    first, rtf = [], []
    for _ in range(repeats):
        ms, _ = _timed(next, iter(voice.synthesize_stream(CLAUSE)))
        first.append(ms)
        ms, pcm = _timed(voice.synthesize, SENTENCE)
        rtf.append(ms / (1000 * pcm.size / SAMPLE_RATE))
    return {
        "load": load,
        "first_audio_ms": _stats(first),
        "first_audio_text": CLAUSE,
        "real_time_factor": _stats(rtf),
    }, voice


def bench_asr(settings: Settings, repeats: int, voice: Any) -> dict[str, Any]:
    from models.asr import WhisperRecognizer
    from models.weights import ASR

    path = ASR.resolve(settings.models.asr)
    load, recognizer = _loads(lambda: WhisperRecognizer(path, device=settings.device), 3)
    speech = pcm16_to_float(voice.synthesize(SPEECH))
    by_length = {}
    for seconds in ASR_LENGTHS_S:
        audio = speech[: seconds * SAMPLE_RATE]
        spent = [_timed(recognizer.transcribe, audio)[0] for _ in range(repeats)]
        by_length[f"{seconds}s"] = _stats(spent)
    return {
        "load": load,
        "update_ms_by_utterance_length": by_length,
        "encoder_window_s": recognizer.min_window_s,
    }


def bench_lm(settings: Settings, repeats: int) -> dict[str, Any]:
    from models.lm import LlamaDuplexLM
    from models.weights import LM

    m = settings.models
    path = LM.resolve(m.lm)

    def load() -> LlamaDuplexLM:
        return LlamaDuplexLM(
            path,
            system_prompt=m.system_prompt,
            device=settings.device,
            context_tokens=m.context_tokens,
            max_response_tokens=m.max_response_tokens,
        )

    load_stats, lm = _loads(load, 3)
    slices, first, rates, tokens_per_answer = [], [], [], []
    for i in range(repeats):
        question = QUESTIONS[i % len(QUESTIONS)]
        words = question.split()
        for j in range(0, len(words), 3):  # the recognizer's stable words arrive ~3 at a time
            piece = " ".join(words[j : j + 3])
            ms, _ = _timed(lm.listen, " " + piece)
            slices.append(ms)
        # the answer's first token: closing the user turn, opening the answer, one token
        ms, (_, done) = _timed(lambda: (lm.begin_response(), lm.speak(1))[1])
        first.append(ms)
        count, start = 0, time.perf_counter()
        while not done:
            before = len(lm.tokens)
            _, done = lm.speak(4)
            count += max(0, len(lm.tokens) - before)
        elapsed = time.perf_counter() - start
        if count >= 4:
            rates.append(count / elapsed)
        tokens_per_answer.append(count + 1)
    return {
        "backend": "llama.cpp (llama-cpp-python)",
        "device": lm.device,
        "load": load_stats,
        "listen_slice_ms": _stats(slices),
        "first_token_ms": _stats(first),
        "decode_tokens_per_s": _stats(rates),
        "answer_tokens": _stats([float(t) for t in tokens_per_answer]),
    }


def run_components(
    settings: Settings, repeats: int = 7, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Measure every component, one after the other (never two at once)."""
    say = progress or (lambda _: None)
    say("text to speech")
    tts, voice = bench_tts(settings, repeats)
    say("speech recognition")
    asr = bench_asr(settings, repeats, voice)
    say("language model")
    lm = bench_lm(settings, repeats)
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": _cpu_count(),
        },
        "repeats": repeats,
        "asr": asr,
        "lm": lm,
        "tts": tts,
    }


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The headline numbers, one per line (median / p95)."""

    def mp(entry: dict[str, Any]) -> str:
        return f"{entry['median']:.1f} / {entry['p95']:.1f}"

    asr, lm, tts = report["asr"], report["lm"], report["tts"]
    lines = [
        f"LM ({lm['backend']}, {lm['device']}): decode {mp(lm['decode_tokens_per_s'])} tok/s, "
        f"first token {mp(lm['first_token_ms'])} ms, listen slice {mp(lm['listen_slice_ms'])} ms",
        f"TTS: first audio {mp(tts['first_audio_ms'])} ms, "
        f"real-time factor {mp(tts['real_time_factor'])}",
    ]
    for length, entry in asr["update_ms_by_utterance_length"].items():
        lines.append(f"ASR update on a {length} utterance: {mp(entry)} ms")
    for name in ("asr", "lm", "tts"):
        load = report[name]["load"]
        lines.append(
            f"{name.upper()} load: cold {load['cold_ms']:.0f} ms, "
            f"warm {load['warm']['median']:.0f} ms"
        )
    return lines
