"""The speech path into the frozen LM: Whisper encoder -> trained adapter -> LM embeddings.

Freeze-Omni's input side on our models. Every 160 ms chunk of the user's
audio becomes two positions (12.5 per second) in the LM's input-embedding
space, appended to the same KV cache as text, inside the user turn. No
recognizer decode sits between the voice and the state head, and what the
encoder keeps of prosody (a falling pitch, a drawn-out "um") reaches it.

Design, and why chunked equals whole:
- **Encoder**: the shipped Whisper tiny.en encoder (CTranslate2), run on a
  fixed window of `WINDOW_S` (1.28 s) of audio that ends where the chunk
  ends: 1.12 s of left context, zeros before the utterance began. Its last
  8 frames (50 Hz, 384-dim) are the chunk's. Whisper attends both ways, so a
  window sees no audio after its chunk; every chunk's window is fixed by
  the audio up to its end, and encoding an utterance's windows in one batch
  gives what streaming them one by one gives (tests/test_adapter.py).
- **Adapter**: 4 encoder frames (80 ms) are concatenated (a strided conv
  with kernel = stride = 4) and mapped by a 2-layer MLP to one 576-dim LM
  embedding. It looks inside its own chunk only: no state to carry.

About 3.5 ms of encoder per chunk when batched, 8 ms streamed, on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from duplex.audio import SAMPLE_RATE, Float32Array, Frame, Int16Array, pcm16_to_float

CHUNK_MS = 160
CHUNK_SAMPLES = SAMPLE_RATE * CHUNK_MS // 1000
WINDOW_S = 1.28
WINDOW_SAMPLES = round(SAMPLE_RATE * WINDOW_S)
ENCODER_HZ = 50
ENCODER_DIM = 384
FRAMES_PER_CHUNK = ENCODER_HZ * CHUNK_MS // 1000  # 8
FRAMES_PER_POSITION = 4  # 80 ms: 12.5 LM positions per second
POSITIONS_PER_CHUNK = FRAMES_PER_CHUNK // FRAMES_PER_POSITION
_BATCH = 32

ADAPTER_PATH = Path(__file__).parent / "data" / "speech_adapter.npz"
SPEECH_HEAD_PATH = ADAPTER_PATH.with_name("speech_state_head.npz")


class SpeechEncoder:
    """Whisper tiny.en's encoder over fixed windows ending at each chunk's end."""

    def __init__(self, model: Any) -> None:
        """`model`: a loaded faster-whisper model (shared with the recognizer)."""
        self._model = model
        self._features = model.feature_extractor

    def windows(self, pcm: Int16Array) -> Float32Array:
        """(chunks, WINDOW_SAMPLES) audio windows for an utterance padded to whole chunks."""
        audio = pcm16_to_float(pcm)
        chunks = -(-audio.size // CHUNK_SAMPLES)
        padded = np.zeros(WINDOW_SAMPLES - CHUNK_SAMPLES + chunks * CHUNK_SAMPLES, np.float32)
        padded[WINDOW_SAMPLES - CHUNK_SAMPLES :][: audio.size] = audio
        starts = np.arange(chunks) * CHUNK_SAMPLES
        return np.stack([padded[s : s + WINDOW_SAMPLES] for s in starts]) if chunks else padded[:0]

    def encode(self, windows: Float32Array) -> Float32Array:
        """(n, WINDOW_SAMPLES) windows -> (n, FRAMES_PER_CHUNK, ENCODER_DIM) chunk frames."""
        import ctranslate2

        out = []
        for i in range(0, len(windows), _BATCH):
            mel = np.stack([self._mel(w) for w in windows[i : i + _BATCH]])
            encoded = self._model.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True)
            out.append(np.asarray(encoded, dtype=np.float32)[:, -FRAMES_PER_CHUNK:])
        if not out:
            return np.zeros((0, FRAMES_PER_CHUNK, ENCODER_DIM), np.float32)
        return np.concatenate(out)

    def utterance(self, pcm: Int16Array) -> Float32Array:
        """A whole utterance's chunk frames in batches: (chunks, 8, 384)."""
        return self.encode(self.windows(pcm))

    def _mel(self, window: Float32Array) -> Float32Array:
        frames = WINDOW_SAMPLES // self._features.hop_length
        mel = np.asarray(self._features(window, padding=0), dtype=np.float32)
        return np.ascontiguousarray(mel[:, :frames])


