"""The acoustic end-of-turn model (Smart Turn v3.2) on real recordings.

Real speech from ../shared/speech (skipped where absent): a finished command
sounds finished, and more so than the same command cut off part way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.real_speech import gaps, silence_mask
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


def voice_end_ms(pcm: Int16Array) -> int:
    """Where the recording's last word ends (the start of its trailing silence)."""
    total = pcm.size * 1000 // SAMPLE_RATE
    *_, (start, end) = gaps(silence_mask(pcm), 0, total, 1)
    return start if end >= total - 10 else total


COMMANDS = ["cards_001.wav", "cards_003.wav", "cards_005.wav", "goforward.raw"]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_finished_command_sounds_finished(model: SmartTurn, name: str) -> None:
    pcm = recording(name)
    assert model.end_probability(until(pcm, voice_end_ms(pcm) + TRAILING_MS)) > 0.9


def test_finished_commands_sound_more_finished_than_their_truncations(model: SmartTurn) -> None:
    # pooled over the commands: cut at a word boundary, a list ("8 of spades, 4 of
    # clubs") or "go forward" is itself a finished phrase, and which of one command's
    # cuts scores above its whole changes with the CPU's int8 kernels
    finished, cut = [], []
    for name in COMMANDS:
        pcm = recording(name)
        end = voice_end_ms(pcm)
        finished.append(model.end_probability(until(pcm, end + TRAILING_MS)))
        cut += [model.end_probability(until(pcm, round(end * f))) for f in (0.3, 0.5, 0.7)]
    assert float(np.mean(finished)) > float(np.mean(cut))


def test_the_estimate_runs_off_the_callers_thread(model: SmartTurn) -> None:
    pcm = recording("cards_001.wav")
    pending = model.start(pcm)
    assert abs(pending.result() - model.end_probability(pcm)) < 1e-6
