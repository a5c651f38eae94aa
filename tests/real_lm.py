"""The shipped LM for the tests that read its cache: one factory, skipped without weights."""

from __future__ import annotations

from typing import Any

import pytest

from models.lm import LlamaDuplexLM
from models.weights import LM, WeightsMissing

SYSTEM = "You are a friendly voice assistant. Answer in one short sentence."


def real_lm(**options: Any) -> LlamaDuplexLM:
    """SmolLM2 on the CPU with the tests' system prompt; `options` go to the LM."""
    try:
        path = LM.resolve()
    except WeightsMissing as error:
        pytest.skip(str(error))
    return LlamaDuplexLM(path, system_prompt=SYSTEM, device="cpu", **options)


def answer(lm: LlamaDuplexLM, words: str, tokens_a_step: int = 4) -> str:
    """The user says `words`; the LM's whole answer, written `tokens_a_step` at a time."""
    lm.listen(words)
    lm.begin_response()
    text, done = "", False
    while not done:
        piece, done = lm.speak(tokens_a_step)
        text += piece
    return text
