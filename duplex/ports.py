"""The ports the core drives; `models/` implements them, tests use small fakes.

They are synchronous on purpose: the session calls them inside one tick and
a driver decides which thread that tick runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from duplex.audio import Float32Array, Frame, Int16Array
from duplex.tools import NO_TOOLS, ToolCall, Tools

if TYPE_CHECKING:
    from duplex.commands import Command
    from duplex.events import Event


class VoiceActivity(Protocol):
    """Per-frame speech probability (WebRTC VAD, Silero)."""

    def probability(self, frame: Frame) -> float:
        """Speech probability of this 20 ms frame, in [0, 1]."""
        ...

    def reset(self) -> None:
        """Forget internal state (a new session)."""
        ...


class Recognizer(Protocol):
    """Streaming speech recognition of the user's current utterance."""

    # the latest decode's mean token log-probability (0 is sure; about -0.45 and
    # below, words guessed for a sound that was no word)
    last_confidence: float

    def accept(self, frame: Frame) -> None:
        """Audio of the current utterance, pre-roll included, in timeline order."""
        ...

    def stable(self) -> str:
        """New words since the last call that will not change (append-only)."""
        ...

    def pause(self) -> str:
        """The user may have stopped: decode what was heard now, so that `finish`
        has nothing left to decode if no more audio arrives before it.

        Returns the words that decode heard after the stable ones (those `stable`
        returned or returns next): what `finish` returns if no more audio comes,
        and a guess that may still change if it does."""
        ...

    def finish(self) -> str:
        """The utterance ended: its remaining words; the next `accept` starts a new one."""
        ...

    def reset(self) -> None:
        """Drop the current utterance without decoding it."""
        ...


class SpeechListener(Protocol):
    """The speech path: the user's audio, 160 ms at a time, as the LM's input embeddings
    (an encoder and a trained adapter), for the LM to hear without a recognizer."""

    def accept(self, frame: Frame) -> Float32Array | None:
        """The next 20 ms of the user's turn; (positions, embedding size) once a chunk
        is complete, else None."""
        ...

    def reset(self) -> None:
        """A new stretch of speech: no left context."""
        ...


class StateProbs(NamedTuple):
    """The duplex state head's reading of the conversation at the last position."""

    listen: float
    speak: float
    dismiss: float


class ReadsTheUser(Protocol):
    """The user's turn as the LM reads it: words (or speech) in, the state head's
    reading out. Words join the open user turn in place, nothing is re-read."""

    read_threads: int  # threads a read of the user's words runs on, from the next read

    def listen(self, text: str) -> StateProbs:
        """Append user words (may be empty) to the open user turn; read the state."""
        ...

    def listen_tentatively(self, text: str) -> StateProbs:
        """`listen` to words that may still change (the recognizer's reading of what may
        be the end of the turn); `retract` forgets them, and the next `listen` keeps them."""
        ...

    def retract(self) -> None:
        """Forget the words of the last `listen_tentatively` (the user went on)."""
        ...

    def listen_speech(self, embeddings: Float32Array) -> StateProbs:
        """Append speech positions (a `SpeechListener`'s output) to the open user turn;
        read the state from the speech path's head."""
        ...

    def rewrite_turn(self, text: str) -> None:
        """The open user turn now holds `text` (the recognizer's words for the speech
        the LM heard): the answer is written from words."""
        ...

    def transcribe_heard(self) -> str:
        """What the LM read in the open turn's speech, in words (then forgotten)."""
        ...


class ReadsOverlap(Protocol):
    """Voice over the assistant's answer, read in a probe: never kept."""

    def overlap(self, text: str) -> StateProbs:
        """Read the state for words the user says over the assistant, without keeping them."""
        ...

    def overlap_speech(self, embeddings: Float32Array) -> StateProbs:
        """Read the state for speech said over the assistant, without keeping it."""
        ...

    def overlap_words(self, embeddings: Float32Array) -> str:
        """What the LM reads in speech said over the assistant, without keeping it."""
        ...


