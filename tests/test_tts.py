"""The Piper synthesizer with the real shipped voice (loaded once for the module).

Piper samples durations and timbre, so checks that compare two syntheses run
with noise_scale=0 and noise_w=0, which makes the output deterministic. Time
to first audio is measured and printed, never asserted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from duplex.audio import SAMPLE_RATE, Int16Array, pcm16_to_float
from duplex.ports import Synthesizer
from models.tts import DEVICES, PiperSynthesizer, cuda_available, trim_silence
from models.weights import ASR, VOICE, WeightsMissing

QUIET = {"noise_scale": 0.0, "noise_w": 0.0}
SENTENCE = "The weather tomorrow looks sunny with a light breeze in the afternoon."


def _voice_or_skip() -> None:
    try:
        VOICE.resolve()
    except WeightsMissing as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def tts() -> PiperSynthesizer:
    _voice_or_skip()
    return PiperSynthesizer()


def seconds(pcm: Int16Array) -> float:
    return pcm.size / SAMPLE_RATE


def sound_edges_ms(pcm: Int16Array, threshold: float = 0.001) -> tuple[float, float]:
    """Silence before the first and after the last sample above `threshold` (-60 dBFS)."""
    loud = np.flatnonzero(np.abs(pcm16_to_float(pcm)) > threshold)
    return loud[0] * 1000 / SAMPLE_RATE, (pcm.size - 1 - loud[-1]) * 1000 / SAMPLE_RATE


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


# no voice needed ------------------------------------------------------------


def test_trim_silence_keeps_the_asked_margins() -> None:
    rate = 1000
    signal = np.zeros(1000, dtype=np.float32)
    signal[300:500] = 0.5
    trimmed = trim_silence(signal, rate, lead_ms=20, tail_ms=50)
    assert trimmed.size == 20 + 200 + 50
    assert np.all(trimmed[:20] == 0) and np.all(trimmed[20:220] == 0.5)
    assert trim_silence(signal, rate, lead_ms=None, tail_ms=None).size == 1000
    assert trim_silence(signal, rate, lead_ms=1000, tail_ms=1000).size == 1000
    assert trim_silence(np.full(100, 1e-4, dtype=np.float32), rate, 20, 50).size == 0


def test_bad_arguments_say_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        PiperSynthesizer(device="tpu")
    with pytest.raises(ValueError, match="length_scale"):
        PiperSynthesizer(length_scale=0)
    with pytest.raises(ValueError, match="lead_ms"):
        PiperSynthesizer(lead_ms=-1)
    assert set(DEVICES) == {"auto", "cpu", "cuda"}


@pytest.mark.skipif(cuda_available(), reason="this onnxruntime has the CUDA provider")
def test_cuda_without_the_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="no CUDA provider"):
        PiperSynthesizer(device="cuda")


# the real voice ---------------------------------------------------------------


def test_it_is_a_synthesizer_for_the_core(tts: PiperSynthesizer) -> None:
    port: Synthesizer = tts
    assert port is tts
    assert tts.native_rate == 22_050
    assert tts.voice_name == "en_US-joe-medium"
    assert tts.device == ("cuda" if cuda_available() else "cpu")


def test_a_sentence_is_plausible_16khz_speech(tts: PiperSynthesizer) -> None:
    pcm = tts.synthesize(SENTENCE)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    per_char = seconds(pcm) / len(SENTENCE)
    assert 0.04 <= per_char <= 0.15, per_char
    samples = pcm16_to_float(pcm)
    rms = float(np.sqrt(np.mean(samples**2)))
    assert rms > 0.02, rms
    assert int(np.sum(np.abs(pcm.astype(np.int32)) >= 32767)) <= 3
    # most of the energy is in the speech band, not at the new Nyquist edge
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
    assert spectrum[(freqs > 80) & (freqs < 4000)].sum() > 0.8 * spectrum.sum()


def test_edge_silence_is_trimmed_to_the_margins(tts: PiperSynthesizer) -> None:
    assert tts.lead_ms is not None and tts.tail_ms is not None
    for text in ("What time is it?", "Okay, let me check that for you."):
        lead, tail = sound_edges_ms(tts.synthesize(text))
        # 5 ms of slack: the resampler's filter spreads the first sound a little
        assert lead <= tts.lead_ms + 5, (text, lead)
        assert tail <= tts.tail_ms + 5, (text, tail)


def test_empty_text_gives_empty_audio(tts: PiperSynthesizer) -> None:
    for text in ("", "   ", "\n\t"):
        pcm = tts.synthesize(text)
        assert pcm.dtype == np.int16 and pcm.size == 0
        assert list(tts.synthesize_stream(text)) == []


def test_length_scale_slows_speech_down(tts: PiperSynthesizer) -> None:
    normal = tts.synthesize(SENTENCE, length_scale=1.0, **QUIET)
    slow = tts.synthesize(SENTENCE, length_scale=1.5, **QUIET)
    ratio = seconds(slow) / seconds(normal)
    assert 1.3 < ratio < 1.7, ratio


def test_speed_divides_the_length_scale(tts: PiperSynthesizer) -> None:
    """A client's speed (the Realtime API's 0.25-1.5): 1.5 speaks in two thirds of the
    time, 0.5 in twice the time; the same audio as that length scale."""
    normal = tts.synthesize(SENTENCE, **QUIET)
    fast = tts.synthesize(SENTENCE, speed=1.5, **QUIET)
    assert 0.55 < seconds(fast) / seconds(normal) < 0.8, seconds(fast) / seconds(normal)
    slow = tts.synthesize(SENTENCE, speed=0.5, **QUIET)
    doubled = tts.synthesize(SENTENCE, length_scale=2 * tts.length_scale, **QUIET)
    assert np.array_equal(slow, doubled)
    with pytest.raises(ValueError, match="speed"):
        tts.synthesize(SENTENCE, speed=0)


def test_without_noise_synthesis_is_deterministic(tts: PiperSynthesizer) -> None:
    first = tts.synthesize("What time is it?", **QUIET)
    assert np.array_equal(first, tts.synthesize("What time is it?", **QUIET))


def test_sessions_synthesize_side_by_side_and_get_their_own_audio(
    tts: PiperSynthesizer,
) -> None:
    """Sessions share one voice; only its phonemizer is taken in turn. Four clauses made
    at once on four threads are the audio each makes alone."""
    texts = ["What time is it?", "It is noon.", "Hello there.", "The sky is blue today."]
    alone = [tts.synthesize(t, **QUIET) for t in texts]
    with ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(lambda t: tts.synthesize(t, **QUIET), texts))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))


def test_stream_yields_sentences_that_add_up_to_synthesize(tts: PiperSynthesizer) -> None:
    text = "Hello there. How are you doing today?"
    chunks = list(tts.synthesize_stream(text, **QUIET))
    assert len(chunks) >= 2
    assert all(c.dtype == np.int16 and c.size for c in chunks)
    assert np.array_equal(np.concatenate(chunks), tts.synthesize(text, **QUIET))
    # with Piper's sampling on, lengths vary by a few percent from run to run
    # (0.93 to 1.04 over 20 runs of this text); a lost sentence would be -45 %
    sampled = list(tts.synthesize_stream(text))
    assert len(sampled) >= 2
    assert abs(np.concatenate(sampled).size / tts.synthesize(text).size - 1) < 0.2


def test_stream_is_lazy(tts: PiperSynthesizer) -> None:
    stream: Iterator[Int16Array] = tts.synthesize_stream("One. Two. Three.")
    first = next(stream)
    assert first.size > 0
    assert len(list(stream)) == 2


def test_time_to_first_audio_is_measured(tts: PiperSynthesizer) -> None:
    for text in ("What time is it?", SENTENCE):
        started = time.perf_counter()
        stream = tts.synthesize_stream(text)
        first = next(stream)
        first_s = time.perf_counter() - started
        rest = list(stream)
        total_s = time.perf_counter() - started
        audio_s = seconds(first) + sum(seconds(c) for c in rest)
        print(
            f"\n{text!r}: first audio {first_s * 1000:.0f} ms, "
            f"{audio_s:.2f} s of audio, real-time factor {total_s / audio_s:.3f}"
        )
        assert first.size > 0


@pytest.fixture(scope="module")
def whisper() -> Any:
    try:
        path = ASR.resolve()
    except WeightsMissing as error:
        pytest.skip(str(error))
    faster_whisper = pytest.importorskip("faster_whisper")
    return faster_whisper.WhisperModel(str(path), device="cpu", compute_type="int8")


@pytest.mark.parametrize(
    "text",
    ["What time is it?", "Please turn the kitchen lights off before you leave."],
)
def test_round_trip_through_whisper(tts: PiperSynthesizer, whisper: Any, text: str) -> None:
    audio = pcm16_to_float(tts.synthesize(text))
    segments, _ = whisper.transcribe(
        audio, beam_size=1, language="en", condition_on_previous_text=False
    )
    heard = " ".join(segment.text for segment in segments)
    expected = words(text)
    found = [w for w in expected if w in words(heard)]
    assert len(found) >= 0.75 * len(expected), (text, heard)
    assert "time" in words(heard) or "time" not in expected, heard
