"""Answer quality: spoken questions through the whole session, the answers scored.

Timing is measured elsewhere to the millisecond; this measures what the
assistant says. Each question of `answer_set` is rendered in the shipped
voice at a rate and pitch of its own, spoken into a new session (a follow-up
after the answer to the turn before it), and the answer the session gave,
as its `ResponseDone` reports it, is matched against the accepted answers.
The recognizer's transcript is compared with the question asked, so a wrong
answer to a misheard question is told apart from a wrong answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmarks.answer_set import QUESTION_SET, Question, held_out
from benchmarks.report import DASH
from duplex.audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Frame, Int16Array, frames_of
from duplex.clock import Clock
from duplex.drive import drive
from duplex.events import Event, ResponseDone, TranscriptFinal, TurnMetrics
from duplex.ports import Steps
from duplex.text import plain

# each question's voice: Piper's length scale (rate) and a pitch factor, cycled
RATES = (1.0, 0.85, 1.15)
PITCHES = (1.0, 1.08, 0.93)
ANSWER_WAIT_MS = 20_000  # no answer this long after the question: none came
BETWEEN_TURNS_MS = 600  # silence after an answer before the follow-up
MISHEARD_WER = 0.2  # a transcript this far from the question was misheard

Render = Callable[[str, float, float], Int16Array]  # (text, rate, pitch) -> 16 kHz PCM
SessionFactory = Callable[[Clock], Steps]


@dataclass
class Asked:
    """One question as the session heard and answered it."""

    index: int
    kind: str
    held_out: bool
    turns: list[str]
    heard: list[str] = field(default_factory=list)  # the transcript of each turn
    answers: list[str] = field(default_factory=list)  # the answer to each turn
    answer_ms: list[int] = field(default_factory=list)  # its speech played
    end_of_turn_ms: list[float] = field(default_factory=list)  # each answer's, as timed
    right: bool = False
    wer: float = 0.0  # the last turn's transcript against what was said

    @property
    def misheard(self) -> bool:
        return self.wer > MISHEARD_WER

    @property
    def answer_words(self) -> int:
        return len(plain(self.answers[-1]).split()) if self.answers else 0


def is_right(question: Question, answer: str) -> bool:
    """The answer contains an accepted one (and keeps to the instruction's length)."""
    words = plain(answer)
    if question.max_words is not None and len(words.split()) > question.max_words:
        return False
    return re.search(question.accept, words) is not None


class Asker:
    """The user's side of one question: each turn's audio, then silence until the
    session's answer to it is done (a follow-up waits for it), as frames."""

    def __init__(self, audio: Sequence[Int16Array]) -> None:
        self._audio = audio
        self.heard: list[str] = []
        self.answers: list[str] = []
        self.answer_ms: list[int] = []
        self.end_of_turn_ms: list[float] = []  # the latency of each answer, as the bench's
        self._done = False

    def observe(self, event: Event) -> None:
        if isinstance(event, TranscriptFinal):
            self.heard.append(event.text)
        elif isinstance(event, ResponseDone) and event.status == "completed":
            self.answers.append(event.text)
            self.answer_ms.append(event.played_ms)
            self._done = True
        elif isinstance(event, TurnMetrics) and event.record.end_of_turn_ms is not None:
            self.end_of_turn_ms.append(event.record.end_of_turn_ms)

    def __iter__(self) -> Iterator[Frame]:
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        index = 0
        for turn, pcm in enumerate(self._audio):
            if turn:
                for _ in range(BETWEEN_TURNS_MS // FRAME_MS):
                    yield Frame(index, silence)
                    index += 1
            self._done = False
            for frame in frames_of(pcm, first_index=index):
                yield frame
                index += 1
            waited = 0
            while not self._done and waited < ANSWER_WAIT_MS:
                yield Frame(index, silence)
                index += 1
                waited += FRAME_MS
            while len(self.answers) <= turn:  # none came: an empty answer
                self.answers.append("")
                self.answer_ms.append(0)


def ask(
    make_session: SessionFactory,
    index: int,
    question: Question,
    render: Render,
    *,
    ideal: bool,
) -> Asked:
    """One question (and the turns before it) spoken into a new session."""
    from models.asr import wer

    rate, pitch = RATES[index % len(RATES)], PITCHES[index // len(RATES) % len(PITCHES)]
    audio = [render(turn, rate, pitch) for turn in question.turns]
    asker = Asker(audio)
    # ideal: compute is free (the in-process LM); else real time (an engine keeps its own)
    drive(make_session, asker, fast=False, ideal=ideal, on_event=asker.observe)
    turns = len(question.turns)
    last_heard = asker.heard[turns - 1] if len(asker.heard) >= turns else ""
    return Asked(
        index,
        question.kind,
        held_out(index),
        list(question.turns),
        asker.heard,
        asker.answers,  # one per turn: the Asker fills a missing answer with ""
        asker.answer_ms,
        asker.end_of_turn_ms,
        right=is_right(question, asker.answers[-1]),
        wer=wer(question.turns[-1], last_heard),
    )


def run_set(
    make_session: SessionFactory,
    render: Render,
    *,
    ideal: bool,
    questions: Sequence[Question] = QUESTION_SET,
    progress: Callable[[Asked], None] | None = None,
) -> list[Asked]:
    results = []
    for i, question in enumerate(questions):
        results.append(ask(make_session, i, question, render, ideal=ideal))
        if progress is not None:
            progress(results[-1])
    return results


def summary(results: Sequence[Asked]) -> dict[str, Any]:
    """Per half and per kind: the share answered right, misheard, and the answers' length."""

    def stats(group: Sequence[Asked]) -> dict[str, Any]:
        if not group:
            return {"n": 0}
        words = [a.answer_words for a in group]
        seconds = [a.answer_ms[-1] / 1000 for a in group if a.answer_ms]
        return {
            "n": len(group),
            "right": sum(a.right for a in group),
            "right_rate": sum(a.right for a in group) / len(group),
            "misheard_rate": sum(a.misheard for a in group) / len(group),
            "right_when_heard": _rate([a.right for a in group if not a.misheard]),
            "words_p50": float(np.median(words)),
            "seconds_p50": float(np.median(seconds)) if seconds else None,
            "end_of_turn_ms_p50": _median([ms for a in group for ms in a.end_of_turn_ms]),
        }

    halves = {
        "tuning": [a for a in results if not a.held_out],
        "held_out": [a for a in results if a.held_out],
    }
    kinds = sorted({a.kind for a in results})
    return {
        **{half: stats(group) for half, group in halves.items()},
        "kinds": {
            kind: {
                half: stats([a for a in group if a.kind == kind]) for half, group in halves.items()
            }
            for kind in kinds
        },
    }


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def _rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def to_dict(results: Sequence[Asked]) -> list[dict[str, Any]]:
    return [{**asdict(a), "misheard": a.misheard} for a in results]


def _pct(rate: float | None) -> str:
    return DASH if rate is None else f"{100 * rate:.0f}%"


def _right(stats: dict[str, Any]) -> str:
    return f"{_pct(stats['right_rate'])} ({stats['right']}/{stats['n']})" if stats["n"] else DASH


def markdown(data: dict[str, dict[str, Any]]) -> str:
    """The quality table: per answer path, both halves, and per kind."""
    lines = [
        "| answers from | half | right ↑ | misheard | right when heard | words p50 "
        "| speech s p50 | end of turn ms p50 |",
        "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path, result in data.items():
        for half in ("held_out", "tuning"):
            h = result["summary"][half]
            if not h["n"]:
                continue
            seconds = DASH if h["seconds_p50"] is None else f"{h['seconds_p50']:.1f}"
            eot = h.get("end_of_turn_ms_p50")
            cells = [
                path, half.replace("_", "-"), _right(h), _pct(h["misheard_rate"]),
                _pct(h["right_when_heard"]), f"{h['words_p50']:.0f}", seconds,
                DASH if eot is None else f"{eot:.0f}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| answers from | kind | held-out right | tuning right |",
        "| :--- | :--- | ---: | ---: |",
    ]
    for path, result in data.items():
        for kind, halves in result["summary"]["kinds"].items():
            lines.append(
                f"| {path} | {kind} | {_right(halves['held_out'])} | {_right(halves['tuning'])} |"
            )
    return "\n".join(lines) + "\n"


def piper_render(voice_path: Any) -> Render:
    """Questions in the shipped voice, deterministic, at a rate (Piper's length scale)
    and a pitch (the audio resampled, its length pre-stretched to keep the rate)."""
    import soxr

    from models.tts import PiperSynthesizer

    voice = PiperSynthesizer(voice_path, noise_scale=0.0, noise_w=0.0)

    def render(text: str, rate: float, pitch: float) -> Int16Array:
        pcm = voice.synthesize(text, length_scale=rate * pitch)
        if pitch == 1.0:
            return pcm
        # played at the same rate, samples taken `pitch` times as fast sound that much higher
        shifted = soxr.resample(pcm.astype(np.float32), SAMPLE_RATE, SAMPLE_RATE / pitch)
        out: Int16Array = np.clip(shifted, -32768, 32767).astype(np.int16)
        return out

    return render
