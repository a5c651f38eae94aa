"""The one vocabulary a session reports in.

Every event carries `audio_ms`, its position on the input timeline (ms since
the session's first frame), and `clock_ms`, the clock time at which it was
produced. The server maps these onto wire protocols, the local client onto
the terminal and the speaker, the benchmark onto latency numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from duplex.audio import Int16Array
from duplex.metrics import TurnRecord


@dataclass(frozen=True, kw_only=True)
class Event:
    type: ClassVar[str] = "event"
    audio_ms: int
    clock_ms: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with a `type` field; audio is left out."""
        data = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        return {"type": self.type, **data}


@dataclass(frozen=True, kw_only=True)
class SpeechStarted(Event):
    """The user started speaking; `audio_ms` is the onset (first voiced frame)."""

    type: ClassVar[str] = "speech_started"


@dataclass(frozen=True, kw_only=True)
class SpeechStopped(Event):
    """The user stopped; `audio_ms` is the end of the last voiced frame."""

    type: ClassVar[str] = "speech_stopped"


@dataclass(frozen=True, kw_only=True)
class TranscriptDelta(Event):
    """New stable words of the user's current utterance (append-only)."""

    type: ClassVar[str] = "transcript_delta"
    text: str


@dataclass(frozen=True, kw_only=True)
class TranscriptFinal(Event):
    """The whole user turn as the LM heard it, once the turn is taken or committed.
    `item`: the name the conversation keeps these words under (`DeleteItem`); "" where
    no words were heard."""

    type: ClassVar[str] = "transcript_final"
    text: str
    item: str = ""


@dataclass(frozen=True, kw_only=True)
class TurnTaken(Event):
    """The assistant decided to answer: the decision the policy made, and why."""

    type: ClassVar[str] = "turn_taken"
    response_id: int
    p_speak: float
    silence_ms: int
    required_silence_ms: int


@dataclass(frozen=True, kw_only=True)
class TurnEstimate(Event):
    """At a pause in the user's turn, the evidence that it is over: `p_text` from the
    words (the LM's end probability, the recognizer's punctuation), `p_audio` from the
    sound (None without an acoustic model), `p_speak` the two fused: what the
    policy's silence threshold reads. Sent when either changes."""

    type: ClassVar[str] = "turn_estimate"
    p_text: float
    p_audio: float | None
    p_speak: float


@dataclass(frozen=True, kw_only=True)
class ResponseText(Event):
    """Words of the assistant's answer as the LM writes them (ahead of the audio)."""

    type: ClassVar[str] = "response_text"
    response_id: int
    text: str


@dataclass(frozen=True, kw_only=True)
class ResponseFunctionCall(Event):
    """The answer is a call of a declared function (no speech): the client runs it
    and adds its output (`AddToolResult`)."""

    type: ClassVar[str] = "response_function_call"
    response_id: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class ResponseAudio(Event):
    """One 20 ms output frame to play now; `text` is the clause it belongs to."""

    type: ClassVar[str] = "response_audio"
    response_id: int
    pcm: Int16Array = field(repr=False)
    text: str


@dataclass(frozen=True, kw_only=True)
class Interrupted(Event):
    """The answer stopped before its end at `audio_ms`: a barge-in, or a client's cancel.

    Output sent to play from `stopped_ms` on must be flushed: the user never
    heard it, and the conversation keeps only `played_text`. `onset_ms` is the
    user's speech onset (for a cancel: when it was asked for).
    """

    type: ClassVar[str] = "interrupted"
    response_id: int
    played_ms: int
    played_text: str
    onset_ms: int
    stopped_ms: int


@dataclass(frozen=True, kw_only=True)
class BackchannelIgnored(Event):
    """The user talked over the assistant ("uh-huh") and the assistant kept talking."""

    type: ClassVar[str] = "backchannel_ignored"
    response_id: int
    text: str
    onset_ms: int
    held_ms: int = 0  # how long output was paused over it (policy.hold_on_overlap)


@dataclass(frozen=True, kw_only=True)
class ResponseDone(Event):
    """The answer ended: `completed`, `interrupted` (barge-in) or `cancelled`."""

    type: ClassVar[str] = "response_done"
    response_id: int
    status: str
    played_ms: int
    text: str


@dataclass(frozen=True, kw_only=True)
class ItemDeleted(Event):
    """The item `item` has left the conversation (`DeleteItem`)."""

    type: ClassVar[str] = "item_deleted"
    item: str


@dataclass(frozen=True, kw_only=True)
class TurnMetrics(Event):
    """Latency marks of one exchange, emitted once per turn."""

    type: ClassVar[str] = "turn_metrics"
    record: TurnRecord

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "audio_ms": self.audio_ms,
            "clock_ms": self.clock_ms,
            **self.record.to_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class ResponderFallback(Event):
    """The external responder failed (`reason`): the local LM writes the rest of the answer."""

    type: ClassVar[str] = "responder_fallback"
    response_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    """Something went wrong; the session keeps running."""

    type: ClassVar[str] = "error"
    code: str
    message: str


_BY_TYPE: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        SpeechStarted,
        SpeechStopped,
        TranscriptDelta,
        TranscriptFinal,
        TurnTaken,
        TurnEstimate,
        ResponseText,
        ResponseFunctionCall,
        Interrupted,
        BackchannelIgnored,
        ResponseDone,
        ItemDeleted,
        TurnMetrics,
        ResponderFallback,
        Error,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event | None:
    """The inverse of `Event.to_dict` (a remote session's JSON events); None for other types.

    Audio travels separately (binary), so `ResponseAudio` is not rebuilt here.
    Raises KeyError or TypeError on a known type with missing or odd fields.
    """
    cls = _BY_TYPE.get(str(data.get("type")))
    if cls is None:
        return None
    if cls is TurnMetrics:
        names = {f.name for f in fields(TurnRecord)}
        record = TurnRecord(**{k: v for k, v in data.items() if k in names})
        return TurnMetrics(audio_ms=data["audio_ms"], clock_ms=data["clock_ms"], record=record)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
