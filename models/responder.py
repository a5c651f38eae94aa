"""Answers from an external inference engine: OpenAI-compatible chat completions, streamed.

vLLM, SGLang and llama.cpp's server all speak `POST {base_url}/chat/completions`
with `"stream": true` (server-sent events, one `data: {json}` line per chunk,
`data: [DONE]` at the end). The frozen LM keeps deciding turns every tick;
only the words of the answer come from here.

Each answer is read by a daemon thread into a queue, so the TDM loop never
waits on the network: `read` takes what has arrived. The loop's barge-in
closes the socket at once (`stop`), which is what frees the engine's slot.

Failure policy, each a `ResponderError` the session answers by letting the
local LM write the rest (and telling the client):
- no connection, or an HTTP error, before any text: one retry, then fail;
- no first token within `first_token_ms` of `start`: fail (a slow engine);
- the stream breaks off, or is silent for `timeout_s`, after some text:
  fail at once (a stream cannot be resumed; the LM continues the words
  already written).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import queue
import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from duplex.config import ResponderSettings
from duplex.ports import ResponderError
from duplex.tools import NO_TOOLS, ToolCall, Tools

log = logging.getLogger(__name__)


class _Stream:
    """One streamed answer: a thread reading server-sent events into a queue."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes, timeout_s: float) -> None:
        self.items: queue.Queue[tuple[str, str]] = queue.Queue()
        self._url = urlsplit(url)
        self._headers = headers
        self._body = body
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="responder-stream", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Close the connection now; the reader thread ends on its own."""
        with self._lock:
            self._stopped = True
            connection = self._connection
        sock = connection.sock if connection is not None else None
        if sock is not None:
            # wakes a blocked read; the reader thread closes the connection itself
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        for attempt in (1, 2):  # one retry, only while nothing was received
            try:
                self._request()
                return
            except _Retry as error:
                if attempt == 2 or self._stopped:
                    self.items.put(("error", str(error)))
                    return
            except TimeoutError:
                if not self._stopped:
                    silent = f"the engine sent nothing for {self._timeout_s:g} s"
                    self.items.put(("error", silent))
                return
            except (OSError, http.client.HTTPException, ValueError) as error:
                if not self._stopped:
                    self.items.put(("error", f"the engine's stream broke off: {error}"))
                return

    def _request(self) -> None:
        url = self._url
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = kind(url.hostname or "", url.port, timeout=self._timeout_s)
        with self._lock:
            if self._stopped:
                return
            self._connection = connection
        try:
            try:
                connection.request("POST", url.path, self._body, self._headers)
                response = connection.getresponse()
            except OSError as error:
                raise _Retry(f"the engine at {url.netloc} is unreachable: {error}") from None
            if response.status != 200:
                detail = response.read(300).decode("utf-8", "replace").strip()
                raise _Retry(f"the engine answered HTTP {response.status}: {detail}")
            self._read_events(response)
        finally:
            connection.close()

    def _read_events(self, response: http.client.HTTPResponse) -> None:
        while not self._stopped:
            line = response.readline()
            if not line:
                raise OSError("the connection closed before the answer's end")
            data = line.decode("utf-8", "replace").strip()
            if not data.startswith("data:"):
                continue  # blank separators, comments, event names
            data = data[5:].strip()
            if data == "[DONE]":
                self.items.put(("done", ""))
                return
            text, calls, finished = _delta(json.loads(data))
            if text:
                self.items.put(("text", text))
            for call in calls:
                self.items.put(("call", json.dumps(call)))
            if finished:
                self.items.put(("done", ""))
                return


class _Retry(Exception):
    """A failure before any text arrived: worth one more try."""


def _delta(chunk: Any) -> tuple[str, list[dict[str, Any]], bool]:
    """(content, tool call deltas, finished) of one chat.completion.chunk."""
    if not isinstance(chunk, dict):
        raise ValueError(f"a stream chunk is not an object: {chunk!r}")
    if "error" in chunk:
        raise ValueError(f"the engine reported an error: {chunk['error']}")
    choices = chunk.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        delta = {}
    content = delta.get("content")
    calls = [c for c in delta.get("tool_calls") or [] if isinstance(c, dict)]
    text = content if isinstance(content, str) else ""
    return text, calls, choice.get("finish_reason") is not None


class _CallParts:
    """A streamed tool call's pieces (id and name first, the arguments in fragments)."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, str]] = {}

    def add(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", 0)
        call = self.calls.setdefault(index if isinstance(index, int) else 0, {})
        function = delta.get("function")
        if not isinstance(function, dict):
            function = {}
        for key, value in (("id", delta.get("id")), ("name", function.get("name"))):
            if isinstance(value, str) and value:
                call[key] = value
        fragment = function.get("arguments")
        if isinstance(fragment, str):
            call["arguments"] = call.get("arguments", "") + fragment

    def first(self) -> ToolCall | None:
        """The answer's call (one an answer; an engine's further parallel calls are
        dropped, logged)."""
        if not self.calls:
            return None
        if len(self.calls) > 1:
            log.warning("the engine made %d calls at once; the first is kept", len(self.calls))
        call = self.calls[min(self.calls)]
        if "name" not in call:
            raise ResponderError("the engine streamed a tool call without a name")
        arguments = call.get("arguments") or "{}"
        try:
            json.loads(arguments)
        except ValueError:
            reason = f"the engine's tool call arguments are not JSON: {arguments!r}"
            raise ResponderError(reason) from None
        call_id = call.get("id") or f"call_{uuid.uuid4().hex[:12]}"
        return ToolCall(call_id, call["name"], arguments)


class RemoteResponder:
    """The `Responder` port over an OpenAI-compatible streaming chat-completions API."""

    def __init__(
        self, settings: ResponderSettings, *, max_tokens: int = 48, temperature: float = 0.0
    ) -> None:
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._stream: _Stream | None = None
        self._parts = _CallParts()
        self._call: ToolCall | None = None
        self._started = 0.0
        self._first = True
        self.first_token_s: float | None = None  # of the latest answer, from `start`

    def start(
        self,
        messages: list[dict[str, Any]],
        tools: Tools = NO_TOOLS,
        max_tokens: int | None = None,
    ) -> None:
        self.stop()
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "stream": True,
            "max_tokens": self._max_tokens if max_tokens is None else max_tokens,
            "temperature": self._temperature,
        }
        if tools.active:
            body["tools"] = [tool.to_openai() for tool in tools.allowed()]
            body["tool_choice"] = tools.openai_choice()
        self._parts, self._call = _CallParts(), None
        self._started, self._first, self.first_token_s = time.monotonic(), True, None
        self._stream = _Stream(
            self.url, self._headers, json.dumps(body).encode("utf-8"), self.settings.timeout_s
        )

    def read(self, max_tokens: int) -> tuple[str, bool]:
        stream = self._stream
        if stream is None:
            return "", True
        text, pieces = "", 0
        while pieces < max_tokens:
            try:
                kind, value = stream.items.get_nowait()
            except queue.Empty:
                break
            if kind == "error":
                self.stop()
                log.warning("the engine failed: %s", value)
                raise ResponderError(value)
            if kind == "call":
                self._parts.add(json.loads(value))
                continue
            if kind == "done":
                self._stream = None
                self._call = self._parts.first()
                return text, True
            text, pieces = text + value, pieces + 1
        waited_ms = (time.monotonic() - self._started) * 1000
        if self._first and (text or self._parts.calls):
            self._first, self.first_token_s = False, waited_ms / 1000
        elif self._first and waited_ms > self.settings.first_token_ms:
            self.stop()
            reason = f"no first token from the engine within {self.settings.first_token_ms} ms"
            log.warning(reason)
            raise ResponderError(reason)
        return text, False

    def tool_call(self) -> ToolCall | None:
        return self._call

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream = None
