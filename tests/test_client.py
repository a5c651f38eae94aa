"""The local assistant without devices: its view model, echo canceller and echo gate."""

from __future__ import annotations

from typing import Any

import numpy as np

from client.conversation import Conversation
from client.echo import EchoCanceller, EchoGate
from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE, rms_db
from duplex.events import (
    BackchannelIgnored,
    Interrupted,
    ResponseAudio,
    ResponseDone,
    ResponseText,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptFinal,
    TurnTaken,
)

AT: dict[str, Any] = {"audio_ms": 0, "clock_ms": 0.0}


def test_conversation_follows_a_turn_and_a_barge_in() -> None:
    c = Conversation()
    c.apply(SpeechStarted(**AT))
    assert c.state == "hearing"
    c.apply(TranscriptDelta(**AT, text="what time"))
    assert (c.lines[0].text, c.lines[0].partial) == ("what time", True)
    c.apply(SpeechStopped(**AT))
    c.apply(TranscriptFinal(**AT, text="What time is it?"))
    c.apply(TurnTaken(**AT, response_id=1, p_speak=0.9, silence_ms=200, required_silence_ms=190))
    c.apply(ResponseText(**AT, response_id=1, text=" It is three"))
    c.apply(ResponseText(**AT, response_id=1, text=" o'clock now."))
    c.apply(ResponseAudio(**AT, response_id=1, pcm=np.zeros(320, np.int16), text=""))
    assert c.state == "speaking"
    c.apply(BackchannelIgnored(**AT, response_id=1, text="uh-huh", onset_ms=0))
    c.apply(Interrupted(**AT, response_id=1, played_ms=400, played_text="It is three",
                        onset_ms=0, stopped_ms=0))  # fmt: skip
    assert c.state == "yielded"
    you, answer, note = c.lines
    assert (you.text, you.partial) == ("What time is it?", False)
    assert (answer.text, answer.unheard) == ("It is three", "o'clock now.")
    assert "uh-huh" in note.text
    c.apply(ResponseDone(**AT, response_id=1, status="interrupted", played_ms=400, text=""))


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise shaped by a syllable-rate envelope: broadband like speech, never silent long."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    envelope = 0.5 + 0.5 * np.abs(np.sin(np.arange(n) * 2 * np.pi * 4 / SAMPLE_RATE))
    return (rng.normal(0, 3000, n) * envelope).astype(np.int16)


def test_echo_canceller_removes_a_delayed_echo() -> None:
    played = speech_like(6.0)
    delay = 40 * SAMPLE_RATE // 1000
    echo = np.concatenate([np.zeros(delay), played[:-delay] * 0.5]).astype(np.int16)
    canceller = EchoCanceller(delay_ms=40)
    cleaned = []
    for start in range(0, played.size, FRAME_SAMPLES):
        canceller.reverse(played[start : start + FRAME_SAMPLES])
        cleaned.append(canceller.capture(echo[start : start + FRAME_SAMPLES]))
    out = np.concatenate(cleaned)
    converged = slice(3 * SAMPLE_RATE, None)
    erle = rms_db(echo[converged]) - rms_db(out[converged])
    print(f"ERLE {erle:.1f} dB")
    assert erle > 20


def test_echo_gate_silences_residual_echo_and_passes_the_user() -> None:
    gate = EchoGate(margin_db=10)
    quiet = np.zeros(FRAME_SAMPLES, np.int16)
    loud = speech_like(0.02, seed=1)
    residual = (loud * 0.01).astype(np.int16)  # -40 dB under what plays
    assert gate(residual, quiet) is residual  # nothing plays: everything passes
    for _ in range(20):
        assert not gate(residual, loud).any()  # the assistant's own residue: silence
    assert gate(loud, loud).any()  # a user as loud as the speaker is heard
    assert gate.gated == 20 and gate.residual_db < -30


def test_terminal_view_shows_state_words_and_latency() -> None:
    from rich.console import Console

    from client.ui import render
    from duplex.events import TurnMetrics
    from duplex.metrics import TurnRecord

    c = Conversation()
    c.apply(TranscriptFinal(**AT, text="What time is it?"))
    c.apply(TurnTaken(**AT, response_id=1, p_speak=0.9, silence_ms=200, required_silence_ms=190))
    c.apply(ResponseText(**AT, response_id=1, text=" It is three o'clock."))
    c.apply(Interrupted(**AT, response_id=1, played_ms=400, played_text="It is three",
                        onset_ms=0, stopped_ms=0))  # fmt: skip
    record = TurnRecord(1, user_last_voiced_ms=1000, first_output_ms=1480, outcome="interrupted")
    c.apply(TurnMetrics(**AT, record=record))
    console = Console(record=True, width=100)
    console.print(render(c))
    text = console.export_text()
    shown = ("yielded", "What time is it?", "It is three", "o'clock.", "480 ms", "interrupted")
    for part in shown:
        assert part in text, part
