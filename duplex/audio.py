"""Audio frames and the edges that produce them.

The core speaks one format only: 20 ms frames of mono PCM16 at 16 kHz, each
with its index on the input timeline. Everything else (other rates, float
samples, stereo, odd chunk sizes) is converted here, at the edge, so the TDM
loop never sees it.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

SAMPLE_RATE = 16_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 320

SUPPORTED_RATES = (8_000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
SampleFormat = Literal["pcm16", "float32"]
_BYTES_PER_SAMPLE = {"pcm16": 2, "float32": 4}

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Frame:
    """20 ms of 16 kHz mono PCM16; `index` places it on the input timeline."""

    index: int
    pcm: Int16Array

    def __post_init__(self) -> None:
        if not isinstance(self.pcm, np.ndarray):
            raise ValueError(f"a frame holds a numpy int16 array, got {type(self.pcm).__name__}")
        if self.pcm.dtype != np.int16 or self.pcm.shape != (FRAME_SAMPLES,):
            raise ValueError(
                f"a frame holds {FRAME_SAMPLES} int16 samples, "
                f"got {self.pcm.dtype} {self.pcm.shape}"
            )

    @property
    def start_ms(self) -> int:
        return self.index * FRAME_MS

    @property
    def end_ms(self) -> int:
        return (self.index + 1) * FRAME_MS

    def samples(self) -> Float32Array:
        """The samples as float32 in [-1, 1), the form the neural models want."""
        return pcm16_to_float(self.pcm)

    def to_bytes(self) -> bytes:
        return self.pcm.astype("<i2").tobytes()

    @classmethod
    def silence(cls, index: int) -> Frame:
        return cls(index, np.zeros(FRAME_SAMPLES, dtype=np.int16))


def check_rate(rate: int) -> int:
    """Reject sample rates the edges do not convert, with one clear line."""
    if rate not in SUPPORTED_RATES:
        raise ValueError(
            f"unsupported sample rate {rate} Hz; use one of {', '.join(map(str, SUPPORTED_RATES))}"
        )
    return rate


def voiced_span(pcm: Int16Array, floor_db: float = -40.0) -> tuple[int, int]:
    """First and last 20 ms frame whose level is within `floor_db` of the loudest (ms):
    where the voice in a recording begins and ends."""
    frames = pcm[: pcm.size // FRAME_SAMPLES * FRAME_SAMPLES].astype(np.float64)
    frames = frames.reshape(-1, FRAME_SAMPLES) if frames.size else frames.reshape(0, FRAME_SAMPLES)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    if rms.size == 0:
        return 0, 0
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > floor_db)
    return int(loud[0]) * FRAME_MS, int(loud[-1] + 1) * FRAME_MS


def rms_db(samples: Int16Array) -> float:
    """Level in dB relative to full scale (-120 for silence)."""
    if samples.size == 0:
        return -120.0
    power = float(np.mean((samples.astype(np.float64) / 32768.0) ** 2))
    return 10 * math.log10(power) if power > 1e-12 else -120.0


def pcm16_to_float(pcm: Int16Array) -> Float32Array:
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def float_to_pcm16(samples: npt.NDArray[np.floating]) -> Int16Array:
    """Clip and round float samples in [-1, 1] to PCM16."""
    scaled = np.clip(np.asarray(samples, dtype=np.float64) * 32768.0, -32768, 32767)
    return np.round(scaled).astype(np.int16)


def decode_chunk(
    chunk: bytes | bytearray | memoryview | npt.NDArray[np.generic],
    sample_format: SampleFormat,
    channels: int = 1,
) -> Float32Array:
    """Validate one chunk of interleaved audio and return mono float32 samples.

    Raises ValueError for anything a peer might get wrong: empty chunks, a byte
    count that is not whole samples, the wrong dtype, NaN or infinite values.
    """
    if sample_format not in _BYTES_PER_SAMPLE:
        raise ValueError(f"unsupported sample format {sample_format!r}; use pcm16 or float32")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    if isinstance(chunk, bytes | bytearray | memoryview):
        raw = bytes(chunk)
        width = _BYTES_PER_SAMPLE[sample_format] * channels
        if not raw:
            raise ValueError("empty audio chunk")
        if len(raw) % width:
            raise ValueError(
                f"{len(raw)} bytes is not a whole number of {sample_format} samples "
                f"({width} bytes per sample across {channels} channel(s))"
            )
        dtype = "<i2" if sample_format == "pcm16" else "<f4"
        array: npt.NDArray[np.generic] = np.frombuffer(raw, dtype=dtype)
    else:
        array = np.asarray(chunk)
        if array.size == 0:
            raise ValueError("empty audio chunk")
        expected = np.int16 if sample_format == "pcm16" else np.float32
        if array.dtype != expected:
            raise ValueError(
                f"{sample_format} audio must be {np.dtype(expected)}, got {array.dtype}"
            )
        if array.ndim == 2 and array.shape[1] == channels:
            array = array.reshape(-1)
        elif array.ndim != 1:
            raise ValueError(f"audio must be 1-D or (n, {channels}), got shape {array.shape}")
        if array.size % channels:
            raise ValueError(f"{array.size} samples do not split into {channels} channels")
    if sample_format == "pcm16":
        samples = pcm16_to_float(array.astype(np.int16, copy=False))
    else:
        samples = array.astype(np.float32, copy=False)
        if not np.all(np.isfinite(samples)):
            raise ValueError("audio contains NaN or infinite samples")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


class StreamResampler:
    """Chunked resampling with soxr that matches one-shot resampling.

    soxr's streaming mode keeps the filter state between chunks, so the
    concatenated output (after `flush()`) is bit-identical to `resample()` of
    the whole signal, whatever the chunk sizes: measured max difference 0.0 and
    equal lengths for chunks of 1 to 2000 samples at every supported rate, and
    the tests hold it to exact equality. The output has round(n * out / in)
    samples (halves rounded up); only the filter delay is emitted later, and
    `flush()` releases it and readies the resampler for a fresh stream.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = check_rate(in_rate)
        self.out_rate = check_rate(out_rate)
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        )

    def process(self, samples: Float32Array) -> Float32Array:
        if self._stream is None:
            return samples
        out: Float32Array = self._stream.resample_chunk(samples, last=False)
        return out

    def flush(self) -> Float32Array:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out: Float32Array = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()  # soxr refuses input after `last=True` until cleared
        return out


