"""What a client or a server asks of a session, as values.

A driver hands these to `Session.handle` between frames (a server's worker
runs them in order with the audio), or `Session.post`s them from another
thread, to be applied before the next frame. Values, not callbacks, so a
wire protocol can be tested by the commands it produces, with no session.
"""

from __future__ import annotations

from dataclasses import dataclass

from duplex.tdm import Policy
from duplex.tools import Tools


@dataclass(frozen=True, slots=True)
class Respond:
    """Take the turn now, whatever the policy says. `tools`: this answer's, instead
    of the session's; `audio`: False for an answer in text alone (None: as the
    session's); `instructions`: for this answer (they join the conversation as a
    system turn before it)."""

    tools: Tools | None = None
    audio: bool | None = None
    instructions: str = ""
    max_tokens: int | None = None  # this answer's length at most (None: the session's)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the answer; the LM keeps what was heard, or its first `heard_ms`."""

    heard_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    """The user heard only the first `heard_ms` of the latest answer."""

    heard_ms: int


@dataclass(frozen=True, slots=True)
class Commit:
    """End the user's utterance now (manual turns)."""


@dataclass(frozen=True, slots=True)
class ClearInput:
    """Drop the utterance being recognized."""


@dataclass(frozen=True, slots=True)
class AddUserText:
    """A typed message joins the user's open turn. `echo`: report the words as a
    transcript delta (a client that shows its own typing already has them). `item`:
    the message is a whole one, its own turn of the conversation under that name
    (`DeleteItem`), not words of the turn being heard."""

    text: str
    echo: bool = True
    item: str = ""


@dataclass(frozen=True, slots=True)
class SetInstructions:
    """A new system prompt for the rest of the conversation."""

    text: str


@dataclass(frozen=True, slots=True)
class SetTools:
    """The functions every answer from now on may call."""

    tools: Tools


@dataclass(frozen=True, slots=True)
class SetMaxTokens:
    """Every answer from now on is at most `tokens` long (None: the LM's own limit)."""

    tokens: int | None


@dataclass(frozen=True, slots=True)
class SetAudioOutput:
    """Whether answers from now on are spoken (else their words go out as text alone)."""

    enabled: bool


@dataclass(frozen=True, slots=True)
class SetSpeed:
    """Answers are spoken `speed` times as fast as the voice's own pace, from the next
    clause on."""

    speed: float


@dataclass(frozen=True, slots=True)
class AddToolResult:
    """A function's output, for the call `call_id`: the next answer is written from it.
    `item`: its name in the conversation (`DeleteItem`)."""

    call_id: str
    output: str
    item: str = ""


@dataclass(frozen=True, slots=True)
class AddMessage:
    """A system note or an assistant message joins the conversation (a client seeding
    or editing the history), between answers. `item`: its name in the conversation
    (`DeleteItem`)."""

    role: str
    text: str
    item: str = ""


@dataclass(frozen=True, slots=True)
class DeleteItem:
    """An item leaves the conversation, between answers: the LM's context and the
    history an engine is sent no longer hold it. `item`: a name an `Add*` command
    gave, a `TranscriptFinal`'s, or `answer_item(id)` for an answer."""

    item: str


def answer_item(response_id: int) -> str:
    """The name the conversation keeps the session's answer `response_id` under."""
    return f"duplex-answer-{response_id}"


@dataclass(frozen=True, slots=True)
class SetPolicy:
    """The turn-taking policy from the next tick on."""

    policy: Policy


@dataclass(frozen=True, slots=True)
class SetOutputDelay:
    """How long after it is sent an output frame is heard (the device's latency)."""

    ms: int


@dataclass(frozen=True, slots=True)
class ShareCores:
    """How much of the CPU this session may take: whether it reads and drafts at
    pauses, and the LM's threads for reading (a server sets both as sessions come
    and go)."""

    read_at_pauses: bool
    read_threads: int


Command = (
    Respond
    | Cancel
    | Truncate
    | Commit
    | ClearInput
    | AddUserText
    | SetInstructions
    | SetTools
    | SetAudioOutput
    | SetSpeed
    | SetMaxTokens
    | AddToolResult
    | AddMessage
    | DeleteItem
    | SetPolicy
    | SetOutputDelay
    | ShareCores
)
