"""Function tools: what a client declares the assistant may call, and a call it makes.

An answer is either speech or one function call. The client runs the function
and adds its output to the conversation (`AddToolResult`); the next answer is
written from it. Where the words come from decides how a call is made: an
external engine gets the tools with the chat request and streams its own
`tool_calls`; the in-process LM decodes the call under the tools' JSON schemas
(`models.tool_calls`), so it is always valid JSON for a declared function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CHOICES = ("auto", "none", "required")


@dataclass(frozen=True)
class Tool:
    """One function: its name, what it does, and its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        """As chat completions take it."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class Tools:
    """The tools an answer may use, and `choice`: auto (the model decides), none,
    required (it must call one), or one tool's name (it must call that one)."""

    tools: tuple[Tool, ...] = ()
    choice: str = "auto"

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        if self.choice not in CHOICES and self.choice not in names:
            raise ValueError(
                f"tool_choice is one of {', '.join(CHOICES)} or a declared tool's name, "
                f"got {self.choice!r}"
            )

    @property
    def active(self) -> bool:
        """Whether the answer may be a call at all."""
        return bool(self.tools) and self.choice != "none"

    @property
    def must_call(self) -> bool:
        return self.active and self.choice != "auto"

    def allowed(self) -> tuple[Tool, ...]:
        """The tools the answer may call."""
        if not self.active:
            return ()
        named = [t for t in self.tools if t.name == self.choice]
        return tuple(named) or self.tools

    def openai_choice(self) -> Any:
        if self.choice in CHOICES:
            return self.choice
        return {"type": "function", "function": {"name": self.choice}}


NO_TOOLS = Tools()


@dataclass(frozen=True)
class ToolCall:
    """A call the assistant made: `arguments` is a JSON object, as text."""

    call_id: str
    name: str
    arguments: str

    def arguments_object(self) -> dict[str, Any]:
        value = json.loads(self.arguments or "{}")
        return value if isinstance(value, dict) else {}
