"""The frozen LM behind the DuplexLM port: SmolLM2 through llama.cpp, one KV cache.

The conversation lives in the KV cache and grows at its end: the system
prompt once, then user words slice by slice as the recognizer makes them
stable, then the answer token by token. Nothing is re-prefilled. A barge-in
removes the unplayed tail of the answer from the cache at a token position;
a probe of words said over the answer is evaluated after the end of the
cache and removed again.

A conversation of any length fits: when a user turn opens and the turns
after the system prompt hold more than `history_tokens`, the oldest whole
turns leave the cache (`llama_memory_seq_rm`) and the rest slide down over
them (`llama_memory_seq_add`, which re-rotates the cached keys): no token is
read again. Only closed turns go, and only when a user turn opens, so no
mark (a tentative read, the answer to truncate) points into what moved.

llama.cpp was chosen by measurement (the component benchmark): it decodes
several times faster than torch eager on two cores, and it exposes both what
the duplex loop needs: the last hidden state (embeddings without pooling)
and editing the KV cache by position.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from duplex.ports import StateProbs
from duplex.text import plain
from duplex.tools import NO_TOOLS, ToolCall, Tools
from models.chatml import TURN_END, opening, turns
from models.end_of_turn import rule_state
from models.state_head import StateHead
from models.tool_calls import CallDecoder, call_text, mentioned, parse_call, tools_note

Float32Array = npt.NDArray[np.float32]


_FINAL_MARKS = re.compile(r"[.?!]+\s*$")  # what the end probability is read before

# a cache position that holds speech (adapter output), not a token
SPEECH_POSITION = -1
SPEECH_MARK = "[speech]"
_SPEECH_BATCH = 64

REPEAT_PENALTY = 1.15
REPEAT_WINDOW = 32


def resolve_device(device: str) -> str:
    """`auto` is cuda when llama.cpp was built with GPU offload, else cpu."""
    if device != "auto":
        return device
    import llama_cpp

    return "cuda" if llama_cpp.llama_supports_gpu_offload() else "cpu"


@dataclass
class _Answer:
    start: int  # cache position where the answer's tokens begin
    tokens: list[int]
    pieces: list[str]
    done: bool = False


class _Mark(NamedTuple):
    """Where the cache was, and what was read from it there: `_rewind` goes back."""

    position: int
    logits: Float32Array
    hidden: Float32Array
    user_text: str
    p_end: float | None


log = logging.getLogger(__name__)
_LOADING = threading.Lock()


class LlamaDuplexLM:
    """SmolLM2-135M-Instruct (GGUF) with one KV cache for one conversation."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        system_prompt: str,
        device: str = "auto",
        context_tokens: int = 4096,
        history_tokens: int | None = None,
        threads: int = 2,
        read_threads: int = 2,
        max_response_tokens: int = 96,
        temperature: float = 0.0,
        seed: int = 0,
        state_head: StateHead | None = None,
        speech_head: StateHead | None = None,
    ) -> None:
        """`state_head`: the learned listen/speak/dismiss head; None uses `rule_state`.
        `speech_head`: the head trained on speech positions (`listen_speech`).
        `history_tokens`: how much of the conversation after the system prompt stays
        in the cache when a user turn opens (default: half the context)."""
        history = context_tokens // 2 if history_tokens is None else history_tokens
        if not 0 < history < context_tokens:
            raise ValueError(
                f"history_tokens must be between 0 and context_tokens ({context_tokens}), "
                f"got {history}"
            )
        import llama_cpp
        import llama_cpp._logger

        self._llama_cpp = llama_cpp
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
        # threads for reading several tokens at once; a server lowers it to 1 while
        # other sessions run (threads that wait on each other, descheduled, stall)
        self.read_threads = self._read_threads_set = read_threads
        self._n_vocab = self._llm.n_vocab()
        self.hidden_size = self._llm.n_embd()
        self._end_token = self._token_id("<|im_end|>")
        self._end_tokens = [self._end_token, *(self._token_id(mark) for mark in ".?!")]
        self._p_end: float | None = None
        self._max_response = max_response_tokens
        self._temperature = temperature
        self._rng = np.random.default_rng(seed)
        self.context_tokens = context_tokens
        self.history_tokens = history
        self.trims = 0  # times old turns left the cache
        self.trimmed_tokens = 0  # how many positions they held
        # what opens a user turn: the history is trimmed there, so it never begins
        # with an answer whose question left
        self._user_opening = self._llm.tokenize(
            opening("user").encode("utf-8"), add_bos=False, special=True
        )
        self.tokens: list[int] = []
        self.hidden: Float32Array = np.zeros(self.hidden_size, dtype=np.float32)
        self._logits: Float32Array = np.zeros(self._n_vocab, dtype=np.float32)
        self.system_prompt = system_prompt
        self.state_head = state_head
        self.speech_head = speech_head
        self._speech_batch: Any = None
        self._pieces: list[str] | None = None  # every token's text, for decoding calls
        self.reset()

    def reset(self) -> None:
        """Start a new conversation: an empty cache with the system prompt (no reload)."""
        self._llama_cpp.llama_memory_clear(self._llama_cpp.llama_get_memory(self._ctx), True)
        self.tokens = []
        self._open_role: str | None = None
        self._turn_start = 0  # where the open turn's contents begin
        self._user_text = ""
        self._answer: _Answer | None = None
        self._call: ToolCall | None = None
        self._before_answer = self._mark()
        # where the cache was before `listen_tentatively`, until kept or retracted
        self._tentative: _Mark | None = None
        self._append(opening("system") + self.system_prompt + TURN_END, hidden=False)
        self._system_tokens = len(self.tokens)

    def set_instructions(self, text: str) -> None:
        """A new system prompt; the conversation so far is kept and re-read after it."""
        if self._answer is not None:
            raise ValueError("instructions can change between answers only")
        rest = self.tokens[self._system_tokens :]
        self.system_prompt = text
        self._cut(0)
        self._append(opening("system") + text + TURN_END, hidden=False)
        self._system_tokens = len(self.tokens)
        if rest:
            self._eval(rest, hidden=True)

    # the DuplexLM port --------------------------------------------------------

    def listen(self, text: str) -> StateProbs:
        if text.strip():
            self._tentative = None  # words after tentative ones keep them
        if self._open_role != "user":
            self._open("user")
            text = text.lstrip()
        text = self._styled(text)
        if text.strip():
            self._user_text += text
            # P(end) is read before a final mark: the recognizer puts one after
            # "Can you tell me" too, the LM's next token knows better
            body = _FINAL_MARKS.sub("", text)
            if body:
                self._append(body, hidden=True)
            self._p_end = self._end_probability()
            if len(body) < len(text):
                self._append(text[len(body) :], hidden=True)
        return self._state(self._user_text, overlap=False)

    def listen_tentatively(self, text: str) -> StateProbs:
        if self._open_role != "user":
            self._open("user")
        mark = self._mark()
        probs = self.listen(text)
        self._tentative = mark
        return probs

    def retract(self) -> None:
        if self._tentative is None:
            return
        if self._answer is not None:
            raise ValueError("cancel the answer to tentative words before retracting them")
        self._rewind(self._tentative)
        self._tentative = None

    def listen_speech(self, embeddings: Float32Array) -> StateProbs:
        if self._open_role != "user":
            self._open("user")
        if len(embeddings):
            self.hear(embeddings)
        return self._speech_state()

    def overlap_speech(self, embeddings: Float32Array) -> StateProbs:
        with self._probe():
            self._hear_over_answer(embeddings)
            return self._speech_state()

    def overlap_words(self, embeddings: Float32Array) -> str:
        with self._probe():
            self._hear_over_answer(embeddings)
            return self.transcribe_heard()

    def _hear_over_answer(self, embeddings: Float32Array) -> None:
        self._append(TURN_END + opening("user"), hidden=True)
        if len(embeddings):
            self.hear(embeddings)

    def rewrite_turn(self, text: str) -> None:
        if self._open_role != "user":
            self._open("user")
        self._cut(self._turn_start)
        self._user_text = ""
        self.listen(text.lstrip())

    def _speech_state(self) -> StateProbs:
        if self.speech_head is None:
            raise RuntimeError(
                "speech understanding needs the speech state head: train it with "
                "`duplex train-adapter`"
            )
        return self.speech_head(self.hidden)

    @property
    def p_end(self) -> float | None:
        """P(the user's words so far end the turn), read before their final mark."""
        return self._p_end

    def _end_probability(self) -> float:
        """P(the next token ends the sentence or the turn) at the end of the cache."""
        logits = self._logits
        top = float(logits.max())
        total = float(np.exp(logits - top).sum())
        return float(np.exp(logits[self._end_tokens] - top).sum()) / total

    def overlap(self, text: str) -> StateProbs:
        with self._probe():
            probe = TURN_END + opening("user") + self._styled(text.strip())
            self._append(probe, hidden=True)
            return self._state(text, overlap=True)

    @contextlib.contextmanager
    def _probe(self) -> Iterator[None]:
        """Whatever is appended inside is forgotten after: the cache, its logits and
        hidden state are as they were (the answer goes on from where it was)."""
        mark = self._mark()
        try:
            yield
        finally:
            self._rewind(mark)

    def _state(self, text: str, overlap: bool) -> StateProbs:
        if self.state_head is None:
            return rule_state(text, overlap, None if overlap else self._p_end)
        return self.state_head(self.hidden)

    def _styled(self, text: str) -> str:
        """User words as the state head was trained to read them."""
        if self.state_head is None or self.state_head.text_style != "plain" or not text:
            return text
        return (" " if text[0].isspace() else "") + plain(text)

    def begin_response(self, tools: Tools = NO_TOOLS, instructions: str = "") -> None:
        self._before_answer = self._mark()
        self._call = self._decide_call(tools) if tools.active else None
        if instructions.strip():
            self._open("system")
            self._append(instructions.strip(), hidden=False)
            self._close_turn()
        self._open("assistant")
        self._answer = _Answer(start=len(self.tokens), tokens=[], pieces=[])
        if self._call is not None:
            self.write_call(self._call)

    def _decide_call(self, tools: Tools) -> ToolCall | None:
        """The call this answer makes, or None to answer in words (`models.tool_calls`):
        decoded in a probe that reads the tools' note; only the call stays."""
        allowed = tools.allowed()
        if not tools.must_call:
            # only the user's own new words ask for a call: not a function's output
            words = self._user_text if self._open_role == "user" else ""
            allowed = tuple(t for t in allowed if mentioned(t, words))
            if not allowed:
                return None
        note = (TURN_END if self._open_role is not None else "") + opening("system")
        note += tools_note(allowed) + TURN_END + opening("assistant")
        decoder = CallDecoder(
            lambda text: self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False),
            lambda tokens: self._eval(tokens, hidden=False),
            lambda: self._logits,
            self._probe,
            self._vocab_pieces(),
        )
        with self._probe():
            self._append(note, hidden=False)
            return decoder.write(allowed, f"call_{uuid.uuid4().hex[:12]}")

    def tool_call(self) -> ToolCall | None:
        return self._call if self._answer is not None else None

    def write_call(self, call: ToolCall) -> None:
        """The answer is this call: it joins the cache as the assistant's turn, closed."""
        answer = self._answer
        if answer is None or answer.done:
            raise ValueError("no answer is open to write to")
        self._call = call
        tokens = self._llm.tokenize(call_text(call).encode("utf-8"), add_bos=False, special=False)
        answer.tokens += tokens
        answer.pieces += [self._piece(t) for t in tokens]
        self._eval(tokens, hidden=False)
        self._close_answer()

    def add_tool_result(self, call_id: str, output: str) -> None:
        """A function's output, as a `tool` turn after the call."""
        if self._answer is not None and not self._answer.done:
            raise ValueError("a function's output joins between answers")
        self._open("tool")
        self._append(json.dumps({"id": call_id, "output": output}), hidden=False)
        self._close_turn()
        self._answer = None

    def _vocab_pieces(self) -> list[str]:
        if self._pieces is None:
            self._pieces = [self._piece(t) for t in range(self._n_vocab)]
        return self._pieces

    def cancel_response(self) -> None:
        """A speculative answer the user talked over: back to the open user turn, as it was."""
        self._rewind(self._before_answer)
        self._answer, self._open_role, self._call = None, "user", None

    def speak(self, max_tokens: int) -> tuple[str, bool]:
        answer = self._answer
        if answer is None or answer.done:
            return "", True
        text = ""
        for _ in range(max_tokens):
            token = self._sample()
            if token == self._end_token or len(answer.tokens) >= self._max_response:
                self._close_answer()
                break
            piece = self._piece(token)
            answer.tokens.append(token)
            answer.pieces.append(piece)
            text += piece
            self._eval([token], hidden=False)
        return text, answer.done

    def write(self, text: str, done: bool) -> None:
        """Answer text from an external responder joins the answer in the cache.

        Its tokens become the answer's pieces, so `truncate` cuts it where the
        user stopped hearing it and `speak` can carry on from it (a fallback).
        """
        answer = self._answer
        if answer is None or answer.done:
            raise ValueError("no answer is open to write to")
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if tokens:
            answer.tokens += tokens
            answer.pieces += [self._piece(t) for t in tokens]
            self._eval(tokens, hidden=False)
        if done:
            self._close_answer()

    def messages(self) -> list[dict[str, Any]]:
        """The conversation in the cache as chat messages, calls and their outputs as
        chat completions has them; an answer not begun is left out."""
        out: list[dict[str, Any]] = []
        calls: set[str] = set()
        for role, content in turns(self.text()):
            content = content.strip()
            call = parse_call(content) if role == "assistant" else None
            if call is not None:
                calls.add(call.call_id)
                function = {"name": call.name, "arguments": call.arguments}
                tool_call = {"id": call.call_id, "type": "function", "function": function}
                out.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
            elif role == "tool":
                result = _tool_result(content)
                if result is not None and result[0] in calls:  # its call may have left
                    out.append({"role": "tool", "tool_call_id": result[0], "content": result[1]})
            else:
                out.append({"role": role, "content": content})
        last = out[-1] if out else {}
        if last.get("role") == "assistant" and not last["content"] and not last.get("tool_calls"):
            out.pop()
        return out

    def truncate(self, played_text: str) -> None:
        """Cut the answer in the cache after the last token the user heard; close the turn.

        `played_text` is a prefix (up to whitespace) of what `speak` returned;
        any heard text past the last whole kept token is appended again.
        """
        answer = self._answer
        if answer is None:
            return
        heard = " ".join(played_text.split())
        kept, kept_text = 0, ""
        for count in range(1, len(answer.pieces) + 1):
            candidate = " ".join("".join(answer.pieces[:count]).split())
            if not heard.startswith(candidate):
                break
            kept, kept_text = count, candidate
        self._cut(answer.start + kept)  # the turn's end goes too, if it was written
        rest = heard[len(kept_text) :]
        if rest:
            self._append(rest, hidden=False)
        self._answer, self._open_role = None, "assistant"
        self._close_turn()

    # reading the model ---------------------------------------------------------

    def read(self, pieces: list[str]) -> Float32Array:
        """Append pieces to the cache in one forward; the hidden state at each piece's end.

        Pieces are tokenized one by one, as `listen` appends them, so a prefix
        read here has the same tokens (and hidden state) as in a live session.
        For training: it bypasses the turn bookkeeping of the port methods.
        """
        lib = self._llama_cpp
        tokens: list[int] = []
        ends: list[int] = []
        for piece in pieces:
            tokens += self._llm.tokenize(piece.encode("utf-8"), add_bos=False, special=True)
            ends.append(len(tokens) - 1)
        if len(self.tokens) + len(tokens) > self.context_tokens:
            raise ValueError(f"{len(self.tokens) + len(tokens)} tokens exceed the LM context")
        lib.llama_set_embeddings(self._ctx, True)
        self._sync_threads()
        batch, hidden = self._llm._batch, []
        for i in range(0, len(tokens), self._llm.n_batch):
            chunk = tokens[i : i + self._llm.n_batch]
            batch.set_batch(batch=chunk, n_past=len(self.tokens), logits_all=True)
            self._llm._ctx.decode(batch)
            self.tokens += chunk
            hidden.append(
                _floats(lib.llama_get_embeddings(self._ctx), len(chunk) * self.hidden_size)
            )
        self._logits = _floats(lib.llama_get_logits_ith(self._ctx, -1), self._n_vocab)
        states = np.concatenate(hidden).reshape(len(tokens), self.hidden_size)
        return states[ends]

    def hear(self, embeddings: Float32Array) -> Float32Array:
        """Append speech positions (the adapter's LM embeddings) to the cache in one
        forward; the hidden state at each. They sit in the cache as tokens do, so
        `_cut` and the turn bookkeeping treat them alike; `text()` shows them as
        `SPEECH_MARK`."""
        lib = self._llama_cpp
        count = len(embeddings)
        self._check_room(count)
        if self._speech_batch is None:
            self._speech_batch = lib.llama_batch_init(_SPEECH_BATCH, self.hidden_size, 1)
        batch = self._speech_batch
        lib.llama_set_embeddings(self._ctx, True)
        self._sync_threads()
        states = []
        for i in range(0, count, _SPEECH_BATCH):
            part = np.ascontiguousarray(embeddings[i : i + _SPEECH_BATCH], dtype=np.float32)
            batch.n_tokens = len(part)
            ctypes.memmove(batch.embd, part.ctypes.data, part.nbytes)
            for j in range(len(part)):
                batch.pos[j] = len(self.tokens) + j
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = 0
                batch.logits[j] = True
            if lib.llama_decode(self._ctx, batch) != 0:
                raise RuntimeError("the LM could not decode the speech positions")
            self.tokens += [SPEECH_POSITION] * len(part)
            states.append(_floats(lib.llama_get_embeddings(self._ctx), part.size))
        if not states:
            return np.zeros((0, self.hidden_size), np.float32)
        self._logits = _floats(lib.llama_get_logits_ith(self._ctx, -1), self._n_vocab)
        hidden = np.concatenate(states).reshape(count, self.hidden_size)
        self.hidden = hidden[-1].copy()
        return hidden

    def transcribe_heard(self) -> str:
        """Greedy continuation of the open turn up to its end, then forgotten again:
        after speech positions, what the LM read in them (the adapter's transcript).
        At most 4 + one token per two positions (6 a second of speech; people say
        about 4): a continuation that loops stops, as the recognizer's does."""
        heard = self.tokens[self._turn_start :].count(SPEECH_POSITION)
        tokens: list[int] = []
        with self._probe():
            for _ in range(4 + heard // 2):
                token = int(np.argmax(self._logits))
                if token == self._end_token:
                    break
                tokens.append(token)
                self._eval([token], hidden=False)
        return self._llm.detokenize(tokens).decode("utf-8", "replace").strip()

    def forget_from(self, position: int) -> None:
        """Drop cached tokens from `position` on (training probes; the port uses truncate)."""
        self._cut(position)

    def logits(self) -> Float32Array:
        """Next-token logits at the end of the cache (for tests and the benchmark)."""
        return self._logits.copy()

    def text(self) -> str:
        """The whole context as the model sees it; each run of speech positions is one
        SPEECH_MARK."""
        parts, run = [], []
        for i, token in enumerate(self.tokens):
            if token != SPEECH_POSITION:
                run.append(token)
            elif i == 0 or self.tokens[i - 1] != SPEECH_POSITION:
                parts += [self._llm.detokenize(run, special=True).decode("utf-8", "replace")]
                parts.append(SPEECH_MARK)
                run = []
        parts.append(self._llm.detokenize(run, special=True).decode("utf-8", "replace"))
        return "".join(parts)

    # cache mechanics -------------------------------------------------------------

    def _open(self, role: str) -> None:
        if self._answer is not None and not self._answer.done:
            self._close_answer()
        if self._open_role is not None:
            self._close_turn()
        self._answer = None
        if role == "user":
            self._trim_history()
        self._append(opening(role), hidden=role == "user")
        self._open_role = role
        self._turn_start = len(self.tokens)
        if role == "user":
            self._user_text, self._p_end, self._tentative = "", None, None

    def _close_turn(self) -> None:
        if self._open_role is not None:
            self._append(TURN_END, hidden=False)
            self._open_role = None

    def _close_answer(self) -> None:
        """The answer is complete; it stays truncatable until the next turn opens."""
        assert self._answer is not None
        self._answer.done = True
        self._close_turn()

    def _append(self, text: str, *, hidden: bool) -> None:
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if tokens:
            self._eval(tokens, hidden=hidden)

    def _eval(self, tokens: list[int], *, hidden: bool) -> None:
        """Decode tokens at the end of the cache; keep logits (and hidden state) of the last."""
        lib = self._llama_cpp
        self._check_room(len(tokens))
        lib.llama_set_embeddings(self._ctx, hidden)
        self._sync_threads()
        batch = self._llm._batch
        for i in range(0, len(tokens), self._llm.n_batch):
            chunk = tokens[i : i + self._llm.n_batch]
            batch.set_batch(batch=chunk, n_past=len(self.tokens), logits_all=False)
            self._llm._ctx.decode(batch)
            self.tokens += chunk
        self._logits = _floats(lib.llama_get_logits_ith(self._ctx, -1), self._n_vocab)
        if hidden:
            self.hidden = _floats(lib.llama_get_embeddings_ith(self._ctx, -1), self.hidden_size)

    def _trim_history(self) -> None:
        """The oldest whole exchanges leave the cache until the history fits
        `history_tokens`: it is cut where a user turn opens.

        Called as a user turn opens: every turn before it is closed, and no mark
        points past the system prompt. Where llama.cpp cannot shift positions
        (`llama_memory_can_shift`), the kept turns are read again instead.
        """
        system, history = self._system_tokens, len(self.tokens) - self._system_tokens
        if history <= self.history_tokens:
            return
        n = len(self._user_opening)
        starts = [
            i
            for i in range(system + 1, len(self.tokens))
            if self.tokens[i : i + n] == self._user_opening
        ]
        end = next(
            (i for i in starts if len(self.tokens) - i <= self.history_tokens), len(self.tokens)
        )
        removed, kept = end - system, self.tokens[end:]
        lib = self._llama_cpp
        memory = lib.llama_get_memory(self._ctx)
        if lib.llama_memory_can_shift(memory):
            lib.llama_memory_seq_rm(memory, 0, system, end)
            lib.llama_memory_seq_add(memory, 0, end, -1, -removed)
            self.tokens = self.tokens[:system] + kept
        else:
            # speech positions cannot be read again: their embeddings are gone
            logits, hidden = self._logits, self.hidden
            self._cut(system)
            text = [t for t in kept if t != SPEECH_POSITION]
            if text:
                self._eval(text, hidden=False)
            self._logits, self.hidden = logits, hidden
        self.trims += 1
        self.trimmed_tokens += removed
        log.debug("%d tokens of old turns left the cache (%d stay)", removed, len(kept))

    def _check_room(self, count: int) -> None:
        if len(self.tokens) + count > self.context_tokens:
            raise RuntimeError(
                f"this turn outgrew the LM context ({self.context_tokens} tokens, "
                f"{self.history_tokens} of them for earlier turns); raise "
                "models.context_tokens or lower models.history_tokens"
            )

    def _sync_threads(self) -> None:
        """Read on `read_threads` from the next decode on (a server changes it as
        sessions come and go)."""
        if self.read_threads != self._read_threads_set:
            self._llama_cpp.llama_set_n_threads(self._ctx, self._threads, self.read_threads)
            self._read_threads_set = self.read_threads

    def _mark(self) -> _Mark:
        return _Mark(len(self.tokens), self._logits, self.hidden, self._user_text, self._p_end)

    def _rewind(self, mark: _Mark) -> None:
        """Back to `mark`: later tokens forgotten, its logits and readings restored."""
        self._cut(mark.position)
        self._logits, self.hidden = mark.logits, mark.hidden
        self._user_text, self._p_end = mark.user_text, mark.p_end

    def _cut(self, position: int) -> None:
        """Forget every cached token from `position` on (the caller restores logits)."""
        if position < len(self.tokens):
            memory = self._llama_cpp.llama_get_memory(self._ctx)
            self._llama_cpp.llama_memory_seq_rm(memory, 0, position, -1)
            self.tokens = self.tokens[:position]

    def _sample(self) -> int:
        logits = self._logits
        if self._answer is not None and self._answer.tokens:
            # a small model loops ("1882.5500000..."): damp tokens it just said
            recent = np.unique(self._answer.tokens[-REPEAT_WINDOW:])
            logits = logits.copy()
            seen = logits[recent]
            logits[recent] = np.where(seen > 0, seen / REPEAT_PENALTY, seen * REPEAT_PENALTY)
        if self._temperature <= 0:
            return int(np.argmax(logits))
        scaled = (logits - logits.max()) / self._temperature
        probs = np.exp(scaled)
        probs /= probs.sum()
        return int(self._rng.choice(self._n_vocab, p=probs))

    def _piece(self, token: int) -> str:
        return self._llm.detokenize([token]).decode("utf-8", "replace")

    def _token_id(self, text: str) -> int:
        [token] = self._llm.tokenize(text.encode(), add_bos=False, special=True)
        return int(token)


def _tool_result(content: str) -> tuple[str, str] | None:
    """(call id, output) of a tool turn."""
    try:
        body = json.loads(content)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        return None
    return body["id"], str(body.get("output", ""))


def _floats(pointer: Any, n: int) -> Float32Array:
    array = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n,))
    return np.array(array, dtype=np.float32)