class SpeechStream:
    """Streams one utterance: 20 ms frames in, each finished chunk's encoder frames out."""

    def __init__(self, encoder: SpeechEncoder) -> None:
        self._encoder = encoder
        self.reset()

    def reset(self) -> None:
        """A new utterance: the left context is silence again."""
        self._audio = np.zeros(WINDOW_SAMPLES, np.float32)
        self._pending: list[Float32Array] = []
        self._pending_samples = 0

    def accept(self, pcm: Int16Array) -> Float32Array | None:
        """Audio in timeline order; (8, 384) when a chunk is complete, else None."""
        self._pending.append(pcm16_to_float(pcm))
        self._pending_samples += pcm.size
        if self._pending_samples < CHUNK_SAMPLES:
            return None
        joined = np.concatenate(self._pending)
        chunk, rest = joined[:CHUNK_SAMPLES], joined[CHUNK_SAMPLES:]
        self._pending, self._pending_samples = [rest], rest.size
        self._audio = np.concatenate([self._audio[CHUNK_SAMPLES:], chunk])
        frames: Float32Array = self._encoder.encode(self._audio[np.newaxis])[0]
        return frames


@dataclass(frozen=True)
class AdapterShape:
    hidden: int = 768
    out: int = 576  # the LM's embedding size


def _torch_adapter(shape: AdapterShape) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Linear(ENCODER_DIM * FRAMES_PER_POSITION, shape.hidden),
        nn.GELU(),
        nn.Linear(shape.hidden, shape.out),
    )


class SpeechAdapter:
    """The trained map from encoder frames to LM input embeddings (torch, CPU or GPU)."""

    def __init__(self, shape: AdapterShape | None = None, module: Any = None) -> None:
        self.shape = shape or AdapterShape()
        self.module = module if module is not None else _torch_adapter(self.shape)

    def __call__(self, frames: Any) -> Any:
        """(..., chunks, 8, 384) frames (a torch tensor) -> (..., chunks * 2, 576) embeddings."""
        grouped = frames.reshape(*frames.shape[:-3], -1, ENCODER_DIM * FRAMES_PER_POSITION)
        return self.module(grouped)

    def embed(self, frames: Float32Array) -> npt.NDArray[np.float32]:
        """numpy (chunks, 8, 384) -> (chunks * 2, 576), no gradients: what a session feeds."""
        import torch

        with torch.no_grad():
            out = self(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)))
        embeddings: npt.NDArray[np.float32] = out.numpy().astype(np.float32)
        return embeddings

    def save(self, path: str | Path) -> None:
        """Weights as .npz (a few MB), loadable without training code."""
        state = {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}
        np.savez(path, hidden=np.array(self.shape.hidden), out=np.array(self.shape.out), **state)

    @classmethod
    def load(cls, path: str | Path | None = None) -> SpeechAdapter:
        """The shipped adapter, or a trained one's path."""
        import torch

        path = Path(path) if path else ADAPTER_PATH
        if not path.exists():
            raise FileNotFoundError(
                f"no speech adapter at {path}: train one with `duplex train-adapter`"
            )
        with np.load(path) as saved:
            shape = AdapterShape(hidden=int(saved["hidden"]), out=int(saved["out"]))
            adapter = cls(shape)
            state = {k: torch.from_numpy(saved[k].copy()) for k in saved.files}
        state.pop("hidden"), state.pop("out")
        adapter.module.load_state_dict(state)
        adapter.module.eval()
        return adapter


class AdapterListener:
    """The `SpeechListener` port: a session's frames -> LM embeddings every 160 ms."""

    def __init__(self, encoder: SpeechEncoder, adapter: SpeechAdapter) -> None:
        self._stream = SpeechStream(encoder)
        self._adapter = adapter

    def accept(self, frame: Frame) -> Float32Array | None:
        frames = self._stream.accept(frame.pcm)
        return None if frames is None else self._adapter.embed(frames[np.newaxis])

    def reset(self) -> None:
        self._stream.reset()
