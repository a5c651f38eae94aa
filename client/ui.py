"""The local assistant's terminal view (rich): state, both sides' words, latency per turn."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from client.conversation import Conversation

STATE_STYLE = {
    "listening": "green",
    "hearing": "cyan",
    "thinking": "yellow",
    "speaking": "magenta",
    "yielded": "red",
}


def render(conversation: Conversation, *, last_lines: int = 12) -> RenderableType:
    style = STATE_STYLE.get(conversation.state, "")
    state = Text(f" {conversation.state} ", style=f"bold reverse {style}")
    header = Text.assemble(state, "  ", (conversation.status, "dim"))
    words = Text()
    for line in conversation.lines[-last_lines:]:
        if line.speaker == "note":
            words.append(f"  ({line.text})\n", style="dim")
            continue
        who = "you" if line.speaker == "you" else "duplex"
        words.append(f"{who:>7}: ", style="bold cyan" if line.speaker == "you" else "bold magenta")
        words.append(line.text, style="italic" if line.partial else "")
        if line.unheard:
            words.append(" " + line.unheard, style="strike dim")
        words.append("\n")
    turns = Table("turn", "end of turn", "barge-in stop", "outcome", box=None, pad_edge=False)
    for n, turn in enumerate(conversation.turns[-5:], start=max(1, len(conversation.turns) - 4)):
        turns.add_row(
            str(n), _ms(turn["end_of_turn_ms"]), _ms(turn["barge_in_stop_ms"]), str(turn["outcome"])
        )
    return Panel(
        Group(header, Text(), words, turns),
        title="duplex chat",
        subtitle="talk any time; Ctrl-C quits",
    )


def _ms(value: float | str | None) -> str:
    return "-" if value is None or isinstance(value, str) else f"{value:.0f} ms"
