"""Driving a session over a recording: fast mode charges the compute, ideal mode does not."""

from __future__ import annotations

import time

from duplex.audio import frames_of
from duplex.clock import Clock
from duplex.config import PolicySettings
from duplex.drive import drive
from duplex.session import Session
from duplex.vad import VadTracker
from tests.fakes import EnergyVad, ScriptedLM, ScriptedRecognizer, ToneSynth, user_audio

QUESTION = [(0, 300, "what"), (300, 600, "time"), (600, 800, "is"), (800, 1000, "it?")]


class SlowRecognizer(ScriptedRecognizer):
    """A recognizer whose final pass at the end of speech takes 150 ms of compute."""

    def finish(self) -> str:
        time.sleep(0.15)
        return super().finish()


def first_audio_ms(fast: bool, ideal: bool) -> int:
    def session(clock: Clock) -> Session:
        return Session(
            vad=VadTracker(EnergyVad(), start_ms=60, end_ms=200, pre_roll_ms=200),
            recognizer=SlowRecognizer(QUESTION),
            lm=ScriptedLM(["It is noon."]),
            synthesizer=ToneSynth(),
            clock=clock,
            settings=PolicySettings(min_silence_ms=100),
        )

    result = drive(session, frames_of(user_audio([(0, 1000)], 3000)), fast=fast, ideal=ideal)
    return min(start for start, _ in result.spans.values())


def test_fast_mode_charges_the_final_decode_and_ideal_mode_does_not() -> None:
    charged, free = first_audio_ms(True, False), first_audio_ms(True, True)
    assert free == 1200  # the decision's frame: 200 ms of silence after the question
    assert charged >= free + 140  # the 150 ms the decode took, on the audio timeline
