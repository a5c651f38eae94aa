"""Piper text to speech behind the core's `Synthesizer` port.

`PiperSynthesizer` loads one Piper voice (default: the shipped
`en_US-joe-medium`, 22.05 kHz) once and turns a clause of the answer into
16 kHz mono PCM16, the only format the core speaks.

What it does to Piper's output, and why (measured on the joe voice, CPU):

- **No per-sentence peak normalization.** Piper scales every sentence to a
  peak of 1.0 by default, so clause loudness jumps with the clause (RMS 0.09
  for a long clause, 0.16 for "Sure."). The raw model output is steady
  (RMS about 0.06, peaks 0.3 to 0.71), so it gets one fixed `gain` instead;
  a chunk whose peak would pass `_PEAK` after gain and resampling is scaled
  down to it, so nothing clips.
- **Edge silence trimmed.** Piper puts 0 to 62 ms (median 45 ms) of silence
  before the first sound of every sentence and 0 to 236 ms (median 128 ms)
  after the last one (threshold -60 dBFS, the silence floor is about -85
  dBFS). Leading silence is time to first audio, so all but `lead_ms` (20 ms)
  of it goes: about 25 ms saved on a typical clause, up to 40 ms. Trailing
  silence is dead air at every clause boundary (the session cuts answers into
  clauses at commas and every 8 words) and inflates the clause's audio, which
  is what the played-word estimate of a barge-in divides, so all but
  `tail_ms` (100 ms) of it goes. Consecutive clauses are then about 120 ms
  apart. `lead_ms=None` / `tail_ms=None` keep Piper's silence.
- **Streaming by sentence.** Piper phonemizes the whole text, then runs the
  model once per sentence; `synthesize_stream` yields each sentence as soon as
  it exists, and `synthesize` is the concatenation of the stream.

Piper's durations and timbre are sampled (noise_scale, noise_w), so two runs
on the same text differ (by about ±6 % in length for a short clause). With
`noise_scale=0` and `noise_w=0` the output is deterministic.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from duplex.audio import SAMPLE_RATE, Float32Array, Int16Array, float_to_pcm16, resample
from models.weights import VOICE

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

log = logging.getLogger(__name__)

SILENCE_DBFS = -60.0  # below this, a sample counts as silence when trimming
_PEAK = 0.97  # the loudest a sample may be after gain (headroom against clipping)
DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """Whether this onnxruntime build can run on a CUDA GPU."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def trim_silence(
    samples: Float32Array,
    rate: int,
    lead_ms: float | None,
    tail_ms: float | None,
    threshold_dbfs: float = SILENCE_DBFS,
) -> Float32Array:
    """Cut leading/trailing silence down to `lead_ms` / `tail_ms` (None keeps it all).

    A sample is sound when its magnitude is above `threshold_dbfs`; audio with
    no sound at all comes back empty.
    """
    loud = np.flatnonzero(np.abs(samples) > 10.0 ** (threshold_dbfs / 20.0))
    if loud.size == 0:
        return samples[:0]
    start = 0 if lead_ms is None else max(0, int(loud[0]) - round(lead_ms * rate / 1000))
    end = (
        samples.size
        if tail_ms is None
        else min(samples.size, int(loud[-1]) + 1 + round(tail_ms * rate / 1000))
    )
    return samples[start:end]


