"""Function calls from the in-process LM, decoded under the tools' JSON schemas.

With `tool_choice` auto the answer is a call only when the user's words name
what a tool is for (`mentioned`: a word of theirs shares its stem with a word
of the tool's name or description). The 135M model cannot make that choice
itself: asked whether a request needs a function it said yes or no about as
often whatever the request (4 of 14 right, docs/decisions.md), and it never
starts an answer with `<tool_call>` on its own (P < 0.01). So "Is it raining
in London?" gets no call from `get_weather`: a user who needs tools chosen
well points the answers at the external engine.

To write a call the cache reads a note that lists the tools (a system turn)
and then the assistant's turn. The call is written by the program and the
model together: the program writes
the JSON's structure (braces, keys, quotes) and the model fills only the
values, each under its schema's type (a string's tokens hold no quote or
newline, an integer's only digits, an enum or a boolean is the option the
model scores highest). So a call is always valid JSON for a declared function
and its required arguments, whatever a 135M model would have written alone.

What stays in the conversation is the call alone, in the assistant's turn, as
`<tool_call>{json}</tool_call>` (the format of most open chat models); the
note is read in a probe and forgotten.

The decoder is a generator that stops after each decode: the session writes a
call a few tokens a tick, as it writes speech, so its loop never stalls for the
whole call (1.4 s on two cores) and keeps hearing the user meanwhile.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import numpy.typing as npt

from duplex.tools import Tool, ToolCall

CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"
MAX_STRING_TOKENS = 24
MAX_DIGITS = 9
Steps = Generator[None, None, Any]  # a decode between each step; returns the value

_CALL = re.compile(r"^\s*<tool_call>\s*(\{.*\})\s*</tool_call>\s*$", re.DOTALL)


# words too common to say which tool a request is for
_COMMON = frozenset(
    """about after also back been before being call could does each from give have here
    into just know like make many more most much need number please some such tell than
    that their them then there these they this value very want what when where which
    while will with would your current function information return returns""".split()  # noqa: SIM905
)
_WORD = re.compile(r"[a-z]+")


def _stems(text: str) -> set[str]:
    """Word stems (their first five letters) of the words of four letters or more."""
    return {w[:5] for w in _WORD.findall(text.lower().replace("_", " ")) if len(w) >= 4} - {
        w[:5] for w in _COMMON
    }


def mentioned(tool: Tool, request: str) -> bool:
    """Whether the request names what `tool` is for (a shared word stem)."""
    return bool(_stems(request) & _stems(f"{tool.name} {tool.description}"))


def tools_note(tools: tuple[Tool, ...]) -> str:
    """What the LM reads before an answer that may be a call: each tool as a short
    signature (the note is read on the answer's path, so shorter is sooner)."""
    lines = ["You may call one of these functions:"]
    for tool in tools:
        properties = tool.parameters.get("properties") or {}
        arguments = ", ".join(
            f"{key}: {spec.get('type', 'string') if isinstance(spec, dict) else 'string'}"
            for key, spec in properties.items()
        )
        lines.append(f"- {tool.name}({arguments}): {tool.description}".rstrip(": "))
    lines.append(
        'To call one, answer with <tool_call>{"name": ..., "arguments": {...}}</tool_call> '
        "and nothing else. If no function helps, answer in words."
    )
    return "\n".join(lines)


def call_text(call: ToolCall) -> str:
    """The call as it stays in the assistant's turn."""
    body = {"id": call.call_id, "name": call.name, "arguments": call.arguments_object()}
    return CALL_OPEN + json.dumps(body) + CALL_CLOSE


def parse_call(content: str) -> ToolCall | None:
    """The call an assistant turn holds, or None for words."""
    match = _CALL.match(content)
    if match is None:
        return None
    try:
        body = json.loads(match.group(1))
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return None
    arguments = body.get("arguments") if isinstance(body.get("arguments"), dict) else {}
    return ToolCall(str(body.get("id", "")), body["name"], json.dumps(arguments))


@functools.lru_cache(maxsize=4)
def _masks(pieces: tuple[str, ...]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which tokens a JSON string may hold (no quote, backslash or control
    character), and which are digits; once per vocabulary."""
    plain = np.array([bool(p) and not any(c in p for c in '"\\\n\r\t') for p in pieces])
    return plain, np.array([p.isdigit() for p in pieces])


class CallDecoder:
    """Decodes one call at the end of an LM's cache (inside the LM's probe).

    `push` appends tokens to the cache; `logits` reads the next-token logits;
    `probe` is a context in which whatever is appended is forgotten after.
    """

    def __init__(
        self,
        tokenize: Callable[[str], list[int]],
        push: Callable[[list[int]], object],
        logits: Callable[[], npt.NDArray[np.float32]],
        probe: Callable[[], AbstractContextManager[None]],
        pieces: list[str],
    ) -> None:
        self._tokenize = tokenize
        self._push = push
        self._logits = logits
        self._probe = probe
        self._pieces = pieces
        self._quote = tokenize('"')[0]
        self._string_ok, self._digit_ok = _masks(tuple(pieces))

    def write(self, tools: tuple[Tool, ...], call_id: str) -> Generator[None, None, ToolCall]:
        """The call, decoded here, one decode a step: the model picks the function and
        fills its arguments."""
        yield from self._say(CALL_OPEN + '{"name": "')
        by_name = {t.name: t for t in tools}
        name = (yield from self._choose([json.dumps(n)[1:] for n in by_name])).removesuffix('"')
        yield from self._say(', "arguments": ')
        arguments = yield from self._value(by_name[name].parameters or {"type": "object"})
        return ToolCall(call_id, name, json.dumps(arguments))

    # the values ----------------------------------------------------------------

    def _value(self, schema: dict[str, Any]) -> Steps:
        if schema.get("enum"):
            options = [json.dumps(option) for option in schema["enum"]]
            return json.loads((yield from self._choose(options)))
        kind = schema.get("type", "string")
        if isinstance(kind, list):  # ["string", "null"]: the first that is not null
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object":
            return (yield from self._object(schema))
        if kind == "boolean":
            return json.loads((yield from self._choose(["true", "false"])))
        if kind in ("integer", "number"):
            return (yield from self._number(kind == "number"))
        if kind == "array":
            yield from self._say("[]")
            return []
        if kind == "null":
            yield from self._say("null")
            return None
        return (yield from self._string())

    def _object(self, schema: dict[str, Any]) -> Steps:
        properties = schema.get("properties") or {}
        required = schema.get("required")
        keys = [k for k in properties if k in required] if required else list(properties)
        value: dict[str, Any] = {}
        yield from self._say("{")
        for i, key in enumerate(keys):
            yield from self._say((", " if i else "") + json.dumps(key) + ": ")
            spec = properties[key] if isinstance(properties[key], dict) else {}
            value[key] = yield from self._value(spec)
        yield from self._say("}")
        return value

    def _string(self) -> Steps:
        yield from self._say('"')
        tokens: list[int] = []
        for _ in range(MAX_STRING_TOKENS):
            logits = self._logits()
            best = int(np.argmax(logits))
            if self._pieces[best].startswith('"') and tokens:
                break  # the model closes the string (perhaps with more after the quote)
            allowed = np.where(self._string_ok, logits, -np.inf)
            allowed[self._quote] = logits[self._quote] if tokens else -np.inf
            token = int(np.argmax(allowed))
            if token == self._quote:
                break
            tokens.append(token)
            yield from self._step([token])
        yield from self._step([self._quote])
        return "".join(self._pieces[t] for t in tokens).strip()

    def _number(self, fraction: bool) -> Steps:
        digits = ""
        for _ in range(MAX_DIGITS):
            logits = self._logits()
            best = int(np.argmax(logits))
            if digits and not self._digit_ok[best]:
                break  # the model ends the number
            token = int(np.argmax(np.where(self._digit_ok, logits, -np.inf)))
            digits += self._pieces[token]
            yield from self._step([token])
        value = int(digits)
        return float(value) if fraction else value

    # scoring -------------------------------------------------------------------

    def _choose(self, options: list[str]) -> Steps:
        """The option the model scores highest (mean log-probability a token, so a
        long option is not penalized for its length); it is then written."""
        scores = []
        for option in options:
            logprob = yield from self._logprob(option)
            scores.append(logprob / max(1, len(self._tokenize(option))))
        best = options[int(np.argmax(scores))]
        yield from self._say(best)
        return best

    def _logprob(self, text: str) -> Steps:
        """log P(`text` next), read in a probe."""
        total = 0.0
        with self._probe():
            for token in self._tokenize(text):
                logits = self._logits()
                top = float(logits.max())
                total += float(logits[token] - top - np.log(np.exp(logits - top).sum()))
                yield from self._step([token])
        return total

    def _say(self, text: str) -> Steps:
        tokens = self._tokenize(text)
        if tokens:
            yield from self._step(tokens)

    def _step(self, tokens: list[int]) -> Steps:
        """One decode, then the step ends."""
        self._push(tokens)
        yield
