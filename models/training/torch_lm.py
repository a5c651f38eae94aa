"""The frozen LM in torch, from the same GGUF: for training what feeds it.

llama.cpp runs the LM in a session, but it computes no gradients. Training the
speech adapter needs d(loss)/d(input embeddings) through the frozen LM, so
this module rebuilds SmolLM2 (a Llama) in torch from the GGUF's tensors,
dequantized once and cached as .npz in the user's cache directory.
Its logits match llama.cpp's on the same tokens (tests/test_adapter.py), so
what is trained here is what a session runs.

GGUF stores Q and K rows permuted for GGML's rotary embedding, which rotates
adjacent pairs (x0, x1), (x2, x3) ...; this module rotates them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.weights import cache_dir

Past = tuple[torch.Tensor, torch.Tensor]  # one block's rotated keys and values


@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    rope_base: float
    norm_eps: float
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class _Block(nn.Module):
    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        kv = shape.kv_heads * shape.head_dim
        self.attn_norm = nn.RMSNorm(shape.hidden, eps=shape.norm_eps)
        self.q = nn.Linear(shape.hidden, shape.hidden, bias=False)
        self.k = nn.Linear(shape.hidden, kv, bias=False)
        self.v = nn.Linear(shape.hidden, kv, bias=False)
        self.o = nn.Linear(shape.hidden, shape.hidden, bias=False)
        self.ffn_norm = nn.RMSNorm(shape.hidden, eps=shape.norm_eps)
        self.gate = nn.Linear(shape.hidden, shape.ffn, bias=False)
        self.up = nn.Linear(shape.hidden, shape.ffn, bias=False)
        self.down = nn.Linear(shape.ffn, shape.hidden, bias=False)
        self.shape = shape

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: Past | None = None
    ) -> tuple[torch.Tensor, Past]:
        """The block on `x` after the keys and values of `past` positions: (out, x's k and v)."""
        s = self.shape
        batch, length, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(batch, length, s.heads, s.head_dim).transpose(1, 2)
        k = self.k(h).view(batch, length, s.kv_heads, s.head_dim).transpose(1, 2)
        v = self.v(h).view(batch, length, s.kv_heads, s.head_dim).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        keys, values, mask = k, v, None
        if past is not None:
            before = past[0].shape[2]
            keys = torch.cat([past[0].expand(batch, -1, -1, -1), k], dim=2)
            values = torch.cat([past[1].expand(batch, -1, -1, -1), v], dim=2)
            # every position sees the whole past and, causally, its own sequence
            mask = torch.ones(length, before + length, dtype=torch.bool, device=x.device)
            mask[:, before:] = torch.ones(length, length, dtype=torch.bool).tril()
        attended = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, is_causal=mask is None, enable_gqa=True
        )
        x = x + self.o(attended.transpose(1, 2).reshape(batch, length, s.hidden))
        h = self.ffn_norm(x)
        out: torch.Tensor = x + self.down(F.silu(self.gate(h)) * self.up(h))
        return out, (k, v)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """GGML's rotary embedding: adjacent pairs turn by the position's angle."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    turned = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return turned.flatten(-2).to(x.dtype)


class TorchLM(nn.Module):
    """SmolLM2 forward in torch: input embeddings in, final hidden states and logits out."""

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab, shape.hidden)
        self.blocks = nn.ModuleList(_Block(shape) for _ in range(shape.layers))
        self.norm = nn.RMSNorm(shape.hidden, eps=shape.norm_eps)
        inverse = 1.0 / shape.rope_base ** (
            torch.arange(0, shape.head_dim, 2, dtype=torch.float32) / shape.head_dim
        )
        self.register_buffer("inverse_freq", inverse, persistent=False)
        self.requires_grad_(False)

    @classmethod
    def from_gguf(cls, path: str | Path) -> TorchLM:
        """Load (and cache, dequantized) the GGUF's weights."""
        shape, tensors = _load_cached(Path(path))
        model = cls(shape)
        model.embed.weight.data = torch.tensor(tensors["token_embd.weight"])
        model.norm.weight.data = torch.tensor(tensors["output_norm.weight"])
        names = {
            "attn_norm": "attn_norm", "q": "attn_q", "k": "attn_k", "v": "attn_v",
            "o": "attn_output", "ffn_norm": "ffn_norm", "gate": "ffn_gate", "up": "ffn_up",
            "down": "ffn_down",
        }  # fmt: skip
        for i, block in enumerate(model.blocks):
            for attr, name in names.items():
                weight = torch.tensor(tensors[f"blk.{i}.{name}.weight"])
                getattr(block, attr).weight.data = weight
        return model.eval()

    def token_embeddings(self, tokens: list[int]) -> torch.Tensor:
        return self.embed.weight[torch.tensor(tokens, dtype=torch.long)]

    def hidden_states(
        self, embeddings: torch.Tensor, prefix: list[Past] | None = None
    ) -> torch.Tensor:
        """(batch, length, hidden) input embeddings, after the cached `prefix` if given,
        -> final-normed hidden states."""
        x = embeddings
        start = prefix[0][0].shape[2] if prefix else 0
        cos, sin = self._angles(start, x.shape[1])
        for i, block in enumerate(self.blocks):
            x, _ = block(x, cos, sin, prefix[i] if prefix else None)
        normed: torch.Tensor = self.norm(x)
        return normed

    @torch.no_grad()
    def prefix_cache(self, embeddings: torch.Tensor) -> list[Past]:
        """Each block's keys and values for a (1, length, hidden) prefix that many
        sequences share (the system prompt): computed once instead of per sequence."""
        cos, sin = self._angles(0, embeddings.shape[1])
        x, cache = embeddings, []
        for block in self.blocks:
            x, past = block(x, cos, sin)
            cache.append(past)
        return cache

    def _angles(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        inverse: torch.Tensor = self.inverse_freq  # type: ignore[assignment]
        positions = torch.arange(start, start + length, dtype=torch.float32, device=inverse.device)
        angles = torch.outer(positions, inverse)
        return angles.cos()[None, None], angles.sin()[None, None]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The tied output head."""
        return hidden @ self.embed.weight.T


def _load_cached(path: Path) -> tuple[LlamaShape, dict[str, np.ndarray]]:
    cached = cache_dir() / f"{path.stem}-{_fingerprint(path)}.npz"
    if cached.exists():
        with np.load(cached) as saved:
            tensors = {k: saved[k] for k in saved.files if k != "shape"}
            values = saved["shape"].tolist()
        return _shape(values), tensors
    shape, tensors = _read_gguf(path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    for stale in cached.parent.glob(f"{path.stem}-*.npz"):  # an older copy of these weights
        stale.unlink()
    partial = cached.with_suffix(".part.npz")
    arrays: dict[str, Any] = {"shape": np.array(_shape_values(shape)), **tensors}
    np.savez(partial, **arrays)
    partial.replace(cached)
    return shape, tensors


def _fingerprint(path: Path) -> str:
    """Size and a hash of the file's ends: the same weights under any install's mtime."""
    import hashlib

    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        digest.update(f.read())
    return digest.hexdigest()[:16]


def _shape_values(shape: LlamaShape) -> list[float]:
    return [
        shape.layers, shape.hidden, shape.ffn, shape.heads, shape.kv_heads,
        shape.rope_base, shape.norm_eps, shape.vocab,
    ]  # fmt: skip


def _shape(values: list[float]) -> LlamaShape:
    layers, hidden, ffn, heads, kv_heads, base, eps, vocab = values
    return LlamaShape(
        int(layers), int(hidden), int(ffn), int(heads), int(kv_heads), base, eps, int(vocab)
    )


def _read_gguf(path: Path) -> tuple[LlamaShape, dict[str, np.ndarray]]:
    import gguf

    reader = gguf.GGUFReader(path)

    def field(name: str) -> float:
        return float(reader.fields[f"llama.{name}"].contents())

    shape = LlamaShape(
        layers=int(field("block_count")),
        hidden=int(field("embedding_length")),
        ffn=int(field("feed_forward_length")),
        heads=int(field("attention.head_count")),
        kv_heads=int(field("attention.head_count_kv")),
        rope_base=field("rope.freq_base"),
        norm_eps=field("attention.layer_norm_rms_epsilon"),
        vocab=int(field("vocab_size")),
    )
    tensors = {}
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        tensors[tensor.name] = np.ascontiguousarray(values, dtype=np.float32)
    return shape, tensors
