"""Text helpers: clause splitting and played-word mapping for the speak slice, the words
without case or punctuation."""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"[.!?;:,](?=\s)")

# Words that ask the speaker to stop: heard over an answer, they count even when
# the recognizer was unsure of them (a lone "Stop." can decode at -0.64)
STOP_WORDS = frozenset({"stop", "wait", "no", "hold", "sorry", "pause", "hey", "excuse"})


def plain(text: str) -> str:
    """No case, no punctuation: the words alone, where punctuation is not trusted."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s'-]", " ", text.lower())).strip()


def asks_to_stop(text: str) -> bool:
    return any(word in STOP_WORDS for word in re.findall(r"[a-z]+", text.lower()))


class ClauseSplitter:
    """Cuts streaming LM text into clauses for the synthesizer.

    A clause ends at punctuation followed by whitespace, or after `max_words`
    complete words, so the first audio does not wait for a long sentence.
    The first clause may be cut sooner, after `first_words` (default
    `max_words`): it is written and synthesized while the user waits.
    """

    def __init__(self, max_words: int = 8, first_words: int | None = None) -> None:
        first_words = max_words if first_words is None else first_words
        if max_words < 1 or first_words < 1:
            raise ValueError(f"max_words must be at least 1, got {min(max_words, first_words)}")
        self.max_words = max_words
        self.first_words = first_words
        self._first = True
        self._buffer = ""

    def push(self, text: str) -> list[str]:
        self._buffer += text
        clauses = []
        while clause := self._next_clause():
            clauses.append(clause)
        return clauses

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    def _next_clause(self) -> str | None:
        limit = self.first_words if self._first else self.max_words
        match = _BOUNDARY.search(self._buffer)
        # complete words are those followed by whitespace
        words = list(re.finditer(r"\S+(?=\s)", self._buffer))
        if match and len(self._buffer[: match.end()].split()) <= limit:
            end = match.end()
        elif len(words) >= limit:
            end = words[limit - 1].end()
        else:
            return None
        clause, self._buffer = self._buffer[:end].strip(), self._buffer[end:]
        if clause:
            self._first = False
        return clause or None


def played_words(text: str, fraction: float) -> str:
    """The words of a clause heard when `fraction` of its audio has played.

    Word timings inside a clause are estimated in proportion to its audio;
    a word counts as heard once half of its share has played.
    """
    words = text.split()
    heard = int(len(words) * max(0.0, min(1.0, fraction)) + 0.5)
    return " ".join(words[:heard])
