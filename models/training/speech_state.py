"""Stage 2: the state head on the speech path's hidden states.

Conversations of `chitchat-dataset` are walked through llama.cpp the way a
session with speech understanding holds them: earlier turns as text, the
user's current turn as adapter positions (12.5 per second) of its speech,
spoken by the varied voices of stage 1. Every position is an example,
labelled by where it falls on the audio timeline:

- in the silence after the turn's last voiced frame, from 160 ms on: SPEAK
  (the turn is over: the other person answered);
- inside the turn's speech, or from 160 ms into a 600-1000 ms pause that
  half of the turns (4+ words) get at a random word boundary: LISTEN;
- over a partly played answer: an acknowledgement ("uh huh", "yeah", the
  data's own short ones) from 160 ms after its onset on: DISMISS; the
  user's real next turn (or its first words) from 400 ms on: SPEAK.

Positions in the first 160 ms of a silence are ambiguous and left out. The
head is the text head's shape (576 -> 64 -> 3), fit the same way; whole
conversations are held out. The text head is evaluated on the same held-out
conversations, so the two paths' end-of-turn AUCs sit side by side.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from duplex.audio import SAMPLE_RATE, Int16Array, voiced_span
from models.adapter import POSITIONS_PER_CHUNK, SpeechAdapter, SpeechEncoder
from models.chatml import TURN_END, opening
from models.lm import LlamaDuplexLM
from models.training.adapter_data import VariedVoices
from models.training.state_data import DISMISS, LISTEN, SPEAK, Conversation
from models.training.state_head import Features

Progress = Callable[[str, int, int], None]

POSITION_MS = 1000 // (POSITIONS_PER_CHUNK * 1000 // 160)  # 80 ms per LM position
SETTLE_MS = 160  # a silence this young may still be a gap between words
TAIL_MS = 800  # silence heard after a turn
PROBE_TAIL_MS = 320  # silence heard after words said over an answer
INTERRUPTION_FROM_MS = 400  # an interruption is one from this far into it
TEXT_HEAD_CONVERSATIONS = 400  # the text head's data: its held-out dialogues are ours


@dataclass
class SpeechFeatures(Features):
    pause: npt.NDArray[np.bool_]  # listening examples inside a mid-turn pause


@dataclass(frozen=True)
class Spoken:
    pcm: Int16Array
    voice_ms: tuple[int, int]  # first and last voiced ms
    pause_ms: tuple[int, int] | None  # the mid-turn pause, if any


class TurnSpeaker:
    """User turns as audio with known timing: a lead, maybe a pause, a silent tail."""

    def __init__(self, voices: VariedVoices, seed: int) -> None:
        self.voices = voices
        self.rng = random.Random(seed)

    def turn(self, text: str, tail_ms: int = TAIL_MS, pause: bool = True) -> Spoken:
        words = text.split()
        lead = self.rng.randrange(0, 201, 20)
        parts = [text]
        if pause and len(words) >= 4 and self.rng.random() < 0.5:
            cut = self.rng.randrange(2, len(words) - 1)
            parts = [" ".join(words[:cut]), " ".join(words[cut:])]
        audio = [np.zeros(lead * SAMPLE_RATE // 1000, np.int16)]
        at, first, last, gap = lead, None, 0, None
        for n, part in enumerate(parts):
            pcm, voice = self.voices.voice(part)
            start, end = voiced_span(pcm)
            first = at + start if first is None else first
            last = at + end
            audio.append(pcm)
            at += pcm.size * 1000 // SAMPLE_RATE
            if n == 0 and len(parts) == 2:
                silence = self.rng.randrange(600, 1001, 20) - (at - last)
                audio.append(np.zeros(max(0, silence) * SAMPLE_RATE // 1000, np.int16))
                at += max(0, silence)
                gap = (last, at)
        audio.append(np.zeros(tail_ms * SAMPLE_RATE // 1000, np.int16))
        pcm, _ = self.voices.noisy(np.concatenate(audio), voice)
        return Spoken(pcm, (first or 0, last), gap)


def turn_labels(spoken: Spoken, positions: int) -> tuple[list[int], list[int], list[bool]]:
    """(indices, labels, in-pause) for a listening turn's positions; see the module doc."""
    examples: list[tuple[int, int, bool]] = []
    _, end = spoken.voice_ms
    gap = spoken.pause_ms
    for j in range(positions):
        t = (j + 1) * POSITION_MS
        if t >= end + SETTLE_MS:
            examples.append((j, SPEAK, False))
        elif gap and gap[0] + SETTLE_MS <= t < gap[1]:
            examples.append((j, LISTEN, True))
        elif t < end and not (gap and gap[0] <= t < gap[1]):
            examples.append((j, LISTEN, False))
    return [e[0] for e in examples], [e[1] for e in examples], [e[2] for e in examples]


