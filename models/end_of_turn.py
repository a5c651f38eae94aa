"""The end-of-turn rule: the recognizer's punctuation and the LM's own P(end), as the
listen / speak / dismiss estimate the turn policy reads.

Pure functions of the user's words (and, while listening, of the probability
the frozen LM gives the turn's end after them), so the rule is tested without
a model.
"""

from __future__ import annotations

import math

from duplex.ports import StateProbs
from duplex.text import plain

# Overlaps the end-of-turn rule treats as backchannels: said while the other
# person talks, to show attention, not to take the turn.
BACKCHANNELS = frozenset(
    {
        "yeah", "yes", "yep", "uh huh", "uh-huh", "mm hm", "mm-hm", "mhm", "mm", "hmm",
        "right", "ok", "okay", "sure", "i see", "got it", "cool", "nice", "wow", "oh",
        "ah", "haha", "ha ha", "true", "exactly", "totally", "alright", "all right",
        "uh", "um", "mm-hmm", "mhmm", "hm",
    }
)  # fmt: skip


# Words that rarely end a statement: a turn ending in one is probably a pause.
DANGLING = frozenset(
    {
        "a", "an", "the", "and", "but", "or", "so", "because", "if", "that", "than", "then",
        "to", "of", "in", "on", "at", "by", "for", "with", "about", "from", "into", "like",
        "my", "your", "our", "their", "his", "her", "its", "is", "was", "are", "were", "am",
        "be", "been", "i", "we", "you", "they", "he", "she", "um", "uh", "er",
    }
)  # fmt: skip

NEVER_LAST = frozenset(
    {
        "a", "an", "the", "and", "but", "or", "because", "if", "than", "of", "my", "your",
        "our", "their", "his", "her", "its", "um", "uh", "er",
    }
)  # fmt: skip


# P(end) -> P(speak): odds of 1 at P(end) = 10^-2.75 = 0.0018, times 10^1.5 per decade
END_MIDPOINT_LOG10 = -2.75
END_ODDS_PER_DECADE_LOG10 = 1.5
MAX_SPEAK = 0.98  # the cap: even a sure end waits ~190 ms of silence
UNMARKED_MAX_SPEAK = 0.9  # the cap for words the recognizer left unpunctuated (~335 ms)
UNFINISHED_SPEAK = 0.1  # words that are not finished: the policy waits ~1.8 s
DANGLING_DISCOUNT = 30.0  # P(end) after a DANGLING last word counts for this much less


def speak_from_end(p_end: float) -> float:
    """The LM's end-of-utterance probability as P(speak), on a log scale.

    The midpoint sits in the gap between the words before a mid-sentence pause
    and finished questions, with room on the pauses' side for the rounding of
    other CPUs (docs/decisions.md, "Where P(end) says the turn is over").
    P(end) 0.0005 maps to 0.13 (the policy waits ~1.76 s of silence), 0.001
    to 0.31 (~1.4 s), 0.004 to 0.77 (~575 ms), 0.01 to 0.93 (~280 ms), 0.02
    and above to >= 0.97 (<= 205 ms).
    """
    level = math.log10(max(p_end, 1e-9))
    speak = 1.0 / (1.0 + 10 ** (-END_ODDS_PER_DECADE_LOG10 * (level - END_MIDPOINT_LOG10)))
    return min(MAX_SPEAK, speak)


def rule_state(user_text: str, overlap: bool, p_end: float | None = None) -> StateProbs:
    """The end-of-turn rule: Whisper's punctuation, the LM's own P(end) where given.

    While listening: a turn that ends in final punctuation (. ? !) is complete;
    its P(speak) is `speak_from_end(p_end)`, the LM's probability that the
    words (without that final mark) end the turn, or 0.9 without one.
    Words with no mark at all, which Whisper's final pass leaves on lists and
    names ("4 Queen of Clubs"), get the LM's estimate too, capped at
    UNMARKED_MAX_SPEAK; their P(end) is 0.04-0.15 where the benchmark's
    mid-sentence pauses ("Can you tell me") are <= 0.001.
    Anything else (a trailing "...", a comma, a dangling word, no LM reading)
    is not complete (P(speak) 0.1: the policy waits ~1.8 s).
    Punctuation alone cannot tell "Can you tell me?" from "Why is the sky
    blue?"; the LM's next-token distribution can. Whisper punctuates in its final pass,
    and puts a full stop or a question mark after a trailing-off "I was
    thinking about" or "how long does it take to" too, so a turn that ends in
    "..." or in a NEVER_LAST word (articles, conjunctions, possessives) counts
    as unfinished, and one whose last word rarely ends a sentence (DANGLING:
    prepositions, pronouns, "is", ...) is finished only where the LM is sure
    ("I think so.", "Yes it is."). A question may end in a preposition ("what
    are you thinking about?"): after a question mark only NEVER_LAST words are
    held.
    While speaking: a short acknowledgement from BACKCHANNELS is dismissed,
    no words yet means keep listening, any other words interrupt.
    """
    text = plain(user_text)
    if overlap:
        if not text:
            return StateProbs(0.9, 0.05, 0.05)
        if text in BACKCHANNELS or all(w in BACKCHANNELS for w in text.split()):
            return StateProbs(0.05, 0.05, 0.9)
        return StateProbs(0.05, 0.9, 0.05)
    ending = user_text.rstrip()
    words = text.split()
    if not words:
        return StateProbs(1.0 - UNFINISHED_SPEAK, UNFINISHED_SPEAK, 0.0)
    dangling = NEVER_LAST if ending.endswith("?") else DANGLING
    finished = ending.endswith((".", "!", "?")) and not ending.endswith("...")
    if finished and words[-1] not in dangling:
        speak = 0.9 if p_end is None else speak_from_end(p_end)
        return StateProbs(1.0 - speak, speak, 0.0)
    unmarked = ending[-1:].isalnum()
    if p_end is not None and (finished or unmarked) and words[-1] not in NEVER_LAST:
        # no mark at all ("4 Queen of Clubs", a list, a name), or a dangling last word:
        # the LM alone decides, a little less sure than with the recognizer's full stop
        dangling_end = words[-1] in DANGLING
        if dangling_end:
            # "I think so.", "Yes it is.": a word that rarely ends a sentence ends this
            # one only where the LM is sure of it ("I was thinking about" is 1e-4,
            # "where the airport is" 0.4): its P(end) counts for a thirtieth
            p_end /= DANGLING_DISCOUNT
        speak = min(UNMARKED_MAX_SPEAK, speak_from_end(p_end))
        if dangling_end:  # and the words are never less finished than the rule's unfinished
            speak = max(UNFINISHED_SPEAK, speak)
        return StateProbs(1.0 - speak, speak, 0.0)
    return StateProbs(1.0 - UNFINISHED_SPEAK, UNFINISHED_SPEAK, 0.0)
