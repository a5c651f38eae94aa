"""A long spoken conversation for `duplex run`, and its check: 110 questions asking
for stories, each followed by 12 s of silence (about 25 minutes).

The answers fill the LM's context several times over, so the run shows whether
old turns leave the cache as they should and whether latency holds to the end:

    python -m benchmarks.long_conversation write out/long.wav
    duplex run --fast --input out/long.wav --transcript out/long.json
    python -m benchmarks.long_conversation check out/long.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio import SAMPLE_RATE, write_wav

QUESTIONS = 110
SILENCE_S = 12.0
SUBJECTS = (
    "a dragon", "a lighthouse keeper", "a lost robot", "a clever fox", "two sailors", "a baker",
    "an old clock", "a young astronaut", "a talking tree", "a tiny mouse", "a musician",
)  # fmt: skip
PLACES = (
    "in the mountains", "by the sea", "in a big city", "on the moon", "in a forest",
    "under the ground", "on a train", "in the desert", "at a school", "on an island",
)  # fmt: skip


def questions(count: int = QUESTIONS) -> list[str]:
    """`count` different requests for a story."""
    pairs = itertools.islice(itertools.product(PLACES, SUBJECTS), count)
    return [f"Tell me a story about {subject} {place}." for place, subject in pairs]


def write(path: Path, count: int = QUESTIONS, silence_s: float = SILENCE_S) -> float:
    """The questions in the shipped voice, each then `silence_s` of silence; its length (s)."""
    from duplex.config import Settings
    from models.tts import PiperSynthesizer
    from models.weights import VOICE

    voice = PiperSynthesizer(VOICE.resolve(Settings().models.voice))
    silence = np.zeros(int(silence_s * SAMPLE_RATE), np.int16)
    parts = [np.concatenate([voice.synthesize(text), silence]) for text in questions(count)]
    audio = np.concatenate(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, audio)
    return audio.size / SAMPLE_RATE


def check(transcript: dict[str, Any], count: int = QUESTIONS) -> dict[str, Any]:
    """What the issue asks of the run: every question heard and answered, no error,
    and end of turn over the last ten turns within 1.5x of the first ten."""
    turns = transcript["turns"]
    heard = [t for t in turns if t["role"] == "user"]
    answers = [t for t in turns if t["role"] == "assistant"]
    answered = [t for t in answers if t["text"] and t["status"] in ("completed", "interrupted")]
    failed = [t for t in answers if t["status"] == "failed"]
    latency = [m["end_of_turn_ms"] for m in transcript["metrics"]
               if m.get("end_of_turn_ms") is not None]  # fmt: skip
    first = statistics.median(latency[:10]) if latency else None
    last = statistics.median(latency[-10:]) if latency else None
    return {
        "questions": count,
        "heard": len(heard),
        "answered": len(answered),
        "failed": len(failed),
        "errors": len(transcript.get("errors", [])),
        "end_of_turn_p50_first_ten_ms": first,
        "end_of_turn_p50_last_ten_ms": last,
        "last_over_first": last / first if first and last else None,
        "conversation_s": transcript["audio_ms"] / 1000,
        "real_time_factor": transcript["real_time_factor"],
        "ok": bool(
            len(answered) >= count
            and not failed
            and not transcript.get("errors")
            and first
            and last
            and last <= 1.5 * first
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("wav", type=Path)
    sub.add_parser("check").add_argument("transcript", type=Path)
    args = parser.parse_args(argv)
    if args.command == "write":
        print(f"wrote {args.wav}: {write(args.wav):.0f} s, {QUESTIONS} questions")
        return 0
    report = check(json.loads(args.transcript.read_text()))
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
