"""`duplex`: the one composition root.

It reads the settings, wires concrete models into the core and imports the
server, the local client and the benchmark lazily inside each subcommand, so
`duplex --help` starts in a blink and the core never depends on them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from duplex import __version__
from duplex.config import Settings, load_settings, parse_assignments
from duplex.ports import Steps

Command = Callable[[argparse.Namespace, Settings], int]


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from app import run_file

    return run_file.run(args, settings)


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    from app import run_file

    run_file.add_arguments(parser)


def _models(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from models.weights import ALL, WeightsMissing, size_of

    overrides = {
        "asr": settings.models.asr,
        "lm": settings.models.lm,
        "voice": settings.models.voice,
        "turn_audio": settings.models.turn_audio_path,
    }
    if args.path:  # one part's path alone, for scripts (e.g. an engine serving the LM)
        [chosen] = [w for w in ALL if w.name == args.path]
        print(chosen.resolve(overrides.get(chosen.name)))
        return 0
    table = Table(title="model weights (nothing is downloaded at run time)")
    for column in ("part", "model", "package", "licence", "size", "path or install line"):
        # names stay whole (the paths fold): a narrow terminal still shows what to install
        table.add_column(column, overflow="fold", no_wrap=column in ("part", "package"))
    missing = 0
    for w in ALL:
        try:
            path = w.resolve(overrides.get(w.name))
            found = (f"{size_of(path) / 1e6:.0f} MB", str(path))
        except WeightsMissing as error:
            missing += 1
            found = ("missing", str(error))
        table.add_row(w.name, w.description, w.package, w.licence, *found)
    Console().print(table)
    return 1 if missing else 0


def _models_arguments(parser: argparse.ArgumentParser) -> None:
    from models.weights import ALL

    parser.add_argument(
        "--path",
        choices=[w.name for w in ALL],
        help="print only this part's weights path (for scripts)",
    )


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from app import bench

    return bench.run(args, settings)


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from app import bench

    bench.add_arguments(parser)


@contextlib.contextmanager
def _progress_bar(first: str) -> Iterator[Callable[[str, int, int], None]]:
    """One rich progress bar that a long job updates with (what, done, total)."""
    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task(first, total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield progress


def _train_state_head(args: argparse.Namespace, settings: Settings) -> int:
    from models.lm import LlamaDuplexLM
    from models.training.state_head import train_state_head
    from models.weights import LM

    lm = LlamaDuplexLM(
        LM.resolve(settings.models.lm),
        system_prompt=settings.models.system_prompt,
        device=settings.device,
    )
    with _progress_bar("hidden states") as progress:
        report = train_state_head(
            lm, conversations=args.conversations, seed=args.seed, progress=progress
        )
    for style, m in report["metrics"].items():
        print(
            f"{style}: end-of-turn AUC {m['end_of_turn_auc']:.3f}, overlap AUC "
            f"{m['overlap_yield_auc']:.3f}, accuracy {m['accuracy']:.3f}"
        )
    print(f"shipped the {report['chosen_text_style']} head in {report['seconds'] / 60:.1f} min")
    return 0


def _train_adapter(args: argparse.Namespace, settings: Settings) -> int:
    from models.training.adapter import train_adapter

    with _progress_bar("preparing") as progress:
        report = train_adapter(
            settings,
            utterances=args.utterances,
            steps=args.steps,
            batch=args.batch,
            seed=args.seed,
            out=args.out,
            stages=(1, 2) if args.stage == "all" else (int(args.stage),),
            conversations=args.conversations,
            init=args.init,
            progress=progress,
        )
    print(
        f"adapter: loss {report['first_loss']:.2f} -> {report['last_loss']:.2f}, held-out "
        f"{report['held_out_loss']:.2f}, transcript WER {report['wer']:.2f}; "
        f"{report['minutes']:.0f} min of training"
    )
    if "state_head" in report:
        speech, text = report["state_head"]["speech"], report["state_head"]["text"]
        print(
            f"speech state head: end-of-turn AUC {speech['end_of_turn_auc']:.3f} (text path "
            f"{text['end_of_turn_auc']:.3f}), pause AUC {speech['pause_auc']:.3f}, overlap AUC "
            f"{speech['overlap_yield_auc']:.3f}"
        )
    return 0


def _train_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    from models.adapter import ADAPTER_PATH

    parser.add_argument("--utterances", type=int, default=6000, help="sentences to speak")
    parser.add_argument("--steps", type=int, default=1000, help="stage 1 optimizer steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ADAPTER_PATH), help="where the adapter is written")
    parser.add_argument(
        "--stage",
        choices=("1", "2", "all"),
        default="all",
        help="1: the adapter, 2: the speech state head (on a trained adapter)",
    )
    parser.add_argument(
        "--conversations", type=int, default=120, help="dialogues for the speech state head"
    )
    parser.add_argument(
        "--init",
        metavar="NPZ",
        help="start from this adapter (e.g. the shipped one) to train it further",
    )


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.stack import SpeechStack
    from server.app import Limits, StackSessions, run

    limits = Limits(
        max_sessions=args.max_sessions,
        max_message_bytes=args.max_message_bytes,
        idle_timeout_s=args.idle_timeout,
        max_session_s=args.max_session,
        drain_s=args.drain_timeout,
    )
    sessions = StackSessions(SpeechStack(settings))
    return run(sessions, args.host, args.port, args.token or os.environ.get("DUPLEX_TOKEN"), limits)


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--token", help="required from clients (Bearer); needed for a non-loopback bind"
    )
    parser.add_argument("--max-sessions", type=int, default=4)
    parser.add_argument("--max-message-bytes", type=int, default=1 << 20)
    parser.add_argument("--idle-timeout", type=float, default=120.0, help="seconds")
    parser.add_argument("--max-session", type=float, default=3600.0, help="seconds")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="after SIGTERM or Ctrl-C, seconds live sessions may go on before they are "
        "closed (a second signal closes them at once)",
    )


def _chat(args: argparse.Namespace, settings: Settings) -> int:
    from client import chat

    def embedded() -> Steps:
        from app.stack import SpeechStack
        from duplex.clock import RealClock

        stack = SpeechStack(settings)
        stack.load()
        return stack.new_session(RealClock())

    return chat.run(args, embedded)


def _chat_arguments(parser: argparse.ArgumentParser) -> None:
    from client import chat

    chat.add_arguments(parser)


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conversations", type=int, default=400, help="dialogues to learn from")
    parser.add_argument("--seed", type=int, default=0)


@dataclass(frozen=True)
class Subcommand:
    help: str
    run: Command
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


COMMANDS: dict[str, Subcommand] = {
    "run": Subcommand(
        "hold a spoken exchange with the embedded models, from a recording", _run, _run_arguments
    ),
    "serve": Subcommand(
        "serve the runtime over websockets: OpenAI Realtime, a device stream, a web client",
        _serve,
        _serve_arguments,
    ),
    "chat": Subcommand(
        "talk to it through your microphone and speaker, interrupting at will",
        _chat,
        _chat_arguments,
    ),
    "bench": Subcommand(
        "measure how well it holds a conversation: scenarios, policies side by side",
        _bench,
        _bench_arguments,
    ),
    "models": Subcommand(
        "list the model weights found and how to install missing ones", _models, _models_arguments
    ),
    "train-state-head": Subcommand(
        "train the listen/speak/dismiss head on dialogue data", _train_state_head, _train_arguments
    ),
    "train-adapter": Subcommand(
        "train the speech adapter that lets the frozen LM hear audio directly",
        _train_adapter,
        _train_adapter_arguments,
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
    parser.add_argument(
        "--understanding",
        dest="heard_as",  # `bench --understanding` takes a list of its own
        choices=("text", "speech", "both"),
        help="how the LM hears the user: the recognizer's words, speech through the "
        "adapter, or both (speech decides turns, words are answered)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=command.help, description=command.help)
        if command.arguments is not None:
            command.arguments(sub_parser)
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
        if args.heard_as:
            overrides["models.understanding"] = args.heard_as
        settings = load_settings(args.config, overrides)
        return COMMANDS[args.command].run(args, settings)
    except (ValueError, RuntimeError) as error:  # problems a user can fix: one line
        if args.verbose:
            raise
        print(f"duplex {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