def featurize_speech(
    lm: LlamaDuplexLM,
    encoder: SpeechEncoder,
    adapter: SpeechAdapter,
    conversations: list[Conversation],
    seed: int,
    progress: Progress,
    max_turns: int = 6,
) -> SpeechFeatures:
    """Hidden states of the speech path over whole conversations; see the module doc."""
    speaker = TurnSpeaker(VariedVoices(seed), seed)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    keys: list[str] = []
    complete: list[bool] = []
    over: list[bool] = []
    pause: list[bool] = []

    def add(
        states: np.ndarray, key: str, labels: list[int], overlap: bool, paused: list[bool]
    ) -> None:
        xs.append(states)
        ys.extend(labels)
        keys.extend([key] * len(labels))
        complete.extend(label == SPEAK and not overlap for label in labels)
        over.extend([overlap] * len(labels))
        pause.extend(paused)

    for n, conversation in enumerate(conversations):
        lm.reset()
        for i, turn in enumerate(conversation.turns[:max_turns]):
            if i % 2 == 0:
                spoken = speaker.turn(turn)
                lm.cache.read([opening("user")])
                mark = len(lm.cache.tokens)
                states = lm.cache.hear(adapter.embed(encoder.utterance(spoken.pcm)))
                keep, labels, paused = turn_labels(spoken, len(states))
                add(states[keep], conversation.key, labels, False, paused)
                lm.cache.cut(mark)  # the history holds the turn as words, as `both` does
                lm.cache.read([turn + TURN_END])
                continue
            words = turn.split()
            probe = conversation.overlaps.get(i)
            if probe is None:
                lm.cache.read([opening("assistant") + turn + TURN_END])
                continue
            lm.cache.read([opening("assistant") + " ".join(words[: probe.cut])])
            mark = len(lm.cache.tokens)
            lm.cache.read([TURN_END + opening("user")])
            spoken = speaker.turn(probe.text, tail_ms=PROBE_TAIL_MS, pause=False)
            states = lm.cache.hear(adapter.embed(encoder.utterance(spoken.pcm)))
            onset = spoken.voice_ms[0]
            start = SETTLE_MS if probe.label == DISMISS else INTERRUPTION_FROM_MS
            keep = [j for j in range(len(states)) if (j + 1) * POSITION_MS >= onset + start]
            add(
                states[keep], conversation.key, [probe.label] * len(keep), True, [False] * len(keep)
            )
            lm.cache.cut(mark)
            lm.cache.read([" " + " ".join(words[probe.cut :]) + TURN_END])
        progress("hidden states (speech)", n + 1, len(conversations))
    lm.reset()
    return SpeechFeatures(
        np.concatenate(xs).astype(np.float32),
        np.array(ys, dtype=np.int64),
        keys,
        np.array(complete),
        np.array(over),
        np.array(pause),
    )


def _features_path(adapter: SpeechAdapter, seed: int, conversations: int) -> Path:
    """Where the hidden states for this adapter, seed and data are cached."""
    from models.weights import cache_dir

    digest = hashlib.sha1()
    for value in adapter.module.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    return cache_dir() / "speech-head" / f"{digest.hexdigest()[:12]}-{seed}-{conversations}.npz"


