"""Small deterministic stand-ins for the models, for fast tests of the core."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from duplex.audio import (
    SAMPLE_RATE,
    Float32Array,
    Frame,
    Int16Array,
    float_to_pcm16,
    frames_of,
)
from duplex.clock import VirtualClock
from duplex.config import PolicySettings
from duplex.events import Event
from duplex.ports import Responder, ResponderError, StateProbs, Synthesizer
from duplex.session import Session
from duplex.tools import NO_TOOLS, ToolCall, Tools
from duplex.vad import VadTracker
from models.turn_audio import resolved

# a user's question as (start ms, end ms, word) and the answer a scripted LM gives
QUESTION = [(0, 300, "what"), (300, 500, "time"), (500, 700, "is"), (700, 1000, "it?")]
ANSWER = "It is noon. Anything else I can help you with today? I am happy to help."


E = TypeVar("E", bound=Event)

BACKCHANNELS = {"yeah", "uh-huh", "uh huh", "mm hm", "mm-hm", "right", "ok", "okay"}


class EnergyVad:
    """Voiced when the frame's RMS clears a fixed level."""

    def __init__(self, level: float = 0.01) -> None:
        self.level = level

    def probability(self, frame: Frame) -> float:
        return 1.0 if float(np.sqrt(np.mean(frame.samples() ** 2))) > self.level else 0.0

    def reset(self) -> None:
        pass


@dataclass
class ScriptedRecognizer:
    """Knows which word is said when; reveals a word once `lag_ms` of audio after it arrived."""

    words: Sequence[tuple[int, int, str]]
    lag_ms: int = 160
    heard_until: int = 0
    emitted: set[int] = field(default_factory=set)
    last_confidence: float = 0.0  # a word scripted as "~word" is a guess: -1.0

    def accept(self, frame: Frame) -> None:
        self.heard_until = max(self.heard_until, frame.end_ms)

    def _take(self, until: int) -> str:
        out = ""
        for i, (_, end, text) in enumerate(self.words):
            if i not in self.emitted and end <= until:
                self.emitted.add(i)
                self.last_confidence = -1.0 if text.startswith("~") else 0.0
                out += " " + text.removeprefix("~")
        return out

    def stable(self) -> str:
        return self._take(self.heard_until - self.lag_ms)

    def pause(self) -> str:
        """What `finish` would add now beyond what `stable` returns next; nothing is taken."""
        return "".join(
            " " + text.removeprefix("~")
            for i, (_, end, text) in enumerate(self.words)
            if i not in self.emitted and self.heard_until - self.lag_ms < end <= self.heard_until
        )

    def finish(self) -> str:
        return self._take(self.heard_until)

    def reset(self) -> None:
        """The utterance so far is dropped: its words are never told."""
        self.emitted |= {i for i, (_, end, _) in enumerate(self.words) if end <= self.heard_until}


class ChunkListener:
    """A speech path that hears time: one position per 160 ms chunk, holding the
    chunk's end on the input timeline and whether any of it was loud."""

    def __init__(self) -> None:
        self.resets = 0
        self._frames: list[Frame] = []

    def accept(self, frame: Frame) -> Float32Array | None:
        self._frames.append(frame)
        if len(self._frames) < 8:
            return None
        loud = max(float(np.abs(f.samples()).max()) for f in self._frames) > 0.05
        chunk = np.array([[self._frames[-1].end_ms, float(loud)]], dtype=np.float32)
        self._frames = []
        return chunk

    def reset(self) -> None:
        self.resets += 1
        self._frames = []


def default_speech_state(heard: list[tuple[int, bool]], overlap: bool) -> StateProbs:
    """Scripted speech head: over the answer, a short sound is dismissed and longer
    speech (3 loud chunks) interrupts; while listening, 2 quiet chunks end the turn."""
    loud = sum(1 for _, voiced in heard if voiced)
    if overlap:
        return StateProbs(0.1, 0.9, 0.0) if loud >= 3 else StateProbs(0.1, 0.0, 0.9)
    quiet = len(heard) >= 2 and not heard[-1][1] and not heard[-2][1]
    return StateProbs(0.05, 0.95, 0.0) if quiet else StateProbs(0.95, 0.05, 0.0)


