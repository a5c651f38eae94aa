"""Tests for duplex.audio: frames, chunk decoding, resampling, framing, the ring and WAV I/O.

Measured before choosing tolerances: soxr's streaming resampler is bit-identical
to one-shot `resample()` of the whole signal (max abs difference 0.0, equal
lengths) for chunks of 1..2000 samples at every supported rate, so the tests
below require exact equality (tolerance 0, in float32 and in PCM16 LSB).
"""

from __future__ import annotations

import math
import wave
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from duplex.audio import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    SUPPORTED_RATES,
    Float32Array,
    Frame,
    Framer,
    Int16Array,
    SampleFormat,
    StreamResampler,
    check_rate,
    decode_chunk,
    float_to_pcm16,
    frames_of,
    pcm16_to_float,
    read_wav,
    resample,
    write_wav,
)

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech"

# Streamed output vs one-shot output: measured max difference is 0, so hold it to 0.
STREAM_TOLERANCE = 0.0
FRAMER_TOLERANCE_LSB = 0

Chunk = bytes | npt.NDArray[Any]


# --------------------------------------------------------------------------- helpers


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def expected_len(n: int, in_rate: int, out_rate: int) -> int:
    """soxr's output length for n input samples: n * out / in, halves rounded up."""
    return n if in_rate == out_rate else round_half_up(Fraction(n * out_rate, in_rate))


def chunk_sizes(n: int, pattern: int | str, seed: int = 0) -> Iterator[tuple[int, int]]:
    """(start, stop) pairs covering range(n): fixed size, or seeded random sizes 1..1000."""
    rng = np.random.default_rng(seed)
    start = 0
    while start < n:
        size = int(rng.integers(1, 1001)) if pattern == "random" else int(pattern)
        yield start, min(n, start + size)
        start += size


