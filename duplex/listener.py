"""What the session hears of the user: the recognizer's feed, the turn's sound, the
acoustic estimate of how the voice ended, and the speech path's feed.

The session decides what the words mean for the turn; the listener only
keeps the audio where each model needs it. Voiced audio goes to the
recognizer at once. Inside speech, a short silence goes too (the recognizer
decodes at it: if the turn ends there, its final pass is already done) and
the rest of the silence is held back: if the voice comes back, the held
frames follow it; if the VAD ends the utterance, they are dropped.
"""

from __future__ import annotations

import contextlib
from collections import deque

import numpy as np

from duplex.audio import FRAME_MS, Float32Array, Frame, Int16Array
from duplex.config import PolicySettings
from duplex.ports import PendingEnd, Recognizer, SpeechListener, TurnEndAudio
from duplex.vad import VadStep

# the user's audio the acoustic end-of-turn estimate hears: the turn's last 8 s
HEARD_FRAMES = 8000 // FRAME_MS


class Listener:
    """The user's audio, routed to the recognizer, the acoustic model and the speech path."""

    def __init__(
        self,
        recognizer: Recognizer,
        turn_audio: TurnEndAudio | None,
        speech: SpeechListener | None,
        settings: PolicySettings,
    ) -> None:
        self.recognizer = recognizer
        self._turn_audio = turn_audio
        self._speech = speech
        self._pause_frames = settings.pause_decode_ms // FRAME_MS
        self._max_silence_ms = settings.max_silence_ms
        # unvoiced frames inside speech, and those held back from the recognizer
        self._unvoiced = 0
        self._held: list[Frame] = []
        # the turn's sound (its last 8 s), and what the acoustic model makes of it
        self._heard: deque[Int16Array] = deque(maxlen=HEARD_FRAMES)
        self.ending: PendingEnd | None = None
        # the speech path hears from an onset until the longest silence the policy waits
        self.feeding = False
        self._unvoiced_fed = 0

    # the recognizer and the turn's sound -------------------------------------------

    def keep(self, frame: Frame) -> None:
        """A frame of the turn (or of words over the answer), for the acoustic estimate."""
        self._heard.append(frame.pcm)

    def speech_started(self, pre_roll: tuple[Frame, ...], new_turn: bool) -> None:
        """The VAD heard an onset: the frames just before it go to the recognizer too."""
        self.ending = None
        if new_turn:
            self._heard.clear()
        for f in pre_roll:
            self.recognizer.accept(f)
            self._heard.append(f.pcm)
        self._unvoiced, self._held = 0, []

    def voiced(self, frame: Frame) -> None:
        """The voice goes on: what was held back follows, and the pause's verdict is void."""
        self.ending = None
        for held in self._held:
            self.recognizer.accept(held)
        self._held, self._unvoiced = [], 0
        self.recognizer.accept(frame)

    def unvoiced(self, frame: Frame) -> bool:
        """A silent frame inside speech; True on the frame the recognizer should decode
        the pause at."""
        self._unvoiced += 1
        if self._unvoiced > self._pause_frames:
            self._held.append(frame)
            return False
        self.recognizer.accept(frame)
        return self._unvoiced == self._pause_frames

    def speech_stopped(self) -> None:
        """The VAD ended the utterance: the silence held back is its hangover, unneeded."""
        self._held = []

    def hear_ending(self) -> None:
        """Ask the acoustic model how the voice ended, once per pause (it is dear: 200-300
        ms a call on 2 AVX2 cores), on its own thread."""
        if self._turn_audio is None or self.ending is not None or not self._heard:
            return
        self.ending = self._turn_audio.start(np.concatenate(self._heard))

    def p_audio(self, wait: bool = False) -> float | None:
        """The acoustic estimate, once it is here (`wait`: wait for it)."""
        ending = self.ending
        return ending.result() if ending is not None and (wait or ending.done()) else None

    def turn_taken(self) -> None:
        """The turn is over: its sound and its verdict are forgotten."""
        self.ending = None
        self._heard.clear()
        self.feeding = False

    def reset(self) -> None:
        """Everything forgotten (a model failed): the next turn starts afresh."""
        self.turn_taken()
        self._held, self._unvoiced, self._unvoiced_fed = [], 0, 0
        for model in (self.recognizer, self._speech):  # each may be what broke: each alone
            if model is not None:
                with contextlib.suppress(Exception):
                    model.reset()

    # the speech path ------------------------------------------------------------------

    def feed_speech(self, frame: Frame, vad: VadStep, wanted: bool) -> list[Float32Array]:
        """The speech path's embeddings for this frame. It hears a turn from its onset,
        pauses and the silence after it included (that silence is what its head reads as
        an end), up to the longest silence the policy waits. `wanted`: at an onset,
        whether the session listens to this speech (a turn, or words over the answer)."""
        if self._speech is None:
            return []
        if vad.started is not None and not self.feeding:
            if not wanted:
                return []
            self._speech.reset()
            self.feeding = True
            frames: tuple[Frame, ...] = vad.pre_roll
        elif self.feeding:
            frames = (frame,)
        else:
            return []
        heard = [e for e in (self._speech.accept(f) for f in frames) if e is not None]
        self._unvoiced_fed = 0 if vad.voiced else self._unvoiced_fed + 1
        if self._unvoiced_fed * FRAME_MS >= self._max_silence_ms:
            self.feeding = False
        return heard
