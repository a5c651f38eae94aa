"""One conversation's KV cache in llama.cpp: positions in, the next token's logits
and the last hidden state out, edited by position.

A position holds a token or a speech position (the adapter's output embedding,
`SPEECH_POSITION` in `tokens`). Both go through one decode loop. The cache is
only ever cut at a position (`cut`) or has a closed stretch taken out of its
middle (`remove`): llama.cpp's `llama_memory_seq_rm`, and `llama_memory_seq_add`
to slide what follows down (it re-rotates the cached keys), so no token is read
again. This module knows nothing of turns or answers; `models.lm` does.

llama.cpp was chosen by measurement (the component benchmark): it decodes
several times faster than torch eager on two cores, and it exposes both what
the duplex loop needs: the last hidden state (embeddings without pooling) and
editing the KV cache by position.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]

# a cache position that holds speech (adapter output), not a token
SPEECH_POSITION = -1
SPEECH_MARK = "[speech]"  # how `text` shows a run of them
_SPEECH_BATCH = 64

_LOADING = threading.Lock()


def resolve_device(device: str) -> str:
    """`auto` is cuda when llama.cpp was built with GPU offload, else cpu."""
    if device != "auto":
        return device
    import llama_cpp

    return "cuda" if llama_cpp.llama_supports_gpu_offload() else "cpu"


class Mark(NamedTuple):
    """Where the cache was, and what it read there: `rewind` goes back."""

    position: int
    logits: Float32Array
    hidden: Float32Array


class LlamaCache:
    """A GGUF model and one KV cache: tokens and speech positions appended at its end."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str,
        context_tokens: int,
        threads: int,
        read_threads: int,
        seed: int,
    ) -> None:
        import llama_cpp
        import llama_cpp._logger

        self._lib = llama_cpp
        self.device = resolve_device(device)
        # llama.cpp's load chatter goes to a string; llama-cpp-python itself points the
        # process's stdout and stderr at /dev/null and back: two loads at once (two
        # sessions starting) left them there, and the server's log went silent
        with _LOADING, contextlib.redirect_stderr(io.StringIO()):
            self._llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=context_tokens,
                n_batch=512,
                n_threads=threads,
                n_threads_batch=read_threads,
                n_gpu_layers=-1 if self.device == "cuda" else 0,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE,
                seed=seed,
                verbose=False,
            )
        # its warnings (e.g. that it marks every probed token as an output) are noise here
        llama_cpp._logger.logger.setLevel(logging.CRITICAL)
        self._ctx = self._llm.ctx
        self._threads = threads
        # threads for reading several positions at once; a server lowers it to 1 while
        # other sessions run (threads that wait on each other, descheduled, stall)
        self.read_threads = self._read_threads_set = read_threads
        self.n_vocab = self._llm.n_vocab()
        self.hidden_size = self._llm.n_embd()
        self.context_tokens = context_tokens
        self._batches: dict[bool, Any] = {}  # llama batches, for tokens and for speech
        self._pieces: list[str] | None = None
        self.clear()

    def clear(self) -> None:
        """An empty cache."""
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)
        self.tokens: list[int] = []
        self.hidden: Float32Array = np.zeros(self.hidden_size, dtype=np.float32)
        self.logits: Float32Array = np.zeros(self.n_vocab, dtype=np.float32)

    # text and tokens ------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """`special`: ChatML's markers read as their tokens (never in words from a user
        or an engine)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def detokenize(self, tokens: list[int], special: bool = False) -> str:
        return self._llm.detokenize(tokens, special=special).decode("utf-8", "replace")

    def token_id(self, text: str) -> int:
        [token] = self.tokenize(text)
        return int(token)

    def piece(self, token: int) -> str:
        return self.detokenize([token])

    def vocabulary(self) -> list[str]:
        """Every token's text, by id (built once)."""
        if self._pieces is None:
            self._pieces = [self.piece(t) for t in range(self.n_vocab)]
        return self._pieces

    def text(self) -> str:
        """The whole cache as the model sees it; each run of speech positions is one
        SPEECH_MARK."""
        parts, run = [], []
        for i, token in enumerate(self.tokens):
            if token != SPEECH_POSITION:
                run.append(token)
            elif i == 0 or self.tokens[i - 1] != SPEECH_POSITION:
                parts += [self.detokenize(run, special=True), SPEECH_MARK]
                run = []
        parts.append(self.detokenize(run, special=True))
        return "".join(parts)

    # reading ----------------------------------------------------------------------------

    def append(self, text: str, *, hidden: bool = False) -> None:
        """Read `text` (ChatML markers as their tokens) at the end of the cache."""
        tokens = self.tokenize(text)
        if tokens:
            self.decode(tokens, hidden=hidden)

    def decode(
        self,
        tokens: list[int] | None = None,
        speech: Float32Array | None = None,
        *,
        hidden: bool = False,
        every: bool = False,
    ) -> Float32Array:
        """The one decode loop: `tokens`, or `speech` positions (an embedding each), at
        the end of the cache. Keeps the last one's logits (and hidden state, if
        `hidden`); with `every`, returns the hidden state at each position."""
        lib = self._lib
        count = len(tokens) if tokens is not None else len(speech) if speech is not None else 0
        if len(self.tokens) + count > self.context_tokens:
            raise RuntimeError(
                f"the conversation outgrew the LM context ({self.context_tokens} tokens); "
                "raise models.context_tokens or lower models.history_tokens"
            )
        lib.llama_set_embeddings(self._ctx, hidden or every)
        self._sync_threads()
        batch, size = self._batch(speech is not None)
        states: list[Float32Array] = []
        for start in range(0, count, size):
            n = min(size, count - start)
            if tokens is not None:
                chunk = tokens[start : start + n]
                for j, token in enumerate(chunk):
                    batch.token[j] = token
            else:
                assert speech is not None
                part = np.ascontiguousarray(speech[start : start + n], dtype=np.float32)
                ctypes.memmove(batch.embd, part.ctypes.data, part.nbytes)
                chunk = [SPEECH_POSITION] * n
            for j in range(n):
                batch.pos[j] = len(self.tokens) + j
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = 0
                batch.logits[j] = every or j == n - 1
            batch.n_tokens = n
            if lib.llama_decode(self._ctx, batch) != 0:
                raise RuntimeError(f"the LM could not decode {n} positions")
            self.tokens += chunk
            if every:
                states.append(_floats(lib.llama_get_embeddings(self._ctx), n * self.hidden_size))
        if not count:
            return np.zeros((0, self.hidden_size), np.float32)
        self.logits = _floats(lib.llama_get_logits_ith(self._ctx, -1), self.n_vocab)
        if every:
            read = np.concatenate(states).reshape(count, self.hidden_size)
            self.hidden = read[-1].copy()
            return read
        if hidden:
            self.hidden = _floats(lib.llama_get_embeddings_ith(self._ctx, -1), self.hidden_size)
        return self.hidden[None]

    def read(self, pieces: list[str]) -> Float32Array:
        """Read pieces in one go; the hidden state at each piece's end (for training).

        Pieces are tokenized one by one, as the LM appends them, so a prefix read
        here has the same tokens (and hidden state) as in a live session."""
        tokens: list[int] = []
        ends: list[int] = []
        for piece in pieces:
            tokens += self.tokenize(piece)
            ends.append(len(tokens) - 1)
        return self.decode(tokens, every=True)[ends]

    def hear(self, speech: Float32Array) -> Float32Array:
        """Read speech positions (the adapter's LM embeddings); the hidden state at each."""
        return self.decode(speech=speech, every=True)

    # editing ----------------------------------------------------------------------------

    def mark(self) -> Mark:
        return Mark(len(self.tokens), self.logits, self.hidden)

    def rewind(self, mark: Mark) -> None:
        """Back to `mark`: later positions forgotten, its logits and hidden state back."""
        self.cut(mark.position)
        self.logits, self.hidden = mark.logits, mark.hidden

    def cut(self, position: int) -> None:
        """Forget every position from `position` on (the caller restores the logits)."""
        if position < len(self.tokens):
            memory = self._lib.llama_get_memory(self._ctx)
            self._lib.llama_memory_seq_rm(memory, 0, position, -1)
            self.tokens = self.tokens[:position]

    def remove(self, start: int, end: int) -> None:
        """Take positions [start, end) out and slide the rest down over them. Where
        llama.cpp cannot shift positions, the rest is read again (its speech positions
        cannot be: their embeddings are gone, and they are dropped)."""
        kept = self.tokens[end:]
        memory = self._lib.llama_get_memory(self._ctx)
        if self._lib.llama_memory_can_shift(memory):
            self._lib.llama_memory_seq_rm(memory, 0, start, end)
            self._lib.llama_memory_seq_add(memory, 0, end, -1, -(end - start))
            self.tokens = self.tokens[:start] + kept
            return
        logits, hidden = self.logits, self.hidden
        self.cut(start)
        text = [t for t in kept if t != SPEECH_POSITION]
        if text:
            self.decode(text)
        self.logits, self.hidden = logits, hidden

    def _batch(self, speech: bool) -> tuple[Any, int]:
        """A llama batch for tokens (the model's batch size) or for speech positions."""
        size = _SPEECH_BATCH if speech else self._llm.n_batch
        if speech not in self._batches:
            self._batches[speech] = self._lib.llama_batch_init(
                size, self.hidden_size if speech else 0, 1
            )
        return self._batches[speech], size

    def _sync_threads(self) -> None:
        """Read on `read_threads` from the next decode on (a server changes it as
        sessions come and go)."""
        if self.read_threads != self._read_threads_set:
            self._lib.llama_set_n_threads(self._ctx, self._threads, self.read_threads)
            self._read_threads_set = self.read_threads


def _floats(pointer: Any, n: int) -> Float32Array:
    array = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n,))
    return np.array(array, dtype=np.float32)
