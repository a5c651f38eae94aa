"""`duplex bench`: conversation scenarios against policies side by side, or each model alone."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from duplex.audio import Int16Array
from duplex.clock import Clock
from duplex.config import Settings
from duplex.ports import Steps
from duplex.session import UNDERSTANDING
from duplex.tdm import POLICIES

if TYPE_CHECKING:
    from app.stack import SpeechStack
    from benchmarks.scenarios import Scenario

REMOTE = "remote"  # a label's variant (POLICY+remote): answers from the external engine
UNDERSTANDINGS = UNDERSTANDING  # POLICY+speech, POLICY+both: how the LM hears
SHARED_SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
# real speech a Debian package installs (codec2-examples, LGPL-2.1): a radio conversation
# with natural pauses, and read Harvard sentences
RECORDINGS = (
    SHARED_SPEECH,
    Path("/usr/share/codec2/wav/ve9qrp.wav"),
    Path("/usr/share/codec2/raw/speech_orig_16k.wav"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fast",
        action="store_true",
        help="virtual clock charged the compute really spent, instead of real-time pacing",
    )
    parser.add_argument(
        "--ideal",
        action="store_true",
        help="virtual clock charged no compute: what the turn-taking policy decides, as on an "
        "infinitely fast machine (compare policies and sets on a slow one)",
    )
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    parser.add_argument(
        "--stagger-ms",
        type=int,
        default=2000,
        help="with several sessions, each conversation starts after a random 0 to this many "
        "ms, as users arrive (0: all at once, turn ends in lockstep)",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="bench a running `duplex serve` instead of the in-process engine, in real time: "
        "ws://HOST:PORT/v1/stream or ws://HOST:PORT/v1/realtime",
    )
    parser.add_argument(
        "--token", default=os.environ.get("DUPLEX_TOKEN"), help="the server's token, if it has one"
    )
    parser.add_argument(
        "--responder",
        choices=("local", "remote"),
        default="local",
        help="remote: each policy also runs with answers from the engine at "
        "responder.base_url, side by side with the in-process LM (real time)",
    )
    parser.add_argument(
        "--understanding",
        default="",
        help="comma-separated text,speech,both: each policy runs with each (labels "
        "POLICY+speech, POLICY+both; text is the plain label), in one run "
        "(default: models.understanding alone)",
    )
    parser.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help=f"comma-separated, the first is the reference (default: {','.join(POLICIES)})",
    )
    parser.add_argument(
        "--per-category", type=int, default=10, help="generated scenarios per category"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--snr", default="none,15", help="background noise SNRs in dB, cycled (none: clean)"
    )
    parser.add_argument(
        "--recordings",
        default=",".join(str(p) for p in RECORDINGS),
        help="real speech: comma-separated folders or files of recordings, cut into "
        "real-speech scenarios (turn ends, pauses, backchannels, each side of a conversation "
        "with an .stm beside it), reported apart from the synthetic set; missing ones are "
        "skipped, none: no real speech (default: ../shared/speech and the recordings of the "
        "codec2-examples package)",
    )
    parser.add_argument("--scenarios", type=Path, help="your own scenarios (JSON + WAV) instead")
    parser.add_argument("--out", type=Path, default=Path("out/bench"), help="where reports go")
    parser.add_argument(
        "--components", action="store_true", help="measure each model alone: ASR, LM, TTS, loads"
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs per component measurement")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="MINUTES",
        help="hold one conversation this long (charged virtual clock): memory, LM cache and "
        "end of turn over time; then open and close --churn sessions against a server",
    )
    parser.add_argument(
        "--soak-silence", type=float, default=15.0, help="seconds of silence after each question"
    )
    parser.add_argument("--churn", type=int, default=200, help="sessions the soak opens and closes")
    parser.add_argument(
        "--answers",
        action="store_true",
        help="answer quality: 104 spoken questions (facts, arithmetic, instructions, "
        "follow-ups) with accepted answers, scored per half (tuning, held-out); with "
        "--responder remote the external engine answers them too, side by side (real time)",
    )
    parser.add_argument(
        "--questions", type=int, default=0, help="with --answers: only the first N (0: all)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.components:
        return _components(args, settings)
    if args.soak is not None:
        return _soak(args, settings)
    if args.answers:
        return _answers(args, settings)
    from app.stack import SpeechStack
    from benchmarks import report, runner, scenarios
    from models.tts import PiperSynthesizer

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ValueError(f"unknown policy {unknown}; choose from {', '.join(POLICIES)}")
    if args.sessions < 1:
        raise ValueError("--sessions must be at least 1")
    if args.stagger_ms < 0:
        raise ValueError("--stagger-ms must be 0 or more")
    if args.ideal and (args.fast or args.server or args.responder == "remote"):
        raise ValueError("--ideal is its own clock: drop --fast, --server and --responder remote")
    if args.server and args.fast:
        raise ValueError("--server runs in real time (the server keeps its own clock): drop --fast")
    engine = args.responder == "remote"
    if engine and (args.fast or args.server):
        raise ValueError(
            "--responder remote runs in process and in real time (the engine keeps its own "
            "clock): drop --fast and --server"
        )
    if engine:
        _check_engine(settings)
    understandings = [u.strip() for u in args.understanding.split(",") if u.strip()]
    if any(u not in UNDERSTANDINGS for u in understandings):
        raise ValueError(f"--understanding takes {', '.join(UNDERSTANDINGS)}, comma-separated")
    if understandings and args.server:
        raise ValueError("--understanding runs in process: the server has its own setting")
    understandings = understandings or [settings.models.understanding]
    # each run is labelled by its policy, plus how the LM hears (not for text) and
    # where the answer comes from: duplex, duplex+speech, duplex+remote, ...
    labels = [
        "+".join([p] + ([u] if u != "text" else []) + ([REMOTE] if remote else []))
        for remote in ([False, True] if engine else [False])
        for u in understandings
        for p in policies
    ]
    snrs = [None if s.strip().lower() == "none" else float(s) for s in args.snr.split(",")]
    console = Console(stderr=True)
    stack = SpeechStack(settings)
    with console.status("loading the models and rendering scenarios"):
        if not args.server:
            stack.load()
        if args.scenarios:
            chosen = scenarios.load_dir(args.scenarios)
        else:
            # the user's voice without Piper's random variation: the same seed, the same audio
            user_voice = PiperSynthesizer(stack.voice_path, noise_scale=0.0, noise_w=0.0)
            chosen = scenarios.generate(
                user_voice, per_category=args.per_category, seed=args.seed, snrs=snrs
            )
            recordings = [Path(p.strip()) for p in args.recordings.split(",") if p.strip()]
            chosen += real_scenarios(stack, [p for p in recordings if p.exists()], args.seed)
    per_thread = threading.local()  # one LM (one KV cache) per concurrent session, reused

    def in_process(clock: Clock, label: str) -> Steps:
        if not hasattr(per_thread, "lm"):
            per_thread.lm = stack.new_lm()
        name, *variants = label.split("+")
        heard = [v for v in variants if v in UNDERSTANDINGS]
        return stack.new_session(
            clock,
            lm=per_thread.lm,
            policy=POLICIES[name](settings.policy),
            remote=REMOTE in variants,
            understanding=heard[0] if heard else "text",
        )

    make_session: runner.SessionFactory = in_process
    watch = None
    if args.server:
        from benchmarks import remote

        make_session = remote.session_factory(args.server, args.token, policies)
        watch = remote.ServerWatch(args.server, args.token)

    total = len(chosen) * len(labels)
    with counting(console) as bar:
        task = bar.add_task("conversations", total=total)
        runs = runner.run_all(
            make_session,
            chosen,
            labels,
            fast=args.fast or args.ideal,
            ideal=args.ideal,
            sessions=args.sessions,
            stagger_ms=args.stagger_ms,
            progress=lambda r: bar.update(
                task, advance=1, description=f"{r.policy:<22} {r.scenario.name:<22}"
            ),
        )
    data = runner.results(
        runs,
        labels,
        command=" ".join(["duplex", *sys.argv[1:]]),
        fast=args.fast or args.ideal,
        sessions=args.sessions,
        cpus=len(os.sched_getaffinity(0)),
        stagger_ms=args.stagger_ms,
        settings=settings.policy,
        ideal=args.ideal,
    )
    if args.server and watch is not None:
        data["server"] = {"url": args.server, **watch.stop(args.sessions)}
    paths = report.write_all(data, args.out)
    print(report.markdown(data))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _check_engine(settings: Settings) -> None:
    """`--responder remote` answers from the engine at `responder.base_url`: it needs one."""
    if not settings.responder.base_url:
        raise ValueError(
            "--responder remote needs the engine's URL: --set responder.base_url="
            "http://127.0.0.1:8000/v1 (and responder.model)"
        )


def counting(console: Console) -> Progress:
    """A progress bar that counts done of total, with the time taken."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def real_scenarios(stack: SpeechStack, places: list[Path], seed: int) -> list[Scenario]:
    """The recordings in `places` cut into scenarios, at the recognizer's word times."""
    from benchmarks import real_speech
    from models.asr import word_times

    def words(pcm: Int16Array) -> list[real_speech.Word]:
        return [real_speech.Word(*w) for w in word_times(stack.whisper, pcm)]

    return real_speech.load(places, words, seed=seed) if places else []