def default_state(text: str, overlap: bool) -> StateProbs:
    """Scripted state head: a question or statement that ends is complete; acks are dismissed."""
    words = text.strip().lower()
    if overlap:
        if not words:
            return StateProbs(0.9, 0.05, 0.05)
        if re.sub(r"[^\w\s-]", "", words) in BACKCHANNELS:
            return StateProbs(0.05, 0.05, 0.9)
        return StateProbs(0.05, 0.9, 0.05)
    if words.endswith((".", "?", "!")):
        return StateProbs(0.05, 0.95, 0.0)
    return StateProbs(0.95, 0.05, 0.0)


def scripted_call(answer: str, tools: Tools, count: int) -> ToolCall | None:
    """An answer scripted as `CALL name {json}` is that call, where tools allow it."""
    if not answer.startswith("CALL ") or not tools.active:
        return None
    _, name, arguments = answer.split(" ", 2)
    return ToolCall(f"call_{count}", name, arguments)


@dataclass
class ScriptedLM:
    """A DuplexLM whose answers and state probabilities are scripted.

    It keeps the conversation as (role, text) turns so tests can read what the
    model's context holds after a barge-in.
    """

    answers: Sequence[str]
    state: Callable[[str, bool], StateProbs] = default_state
    history: list[list[str]] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    cancelled: int = 0
    read_threads: int = 1
    instructions: str = ""
    speech_state: Callable[[list[tuple[int, bool]], bool], StateProbs] = default_speech_state
    heard: list[tuple[int, bool]] = field(default_factory=list)  # the open turn's speech
    said_over_answer: str = ""  # what the LM reads in speech over the answer
    retracted: int = 0
    tools_seen: list[Tools] = field(default_factory=list)  # each answer's
    max_tokens_seen: list[int | None] = field(default_factory=list)  # each answer's limit
    items: dict[str, list[list[str]]] = field(default_factory=dict)  # item -> its turns
    _words: list[str] = field(default_factory=list)
    _tentative: int | None = None
    _call: ToolCall | None = None

    def listen(self, text: str) -> StateProbs:
        if text.strip():
            self._tentative = None
        if not self.history or self.history[-1][0] != "user" or self._named(self.history[-1]):
            self.history.append(["user", ""])
            self.heard = []
        self.history[-1][1] += text
        return self.state(self.history[-1][1], False)

    def listen_tentatively(self, text: str) -> StateProbs:
        probs = self.listen(text)
        self._tentative = len(self.history[-1][1]) - len(text)
        return probs

    def retract(self) -> None:
        if self._tentative is not None:
            assert self.history[-1][0] == "user", "an answer to tentative words is open"
            self.history[-1][1] = self.history[-1][1][: self._tentative]
            self._tentative = None
            self.retracted += 1

    def overlap(self, text: str) -> StateProbs:
        self.overlaps.append(text)
        return self.state(text, True)

    def listen_speech(self, embeddings: Float32Array) -> StateProbs:
        self.listen("")
        self.heard += [(int(ms), bool(loud)) for ms, loud in embeddings]
        self.history[-1][1] += " [speech]" * len(embeddings)
        return self.speech_state(self.heard, False)

    def overlap_speech(self, embeddings: Float32Array) -> StateProbs:
        return self.speech_state([(int(ms), bool(loud)) for ms, loud in embeddings], True)

    def rewrite_turn(self, text: str) -> None:
        assert self.history[-1][0] == "user"
        self.history[-1][1] = text

    def overlap_words(self, embeddings: Float32Array) -> str:
        return self.said_over_answer

    def transcribe_heard(self) -> str:
        """The speech since the turn's words, as one word a chunk."""
        return " ".join(["word"] * self.history[-1][1].count("[speech]"))

    def begin_response(
        self, tools: Tools = NO_TOOLS, instructions: str = "", max_tokens: int | None = None
    ) -> None:
        self.max_tokens_seen.append(max_tokens)
        answer = self.answers[
            sum(1 for role, _ in self.history if role == "assistant") % len(self.answers)
        ]
        if instructions:
            self.history.append(["system", instructions])
        self.tools_seen.append(tools)
        self._call = scripted_call(answer, tools, len(self.tools_seen))
        self._words = [] if self._call else answer.split()
        self.history.append(["assistant", f"[call {self._call.name}]" if self._call else ""])

    def tool_call(self) -> ToolCall | None:
        return self._call

    def write_call(self, call: ToolCall) -> None:
        assert self.history[-1][0] == "assistant"
        self.history[-1][1] = f"[call {call.name}]"
        self._call = call

    def add_tool_result(self, call_id: str, output: str) -> None:
        self.history.append(["tool", output])

    def add_message(self, role: str, text: str) -> None:
        self.history.append([role, text])

    def name_turn(self, item: str, role: str) -> None:
        turns = [t for t in self.history if t[0] == role]
        if not turns or self._named(turns[-1]):
            return
        at = next(i for i, t in enumerate(self.history) if t is turns[-1])
        before = self.history[at - 1] if at else ["", ""]
        instructions = role == "assistant" and before[0] == "system" and not self._named(before)
        self.items.setdefault(item, []).extend([before, turns[-1]] if instructions else [turns[-1]])

    def forget(self, item: str) -> None:
        gone = self.items.pop(item, [])
        self.history[:] = [t for t in self.history if not any(t is g for g in gone)]

    def _named(self, turn: list[str]) -> bool:
        return any(turn is t for turns in self.items.values() for t in turns)

    def speak(self, max_tokens: int) -> tuple[str, bool]:
        taken, self._words = self._words[:max_tokens], self._words[max_tokens:]
        text = "".join(" " + w for w in taken)
        self.history[-1][1] += text
        return text, not self._words

    def cancel_response(self) -> None:
        assert self.history[-1][0] == "assistant"
        self.history.pop()
        if self.history and self.history[-1][0] == "system":
            self.history.pop()  # its instructions go with it
        self.cancelled += 1

    def truncate(self, played_text: str) -> None:
        assert self.history[-1][0] == "assistant"
        self.history[-1][1] = played_text

    def set_instructions(self, text: str) -> None:
        self.instructions = text

    def write(self, text: str, done: bool) -> None:
        assert self.history[-1][0] == "assistant"
        self.history[-1][1] += text

    def messages(self) -> list[dict[str, Any]]:
        return [{"role": role, "content": text} for role, text in self.turns() if text]

    def turns(self) -> list[tuple[str, str]]:
        return [(role, text.strip()) for role, text in self.history]


