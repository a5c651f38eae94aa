"""The acoustic end-of-turn model (Smart Turn v3.2) on real recordings.

Real speech from ../shared/speech (skipped where absent): a finished command
sounds finished; the same speaker pausing inside a list sounds less so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.real_speech import NATURAL_PAUSE_MS, gaps, silence_mask
from duplex.audio import SAMPLE_RATE, Int16Array, read_wav
from models.turn_audio import SmartTurn

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
TRAILING_MS = 40  # what the session hears of a pause when it asks: the decode's moment


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn()


def recording(name: str) -> Int16Array:
    path = SPEECH / name
    if not path.exists():
        pytest.skip(f"no real speech recordings at {SPEECH}")
    return read_wav(path)


def until(pcm: Int16Array, ms: int) -> Int16Array:
    return pcm[: ms * SAMPLE_RATE // 1000]


@pytest.mark.parametrize("name", ["cards_001.wav", "cards_003.wav", "cards_005.wav"])
def test_a_finished_command_sounds_finished(model: SmartTurn, name: str) -> None:
    pcm = recording(name)
    [*_, (end, _)] = gaps(silence_mask(pcm), 0, pcm.size * 1000 // SAMPLE_RATE + 1, 1)
    assert model.end_probability(until(pcm, end + TRAILING_MS)) > 0.8


def test_pauses_inside_a_spoken_list_sound_less_finished_than_its_end(model: SmartTurn) -> None:
    # "8 of spades, 4 of clubs, 7 of hearts": two pauses, then the end
    pcm = recording("cards_005.wav")
    total = pcm.size * 1000 // SAMPLE_RATE
    inside = [
        a
        for a, b in gaps(silence_mask(pcm), 0, total, NATURAL_PAUSE_MS // 2)
        if 300 < a < total - 400
    ]
    assert inside, "the list's pauses were not found"
    at_pauses = [model.end_probability(until(pcm, a + TRAILING_MS)) for a in inside]
    at_end = model.end_probability(pcm)
    assert min(at_pauses) < 0.5 < at_end
    assert float(np.mean(at_pauses)) < at_end


def test_the_estimate_runs_off_the_callers_thread(model: SmartTurn) -> None:
    pcm = recording("cards_001.wav")
    pending = model.start(pcm)
    assert abs(pending.result() - model.end_probability(pcm)) < 1e-6