class WritesAnswers(Protocol):
    """The answer: begun after the user's turn, written a few tokens at a time (by the
    LM, or by a `Responder` through `write`), cut where the user stopped hearing it."""

    def begin_response(
        self, tools: Tools = NO_TOOLS, instructions: str = "", max_tokens: int | None = None
    ) -> None:
        """Close the user turn and open the assistant's; with `tools` active the answer
        may be (or must be) a call instead of words; `instructions` for this answer
        join the conversation as a system turn before it; `max_tokens`: the answer's
        length at most (None: the LM's own limit)."""
        ...

    def speak(self, max_tokens: int) -> tuple[str, bool]:
        """Decode up to `max_tokens` tokens of the answer: (text, finished)."""
        ...

    def tool_call(self) -> ToolCall | None:
        """The call the open answer made, once `speak` has finished it; None: words."""
        ...

    def write(self, text: str, done: bool) -> None:
        """Answer text written elsewhere (a `Responder`) joins the open answer, as if
        spoken; `done` closes it."""
        ...

    def write_call(self, call: ToolCall) -> None:
        """A call made elsewhere (a `Responder`) is the open answer; it closes it."""
        ...

    def cancel_response(self) -> None:
        """Forget the answer begun since `begin_response`; the user's turn is open again."""
        ...

    def truncate(self, played_text: str) -> None:
        """End the assistant's turn at the words the user actually heard."""
        ...

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages (role, content, tool calls and their
        results): what the user heard of it."""
        ...


class KeepsConversation(Protocol):
    """Items joining and leaving the conversation, between answers: a client seeding
    or editing the history."""

    def add_tool_result(self, call_id: str, output: str) -> None:
        """A function's output joins the conversation (between answers)."""
        ...

    def add_message(self, role: str, text: str) -> None:
        """A system note or an assistant message joins the conversation as its own turn
        (between answers): a client seeding or editing the history."""
        ...

    def name_turn(self, item: str, role: str) -> None:
        """The latest `role` turn is the conversation's item `item` (an answer with its
        own instructions). A turn keeps the first name it gets; a user turn named takes
        no more words: the next open another."""
        ...

    def forget(self, item: str) -> None:
        """The turns named `item` leave the conversation, between answers (none may be
        left: old turns leave the context by themselves)."""
        ...

    def set_instructions(self, text: str) -> None:
        """Replace the system prompt, keeping the conversation (between answers only)."""
        ...


class DuplexLM(ReadsTheUser, ReadsOverlap, WritesAnswers, KeepsConversation, Protocol):
    """The frozen LM with one KV cache per session, read by a state head.

    The conversation grows in place: user words are appended to the open user
    turn, the assistant's words are decoded after it; a barge-in truncates the
    assistant's message to what was actually played. Each part of the session
    holds the face of it that it uses (the player `WritesAnswers`, the overlap
    `ReadsOverlap`); the session and the open turn hold the whole.
    """


class PendingEnd(Protocol):
    """An acoustic estimate on its way (a `concurrent.futures.Future` is one)."""

    def done(self) -> bool: ...

    def result(self) -> float:
        """P(the turn is complete), waiting for it if it is not done."""
        ...


class TurnEndAudio(Protocol):
    """How the end of the user's voice sounds: P(the turn is complete) from the audio
    alone (a falling pitch, a lengthened last syllable, the energy of its end), which
    the words cannot tell: Whisper writes a full stop at a breath."""

    def start(self, pcm: Int16Array) -> PendingEnd:
        """Begin estimating from the user's turn so far (16 kHz PCM16 up to the pause; at
        most its last 8 s matter), off the caller's thread where the model can: the
        recognizer's decode at the pause runs meanwhile."""
        ...


class ResponderError(Exception):
    """An external responder failed or is too slow: the LM writes the rest of the answer."""


class Responder(Protocol):
    """Writes the answer's words somewhere other than the frozen LM (an inference engine).

    The LM still decides turns; what a responder writes joins its cache
    through `DuplexLM.write`, so the state head reads the answer as played.
    """

    def start(
        self,
        messages: list[dict[str, Any]],
        tools: Tools = NO_TOOLS,
        max_tokens: int | None = None,
    ) -> None:
        """Begin an answer to this conversation (ending with the user's turn), of at most
        `max_tokens` (None: the engine's configured limit)."""
        ...

    def tool_call(self) -> ToolCall | None:
        """The call the answer made, once `read` said it finished; None: words."""
        ...

    def read(self, max_tokens: int) -> tuple[str, bool]:
        """The answer's text that has arrived, without waiting: (text, finished).

        Raises ResponderError when the engine is down, breaks off, or misses
        its first-token deadline.
        """
        ...

    def stop(self) -> None:
        """Drop the answer being written at once (a barge-in): close its stream."""
        ...


class Synthesizer(Protocol):
    """Text to speech, one clause at a time."""

    def synthesize(self, text: str, *, speed: float = 1.0) -> Int16Array:
        """16 kHz mono PCM16 for one clause of the answer, spoken `speed` times as fast as
        the voice's own pace."""
        ...


class PendingAudio(Protocol):
    """A clause being synthesized elsewhere."""

    def result(self) -> Int16Array | None:
        """Its audio once made, None until then (never waits)."""
        ...


@runtime_checkable
class SynthesizesAhead(Synthesizer, Protocol):
    """A synthesizer that can also make a clause on another thread while earlier
    audio plays, so the loop is never stalled by synthesis mid-answer."""

    def start(self, text: str, *, speed: float = 1.0) -> PendingAudio:
        """Begin synthesizing `text` in the background."""
        ...


class Steps(Protocol):
    """How a driver reaches a session: one input frame in, the events it caused out.

    `Session` is one; a client of a remote server can be another.
    """

    def step(self, frame: Frame) -> list[Event]: ...


class Handles(Steps, Protocol):
    """A session that also takes a driver's commands between frames (`duplex.commands`)."""

    def handle(self, command: Command) -> list[Event]: ...


@runtime_checkable
class Closes(Protocol):
    """A session holding a connection or a thread, released when the drive ends."""

    def close(self) -> None: ...