@dataclass
class ScriptedResponder:
    """An external engine's stream, scripted: each answer's words arrive `lag_reads`
    reads after `start`, a few per read; `fail_after` words in, it breaks off."""

    answers: Sequence[str]
    lag_reads: int = 3
    fail_after: int | None = None
    requests: list[list[dict[str, Any]]] = field(default_factory=list)
    tools_seen: list[Tools] = field(default_factory=list)
    stops: int = 0
    _words: list[str] = field(default_factory=list)
    _reads: int = 0
    _sent: int = 0
    _call: ToolCall | None = None

    def start(
        self,
        messages: list[dict[str, Any]],
        tools: Tools = NO_TOOLS,
        max_tokens: int | None = None,
    ) -> None:
        self.requests.append(messages)
        self.tools_seen.append(tools)
        answer = self.answers[(len(self.requests) - 1) % len(self.answers)]
        self._call = scripted_call(answer, tools, len(self.requests))
        self._words = [] if self._call else answer.split()
        self._reads = self._sent = 0

    def tool_call(self) -> ToolCall | None:
        return self._call

    def read(self, max_tokens: int) -> tuple[str, bool]:
        self._reads += 1
        if self._reads <= self.lag_reads:
            return "", False
        if self.fail_after is not None and self._sent >= self.fail_after:
            raise ResponderError("the engine's stream broke off")
        taken, self._words = self._words[:max_tokens], self._words[max_tokens:]
        self._sent += len(taken)
        return "".join(" " + w for w in taken), not self._words

    def stop(self) -> None:
        self.stops += 1