class PiperSynthesizer:
    """A Piper voice as the core's `Synthesizer`: text in, 16 kHz PCM16 out.

    `voice_path` is a Piper `.onnx` file with its `.onnx.json` config beside
    it; None takes the shipped joe voice. `length_scale`, `noise_scale`,
    `noise_w` and `speaker_id` default to the voice's own config. `threads`
    is onnxruntime's intra-op thread count (0: onnxruntime's default, all
    cores). Its threads sleep when idle instead of spinning: on the 2-core
    machine a 4-word clause took 50 ms with two such threads, 64 with two
    spinning ones and 75 with one; with the other core busy, 66, 106 and 70.
    `device` is auto, cpu or cuda; auto picks cuda only when onnxruntime has
    the CUDA provider.
    """

    def __init__(
        self,
        voice_path: str | Path | None = None,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w: float | None = None,
        speaker_id: int | None = None,
        threads: int = 2,
        device: str = "auto",
        lead_ms: float | None = 20.0,
        tail_ms: float | None = 100.0,
        gain: float = 1.4,
    ) -> None:
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
        if threads < 0:
            raise ValueError(f"threads must be 0 (onnxruntime's default) or more, got {threads}")
        if length_scale is not None and length_scale <= 0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        if gain <= 0:
            raise ValueError(f"gain must be positive, got {gain}")
        for name, value in (("lead_ms", lead_ms), ("tail_ms", tail_ms)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 or more (None: keep Piper's), got {value}")
        use_cuda = device == "cuda" or (device == "auto" and cuda_available())
        if device == "cuda" and not cuda_available():
            raise ValueError(
                "device 'cuda' asked for, but this onnxruntime has no CUDA provider; "
                "install onnxruntime-gpu or use device 'cpu'"
            )
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as error:
            raise RuntimeError(f"Piper is missing ({error}): pip install piper-tts") from error

        path = VOICE.resolve(voice_path)
        config_path = Path(f"{path}.json")
        if not config_path.exists():
            raise FileNotFoundError(
                f"{config_path} is missing: a Piper voice needs its .onnx.json beside the .onnx"
            )
        started = time.perf_counter()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
        if use_cuda:
            providers.insert(0, ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        self._voice: PiperVoice = PiperVoice(
            config=config,
            session=onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=providers
            ),
        )
        self.voice_path = path
        self.device = "cuda" if use_cuda else "cpu"
        self.length_scale = config.length_scale if length_scale is None else length_scale
        self._lock = threading.Lock()
        self.noise_scale = config.noise_scale if noise_scale is None else noise_scale
        self.noise_w = config.noise_w_scale if noise_w is None else noise_w
        self.speaker_id = speaker_id
        self.lead_ms = lead_ms
        self.tail_ms = tail_ms
        self.gain = gain
        log.info(
            "loaded Piper voice %s (%d Hz, %s) in %.2f s",
            self.voice_name,
            self.native_rate,
            self.device,
            time.perf_counter() - started,
        )

    @property
    def native_rate(self) -> int:
        """The voice's own sample rate (22050 Hz for the joe voice)."""
        return int(self._voice.config.sample_rate)

    @property
    def voice_name(self) -> str:
        """The voice's file name without extension, e.g. en_US-joe-medium."""
        return self.voice_path.name.removesuffix(".onnx")

    def synthesize(
        self,
        text: str,
        *,
        speed: float = 1.0,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w: float | None = None,
    ) -> Int16Array:
        """16 kHz mono PCM16 for one clause; empty text gives an empty array.

        `speed`: how many times as fast as the length scale's pace (its inverse: 1.5
        speaks in two thirds of the time). The other keyword arguments override the
        synthesizer's settings for this call.
        """
        chunks = list(
            self.synthesize_stream(
                text,
                speed=speed,
                length_scale=length_scale,
                noise_scale=noise_scale,
                noise_w=noise_w,
            )
        )
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks)

    def synthesize_stream(
        self,
        text: str,
        *,
        speed: float = 1.0,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w: float | None = None,
    ) -> Iterator[Int16Array]:
        """16 kHz mono PCM16 per sentence, each yielded as soon as Piper has it."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if not text.strip():
            return
        scale = self.length_scale if length_scale is None else length_scale
        config = self._config(scale / speed, noise_scale, noise_w)
        with self._lock:  # espeak-ng's phonemizer is not thread-safe; sessions share a voice
            sentences = self._voice.phonemize(text)
        for phonemes in sentences:
            if not phonemes:
                continue
            ids = self._voice.phonemes_to_ids(phonemes)
            raw = self._voice.phoneme_ids_to_audio(ids, config)  # sessions' side by side
            audio = self._finish(np.clip(np.asarray(raw, dtype=np.float32), -1.0, 1.0))
            if audio.size:
                yield audio

    def _config(
        self, length_scale: float | None, noise_scale: float | None, noise_w: float | None
    ) -> SynthesisConfig:
        from piper import SynthesisConfig

        if length_scale is not None and length_scale <= 0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        return SynthesisConfig(
            speaker_id=self.speaker_id,
            length_scale=self.length_scale if length_scale is None else length_scale,
            noise_scale=self.noise_scale if noise_scale is None else noise_scale,
            noise_w_scale=self.noise_w if noise_w is None else noise_w,
            normalize_audio=False,
        )

    def _finish(self, audio: Float32Array) -> Int16Array:
        """Trim, resample to 16 kHz, apply the gain without clipping, convert to PCM16."""
        audio = trim_silence(audio, self.native_rate, self.lead_ms, self.tail_ms)
        if not audio.size:
            return np.zeros(0, dtype=np.int16)
        out = resample(audio, self.native_rate, SAMPLE_RATE) * np.float32(self.gain)
        peak = float(np.max(np.abs(out)))
        if peak > _PEAK:
            out *= np.float32(_PEAK / peak)
        return float_to_pcm16(out)


class _Clause:
    """One clause being synthesized on its own daemon thread."""

    def __init__(self, voice: PiperSynthesizer, text: str, speed: float) -> None:
        self._pcm: Int16Array | None = None
        self._thread = threading.Thread(target=self._run, args=(voice, text, speed), daemon=True)
        self._thread.start()

    def _run(self, voice: PiperSynthesizer, text: str, speed: float) -> None:
        try:
            self._pcm = voice.synthesize(text, speed=speed)
        except Exception:  # the answer goes on without this clause
            log.exception("synthesizing %r failed", text)
            self._pcm = np.zeros(0, dtype=np.int16)

    def result(self) -> Int16Array | None:
        return self._pcm


class AheadSynthesizer:
    """A voice that makes an answer's later clauses on background threads.

    Synthesizing a clause takes 80-200 ms on two cores; done in the session's
    loop it stalls the output, which is sent only `policy.send_ahead_ms`
    ahead, and the answer falls silent for the difference. Used where time
    is real (the server, `duplex chat`); the fast benchmark keeps synthesis
    in the loop, where its cost is charged to the virtual clock.
    """

    def __init__(self, voice: PiperSynthesizer) -> None:
        self.voice = voice

    def synthesize(self, text: str, *, speed: float = 1.0) -> Int16Array:
        return self.voice.synthesize(text, speed=speed)

    def start(self, text: str, *, speed: float = 1.0) -> _Clause:
        return _Clause(self.voice, text, speed)
