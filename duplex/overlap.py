"""The user's voice over the assistant's answer, from its onset until the session
yields to it (a barge-in) or dismisses it (an "uh-huh"): what the OVERLAP state holds.

The reading of it is the LM's, from the recognizer's words or the speech path's
embeddings, with two rules on top: a stop word always reads as "yield", and
words the recognizer is unsure of (a cough it guessed words for) never do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from duplex.audio import Float32Array
from duplex.config import PolicySettings
from duplex.ports import ReadsOverlap, StateProbs
from duplex.tdm import OverlapDecision, Policy
from duplex.text import asks_to_stop

# the state read from a stop word said over the answer: yield
STOP_WORD = StateProbs(0.0, 1.0, 0.0)
NOTHING_YET = StateProbs(1.0, 0.0, 0.0)


@dataclass
class Overlap:
    """Voice over the answer: when it began and ended, and what was heard of it."""

    onset_ms: int
    end_ms: int | None = None  # where the voice stopped, once it has
    text: str = ""  # the recognizer's words
    speech: list[Float32Array] = field(default_factory=list)  # the speech path's embeddings
    probs: StateProbs = NOTHING_YET  # the LM's reading of `speech`

    def restart_speech(self) -> None:
        """The voice begins again: the speech path hears it from its new onset."""
        self.speech, self.probs = [], NOTHING_YET

    def hear_speech(self, embeddings: Float32Array, lm: ReadsOverlap) -> None:
        self.speech.append(embeddings)
        self.probs = lm.overlap_speech(np.concatenate(self.speech))

    def decide(
        self,
        lm: ReadsOverlap,
        confidence: float,
        policy: Policy,
        settings: PolicySettings,
        understanding: str,
        now_ms: int,
        ended: bool,
    ) -> OverlapDecision:
        """Yield, dismiss or wait, on the words so far (`confidence`: the recognizer's
        on its latest decode; `ended`: the voice has stopped)."""
        if understanding != "text":
            probs = self.probs  # the speech path's reading, chunk by chunk
            if asks_to_stop(self.text):
                probs = STOP_WORD  # the recognizer's "wait": the head may hear an "uh-huh"
        else:
            probs = lm.overlap(self.text)
            if confidence < settings.min_overlap_confidence and not asks_to_stop(self.text):
                # the recognizer guessed words for a sound: not words to yield to
                probs = StateProbs(probs.listen + probs.speak, 0.0, probs.dismiss)
        overlap_ms = (self.end_ms if ended and self.end_ms else now_ms) - self.onset_ms
        decision = policy.on_overlap(probs, overlap_ms, ended)
        if decision is OverlapDecision.DISMISS and understanding == "speech" and self.speech:
            # about to be dismissed: what the LM reads in it, once ("wait, stop." is no
            # "uh-huh"); a yield never waits for this decode
            self.text = lm.overlap_words(np.concatenate(self.speech))
            if asks_to_stop(self.text):
                decision = policy.on_overlap(STOP_WORD, overlap_ms, ended)
        return decision
