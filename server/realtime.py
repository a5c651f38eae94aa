"""`/v1/realtime`: the OpenAI Realtime websocket protocol, the part a voice client uses.

Client events are validated and become commands for the session; session
events are mapped onto server events. Audio is base64 PCM16 mono at 24 kHz
both ways. A client that sends `OpenAI-Beta: realtime=v1` gets the beta
event names (`response.audio.delta`, `conversation.item.created`); others
get the GA names (`response.output_audio.delta`, `conversation.item.added`).
Events of our own (per-turn metrics, dismissed backchannels, barge-ins) use
a `duplex.` prefix and go only to a client that asks for them
(`/v1/realtime?duplex_events=1`): SDKs that validate every event reject
types they do not know.

Bad input never ends the session: each problem is answered with an `error`
event carrying type, code, message, param and the client's event_id.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from duplex.audio import FRAME_MS, Float32Array, StreamResampler, float_to_pcm16, pcm16_to_float
from duplex.commands import (
    AddMessage,
    AddToolResult,
    AddUserText,
    Cancel,
    ClearInput,
    Commit,
    DeleteItem,
    Respond,
    SetAudioOutput,
    SetInstructions,
    SetMaxTokens,
    SetPolicy,
    SetSpeed,
    SetTools,
    Truncate,
    answer_item,
)
from duplex.config import PolicySettings
from duplex.events import (
    BackchannelIgnored,
    Error,
    Event,
    Interrupted,
    ItemDeleted,
    ResponderFallback,
    ResponseAudio,
    ResponseDone,
    ResponseFunctionCall,
    ResponseText,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptFinal,
    TurnMetrics,
    TurnTaken,
)
from duplex.tdm import FixedSilence, Policy, TurnPolicy
from duplex.tools import Tool, Tools
from server.protocol import Action, Actions, Audio, ClientError, Listen, Send, parse_object, require

RATE = 24_000

# the event names that differ between the GA and the beta protocol: (GA, beta)
AUDIO_DELTA = ("response.output_audio.delta", "response.audio.delta")
AUDIO_DONE = ("response.output_audio.done", "response.audio.done")
TRANSCRIPT_DELTA = ("response.output_audio_transcript.delta", "response.audio_transcript.delta")
TRANSCRIPT_DONE = ("response.output_audio_transcript.done", "response.audio_transcript.done")
TEXT_DELTA = ("response.output_text.delta", "response.text.delta")
TEXT_DONE = ("response.output_text.done", "response.text.done")
# our own events, sent only to a client that asks (`extensions`)
INTERRUPTED = "duplex.interrupted"
BACKCHANNEL_IGNORED = "duplex.backchannel_ignored"
RESPONDER_FALLBACK = "duplex.responder_fallback"
TURN_METRICS = "duplex.turn_metrics"


def response_status(status: str) -> tuple[str, dict[str, Any] | None]:
    """A session's `ResponseDone.status` as a Realtime response's status and details."""
    if status == "completed":
        return "completed", None
    if status == "failed":  # a model raised: the error event came just before
        error = {"type": "server_error", "code": "model_error"}
        return "failed", {"type": "failed", "error": error}
    reason = "turn_detected" if status == "interrupted" else "client_cancelled"
    return "cancelled", {"type": "cancelled", "reason": reason}


def session_status(response: dict[str, Any]) -> str:
    """The inverse of `response_status`: a Realtime response's end as the session saw it."""
    status = str(response.get("status"))
    reason = (response.get("status_details") or {}).get("reason")
    if status in ("completed", "failed"):
        return status
    return "interrupted" if reason == "turn_detected" else "cancelled"


EAGERNESS_MAX_SILENCE_MS = {"low": 3000, "medium": 2000, "auto": 2000, "high": 800}
VOICE = "joe"  # the one voice answers are spoken in
# the API's voice names: clients send one by default, and it is spoken in VOICE
API_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
              "cedar"}  # fmt: skip
# the content parts an item of each role may carry (the first is how it is echoed)
ITEM_CONTENT = {
    "user": ("input_text",),
    "system": ("input_text",),
    "assistant": ("output_text", "text", "output_audio", "audio"),
}
TRANSCRIBER = "whisper"  # what transcribes the user, whatever model a client names
SPEEDS = (0.25, 1.5)  # the API's range of audio.output.speed


class ManualTurns(TurnPolicy):
    """`turn_detection: null`: the client commits and asks for responses itself."""

    def take_turn(self, probs: Any, silence_ms: float) -> bool:
        return False


def _ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}_{next(counter):04d}"


