"""The turn-taking policy on the real models, scenario by scenario.

The shipped voice says each scenario (and real recordings from
../shared/speech stand in for the user where present); the closed-loop
user simulator of the benchmark times cues on the assistant's output. The
session runs on a clock that never moves, so every latency here is on the
audio timeline alone: what the policy does, not how fast this machine is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.stack import SpeechStack
from benchmarks.runner import Run, run_one
from benchmarks.scenarios import Cue, Scenario, speak
from duplex.audio import Frame, read_wav
from duplex.clock import Clock, VirtualClock
from duplex.config import Settings
from duplex.events import Event, Interrupted, ResponseText, TranscriptDelta, TranscriptFinal
from duplex.ports import Steps
from duplex.tdm import POLICIES
from models.llama_cache import SPEECH_MARK
from models.lm import LlamaDuplexLM
from models.tts import PiperSynthesizer

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"


@pytest.fixture(scope="module")
def stack() -> Iterator[SpeechStack]:
    stack = SpeechStack(Settings())
    stack.load()
    yield stack


@pytest.fixture(scope="module")
def lm(stack: SpeechStack) -> LlamaDuplexLM:
    return stack.new_lm()


class Recorded:
    """A session whose events are kept for the test to read."""

    def __init__(self, session: Steps) -> None:
        self.session = session
        self.events: list[Event] = []

    def step(self, frame: Frame) -> list[Event]:
        events = self.session.step(frame)
        self.events += events
        return events


def run(
    stack: SpeechStack, lm: LlamaDuplexLM, scenario: Scenario, understanding: str = "text"
) -> tuple[Run, list[Event]]:
    recorded: list[Recorded] = []

    def make(clock: Clock, policy: str) -> Steps:
        settings = stack.settings.policy
        session = stack.new_session(
            VirtualClock(),
            lm=lm,
            policy=POLICIES[policy](settings),
            understanding=understanding,
        )
        recorded.append(Recorded(session))
        return recorded[-1]

    return run_one(make, "duplex", scenario, fast=True), recorded[0].events


@pytest.fixture(scope="module")
def voice() -> PiperSynthesizer:
    """The shipped voice without its random variation: the same audio every run."""
    return PiperSynthesizer(noise_scale=0.0, noise_w=0.0)


def say(voice: PiperSynthesizer, kind: str, text: str, **timing: int) -> Cue:
    return Cue(kind, text, speak(voice, text), **timing)


@pytest.mark.parametrize("pause_ms", [600, 1000])
def test_a_mid_sentence_pause_is_not_taken_over(
    stack: SpeechStack, lm: LlamaDuplexLM, voice: PiperSynthesizer, pause_ms: int
) -> None:
    first = say(voice, "question", "Can you tell me", at_ms=500)
    rest = say(
        voice, "continuation", "how long it takes to boil an egg?", after_previous_ms=pause_ms
    )
    result, _ = run(stack, lm, Scenario(f"pause-{pause_ms}", "pause", (first, rest)))
    assert result.metrics["takeover"] is False, result.heard
    assert result.metrics["end_of_turn_ms"] is not None  # and the whole question is answered


def test_a_finished_question_is_answered(
    stack: SpeechStack, lm: LlamaDuplexLM, voice: PiperSynthesizer
) -> None:
    question = say(voice, "question", "What is the capital of France?", at_ms=500)
    result, _ = run(stack, lm, Scenario("turn-end", "turn_end", (question,)))
    assert result.metrics["end_of_turn_ms"] is not None
    # the run ends 2.5 s into the answer: completed or still playing, never cut off
    assert result.assistant and result.assistant[0].status in ("completed", "unfinished")


def test_a_barge_in_stops_it_at_once_and_the_history_keeps_what_was_heard(
    stack: SpeechStack, lm: LlamaDuplexLM, voice: PiperSynthesizer
) -> None:
    question = say(voice, "question", "Tell me about the history of Paris.", at_ms=500)
    barge_in = say(voice, "interruption", "Wait, stop. What about Spain?", into_answer_ms=1200)
    result, events = run(stack, lm, Scenario("barge-in", "interruption", (question, barge_in)))
    stop = result.metrics["barge_in_stop_ms"]
    assert stop is not None and stop <= 200, result.metrics
    [interrupted] = [e for e in events if isinstance(e, Interrupted) and e.response_id == 1]
    written = " ".join(e.text for e in events if isinstance(e, ResponseText) and e.response_id == 1)
    # the history keeps the words that played, not the ones written ahead of them
    first_answer = lm.cache.text().split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    assert first_answer.split() == interrupted.played_text.split()
    assert len(interrupted.played_text.split()) < len(written.split())


@pytest.mark.parametrize("backchannel", ["uh-huh", "yeah"])
def test_a_backchannel_does_not_stop_it(
    stack: SpeechStack, lm: LlamaDuplexLM, voice: PiperSynthesizer, backchannel: str
) -> None:
    question = say(voice, "question", "Tell me about the history of Paris.", at_ms=500)
    ack = say(voice, "backchannel", backchannel, into_answer_ms=1200)
    result, _ = run(stack, lm, Scenario(f"bc-{backchannel}", "backchannel", (question, ack)))
    assert result.metrics["false_stop"] is False, result.heard


def test_real_recordings_are_answered(stack: SpeechStack, lm: LlamaDuplexLM) -> None:
    recordings = sorted(SPEECH.glob("*.wav"))
    if not recordings:
        pytest.skip(f"no recordings in {SPEECH}")
    for path in recordings[:3]:
        cue = Cue("question", path.stem, read_wav(path), at_ms=500)
        result, _ = run(stack, lm, Scenario(path.stem, "turn_end", (cue,), source="recording"))
        assert result.metrics["end_of_turn_ms"] is not None, (path.name, result.heard)


@pytest.mark.parametrize("understanding", ["speech", "both"])
def test_the_lm_hearing_speech_answers_a_question(
    stack: SpeechStack, lm: LlamaDuplexLM, voice: PiperSynthesizer, understanding: str
) -> None:
    question = say(voice, "question", "What is the capital of France?", at_ms=500)
    scenario = Scenario("turn-end", "turn_end", (question,))
    result, events = run(stack, lm, scenario, understanding)
    assert result.metrics["end_of_turn_ms"] is not None, result.heard
    assert result.assistant and result.assistant[0].status in ("completed", "unfinished")
    user = lm.cache.text().split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    transcripts = [e for e in events if isinstance(e, TranscriptDelta)]
    if understanding == "speech":
        # no recognizer ran: the LM wrote down what it read in the speech, answered that
        finals = [e.text for e in events if isinstance(e, TranscriptFinal)]
        assert not transcripts and SPEECH_MARK not in user and user.strip()
        assert finals == [user.strip()]
    else:
        # the speech decided the turn, the answer was written from the recognizer's words
        assert "capital of France" in user and SPEECH_MARK not in user
