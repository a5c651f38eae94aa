"""`/v1/stream`: the lean protocol for devices (see docs/protocol.md).

After a JSON `hello` that fixes the sample rates, binary messages are raw
PCM16 LE mono both ways; JSON text messages carry control and events. On a
barge-in the server sends `clear` so the device flushes its playback buffer.
"""

from __future__ import annotations

from typing import Any

from duplex.audio import SAMPLE_RATE, StreamResampler, check_rate, float_to_pcm16, pcm16_to_float
from duplex.commands import AddUserText, Cancel, Respond, SetPolicy
from duplex.config import PolicySettings
from duplex.events import Error, Event, Interrupted, ResponseAudio, ResponseDone
from duplex.tdm import POLICIES
from server.protocol import Action, Actions, Audio, ClientError, Listen, Send, parse_object, require

RATES = (8000, 16000, 22050, 24000, 44100, 48000)


class StreamProtocol:
    """One `/v1/stream` connection."""

    def __init__(self, *, session_id: str, settings: PolicySettings) -> None:
        self._settings = settings
        self.session_id = session_id
        self._out = Actions()
        self._listening = False  # after the hello
        self._output: StreamResampler | None = None
        self._output_rate = SAMPLE_RATE

    def opened(self) -> list[Action]:
        """Nothing until the client's hello."""
        return []

    def closing(self, error: ClientError) -> list[Action]:
        """The session is about to be closed by the server (a drain's deadline): its own
        message type, so a client tells it from an error about what it sent."""
        return [Send({"type": "closing", "error": error.to_dict()})]

    def refused(self, reason: str) -> list[Action]:
        """The session's input is full: the audio just sent was not taken."""
        return [self._error(ClientError("invalid_request_error", "input_full", reason))]

    def receive(self, message: str | bytes) -> list[Action]:
        try:
            if isinstance(message, bytes):
                self._audio(message)
            else:
                self._control(parse_object(message))
        except ClientError as error:
            self._out.add(self._error(error))
        return self._out.take()

    def _error(self, error: ClientError) -> Send:
        """The wire's one error shape, for the client's mistakes and the session's."""
        return Send({"type": "error", "error": error.to_dict()})

    def _audio(self, pcm: bytes) -> None:
        if not self._listening:
            raise ClientError(
                "invalid_request_error", "audio_before_hello", "send hello before audio"
            )
        if len(pcm) % 2:
            raise ClientError(
                "invalid_request_error",
                "invalid_audio",
                f"audio message has {len(pcm)} bytes; PCM16 needs an even count",
            )
        self._out.add(Audio(pcm))

    def _control(self, event: dict[str, Any]) -> None:
        kind = require(event, "type", str)
        if kind == "hello":
            self._hello(event)
            return
        if not self._listening:
            raise ClientError("invalid_request_error", "hello_first", "send hello first", "type")
        if kind == "text":
            self._out.add(AddUserText(require(event, "text", str)))
        elif kind == "respond":
            self._out.add(Respond())
        elif kind == "cancel":
            self._out.add(Cancel())
        else:
            raise ClientError(
                "invalid_request_error", "unknown_event", f"unknown message type {kind!r}", "type"
            )

    def _hello(self, event: dict[str, Any]) -> None:
        if self._listening:
            raise ClientError("invalid_request_error", "hello_twice", "hello was already sent")
        rates = {}
        for key in ("sample_rate", "output_sample_rate"):
            rate = event.get(key, SAMPLE_RATE)
            if not isinstance(rate, int) or isinstance(rate, bool) or rate not in RATES:
                raise ClientError(
                    "invalid_request_error",
                    "invalid_value",
                    f"{key} must be one of {', '.join(map(str, RATES))}",
                    key,
                )
            rates[key] = check_rate(rate)
        policy = event.get("policy")
        if policy is not None and policy not in POLICIES:
            raise ClientError(
                "invalid_request_error",
                "invalid_value",
                f"policy must be one of {', '.join(POLICIES)}",
                "policy",
            )
        self._output_rate = rates["output_sample_rate"]
        self._listening = True
        self._out.add(Listen(rates["sample_rate"]))
        if policy is not None:
            self._out.add(SetPolicy(POLICIES[policy](self._settings)))
        self._out.add(
            Send(
                {
                    "type": "ready",
                    "session_id": self.session_id,
                    "sample_rate": rates["sample_rate"],
                    "output_sample_rate": self._output_rate,
                    "frame_ms": 20,
                }
            )
        )

    def events(self, events: list[Event]) -> list[Action]:
        """Session events as messages for the client."""
        for event in events:
            if isinstance(event, ResponseAudio):
                if self._output is None:
                    self._output = StreamResampler(SAMPLE_RATE, self._output_rate)
                pcm = float_to_pcm16(self._output.process(pcm16_to_float(event.pcm)))
                if pcm.size:
                    self._send(pcm.astype("<i2").tobytes())
                continue
            if isinstance(event, Interrupted):
                self._output = None  # what the resampler holds was never heard
                self._send({"type": "clear", "response_id": event.response_id})
            elif isinstance(event, ResponseDone):
                self._flush_output()
            elif isinstance(event, Error):
                self._out.add(self._error(ClientError("server_error", event.code, event.message)))
                continue
            self._send(event.to_dict())
        return self._out.take()

    def _send(self, message: dict[str, Any] | bytes) -> None:
        self._out.add(Send(message))

    def _flush_output(self) -> None:
        if self._output is not None:
            tail = float_to_pcm16(self._output.flush())
            if tail.size:
                self._send(tail.astype("<i2").tobytes())
            self._output = None
