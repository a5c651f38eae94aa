"""`duplex`: the one composition root.

It reads the settings, wires concrete models into the core and imports the
server, the local client and the benchmark lazily inside each subcommand, so
`duplex --help` starts in a blink and the core never depends on them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from duplex import __version__
from duplex.config import Settings, load_settings, parse_assignments

Command = Callable[[argparse.Namespace, Settings], int]


class UserError(Exception):
    """A problem the user can fix; shown as one line, no traceback."""


def _not_yet(what: str) -> Command:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        raise UserError(f"{what} is not available in duplex {__version__} yet")

    return command


COMMANDS: dict[str, tuple[str, Command]] = {
    "run": ("hold a spoken exchange with the embedded models", _not_yet("duplex run")),
    "serve": ("serve the runtime over websockets", _not_yet("duplex serve")),
    "chat": ("talk to it through your microphone and speaker", _not_yet("duplex chat")),
    "bench": ("measure turn-taking latency on conversation scenarios", _not_yet("duplex bench")),
    "models": (
        "list the model weights found and how to install missing ones",
        _not_yet("duplex models"),
    ),
    "train-state-head": (
        "train the listen/speak/dismiss head on dialogue data",
        _not_yet("duplex train-state-head"),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duplex",
        description="A full-duplex speech dialogue runtime: it listens while it talks.",
    )
    parser.add_argument("--version", action="version", version=f"duplex {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="TOML settings file (default ./duplex.toml)"
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one setting, e.g. --set policy.tick_ms=120 (repeatable)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where models run")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        overrides = parse_assignments(args.set)
        if args.device:
            overrides["device"] = args.device
        settings = load_settings(args.config, overrides)
        return COMMANDS[args.command][1](args, settings)
    except (UserError, ValueError) as error:
        print(f"duplex {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