class ToneSynth:
    """Speaks every word as `ms_per_word` of a 440 Hz tone."""

    def __init__(self, ms_per_word: int = 200) -> None:
        self.ms_per_word = ms_per_word
        self.clauses: list[str] = []

    def synthesize(self, text: str, *, speed: float = 1.0) -> Int16Array:
        self.clauses.append(text)
        n = round(len(text.split()) * self.ms_per_word / speed) * SAMPLE_RATE // 1000
        t = np.arange(n) / SAMPLE_RATE
        return float_to_pcm16(0.3 * np.sin(2 * np.pi * 440 * t))


@dataclass
class ScriptedTurnAudio:
    """An acoustic end-of-turn model that says `p_end` whatever it hears, at once;
    records how much audio (ms) each call heard."""

    p_end: float
    heard_ms: list[int] = field(default_factory=list)

    def start(self, pcm: Int16Array) -> Future[float]:
        self.heard_ms.append(pcm.size * 1000 // SAMPLE_RATE)
        return resolved(self.p_end)


def user_audio(spans: Iterable[tuple[int, int]], total_ms: int, seed: int = 0) -> Int16Array:
    """A signal that is loud noise inside the (start_ms, end_ms) spans, silence elsewhere."""
    rng = np.random.default_rng(seed)
    signal = np.zeros(total_ms * SAMPLE_RATE // 1000, dtype=np.float32)
    for start, end in spans:
        a, b = start * SAMPLE_RATE // 1000, end * SAMPLE_RATE // 1000
        signal[a:b] = rng.normal(0, 0.2, len(signal[a:b]))
    return float_to_pcm16(signal)


@dataclass
class Harness:
    """A session on fakes, driven frame by frame under a virtual clock."""

    words: Sequence[tuple[int, int, str]]
    answers: Sequence[str] = (
        "It is noon. Anything else I can help you with today? I am happy to help.",
    )
    # the tests' timelines were worked out with 100 ms at P(speak) = 1
    settings: PolicySettings = field(default_factory=lambda: PolicySettings(min_silence_ms=100))
    responder: Responder | None = None
    understanding: str = "text"
    turn_audio: ScriptedTurnAudio | None = None
    # the voice, made on the harness's clock (default: ToneSynth)
    synthesizer: Callable[[VirtualClock], Synthesizer] | None = None

    def __post_init__(self) -> None:
        self.clock = VirtualClock()
        self.lm = ScriptedLM(self.answers)
        self.tts = ToneSynth() if self.synthesizer is None else self.synthesizer(self.clock)
        self.recognizer = ScriptedRecognizer(self.words)
        self.speech = ChunkListener()
        self.session = Session(
            vad=VadTracker(EnergyVad(), start_ms=60, end_ms=200, pre_roll_ms=200),
            recognizer=self.recognizer,
            lm=self.lm,
            synthesizer=self.tts,
            clock=self.clock,
            settings=self.settings,
            responder=self.responder,
            speech=None if self.understanding == "text" else self.speech,
            understanding=self.understanding,
            turn_audio=self.turn_audio,
        )
        self.events: list[Event] = []

    def run(self, total_ms: int, spans: Iterable[tuple[int, int]] | None = None) -> list[Event]:
        """Feed user audio up to `total_ms` (voiced where the words are, by default).

        A later call goes on from where the previous one stopped.
        """
        spans = [(s, e) for s, e, _ in self.words] if spans is None else spans
        for frame in frames_of(user_audio(spans, total_ms)):
            if frame.index < self.session.frames_seen:
                continue
            # a frame arrives when it ends; a session behind the audio catches up at once
            self.clock.advance(max(0.0, frame.end_ms - self.clock.now_ms()))
            self.events += self.session.step(frame)
        return self.events

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]