def _cached(path: Path, build: Callable[[], SpeechFeatures]) -> SpeechFeatures:
    """Stage 2's hidden states take minutes to compute: kept on disk for refits."""
    if path.exists():
        with np.load(path) as saved:
            values = {f.name: saved[f.name] for f in fields(SpeechFeatures)}
        values["conversation"] = values["conversation"].tolist()
        return SpeechFeatures(**values)
    features = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.npz")
    arrays: dict[str, Any] = {
        f.name: np.asarray(getattr(features, f.name)) for f in fields(features)
    }
    np.savez(partial, **arrays)
    partial.replace(path)
    return features


def pause_auc(head: Any, test: SpeechFeatures) -> float:
    """End of turn against mid-turn pause, both silences: the hard case."""
    from models.training.state_head import roc_auc

    silent = (test.complete | test.pause) & ~test.overlap
    p = head.probabilities(test.x[silent])[:, SPEAK]
    return roc_auc(p, test.complete[silent])


def real_speech_auc(
    lm: LlamaDuplexLM, encoder: SpeechEncoder, adapter: SpeechAdapter, head: Any
) -> dict[str, Any]:
    """On ../shared/speech: P(speak) in the silence after each recording vs during it."""
    from models.training.adapter_eval import shared_recordings
    from models.training.state_head import roc_auc

    scores, ends = [], []
    recordings = shared_recordings()
    for _, pcm in recordings:
        spoken = Spoken(
            np.concatenate([pcm, np.zeros(TAIL_MS * SAMPLE_RATE // 1000, np.int16)]),
            voiced_span(pcm),
            None,
        )
        lm.reset()
        lm.cache.read([opening("user")])
        states = lm.cache.hear(adapter.embed(encoder.utterance(spoken.pcm)))
        keep, labels, _ = turn_labels(spoken, len(states))
        scores += head.probabilities(states[keep])[:, SPEAK].tolist()
        ends += [label == SPEAK for label in labels]
    lm.reset()
    if not scores:
        return {"recordings": 0}
    return {
        "recordings": len(recordings),
        "end_of_turn_auc": roc_auc(np.array(scores, np.float32), np.array(ends)),
    }


def train_speech_head(
    lm: LlamaDuplexLM,
    encoder: SpeechEncoder,
    adapter: SpeechAdapter,
    *,
    conversations: int = 120,
    seed: int = 0,
    progress: Progress = lambda what, done, total: None,
) -> tuple[Any, dict[str, Any]]:
    """Stage 2: (the speech head, its report next to the text head's on the same turns).

    The held-out dialogues are the text head's (80 of the first 400), so both
    heads are measured on conversations neither was trained on; `conversations`
    of the other 320 train the speech head.
    """
    from models.state_head import HEAD_PATH, StateHead
    from models.training.state_data import build, split
    from models.training.state_head import evaluate, featurize, fit

    data = build(seed=seed, max_conversations=TEXT_HEAD_CONVERSATIONS)
    held_out = split([c.key for c in data], seed=seed)
    test_dialogues = [c for c in data if c.key in held_out]
    train_dialogues = [c for c in data if c.key not in held_out][:conversations]
    features = _cached(
        _features_path(adapter, seed, len(train_dialogues)),
        lambda: featurize_speech(
            lm, encoder, adapter, train_dialogues + test_dialogues, seed, progress
        ),
    )
    test = np.array([k in held_out for k in features.conversation])
    head = fit(features.subset(~test), text_style="speech", seed=seed)
    held = features.subset(test)
    speech = evaluate(head, held)
    speech.update(pause_auc=pause_auc(head, held), train_examples=int((~test).sum()))
    text = evaluate(StateHead.load(HEAD_PATH), featurize(lm, test_dialogues, "asr", progress))
    report = {
        "speech": speech,
        "text": text,
        "real": real_speech_auc(lm, encoder, adapter, head),
        "train_conversations": len(train_dialogues),
        "held_out_conversations": len(test_dialogues),
        "pauses": int(features.pause.sum()),
        "class_counts": {
            name: int((features.y == c).sum())
            for name, c in (("listen", LISTEN), ("speak", SPEAK), ("dismiss", DISMISS))
        },
    }
    return head, report
