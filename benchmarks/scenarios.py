"""Conversation scenarios with ground truth: what the user says, and when.

A scenario is a script of cues. A cue starts at an absolute time, a pause
after the previous cue, or *into the answer*: a set time after the first
assistant audio that follows the previous cue. The last kind is closed loop,
so a barge-in or an "uh-huh" lands on the assistant's actual output, wherever
the runtime under test put it. `UserSimulator` renders the user's side frame
by frame while it watches the session's events, and records where each cue's
voice really began and ended: the ground truth the metrics use.

User-supplied scenarios (`duplex bench --scenarios DIR`): each `NAME.json`
beside a `NAME.wav` or a list of WAVs, see `load_dir`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soxr

from duplex.audio import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Frame,
    Int16Array,
    float_to_pcm16,
    pcm16_to_float,
    read_wav,
    voiced_span,
)
from duplex.events import Event, ResponseAudio

CATEGORIES = ("turn_end", "pause", "interruption", "backchannel", "dialogue")

QUESTIONS = (
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "How do I make a cup of tea?",
    "What is the tallest mountain in the world?",
    "Can you tell me a fun fact about cats?",
    "How many legs does a spider have?",
    "What time does the sun set in winter?",
    "Is it going to rain tomorrow?",
    "Who wrote the play Romeo and Juliet?",
)
PAUSED = (
    ("I was thinking about", "going to the beach this weekend."),
    ("Can you tell me", "how long it takes to boil an egg?"),
    ("My favourite food is", "probably pasta with tomato sauce."),
    ("I would like to know", "what the weather is like in Spain."),
    ("So yesterday I went to", "the market and bought some apples."),
    ("What do you think about", "learning to play the piano?"),
    ("I need a recipe for", "a quick vegetable soup."),
    ("Could you remind me", "to call my sister at six?"),
    ("The thing is, I", "never learned how to swim."),
    ("How long does it take to", "fly from London to New York?"),
)
INTERRUPTIONS = (
    "Wait, stop. What about Spain?",
    "Sorry, can you tell me the time instead?",
    "No, no. I meant something else.",
    "Hold on, how do you spell that?",
)
BACKCHANNELS = ("uh-huh", "yeah", "right", "okay", "mm-hm")


@dataclass(frozen=True)
class Cue:
    """One thing the user says; exactly one of the three timings is set."""

    kind: str  # question | continuation | interruption | backchannel
    text: str
    pcm: Int16Array = field(repr=False)
    at_ms: int | None = None  # absolute position of the voice onset
    after_previous_ms: int | None = None  # silence after the previous cue's voice
    into_answer_ms: int | None = None  # after the first answer audio following the previous cue

    @property
    def voiced(self) -> tuple[int, int]:
        """Where the voice is inside `pcm` (ms), by frame energy."""
        return voiced_span(self.pcm)


@dataclass(frozen=True)
class Scenario:
    name: str
    category: str
    cues: tuple[Cue, ...]
    snr_db: float | None = None
    seed: int = 0
    source: str = "synthetic"  # synthetic | real | user: reported apart, never pooled
    tail_ms: int = 2500  # keep listening this long after the last cue or the answer to it
    answer_wait_ms: int = 8000  # an "into the answer" cue waits at most this long for one
    max_ms: int = 45_000


@dataclass(frozen=True)
class Placed:
    """Ground truth: where a cue's voice really was on the input timeline."""

    kind: str
    text: str
    start_ms: int
    end_ms: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Voice(Protocol):
    """A synthesizer whose speaking rate can be set (Piper's length scale)."""

    length_scale: float

    def synthesize(self, text: str, *, length_scale: float | None = None) -> Int16Array: ...


def speak(voice: Voice, text: str, rate: float = 1.0, pitch: float = 1.0) -> Int16Array:
    """The voice at a speaking rate and pitch (ratios to its natural ones).

    Pitch is shifted by resampling, which also shortens the audio by `pitch`,
    so the voice is first asked to speak slower by the same factor.
    """
    pcm = voice.synthesize(text, length_scale=voice.length_scale * pitch / rate)
    if pitch == 1.0:
        return pcm
    shifted = soxr.resample(pcm16_to_float(pcm), SAMPLE_RATE * pitch, SAMPLE_RATE)
    return float_to_pcm16(shifted)