def make_signal(n: int, channels: int, seed: int) -> Float32Array:
    """n sample frames of interleaved test audio: tones plus noise, within [-0.9, 0.9]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16_000.0
    out = np.empty((n, channels), dtype=np.float32)
    for c in range(channels):
        tone = 0.4 * np.sin(2 * np.pi * (300 + 250 * c) * t) + 0.2 * rng.standard_normal(n)
        out[:, c] = np.clip(tone, -0.9, 0.9)
    return out


def encode(signal: Float32Array, fmt: str) -> tuple[SampleFormat, Callable[[int, int], Chunk]]:
    """The signal as (sample_format, slicer) for fmt in pcm16-bytes/pcm16-array/float32-..."""
    n, channels = signal.shape
    if fmt.startswith("pcm16"):
        data: npt.NDArray[Any] = np.round(signal * 32767).astype(np.int16)
        sample_format: SampleFormat = "pcm16"
    else:
        data = signal.astype(np.float32)
        sample_format = "float32"
    if fmt.endswith("bytes"):
        raw = data.astype("<i2" if sample_format == "pcm16" else "<f4").tobytes()
        width = raw and len(raw) // n
        return sample_format, lambda i, j: raw[i * width : j * width]
    view = data[:, 0] if channels == 1 else data  # mono as 1-D, stereo as (n, 2)
    return sample_format, lambda i, j: view[i:j]


def reference_mono(signal: Float32Array, fmt: str) -> Float32Array:
    """The whole signal decoded and downmixed in one go, independently of decode_chunk."""
    if fmt.startswith("pcm16"):
        samples = np.round(signal * 32767).astype(np.int16).astype(np.float32) / np.float32(32768)
    else:
        samples = signal.astype(np.float32)
    mono: Float32Array = samples.mean(axis=1, dtype=np.float32)
    return mono


def concat(frames: list[Frame]) -> Int16Array:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([f.pcm for f in frames])


def pad_to_frames(pcm: Int16Array) -> Int16Array:
    padded = np.zeros(-(-pcm.size // FRAME_SAMPLES) * FRAME_SAMPLES, dtype=np.int16)
    padded[: pcm.size] = pcm
    return padded


def assert_frames_ok(frames: list[Frame], first_index: int) -> None:
    assert [f.index for f in frames] == list(range(first_index, first_index + len(frames)))
    for f in frames:
        assert f.pcm.dtype == np.int16
        assert f.pcm.shape == (FRAME_SAMPLES,)


def same_frames(a: list[Frame], b: list[Frame]) -> bool:
    return len(a) == len(b) and all(
        x.index == y.index and np.array_equal(x.pcm, y.pcm) for x, y in zip(a, b, strict=True)
    )


def tone(freq: float, rate: int, seconds: float) -> Float32Array:
    t = np.arange(int(rate * seconds)) / rate
    out: Float32Array = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return out


def peak_hz(samples: npt.NDArray[Any], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


# --------------------------------------------------------------------------- Frame


def test_frame_times_silence_bytes_and_samples() -> None:
    frame = Frame.silence(7)
    assert frame.index == 7
    assert (frame.start_ms, frame.end_ms) == (140, 160)
    assert frame.end_ms - frame.start_ms == FRAME_MS
    assert frame.pcm.dtype == np.int16 and not frame.pcm.any()

    pcm = np.arange(-32768, 32768, 205, dtype=np.int16)[:FRAME_SAMPLES]
    pcm[0], pcm[1] = -32768, 32767
    frame = Frame(3, pcm)
    data = frame.to_bytes()
    assert len(data) == 2 * FRAME_SAMPLES
    assert np.array_equal(np.frombuffer(data, dtype="<i2"), pcm)
    assert Frame(3, np.frombuffer(data, dtype="<i2").astype(np.int16)).pcm.tolist() == pcm.tolist()

    samples = frame.samples()
    assert samples.dtype == np.float32
    assert samples.min() == -1.0
    assert samples.max() == np.float32(32767 / 32768) < 1.0
    assert np.array_equal(float_to_pcm16(samples), pcm)


@pytest.mark.parametrize(
    "pcm",
    [
        np.zeros(FRAME_SAMPLES - 1, dtype=np.int16),
        np.zeros(FRAME_SAMPLES + 1, dtype=np.int16),
        np.zeros(FRAME_SAMPLES, dtype=np.float32),
        np.zeros(FRAME_SAMPLES, dtype=np.int32),
        np.zeros((1, FRAME_SAMPLES), dtype=np.int16),
        [0] * FRAME_SAMPLES,
    ],
    ids=["short", "long", "float32", "int32", "2d", "list"],
)
def test_frame_rejects_bad_pcm(pcm: Any) -> None:
    with pytest.raises(ValueError, match="frame holds"):
        Frame(0, pcm)


def test_pcm16_float_conversions() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    floats = pcm16_to_float(every)
    assert floats.dtype == np.float32
    assert np.array_equal(float_to_pcm16(floats), every)
    clipped = float_to_pcm16(np.array([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=np.float32))
    assert clipped.tolist() == [-32768, -32768, 0, 32767, 32767]


# --------------------------------------------------------------------------- decoding


def test_check_rate() -> None:
    for rate in SUPPORTED_RATES:
        assert check_rate(rate) == rate
    with pytest.raises(ValueError, match="unsupported sample rate 12345"):
        check_rate(12345)


def test_decode_chunk_forms_agree() -> None:
    stereo = np.array([[1000, -3000], [32767, 32767], [-32768, -32768]], dtype=np.int16)
    expected = np.array([-1000, 32767, -32768], dtype=np.float32) / 32768
    for chunk in (stereo, stereo.reshape(-1), stereo.astype("<i2").tobytes()):
        assert np.array_equal(decode_chunk(chunk, "pcm16", channels=2), expected)
    as_float = stereo.astype(np.float32) / 32768
    for fchunk in (as_float, as_float.reshape(-1), as_float.astype("<f4").tobytes()):
        assert np.array_equal(decode_chunk(fchunk, "float32", channels=2), expected)
    mono = np.array([5, -5], dtype=np.int16)
    for mchunk in (mono, mono[:, None], bytearray(mono.tobytes()), memoryview(mono.tobytes())):
        assert np.array_equal(decode_chunk(mchunk, "pcm16"), mono / np.float32(32768))


# --------------------------------------------------------------------------- resampling

RATE_PAIRS = [(24000, 16000), (16000, 24000), (22050, 16000), (48000, 16000), (16000, 22050)]


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_stream_resampler_matches_one_shot(in_rate: int, out_rate: int) -> None:
    signal = make_signal(in_rate // 2 + 101, 1, seed=in_rate + out_rate)[:, 0]
    whole = resample(signal, in_rate, out_rate)
    assert whole.size == expected_len(signal.size, in_rate, out_rate)
    for pattern in ("random", 1, 7, 319, 1000):
        n = signal.size if pattern != 1 else 2000  # chunks of one sample: a shorter signal
        part = signal[:n]
        stream = StreamResampler(in_rate, out_rate)
        pieces = [stream.process(part[i:j]) for i, j in chunk_sizes(n, pattern, seed=n)]
        streamed = np.concatenate([*pieces, stream.flush()])
        target = whole if n == signal.size else resample(part, in_rate, out_rate)
        assert streamed.dtype == np.float32
        assert streamed.size == target.size, pattern
        assert float(np.abs(streamed - target).max()) <= STREAM_TOLERANCE, pattern


def test_stream_resampler_is_reusable_after_flush() -> None:
    signal = make_signal(3000, 1, seed=5)[:, 0]
    stream = StreamResampler(24000, 16000)
    first = np.concatenate([stream.process(signal), stream.flush()])
    second = np.concatenate([stream.process(signal), stream.flush()])
    assert np.array_equal(first, second)
    assert np.array_equal(first, resample(signal, 24000, 16000))


def test_same_rate_is_identity() -> None:
    signal = make_signal(1000, 1, seed=1)[:, 0]
    stream = StreamResampler(16000, 16000)
    assert np.array_equal(stream.process(signal), signal)
    assert stream.flush().size == 0
    assert np.array_equal(resample(signal, 16000, 16000), signal)


@pytest.mark.parametrize(("in_rate", "out_rate"), [*RATE_PAIRS, (8000, 16000), (44100, 16000)])
def test_resampled_tone_keeps_its_frequency(in_rate: int, out_rate: int) -> None:
    freq = 1000.0
    signal = tone(freq, in_rate, 0.5)
    stream = StreamResampler(in_rate, out_rate)
    pieces = [stream.process(signal[i:j]) for i, j in chunk_sizes(signal.size, "random")]
    out = np.concatenate([*pieces, stream.flush()])
    assert out.size == expected_len(signal.size, in_rate, out_rate)
    bin_hz = out_rate / out.size
    assert abs(peak_hz(out, out_rate) - freq) <= bin_hz
    steady = out[out.size // 4 : 3 * out.size // 4]  # amplitude survives too
    assert 0.48 < float(np.abs(steady).max()) < 0.52


def test_resampler_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="unsupported sample rate"):
        StreamResampler(12345, 16000)
    with pytest.raises(ValueError, match="unsupported sample rate"):
        StreamResampler(16000, 12345)
    with pytest.raises(ValueError, match="unsupported sample rate"):
        resample(np.zeros(10, dtype=np.float32), 16000, 12345)


# --------------------------------------------------------------------------- Framer

FORMATS = ["pcm16-bytes", "pcm16-array", "float32-bytes", "float32-array"]
PATTERNS: list[int | str] = [1, 7, 319, 321, 1000, "random"]


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_framer_odd_chunks_match_one_shot(rate: int, fmt: str, channels: int) -> None:
    n = rate // 10 + 37  # 100 ms and a bit, so the last frame is partial
    signal = make_signal(n, channels, seed=rate + channels)
    sample_format, piece = encode(signal, fmt)

    mono = reference_mono(signal, fmt)
    out_len = expected_len(n, rate, SAMPLE_RATE)
    expected = pad_to_frames(float_to_pcm16(resample(mono, rate, SAMPLE_RATE)))
    assert expected.size == -(-out_len // FRAME_SAMPLES) * FRAME_SAMPLES
    # ceil(n * 16000 / rate / 320) is off by one frame where soxr rounds a length down
    # across a frame boundary (it happens at 44.1 and 48 kHz), never by more.
    naive = math.ceil(Fraction(n * SAMPLE_RATE, rate) / FRAME_SAMPLES)
    assert abs(expected.size // FRAME_SAMPLES - naive) <= 1

    for pattern in PATTERNS:
        first_index = 1000 + len(str(pattern))
        framer = Framer(rate, sample_format, channels, first_index=first_index)
        frames: list[Frame] = []
        for i, j in chunk_sizes(n, pattern, seed=rate):
            frames += framer.push(piece(i, j))
        frames += framer.flush()
        assert_frames_ok(frames, first_index)
        assert framer.next_index == first_index + len(frames)
        got = concat(frames)
        assert got.size == expected.size, pattern
        diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
        assert int(diff.max()) <= FRAMER_TOLERANCE_LSB, pattern
        if rate == SAMPLE_RATE and fmt.startswith("pcm16") and channels == 1:
            pcm = np.round(signal[:, 0] * 32767).astype(np.int16)
            assert np.array_equal(got, pad_to_frames(pcm))
            assert same_frames(frames, list(frames_of(pcm, first_index)))


def test_framer_exact_frame_count_at_16k() -> None:
    for n in (1, 319, 320, 321, 640, 1000):
        pcm = np.arange(n, dtype=np.int16)
        frames = list(frames_of(pcm, first_index=5))
        assert len(frames) == math.ceil(n / FRAME_SAMPLES)
        assert_frames_ok(frames, 5)
        assert np.array_equal(concat(frames)[:n], pcm)
        assert not concat(frames)[n:].any()
    assert list(frames_of(np.zeros(0, dtype=np.int16))) == []


def test_framer_takes_a_new_stream_after_flush() -> None:
    signal = make_signal(2500, 1, seed=9)[:, 0]
    framer = Framer(24000, "float32")
    first = framer.push(signal) + framer.flush()
    second = framer.push(signal) + framer.flush()
    fresh = Framer(24000, "float32", first_index=len(first))
    assert same_frames(second, fresh.push(signal) + fresh.flush())
    assert framer.flush() == []


def test_framer_input_arrays_are_not_modified_or_aliased() -> None:
    chunk = make_signal(700, 1, seed=3)[:, 0]
    before = chunk.copy()
    framer = Framer(SAMPLE_RATE, "float32")
    frames = framer.push(chunk) + framer.flush()
    assert np.array_equal(chunk, before)
    chunk[:] = 0
    assert concat(frames)[:700].any()


NAN_BYTES = np.array([0.1, np.nan], dtype="<f4").tobytes()
INF_BYTES = np.array([np.inf, 0.1], dtype="<f4").tobytes()

BAD_CHUNKS: list[tuple[str, SampleFormat, int, Any, str]] = [
    ("odd-bytes", "pcm16", 1, b"\x00" * 321, "whole number"),
    ("stereo-bytes", "pcm16", 2, b"\x00" * 6, "whole number"),
    ("float-bytes", "float32", 1, b"\x00" * 10, "whole number"),
    ("nan-bytes", "float32", 1, NAN_BYTES, "NaN or infinite"),
    ("inf-bytes", "float32", 1, INF_BYTES, "NaN or infinite"),
    ("nan-array", "float32", 1, np.array([0.0, np.nan], dtype=np.float32), "NaN or infinite"),
    ("inf-array", "float32", 2, np.array([[0.0, -np.inf]], dtype=np.float32), "NaN or infinite"),
    ("empty-bytes", "pcm16", 1, b"", "empty"),
    ("empty-array", "pcm16", 1, np.zeros(0, dtype=np.int16), "empty"),
    ("empty-float", "float32", 1, np.zeros((0, 1), dtype=np.float32), "empty"),
    ("float64", "float32", 1, np.zeros(320, dtype=np.float64), "must be float32"),
    ("int32", "pcm16", 1, np.zeros(320, dtype=np.int32), "must be int16"),
    ("float-for-pcm", "pcm16", 1, np.zeros(320, dtype=np.float32), "must be int16"),
    ("pcm-for-float", "float32", 1, np.zeros(320, dtype=np.int16), "must be float32"),
    ("3d", "pcm16", 1, np.zeros((10, 1, 1), dtype=np.int16), "shape"),
    ("wrong-channels", "pcm16", 2, np.zeros((10, 3), dtype=np.int16), "shape"),
    ("odd-interleaved", "float32", 2, np.zeros(11, dtype=np.float32), "channels"),
]


@pytest.mark.parametrize("rate", [16000, 24000])
@pytest.mark.parametrize(
    ("sample_format", "channels", "bad", "message"),
    [case[1:] for case in BAD_CHUNKS],
    ids=[case[0] for case in BAD_CHUNKS],
)
def test_bad_chunk_raises_and_leaves_framer_unchanged(
    rate: int, sample_format: SampleFormat, channels: int, bad: Any, message: str
) -> None:
    signal = make_signal(1500, channels, seed=11)
    fmt = f"{sample_format}-array"
    _, piece = encode(signal, fmt)

    clean = Framer(rate, sample_format, channels, first_index=3)
    expected = clean.push(piece(0, 777)) + clean.push(piece(777, 1500)) + clean.flush()

    framer = Framer(rate, sample_format, channels, first_index=3)
    frames = framer.push(piece(0, 777))
    index = framer.next_index
    with pytest.raises(ValueError, match=message) as error:
        framer.push(bad)
    assert "\n" not in str(error.value)
    assert framer.next_index == index
    frames += framer.push(piece(777, 1500)) + framer.flush()
    assert same_frames(frames, expected)


def test_framer_rejects_bad_construction() -> None:
    with pytest.raises(ValueError, match="unsupported sample rate 12345"):
        Framer(12345)
    with pytest.raises(ValueError, match="unsupported sample format"):
        Framer(16000, "pcm8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        Framer(16000, "pcm16", channels=0)
    with pytest.raises(ValueError, match="unsupported sample format"):
        decode_chunk(b"\x00\x00", "pcm8")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- WAV files


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = np.round(make_signal(12345, 1, seed=4)[:, 0] * 32767).astype(np.int16)
    pcm[:2] = (-32768, 32767)
    write_wav(tmp_path / "a.wav", pcm)
    with wave.open(str(tmp_path / "a.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
    back = read_wav(tmp_path / "a.wav")
    assert back.dtype == np.int16
    assert np.array_equal(back, pcm)

    (tmp_path / "a.raw").write_bytes(pcm.astype("<i2").tobytes() + b"\x01")  # stray byte
    assert np.array_equal(read_wav(tmp_path / "a.raw"), pcm)


def test_stereo_wav_is_downmixed(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    left = rng.integers(-20000, 20000, 4000).astype(np.int16)
    right = rng.integers(-20000, 20000, 4000).astype(np.int16)
    with wave.open(str(tmp_path / "s.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(np.stack([left, right], axis=1).astype("<i2").tobytes())
    mono = read_wav(tmp_path / "s.wav")
    assert mono.dtype == np.int16 and mono.size == 4000
    average = (left.astype(np.float64) + right) / 2
    assert float(np.abs(mono - average).max()) <= 0.5


def test_24k_wav_is_resampled(tmp_path: Path) -> None:
    signal = tone(440.0, 24000, 1.0003)  # 24007 samples: not a whole number of frames
    write_wav(tmp_path / "t.wav", float_to_pcm16(signal), rate=24000)
    pcm = read_wav(tmp_path / "t.wav")
    assert pcm.dtype == np.int16
    assert pcm.size == expected_len(signal.size, 24000, 16000)
    assert abs(peak_hz(pcm.astype(np.float64), 16000) - 440.0) <= 16000 / pcm.size
    up = read_wav(tmp_path / "t.wav", rate=48000)
    assert up.size == 2 * signal.size


def test_read_wav_rejects_8_bit(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "b.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(16000)
        wav.writeframes(bytes(100))
    with pytest.raises(ValueError, match="16-bit"):
        read_wav(tmp_path / "b.wav")


@pytest.mark.skipif(not SPEECH.is_dir(), reason=f"no recordings at {SPEECH}")
@pytest.mark.parametrize(("name", "seconds"), [("cards_001.wav", 1.095), ("goforward.raw", 2.786)])
def test_real_recordings_load(name: str, seconds: float) -> None:
    path = SPEECH / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    pcm = read_wav(path)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert abs(pcm.size / SAMPLE_RATE - seconds) < 0.01
    if name == "goforward.raw":
        assert pcm.size == 89160 // 2
    level = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert 100 < level < 20000  # speech, not silence and not clipping noise
    frames = list(frames_of(pcm))
    assert len(frames) == math.ceil(pcm.size / FRAME_SAMPLES)
    assert np.array_equal(concat(frames)[: pcm.size], pcm)
