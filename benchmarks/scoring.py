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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.scenarios import Placed


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
    }
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
