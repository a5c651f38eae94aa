"""Items leave the LM's conversation by name (`forget`, a client's item delete).

The item's turns are cut out of the KV cache and what follows slides down over
them, as old turns leave it (test_lm_history.py): no token is read again. The
cache then holds the tokens of a conversation that never had the item, at the
same positions; the turns after it keep keys and values computed while they
could still attend to it, as after a trim.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from benchmarks.scenarios import QUESTIONS
from models.chatml import TURN_END, opening
from models.lm import LlamaDuplexLM
from tests.real_lm import real_lm


def _lm(context: int = 4096, history: int | None = None) -> LlamaDuplexLM:
    return real_lm(max_response_tokens=16, context_tokens=context, history_tokens=history)


def _contiguous(lm: LlamaDuplexLM) -> None:
    """llama.cpp's positions end where the token list does: no gap, no overlap."""
    lib = lm.cache._lib
    top = lib.llama_memory_seq_pos_max(lib.llama_get_memory(lm.cache._ctx), 0)
    assert top == len(lm.cache.tokens) - 1


def _conversation(lm: LlamaDuplexLM, without: str = "") -> None:
    """A question, an answer with its own instructions, a system note, a function's
    output and a committed question not yet answered: each an item, `without` left out."""
    steps: list[tuple[str, str, Callable[[], object]]] = [
        ("u1", "user", lambda: lm.listen("What is the capital of France?")),
        ("a1", "assistant", lambda: _answer(lm, "Paris.", "Be brief.")),
        ("s1", "system", lambda: lm.add_message("system", "Speak French from now on.")),
        ("t1", "tool", lambda: lm.add_tool_result("call_1", "22 degrees")),
        ("u2", "user", lambda: lm.listen("And of Spain?")),
    ]
    for item, role, step in steps:
        if item != without:
            step()
            lm.name_turn(item, role)


def _answer(lm: LlamaDuplexLM, text: str, instructions: str = "") -> None:
    lm.begin_response(instructions=instructions)
    lm.write(text, done=True)


@pytest.mark.parametrize("item", ["u1", "a1", "s1", "t1", "u2"])
def test_a_deleted_item_leaves_the_cache_of_a_conversation_that_never_had_it(item: str) -> None:
    said, never = _lm(), _lm()
    _conversation(said)
    _conversation(never, without=item)
    said.forget(item)
    assert said.cache.tokens == never.cache.tokens
    assert said.messages() == never.messages()
    _contiguous(said)
    said.forget(item)  # gone already: nothing more leaves
    assert said.cache.tokens == never.cache.tokens
    # both go on alike: the next words open a turn of their own, and are answered
    for lm in (said, never):
        lm.listen("And of Italy?")
        lm.begin_response()
    assert said.cache.tokens == never.cache.tokens
    text, done = said.speak(16)
    assert text.strip() or done
    _contiguous(said)


def test_an_item_in_two_turns_leaves_from_both() -> None:
    """Heard words with a typed message amid them: the words are one item in two user
    turns (a named turn takes no more words), and both leave."""
    said, never = _lm(), _lm()
    said.listen("What time")
    said.name_turn("heard", "user")
    for lm in (said, never):
        lm.listen("Hello!")
        lm.name_turn("typed", "user")
    said.listen(" is it?")
    said.name_turn("heard", "user")  # the latest user turn, the words after the message
    for lm in (said, never):
        _answer(lm, "Noon.")
    said.forget("heard")
    assert said.cache.tokens == never.cache.tokens
    _contiguous(said)


def test_words_being_heard_stay_in_place_when_an_earlier_item_leaves() -> None:
    """The open turn's words and a tentative read's mark slide down with the rest: the
    tentative words are retracted exactly, and more words follow them."""
    said, never = _lm(), _lm()
    for lm, without in ((said, ""), (never, "s1")):
        _conversation(lm, without)
        lm.listen("And what")
        lm.listen_tentatively(" about Italy?")
    said.forget("s1")
    assert said.cache.tokens == never.cache.tokens
    for lm in (said, never):
        lm.retract()
        lm.listen(" about Rome?")
    assert said.cache.tokens == never.cache.tokens
    _contiguous(said)


def test_an_item_leaves_after_old_turns_did_and_the_history_trims_on() -> None:
    """Old turns leaving the cache move the positions every named turn is kept at; an
    item deleted afterwards is still cut exactly, and trimming goes on after it."""
    lm = _lm(context=512, history=200)
    for i in range(12):
        lm.listen(QUESTIONS[i % len(QUESTIONS)])
        lm.name_turn(f"u{i}", "user")
        _answer(lm, "I am not sure.")
        lm.name_turn(f"a{i}", "assistant")
    assert lm.trims > 0
    before = lm.cache.text()
    question = QUESTIONS[11 % len(QUESTIONS)]
    turn = opening("user") + question + TURN_END
    assert turn in before
    lm.forget("u11")
    assert lm.cache.text() == before.replace(turn, "", 1)
    _contiguous(lm)
    lm.forget("a0")  # long gone with the old turns: nothing happens
    assert lm.cache.text() == before.replace(turn, "", 1)
    trims = lm.trims
    for i in range(12, 20):
        lm.listen(QUESTIONS[i % len(QUESTIONS)])
        _answer(lm, "I am not sure.")
        assert len(lm.cache.tokens) <= 512
    assert lm.trims > trims
    _contiguous(lm)
