"""A conversation of any length on llama.cpp: old turns leave the cache, the rest slide.

A 512-token context that keeps 200 tokens of history holds a conversation of
dozens of turns. After each shift the cache's positions run on without a gap,
and it reads nearly as the kept turns read fresh at their new positions: not
exactly, because the kept turns' keys and values were computed while they
could still attend to the turns that left (measured: the same next token,
logits correlated 0.986-0.998, up to 8% of their range apart). Everything
that works on cache positions goes on working: the end probability,
tentative words and their retraction, a draft cancelled by a barge-in,
truncation of what was heard.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.scenarios import QUESTIONS
from models.lm import LlamaDuplexLM
from tests.real_lm import SYSTEM, answer, real_lm

CONTEXT, HISTORY = 512, 200
AGREEMENT = 0.95  # least correlation of the shifted cache's logits with a fresh read's


def _lm(context: int = CONTEXT, history: int = HISTORY) -> LlamaDuplexLM:
    return real_lm(max_response_tokens=24, context_tokens=context, history_tokens=history)


def _turn(lm: LlamaDuplexLM, question: str) -> str:
    return answer(lm, question, tokens_a_step=8)


def _fresh(lm: LlamaDuplexLM) -> LlamaDuplexLM:
    """The same tokens read in one go by a new cache, at the same positions."""
    plain = _lm(context=CONTEXT, history=HISTORY)
    plain.cache.decode(lm.cache.tokens[plain._system_tokens :], hidden=True)
    assert plain.cache.tokens == lm.cache.tokens
    return plain


def _agree(a: np.ndarray, b: np.ndarray) -> None:
    assert int(np.argmax(a)) == int(np.argmax(b))
    assert float(np.corrcoef(a, b)[0, 1]) >= AGREEMENT


def _contiguous(lm: LlamaDuplexLM) -> None:
    """llama.cpp's positions end where the token list does: no gap, no overlap."""
    lib = lm.cache._lib
    assert (
        lib.llama_memory_seq_pos_max(lib.llama_get_memory(lm.cache._ctx), 0)
        == len(lm.cache.tokens) - 1
    )


def test_a_long_conversation_fits_a_small_context() -> None:
    lm = _lm()
    asked = [QUESTIONS[i % len(QUESTIONS)] for i in range(30)]
    for question in asked:
        _turn(lm, question)
        assert len(lm.cache.tokens) <= CONTEXT
        _contiguous(lm)
    assert lm.trims >= 5 and lm.trimmed_tokens > CONTEXT
    messages = lm.messages()
    assert messages[0] == {"role": "system", "content": SYSTEM}
    assert messages[1]["role"] == "user"  # whole turns went, never half of one
    assert messages[-2] == {"role": "user", "content": asked[-1]}
    assert len(messages) < 2 * len(asked)
    # the history kept is within the setting, the open turn and its answer apart
    assert len(lm.cache.tokens) - lm._system_tokens <= HISTORY + 120


def test_after_a_shift_the_cache_reads_as_if_read_fresh() -> None:
    lm = _lm()
    for question in QUESTIONS[:8]:
        _turn(lm, question)
    assert lm.trims > 0
    probs = lm.listen("What is the capital of France?")
    assert probs.speak > 0.5  # the end of turn still reads from the shifted cache
    _agree(lm.cache.logits, _fresh(lm).cache.logits)
    p_end = lm.p_end
    assert p_end is not None and p_end > 0.1
    lm.begin_response()
    said, _ = lm.speak(6)
    assert "Paris" in said


def test_tentative_words_a_draft_and_truncation_work_across_shifts() -> None:
    lm = _lm()
    for question in QUESTIONS[:6]:
        _turn(lm, question)
    trims = lm.trims
    lm.listen("Can you tell me")
    assert lm.p_end is not None and lm.p_end < 0.001  # a pause, after the shift too
    lm.rewrite_turn("What is the capital")
    before = list(lm.cache.tokens)
    lm.listen_tentatively(" of France?")
    lm.begin_response()
    lm.speak(4)
    lm.cancel_response()  # the user went on
    lm.retract()
    assert lm.cache.tokens == before
    lm.listen(" of Spain?")
    lm.begin_response()
    spoken, _ = lm.speak(8)
    heard = " ".join(spoken.split()[:2])
    lm.truncate(heard)  # a barge-in after two words
    assert lm.messages()[-1] == {"role": "assistant", "content": heard}
    for question in QUESTIONS[6:10]:
        _turn(lm, question)  # more shifts: the truncated answer moves down, then goes
    assert lm.trims > trims
    _contiguous(lm)
    _agree(lm.cache.logits, _fresh(lm).cache.logits)


def test_history_must_leave_room_in_the_context() -> None:
    with pytest.raises(ValueError, match="history_tokens"):
        _lm(context=512, history=512)
