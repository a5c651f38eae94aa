"""The calculator for spoken sums: what it reads as a sum, and what it leaves alone."""

from __future__ import annotations

import pytest

from models.arithmetic import calculation


@pytest.mark.parametrize(
    ("words", "said"),
    [
        ("What is two plus two?", "2 plus 2 is 4."),
        ("What is ten divided by two?", "10 divided by 2 is 5."),
        ("What is seven divided by two?", "7 divided by 2 is 3.5."),
        ("What is half of one hundred?", "Half of 100 is 50."),
        ("And what about three plus three?", "3 plus 3 is 6."),
        ("What is twenty-five times four?", "25 times 4 is 100."),
        ("What is twenty five times four?", "25 times 4 is 100."),
        ("What is one hundred and five minus five?", "105 minus 5 is 100."),
        ("what's 12 x 12", "12 times 12 is 144."),
        ("What is 3,000 / 4?", "3000 divided by 4 is 750."),
        ("two thousand three hundred and four plus one", "2304 plus 1 is 2305."),
        ("What is a hundred plus a thousand?", "100 plus 1000 is 1100."),
        ("What is six minus six?", "6 minus 6 is 0."),
        ("What is nine squared?", "9 squared is 81."),
        ("What's two plus two? No wait, five times five.", "5 times 5 is 25."),
        ("What is 1.5 times 2?", "1.5 times 2 is 3."),
    ],
)
def test_a_spoken_sum_is_worked_out(words: str, said: str) -> None:
    assert calculation(words) == said


@pytest.mark.parametrize(
    "words",
    [
        "What is the capital of France?",
        "I have two kids and one dog.",
        "The top ten times I laughed.",
        "What is nine divided by zero?",
        "Count from one to three.",
        "How many legs does a spider have?",
        "",
    ],
)
def test_words_without_a_sum_get_no_calculation(words: str) -> None:
    assert calculation(words) is None
