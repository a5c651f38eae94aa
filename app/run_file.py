"""`duplex run`: a whole conversation from a recording, with the embedded models.

The assistant's audio is written time-aligned with the input (both sides
mixed, so overlaps are audible), with both sides' transcripts and a per-turn
latency table. Without `--input` it talks with an example user made with the
shipped voice.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from duplex.audio import FRAME_MS, SAMPLE_RATE, Frame, Int16Array, frames_of, read_wav, write_wav
from duplex.clock import Clock
from duplex.config import Settings
from duplex.drive import DriveResult, drive, mix
from duplex.events import (
    BackchannelIgnored,
    Error,
    Event,
    Interrupted,
    ResponseDone,
    TranscriptFinal,
    TurnMetrics,
)
from duplex.metrics import STAGES
from duplex.ports import Synthesizer
from duplex.session import Session
from duplex.tdm import State

# The example user: two questions, the second one asked while the first answer
# may still be playing (then the assistant yields to it).
EXAMPLE_TURNS = (
    (500, "Hello there! What is the capital of France?"),
    (8000, "Thanks. And how far away is the moon?"),
)
EXAMPLE_TAIL_MS = 9000


# after the recording, silence is fed while an answer plays, at most this long
DRAIN_MS = 30_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, help="the user's side, a WAV (default: an example)")
    parser.add_argument(
        "--output", type=Path, default=Path("out/reply.wav"), help="both sides mixed"
    )
    parser.add_argument(
        "--assistant-track",
        type=Path,
        default=Path("out/assistant.wav"),
        help="the assistant's side alone, on the same timeline",
    )
    parser.add_argument("--transcript", type=Path, default=Path("out/transcript.json"))
    parser.add_argument(
        "--fast",
        action="store_true",
        help="run on a virtual clock, charged the compute really spent, instead of in real time",
    )


def example_user(voice: Synthesizer, path: Path) -> Int16Array:
    """Synthesize the example user's side with the shipped voice (cached on disk)."""
    if path.exists():
        return read_wav(path)
    end = EXAMPLE_TURNS[-1][0] + EXAMPLE_TAIL_MS
    track = np.zeros(end * SAMPLE_RATE // 1000, dtype=np.int16)
    for start_ms, text in EXAMPLE_TURNS:
        pcm = voice.synthesize(text)
        start = start_ms * SAMPLE_RATE // 1000
        track[start : start + pcm.size] = pcm[: track.size - start]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, track)
    return track


def run(args: argparse.Namespace, settings: Settings) -> int:
    from app.stack import SpeechStack

    console = Console(stderr=True)
    stack = SpeechStack(settings)
    if args.input:
        user = read_wav(args.input)
        if user.size == 0:
            raise ValueError(f"{args.input} holds no audio")
    else:
        with console.status("synthesizing the example user with the shipped voice"):
            user = example_user(stack.voice, args.output.parent / "example-user.wav")

    sessions: list[Session] = []

    def new_session(clock: Clock) -> Session:
        with console.status("loading the speech models"):
            sessions.append(stack.new_session(clock))
        return sessions[-1]

    def frames() -> Iterator[Frame]:
        """The recording, then silence while the last answer still plays (at most
        DRAIN_MS): it is heard to its end."""
        last = -1
        for frame in frames_of(user):
            last = frame.index
            yield frame
        for index in range(last + 1, last + 1 + DRAIN_MS // FRAME_MS):
            if not sessions or sessions[-1].state is State.LISTENING:
                return
            yield Frame.silence(index)

    mode = "fast (virtual clock)" if args.fast else "real time"
    console.print(f"conversation of {user.size / SAMPLE_RATE:.1f} s, {mode}")
    result = drive(
        new_session,
        frames(),
        fast=args.fast,
        on_event=lambda event: _show(console, event),
    )
    for path in (args.output, args.assistant_track, args.transcript):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(args.output, mix(user, result.output))
    write_wav(args.assistant_track, result.output)
    args.transcript.write_text(json.dumps(transcript(result), indent=2))
    Console().print(latency_table(result))
    console.print(
        f"real-time factor {result.real_time_factor:.2f}; "
        f"wrote {args.output}, {args.assistant_track} and {args.transcript}"
    )
    return 0


def _show(console: Console, event: Event) -> None:
    if isinstance(event, Error):
        console.print(f"[{event.audio_ms / 1000:6.2f}s] error ({event.code}): {event.message}")
    elif isinstance(event, TranscriptFinal):
        heard = event.text or "(heard as speech, no transcript)"
        console.print(f"[{event.audio_ms / 1000:6.2f}s] user: {heard}")
    elif isinstance(event, ResponseDone):
        console.print(f"[{event.audio_ms / 1000:6.2f}s] assistant ({event.status}): {event.text}")
    elif isinstance(event, Interrupted):
        console.print(f"[{event.audio_ms / 1000:6.2f}s] yielded after {event.played_ms} ms")
    elif isinstance(event, BackchannelIgnored):
        console.print(f"[{event.audio_ms / 1000:6.2f}s] kept talking over {event.text!r}")


def transcript(result: DriveResult) -> dict[str, Any]:
    """Both sides' words and every turn's latency marks, as JSON."""
    turns: list[dict[str, Any]] = []
    for event in result.events:
        if isinstance(event, TranscriptFinal):
            turns.append({"role": "user", "text": event.text, "at_ms": event.audio_ms})
        elif isinstance(event, ResponseDone):
            start, end = result.spans.get(event.response_id, (None, None))
            turns.append(
                {
                    "role": "assistant",
                    "text": event.text,
                    "at_ms": event.audio_ms,
                    "status": event.status,
                    "played_ms": event.played_ms,
                    "audio_start_ms": start,
                    "audio_end_ms": end,
                }
            )
    metrics = [e.to_dict() for e in result.events if isinstance(e, TurnMetrics)]
    errors = [e.to_dict() for e in result.events if isinstance(e, Error)]
    return {
        "turns": turns,
        "metrics": metrics,
        "errors": errors,
        "real_time_factor": result.real_time_factor,
        "audio_ms": result.audio_ms,
    }


def latency_table(result: DriveResult) -> Table:
    table = Table(title="per-turn latency (ms after the user's last voiced frame)")
    for column in ("turn", "outcome", "VAD end", "ASR final", "decision", "first token",
                   "first audio", "end of turn", "barge-in stop"):  # fmt: skip
        table.add_column(column, justify="right")
    for event in result.events:
        if not isinstance(event, TurnMetrics):
            continue
        r = event.record
        stages = r.stages()
        table.add_row(
            str(r.response_id),
            r.outcome,
            *(_ms(stages.get(name.removesuffix("_ms"))) for name in STAGES),
            _ms(r.end_of_turn_ms),
            _ms(r.barge_in_stop_ms),
        )
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
