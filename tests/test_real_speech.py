"""Real-speech scenarios cut from recordings at their own words (fakes for the audio)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from benchmarks.real_speech import (
    INSERTED_PAUSE_MS,
    WORD_END_SLACK_MS,
    Word,
    from_conversation,
    from_recording,
    load,
)
from benchmarks.scenarios import Cue, UserSimulator
from duplex.audio import FRAME_MS, SAMPLE_RATE, write_wav
from tests.fakes import user_audio

# "I went to the shop, then home. Yes." with a natural 400 ms pause after "shop,"
WORDS = [
    Word("I", 300, 500), Word("went", 550, 900), Word("to", 950, 1100),
    Word("the", 1150, 1300), Word("shop,", 1350, 1800),
    Word("then", 2200, 2500), Word("home.", 2550, 3000),
    Word("Yes.", 3800, 4100),
]  # fmt: skip
TOTAL_MS = 4600


def recording() -> np.ndarray:
    spans = [(w.start_ms, w.end_ms) for w in WORDS]
    merged = [list(spans[0])]
    for a, b in spans[1:]:
        if a - merged[-1][1] < 50:  # words run together, with 50 ms dips between some
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return user_audio([(a, b) for a, b in merged], TOTAL_MS)


def pause_ms(before: Cue, after: Cue) -> int:
    """The silence between two cues' voices on the scenario's timeline."""
    end = (before.at_ms or 0) - before.voiced[0] + before.voiced[1]
    return (after.at_ms or 0) - end


def test_a_sentence_makes_a_turn_end_its_natural_pause_held_and_an_inserted_one() -> None:
    scenarios = from_recording("talk", recording(), WORDS, random.Random(0))
    by_name = {s.name: s for s in scenarios}
    turn = by_name["talk-00"]
    assert turn.category == "turn_end" and turn.source == "real"
    # the natural pause after "shop," splits the turn: a question, then a continuation
    assert [c.kind for c in turn.cues] == ["question", "continuation"]
    assert turn.cues[0].text == "I went to the shop," and turn.cues[1].text == "then home."
    assert 300 <= pause_ms(turn.cues[0], turn.cues[1]) <= 500  # as spoken
    paused = by_name["talk-00-pause"]
    assert paused.category == "pause"
    # cut after "to" (a word that leaves the sentence unfinished), silence inserted
    assert paused.cues[0].text == "I went to"
    inserted = pause_ms(paused.cues[0], paused.cues[1])
    assert INSERTED_PAUSE_MS[0] <= inserted <= INSERTED_PAUSE_MS[1] + 100
    # the one-word "Yes." is a real backchannel, said into the answer to a real sentence
    [ack] = [s for s in scenarios if s.category == "backchannel"]
    assert [c.kind for c in ack.cues] == ["question", "continuation", "backchannel"]
    assert ack.cues[-1].into_answer_ms is not None


def test_a_recordings_tail_after_the_last_word_is_not_the_user_still_speaking() -> None:
    # noise runs on from "Yes." (4100 ms) to the recording's end: a breath, reverb, a room
    pcm = np.concatenate([recording()[: 4100 * SAMPLE_RATE // 1000], user_audio([(0, 500)], 500)])
    by_name = {s.name: s for s in from_recording("talk", pcm, WORDS, random.Random(0))}
    [yes] = by_name["talk-01"].cues
    assert yes.text == "Yes."
    # the voice is "Yes." (300 ms) and the slack, on the 20 ms frame grid; not its 500 ms tail
    voice = yes.voiced[1] - yes.voiced[0]
    assert 300 <= voice <= 300 + WORD_END_SLACK_MS + 2 * FRAME_MS < 300 + 500


def test_the_simulator_plays_a_real_turn_as_it_was_recorded() -> None:
    pcm = recording()
    [turn, *_] = from_recording("talk", pcm, WORDS, random.Random(0))
    played = np.concatenate([f.pcm for f in UserSimulator(turn)])
    for cue in turn.cues:  # each piece where its timing puts it, sample for sample
        start = ((cue.at_ms or 0) - cue.voiced[0]) * SAMPLE_RATE // 1000
        assert np.array_equal(played[start : start + cue.pcm.size], cue.pcm)
    # and the pieces are the recording's, back to back with the pause between them
    first, second = turn.cues
    assert (second.at_ms or 0) - second.voiced[0] - ((first.at_ms or 0) - first.voiced[0]) == (
        first.pcm.size * 1000 // SAMPLE_RATE
    )


def test_each_side_of_a_conversation_is_a_dialogue_scenario(tmp_path: Path) -> None:
    pcm = user_audio([(500, 1500), (2000, 3000), (3500, 4500)], 5000)
    stm = tmp_path / "call.stm"
    stm.write_text(
        "call 1 A 0.50 1.50 Hello there.\n"
        "call 1 B 2.00 3.00 Hi, who is it?\n"
        "call 1 A 3.50 4.50 It is me.\n"
    )
    wav = tmp_path / "call.wav"
    write_wav(wav, pcm)
    sides = {s.name: s for s in from_conversation("call", pcm, stm)}
    assert set(sides) == {"call-A", "call-B"}
    a = sides["call-A"]
    assert a.category == "dialogue"
    assert [c.text for c in a.cues] == ["Hello there.", "It is me."]
    assert [c.kind for c in a.cues] == ["question", "question"]  # two turns, answered between
    # load() finds the transcript beside the recording and asks for no word times
    found = load([tmp_path], lambda pcm: [])
    assert {s.name for s in found} == {"call-A", "call-B"}
