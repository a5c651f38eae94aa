"""The spoken questions of the answer-quality bench, each with the answers accepted.

`accept` is a regular expression searched in the answer's plain words (no case,
no punctuation but apostrophes and hyphens; numbers as the LM wrote them, so
both spellings are listed). A follow-up is asked after the answer to the turns
before it and is scored alone: "and what about Germany?" is right only if
the answer names Berlin. `max_words` bounds an instruction's answer ("in one
sentence"). The set alternates: even items are the tuning half, odd items the
held-out half, never tuned on (`held_out`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    kind: str  # fact | arithmetic | instruction | follow_up
    turns: tuple[str, ...]  # what the user says, turn by turn; the last one is scored
    accept: str  # regex over the last answer's plain words
    max_words: int | None = None  # at most this many words in the answer


def held_out(index: int) -> bool:
    """Odd items: the half no change is tuned on."""
    return index % 2 == 1


def _q(kind: str, accept: str, *turns: str, max_words: int | None = None) -> Question:
    return Question(kind, turns, accept, max_words)


def _n(value: int, *words: str) -> str:
    """A number as digits or words."""
    return r"\b(" + "|".join([str(value), f"{value:,}", *words]) + r")\b"


FACTS = (
    _q("fact", r"\bparis\b", "What is the capital of France?"),
    _q("fact", r"\bjupiter\b", "What is the largest planet in our solar system?"),
    _q("fact", _n(24, "twenty[- ]four"), "How many hours are in a day?"),
    _q("fact", _n(8, "eight"), "How many legs does a spider have?"),
    _q("fact", r"\bshakespeare\b", "Who wrote Romeo and Juliet?"),
    _q("fact", r"\bcows?\b", "Which animal says moo?"),
    _q("fact", _n(7, "seven"), "How many days are in a week?"),
    _q("fact", r"\btokyo\b", "What is the capital of Japan?"),
    _q("fact", r"\bblue\b", "What color is a clear sky on a sunny day?"),
    _q("fact", r"\bpacific\b", "What is the largest ocean on Earth?"),
    _q("fact", _n(12, "twelve"), "How many months are in a year?"),
    _q("fact", r"\bmars\b", "Which planet is known as the red planet?"),
    _q(
        "fact",
        r"\bh2o\b|\bhydrogen\b.*\boxygen\b|\boxygen\b.*\bhydrogen\b",
        "What is water made of?",
    ),
    _q("fact", r"\bmadrid\b", "What is the capital of Spain?"),
    _q("fact", _n(60, "sixty"), "How many minutes are in an hour?"),
    _q("fact", r"\bmercury\b", "Which planet is closest to the sun?"),
    _q("fact", r"\bgreen\b", "What color are the leaves of most trees in summer?"),
    _q("fact", r"\brome\b", "What is the capital of Italy?"),
    _q("fact", _n(100, "one hundred", "a hundred"), "At how many degrees Celsius does water boil?"),
    _q("fact", r"\barmstrong\b", "Who was the first person to walk on the moon?"),
    _q("fact", _n(3, "three"), "How many sides does a triangle have?"),
    _q("fact", r"\bottawa\b", "What is the capital of Canada?"),
    _q("fact", r"\bsun\b", "What star is at the center of our solar system?"),
    _q("fact", r"\bcanberra\b", "What is the capital of Australia?"),
    _q("fact", r"\bbees?\b", "Which insect makes honey?"),
    _q("fact", _n(0, "zero"), "At how many degrees Celsius does water freeze?"),
    _q("fact", r"\beverest\b", "What is the tallest mountain in the world?"),
    _q("fact", r"\benglish\b", "What language is spoken in England?"),
    _q("fact", r"\bnile\b|\bamazon\b", "What is the longest river in the world?"),
    _q("fact", _n(26, "twenty[- ]six"), "How many letters are in the English alphabet?"),
    _q("fact", r"\bkangaroos?\b", "Which animal with a pouch lives in Australia?"),
    _q("fact", r"\bberlin\b", "What is the capital of Germany?"),
    _q("fact", _n(4, "four"), "How many seasons are there in a year?"),
    _q("fact", r"\bda vinci\b|\bleonardo\b", "Who painted the Mona Lisa?"),
    _q("fact", r"\bice\b", "What do you call frozen water?"),
    _q("fact", r"\bmoscow\b", "What is the capital of Russia?"),
    _q("fact", r"\bpenguins?\b", "Which black and white bird cannot fly and lives in Antarctica?"),
    _q("fact", _n(5, "five"), "How many fingers are on one hand?"),
    _q("fact", r"\bcairo\b", "What is the capital of Egypt?"),
    _q("fact", r"\boxygen\b", "What gas do people need to breathe?"),
)

ARITHMETIC = (
    _q("arithmetic", _n(4, "four"), "What is two plus two?"),
    _q("arithmetic", _n(10, "ten"), "What is five plus five?"),
    _q("arithmetic", _n(12, "twelve"), "What is three times four?"),
    _q("arithmetic", _n(6, "six"), "What is ten minus four?"),
    _q("arithmetic", _n(20, "twenty"), "What is ten plus ten?"),
    _q("arithmetic", _n(9, "nine"), "What is three times three?"),
    _q("arithmetic", _n(5, "five"), "What is ten divided by two?"),
    _q("arithmetic", _n(15, "fifteen"), "What is seven plus eight?"),
    _q("arithmetic", _n(100, "one hundred", "a hundred"), "What is ten times ten?"),
    _q("arithmetic", _n(3, "three"), "What is nine divided by three?"),
    _q("arithmetic", _n(8, "eight"), "What is two times four?"),
    _q("arithmetic", _n(1, "one"), "What is five minus four?"),
    _q("arithmetic", _n(50, "fifty"), "What is half of one hundred?"),
    _q("arithmetic", _n(14, "fourteen"), "What is seven times two?"),
    _q("arithmetic", _n(7, "seven"), "What is three plus four?"),
    _q("arithmetic", _n(30, "thirty"), "What is fifteen plus fifteen?"),
    _q("arithmetic", _n(2, "two"), "What is eight divided by four?"),
    _q("arithmetic", _n(11, "eleven"), "What is six plus five?"),
    _q("arithmetic", _n(16, "sixteen"), "What is four times four?"),
    _q("arithmetic", _n(0, "zero"), "What is six minus six?"),
    _q("arithmetic", _n(25, "twenty[- ]five"), "What is five times five?"),
    _q("arithmetic", _n(13, "thirteen"), "What is twenty minus seven?"),
    _q("arithmetic", _n(18, "eighteen"), "What is nine plus nine?"),
    _q("arithmetic", _n(40, "forty"), "What is twenty times two?"),
)

INSTRUCTIONS = (
    _q(
        "instruction", r"\bparis\b", "In one sentence, what is the capital of France?", max_words=20
    ),
    _q("instruction", r"\b(hello|hi|hey)\b", "Say hello to me.", max_words=15),
    _q(
        "instruction",
        r"\bone\b.*\btwo\b.*\bthree\b|\b1\b.*\b2\b.*\b3\b",
        "Count from one to three.",
        max_words=15,
    ),
    _q(
        "instruction",
        r"\bred\b|\bblue\b|\bgreen\b|\byellow\b|\bpurple\b|\borange\b|\bpink\b|\bblack\b|\bwhite\b",
        "Name one color.",
        max_words=12,
    ),
    _q(
        "instruction",
        r"\bdogs?\b|\bcats?\b|\bhorses?\b|\bcows?\b|\blions?\b|\btigers?\b|\bbirds?\b|\bfish\b|\belephants?\b|\bmonkeys?\b|\brabbits?\b|\bbears?\b",
        "Name one animal.",
        max_words=12,
    ),
    _q("instruction", r"\byes\b", "Answer with yes or no: is the sun hot?", max_words=8),
    _q("instruction", r"\bno\b", "Answer with yes or no: is ice hot?", max_words=8),
    _q(
        "instruction",
        r"\bmonday\b|\btuesday\b|\bwednesday\b|\bthursday\b|\bfriday\b|\bsaturday\b|\bsunday\b",
        "Name a day of the week.",
        max_words=12,
    ),
    _q("instruction", _n(4, "four"), "Just give me the number: what is two plus two?", max_words=6),
    _q(
        "instruction",
        r"\bapples?\b|\bbananas?\b|\boranges?\b|\bgrapes?\b|\bpears?\b|\bmangos?\b|\bstrawberr(y|ies)\b|\bcherr(y|ies)\b|\blemons?\b|\bpeach(es)?\b",
        "Name a fruit.",
        max_words=12,
    ),
    _q(
        "instruction",
        r"\bjanuary\b|\bfebruary\b|\bmarch\b|\bapril\b|\bmay\b|\bjune\b|\bjuly\b|\baugust\b|\bseptember\b|\boctober\b|\bnovember\b|\bdecember\b",
        "Name a month of the year.",
        max_words=12,
    ),
    _q("instruction", r"\bthank", "Say thank you.", max_words=12),
    _q("instruction", r"\bgood ?bye\b|\bbye\b", "Say goodbye.", max_words=12),
    _q(
        "instruction",
        r"\bsun\b|\bsunny\b|\bsunshine\b",
        "In a few words, what makes the day bright?",
        max_words=20,
    ),
    _q(
        "instruction",
        r"\bsquare\b|\bcircle\b|\btriangle\b|\brectangle\b|\bstar\b|\boval\b",
        "Name a shape.",
        max_words=12,
    ),
    _q("instruction", r"\bwater\b", "In one short sentence, what do fish swim in?", max_words=20),
    _q("instruction", r"\bno\b", "Answer with yes or no: can a fish climb a tree?", max_words=8),
    _q("instruction", r"\byes\b", "Answer with yes or no: is water wet?", max_words=8),
    _q(
        "instruction",
        r"\bpiano\b|\bguitar\b|\bviolin\b|\bdrums?\b|\bflute\b|\btrumpet\b|\bcello\b|\bsaxophone\b|\bharp\b",
        "Name a musical instrument.",
        max_words=12,
    ),
    _q(
        "instruction",
        r"\bcars?\b|\bbus(es)?\b|\btrains?\b|\bbikes?\b|\bbicycles?\b|\bplanes?\b|\bairplanes?\b|\bboats?\b|\bships?\b|\btrucks?\b",
        "Name something people travel in.",
        max_words=12,
    ),
)

FOLLOW_UPS = (
    _q("follow_up", r"\bberlin\b", "What is the capital of France?", "And what about Germany?"),
    _q("follow_up", r"\brome\b", "What is the capital of Spain?", "And what about Italy?"),
    _q("follow_up", _n(6, "six"), "What is two plus two?", "And what about three plus three?"),
    _q("follow_up", r"\btokyo\b", "What is the capital of China?", "And Japan?"),
    _q(
        "follow_up",
        _n(4, "four"),
        "How many legs does a spider have?",
        "And how many does a dog have?",
    ),
    _q("follow_up", _n(2, "two"), "How many legs does a cat have?", "And a bird?"),
    _q("follow_up", r"\bmadrid\b", "What is the capital of Italy?", "What about Spain?"),
    _q("follow_up", _n(10, "ten"), "What is two times three?", "And five times two?"),
    _q(
        "follow_up",
        r"\bottawa\b",
        "What is the capital of the United States?",
        "And what about Canada?",
    ),
    _q(
        "follow_up",
        _n(60, "sixty"),
        "How many seconds are in a minute?",
        "And how many minutes are in an hour?",
    ),
    _q("follow_up", r"\blondon\b", "What is the capital of Ireland?", "What about England?"),
    _q("follow_up", _n(9, "nine"), "What is four plus four?", "And four plus five?"),
    _q("follow_up", r"\bparis\b", "What is the capital of Germany?", "And France?"),
    _q(
        "follow_up",
        _n(365, "three hundred (and )?sixty[- ]five"),
        "How many days are in a week?",
        "And in a year?",
    ),
    _q("follow_up", r"\bcairo\b", "What is the capital of Kenya?", "And what about Egypt?"),
    _q("follow_up", _n(8, "eight"), "What is ten minus five?", "And ten minus two?"),
    _q("follow_up", r"\bmoscow\b", "What is the capital of Poland?", "What about Russia?"),
    _q("follow_up", _n(7, "seven"), "How many days are in a weekend?", "And in a whole week?"),
    _q("follow_up", r"\bathens\b", "What is the capital of Portugal?", "And Greece?"),
    _q("follow_up", _n(20, "twenty"), "What is five times two?", "And ten times two?"),
)

QUESTION_SET: tuple[Question, ...] = FACTS + ARITHMETIC + INSTRUCTIONS + FOLLOW_UPS