def resample(samples: Float32Array, in_rate: int, out_rate: int) -> Float32Array:
    """One-shot resampling of a whole signal."""
    check_rate(in_rate)
    check_rate(out_rate)
    if in_rate == out_rate:
        return samples
    out: Float32Array = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return out


class Framer:
    """Turns chunks of any size, rate and sample format into numbered frames.

    Invalid chunks raise ValueError and leave the framer exactly as it was, so
    a session survives a peer that sends one bad message. After `flush()` the
    framer takes a new stream, numbering on from `next_index`.
    """

    def __init__(
        self,
        rate: int = SAMPLE_RATE,
        sample_format: SampleFormat = "pcm16",
        channels: int = 1,
        first_index: int = 0,
    ) -> None:
        if sample_format not in _BYTES_PER_SAMPLE:
            raise ValueError(f"unsupported sample format {sample_format!r}; use pcm16 or float32")
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self.rate = check_rate(rate)
        self.sample_format: SampleFormat = sample_format
        self.channels = channels
        self._resampler = StreamResampler(rate, SAMPLE_RATE)
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_index = first_index

    @property
    def next_index(self) -> int:
        return self._next_index

    def push(self, chunk: bytes | bytearray | memoryview | npt.NDArray[np.generic]) -> list[Frame]:
        samples = decode_chunk(chunk, self.sample_format, self.channels)
        return self._emit(self._resampler.process(samples))

    def flush(self) -> list[Frame]:
        """End of stream: release the resampler delay and zero-pad the last frame."""
        tail = self._resampler.flush()
        frames = self._emit(tail)
        if self._pending.size:
            padded = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            padded[: self._pending.size] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            frames.append(Frame(self._next_index, float_to_pcm16(padded)))
            self._next_index += 1
        return frames

    def _emit(self, samples: Float32Array) -> list[Frame]:
        buffer = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = buffer.size // FRAME_SAMPLES
        pcm = float_to_pcm16(buffer[: whole * FRAME_SAMPLES])
        frames = [
            Frame(self._next_index + i, pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
            for i in range(whole)
        ]
        self._next_index += whole
        self._pending = buffer[whole * FRAME_SAMPLES :].copy()
        return frames


def frames_of(samples: Int16Array, first_index: int = 0) -> Iterator[Frame]:
    """Cut 16 kHz PCM16 into frames, zero-padding the last one."""
    framer = Framer(first_index=first_index)
    if samples.size:
        yield from framer.push(samples)
    yield from framer.flush()


def read_wav(path: str | Path, rate: int = SAMPLE_RATE) -> Int16Array:
    """Read a PCM16 WAV (any supported rate, mono or stereo) as mono PCM16 at `rate`.

    Headerless `.raw` files are read as 16 kHz mono PCM16 little-endian.
    """
    path = Path(path)
    if path.suffix == ".raw":
        data, in_rate, channels = path.read_bytes(), SAMPLE_RATE, 1
    else:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
            data, in_rate, channels = (
                wav.readframes(wav.getnframes()),
                wav.getframerate(),
                wav.getnchannels(),
            )
    if len(data) < 2 * channels:
        return np.zeros(0, dtype=np.int16)
    samples = decode_chunk(data[: len(data) - len(data) % (2 * channels)], "pcm16", channels)
    return float_to_pcm16(resample(samples, check_rate(in_rate), check_rate(rate)))


def write_wav(path: str | Path, pcm: Int16Array, rate: int = SAMPLE_RATE) -> None:
    """Write mono PCM16 as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def check_frame(frame: object) -> Frame:
    """Reject anything that is not a well-formed 20 ms frame, before any state changes."""
    if not isinstance(frame, Frame):
        raise ValueError(f"expected a duplex.audio.Frame, got {type(frame).__name__}")
    pcm = frame.pcm
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.shape != (FRAME_SAMPLES,):
        dtype = getattr(pcm, "dtype", type(pcm).__name__)
        shape = getattr(pcm, "shape", "?")
        raise ValueError(f"a frame holds {FRAME_SAMPLES} int16 samples, got {dtype} {shape}")
    if isinstance(frame.index, bool) or not isinstance(frame.index, int | np.integer):
        raise ValueError(f"frame index must be an integer, got {frame.index!r}")
    return frame
