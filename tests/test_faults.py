"""A model that raises ends the turn it was in, and only that turn.

Each port's call is made to raise once, on fakes: the recognizer, the LM
(while listening and while answering), the voice, the acoustic model and an
external engine. The failed turn ends with an `error` event (and a "failed"
answer where one was under way); the next question is answered as usual.
"""

from __future__ import annotations

from typing import Any

import pytest

from duplex.events import Error, ResponseDone, TurnMetrics, TurnTaken
from duplex.tdm import State
from tests.fakes import ANSWER, Harness, ScriptedResponder, ScriptedTurnAudio

TWO_QUESTIONS = [
    (0, 300, "what"),
    (300, 500, "time"),
    (500, 700, "is"),
    (700, 1000, "it?"),
    (7000, 7300, "what"),
    (7300, 7500, "day"),
    (7500, 7700, "is"),
    (7700, 8000, "it?"),
]


def fail_once(component: Any, method: str, on_call: int = 1) -> list[int]:
    """Make `component.method` raise on its `on_call`-th call; the calls are counted."""
    real = getattr(component, method)
    calls: list[int] = []

    def faulty(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == on_call:
            raise RuntimeError(f"{method} broke")
        return real(*args, **kwargs)

    setattr(component, method, faulty)
    return calls


def _two_turns(h: Harness) -> tuple[list[TurnMetrics], list[ResponseDone]]:
    h.run(16000)
    [error] = h.of(Error)
    assert error.code == "model_error" and "broke" in error.message
    assert h.session.state is State.LISTENING
    return h.of(TurnMetrics), h.of(ResponseDone)


@pytest.mark.parametrize(
    ("part", "method"),
    [("recognizer", "finish"), ("recognizer", "stable"), ("lm", "listen")],
)
def test_a_failure_while_listening_drops_that_turn(part: str, method: str) -> None:
    h = Harness(TWO_QUESTIONS)
    fail_once(getattr(h, part), method)
    records, answers = _two_turns(h)
    assert [r.record.outcome for r in records] == ["failed", "completed"]
    [done] = answers
    assert done.status == "completed" and done.text == ANSWER
    # the second question is answered after its own end, not mixed with the first
    assert h.lm.turns()[-2:] == [("user", "what day is it?"), ("assistant", ANSWER)]


@pytest.mark.parametrize(
    ("part", "method", "on_call"), [("lm", "speak", 6), ("tts", "synthesize", 2)]
)
def test_a_failure_while_answering_ends_that_answer(part: str, method: str, on_call: int) -> None:
    h = Harness(TWO_QUESTIONS)
    fail_once(getattr(h, part), method, on_call)
    records, answers = _two_turns(h)
    assert len(h.of(TurnTaken)) == 2
    assert [a.status for a in answers] == ["failed", "completed"]
    assert [r.record.outcome for r in records] == ["failed", "completed"]
    failed, done = answers
    assert failed.played_ms > 0 and done.text == ANSWER
    # the LM keeps what the user heard of the failed answer
    assert ("assistant", failed.text.strip()) in h.lm.turns()


def test_a_failure_in_a_draft_ends_the_turn_before_it_is_taken() -> None:
    h = Harness(TWO_QUESTIONS)
    fail_once(h.lm, "speak")  # the draft written while the silence runs
    records, answers = _two_turns(h)
    assert [r.record.outcome for r in records] == ["failed", "completed"]
    assert [a.status for a in answers] == ["completed"]


def test_an_engine_that_raises_ends_its_answer_and_serves_the_next() -> None:
    engine = ScriptedResponder([ANSWER], lag_reads=1)
    h = Harness(TWO_QUESTIONS, responder=engine)
    fail_once(engine, "read", on_call=7)  # not a ResponderError: a bug, not a broken stream
    records, answers = _two_turns(h)
    assert [a.status for a in answers] == ["failed", "completed"]
    assert answers[1].text == ANSWER and engine.stops >= 1
    assert [r.record.outcome for r in records] == ["failed", "completed"]


def test_an_acoustic_model_that_raises_ends_the_turn() -> None:
    sound = ScriptedTurnAudio(0.9)
    h = Harness(TWO_QUESTIONS, turn_audio=sound)
    fail_once(sound, "start")
    records, answers = _two_turns(h)
    assert [r.record.outcome for r in records] == ["failed", "completed"]
    assert [a.status for a in answers] == ["completed"]
