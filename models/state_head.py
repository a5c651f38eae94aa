"""The duplex state head: listen / speak / dismiss from the frozen LM's last hidden state.

Freeze-Omni's idea on our models: the LM stays frozen, a one-hidden-layer
classifier reads its hidden state (576 floats, after the final norm) at the
last position every tick. Inference is numpy (no torch at run time); the
weights are small and ship in `models/data/state_head.npz` with a model card.
`duplex train-state-head` makes them (`models/training/state_head.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from duplex.ports import StateProbs

DATA = Path(__file__).resolve().parent / "data"
HEAD_PATH = DATA / "state_head.npz"
CARD_PATH = DATA / "state_head.md"

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class StateHead:
    """y = softmax(W2 · relu(W1 · (h - mean) / std + b1) + b2), classes listen/speak/dismiss."""

    mean: Array
    std: Array
    w1: Array
    b1: Array
    w2: Array
    b2: Array
    text_style: str  # "asr" (punctuation kept) or "plain": how the text was written in training

    @classmethod
    def load(cls, path: str | Path = HEAD_PATH) -> StateHead:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"no state head at {path}; train one with `duplex train-state-head`"
            )
        with np.load(path) as data:
            arrays = {
                k: data[k].astype(np.float32) for k in ("mean", "std", "w1", "b1", "w2", "b2")
            }
            style = str(data["text_style"]) if "text_style" in data else "asr"
        return cls(text_style=style, **arrays)

    def save(self, path: str | Path = HEAD_PATH) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            mean=self.mean,
            std=self.std,
            w1=self.w1,
            b1=self.b1,
            w2=self.w2,
            b2=self.b2,
            text_style=np.array(self.text_style),
        )

    def probabilities(self, hidden: Array) -> Array:
        """Class probabilities for one hidden state (n,) or a batch (b, n)."""
        x = (hidden - self.mean) / self.std
        z = np.maximum(x @ self.w1.T + self.b1, 0.0) @ self.w2.T + self.b2
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        out: Array = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
        return out

    def __call__(self, hidden: Array) -> StateProbs:
        p = self.probabilities(hidden)
        return StateProbs(float(p[0]), float(p[1]), float(p[2]))
