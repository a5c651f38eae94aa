"""ChatML, the turn format SmolLM2-Instruct was trained on: the marks around each turn."""

from __future__ import annotations

import re

TURN_START = "<|im_start|>{role}\n"
TURN_END = "<|im_end|>\n"

_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL)


def opening(role: str) -> str:
    """The mark that opens a turn of `role` (system, user or assistant)."""
    return TURN_START.format(role=role)


def turns(text: str) -> list[tuple[str, str]]:
    """(role, content) of every turn in ChatML `text`; the last may be still open."""
    return _TURN.findall(text)
