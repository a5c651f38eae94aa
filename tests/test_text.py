"""Clause splitting of streamed LM text and the played-words estimate."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from duplex.text import ClauseSplitter, played_words


def stream(tokens: Iterable[str], max_words: int = 8) -> tuple[list[list[str]], list[str]]:
    """Clauses returned by each push, and those returned by the final flush."""
    splitter = ClauseSplitter(max_words)
    pushed = [splitter.push(token) for token in tokens]
    return pushed, splitter.flush()


def test_streaming_tokens_split_at_punctuation_then_space() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Hel") == []
    assert splitter.push("lo, wor") == ["Hello,"]
    assert splitter.push("ld. How") == ["world."]
    assert splitter.push(" are you?") == []  # "?" waits for whitespace or flush
    assert splitter.flush() == ["How are you?"]
    assert splitter.flush() == []


def test_trailing_punctuation_is_released_by_the_next_whitespace() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Yes.") == []
    assert splitter.push(" ") == ["Yes."]
    assert splitter.flush() == []


def test_one_push_can_yield_several_clauses() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("One. Two! Three? Four; five: six, seven") == [
        "One.", "Two!", "Three?", "Four;", "five:", "six,"
    ]  # fmt: skip
    assert splitter.flush() == ["seven"]


def test_punctuation_inside_a_token_does_not_split() -> None:
    pushed, rest = stream(["It costs 3", ".5 euros", " or 1,000 dollars", " today"])
    assert pushed == [[], [], [], []]
    assert rest == ["It costs 3.5 euros or 1,000 dollars today"]
    pushed, rest = stream(["Pi is 3.14159. OK"])
    assert pushed == [["Pi is 3.14159."]]
    assert rest == ["OK"]


def test_newline_counts_as_whitespace() -> None:
    pushed, rest = stream(["First line.\nSecond"])
    assert pushed == [["First line."]]
    assert rest == ["Second"]


def test_long_unpunctuated_text_splits_after_max_words() -> None:
    pushed, rest = stream(["one two three four five six seven"], max_words=3)
    assert pushed == [["one two three", "four five six"]]
    assert rest == ["seven"]


def test_word_is_complete_only_when_followed_by_whitespace() -> None:
    splitter = ClauseSplitter(max_words=3)
    assert splitter.push("one two thr") == []
    assert splitter.push("ee") == []  # "three" may still grow
    assert splitter.push(" fo") == ["one two three"]
    assert splitter.flush() == ["fo"]


def test_punctuation_beyond_max_words_cuts_at_max_words_first() -> None:
    pushed, rest = stream(["a b c d. e"], max_words=2)
    assert pushed == [["a b", "c d."]]
    assert rest == ["e"]


def test_punctuation_within_max_words_wins() -> None:
    pushed, rest = stream(["a b, c d e f g"], max_words=4)
    assert pushed == [["a b,", "c d e f"]]
    assert rest == ["g"]


def test_default_max_words_is_eight() -> None:
    words = [f"w{i}" for i in range(20)]
    pushed, rest = stream([" ".join(words)])
    assert pushed == [[" ".join(words[:8]), " ".join(words[8:16])]]
    assert rest == [" ".join(words[16:])]


def test_clauses_reassemble_the_text() -> None:
    text = "Sure, the train leaves at 9.45 from platform two. Do you want me to book it for you? "
    tokens = [text[i : i + 3] for i in range(0, len(text), 3)]
    pushed, rest = stream(tokens, max_words=5)
    clauses = [c for chunk in pushed for c in chunk] + rest
    assert " ".join(clauses) == text.strip()
    assert clauses[0] == "Sure,"
    assert all(len(c.split()) <= 5 for c in clauses)
    assert all(c == c.strip() and c for c in clauses)


def test_whitespace_only_gives_nothing() -> None:
    pushed, rest = stream(["   ", "\n"])
    assert pushed == [[], []]
    assert rest == []


def test_splitter_is_reusable_after_flush() -> None:
    splitter = ClauseSplitter()
    splitter.push("left over")
    assert splitter.flush() == ["left over"]
    assert splitter.push("Next. ") == ["Next."]
    assert splitter.flush() == []


@pytest.mark.parametrize("max_words", [0, -1])
def test_invalid_max_words(max_words: int) -> None:
    with pytest.raises(ValueError, match="max_words must be at least 1"):
        ClauseSplitter(max_words)


def test_max_words_one() -> None:
    pushed, rest = stream(["a b c"], max_words=1)
    assert pushed == [["a", "b"]]
    assert rest == ["c"]


# played_words

TEXT = "one two three four"


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (0.0, ""),
        (0.1, ""),  # first word's midpoint is at 0.125
        (0.125, "one"),
        (0.49, "one two"),  # third word's midpoint is at 0.625
        (0.5, "one two"),
        (0.625, "one two three"),
        (0.87, "one two three"),
        (0.875, TEXT),
        (1.0, TEXT),
        (1.5, TEXT),
        (-0.3, ""),
        (-1.0, ""),
    ],
)
def test_played_words(fraction: float, expected: str) -> None:
    assert played_words(TEXT, fraction) == expected


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.0, ""), (0.49, ""), (0.5, "Hello."), (1.0, "Hello."), (2.0, "Hello.")],
)
def test_played_words_single_word(fraction: float, expected: str) -> None:
    assert played_words("Hello.", fraction) == expected


def test_played_words_empty_and_whitespace() -> None:
    assert played_words("", 0.7) == ""
    assert played_words("  a   b  ", 1.0) == "a b"


def test_first_clause_can_be_cut_sooner() -> None:
    splitter = ClauseSplitter(max_words=8, first_words=3)
    clauses = splitter.push("The capital of France is Paris and it is lovely in spring ")
    assert clauses == ["The capital of", "France is Paris and it is lovely in"]
