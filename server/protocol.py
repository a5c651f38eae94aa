"""What both wire protocols share: what they ask of the server, client errors, field
checks, the bounded outbox.

The protocols are sans-I/O: each call (a message received, session events,
a close) returns actions, and `server/app.py` carries them out on the
socket and the session's worker. So a protocol is tested by the actions it
returns, with no server, thread or event loop.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from duplex.commands import Command

T = TypeVar("T")

# close codes (RFC 6455 and the private 4000-4999 range)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is shutting down: its drain deadline has passed
CLOSE_POLICY = 1008  # a limit was broken: too slow a reader, too long a session
CLOSE_TOO_BIG = 1009
CLOSE_RESTARTING = 1012  # the server is draining for a restart: reconnect (to another replica)
CLOSE_FULL = 1013  # try again later: the server holds its maximum of sessions
CLOSE_UNAUTHORIZED = 4001


@dataclass(frozen=True, slots=True)
class Send:
    """A message for the client: a JSON object, or binary audio."""

    message: dict[str, Any] | bytes


@dataclass(frozen=True, slots=True)
class Listen:
    """Open the session's input: a worker that takes audio at `rate` Hz."""

    rate: int


@dataclass(frozen=True, slots=True)
class Audio:
    """PCM16 for the session's input, at the rate `Listen` opened it with."""

    pcm: bytes


Action = Send | Listen | Audio | Command  # a Command goes to the session, in order with audio


class Actions:
    """Where a protocol collects what one call asks for."""

    def __init__(self) -> None:
        self._actions: list[Action] = []

    def add(self, action: Action) -> None:
        self._actions.append(action)

    def take(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions


@dataclass
class ClientError(Exception):
    """A problem with what the client sent; answered with an error event, never fatal."""

    type: str
    code: str
    message: str
    param: str | None = None

    def __str__(self) -> str:
        return self.message

    def to_dict(self, event_id: str | None = None) -> dict[str, Any]:
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": event_id,
        }


SHUTTING_DOWN = ClientError(
    "server_error",
    "server_shutting_down",
    "the server is shutting down; reconnect to go on",
)
DRAINING = ClientError(
    "server_error",
    "server_draining",
    "the server is draining for a restart and takes no new sessions; connect again",
)


def parse_object(message: str) -> dict[str, Any]:
    """A client's JSON text message, which must be an object."""
    try:
        event = json.loads(message)
    except json.JSONDecodeError as error:
        raise ClientError(
            "invalid_request_error", "invalid_json", f"message is not JSON: {error.msg}"
        ) from None
    if not isinstance(event, dict):
        raise ClientError(
            "invalid_request_error", "invalid_event", "a client event is a JSON object"
        )
    return event


def require(event: dict[str, Any], key: str, kind: type[T]) -> T:
    """`event[key]`, which must be present and of `kind` (an int is not a bool)."""
    value = event.get(key)
    if value is None:
        raise ClientError("invalid_request_error", "missing_field", f"{key} is required", key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ClientError(
            "invalid_request_error",
            "invalid_type",
            f"{key} must be {_kind_name(kind)}, got {type(value).__name__}",
            key,
        )
    return value


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", dict: "an object", list: "a list"}.get(
        kind, kind.__name__
    )


class Outbox:
    """Messages waiting for one client, bounded.

    A client that reads too slowly lets messages pile up; past `limit` the
    outbox is marked overflowed and the connection is closed (CLOSE_POLICY)
    rather than buffering without end or stalling the session.
    """

    def __init__(self, limit: int = 2000) -> None:
        self.limit = limit
        self.overflowed = asyncio.Event()
        self._queue: asyncio.Queue[dict[str, Any] | bytes] = asyncio.Queue()

    def put(self, message: dict[str, Any] | bytes) -> None:
        if self._queue.qsize() >= self.limit:
            self.overflowed.set()
            return
        self._queue.put_nowait(message)

    async def get(self) -> dict[str, Any] | bytes:
        return await self._queue.get()

    def empty(self) -> bool:
        return self._queue.empty()
