"""The turn-taking policy of the TDM loop: when to speak, yield or keep talking.

Pure functions of the state head's probabilities and the silence/overlap
durations the session measures, so every decision is reproducible.

While listening, the assistant takes the turn once the silence since the
user's last voiced frame reaches a threshold that shrinks linearly as
P(speak) grows::

    required_silence(p) = max_silence_ms - (max_silence_ms - min_silence_ms) * p

so a finished sentence (p near 1) is answered after about `min_silence_ms`
(150 ms by default) and a dangling "and then I" (p near 0) waits up to the
cap, `max_silence_ms` (2000 ms).

While speaking, words the user says over the answer make it yield at once
when P(speak) reaches `yield_threshold`, or when the overlap runs longer than
`max_backchannel_ms` (no one says "uh-huh" for a second and a half); an
overlap that ends before either is dismissed as a backchannel and the answer
goes on. With `hold_on_overlap` (the default) the answer's audio pauses at
the user's onset while this is decided, so a barge-in is silent within the
VAD's onset time, and a dismissed backchannel resumes the answer exactly
where it paused; nothing unheard is lost either way.

Decisions wait for the VAD's end of speech (`vad.end_ms`, 100 ms of
unvoiced frames) and are never taken on a frame that is voiced again; the
session runs a tick the moment it fires. The answer's first clause may be
written before, at the recognizer's decode a moment into the pause, and is
dropped if the user goes on.

A policy may leave the answer to the client (`answers` false: the end of a
turn commits its words, `Respond` answers) and may play its answers out
whatever the user says (`yields` false: the voice over an answer neither holds
nor stops it; the words wait in OVERLAP and open the next turn at its END).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

from duplex.config import PolicySettings
from duplex.ports import StateProbs


def logit(p: float) -> float:
    """Log-odds, clipped so that 0 and 1 stay finite."""
    p = min(1 - 1e-6, max(1e-6, p))
    return math.log(p / (1 - p))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# the words' surest estimate (models.end_of_turn.MAX_SPEAK, ~190 ms of silence): a voice that sounds
# done may bring an unpunctuated turn up to it, never past it (a reader's short breath
# sounds as done as an end)
SUREST = 0.98


def sound_can_tell(text: StateProbs, settings: PolicySettings) -> bool:
    """Whether the sound of the pause can change the words' estimate: not for words the
    text calls unfinished ("and then I"), whatever the voice did."""
    return text.speak > settings.text_unfinished


def fuse(text: StateProbs, p_audio: float | None, settings: PolicySettings) -> StateProbs:
    """The words' estimate and the sound's, as one P(speak), in log-odds.

    Neither decides alone: the text knows "and then I" is unfinished (words it
    calls unfinished stay so, whatever the voice did), the audio knows a
    falling, lengthened "...right." is done, and hears the breath Whisper wrote
    a full stop at. Without an acoustic estimate, the text's stands.
    """
    if p_audio is None or not sound_can_tell(text, settings):
        return text
    z = logit(text.speak) + settings.audio_weight * logit(p_audio) + settings.audio_bias
    speak = sigmoid(z)
    if text.speak < 0.5:
        speak = min(speak, text.speak)  # words that lean to going on: the sound may only hold
    speak = min(speak, max(text.speak, SUREST))  # and it never hurries a turn past the words'
    return StateProbs(1.0 - speak, speak, text.dismiss)


class State(enum.Enum):
    LISTENING = "listening"
    SPEAKING = "speaking"
    OVERLAP = "overlap"  # the assistant speaks and the user talks over it


class Move(enum.Enum):
    """What changes whose turn it is."""

    TAKE_TURN = "take the turn"  # the silence reached what P(speak) asks, or Respond
    TALKED_OVER = "the user talks over the answer"  # the answer holds meanwhile
    DISMISS = "dismiss a backchannel"  # the answer goes on
    YIELD = "yield to a barge-in"  # the words said over the answer open the user's turn
    END = "the answer ends"  # played out, or cancelled; in overlap the user goes on
    FAIL = "a model failed"  # the turn ends with an error, the session listens again


# every turn-taking move: (where it starts, the move) -> where it lands
TRANSITIONS: dict[tuple[State, Move], State] = {
    (State.LISTENING, Move.TAKE_TURN): State.SPEAKING,
    (State.SPEAKING, Move.TALKED_OVER): State.OVERLAP,
    (State.OVERLAP, Move.DISMISS): State.SPEAKING,
    (State.OVERLAP, Move.YIELD): State.LISTENING,
    (State.SPEAKING, Move.END): State.LISTENING,
    (State.OVERLAP, Move.END): State.LISTENING,
    **{(state, Move.FAIL): State.LISTENING for state in State},
}


class IllegalMove(RuntimeError):
    """A move the table does not have from the state the session is in: a bug."""


def after(state: State, move: Move) -> State:
    """Where `move` from `state` lands; IllegalMove if the table has no such move."""
    try:
        return TRANSITIONS[(state, move)]
    except KeyError:
        raise IllegalMove(f"cannot {move.value} while {state.value}") from None


class OverlapDecision(enum.Enum):
    WAIT = "wait"  # keep talking, keep listening to the overlap
    YIELD = "yield"  # stop output now, the user has the turn
    DISMISS = "dismiss"  # a backchannel: keep talking, forget the overlap


class Policy(Protocol):
    """What the session asks: answer now? and what to do with words over the answer."""

    name: ClassVar[str]

    @property
    def answers(self) -> bool:
        """Whether the end of a turn starts the answer; else the turn is only committed
        (its words are final) and the client's `Respond` answers it."""
        ...

    @property
    def yields(self) -> bool:
        """Whether words over the answer may stop it; else it plays on, unheld, and the
        words open the user's next turn when it ends."""
        ...

    def required_silence_ms(self, p_speak: float) -> float: ...

    def take_turn(self, probs: StateProbs, silence_ms: float) -> bool: ...

    def on_overlap(self, probs: StateProbs, overlap_ms: float, ended: bool) -> OverlapDecision: ...


