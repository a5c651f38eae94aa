"""A calculator for spoken sums: the answer's arithmetic comes from here, not the LM.

A 135M-parameter LM cannot add ("10 times 10 is a classic example of an
indeterminate equation"), and a wrong number said with confidence is the worst
answer a voice assistant gives. So when the user's words hold a sum ("what is
seven plus eight", "and ten divided by two?", "half of one hundred"), the
in-process LM's answer is the sum worked out ("7 plus 8 is 15."): it joins the
conversation as the assistant's turn, as any answer does. Given the result
first, the LM still went on to explain it wrongly ("2 + 0 = 1"), so nothing is
added to it. Only the last sum in the words counts: in "what is two plus two,
no, five times five" the user's latest request.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNITS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_NUMBER_WORDS = {word: value for value, word in enumerate(_UNITS)} | {
    word: 20 + 10 * i for i, word in enumerate(_TENS)
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}

# operators as people say them, longest first; a sum is `number operator number`
_BINARY = (
    ("multiplied by", "*"),
    ("divided by", "/"),
    ("times", "*"),
    ("plus", "+"),
    ("minus", "-"),
    ("over", "/"),
    ("x", "*"),
    ("+", "+"),
    ("-", "-"),
    ("*", "*"),
    ("/", "/"),
)
_SAID = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}
# one-number sums: "half of N", "double N", "N squared"
_PREFIX = (("half of", Fraction(1, 2)), ("a half of", Fraction(1, 2)), ("double", 2), ("twice", 2))

_TOKEN = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?|[a-z]+|[+*/-]")
_HYPHENATED = re.compile(rf"\b({'|'.join(_TENS)})-({'|'.join(_UNITS[1:10])})\b")


def calculation(text: str) -> str | None:
    """The last sum in `text` and its result, as a sentence to say ("7 plus 8 is 15."),
    or None when the words hold no sum."""
    tokens = _TOKEN.findall(_HYPHENATED.sub(r"\1 \2", text.lower()))
    found: str | None = None
    i = 0
    while i < len(tokens):
        result = _sum_at(tokens, i)
        if result is not None:
            found, i = result
        else:
            i += 1
    return found


def _sum_at(tokens: list[str], i: int) -> tuple[str, int] | None:
    """A sum starting at token `i`: its sentence and the index after it."""
    for words, factor in _PREFIX:
        said = words.split()
        if tokens[i : i + len(said)] == said:
            number = _number_at(tokens, i + len(said))
            if number is not None:
                value, end = number
                result = value * Fraction(factor)
                return f"{words.capitalize()} {_show(value)} is {_show(result)}.", end
    number = _number_at(tokens, i)
    if number is None:
        return None
    left, j = number
    if tokens[j : j + 1] == ["squared"]:
        return f"{_show(left)} squared is {_show(left * left)}.", j + 1
    for words, op in _BINARY:
        said = words.split()
        if tokens[j : j + len(said)] != said:
            continue
        right_at = _number_at(tokens, j + len(said))
        if right_at is None or (op == "/" and right_at[0] == 0):
            return None
        right, end = right_at
        results = {"+": left + right, "-": left - right, "*": left * right}
        value = results[op] if op in results else left / right
        return f"{_show(left)} {_SAID[op]} {_show(right)} is {_show(value)}.", end
    return None


def _number_at(tokens: list[str], i: int) -> tuple[Fraction, int] | None:
    """A number said or written from token `i` ("twenty five", "a hundred and five",
    "1,000"), and the index after it."""
    if i >= len(tokens):
        return None
    if tokens[i][0].isdigit():
        return Fraction(tokens[i].replace(",", "")), i + 1
    total, current, j = 0, 0, i
    last: int | None = None  # the last number word's value (None: none yet)
    after_scale = False
    if tokens[i] == "a" and tokens[i + 1 : i + 2] and tokens[i + 1] in _SCALES:
        current, last, j = 1, 1, i + 1
    while j < len(tokens):
        word = tokens[j]
        if word in _NUMBER_WORDS:
            value = _NUMBER_WORDS[word]
            compound = last is not None and last >= 20 and last % 10 == 0 and 0 < value < 10
            if last is not None and not after_scale and not compound:
                break  # "two three" is two numbers; "twenty five" is one
            current, last, after_scale = current + value, value, False
        elif word in _SCALES and last is not None and not (after_scale and word == "hundred"):
            if word == "hundred":
                current *= 100
            else:
                total, current = total + current * _SCALES[word], 0
            after_scale = True
        elif (
            word == "and"
            and after_scale
            and j + 1 < len(tokens)
            and (tokens[j + 1] in _NUMBER_WORDS)
        ):
            pass  # "one hundred and five"
        else:
            break
        j += 1
    if last is None:
        return None
    return Fraction(total + current), j


def _show(value: Fraction) -> str:
    """Digits, as the synthesizer reads them: whole numbers plain, others to two places."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.2f}".rstrip("0").rstrip(".")
