"""`duplex chat`: arguments, the engine (embedded or a server), the terminal view."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from client.assistant import Assistant, list_devices
from client.conversation import Conversation
from duplex.ports import Steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        metavar="URL",
        help="talk through a `duplex serve` (ws://HOST:PORT/v1/stream) instead of the "
        "embedded models",
    )
    parser.add_argument(
        "--token", default=os.environ.get("DUPLEX_TOKEN"), help="the server's token, if any"
    )
    parser.add_argument("--devices", action="store_true", help="list audio devices and exit")
    parser.add_argument("--input-device", help="microphone: a number or part of a name")
    parser.add_argument("--output-device", help="speaker: a number or part of a name")
    parser.add_argument(
        "--no-echo-cancel",
        action="store_true",
        help="for headphones: skip echo cancellation (with speakers it will hear itself)",
    )
    parser.add_argument("--seconds", type=float, help="stop after this long")
    parser.add_argument("--events", type=Path, help="write every event as a JSON line here")
    parser.add_argument("--quiet", action="store_true", help="no terminal view")


def _device(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def run(args: argparse.Namespace, embedded: Callable[[], Steps]) -> int:
    """`embedded`: builds the in-process session (when no `--server` is given)."""
    if args.devices:
        print(list_devices())
        return 0

    def make_engine() -> Steps:
        if args.server:
            from client.remote import RemoteSession

            return RemoteSession(args.server, token=args.token)
        return embedded()

    view = None if args.quiet or not sys.stdout.isatty() else _LiveView()
    assistant = Assistant(
        make_engine,
        input_device=_device(args.input_device),
        output_device=_device(args.output_device),
        echo_cancel=not args.no_echo_cancel,
        events_path=args.events,
        on_change=view.update if view else None,
    )
    # Ctrl-C or a TERM ends the loop between blocks, never inside a device call
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: assistant.stop())
    if view is not None:
        with view:
            assistant.run(args.seconds)
    else:
        assistant.run(args.seconds)
    erle = assistant.echo.erle_db
    if erle is not None:
        print(f"echo cancellation: {erle:.1f} dB ERLE", file=sys.stderr)
    return 0


class _LiveView:
    """rich Live around the conversation, redrawn when events arrive."""

    def __init__(self) -> None:
        from rich.live import Live

        from client.ui import render

        self._render = render
        self._live = Live(render(Conversation()), refresh_per_second=10)

    def __enter__(self) -> _LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, conversation: Conversation) -> None:
        self._live.update(self._render(conversation))