@dataclass(frozen=True)
class TurnPolicy:
    """The default policy: the state head's probabilities and measured silence."""

    name: ClassVar[str] = "duplex"

    settings: PolicySettings
    answers: bool = True
    yields: bool = True

    def required_silence_ms(self, p_speak: float) -> float:
        s = self.settings
        p = min(1.0, max(0.0, p_speak))
        return s.max_silence_ms - (s.max_silence_ms - s.min_silence_ms) * p

    def take_turn(self, probs: StateProbs, silence_ms: float) -> bool:
        """While listening, after the user has said something: answer now?"""
        return silence_ms >= self.required_silence_ms(probs.speak)

    def on_overlap(self, probs: StateProbs, overlap_ms: float, ended: bool) -> OverlapDecision:
        """While speaking, the user talks: yield, dismiss, or wait for more."""
        if probs.speak >= self.settings.yield_threshold:
            return OverlapDecision.YIELD
        if overlap_ms >= self.settings.max_backchannel_ms:
            return OverlapDecision.YIELD
        if ended:
            return OverlapDecision.DISMISS
        return OverlapDecision.WAIT


@dataclass(frozen=True)
class AnySpeechInterrupts(TurnPolicy):
    """Baseline: the default endpointing, but any speech over the answer stops it."""

    name: ClassVar[str] = "any-speech-interrupts"

    def on_overlap(self, probs: StateProbs, overlap_ms: float, ended: bool) -> OverlapDecision:
        return OverlapDecision.YIELD


@dataclass(frozen=True)
class FixedSilence(AnySpeechInterrupts):
    """Baseline, server_vad's defaults: a fixed silence ends the turn, any speech interrupts."""

    name: ClassVar[str] = "silence-500ms"
    silence_ms: int = 500

    def required_silence_ms(self, p_speak: float) -> float:
        return self.silence_ms


POLICIES: dict[str, type[TurnPolicy]] = {
    p.name: p for p in (TurnPolicy, AnySpeechInterrupts, FixedSilence)
}
