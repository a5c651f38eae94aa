"""Speech for training the adapter: chit-chat sentences spoken by varied voices.

Sentences are user turns of `chitchat-dataset` in recognizer style (2-16
words). Each is spoken by either
- the shipped Piper voice, with its rate, pitch and variation sampled
  (length scale, a resampling pitch shift, noise_scale / noise_w), or
- an espeak-ng voice (accents and variants: other speakers, other timbres),
  at a sampled rate and pitch,
then gets 0-300 ms of silence before it and white noise at 10-40 dB SNR
half the time. Encoder frames are computed once and cached on disk in
shards (resumable): training reads only the cache.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from duplex.audio import SAMPLE_RATE, Int16Array, float_to_pcm16, pcm16_to_float
from models.adapter import SpeechEncoder
from models.training.state_data import asr_style, conversations

SHARD = 200  # utterances per cache file
MAX_WORDS = 16  # longer turns cost training time more than they teach
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "f4", "f5")


@dataclass(frozen=True)
class SpokenSet:
    """Encoder frames of many utterances, packed: utterance i is frames[starts[i]:ends[i]]."""

    frames: np.ndarray  # (chunks, 8, 384) float16
    starts: np.ndarray
    ends: np.ndarray
    texts: list[str]
    voices: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def utterance(self, i: int) -> np.ndarray:
        return self.frames[self.starts[i] : self.ends[i]].astype(np.float32)

    @classmethod
    def pack(cls, frames: list[np.ndarray], texts: list[str], voices: list[str]) -> SpokenSet:
        """Utterances' (chunks, 8, 384) frames packed into one array."""
        ends = np.cumsum([len(f) for f in frames])
        starts = ends - np.array([len(f) for f in frames])
        return cls(np.concatenate(frames).astype(np.float16), starts, ends, texts, voices)


def sentences(count: int, seed: int = 0, skip: int = 0) -> list[str]:
    """`count` distinct user sentences (speaker A's turns), after the first `skip`."""
    rng = random.Random(seed)
    pool: list[str] = []
    seen: set[str] = set()
    for _, turns in conversations():
        for turn in turns[::2]:
            text = asr_style(turn)
            if 2 <= len(text.split()) <= MAX_WORDS and text not in seen and text.isascii():
                seen.add(text)
                pool.append(text)
    rng.shuffle(pool)
    return pool[skip : skip + count]


class VariedVoices:
    """Speaks a sentence with a sampled voice; see the module doc."""

    def __init__(self, seed: int = 0, espeak_share: float = 0.3) -> None:
        from models.tts import PiperSynthesizer

        self._piper = PiperSynthesizer(threads=2)
        self._rng = random.Random(seed)
        self._espeak = shutil.which("espeak-ng")
        self._espeak_share = espeak_share if self._espeak else 0.0

    def reseed(self, seed: int) -> None:
        """Sample voices from `seed` on: the same texts are spoken the same way again."""
        self._rng.seed(seed)

    def speak(self, text: str) -> tuple[Int16Array, str]:
        """A sampled voice, 0-300 ms of silence before it, noise half the time."""
        pcm, voice = self.voice(text)
        lead = np.zeros(self._rng.randrange(0, 301, 20) * SAMPLE_RATE // 1000, np.int16)
        return self.noisy(np.concatenate([lead, pcm]), voice)

    def voice(self, text: str) -> tuple[Int16Array, str]:
        """Clean speech from a sampled voice, and the voice's description."""
        if self._rng.random() < self._espeak_share:
            return self._espeak_speak(text)
        return self._piper_speak(text)

    def noisy(self, pcm: Int16Array, voice: str) -> tuple[Int16Array, str]:
        """White noise at 10-40 dB SNR (of the voiced level) half the time."""
        rng = self._rng
        if rng.random() >= 0.5:
            return pcm, voice
        snr = rng.uniform(10, 40)
        audio = pcm16_to_float(pcm)
        loud = audio[np.abs(audio) > 0.01]
        level = float(np.sqrt(np.mean(loud**2))) if loud.size else 1e-4
        noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 1, audio.size)
        return float_to_pcm16(audio + noise * level * 10 ** (-snr / 20)), f"{voice} snr{snr:.0f}"

    def _piper_speak(self, text: str) -> tuple[Int16Array, str]:
        rng = self._rng
        rate, pitch = rng.uniform(0.8, 1.25), rng.uniform(0.9, 1.1)
        pcm = self._piper.synthesize(
            text,
            length_scale=self._piper.length_scale * pitch / rate,
            noise_scale=rng.uniform(0.3, 0.9),
            noise_w=rng.uniform(0.3, 1.0),
        )
        if pitch != 1.0:
            shifted = soxr.resample(pcm16_to_float(pcm), SAMPLE_RATE * pitch, SAMPLE_RATE)
            pcm = float_to_pcm16(shifted)
        return pcm, f"piper rate{rate:.2f} pitch{pitch:.2f}"

    def _espeak_speak(self, text: str) -> tuple[Int16Array, str]:
        rng = self._rng
        voice = f"{rng.choice(ESPEAK_VOICES)}+{rng.choice(ESPEAK_VARIANTS)}"
        rate, pitch = rng.randrange(130, 200), rng.randrange(30, 70)
        assert self._espeak is not None
        wav = subprocess.run(
            [self._espeak, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text],
            capture_output=True,
            check=True,
        ).stdout
        with wave.open(io.BytesIO(wav)) as reader:
            native = reader.getframerate()
            raw = np.frombuffer(reader.readframes(reader.getnframes()), np.int16)
        audio = soxr.resample(pcm16_to_float(raw), native, SAMPLE_RATE)
        return float_to_pcm16(audio), f"espeak {voice} s{rate} p{pitch}"


def build_set(
    directory: Path,
    texts: list[str],
    encoder: SpeechEncoder,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> SpokenSet:
    """Speak and encode `texts` into cached shards under `directory` (resumable)."""
    directory.mkdir(parents=True, exist_ok=True)
    voices = VariedVoices(seed)
    shards = []
    for number, first in enumerate(range(0, len(texts), SHARD)):
        path = directory / f"shard{number:04d}.npz"
        batch = texts[first : first + SHARD]
        if not path.exists():
            _write_shard(path, batch, voices, encoder, seed * 100_003 + number, progress)
        elif progress:
            progress(len(batch))
        shards.append(path)
    return load_set(shards)


def _write_shard(
    path: Path,
    texts: list[str],
    voices: VariedVoices,
    encoder: SpeechEncoder,
    seed: int,
    progress: Callable[[int], None] | None,
) -> None:
    voices.reseed(seed)  # a resumed build speaks each shard the same way
    frames, lengths, labels = [], [], []
    for text in texts:
        pcm, voice = voices.speak(text)
        encoded = encoder.utterance(pcm)
        frames.append(encoded.astype(np.float16))
        lengths.append(len(encoded))
        labels.append(voice)
        if progress:
            progress(1)
    partial = path.with_suffix(".part.npz")
    np.savez(
        partial,
        frames=np.concatenate(frames),
        lengths=np.array(lengths),
        texts=np.array(texts),
        voices=np.array(labels),
    )
    partial.replace(path)


def load_set(paths: list[Path]) -> SpokenSet:
    frames, lengths, texts, voices = [], [], [], []
    for path in paths:
        with np.load(path) as shard:
            frames.append(shard["frames"])
            lengths += shard["lengths"].tolist()
            texts += shard["texts"].tolist()
            voices += shard["voices"].tolist()
    ends = np.cumsum(lengths)
    return SpokenSet(np.concatenate(frames), ends - np.array(lengths), ends, texts, voices)
