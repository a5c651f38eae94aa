"""How well one run held the conversation, from its ground truth and the assistant's output.

Pure functions of two timelines: the user's voiced spans (where the
simulator put the voice) and the assistant's output spans (where its audio
played, after any flush). Definitions, in ms on the input timeline:

- takeover (pause scenarios): the assistant started speaking before the user
  finished the turn, i.e. during the mid-utterance pause.
- end-of-turn latency: the end of the user's question (last voiced frame) to
  the first assistant audio after it.
- barge-in stop latency: the onset of the user's interruption to the end of
  the assistant audio that was playing then.
- response after interruption: the end of the interruption to the first
  assistant audio after it.
- backchannel false stop: an answer that was playing when the user said
  "uh-huh" was cut off (interrupted) because of it.
- backchannel hold: how long an answer that went on over an "uh-huh" paused
  for it (the session holds output while it decides, `policy.hold_on_overlap`).
- answer gaps (turn-end scenarios, where the user is silent while it plays):
  the silence inside the answer, from its first to its last audio frame, that
  no audio filled: where the loop was busy longer than its output cushion.
- false start (any scenario whose user pauses inside a turn): assistant audio
  of at least `FALSE_START_MS` that begins while the user still has words to
  say in that turn, from the pause to the end of the words after it, whether
  or not the assistant then yields. Counted per pause; the audio the user
  heard of it (its span) is the cost.
- turn ends (every turn the user ends and an answer is expected): the first
  assistant audio after the turn's last word and before the user's next turn,
  or none; answered when it came within `ANSWERED_WITHIN_MS`.

A turn is a cue and the continuations after it; only a question's turn
expects an answer here (an interruption's is the response after it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.scenarios import Placed

FALSE_START_MS = 120  # shorter output is a click, not speech the user hears as a start
ANSWERED_WITHIN_MS = 1500  # a real turn end answered later than this is a miss


@dataclass(frozen=True)
class OutputSpan:
    """Where one answer's audio played; `status` from its ResponseDone."""

    response_id: int
    start_ms: int
    end_ms: int
    status: str
    played_ms: int | None = None  # audio it played, if known (the rest of the span: gaps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_after(spans: list[OutputSpan], ms: int) -> OutputSpan | None:
    return next((s for s in spans if s.start_ms >= ms), None)


def _playing_at(spans: list[OutputSpan], ms: int) -> OutputSpan | None:
    return next((s for s in spans if s.start_ms <= ms < s.end_ms), None)


def user_turns(user: Sequence[Placed]) -> list[list[Placed]]:
    """The user's cues grouped into turns: continuations join the turn before them."""
    turns: list[list[Placed]] = []
    for cue in sorted(user, key=lambda p: p.start_ms):
        if cue.kind == "continuation" and turns:
            turns[-1].append(cue)
        else:
            turns.append([cue])
    return turns


def pauses_of(turns: Sequence[Sequence[Placed]]) -> list[tuple[int, int]]:
    """Each pause inside a turn, as the span where an answer starting is a false start:
    from the words before it to the end of the words after it."""
    return [(a.end_ms, b.end_ms) for turn in turns for a, b in itertools.pairwise(turn)]


def starts_into(pause: tuple[int, int], spans: Sequence[OutputSpan]) -> list[OutputSpan]:
    """The answers long enough to be heard that began inside the pause."""
    lo, hi = pause
    return [s for s in spans if s.end_ms - s.start_ms >= FALSE_START_MS and lo <= s.start_ms < hi]


def false_starts(
    turns: Sequence[Sequence[Placed]], spans: Sequence[OutputSpan]
) -> tuple[list[bool], list[int]]:
    """Per pause inside a turn: did the assistant start into it? And, per false start,
    how much of its audio played (the span, to where it stopped)."""
    into = [starts_into(pause, spans) for pause in pauses_of(turns)]
    return [bool(i) for i in into], [s.end_ms - s.start_ms for i in into for s in i]


def turn_end_latencies(
    turns: Sequence[Sequence[Placed]], spans: Sequence[OutputSpan]
) -> list[int | None]:
    """Per turn that expects an answer: ms from its last word to the first answer audio
    before the user's next turn, or None (no answer came in time)."""
    latencies: list[int | None] = []
    for i, turn in enumerate(turns):
        if turn[0].kind != "question":
            continue
        end = turn[-1].end_ms
        until = turns[i + 1][0].start_ms if i + 1 < len(turns) else None
        answer = next(
            (s for s in spans if s.start_ms >= end and (until is None or s.start_ms < until)),
            None,
        )
        latency = None if answer is None else answer.start_ms - end
        latencies.append(None if latency is None or latency > ANSWERED_WITHIN_MS else latency)
    return latencies


def score(
    category: str,
    user: list[Placed],
    assistant: list[OutputSpan],
    holds_ms: Sequence[int] = (),
) -> dict[str, Any]:
    """The run's metrics; None where the run gives no sample for a metric.

    `holds_ms`: the pauses of dismissed backchannels (`BackchannelIgnored.held_ms`).
    """
    spans = sorted(assistant, key=lambda s: s.start_ms)
    out: dict[str, Any] = {
        "takeover": None,
        "end_of_turn_ms": None,
        "barge_in_stop_ms": None,
        "response_after_interrupt_ms": None,
        "false_stop": None,
        "backchannel_hold_ms": None,
        "answer_gap_ms": None,
        "pauses": [],
        "false_start_ms": [],
        "turn_end_ms": [],
    }
    turns = user_turns(user)
    out["pauses"], out["false_start_ms"] = false_starts(turns, spans)
    out["turn_end_ms"] = turn_end_latencies(turns, spans)
    question = [p for p in user if p.kind in ("question", "continuation")]
    if not question:
        return out
    turn_start, turn_end = question[0].start_ms, question[-1].end_ms
    if category == "pause":
        out["takeover"] = any(turn_start <= s.start_ms < turn_end for s in spans)
    answer = _first_after(spans, turn_end)
    if answer is not None:
        out["end_of_turn_ms"] = answer.start_ms - turn_end
        if category == "turn_end" and answer.played_ms is not None:
            out["answer_gap_ms"] = answer.end_ms - answer.start_ms - answer.played_ms
    for cue in user:
        if cue.kind == "interruption":
            playing = _playing_at(spans, cue.start_ms)
            if playing is not None:
                out["barge_in_stop_ms"] = playing.end_ms - cue.start_ms
            reply = _first_after(spans, cue.end_ms)
            if reply is not None:
                out["response_after_interrupt_ms"] = reply.start_ms - cue.end_ms
        elif cue.kind == "backchannel":
            playing = _playing_at(spans, cue.start_ms)
            if playing is not None:
                out["false_stop"] = playing.status == "interrupted"
                if not out["false_stop"]:
                    out["backchannel_hold_ms"] = max(holds_ms, default=0)
    return out
