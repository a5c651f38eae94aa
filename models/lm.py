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
A client's item leaves the same way when it asks, between answers
(`forget`): each turn is kept with where it starts and the item it is.

The cache itself, llama.cpp and its one decode loop, is `models.llama_cache`;
this module keeps the conversation in it: ChatML turns, the user's words and
the end probability read from them, answers, calls, and cuts at turn bounds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from duplex.ports import StateProbs
from duplex.text import plain
from duplex.tools import NO_TOOLS, Tool, ToolCall, Tools
from models.arithmetic import calculation
from models.chatml import TURN_END, opening, turns
from models.end_of_turn import rule_state
from models.llama_cache import SPEECH_POSITION, LlamaCache, Mark
from models.state_head import StateHead
from models.tool_calls import CallDecoder, call_text, mentioned, parse_call, tools_note

Float32Array = npt.NDArray[np.float32]


_FINAL_MARKS = re.compile(r"[.?!]+\s*$")  # what the end probability is read before

REPEAT_PENALTY = 1.15
REPEAT_WINDOW = 32


@dataclass
class _Answer:
    start: int  # cache position where the answer's tokens begin
    tokens: list[int]
    pieces: list[str]
    limit: int  # tokens at most
    done: bool = False
    opening: str = ""  # the answer's words, when they are not the LM's (a sum's result)


class _Mark(NamedTuple):
    """Where the cache was, where its open turn began, and the end probability read
    there: `_rewind` goes back."""

    cache: Mark
    turn_start: int
    p_end: float | None


class _Turn(NamedTuple):
    """A turn after the system prompt: where its opening is in the cache, and the
    conversation's item it is ("": none yet)."""

    start: int
    role: str
    item: str = ""