def _answers(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from app.stack import SpeechStack
    from benchmarks import answers
    from benchmarks.answer_set import QUESTION_SET

    if args.questions < 0:
        raise ValueError("--questions must be 0 (all) or more")
    engine = args.responder == "remote"
    if engine:
        _check_engine(settings)
    questions = QUESTION_SET[: args.questions or None]
    console = Console(stderr=True)
    stack = SpeechStack(settings)
    with console.status("loading the models"):
        stack.load()
        render = answers.piper_render(stack.voice_path)
    lm = stack.new_lm()
    data: dict[str, dict[str, object]] = {}
    for path in ["local", "remote"] if engine else ["local"]:
        remote = path == "remote"

        def session(clock: Clock, remote: bool = remote) -> Steps:
            return stack.new_session(clock, lm=lm, remote=remote)

        with counting(console) as bar:
            task = bar.add_task(f"questions ({path})", total=len(questions))
            results = answers.run_set(
                session,
                render,
                ideal=not remote,  # the engine keeps its own clock: real time
                questions=questions,
                progress=lambda _: bar.update(task, advance=1),  # noqa: B023 (called in the loop)
            )
        name = f"engine ({settings.responder.model or 'remote'})" if remote else "in-process LM"
        data[name] = {"summary": answers.summary(results), "questions": answers.to_dict(results)}
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["duplex", *sys.argv[1:]]), "paths": data}
    (args.out / "answers.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = answers.markdown(data)
    (args.out / "answers.md").write_text(f"# Answer quality: `{report['command']}`\n\n{table}")
    print(table)
    console.print(f"wrote {args.out / 'answers.json'}, answers.md")
    return 0


def _soak(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from app.stack import SpeechStack
    from benchmarks import soak
    from benchmarks.scenarios import QUESTIONS
    from models.tts import PiperSynthesizer

    if args.soak <= 0 or args.soak_silence < 0 or args.churn < 0:
        raise ValueError("--soak must be > 0 minutes, --soak-silence and --churn >= 0")
    console = Console(stderr=True)
    stack = SpeechStack(settings)
    with console.status("loading the models"):
        stack.load()
        user_voice = PiperSynthesizer(stack.voice_path, noise_scale=0.0, noise_w=0.0)
        questions = [user_voice.synthesize(q) for q in QUESTIONS]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("conversation minutes", total=args.soak)
        data = soak.soak(
            stack,
            questions,
            args.soak,
            silence_s=args.soak_silence,
            progress=lambda minute: bar.update(task, completed=minute),
        )
    if args.churn:
        with console.status(f"opening and closing {args.churn} sessions"):
            data["churn"] = soak.churn(stack, questions[0], args.churn)
    data["command"] = " ".join(["duplex", *sys.argv[1:]])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (args.out / "soak.md").write_text(soak.markdown(data), encoding="utf-8")
    soak.plot(data, args.out / "soak.png")
    print(soak.markdown(data))
    console.print(f"wrote {args.out / 'soak.json'}, soak.md, soak.png")
    return 0


def _components(args: argparse.Namespace, settings: Settings) -> int:
    from benchmarks.components import run_components, summary_lines, write_report

    console = Console(stderr=True)
    with console.status("measuring") as status:
        report = run_components(
            settings, args.repeats, lambda what: status.update(f"measuring {what}")
        )
    path = args.out / "components.json"
    write_report(report, path)
    for line in summary_lines(report):
        print(line)
    console.print(f"wrote {path}")
    return 0