class UserSimulator:
    """Renders the user's side of a scenario, frame by frame, in a closed loop.

    Iterate it for input frames; feed it every event the session returns
    (`observe`). Iteration ends `tail_ms` after the last cue, or after the
    first answer audio that follows it.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.placed: list[Placed] = []
        self._audio: list[tuple[int, Int16Array]] = []  # (start sample, pcm)
        self._next = 0
        self._answer_start: int | None = None  # first answer audio after the previous cue
        self._rng = np.random.default_rng(scenario.seed)
        self._noise_rms = _noise_rms(scenario)

    def observe(self, event: Event) -> None:
        if isinstance(event, ResponseAudio):
            previous_end = self.placed[-1].end_ms if self.placed else 0
            if self._answer_start is None and event.audio_ms >= previous_end:
                self._answer_start = event.audio_ms

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while not self._finished(index * FRAME_MS):
            self._schedule(index * FRAME_MS)
            yield self._render(index)
            index += 1

    def _finished(self, now: int) -> bool:
        """Every cue said, and `tail_ms` since the last one or the answer that followed it.

        The rest of an answer is not waited for: once it has started (or was
        cut off), every metric of the scenario is decided.
        """
        if now >= self.scenario.max_ms:
            return True
        if self._next < len(self.scenario.cues):
            return False
        last_end = self.placed[-1].end_ms if self.placed else 0
        if self._answer_start is None and now < last_end + self.scenario.answer_wait_ms:
            return False
        return now >= max(last_end, self._answer_start or 0) + self.scenario.tail_ms

    def _schedule(self, now: int) -> None:
        """Place the next cue once its time is known, at its onset or now if that passed."""
        if self._next >= len(self.scenario.cues):
            return
        cue = self.scenario.cues[self._next]
        previous_end = self.placed[-1].end_ms if self.placed else 0
        if cue.at_ms is not None:
            onset = cue.at_ms
        elif cue.after_previous_ms is not None:
            onset = previous_end + cue.after_previous_ms
        elif self._answer_start is not None:
            onset = self._answer_start + (cue.into_answer_ms or 0)
        elif now >= previous_end + self.scenario.answer_wait_ms:
            onset = now  # no answer came: say it anyway
        else:
            return
        lead, tail = cue.voiced
        start = max(onset - lead, now)
        start -= start % FRAME_MS
        self._audio.append((start * SAMPLE_RATE // 1000, cue.pcm))
        self.placed.append(Placed(cue.kind, cue.text, start + lead, start + tail))
        self._next += 1
        self._answer_start = None

    def _render(self, index: int) -> Frame:
        a = index * FRAME_SAMPLES
        frame = np.zeros(FRAME_SAMPLES, dtype=np.float64)
        for start, pcm in self._audio:
            lo, hi = max(a, start), min(a + FRAME_SAMPLES, start + pcm.size)
            if lo < hi:
                frame[lo - a : hi - a] += pcm[lo - start : hi - start]
        if self._noise_rms:
            frame += self._rng.normal(0.0, self._noise_rms, FRAME_SAMPLES)
        return Frame(index, np.clip(np.round(frame), -32768, 32767).astype(np.int16))


def _noise_rms(scenario: Scenario) -> float:
    """White noise at the scenario's SNR, relative to the level of its voiced speech."""
    if scenario.snr_db is None:
        return 0.0
    levels = []
    for cue in scenario.cues:
        lo, hi = cue.voiced
        voiced = cue.pcm[lo * SAMPLE_RATE // 1000 : hi * SAMPLE_RATE // 1000].astype(np.float64)
        if voiced.size:
            levels.append(float(np.sqrt(np.mean(voiced**2))))
    return float(np.mean(levels)) / 10 ** (scenario.snr_db / 20) if levels else 0.0


def generate(
    voice: Voice,
    *,
    per_category: int = 4,
    seed: int = 0,
    snrs: Sequence[float | None] = (None, 15.0),
) -> list[Scenario]:
    """The synthetic set: seeded, so the same seed gives the same audio timings."""
    rng = random.Random(seed)
    scenarios: list[Scenario] = []

    def say(kind: str, text: str, **timing: int) -> Cue:
        rate, pitch = rng.uniform(0.85, 1.15), rng.uniform(0.92, 1.08)
        return Cue(kind, text, speak(voice, text, rate, pitch), **timing)

    questions = rng.sample(QUESTIONS, len(QUESTIONS))
    for i in range(per_category):
        snr = snrs[i % len(snrs)]

        def add(category: str, *cues: Cue, snr: float | None = snr, i: int = i) -> None:
            name = f"{category}-{i:02d}"
            scenarios.append(Scenario(name, category, cues, snr, seed * 1000 + len(scenarios)))

        question = questions[i % len(questions)]
        add("turn_end", say("question", question, at_ms=500))
        first, rest = PAUSED[(seed + i) % len(PAUSED)]
        add(
            "pause",
            say("question", first, at_ms=500),
            say("continuation", rest, after_previous_ms=rng.randrange(300, 1501, 20)),
        )
        interruption = INTERRUPTIONS[i % len(INTERRUPTIONS)]
        add(
            "interruption",
            say("question", question, at_ms=500),
            say("interruption", interruption, into_answer_ms=rng.randrange(400, 1601, 20)),
        )
        backchannel = BACKCHANNELS[i % len(BACKCHANNELS)]
        add(
            "backchannel",
            say("question", question, at_ms=500),
            say("backchannel", backchannel, into_answer_ms=rng.randrange(400, 1201, 20)),
        )
    return scenarios


def load_dir(directory: Path) -> list[Scenario]:
    """User scenarios: `NAME.json` files describing cues, audio in WAV files beside them.

    The JSON::

        {"category": "interruption",          # turn_end | pause | interruption | backchannel
         "snr_db": null,                       # optional background noise
         "cues": [
           {"kind": "question", "wav": "q.wav", "text": "what time is it", "at_ms": 500},
           {"kind": "continuation", "wav": "c.wav", "after_previous_ms": 800},
           {"kind": "interruption", "wav": "i.wav", "into_answer_ms": 1200}
         ]}

    Times are voice onsets: `at_ms` on the input timeline, `after_previous_ms`
    after the previous cue's voice ends, `into_answer_ms` after the first
    assistant audio that follows the previous cue.
    """
    scenarios = []
    for spec_path in sorted(directory.glob("*.json")):
        try:
            spec = json.loads(spec_path.read_text())
            cues = tuple(
                Cue(
                    c["kind"],
                    c.get("text", ""),
                    read_wav(directory / c["wav"]),
                    at_ms=c.get("at_ms"),
                    after_previous_ms=c.get("after_previous_ms"),
                    into_answer_ms=c.get("into_answer_ms"),
                )
                for c in spec["cues"]
            )
            category = spec["category"]
        except (KeyError, TypeError, ValueError, OSError) as error:
            raise ValueError(f"{spec_path}: not a scenario ({error})") from None
        if category not in CATEGORIES:
            raise ValueError(f"{spec_path}: category must be one of {', '.join(CATEGORIES)}")
        for cue in cues:
            timings = [cue.at_ms, cue.after_previous_ms, cue.into_answer_ms]
            if sum(t is not None for t in timings) != 1:
                raise ValueError(
                    f"{spec_path}: each cue needs exactly one of at_ms, after_previous_ms, "
                    "into_answer_ms"
                )
        scenarios.append(
            Scenario(spec_path.stem, category, cues, snr_db=spec.get("snr_db"), source="user")
        )
    if not scenarios:
        raise ValueError(f"no scenario files (*.json) in {directory}")
    return scenarios