@dataclass
class _Answer:
    response_id: str
    item_id: str
    transcript: str = ""
    audio_ms: int = 0
    metadata: dict[str, str] | None = None  # the client's, from its response.create
    resampler: StreamResampler = field(default_factory=lambda: StreamResampler(16_000, RATE))
    audio: bool = True  # spoken; else text alone
    announced: bool = False  # its message item (words) went out
    call: dict[str, Any] | None = None  # or the function_call item it is


class RealtimeProtocol:
    """One `/v1/realtime` connection: client events in, server events out."""

    def __init__(
        self,
        *,
        model: str,
        settings: PolicySettings,
        beta: bool,
        session_id: str,
        extensions: bool = False,
    ) -> None:
        """`extensions`: send our own `duplex.` events too."""
        self.beta = beta
        self.extensions = extensions
        self._settings = settings
        self._out = Actions()
        self._item_id, self._response_id, self._event_id = _ids("item"), _ids("resp"), _ids("event")
        self._answers: dict[int, _Answer] = {}
        self._sent_ms: dict[str, int] = {}  # assistant item -> audio sent (ms)
        self._user_item: str | None = None
        self._speech_from_ms: int | None = None  # where the user's audio of the turn began
        self._metadata: dict[str, str] | None = None  # for the answer response.create asked
        self._items: dict[str, dict[str, Any]] = {}  # every item announced, as it last was
        self._names: dict[str, str] = {}  # item -> the session's name for it, where not its id
        self._last_item: str | None = None
        self._calls: set[str] = set()  # every call_id the assistant made
        self._respond_audio: bool | None = None  # for the answer response.create asked
        self._asked = False  # a response.create whose answer has not begun yet
        self._committed: str | None = None  # the user item input_audio_buffer.commit sent
        self._transcribe = True  # transcription events for the user's speech
        self.config: dict[str, Any] = {
            "id": session_id,
            "object": "realtime.session",
            "type": "realtime",
            "model": model,
            "instructions": "",
            "output_modalities": ["audio"],
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": {"model": TRANSCRIBER, "language": "en"},
                    "turn_detection": {"type": "semantic_vad", "eagerness": "auto"},
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "voice": VOICE,
                    "speed": 1.0,
                },
            },
        }

    # client -> server ------------------------------------------------------------

    def opened(self) -> list[Action]:
        """The session's input opens at 24 kHz, and the client hears what it is."""
        self._out.add(Listen(RATE))
        self.send("session.created", session=self._session_view())
        return self._out.take()

    def refused(self, reason: str) -> list[Action]:
        """The session's input is full: the audio just appended was not taken."""
        error = ClientError("invalid_request_error", "input_audio_buffer_full", reason, "audio")
        self.send_error(error)
        return self._out.take()

    def receive(self, message: str | bytes) -> list[Action]:
        """One client message; problems become `error` events, the session goes on."""
        event_id = None
        try:
            if isinstance(message, bytes):
                raise ClientError(
                    "invalid_request_error",
                    "binary_not_supported",
                    "send JSON text messages; audio goes in input_audio_buffer.append",
                )
            event = parse_object(message)
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            kind = require(event, "type", str)
            handler = self._handlers().get(kind)
            if handler is None:
                raise ClientError(
                    "invalid_request_error",
                    "unknown_event",
                    f"unknown client event type {kind!r}",
                    "type",
                )
            handler(event)
        except ClientError as error:
            self.send_error(error, event_id)
        return self._out.take()

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        return {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._truncate,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.delete": self._item_delete,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "output_audio_buffer.clear": self._output_clear,
        }

    def _session_update(self, event: dict[str, Any]) -> None:
        session = require(event, "session", dict)
        instructions = session.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise ClientError(
                "invalid_request_error",
                "invalid_type",
                "instructions must be a string",
                "session.instructions",
            )
        audio = _object(session.get("audio"))
        audio_in = _object(audio.get("input"))
        turn = audio_in.get("turn_detection", session.get("turn_detection", ...))
        audio_out = _object(audio.get("output"))
        _check_session_type(session)
        voice = audio_out.get("voice", session.get("voice"))
        if voice is not None:
            _check_voice(
                voice, "session.audio.output.voice" if "voice" in audio_out else "session.voice"
            )
        speed = audio_out.get("speed", session.get("speed"))
        if speed is not None:
            _check_speed(
                speed, "session.audio.output.speed" if "speed" in audio_out else "session.speed"
            )
        transcription = audio_in.get("transcription", session.get("input_audio_transcription", ...))
        if transcription is not ...:
            _check_transcription(transcription)
        for key in ("input_audio_format", "output_audio_format"):  # beta names
            fmt = session.get(key)
            if fmt is not None and fmt != "pcm16":
                raise ClientError(
                    "invalid_request_error",
                    "unsupported_audio_format",
                    f"{key} must be pcm16 (24 kHz mono)",
                    f"session.{key}",
                )
        for where in (audio_in, _object(audio.get("output"))):
            fmt = where.get("format")
            if isinstance(fmt, dict) and (fmt.get("type"), fmt.get("rate", RATE)) != (
                "audio/pcm",
                RATE,
            ):
                raise ClientError(
                    "invalid_request_error",
                    "unsupported_audio_format",
                    "audio format must be audio/pcm at 24000 Hz",
                    "session.audio",
                )
        if turn is not ...:
            policy = self._policy(turn)
            self._out.add(SetPolicy(policy))
            self.config["audio"]["input"]["turn_detection"] = turn
        if transcription is not ...:
            self._transcribe = transcription is not None
            self.config["audio"]["input"]["transcription"] = (
                None if transcription is None else {"model": TRANSCRIBER, "language": "en"}
            )
        if instructions is not None:
            self.config["instructions"] = instructions
            self._out.add(SetInstructions(instructions))
        if speed is not None:
            self.config["audio"]["output"]["speed"] = speed
            self._out.add(SetSpeed(float(speed)))
        modalities = self._modalities(session, "session")
        if modalities is not None:
            self.config["output_modalities"] = ["audio"] if modalities else ["text"]
            self._out.add(SetAudioOutput(modalities))
        limit = _max_tokens(session, "session")
        if limit is not ...:
            self.config["max_output_tokens"] = "inf" if limit is None else limit
            self._out.add(SetMaxTokens(limit))
        if "tools" in session or "tool_choice" in session:
            tools = self._tools(session, "session", self.config)
            self.config["tools"] = [_tool_json(t) for t in tools.tools]
            self.config["tool_choice"] = session.get("tool_choice", self.config["tool_choice"])
            self._out.add(SetTools(tools))
        self.send("session.updated", session=self._session_view())

    def _session_view(self) -> dict[str, Any]:
        """The session as the client's protocol has it: GA, or the beta's flat fields."""
        if not self.beta:
            return self.config
        config, audio_in = self.config, self.config["audio"]["input"]
        return {
            "id": config["id"],
            "object": "realtime.session",
            "model": config["model"],
            "modalities": ["audio", "text"] if "audio" in config["output_modalities"] else ["text"],
            "instructions": config["instructions"],
            "voice": config["audio"]["output"]["voice"],
            "speed": config["audio"]["output"]["speed"],
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": audio_in["transcription"],
            "turn_detection": audio_in["turn_detection"],
            "tools": config["tools"],
            "tool_choice": config["tool_choice"],
            "max_response_output_tokens": config["max_output_tokens"],
        }

    def _modalities(self, where: dict[str, Any], name: str) -> bool | None:
        """Whether `output_modalities` (beta: `modalities`) asks for audio; None: unset.
        Text comes with audio too (the transcript), so ["text"] alone means no audio."""
        key = "modalities" if "modalities" in where else "output_modalities"
        value = where.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not set(value) <= {"text", "audio"}:
            raise ClientError(
                "invalid_request_error",
                "invalid_value",
                f"{key} must be a non-empty list of text and audio",
                f"{name}.{key}",
            )
        return "audio" in value

    def _tools(self, where: dict[str, Any], name: str, default: dict[str, Any]) -> Tools:
        """`tools` and `tool_choice` of a session.update or response.create (`where`),
        each defaulting to `default`'s."""
        raw = where.get("tools", default.get("tools", []))
        if not isinstance(raw, list):
            raise ClientError(
                "invalid_request_error", "invalid_type", "tools must be a list", f"{name}.tools"
            )
        tools = []
        for i, tool in enumerate(raw):
            field_name = f"{name}.tools[{i}]"
            if not isinstance(tool, dict) or tool.get("type", "function") != "function":
                raise ClientError(
                    "invalid_request_error",
                    "unsupported_tool",
                    "only function tools are supported ({type: function, name, parameters})",
                    field_name,
                )
            tool_name, parameters = tool.get("name"), tool.get("parameters", {})
            if not isinstance(tool_name, str) or not tool_name:
                raise ClientError(
                    "invalid_request_error", "missing_name", "a tool needs a name", field_name
                )
            if not isinstance(parameters, dict):
                raise ClientError(
                    "invalid_request_error",
                    "invalid_type",
                    "a tool's parameters must be a JSON schema object",
                    f"{field_name}.parameters",
                )
            description = tool.get("description")
            tools.append(Tool(tool_name, description if isinstance(description, str) else "",
                              parameters))  # fmt: skip
        choice = where.get("tool_choice", default.get("tool_choice", "auto"))
        if isinstance(choice, dict):
            choice = choice.get("name") or _object(choice.get("function")).get("name")
        try:
            return Tools(tuple(tools), choice if isinstance(choice, str) else "")
        except ValueError as error:
            raise ClientError(
                "invalid_request_error", "invalid_value", str(error), f"{name}.tool_choice"
            ) from None

    def _policy(self, turn: Any) -> Policy:
        if turn is None:
            return ManualTurns(self._settings)
        if not isinstance(turn, dict) or turn.get("type") not in ("server_vad", "semantic_vad"):
            raise ClientError(
                "invalid_request_error",
                "invalid_value",
                "turn_detection.type must be server_vad or semantic_vad (or null)",
                "session.audio.input.turn_detection",
            )
        for flag in ("create_response", "interrupt_response"):
            if not isinstance(turn.get(flag, True), bool):
                raise ClientError(
                    "invalid_request_error",
                    "invalid_type",
                    f"{flag} must be true or false",
                    f"session.audio.input.turn_detection.{flag}",
                )
        # create_response: false commits each turn it detects and answers on response.create;
        # interrupt_response: false plays answers out, the words over one its next turn
        answers, yields = turn.get("create_response", True), turn.get("interrupt_response", True)
        if turn["type"] == "server_vad":
            silence = turn.get("silence_duration_ms", 500)
            if not isinstance(silence, int) or not 0 <= silence <= 10_000:
                raise ClientError(
                    "invalid_request_error",
                    "invalid_value",
                    "silence_duration_ms must be an integer 0..10000",
                    "session.audio.input.turn_detection.silence_duration_ms",
                )
            return FixedSilence(self._settings, answers, yields, silence_ms=silence)
        eagerness = turn.get("eagerness", "auto")
        if eagerness not in EAGERNESS_MAX_SILENCE_MS:
            raise ClientError(
                "invalid_request_error",
                "invalid_value",
                "eagerness must be low, medium, high or auto",
                "session.audio.input.turn_detection.eagerness",
            )
        cap = EAGERNESS_MAX_SILENCE_MS[eagerness]
        return TurnPolicy(replace(self._settings, max_silence_ms=cap), answers, yields)

    def _append(self, event: dict[str, Any]) -> None:
        audio = require(event, "audio", str)
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError(
                "invalid_request_error", "invalid_base64", "audio is not valid base64", "audio"
            ) from None
        if len(pcm) % 2:
            raise ClientError(
                "invalid_request_error",
                "invalid_audio",
                f"audio has {len(pcm)} bytes; PCM16 needs an even count",
                "audio",
            )
        self._out.add(Audio(pcm))

    def _commit(self, event: dict[str, Any]) -> None:
        """Manual turns: what was said so far is the user's message, committed now (its
        item and transcript follow when the turn is taken)."""
        if self._committed is None:
            self._committed = self._user_item = self._user_item or self._item_id()
            self.send(
                "input_audio_buffer.committed",
                previous_item_id=self._last_item,
                item_id=self._committed,
            )
        self._out.add(Commit())

    def _clear(self, event: dict[str, Any]) -> None:
        self._out.add(ClearInput())
        self.send("input_audio_buffer.cleared")

    def _item_create(self, event: dict[str, Any]) -> None:
        item = require(event, "item", dict)
        if item.get("type") == "function_call_output":
            self._tool_output(item)
            return
        role = item.get("role")
        if item.get("type", "message") != "message" or role not in ITEM_CONTENT:
            raise ClientError(
                "invalid_request_error",
                "unsupported_item",
                "items are messages (role user, system or assistant) or function_call_output",
                "item.role",
            )
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise ClientError(
                "invalid_request_error",
                "invalid_type",
                "item.content must be a non-empty list",
                "item.content",
            )
        kinds = ITEM_CONTENT[role]
        texts = [
            c.get("text", c.get("transcript"))
            for c in content
            if isinstance(c, dict) and c.get("type") in kinds
        ]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            raise ClientError(
                "invalid_request_error",
                "unsupported_content",
                f"a {role} item's content parts must be {' or '.join(kinds)} with their text"
                + (" (audio goes in input_audio_buffer.append)" if role == "user" else ""),
                "item.content",
            )
        text = " ".join(t for t in texts if t)
        item_id = _given_id(item) or self._item_id()
        if role == "user":
            self._out.add(AddUserText(text, echo=False, item=item_id))
        else:
            self._out.add(AddMessage(role, text, item_id))
        kind = kinds[0]
        part = {"type": kind, "transcript" if kind == "output_audio" else "text": text}
        full = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": role,
            "status": "completed",
            "content": [part],
        }
        self._item_added(full)

    def _tool_output(self, item: dict[str, Any]) -> None:
        """A function's output, for a call the assistant made: the next response.create
        answers from it."""
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str) or call_id not in self._calls:
            raise ClientError(
                "invalid_request_error",
                "invalid_value",
                f"call_id {call_id!r} is no function call the assistant made",
                "item.call_id",
            )
        if not isinstance(output, str):
            raise ClientError(
                "invalid_request_error", "invalid_type", "output must be a string", "item.output"
            )
        item_id = _given_id(item) or self._item_id()
        self._out.add(AddToolResult(call_id, output, item_id))
        full = {"id": item_id, "object": "realtime.item", "type": "function_call_output",
                "call_id": call_id, "output": output, "status": "completed"}  # fmt: skip
        self._item_added(full)

    def _truncate(self, event: dict[str, Any]) -> None:
        item_id = require(event, "item_id", str)
        end = require(event, "audio_end_ms", int)
        if item_id not in self._sent_ms:
            raise ClientError(
                "invalid_request_error",
                "item_not_found",
                f"no assistant audio item {item_id!r}",
                "item_id",
            )
        if not 0 <= end <= self._sent_ms[item_id]:
            raise ClientError(
                "invalid_request_error",
                "invalid_value",
                f"audio_end_ms {end} is beyond the {self._sent_ms[item_id]} ms "
                "of audio sent for this item",
                "audio_end_ms",
            )
        if item_id != next(reversed(self._sent_ms)):
            raise ClientError(
                "invalid_request_error",
                "invalid_value",
                "only the latest assistant item can be truncated (the model's context "
                "keeps earlier answers as they were heard)",
                "item_id",
            )
        # an answer still playing stops; either way the model keeps only what was heard
        self._out.add(Truncate(end))
        self.send("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end)

    def _response_create(self, event: dict[str, Any]) -> None:
        response = event.get("response", {})
        if not isinstance(response, dict):
            raise ClientError(
                "invalid_request_error", "invalid_type", "response must be an object", "response"
            )
        metadata = response.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise ClientError(
                "invalid_request_error",
                "invalid_type",
                "response.metadata must map strings to strings",
                "response.metadata",
            )
        if response.get("conversation", "auto") != "auto" or "input" in response:
            raise ClientError(
                "invalid_request_error",
                "unsupported_value",
                "out-of-band responses are not supported: an answer is written from the "
                "conversation (conversation: auto, no input)",
                "response.conversation" if "conversation" in response else "response.input",
            )
        voice = _object(_object(response.get("audio")).get("output")).get("voice")
        if voice is not None:
            _check_voice(voice, "response.audio.output.voice")
        self._metadata = metadata  # echoed on the answer it starts (clients match on it)
        tools = None
        if "tools" in response or "tool_choice" in response:
            tools = self._tools(response, "response", self.config)
        self._respond_audio = audio = self._modalities(response, "response")
        instructions = response.get("instructions", "")
        if not isinstance(instructions, str):
            raise ClientError(
                "invalid_request_error",
                "invalid_type",
                "response.instructions must be a string",
                "response.instructions",
            )
        limit = _max_tokens(response, "response")
        self._asked = True
        self._out.add(Respond(tools, audio, instructions, None if limit is ... else limit))

    def _item_retrieve(self, event: dict[str, Any]) -> None:
        item_id = require(event, "item_id", str)
        item = self._items.get(item_id)
        if item is None:
            raise ClientError(
                "invalid_request_error", "item_not_found", f"no item {item_id!r}", "item_id"
            )
        self.send("conversation.item.retrieved", item=item)

    def _item_delete(self, event: dict[str, Any]) -> None:
        """The item leaves the conversation, the model's context included, between answers
        (`conversation.item.deleted` once the session has taken it out)."""
        item_id = require(event, "item_id", str)
        if item_id not in self._items:
            raise ClientError(
                "invalid_request_error", "item_not_found", f"no item {item_id!r}", "item_id"
            )
        self._out.add(DeleteItem(self._names.get(item_id, item_id)))

    def _output_clear(self, event: dict[str, Any]) -> None:
        """The client drops the answer's audio it has not played: the answer stops there."""
        self._out.add(Cancel())
        self.send("output_audio_buffer.cleared")

    def _response_cancel(self, event: dict[str, Any]) -> None:
        if not self._answers and not self._asked:
            raise ClientError(
                "invalid_request_error",
                "response_cancel_not_active",
                "there is no response in progress to cancel",
            )
        self._out.add(Cancel())

    # server -> client ------------------------------------------------------------

    def send(self, kind: str, **fields: Any) -> None:
        if kind.startswith("duplex.") and not self.extensions:
            return  # an event of our own, for a client that asked
        self._out.add(Send({"type": kind, "event_id": self._event_id(), **fields}))

    def send_error(self, error: ClientError, event_id: str | None = None) -> None:
        self.send("error", error=error.to_dict(event_id))

    def closing(self, error: ClientError) -> list[Action]:
        """The session is about to be closed by the server: an error event, as the
        Realtime API itself says a session has expired."""
        self.send_error(error)
        return self._out.take()

    def _name(self, ga: str, beta: str) -> str:
        return beta if self.beta else ga

    def _item_added(self, item: dict[str, Any]) -> None:
        self._items[item["id"]] = item
        previous, self._last_item = self._last_item, item["id"]
        if self.beta:
            self.send("conversation.item.created", previous_item_id=previous, item=item)
        else:
            self.send("conversation.item.added", previous_item_id=previous, item=item)
            if item.get("status") == "completed":
                self.send("conversation.item.done", previous_item_id=previous, item=item)

    def events(self, events: list[Event]) -> list[Action]:
        """Session events as server events."""
        for event in events:
            handler = _MAPPERS.get(type(event))
            if handler is not None:
                handler(self, event)
        return self._out.take()

    def _speech_started(self, event: SpeechStarted) -> None:
        if self._speech_from_ms is None:
            self._speech_from_ms = event.audio_ms
        if self._user_item is None:
            self._user_item = self._item_id()
        self.send(
            "input_audio_buffer.speech_started",
            audio_start_ms=event.audio_ms,
            item_id=self._user_item,
        )

    def _speech_stopped(self, event: SpeechStopped) -> None:
        self.send(
            "input_audio_buffer.speech_stopped",
            audio_end_ms=event.audio_ms,
            item_id=self._user_item or self._item_id(),
        )

    def _transcript_delta(self, event: TranscriptDelta) -> None:
        if self._user_item is None:
            self._user_item = self._item_id()
        if not self._transcribe:
            return
        self.send(
            "conversation.item.input_audio_transcription.delta",
            item_id=self._user_item,
            content_index=0,
            delta=event.text,
        )

    def _transcript_final(self, event: TranscriptFinal) -> None:
        began, self._speech_from_ms = self._speech_from_ms, None
        if not event.text.strip():
            # no words were heard (a bare response.create, or one after text items, which
            # are items of their own): no audio was committed
            return
        item_id, self._user_item = self._user_item or self._item_id(), None
        if event.item:
            self._names[item_id] = event.item
        if self._committed != item_id:
            self.send(
                "input_audio_buffer.committed", previous_item_id=self._last_item, item_id=item_id
            )
        self._committed = None
        self._item_added(
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_audio", "transcript": event.text}],
            }
        )
        seconds = 0.0 if began is None else max(0, event.audio_ms - began) / 1000
        if not self._transcribe:
            return
        self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=event.text,
            usage={"type": "duration", "seconds": seconds},
        )

    def _turn_taken(self, event: TurnTaken) -> None:
        answer = _Answer(self._response_id(), self._item_id(), metadata=self._metadata)
        audio = self._respond_audio
        answer.audio = "audio" in self.config["output_modalities"] if audio is None else audio
        self._metadata = self._respond_audio = None
        self._asked = False
        self._answers[event.response_id] = answer
        self._names[answer.item_id] = answer_item(event.response_id)
        self.send("response.created", response=self._response(answer, "in_progress", []))

    def _announce(self, answer: _Answer) -> None:
        """The answer's message item, once it is words (not a function call)."""
        if answer.announced or answer.call is not None:
            return
        answer.announced = True
        self._sent_ms[answer.item_id] = 0
        item = {
            "id": answer.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        self._item_added(item)
        self.send(
            "response.output_item.added", response_id=answer.response_id, output_index=0, item=item
        )
        self.send(
            "response.content_part.added",
            response_id=answer.response_id,
            item_id=answer.item_id,
            output_index=0,
            content_index=0,
            part={"type": "audio", "transcript": ""}
            if answer.audio
            else {"type": "text", "text": ""},
        )

    def _text(self, event: ResponseText) -> None:
        answer = self._answers.get(event.response_id)
        if answer is None:
            return
        self._announce(answer)
        answer.transcript += event.text
        self.send(
            self._name(*(TRANSCRIPT_DELTA if answer.audio else TEXT_DELTA)),
            response_id=answer.response_id,
            item_id=answer.item_id,
            output_index=0,
            content_index=0,
            delta=event.text,
        )

    def _audio(self, event: ResponseAudio) -> None:
        answer = self._answers.get(event.response_id)
        if answer is None:
            return
        self._announce(answer)
        answer.audio_ms += FRAME_MS
        self._sent_ms[answer.item_id] = answer.audio_ms
        self._send_audio(answer, answer.resampler.process(pcm16_to_float(event.pcm)))

    def _send_audio(self, answer: _Answer, samples: Float32Array) -> None:
        pcm = float_to_pcm16(samples)
        if pcm.size:
            self.send(
                self._name(*AUDIO_DELTA),
                response_id=answer.response_id,
                item_id=answer.item_id,
                output_index=0,
                content_index=0,
                delta=base64.b64encode(pcm.tobytes()).decode(),
            )

    def _interrupted(self, event: Interrupted) -> None:
        answer = self._answers.get(event.response_id)
        self.send(
            INTERRUPTED,
            response_id=answer.response_id if answer else None,
            item_id=answer.item_id if answer else None,
            played_ms=event.played_ms,
            played_text=event.played_text,
            onset_ms=event.onset_ms,
            stopped_ms=event.stopped_ms,
        )

    def _function_call(self, event: ResponseFunctionCall) -> None:
        """The answer is a call: its item, the arguments (whole, one delta), done."""
        answer = self._answers.get(event.response_id)
        if answer is None or answer.announced:
            return
        self._calls.add(event.call_id)
        item = {
            "id": answer.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": event.call_id,
            "name": event.name,
            "arguments": "",
        }
        answer.call = item
        self._item_added(dict(item))
        where = {"response_id": answer.response_id, "item_id": answer.item_id, "output_index": 0}
        self.send("response.output_item.added", response_id=answer.response_id, output_index=0,
                  item=dict(item))  # fmt: skip
        self.send("response.function_call_arguments.delta", call_id=event.call_id,
                  delta=event.arguments, **where)  # fmt: skip
        self.send("response.function_call_arguments.done", call_id=event.call_id,
                  name=event.name, arguments=event.arguments, **where)  # fmt: skip
        item.update(status="completed", arguments=event.arguments)
        self._items[answer.item_id] = item
        self.send("response.output_item.done", response_id=answer.response_id, output_index=0,
                  item=item)  # fmt: skip
        if not self.beta:
            self.send("conversation.item.done", previous_item_id=None, item=item)

    def _done(self, event: ResponseDone) -> None:
        answer = self._answers.pop(event.response_id, None)
        if answer is None:
            return
        if answer.call is not None:
            status, details = response_status(event.status)
            response = self._response(answer, status, [answer.call])
            response["status_details"] = details
            self.send("response.done", response=response)
            return
        self._announce(answer)
        where = {
            "response_id": answer.response_id,
            "item_id": answer.item_id,
            "output_index": 0,
            "content_index": 0,
        }
        if answer.audio:
            self._send_audio(answer, answer.resampler.flush())
            self.send(self._name(*AUDIO_DONE), **where)
            self.send(self._name(*TRANSCRIPT_DONE), transcript=event.text, **where)
            part = {"type": "audio", "transcript": event.text}
            content = {"type": "audio" if self.beta else "output_audio", "transcript": event.text}
        else:
            self.send(self._name(*TEXT_DONE), text=event.text, **where)
            part = {"type": "text", "text": event.text}
            content = {"type": "text" if self.beta else "output_text", "text": event.text}
        self.send("response.content_part.done", part=part, **where)
        status, details = response_status(event.status)
        item = {
            "id": answer.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "completed" if status == "completed" else "incomplete",
            "content": [content],
        }
        self._items[answer.item_id] = item
        self.send(
            "response.output_item.done", response_id=answer.response_id, output_index=0, item=item
        )
        if not self.beta:
            self.send("conversation.item.done", previous_item_id=None, item=item)
        response = self._response(answer, status, [item])
        response["status_details"] = details
        self.send("response.done", response=response)

    def _response(self, answer: _Answer, status: str, output: list[Any]) -> dict[str, Any]:
        return {
            "id": answer.response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": None,
            "output": output,
            "conversation_id": self.config["id"],
            "metadata": answer.metadata,
        }

    def _answer_id(self, response_id: int) -> str | None:
        """The protocol's id of the session's answer `response_id`, while it is live."""
        answer = self._answers.get(response_id)
        return answer.response_id if answer else None

    def _backchannel(self, event: BackchannelIgnored) -> None:
        self.send(
            BACKCHANNEL_IGNORED,
            text=event.text,
            onset_ms=event.onset_ms,
            held_ms=event.held_ms,
            response_id=self._answer_id(event.response_id),
        )

    def _fallback(self, event: ResponderFallback) -> None:
        self.send(
            RESPONDER_FALLBACK,
            reason=event.reason,
            response_id=self._answer_id(event.response_id),
        )

    def _item_deleted(self, event: ItemDeleted) -> None:
        """The session took the item out: so does the conversation the client sees."""
        for item_id in [i for i in self._items if self._names.get(i, i) == event.item]:
            item = self._items.pop(item_id)
            self._names.pop(item_id, None)
            self._sent_ms.pop(item_id, None)
            if item["type"] == "function_call":
                self._calls.discard(item["call_id"])  # no output can follow a call gone
            self._last_item = next(reversed(self._items), None)
            self.send("conversation.item.deleted", item_id=item_id)

    def _metrics(self, event: TurnMetrics) -> None:
        self.send(TURN_METRICS, metrics=event.record.to_dict())

    def _error(self, event: Error) -> None:
        if event.code == "response_in_progress" and self._asked:
            self._metadata = None  # that response.create starts no answer
            self._asked = False
            # the API's code for a response.create over an answer: clients expect it
            # (pipecat ends its connection at any error but the few it expects)
            code = "conversation_already_has_active_response"
            self.send_error(ClientError("invalid_request_error", code, event.message))
            return
        self.send_error(ClientError("server_error", event.code, event.message))


_MAPPERS: dict[type[Event], Callable[[RealtimeProtocol, Any], None]] = {
    SpeechStarted: RealtimeProtocol._speech_started,
    SpeechStopped: RealtimeProtocol._speech_stopped,
    TranscriptDelta: RealtimeProtocol._transcript_delta,
    TranscriptFinal: RealtimeProtocol._transcript_final,
    TurnTaken: RealtimeProtocol._turn_taken,
    ResponseText: RealtimeProtocol._text,
    ResponseFunctionCall: RealtimeProtocol._function_call,
    ResponseAudio: RealtimeProtocol._audio,
    Interrupted: RealtimeProtocol._interrupted,
    ResponseDone: RealtimeProtocol._done,
    ItemDeleted: RealtimeProtocol._item_deleted,
    BackchannelIgnored: RealtimeProtocol._backchannel,
    TurnMetrics: RealtimeProtocol._metrics,
    ResponderFallback: RealtimeProtocol._fallback,
    Error: RealtimeProtocol._error,
}


def _tool_json(tool: Tool) -> dict[str, Any]:
    return {"type": "function", "name": tool.name, "description": tool.description,
            "parameters": tool.parameters}  # fmt: skip


def _max_tokens(where: dict[str, Any], name: str) -> Any:
    """`max_output_tokens` (beta: `max_response_output_tokens`): 1-4096 tokens, "inf"
    (None: the runtime's own limit), or ... where it is not given."""
    key = (
        "max_response_output_tokens"
        if "max_response_output_tokens" in where
        else "max_output_tokens"
    )
    if key not in where:
        return ...
    value = where[key]
    if value == "inf":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise ClientError(
            "invalid_request_error",
            "invalid_value",
            f'{key} must be an integer 1..4096 or "inf"',
            f"{name}.{key}",
        )
    return value


def _check_session_type(session: dict[str, Any]) -> None:
    kind = session.get("type", "realtime")
    if kind != "realtime":
        raise ClientError(
            "invalid_request_error",
            "unsupported_session_type",
            f"only realtime sessions are served (speech in, answers out), not {kind!r}",
            "session.type",
        )


def _check_voice(voice: Any, param: str) -> None:
    """One voice speaks: the API's names are taken (clients send one by default)."""
    name = voice.get("id") if isinstance(voice, dict) else voice
    if name != VOICE and name not in API_VOICES:
        raise ClientError(
            "invalid_request_error",
            "unsupported_voice",
            f"voice {name!r} is not available; answers are spoken in {VOICE!r} "
            "(the API's voice names are accepted and spoken in it)",
            param,
        )


def _check_speed(speed: Any, param: str) -> None:
    """Answers are spoken faster or slower, within the API's range."""
    low, high = SPEEDS
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not low <= speed <= high:
        raise ClientError(
            "invalid_request_error",
            "invalid_value",
            f"speed must be a number from {low} to {high}",
            param,
        )


def _check_transcription(transcription: Any) -> None:
    """The runtime's recognizer transcribes, in English, whatever model is named."""
    if transcription is None:
        return
    param = "session.audio.input.transcription"
    if not isinstance(transcription, dict):
        raise ClientError(
            "invalid_request_error", "invalid_type", "transcription must be an object", param
        )
    language = transcription.get("language")
    if language not in (None, "", "en") and not str(language).startswith("en-"):
        raise ClientError(
            "invalid_request_error",
            "unsupported_language",
            f"the recognizer transcribes English, not {language!r}",
            f"{param}.language",
        )
    if transcription.get("prompt"):
        raise ClientError(
            "invalid_request_error",
            "unsupported_value",
            "a transcription prompt is not supported",
            f"{param}.prompt",
        )


def _given_id(item: dict[str, Any]) -> str:
    """The id the client gave an item ("" if none)."""
    given = item.get("id")
    return given if isinstance(given, str) else ""


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
