"""The acoustic end-of-turn estimate fused with the words': the rule, and the session with fakes.

Neither signal decides alone: words the text calls unfinished wait however
final the voice sounds, and a voice that sounds unfinished holds a turn the
recognizer punctuated as complete.
"""

from __future__ import annotations

from duplex.config import PolicySettings
from duplex.events import TurnEstimate, TurnTaken
from duplex.ports import StateProbs
from duplex.tdm import SUREST, fuse
from tests.fakes import Harness, ScriptedTurnAudio

SETTINGS = PolicySettings(min_silence_ms=100)
QUESTION = [(0, 300, "what"), (300, 600, "time"), (600, 800, "is"), (800, 1000, "it?")]


def text(speak: float) -> StateProbs:
    return StateProbs(1 - speak, speak, 0.0)


def test_fusion_holds_what_sounds_unfinished_and_hurries_no_turn_past_the_words() -> None:
    sure = text(0.95)
    assert fuse(sure, None, SETTINGS) == sure  # no acoustic model: the words alone
    assert fuse(sure, 0.02, SETTINGS).speak < 0.3  # a full stop at a breath
    assert fuse(sure, 0.95, SETTINGS).speak == SUREST  # both say done: the words' surest
    assert fuse(text(0.9), 0.97, SETTINGS).speak == SUREST  # an unpunctuated "...right."
    assert fuse(text(0.05), 0.99, SETTINGS).speak == 0.05  # "and then I", however it fell
    assert fuse(text(0.26), 0.94, SETTINGS).speak == 0.26  # words that lean to going on
    assert fuse(text(0.26), 0.05, SETTINGS).speak < 0.26  # ... may only be held longer
    unsure = fuse(text(0.6), 0.5, SETTINGS).speak
    assert abs(unsure - 0.6) < 1e-9  # an undecided voice leaves the words as they are


def test_a_dangling_phrase_with_a_falling_voice_waits() -> None:
    words = [(0, 300, "and"), (300, 500, "then"), (500, 800, "I")]
    falling = ScriptedTurnAudio(0.99)
    h = Harness(words, settings=SETTINGS, turn_audio=falling)
    h.run(2000)
    assert h.of(TurnTaken) == []  # 1200 ms of silence after "and then I": still listening
    estimates = h.of(TurnEstimate)
    assert estimates and all(e.p_speak == e.p_text == 0.05 for e in estimates)
    assert falling.heard_ms == []  # the sound cannot finish these words: it is not asked


def test_a_finished_question_that_sounds_finished_is_answered_sooner() -> None:
    alone = Harness(QUESTION, settings=SETTINGS)
    alone.run(3000)
    both = Harness(QUESTION, settings=SETTINGS, turn_audio=ScriptedTurnAudio(0.97))
    both.run(3000)
    [by_words], [by_both] = alone.of(TurnTaken), both.of(TurnTaken)
    assert by_both.required_silence_ms < by_words.required_silence_ms
    assert by_both.audio_ms <= by_words.audio_ms
    # the model heard the turn from its onset (pre-roll included) into the pause
    assert both.turn_audio is not None and len(both.turn_audio.heard_ms) == 1
    assert 1000 <= both.turn_audio.heard_ms[0] <= 1300


def test_a_full_stop_at_a_breath_holds_when_the_voice_goes_on() -> None:
    words = [
        (0, 300, "I"),
        (300, 500, "went"),
        (500, 800, "home."),  # the recognizer's full stop at a breath
        (1700, 2000, "and"),
        (2000, 2400, "slept."),
    ]
    by_words = Harness(words, settings=SETTINGS)
    by_words.run(5000)
    assert by_words.of(TurnTaken)[0].audio_ms < 1700  # the words alone take the pause
    held = Harness(words, settings=SETTINGS, turn_audio=ScriptedTurnAudio(0.03))
    held.run(6000)
    [taken] = held.of(TurnTaken)  # held through the 900 ms, answered after "slept."
    assert taken.audio_ms > 2400
