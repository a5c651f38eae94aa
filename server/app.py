"""`duplex serve`: the runtime as a websocket service.

Routes: `/v1/realtime` (OpenAI Realtime protocol), `/v1/stream` (the lean
device protocol), `/` (the browser client), `/healthz`, `/metrics`
(Prometheus). Every session runs on its own worker thread; the event loop
only moves bytes, so one slow session never stalls another.

Limits, each with a clear error: at most `max_sessions` at once (a newcomer
gets an error event and close code 1013); messages over `max_message_bytes`
are refused with an error event (the session goes on), and over four times
that the connection is closed (1009) before the message is read into memory;
idle and total session timeouts (1008); at most `max_queued_audio_ms` of
audio waiting to be processed (faster-than-real-time audio past that is
refused with an error event); at most `max_outbox` messages waiting for a
client that reads too slowly (then 1008).

Draining (`drain`, on SIGTERM or SIGINT): `/healthz` answers 503 "draining"
at once and new sessions are refused (close code 1012 and an error event;
a handshake that came through a proxy gets HTTP 503, which the proxy can
pass to another replica). Live sessions go on as they were until the
deadline (`Limits.drain_s`); then each, once it is between answers (at most
`DRAIN_GRACE_S` later), gets an error event `server_shutting_down` and a
close frame (1001), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import mimetypes
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlparse

from prometheus_client import Counter, Gauge, ProcessCollector, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from duplex.commands import ShareCores
from duplex.events import Event, Interrupted, ResponseDone, TurnMetrics, TurnTaken
from duplex.session import Session
from server.metrics import LatencyMetrics
from server.protocol import (
    CLOSE_FULL,
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_RESTARTING,
    DRAINING,
    SHUTTING_DOWN,
    Action,
    Audio,
    ClientError,
    Listen,
    Outbox,
    Send,
)
from server.realtime import RealtimeProtocol
from server.stream import StreamProtocol
from server.worker import Backpressure, SessionWorker

if TYPE_CHECKING:  # the composition root hands the stack in
    from app.stack import SpeechStack

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parents[1] / "client" / "web"
REALTIME, STREAM = "/v1/realtime", "/v1/stream"
EXTENSIONS = "duplex_events"  # /v1/realtime?duplex_events=1: our own events too
DRAIN_GRACE_S = 15.0  # past the drain deadline, how long an answer may still finish


@dataclass(frozen=True)
class Limits:
    max_sessions: int = 4
    max_message_bytes: int = 1 << 20
    idle_timeout_s: float = 120.0
    max_session_s: float = 3600.0
    max_queued_audio_ms: int = 2000
    max_outbox: int = 4000
    drain_s: float = 30.0  # after SIGTERM, how long live sessions may go on


class Sessions(Protocol):
    """Where sessions come from: the real models, shared, with one LM per session."""

    def acquire(self) -> Session: ...

    def release(self, session: Session) -> None: ...

    def load(self) -> None: ...


class Wire(Protocol):
    """A wire protocol, sans I/O: each call returns what the server is to do."""

    def opened(self) -> list[Action]: ...

    def receive(self, message: str | bytes) -> list[Action]: ...

    def events(self, events: list[Event]) -> list[Action]: ...

    def refused(self, reason: str) -> list[Action]: ...

    def closing(self, error: ClientError) -> list[Action]: ...


@dataclass
class _Live:
    """A session the server holds, as a drain sees it."""

    ws: ServerConnection
    wire: Wire
    outbox: Outbox
    carry: Callable[[list[Action]], None]  # does what the protocol asks
    answering: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DuplexServer:
    """The websocket server; `await start()`, then `port` is the bound port."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        limits: Limits | None = None,
        model_name: str = "duplex",
    ) -> None:
        if not is_loopback(host) and not token:
            raise ValueError(
                f"binding {host} exposes the server beyond this machine: set a token "
                "(--token or DUPLEX_TOKEN)"
            )
        self.sessions, self.host, self.token = sessions, host, token
        self.limits = limits or Limits()
        self.model_name = model_name
        self._port = port
        self._server: Server | None = None
        self._active: set[str] = set()
        self._live: dict[str, _Live] = {}
        self.draining = False
        self._ids = itertools.count(1)
        self._started = time.monotonic()
        self.latency = LatencyMetrics()
        registry = self.latency.registry
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds
        self._m_active = Gauge("duplex_sessions_active", "Open sessions.", registry=registry)
        self._m_sessions = Counter(
            "duplex_sessions", "Sessions by how they ended.", ["end"], registry=registry
        )
        self._m_errors = Counter(
            "duplex_errors", "Error events sent, by code.", ["code"], registry=registry
        )

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        await asyncio.to_thread(self.sessions.load)
        self._server = await serve(
            self._handle,
            self.host,
            self._port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            max_size=4 * self.limits.max_message_bytes,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def drain(self, deadline_s: float, grace_s: float = DRAIN_GRACE_S) -> None:
        """Take no new sessions; let live ones go on for `deadline_s`, then close each
        between answers (or `grace_s` later), and stop."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        log.info("draining: %d live sessions, deadline %.0f s", len(self._live), deadline_s)
        while self._live and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.gather(
            *(self._close_live(live, deadline + grace_s) for live in list(self._live.values()))
        )
        await self.stop()

    async def _close_live(self, live: _Live, latest: float) -> None:
        loop = asyncio.get_running_loop()
        while live.answering and loop.time() < latest:
            await asyncio.sleep(0.05)
        live.carry(live.wire.closing(SHUTTING_DOWN))
        flushed = loop.time() + 1.0
        while not live.outbox.empty() and loop.time() < flushed:
            await asyncio.sleep(0.01)
        with contextlib.suppress(ConnectionClosed):
            await live.ws.close(CLOSE_GOING_AWAY, "server shutting down")

    async def serve_forever(self) -> None:
        """After `start()`: serve until cancelled."""
        assert self._server is not None, "start() the server first"
        await self._server.serve_forever()

    # HTTP ------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlparse(request.path).path
        if path == "/healthz":
            health = self.health()
            # a full or draining replica answers 503: a health check passes it by
            ok = health["status"] == "ok"
            return _json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, health)
        if self.draining and path in (REALTIME, STREAM) and "X-Forwarded-For" in request.headers:
            # through a proxy, refused before the handshake: it can try another replica
            response = _json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": DRAINING.message})
            response.headers["Retry-After"] = "1"
            return response
        if path in (REALTIME, STREAM, "/metrics") and not self._authorized(request.headers):
            return _json(
                HTTPStatus.UNAUTHORIZED,
                {"error": "a valid token is required: Authorization: Bearer <token>"},
            )
        if path == "/metrics":
            body = generate_latest(self.latency.registry)
            return _response(HTTPStatus.OK, body, "text/plain; version=0.0.4")
        if path in (REALTIME, STREAM):
            return None  # the websocket handshake goes on
        return self._static(path)

    def _authorized(self, headers: Headers) -> bool:
        if not self.token:
            return True
        if headers.get("Authorization", "") == f"Bearer {self.token}":
            return True
        offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
        return f"openai-insecure-api-key.{self.token}" in offered

    def _static(self, path: str) -> Response:
        name = "index.html" if path in ("", "/") else path.lstrip("/")
        file = (WEB_ROOT / name).resolve()
        if WEB_ROOT not in file.parents or not file.is_file():
            return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return _response(HTTPStatus.OK, file.read_bytes(), kind)

    def health(self) -> dict[str, Any]:
        full = len(self._active) >= self.limits.max_sessions
        return {
            "status": "draining" if self.draining else "full" if full else "ok",
            "sessions": len(self._active),
            "max_sessions": self.limits.max_sessions,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "pid": os.getpid(),  # which replica answered, behind a proxy
        }

    # websockets ------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = urlparse(ws.request.path).path
        if self.draining:
            self._m_sessions.labels(end="rejected_draining").inc()
            await ws.send(json.dumps({"type": "error", "error": DRAINING.to_dict()}))
            await ws.close(CLOSE_RESTARTING, "server draining")
            return
        if len(self._active) >= self.limits.max_sessions:
            error = ClientError(
                "server_error",
                "server_full",
                f"the server holds its maximum of {self.limits.max_sessions} sessions; "
                "try again later",
            )
            self._m_sessions.labels(end="rejected_full").inc()
            await ws.send(json.dumps({"type": "error", "error": error.to_dict()}))
            await ws.close(CLOSE_FULL, "server full")
            return
        session_id = f"sess_{next(self._ids):04d}"
        self._active.add(session_id)
        self._m_active.inc()
        end = "closed"
        try:
            session = await asyncio.to_thread(self.sessions.acquire)
            end = await self._converse(ws, path, session, session_id)
        finally:
            self._active.discard(session_id)
            self._m_active.dec()
            self._m_sessions.labels(end=end).inc()

    async def _converse(
        self, ws: ServerConnection, path: str, session: Session, session_id: str
    ) -> str:
        loop = asyncio.get_running_loop()
        outbox = Outbox(self.limits.max_outbox)
        wire: Wire
        closed = threading.Event()

        def emit(events: list[Event]) -> None:
            if not closed.is_set():
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                    loop.call_soon_threadsafe(deliver, events)

        def deliver(events: list[Event]) -> None:
            for event in events:
                if isinstance(event, TurnMetrics):
                    self.latency.observe(event.record)
                elif isinstance(event, TurnTaken):
                    live.answering = True
                elif isinstance(event, ResponseDone | Interrupted):
                    live.answering = False
            carry(wire.events(events))

        workers: list[SessionWorker] = []

        def carry(actions: list[Action]) -> None:
            """Send, open the session's input, feed it audio, pass commands on."""
            for action in actions:
                if isinstance(action, Send):
                    outbox.put(action.message)
                elif isinstance(action, Listen):
                    workers.append(
                        SessionWorker(
                            session,
                            emit,
                            rate=action.rate,
                            max_queued_ms=self.limits.max_queued_audio_ms,
                            name=session_id,
                            on_exit=lambda: self.sessions.release(session),
                        )
                    )
                elif isinstance(action, Audio):
                    try:
                        workers[-1].push_audio(action.pcm)
                    except Backpressure as error:
                        carry(wire.refused(str(error)))
                else:
                    workers[-1].call(action)

        if path == REALTIME:
            headers = ws.request.headers if ws.request else Headers()
            beta = "realtime=v1" in headers.get("OpenAI-Beta", "") or (
                "openai-beta.realtime-v1" in headers.get("Sec-WebSocket-Protocol", "")
            )
            query = parse_qs(urlparse(ws.request.path).query) if ws.request else {}
            wire = RealtimeProtocol(
                model=self.model_name,
                settings=session.settings,
                beta=beta,
                session_id=session_id,
                extensions=query.get(EXTENSIONS, ["0"])[0] in ("1", "true"),
            )
        else:
            wire = StreamProtocol(session_id=session_id, settings=session.settings)
        live = self._live[session_id] = _Live(ws, wire, outbox, carry)
        sender = asyncio.create_task(self._send_loop(ws, outbox))
        carry(wire.opened())
        try:
            return await self._receive_loop(ws, lambda m: carry(wire.receive(m)), outbox)
        finally:
            del self._live[session_id]
            closed.set()
            for worker in workers:  # each gives the session back when its thread ends
                worker.close(wait=False)
            if not workers:
                self.sessions.release(session)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _receive_loop(
        self, ws: ServerConnection, receive: Callable[[str | bytes], None], outbox: Outbox
    ) -> str:
        """Messages to the protocol until the client leaves or a limit closes the connection."""
        last_message = [time.monotonic()]
        watchdog = asyncio.create_task(self._watchdog(ws, outbox, last_message))
        try:
            async for message in ws:
                last_message[0] = time.monotonic()
                if len(message) > self.limits.max_message_bytes:
                    error = ClientError(
                        "invalid_request_error",
                        "message_too_large",
                        f"messages are limited to {self.limits.max_message_bytes} bytes",
                    )
                    outbox.put({"type": "error", "error": error.to_dict()})
                    continue
                receive(message)
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
        return watchdog.result() if watchdog.done() and not watchdog.cancelled() else "closed"

    async def _watchdog(
        self, ws: ServerConnection, outbox: Outbox, last_message: list[float]
    ) -> str:
        """Close the connection on a slow reader, an idle client or the session time limit."""
        started = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(outbox.overflowed.wait(), 0.5)
                await ws.close(CLOSE_POLICY, "client reads too slowly")
                return "slow_reader"
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - started > self.limits.max_session_s:
                await ws.close(CLOSE_POLICY, "session time limit reached")
                return "time_limit"
            if now - last_message[0] > self.limits.idle_timeout_s:
                await ws.close(CLOSE_POLICY, "idle timeout")
                return "idle"

    async def _send_loop(self, ws: ServerConnection, outbox: Outbox) -> None:
        while True:
            message = await outbox.get()
            if isinstance(message, dict):
                if message.get("type") == "error":
                    self._m_errors.labels(code=str(message["error"].get("code"))).inc()
                await ws.send(json.dumps(message))
            else:
                await ws.send(message)


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """The OpenAI browser client offers `realtime`, ours `duplex` (each with its key).

    A browser that offered subprotocols fails the handshake unless one is chosen.
    """
    for name in ("realtime", "duplex"):
        if name in offered:
            return Subprotocol(name)
    return None


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _json(status: HTTPStatus, data: dict[str, Any]) -> Response:
    return _response(status, json.dumps(data).encode(), "application/json")


class StackSessions:
    """Sessions on the embedded speech stack: shared ASR and voice, a pooled LM each."""

    def __init__(self, stack: SpeechStack, cores: int | None = None) -> None:
        """`stack`: the loaded models (`app.stack.SpeechStack`, from the composition root);
        `cores`: the CPU cores the sessions share (default: those this process may use)."""
        self.stack = stack
        self.cores = cores or len(os.sched_getaffinity(0))
        self._lms: list[Any] = []
        self._active: list[Session] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        self.stack.load()

    @property
    def in_use(self) -> int:
        """Sessions acquired and not yet released (a session's worker may outlive its
        connection while it finishes what it was sent)."""
        with self._lock:
            return len(self._active)

    def acquire(self) -> Session:
        from duplex.clock import RealClock

        with self._lock:
            lm = self._lms.pop() if self._lms else None
        session = self.stack.new_session(RealClock(), lm=lm)
        with self._lock:
            self._active.append(session)
            self._share_cores()
        return session

    def release(self, session: Session) -> None:
        session.close()  # an engine still writing an answer for it stops now
        with self._lock:
            self._lms.append(session.lm)
            self._active.remove(session)
            self._share_cores()

    def _share_cores(self) -> None:
        """One session alone reads its words on `models.lm_read_threads` threads; with
        others running, on one. Sessions read and draft at pauses while each has a
        core: beyond that the work, wasted at most pauses, takes the cores other
        sessions' turns need. The decode at a pause stays: it takes the final pass off
        the turn's path (docs/decisions.md, "Sessions sharing the cores")."""
        threads = self.stack.settings.models.lm_read_threads if len(self._active) == 1 else 1
        share = ShareCores(read_at_pauses=len(self._active) <= self.cores, read_threads=threads)
        for session in self._active:
            session.post(share)  # its worker applies it before its next frame


def run(sessions: Sessions, host: str, port: int, token: str | None, limits: Limits) -> int:
    """Serve until interrupted."""
    server = DuplexServer(sessions, host=host, port=port, token=token, limits=limits)

    async def main() -> None:
        await server.start()
        log.info("duplex serve: listening on ws://%s:%d", host, server.port)
        print(f"duplex serve: http://{host}:{server.port}/  (ws {REALTIME}, {STREAM})", flush=True)
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C stops at once
                loop.add_signal_handler(signum, stopping.set)
        serving = asyncio.create_task(server.serve_forever())
        await stopping.wait()
        live = server.health()["sessions"]
        print(
            f"duplex serve: draining {live} sessions (up to {limits.drain_s:g} s; "
            "signal again to stop now)",
            flush=True,
        )
        stopping.clear()
        drain = asyncio.create_task(server.drain(limits.drain_s))
        signalled = asyncio.create_task(stopping.wait())
        await asyncio.wait({drain, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():  # a second signal: close every session now
            drain.cancel()
            await server.drain(0.0, grace_s=0.0)
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        print("duplex serve: stopped", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
