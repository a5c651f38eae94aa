"""The answer-quality bench: its question set, its scoring, and a run on the real models."""

from __future__ import annotations

import re

import numpy as np

from app.stack import SpeechStack
from benchmarks.answer_set import QUESTION_SET, Question, held_out
from benchmarks.answers import Asked, is_right, markdown, piper_render, run_set, summary
from duplex.config import Settings


def test_the_set_has_a_hundred_questions_of_every_kind_in_two_even_halves() -> None:
    assert len(QUESTION_SET) >= 100
    kinds = {q.kind for q in QUESTION_SET}
    assert kinds == {"fact", "arithmetic", "instruction", "follow_up"}
    halves = [held_out(i) for i in range(len(QUESTION_SET))]
    assert sum(halves) == len(QUESTION_SET) // 2
    for q in QUESTION_SET:
        re.compile(q.accept)
        assert q.turns and all(t.strip() for t in q.turns)
        assert (len(q.turns) > 1) == (q.kind == "follow_up")


def test_an_answer_is_right_when_it_names_an_accepted_one_and_keeps_to_its_length() -> None:
    day = Question("fact", ("How many hours are in a day?",), r"\b(24|twenty[- ]four)\b")
    assert is_right(day, "A day has 24 hours.")
    assert is_right(day, "There are twenty-four hours in a day.")
    assert not is_right(day, "A day is approximately 86,401 hours.")
    assert not is_right(day, "")
    yes = Question("instruction", ("Answer with yes or no: is ice hot?",), r"\bno\b", max_words=8)
    assert is_right(yes, "No.")
    assert not is_right(yes, "No. Ice is frozen water, and it is cold to the touch, always.")


def test_the_summary_keeps_the_halves_apart() -> None:
    results = [
        Asked(0, "fact", False, ["q"], ["q"], ["right"], [1000], [240.0], right=True),
        Asked(1, "fact", True, ["q"], ["x y z"], ["wrong"], [2000], [], right=False, wer=1.0),
    ]
    s = summary(results)
    assert s["tuning"]["right_rate"] == 1.0 and s["held_out"]["right_rate"] == 0.0
    assert s["held_out"]["misheard_rate"] == 1.0 and s["held_out"]["right_when_heard"] is None
    assert s["tuning"]["end_of_turn_ms_p50"] == 240.0
    assert s["held_out"]["end_of_turn_ms_p50"] is None
    table = markdown({"in-process LM": {"summary": s}})
    assert "| in-process LM | held-out | 0% (0/1) |" in table
    assert table.splitlines()[3].endswith("| 240 |")  # the tuning half's end of turn


def test_spoken_questions_and_a_follow_up_are_answered_by_the_real_models() -> None:
    stack = SpeechStack(Settings())
    stack.load()
    lm = stack.new_lm()
    render = piper_render(stack.voice_path)
    # a voice at another rate and pitch is still speech of its own length
    plain, shifted = (
        render("What is two plus two?", 1.0, 1.0),
        render("What is two plus two?", 1.0, 1.08),
    )
    assert abs(shifted.size / plain.size - 1.0) < 0.1 and not np.array_equal(plain, shifted)
    paris = next(q for q in QUESTION_SET if q.turns == ("What is the capital of France?",))
    germany = next(q for q in QUESTION_SET if q.kind == "follow_up" and "Germany" in q.turns[-1])
    results = run_set(
        lambda clock: stack.new_session(clock, lm=lm, remote=False),
        render,
        ideal=True,
        questions=[paris, germany],
    )
    first, follow = results
    assert first.heard and "france" in first.heard[0].lower()
    assert first.answers[0].strip() and first.answer_ms[0] > 0
    assert first.right == is_right(paris, first.answers[0])
    # the follow-up was asked after the first answer ended, each turn heard and answered
    assert len(follow.heard) == 2 and len(follow.answers) == 2
    assert len(follow.end_of_turn_ms) == 2  # each answer's latency, timed as the bench's
    assert "germany" in follow.heard[1].lower()
    assert all(a.strip() for a in follow.answers)
