"""Training examples for the duplex state head, from real human chit-chat.

The `chitchat-dataset` package holds 7,168 conversations between two people.
Speaker A plays the user and speaker B the assistant, turn by turn, the
whole conversation so far as context in the chat template (as in a session).

- Listening: every word-boundary prefix of a user turn is an example; the
  whole turn is SPEAK (it was complete: the other person answered), every
  proper prefix LISTEN.
- Overlap (the user talks over the assistant's answer, cut at a random word
  as if it were still playing): a short acknowledgement is DISMISS, the
  user's real next turn (or its first words) is SPEAK. Acknowledgements are
  the documented list `BACKCHANNEL_PHRASES` plus the data's own short
  messages made only of those words ("lol yeah", "haha ok").

Text is normalised the way the streaming recognizer writes it: Whisper
capitalises the first word and punctuates; chat text is lower case with
little punctuation. `asr_style` makes a turn look like a final transcript;
`duplex.text.plain` removes case and punctuation, for the variant that ignores them.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from duplex.text import plain

LISTEN, SPEAK, DISMISS = 0, 1, 2
LABELS = ("listen", "speak", "dismiss")

BACKCHANNEL_PHRASES = (
    "yeah", "yes", "yep", "uh huh", "uh-huh", "mm hm", "mm-hmm", "mhm", "right", "ok",
    "okay", "sure", "i see", "got it", "cool", "nice", "wow", "oh", "ah", "haha", "lol",
    "true", "exactly", "totally", "alright", "hmm",
)  # fmt: skip
_ACK_WORDS = {w for p in BACKCHANNEL_PHRASES for w in p.replace("-", " ").split()} | {
    "oh",
    "yeah",
    "ha",
    "hahaha",
    "lmao",
    "wow",
}


@dataclass(frozen=True)
class Overlap:
    """Words said over the assistant's answer after its first `cut` words were played."""

    cut: int
    text: str
    label: int  # SPEAK or DISMISS


@dataclass(frozen=True)
class Conversation:
    """Turns alternate user / assistant; some answers carry an overlap probe."""

    key: str
    turns: tuple[str, ...]
    overlaps: dict[int, Overlap]  # turn index (an assistant turn) -> probe


def dataset_path() -> Path:
    spec = find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the dialogue data is not installed: pip install chitchat-dataset")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset.json"


def conversations(path: Path | None = None) -> Iterator[tuple[str, list[str]]]:
    """(id, turns): each turn is one speaker's consecutive messages, joined."""
    data = json.loads((path or dataset_path()).read_text())
    for key, conversation in data.items():
        turns = [" ".join(m["text"].strip() for m in group) for group in conversation["messages"]]
        turns = [t for t in turns if t.strip()]
        if len(turns) >= 2:
            yield key, turns


def asr_style(text: str) -> str:
    """How the recognizer writes a finished utterance: capitalised, ending in punctuation."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    text = re.sub(r"\bi\b", "I", text)
    return text if text[-1] in ".?!" else text + ("?" if _is_question(text) else ".")


def _is_question(text: str) -> bool:
    first = text.split()[0].lower()
    return first in {
        "what", "why", "how", "when", "where", "who", "which", "do", "does", "did", "are",
        "is", "can", "could", "would", "will", "have", "has", "should",
    }  # fmt: skip


def is_acknowledgement(text: str) -> bool:
    words = plain(text).replace("-", " ").split()
    return 0 < len(words) <= 3 and all(w in _ACK_WORDS for w in words)


def build(
    seed: int = 0,
    max_conversations: int | None = None,
    max_turns: int = 24,
    path: Path | None = None,
) -> list[Conversation]:
    """Conversations in recognizer style, each answer with a probe half the time."""
    rng = random.Random(seed)
    acks = list(BACKCHANNEL_PHRASES)
    out: list[Conversation] = []
    for n, (key, raw) in enumerate(conversations(path)):
        if max_conversations is not None and n >= max_conversations:
            break
        if len(acks) < 300:
            acks += [t for t in raw if is_acknowledgement(t)][:2]
        turns = tuple(asr_style(t) for t in raw[:max_turns])
        overlaps: dict[int, Overlap] = {}
        for i in range(1, len(turns), 2):  # the assistant's turns
            words = turns[i].split()
            if len(words) < 4:
                continue
            cut = rng.randrange(2, len(words))
            if rng.random() < 0.5:
                overlaps[i] = Overlap(cut, asr_style(rng.choice(acks)), DISMISS)
            elif i + 1 < len(turns) and not is_acknowledgement(turns[i + 1]):
                reply = turns[i + 1].split()
                take = reply if rng.random() < 0.5 else reply[: rng.randrange(1, 5)]
                overlaps[i] = Overlap(cut, " ".join(take), SPEAK)
        out.append(Conversation(key, turns, overlaps))
    return out


def split(keys: list[str], held_out: float = 0.2, seed: int = 0) -> set[str]:
    """Whole conversations held out for evaluation."""
    unique = sorted(set(keys))
    random.Random(seed).shuffle(unique)
    return set(unique[: int(len(unique) * held_out)])