log = logging.getLogger(__name__)


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
        calculator: bool = True,
    ) -> None:
        """`state_head`: the learned listen/speak/dismiss head; None uses `rule_state`.
        `speech_head`: the head trained on speech positions (`listen_speech`).
        `calculator`: the answer to a spoken sum is its result (`models.arithmetic`).
        `history_tokens`: how much of the conversation after the system prompt stays
        in the cache when a user turn opens (default: half the context)."""
        history = context_tokens // 2 if history_tokens is None else history_tokens
        if not 0 < history < context_tokens:
            raise ValueError(
                f"history_tokens must be between 0 and context_tokens ({context_tokens}), "
                f"got {history}"
            )
        self.cache = LlamaCache(
            model_path,
            device=device,
            context_tokens=context_tokens,
            threads=threads,
            read_threads=read_threads,
            seed=seed,
        )
        self.device = self.cache.device
        self._end_token = self.cache.token_id("<|im_end|>")
        self._end_tokens = [self._end_token, *(self.cache.token_id(mark) for mark in ".?!")]
        self._p_end: float | None = None
        self._max_response = max_response_tokens
        self._temperature = temperature
        self._rng = np.random.default_rng(seed)
        self.history_tokens = history
        self.trims = 0  # times old turns left the cache
        self.trimmed_tokens = 0  # how many positions they held
        # what opens a user turn: the history is trimmed there, so it never begins
        # with an answer whose question left
        self._user_opening = self.cache.tokenize(opening("user"))
        self.system_prompt = system_prompt
        self.state_head = state_head
        self.speech_head = speech_head
        self.calculator = calculator
        self._writing_call: Generator[None, None, None] | None = None  # `_call_steps`
        self.reset()

    def reset(self) -> None:
        """Start a new conversation: an empty cache with the system prompt (no reload)."""
        self._stop_writing_call()
        self.cache.clear()
        self._open_role: str | None = None
        self._turn_start = 0  # where the open turn's contents begin
        self._answer: _Answer | None = None
        self._call: ToolCall | None = None
        self._deferred: tuple[str, int, str] = ("", 0, "")  # its instructions, limit, item
        self._before_answer = self._mark()
        # where the cache was before `listen_tentatively`, until kept or retracted
        self._tentative: _Mark | None = None
        self._turns: list[_Turn] = []  # every turn after the system prompt, in order
        self.cache.append(opening("system") + self.system_prompt + TURN_END)
        self._system_tokens = len(self.cache.tokens)

    @property
    def read_threads(self) -> int:
        """Threads a read of several positions runs on (a server lowers it while other
        sessions run)."""
        return self.cache.read_threads

    @read_threads.setter
    def read_threads(self, threads: int) -> None:
        self.cache.read_threads = threads

    def set_instructions(self, text: str) -> None:
        """A new system prompt; the conversation so far is kept and re-read after it."""
        if self._answer is not None:
            raise ValueError("instructions can change between answers only")
        rest = self.cache.tokens[self._system_tokens :]
        self.system_prompt = text
        self.cache.cut(0)
        self.cache.append(opening("system") + text + TURN_END)
        moved = len(self.cache.tokens) - self._system_tokens
        self._system_tokens = len(self.cache.tokens)
        self._turns = [t._replace(start=t.start + moved) for t in self._turns]
        if rest:
            self.cache.decode(rest, hidden=True)

    # the DuplexLM port --------------------------------------------------------

    def listen(self, text: str) -> StateProbs:
        if text.strip():
            self._tentative = None  # words after tentative ones keep them
        if self._to_user_turn():
            text = text.lstrip()
        text = self._styled(text)
        if text.strip():
            # P(end) is read before a final mark: the recognizer puts one after
            # "Can you tell me" too, the LM's next token knows better
            body = _FINAL_MARKS.sub("", text)
            if body:
                self.cache.append(body, hidden=True)
            self._p_end = self._end_probability()
            if len(body) < len(text):
                self.cache.append(text[len(body) :], hidden=True)
        return self._state(self._turn_text(), overlap=False)

    def listen_tentatively(self, text: str) -> StateProbs:
        self._to_user_turn()
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
        self._to_user_turn()
        if len(embeddings):
            self.cache.hear(embeddings)
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
        self.cache.append(TURN_END + opening("user"), hidden=True)
        if len(embeddings):
            self.cache.hear(embeddings)

    def rewrite_turn(self, text: str) -> None:
        self._to_user_turn()
        self.cache.cut(self._turn_start)
        self.listen(text.lstrip())

    def _turn_text(self) -> str:
        """The open user turn's words, as the cache holds them (the one copy)."""
        if self._open_role != "user":
            return ""
        words = [t for t in self.cache.tokens[self._turn_start :] if t != SPEECH_POSITION]
        return self.cache.detokenize(words)

    def _speech_state(self) -> StateProbs:
        if self.speech_head is None:
            raise RuntimeError(
                "speech understanding needs the speech state head: train it with "
                "`duplex train-adapter`"
            )
        return self.speech_head(self.cache.hidden)

    @property
    def p_end(self) -> float | None:
        """P(the user's words so far end the turn), read before their final mark."""
        return self._p_end

    def _end_probability(self) -> float:
        """P(the next token ends the sentence or the turn) at the end of the cache."""
        logits = self.cache.logits
        top = float(logits.max())
        total = float(np.exp(logits - top).sum())
        return float(np.exp(logits[self._end_tokens] - top).sum()) / total

    def overlap(self, text: str) -> StateProbs:
        with self._probe():
            probe = TURN_END + opening("user") + self._styled(text.strip())
            self.cache.append(probe, hidden=True)
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
        return self.state_head(self.cache.hidden)

    def _styled(self, text: str) -> str:
        """User words as the state head was trained to read them."""
        if self.state_head is None or self.state_head.text_style != "plain" or not text:
            return text
        return (" " if text[0].isspace() else "") + plain(text)

    def begin_response(
        self, tools: Tools = NO_TOOLS, instructions: str = "", max_tokens: int | None = None
    ) -> None:
        self._before_answer = self._mark()
        self._call = None
        asked = self._turn_text()  # the user's words this answer is to
        limit = self._max_response if max_tokens is None else max_tokens
        callable_ = self._callable(tools, asked) if tools.active else ()
        if callable_:  # the answer may be a call: `speak` writes it, a few tokens a step;
            # its turn opens once it is written (the tools' note is read before it)
            self._writing_call = self._call_steps(callable_)
            self._deferred = (instructions, limit, "")
            self._answer = _Answer(start=len(self.cache.tokens), tokens=[], pieces=[], limit=limit)
            return
        answer = self._open_answer(instructions, limit)
        if self.calculator:
            answer.opening = calculation(asked) or ""

    def _open_answer(self, instructions: str, limit: int) -> _Answer:
        """The assistant's turn opens (after the answer's own instructions, if any)."""
        self._answer = None
        if instructions.strip():
            self._open("system")
            self.cache.append(instructions.strip())
            self._close_turn()
        self._open("assistant")
        self._answer = _Answer(start=len(self.cache.tokens), tokens=[], pieces=[], limit=limit)
        return self._answer

    def _callable(self, tools: Tools, asked: str) -> tuple[Tool, ...]:
        """The tools this answer may call (`models.tool_calls`): on auto, only those the
        user's own new words name (not a function's output, which `asked` is not)."""
        allowed = tools.allowed()
        if tools.must_call:
            return allowed
        return tuple(t for t in allowed if mentioned(t, asked))

    def _call_steps(self, allowed: tuple[Tool, ...]) -> Generator[None, None, None]:
        """Writes the call one decode a step: decoded in a probe that reads the tools'
        note, then the answer is the call alone (`write_call`)."""
        note = (TURN_END if self._open_role is not None else "") + opening("system")
        note += tools_note(allowed) + TURN_END + opening("assistant")
        cache = self.cache
        decoder = CallDecoder(
            lambda text: cache.tokenize(text, special=False),
            cache.decode,
            lambda: cache.logits,
            self._probe,
            cache.vocabulary(),
        )
        with self._probe():
            cache.append(note)
            yield
            call = yield from decoder.write(allowed, f"call_{uuid.uuid4().hex[:12]}")
        self._writing_call = None
        self._open_deferred()
        self.write_call(call)

    def _open_deferred(self) -> None:
        """The turn of an answer that was to be a call opens now, named as it was asked."""
        instructions, limit, item = self._deferred
        self._open_answer(instructions, limit)
        if item:
            self.name_turn(item, "assistant")

    def _stop_writing_call(self) -> None:
        """A call being written is dropped, its probe forgotten."""
        if self._writing_call is not None:
            self._writing_call.close()
            self._writing_call = None

    def _answer_without_own_call(self) -> None:
        """The LM's own call, if one is being written, is not the answer (a responder
        writes it, or the user heard nothing of it): its turn opens as it was asked."""
        if self._writing_call is not None:
            self._stop_writing_call()
            self._open_deferred()

    def tool_call(self) -> ToolCall | None:
        return self._call if self._answer is not None else None

    def write_call(self, call: ToolCall) -> None:
        """The answer is this call: it joins the cache as the assistant's turn, closed."""
        self._answer_without_own_call()  # a responder's call
        answer = self._answer
        if answer is None or answer.done:
            raise ValueError("no answer is open to write to")
        self._call = call
        self._add_to_answer(answer, self.cache.tokenize(call_text(call), special=False))
        self._close_answer()

    def add_message(self, role: str, text: str) -> None:
        """A system note or an assistant message, as its own closed turn."""
        if role not in ("system", "assistant"):
            raise ValueError(f"a message's role is system or assistant, got {role!r}")
        if self._answer is not None and not self._answer.done:
            raise ValueError("a message joins between answers")
        self._open(role)
        self.cache.append(text.strip(), hidden=False)
        self._close_turn()
        self._answer = None

    def name_turn(self, item: str, role: str) -> None:
        """The latest `role` turn is the item `item` (kept if it has a name already); an
        answer's own instructions, the unnamed system turns just before it, go with it."""
        if role == "assistant" and self._writing_call is not None:
            self._deferred = (*self._deferred[:2], item)  # its turn opens once it is written
            return
        indexes = [i for i, turn in enumerate(self._turns) if turn.role == role]
        if not indexes or self._turns[indexes[-1]].item:
            return
        first = last = indexes[-1]
        while role == "assistant" and first and self._turns[first - 1].role == "system":
            if self._turns[first - 1].item:
                break
            first -= 1
        for i in range(first, last + 1):
            self._turns[i] = self._turns[i]._replace(item=item)

    def forget(self, item: str) -> None:
        """The turns named `item` leave the cache and what follows slides down over them,
        as old turns leave it (`_trim_history`): no token is read again."""
        if self._answer is not None and not self._answer.done:
            raise ValueError("an item leaves the conversation between answers")
        for index in reversed([i for i, turn in enumerate(self._turns) if turn.item == item]):
            self._take_out(index)

    def _take_out(self, index: int) -> None:
        """Turn `index` leaves the cache; the positions after it move down."""
        start, later = self._turns[index].start, self._turns[index + 1 :]
        end = later[0].start if later else len(self.cache.tokens)
        gone = end - start
        self._turns[index:] = [t._replace(start=t.start - gone) for t in later]
        if later:
            self.cache.remove(start, end)
            self._turn_start -= gone  # the latest turn's words come after it
            if self._tentative is not None:
                self._tentative = _moved(self._tentative, -gone)
        else:  # the latest turn, open or not
            self.cache.cut(start)
            self._open_role, self._p_end, self._tentative = None, None, None
        answer = self._answer
        if answer is not None and answer.start >= start:
            if answer.start < end:
                self._answer = None  # the latest answer itself: nothing is left to cut
            else:
                answer.start -= gone

    def add_tool_result(self, call_id: str, output: str) -> None:
        """A function's output, as a `tool` turn after the call."""
        if self._answer is not None and not self._answer.done:
            raise ValueError("a function's output joins between answers")
        self._open("tool")
        self.cache.append(json.dumps({"id": call_id, "output": output}))
        self._close_turn()
        self._answer = None

    def cancel_response(self) -> None:
        """A speculative answer the user talked over: back to the open user turn, as it was."""
        self._stop_writing_call()
        self._rewind(self._before_answer)
        self._answer, self._open_role, self._call = None, "user", None

    def speak(self, max_tokens: int) -> tuple[str, bool]:
        answer = self._answer
        if answer is None or answer.done:
            return "", True
        if self._writing_call is not None:
            for _ in range(max(1, max_tokens)):
                try:
                    next(self._writing_call)
                except StopIteration:
                    self._writing_call = None
                    return "", True
            return "", False
        if answer.opening:  # the sum's result, worked out: the whole answer
            text, answer.opening = answer.opening, ""
            self._add_to_answer(answer, self.cache.tokenize(text, special=False))
            self._close_answer()
            return text, True
        text = ""
        for _ in range(max_tokens):
            token = self._sample()
            if token == self._end_token or len(answer.tokens) >= answer.limit:
                self._close_answer()
                break
            self._add_to_answer(answer, [token])
            text += answer.pieces[-1]
        return text, answer.done

    def write(self, text: str, done: bool) -> None:
        """Answer text from an external responder joins the answer in the cache.

        Its tokens become the answer's pieces, so `truncate` cuts it where the
        user stopped hearing it and `speak` can carry on from it (a fallback).
        """
        self._answer_without_own_call()  # the responder writes it, call or words
        answer = self._answer
        if answer is None or answer.done:
            raise ValueError("no answer is open to write to")
        answer.opening = ""  # the responder's words are the whole answer
        self._add_to_answer(answer, self.cache.tokenize(text, special=False))
        if done:
            self._close_answer()

    def _add_to_answer(self, answer: _Answer, tokens: list[int]) -> None:
        """Tokens join the answer in the cache, each with its text (to cut it by)."""
        if tokens:
            answer.tokens += tokens
            answer.pieces += [self.cache.piece(t) for t in tokens]
            self.cache.decode(tokens)

    def messages(self) -> list[dict[str, Any]]:
        """The conversation in the cache as chat messages, calls and their outputs as
        chat completions has them; an answer not begun is left out."""
        out: list[dict[str, Any]] = []
        calls: set[str] = set()
        for role, content in turns(self.cache.text()):
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
        self._answer_without_own_call()  # nothing of a call is heard: its turn is empty
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
        self.cache.cut(answer.start + kept)  # the turn's end goes too, if it was written
        rest = heard[len(kept_text) :]
        if rest:
            self.cache.append(rest)
        self._answer, self._open_role = None, "assistant"
        self._close_turn()

    def transcribe_heard(self) -> str:
        """Greedy continuation of the open turn up to its end, then forgotten again:
        after speech positions, what the LM read in them (the adapter's transcript).
        At most 4 + one token per two positions (6 a second of speech; people say
        about 4): a continuation that loops stops, as the recognizer's does."""
        heard = self.cache.tokens[self._turn_start :].count(SPEECH_POSITION)
        tokens: list[int] = []
        with self._probe():
            for _ in range(4 + heard // 2):
                token = int(np.argmax(self.cache.logits))
                if token == self._end_token:
                    break
                tokens.append(token)
                self.cache.decode([token])
        return self.cache.detokenize(tokens).strip()

    # turns in the cache -------------------------------------------------------------

    def _open(self, role: str) -> None:
        if self._answer is not None and not self._answer.done:
            self._close_answer()
        if self._open_role is not None:
            self._close_turn()
        self._answer = None
        if role == "user":
            self._trim_history()
        self._turns.append(_Turn(len(self.cache.tokens), role))
        self.cache.append(opening(role), hidden=role == "user")
        self._open_role = role
        self._turn_start = len(self.cache.tokens)
        if role == "user":
            self._p_end, self._tentative = None, None

    def _close_turn(self) -> None:
        if self._open_role is not None:
            self.cache.append(TURN_END)
            self._open_role = None

    def _close_answer(self) -> None:
        """The answer is complete; it stays truncatable until the next turn opens."""
        assert self._answer is not None
        self._answer.done = True
        self._close_turn()

    def _trim_history(self) -> None:
        """The oldest whole exchanges leave the cache until the history fits
        `history_tokens`: it is cut where a user turn opens.

        Called as a user turn opens: every turn before it is closed, and no mark
        points past the system prompt (`LlamaCache.remove` slides the rest down).
        """
        tokens, system = self.cache.tokens, self._system_tokens
        if len(tokens) - system <= self.history_tokens:
            return
        n = len(self._user_opening)
        starts = [
            i for i in range(system + 1, len(tokens)) if tokens[i : i + n] == self._user_opening
        ]
        end = next((i for i in starts if len(tokens) - i <= self.history_tokens), len(tokens))
        removed = sum(1 for turn in self._turns if turn.start < end)
        self.cache.remove(system, end)
        self._turns = [t._replace(start=t.start - end + system) for t in self._turns[removed:]]
        self.trims += 1
        self.trimmed_tokens += end - system
        log.debug(
            "%d tokens of old turns left the cache (%d stay)", end - system, len(tokens) - end
        )

    def _mark(self) -> _Mark:
        return _Mark(self.cache.mark(), self._turn_start, self._p_end)

    def _rewind(self, mark: _Mark) -> None:
        """Back to `mark`: later positions forgotten, what was read there restored."""
        self.cache.rewind(mark.cache)
        self._turn_start, self._p_end = mark.turn_start, mark.p_end
        self._turns = [t for t in self._turns if t.start < len(self.cache.tokens)]

    def _to_user_turn(self) -> bool:
        """Open a user turn, unless one is open that is no item yet: whether it opened."""
        if self._open_role == "user" and self._turns and not self._turns[-1].item:
            return False
        self._open("user")
        return True

    def _sample(self) -> int:
        logits = self.cache.logits
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
        return int(self._rng.choice(self.cache.n_vocab, p=probs))


def _moved(mark: _Mark, by: int) -> _Mark:
    """`mark` with its positions `by` further on (a turn before it left the cache)."""
    cache = mark.cache._replace(position=mark.cache.position + by)
    return mark._replace(cache=cache, turn_start=mark.turn_start + by)


def _tool_result(content: str) -> tuple[str, str] | None:
    """(call id, output) of a tool turn."""
    try:
        body = json.loads(content)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        return None
    return body["id"], str(body.get("output", ""))
