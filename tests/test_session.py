"""Every TDM transition, with exact timeline assertions, on deterministic fakes.

Timeline arithmetic used below: VAD starts after 60 ms voiced (onset = first
voiced frame) and stops after 200 ms unvoiced (at the end of the last voiced
frame); ticks run at every 160 ms boundary and at the frame where speech
stops; the scripted recognizer reveals a word 160 ms after its end (or at the
end of the utterance); the tone synthesizer speaks 200 ms per word. Output
pauses from the first voiced frame over it (hold_on_overlap).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from duplex.audio import Frame, Int16Array, frames_of
from duplex.clock import VirtualClock
from duplex.commands import (
    AddMessage,
    AddUserText,
    Cancel,
    Respond,
    SetAudioOutput,
    SetMaxTokens,
    SetOutputDelay,
    ShareCores,
    Truncate,
)
from duplex.config import PolicySettings
from duplex.events import (
    BackchannelIgnored,
    Error,
    Interrupted,
    ResponderFallback,
    ResponseAudio,
    ResponseDone,
    ResponseText,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TurnMetrics,
    TurnTaken,
)
from duplex.ports import StateProbs
from duplex.tdm import IllegalMove, Move, State, TurnPolicy, after
from tests.fakes import ANSWER, QUESTION, Harness, ScriptedResponder, ToneSynth, user_audio


def test_end_of_turn_takes_the_turn_after_a_short_silence() -> None:
    h = Harness(QUESTION)
    h.run(6000)
    assert [e.audio_ms for e in h.of(SpeechStarted)] == [0]
    assert [e.audio_ms for e in h.of(SpeechStopped)] == [1000]
    [taken] = h.of(TurnTaken)
    assert isinstance(taken, TurnTaken)
    # P(speak)=0.95 needs 2000 - 1900 * 0.95 = 195 ms; the tick run when speech
    # stops (1200 ms) hears the last word with 200 ms of silence.
    assert (taken.audio_ms, taken.silence_ms, taken.required_silence_ms) == (1200, 200, 195)
    [final] = h.of(TranscriptFinal)
    assert isinstance(final, TranscriptFinal) and final.text == "what time is it?"
    audio = h.of(ResponseAudio)
    # 3 + 8 + 5 words at 200 ms = 3200 ms of answer, played without a gap from 1200 ms
    assert [e.audio_ms for e in audio] == list(range(1200, 1200 + 3200, 20))
    [done] = h.of(ResponseDone)
    assert isinstance(done, ResponseDone)
    assert (done.status, done.played_ms, done.text) == ("completed", 3200, ANSWER)
    [metrics] = h.of(TurnMetrics)
    assert isinstance(metrics, TurnMetrics)
    record = metrics.record
    assert record.end_of_turn_ms == 200
    assert (record.vad_end_ms, record.decision_ms, record.first_output_ms) == (1200, 1200, 1200)
    assert record.output_stopped_ms == 4400 and record.outcome == "completed"
    assert h.lm.turns() == [("user", "what time is it?"), ("assistant", ANSWER)]
    assert h.session.state is State.LISTENING


def test_mid_sentence_pause_is_not_a_takeover() -> None:
    words = [
        (0, 300, "I"),
        (300, 500, "went"),
        (500, 650, "to"),
        (650, 800, "the"),
        (2000, 2400, "store"),
        (2400, 2800, "yesterday."),
    ]
    h = Harness(words)
    h.run(6000)
    # a 1200 ms pause after "the" (P(speak)=0.05 needs 1905 ms) does not take the turn
    assert [e.audio_ms for e in h.of(SpeechStarted)] == [0, 2000]
    [taken] = h.of(TurnTaken)
    assert taken.audio_ms == 3000  # 2800 + 200 ms hangover: speech stops, 200 >= 195 ms
    [final] = h.of(TranscriptFinal)
    assert isinstance(final, TranscriptFinal) and final.text == "I went to the store yesterday."


def test_long_pause_reaches_the_cap_and_takes_the_turn() -> None:
    words = [(0, 300, "and"), (300, 500, "then"), (500, 800, "I")]
    h = Harness(words)
    h.run(4000)
    [taken] = h.of(TurnTaken)
    assert isinstance(taken, TurnTaken)
    # P(speak)=0.05 needs 1905 ms of silence after 800 ms: the first tick past 2705 ms
    assert (taken.audio_ms, taken.silence_ms) == (2720, 1920)


def test_barge_in_stops_output_at_the_onset_and_truncates_history() -> None:
    words = [*QUESTION, (2000, 2300, "wait,"), (2300, 2600, "stop.")]
    h = Harness(words)
    h.run(8000)
    [interrupted] = h.of(Interrupted)
    assert isinstance(interrupted, Interrupted)
    # output holds once the first voiced frame (2000..2020 ms) is heard; "wait," is
    # revealed at the 2560 ms tick and the assistant yields there, stopped where it held
    assert (interrupted.onset_ms, interrupted.audio_ms, interrupted.stopped_ms) == (
        2000,
        2560,
        2020,
    )
    # played 1200..2020 ms: 30 frames of clause 1, 11 of the 80 of clause 2 (1.1 of 8 words)
    assert interrupted.played_ms == 820
    assert interrupted.played_text == "It is noon. Anything"
    # no assistant frame after the hold
    audio_times = [e.audio_ms for e in h.of(ResponseAudio) if e.response_id == 1]
    assert audio_times == list(range(1200, 2020, 20))
    [done1] = [e for e in h.of(ResponseDone) if e.response_id == 1]
    assert isinstance(done1, ResponseDone) and done1.status == "interrupted"
    metrics = [e.record for e in h.of(TurnMetrics)]
    assert metrics[0].barge_in_stop_ms == 20 and metrics[0].outcome == "interrupted"
    # the model's context holds only what the user heard, then the interruption
    turns = h.lm.turns()
    assert turns[:3] == [
        ("user", "what time is it?"),
        ("assistant", "It is noon. Anything"),
        ("user", "wait, stop."),
    ]
    # and the interruption is answered as a new turn
    taken = h.of(TurnTaken)
    assert [t.response_id for t in taken] == [1, 2]
    # after a barge-in the turn waits at least after_barge_in_silence_ms (600)
    assert taken[1].audio_ms == 3200 and taken[1].silence_ms == 600
    assert metrics[1].user_onset_ms == 2000 and metrics[1].end_of_turn_ms == 600


def test_the_answer_to_an_interruption_is_drafted_while_its_room_runs() -> None:
    """After a barge-in the turn waits 600 ms of silence (who interrupts often goes
    on). A likely end is drafted meanwhile, also where the LM reads nothing at
    pauses (a server whose sessions share the cores): the answer is ready then."""
    for read in (True, False):
        h = Harness([*QUESTION, (2000, 2300, "wait,"), (2300, 2600, "stop.")])
        h.session.handle(ShareCores(read_at_pauses=read, read_threads=1))
        h.run(8000)
        taken = h.of(TurnTaken)
        assert [(t.audio_ms, t.silence_ms) for t in taken[1:]] == [(3200, 600)]
        first = next(e for e in h.of(ResponseText) if e.response_id == 2)
        assert first.audio_ms < 3200


def test_words_the_recognizer_only_guessed_over_the_answer_do_not_stop_it() -> None:
    """Whisper hears a "mm-hm" as "and then make some", unsure: a sound, not words."""
    guessed = Harness([*QUESTION, (2000, 2700, "~and then make some.")])
    guessed.run(6000)
    assert guessed.of(Interrupted) == []
    assert [e.text for e in guessed.of(BackchannelIgnored)] == ["and then make some."]
    sure = Harness([*QUESTION, (2000, 2700, "and then make some.")])
    sure.run(6000)
    assert len(sure.of(Interrupted)) == 1  # the same words, recognized with confidence
    stop = Harness([*QUESTION, (2000, 2400, "~stop.")])
    stop.run(6000)
    assert len(stop.of(Interrupted)) == 1  # "stop", even unsure, is heard


def test_backchannel_is_dismissed_and_output_resumes_where_it_held() -> None:
    words = [*QUESTION, (2000, 2300, "uh-huh")]
    h = Harness(words)
    h.run(6000)
    [ignored] = h.of(BackchannelIgnored)
    assert isinstance(ignored, BackchannelIgnored)
    assert (ignored.text, ignored.onset_ms, ignored.audio_ms) == ("uh-huh", 2000, 2500)
    assert ignored.held_ms == 480  # held at 2020 ms, resumed at 2500 when speech stopped
    assert h.of(Interrupted) == []
    # the answer pauses over the "uh-huh" and goes on without a single missing frame
    played = list(range(1200, 2020, 20)) + list(range(2500, 2500 + 3200 - 820, 20))
    assert [e.audio_ms for e in h.of(ResponseAudio)] == played
    [done] = h.of(ResponseDone)
    assert isinstance(done, ResponseDone) and (done.status, done.text) == ("completed", ANSWER)
    # the overlap never entered the conversation
    assert h.lm.turns() == [("user", "what time is it?"), ("assistant", ANSWER)]
    [metrics] = h.of(TurnMetrics)
    assert isinstance(metrics, TurnMetrics) and metrics.record.backchannels == 1


def test_long_overlap_without_words_yields() -> None:
    settings = PolicySettings(max_backchannel_ms=600)
    h = Harness([*QUESTION, (2000, 3000, "")], settings=settings)
    h.run(5000)
    [interrupted] = h.of(Interrupted)
    # no words recognized, but the overlap is 720 ms long at the 2720 ms tick (560 at 2560)
    assert (interrupted.audio_ms, interrupted.onset_ms) == (2720, 2000)


def test_user_silent_after_the_answer_gets_no_new_turn() -> None:
    h = Harness(QUESTION)
    h.run(10_000)
    assert len(h.of(TurnTaken)) == 1
    last_event = max(e.audio_ms for e in h.events)
    assert last_event == 4400  # nothing happens in the 5.5 s of silence after the answer
    assert h.session.state is State.LISTENING


def test_a_cough_without_words_takes_no_turn() -> None:
    h = Harness([], settings=PolicySettings())
    h.run(4000, spans=[(500, 700)])
    assert len(h.of(SpeechStarted)) == 1 and h.of(TurnTaken) == []
    assert h.lm.history in ([], [["user", ""]])


def test_out_of_order_or_bad_frame_raises_and_session_goes_on() -> None:
    h = Harness(QUESTION)
    h.run(200)
    before = h.session.frames_seen
    with pytest.raises(ValueError, match="expects frame 10"):
        h.session.step(Frame.silence(42))
    with pytest.raises(ValueError, match="takes a Frame"):
        h.session.step(np.zeros(320, dtype=np.int16))  # type: ignore[arg-type]
    assert h.session.frames_seen == before
    for i in range(before, 400):
        h.events += h.session.step(Frame.silence(i))
    assert h.session.state is State.LISTENING


def test_policy_threshold_curve() -> None:
    policy = TurnPolicy(PolicySettings(min_silence_ms=100, max_silence_ms=2000))
    assert [policy.required_silence_ms(p) for p in (0.0, 0.5, 1.0, 1.5, -1)] == [
        2000,
        1050,
        100,
        100,
        2000,
    ]


def test_core_does_not_import_torch() -> None:
    code = "import duplex.session, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


class SlowSynth(ToneSynth):
    """A synthesizer that takes 300 ms of (virtual) compute per clause."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def synthesize(self, text: str, *, speed: float = 1.0) -> Int16Array:
        self.clock.advance(300)
        return super().synthesize(text, speed=speed)


def test_device_output_delay_counts_as_unheard_at_a_barge_in() -> None:
    """The local assistant tells the session how far its speaker runs behind: what
    was sent in that time had not been heard when the user spoke."""
    words = [*QUESTION, (2400, 2700, "wait,"), (2700, 3000, "stop.")]

    def interrupted(delay_ms: int) -> Interrupted:
        h = Harness(words)
        h.session.handle(SetOutputDelay(delay_ms))
        h.run(5000)
        [event] = h.of(Interrupted)
        assert isinstance(event, Interrupted)
        return event

    now, later = interrupted(0), interrupted(200)
    assert later.played_ms == now.played_ms - 200
    assert later.stopped_ms == now.stopped_ms  # the device still stops where it was told


def test_compute_lag_delays_output_and_a_barge_in_keeps_what_was_heard() -> None:
    words = [*QUESTION, (2400, 2700, "wait,"), (2700, 3000, "stop.")]
    # it plays on, then flushes
    h = Harness(words, settings=PolicySettings(hold_on_overlap=False), synthesizer=SlowSynth)
    h.run(5000)
    audio = [e for e in h.of(ResponseAudio) if e.response_id == 1]
    starts = [e.audio_ms for e in audio]
    # output plays back to back, never before it was synthesized
    assert all(b - a >= 20 for a, b in itertools.pairwise(starts))
    # the answer was begun 40 ms into the silence (the decode at the pause heard "it?"),
    # its 300 ms of synthesis ran while the VAD's hangover did
    assert starts[0] == 1040 + 300
    [interrupted] = h.of(Interrupted)
    heard = [s for s in starts if s < interrupted.stopped_ms]
    assert interrupted.played_ms == 20 * len(heard)
    record = h.of(TurnMetrics)[0].record
    assert record.end_of_turn_ms == 340
    assert record.output_stopped_ms == interrupted.stopped_ms
    assert h.lm.turns()[1] == ("assistant", interrupted.played_text)


def test_output_is_not_sent_far_ahead_after_a_stall() -> None:
    """After a synthesis stall the loop catches up on input faster than real time;
    output must not run ahead of the clock by more than send_ahead_ms, or the
    device would queue it and a barge-in could not stop it."""

    def lead(settings: PolicySettings) -> float:
        h = Harness(QUESTION, settings=settings, synthesizer=SlowSynth)
        h.run(5000)
        audio = h.of(ResponseAudio)
        assert audio
        return max(e.audio_ms - e.clock_ms for e in audio)

    assert lead(PolicySettings()) <= PolicySettings().send_ahead_ms


def test_input_that_arrived_during_a_stall_is_heard_before_more_output() -> None:
    """The user starts talking while a clause is being synthesized (a 300 ms stall):
    the frames that arrived meanwhile reach the VAD before any more output is sent,
    so the answer holds where it was, not where the catching-up loop would have got."""
    words = [*QUESTION, (1860, 2200, "wait,"), (2200, 2500, "stop.")]
    h = Harness(words, synthesizer=SlowSynth)
    h.run(5000)
    [interrupted] = h.of(Interrupted)
    assert isinstance(interrupted, Interrupted)
    # what was sent before the stall plays out, then nothing (without the catch-up
    # the loop sent the frames it caught up with: output ran 120 ms past the onset)
    assert interrupted.stopped_ms <= interrupted.onset_ms


def test_a_session_that_stays_behind_still_talks() -> None:
    """Behind the audio by a steady 100 ms (no stall of its own): every frame plays."""
    h = Harness(QUESTION)
    h.clock.advance(100)
    h.run(6000)
    audio = [e.audio_ms for e in h.of(ResponseAudio)]
    assert len(audio) == 160  # the whole 3.2 s answer
    assert all(b - a == 20 for a, b in itertools.pairwise(audio))  # without a gap


SLOW_ENDPOINT = PolicySettings(min_silence_ms=500, max_silence_ms=2000)  # p=.95 needs 575 ms


def test_answer_is_written_speculatively_while_the_silence_runs() -> None:
    h = Harness(QUESTION, settings=SLOW_ENDPOINT)
    h.run(6000)
    [taken] = h.of(TurnTaken)
    # decided at the first frame with enough silence, not at the next tick
    assert (taken.audio_ms, taken.silence_ms) == (1580, 580)
    # the answer was written and synthesized 40 ms into the silence (the decode at the
    # pause heard "it?"), held until the decision
    text_events = h.of(ResponseText)
    assert text_events[0].audio_ms == 1040
    assert h.events.index(text_events[0]) > h.events.index(taken)
    [record] = [e.record for e in h.of(TurnMetrics)]
    assert (record.first_token_ms, record.decision_ms, record.first_output_ms) == (1040, 1580, 1580)
    assert record.asr_final_ms == 1040
    assert h.lm.cancelled == 0


def test_speculative_answer_is_discarded_when_the_user_goes_on() -> None:
    words = [*QUESTION, (1500, 1800, "and"), (1800, 2200, "tomorrow?")]
    h = Harness(words, settings=SLOW_ENDPOINT)
    h.run(7000)
    assert h.lm.cancelled == 1
    [final] = h.of(TranscriptFinal)
    assert final.text == "what time is it? and tomorrow?"
    assert h.lm.turns()[0] == ("user", "what time is it? and tomorrow?")
    assert [role for role, _ in h.lm.turns()] == ["user", "assistant"]
    assert h.of(ResponseText)[0].audio_ms > 2200  # nothing of the draft was sent


def test_typed_text_waits_for_respond_then_is_answered() -> None:
    h = Harness([])
    h.run(400)
    h.events += h.session.handle(AddUserText("what time is it?"))
    h.run(1000)
    assert h.of(TurnTaken) == []  # typed words never end a turn by silence
    h.events += h.session.handle(Respond())
    [refused] = h.session.handle(Respond())
    assert isinstance(refused, Error) and "already in progress" in refused.message
    h.run(6000)
    [taken] = h.of(TurnTaken)
    assert taken.audio_ms == 1000
    [done] = h.of(ResponseDone)
    assert done.status == "completed" and h.lm.turns()[0] == ("user", "what time is it?")


def test_commands_are_handled_between_frames_or_posted_for_the_next() -> None:
    """A driver's commands are values: `handle` applies one now, `post` (another
    thread) before the next frame, its events out with that frame's."""
    h = Harness([])
    h.run(400)
    assert h.session.handle(AddUserText("what time is it?", echo=False)) == []
    h.session.post(Respond())
    assert h.of(TurnTaken) == []  # nothing happens until a frame comes
    h.run(420)
    [taken] = h.of(TurnTaken)
    assert taken.audio_ms == 400
    [refused] = [e for e in h.session.handle(Respond()) if isinstance(e, Error)]
    assert refused.code == "response_in_progress"  # the answer in progress goes on
    h.run(6000)
    [done] = h.of(ResponseDone)
    assert done.status == "completed"
    with pytest.raises(ValueError, match="not a session command"):
        h.session.handle("respond")  # type: ignore[arg-type]


def test_cancel_stops_the_answer_where_it_played() -> None:
    h = Harness(QUESTION)
    h.run(2000)
    h.events += h.session.handle(Cancel())
    [interrupted] = h.of(Interrupted)
    assert interrupted.stopped_ms == 2000 and interrupted.played_ms == 800
    [done] = h.of(ResponseDone)
    assert done.status == "cancelled" and done.text == "It is noon. Anything"
    assert h.lm.turns()[1] == ("assistant", "It is noon. Anything")
    h.run(4000)
    # the frame sent for 2000 ms is flushed by the Interrupted; nothing is sent after it
    assert [e.audio_ms for e in h.of(ResponseAudio)] == list(range(1200, 2020, 20))
    assert h.session.state is State.LISTENING and h.session.handle(Cancel()) == []


def test_a_short_silence_decodes_at_once_and_holds_back_the_rest() -> None:
    """40 ms into a silence the recognizer decodes what it has (`pause`); the rest of
    the silence reaches it only if speech resumes, so when the VAD ends the utterance
    instead, `finish` has nothing new to decode."""
    h = Harness(QUESTION)
    accepted: list[int] = []
    pauses: list[int] = []
    accept, pause = h.recognizer.accept, h.recognizer.pause

    def record_accept(frame: Frame) -> None:
        accepted.append(frame.index)
        accept(frame)

    def record_pause() -> str:
        pauses.append(accepted[-1])
        return pause()

    h.recognizer.accept = record_accept  # type: ignore[method-assign]
    h.recognizer.pause = record_pause  # type: ignore[method-assign]
    h.run(2000, spans=[(0, 500), (600, 1000)])
    # frames 25, 26 (500-540 ms) are unvoiced: pause after frame 26; 27-29 wait and
    # follow when speech resumes at frame 30; after 1000 ms the same, and the VAD's
    # end (200 ms unvoiced, frame 59) drops the held silence
    assert pauses == [26, 51]
    assert accepted == list(range(52))
    assert [e.audio_ms for e in h.of(SpeechStopped)] == [1000]


def test_a_responder_writes_the_answer_and_hears_only_what_was_played() -> None:
    """An external engine writes the answers; the barge-in closes its stream, and the
    next request carries the first answer as far as the user heard it."""
    engine = ScriptedResponder([ANSWER, "Sure."])
    h = Harness([*QUESTION, (2000, 2300, "wait,"), (2300, 2600, "stop.")], responder=engine)
    h.run(8000)
    [interrupted] = h.of(Interrupted)
    assert isinstance(interrupted, Interrupted)
    assert interrupted.played_text == "It is noon. Anything"
    assert engine.stops >= 1
    assert engine.requests[0] == [{"role": "user", "content": "what time is it?"}]
    assert engine.requests[1] == [
        {"role": "user", "content": "what time is it?"},
        {"role": "assistant", "content": "It is noon. Anything"},
        {"role": "user", "content": "wait, stop."},
    ]
    assert h.lm.turns()[-1] == ("assistant", "Sure.")


def test_a_failing_responder_hands_the_answer_to_the_lm() -> None:
    engine = ScriptedResponder([ANSWER], fail_after=4)
    h = Harness(QUESTION, responder=engine)
    h.run(8000)
    [fallback] = h.of(ResponderFallback)
    assert isinstance(fallback, ResponderFallback) and "broke off" in fallback.reason
    [done] = h.of(ResponseDone)
    assert isinstance(done, ResponseDone) and done.status == "completed"
    # the engine's four words, then the LM's own (the scripted LM starts its answer over)
    assert done.text.startswith("It is noon. Anything It is noon.")


def test_a_client_truncates_the_answer_at_what_it_played() -> None:
    """A client that plays the audio itself says how much the user heard: the LM keeps
    those words, whether the answer is still playing or already finished."""
    playing = Harness(QUESTION)
    playing.run(2000)  # the answer plays from 1200 ms
    events = playing.session.handle(Truncate(600))  # 3 words at 200 ms each
    [interrupted] = [e for e in events if isinstance(e, Interrupted)]
    assert isinstance(interrupted, Interrupted) and interrupted.played_text == "It is noon."
    assert playing.lm.turns()[-1] == ("assistant", "It is noon.")
    assert playing.session.state is State.LISTENING

    finished = Harness(QUESTION)
    finished.run(6000)  # the whole answer played
    assert finished.lm.turns()[-1] == ("assistant", ANSWER)
    assert finished.session.handle(Truncate(800)) == []
    assert finished.lm.turns()[-1] == ("assistant", "It is noon. Anything")


class AheadTones(ToneSynth):
    """Makes later clauses "in the background": ready after a few polls."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls = polls
        self.started: list[str] = []

    def start(self, text: str, *, speed: float = 1.0) -> Any:
        self.started.append(text)
        pcm, polls = self.synthesize(text, speed=speed), self.polls

        class Pending:
            def result(self) -> Int16Array | None:
                nonlocal polls
                polls -= 1
                return pcm if polls < 0 else None

            def wait(self) -> Int16Array:
                return pcm

        return Pending()


def test_later_clauses_are_made_ahead_while_earlier_audio_plays() -> None:
    tones = AheadTones(polls=10)
    h = Harness(QUESTION, synthesizer=lambda _: tones)
    h.run(6000)
    # the first clause is made in the loop (the user waits for it); the rest ahead
    assert tones.started == ["Anything else I can help you with today?", "I am happy to help."]
    [done] = h.of(ResponseDone)
    assert isinstance(done, ResponseDone)
    assert (done.status, done.text) == ("completed", ANSWER)
    audio = [e.audio_ms for e in h.of(ResponseAudio)]
    assert audio == list(range(1200, 1200 + 3200, 20))  # no gap where a clause was made


# speech understanding: the LM hears 160 ms chunks (tests.fakes.ChunkListener),
# the scripted speech head ends a turn after 2 quiet chunks


def test_speech_understanding_takes_the_turn_from_what_it_heard() -> None:
    h = Harness([], understanding="speech")
    h.run(6000, spans=[(0, 1000)])
    [taken] = h.of(TurnTaken)
    # chunks end every 160 ms from the onset; 1280 and 1440 are quiet: speak at 1440
    assert (taken.audio_ms, taken.silence_ms, taken.p_speak) == (1440, 440, 0.95)
    # the LM wrote down what it read in the 9 chunks, answered that, and said so
    assert h.lm.turns()[0] == ("user", " ".join(["word"] * 9))
    assert h.lm.turns()[1] == ("assistant", ANSWER)
    [final] = h.of(TranscriptFinal)
    assert isinstance(final, TranscriptFinal) and final.text == " ".join(["word"] * 9)
    assert h.recognizer.heard_until > 0  # fed, but no recognizer words were needed


def test_speech_heard_while_a_draft_is_written_joins_the_turn_when_the_user_goes_on() -> None:
    def unsure(heard: list[tuple[int, bool]], overlap: bool) -> Any:
        quiet = len(heard) >= 2 and not heard[-1][1] and not heard[-2][1]
        return StateProbs(0.5, 0.5, 0.0) if quiet else StateProbs(0.95, 0.05, 0.0)

    h = Harness(
        [],
        understanding="speech",
        settings=PolicySettings(min_silence_ms=100, speculate_threshold=0.4),
    )
    h.lm.speech_state = unsure
    h.run(6000, spans=[(0, 1000), (1900, 2400)])
    assert h.lm.cancelled == 1  # a draft began at 1440 (P(speak) 0.5) and was dropped
    [taken] = h.of(TurnTaken)
    # 0.5 needs 1050 ms of silence after 2400
    assert taken.audio_ms == 3460
    heard = [ms for ms, _ in h.lm.heard]
    assert heard == list(range(160, heard[-1] + 1, 160))  # no chunk lost to the draft
    assert heard[-1] >= 2720
    # the dropped draft's words stay; the speech after them is read and added
    words = h.lm.turns()[0][1].split()
    assert set(words) == {"word"} and len(words) == len(heard)


def test_both_answers_from_the_recognizers_words_decided_by_speech() -> None:
    h = Harness(QUESTION, understanding="both")
    h.run(6000)
    [taken] = h.of(TurnTaken)
    assert taken.audio_ms == 1440  # the speech head's decision, not the text's (1200)
    assert h.lm.turns() == [("user", "what time is it?"), ("assistant", ANSWER)]


def test_speech_understanding_dismisses_a_short_sound_and_yields_to_speech() -> None:
    short = Harness([], understanding="speech")
    short.run(7000, spans=[(0, 1000), (2000, 2150)])
    [ignored] = short.of(BackchannelIgnored)
    assert ignored.onset_ms == 2000 and short.of(Interrupted) == []
    assert [d.status for d in short.of(ResponseDone)] == ["completed"]
    assert len(short.lm.turns()) == 2  # the sound never joined the conversation
    long = Harness([], understanding="speech")
    long.run(7000, spans=[(0, 1000), (2000, 2700)])
    [interrupted] = long.of(Interrupted)
    # the third loud chunk ends at 2480: yield at the next tick
    assert (interrupted.onset_ms, interrupted.audio_ms) == (2000, 2560)
    user = long.lm.turns()[2]
    assert user[0] == "user" and user[1].count("word") >= 4  # what it heard over the answer


def test_both_yields_to_a_stop_word_the_speech_head_would_dismiss() -> None:
    said = [*QUESTION, (2000, 2150, "Wait.")]
    stopped = Harness(said, understanding="both")
    stopped.run(7000, spans=[(0, 1000), (2000, 2150)])
    [interrupted] = stopped.of(Interrupted)
    assert interrupted.audio_ms < 2500 and stopped.of(BackchannelIgnored) == []
    sound = Harness([*QUESTION, (2000, 2150, "Mm.")], understanding="both")
    sound.run(7000, spans=[(0, 1000), (2000, 2150)])
    assert sound.of(Interrupted) == [] and len(sound.of(BackchannelIgnored)) == 1


def test_speech_understanding_yields_to_a_stop_word_the_lm_read_over_the_answer() -> None:
    stopped = Harness([], understanding="speech")
    stopped.lm.said_over_answer = "Wait."
    stopped.run(7000, spans=[(0, 1000), (2000, 2150)])
    [interrupted] = stopped.of(Interrupted)
    assert interrupted.onset_ms == 2000 and stopped.of(BackchannelIgnored) == []
    sound = Harness([], understanding="speech")
    sound.lm.said_over_answer = "Mm."
    sound.run(7000, spans=[(0, 1000), (2000, 2150)])
    [ignored] = sound.of(BackchannelIgnored)
    assert isinstance(ignored, BackchannelIgnored) and ignored.text == "Mm."


def test_speech_understanding_sends_what_the_lm_read_to_a_responder() -> None:
    engine = ScriptedResponder([ANSWER])
    h = Harness([], understanding="speech", responder=engine)
    h.run(6000, spans=[(0, 1000)])
    assert engine.requests == [[{"role": "user", "content": " ".join(["word"] * 9)}]]
    [done] = h.of(ResponseDone)
    assert isinstance(done, ResponseDone) and done.text == ANSWER


def test_speech_understanding_needs_a_listener() -> None:
    from duplex.session import Session
    from duplex.vad import VadTracker
    from tests.fakes import EnergyVad, ScriptedLM, ScriptedRecognizer

    with pytest.raises(ValueError, match="speech listener"):
        Session(
            vad=VadTracker(EnergyVad()),
            recognizer=ScriptedRecognizer([]),
            lm=ScriptedLM(["hi"]),
            synthesizer=ToneSynth(),
            clock=VirtualClock(),
            understanding="speech",
        )


def test_the_first_clause_plays_before_the_next_is_made() -> None:
    """One read wrote two clauses ("Sure. Yes."): the user hears the first one
    synthesis after the words, not two."""
    h = Harness(QUESTION, answers=("Sure. Yes. It is noon.",), synthesizer=SlowSynth)
    h.run(3000)
    first_text, first_audio = h.of(ResponseText)[0], h.of(ResponseAudio)[0]
    assert first_audio.clock_ms - first_text.clock_ms == 300
    assert first_audio.text == "Sure."


def test_words_read_at_a_pause_are_forgotten_when_the_user_goes_on() -> None:
    """40 ms into a 120 ms gap the decode hears "it?": the LM reads it and a draft
    answer begins. The user goes on before the VAD ends the utterance: the draft and
    the tentative words go, and the turn holds each word once."""
    words = [*QUESTION, (1120, 1300, "and"), (1300, 1600, "tomorrow?")]
    h = Harness(words)
    h.run(4000)
    assert (h.lm.retracted, h.lm.cancelled) == (1, 1)
    assert [e.audio_ms for e in h.of(SpeechStopped)] == [1600]
    [final] = h.of(TranscriptFinal)
    assert final.text == "what time is it? and tomorrow?"
    assert h.lm.turns()[0] == ("user", "what time is it? and tomorrow?")


def test_the_first_clause_is_written_one_token_at_a_time() -> None:
    """The first clause goes to the voice as soon as its fourth word is complete,
    not after a whole budget of tokens past it."""
    h = Harness(QUESTION, answers=("one two three four five six seven eight nine ten.",))
    h.run(3000)
    first_audio = h.events.index(h.of(ResponseAudio)[0])
    written = [e for e in h.events[:first_audio] if isinstance(e, ResponseText)]
    assert "".join(e.text for e in written) == " one two three four five"
    assert h.of(ResponseAudio)[0].text == "one two three four"


def test_a_voiced_frame_the_vad_has_not_confirmed_keeps_the_turn_open() -> None:
    """ "hello there." then 220 ms of silence and more words: the silence needed (242.5
    ms by default) is reached on a frame that is voice again, before the VAD confirms
    it (60 ms): the user goes on, and it is one turn."""
    words = [(0, 300, "hello"), (300, 600, "there."), (820, 1000, "what"), (1000, 1300, "time?")]
    h = Harness(words, settings=PolicySettings())
    h.run(4000)
    assert not h.of(Interrupted)
    [final] = h.of(TranscriptFinal)
    assert final.text == "hello there. what time?"


def test_a_turn_taken_between_ticks_starts_its_answer_at_once() -> None:
    """No final mark: P(speak) is low and the turn waits for a long silence, whose end
    falls between two ticks. The answer's first clause is made on that frame, not at
    the next tick (up to `tick_ms` later)."""
    h = Harness([(0, 300, "so"), (300, 600, "anyway")])
    h.run(4000)
    [taken] = h.of(TurnTaken)
    assert taken.audio_ms % h.settings.tick_ms != 0  # between ticks
    assert h.of(ResponseText)[0].audio_ms == taken.audio_ms
    assert h.of(ResponseAudio)[0].audio_ms - taken.audio_ms <= 20


def test_a_session_behind_real_time_leaves_out_work_that_cannot_win_time() -> None:
    """A busy machine: each frame is read 200 ms after it arrived, so the frames that
    end a pause are already waiting when it begins. No decode at the pause and no
    draft answer before the turn is taken (nothing to gain: both would start no
    sooner than at the VAD's end); the turn is the same."""
    h = Harness(QUESTION)
    pauses = record_pauses(h)
    for frame in frames_of(user_audio([(s, e) for s, e, _ in QUESTION], 6000)):
        behind = 200 if frame.index else 0
        h.clock.advance(max(0.0, frame.end_ms + behind - h.clock.now_ms()))
        h.events += h.session.step(frame)
    assert pauses == []
    [final] = h.of(TranscriptFinal)
    assert final.text == "what time is it?"
    [taken] = h.of(TurnTaken)
    assert h.of(ResponseText)[0].audio_ms >= taken.audio_ms  # no draft written before it
    # the turn's breakdown shows where the time went: the VAD's end was read late
    [metrics] = h.of(TurnMetrics)
    assert isinstance(metrics, TurnMetrics)
    assert metrics.record.stages()["vad_end"] == 200 + 200


def test_a_session_sharing_its_cores_decodes_at_pauses_but_drafts_nothing() -> None:
    """On time, the recognizer decodes a moment into the pause either way (if the
    turn ends there, its final pass is done). Alone, the LM reads those words at
    once and drafts an answer to a likely end; with the read turned off (a server
    whose sessions share the cores) neither happens before the VAD's end, and the
    turn and its words are the same."""
    for read in (True, False):
        h = Harness(QUESTION)
        h.session.handle(ShareCores(read_at_pauses=read, read_threads=1))
        pauses, reads = record_pauses(h), record_reads(h)
        h.run(4000)
        assert pauses
        assert bool(reads) is read
        [final] = h.of(TranscriptFinal)
        assert final.text == "what time is it?"
        [taken] = h.of(TurnTaken)
        drafted = h.of(ResponseText)[0].audio_ms < taken.audio_ms
        assert drafted is read


def record_pauses(h: Harness) -> list[int]:
    """The frames at which the session asks the recognizer for a decode at a pause."""
    pauses: list[int] = []
    pause = h.recognizer.pause

    def record_pause() -> str:
        pauses.append(h.session.frames_seen)
        return pause()

    h.recognizer.pause = record_pause  # type: ignore[method-assign]
    return pauses


def record_reads(h: Harness) -> list[str]:
    """The words the LM reads at a pause (tentatively: the user may go on)."""
    reads: list[str] = []
    listen_tentatively = h.lm.listen_tentatively

    def record_read(text: str) -> StateProbs:
        reads.append(text)
        return listen_tentatively(text)

    h.lm.listen_tentatively = record_read  # type: ignore[method-assign]
    return reads


def test_whose_turn_it_is_moves_only_by_the_table() -> None:
    """Every turn-taking move is in `tdm.TRANSITIONS`; any other raises."""
    assert after(State.LISTENING, Move.TAKE_TURN) is State.SPEAKING
    assert after(State.SPEAKING, Move.TALKED_OVER) is State.OVERLAP
    assert after(State.OVERLAP, Move.DISMISS) is State.SPEAKING
    assert after(State.OVERLAP, Move.YIELD) is State.LISTENING
    assert all(after(state, Move.FAIL) is State.LISTENING for state in State)
    for state, move in [(State.LISTENING, Move.DISMISS), (State.SPEAKING, Move.TAKE_TURN),
                        (State.LISTENING, Move.END), (State.SPEAKING, Move.YIELD)]:  # fmt: skip
        with pytest.raises(IllegalMove, match="cannot"):
            after(state, move)
    # a barge-in, as the session lives it: the answer exists only while it has the turn
    h = Harness([*QUESTION, (2400, 2700, "wait,"), (2700, 3000, "stop.")])
    states = []
    for ms in range(20, 5000, 20):
        h.run(ms)
        states.append(h.session.state)
    order = [s for i, s in enumerate(states) if i == 0 or s is not states[i - 1]]
    assert order == [
        State.LISTENING,
        State.SPEAKING,
        State.OVERLAP,
        State.LISTENING,
        State.SPEAKING,
    ]


def test_an_answer_in_text_alone_is_written_not_spoken() -> None:
    """Text output, per response or per session: the words go out, no audio, and a
    barge-in keeps all the words written so far (the user read them)."""
    h = Harness([], answers=["It is noon. Anything else I can help you with today?"])
    h.run(400)
    h.events += h.session.handle(AddUserText("what time is it?"))
    h.events += h.session.handle(Respond(audio=False))
    h.run(3000)
    assert h.of(ResponseAudio) == []
    [done] = h.of(ResponseDone)
    assert isinstance(done, ResponseDone) and done.status == "completed"
    assert done.text == "It is noon. Anything else I can help you with today?"
    assert "".join(e.text for e in h.of(ResponseText)).strip() == done.text
    h.session.handle(SetAudioOutput(False))
    h.events += h.session.handle(AddUserText("and tomorrow?"))
    h.events += h.session.handle(Respond())
    h.run(6000)
    assert h.of(ResponseAudio) == [] and len(h.of(ResponseDone)) == 2


def test_instructions_for_one_answer_come_before_it_in_the_conversation() -> None:
    h = Harness([], answers=["Hello there!"])
    h.run(400)
    h.events += h.session.handle(Respond(instructions="Say hello to the user."))
    h.run(3000)
    assert h.lm.turns()[-2:] == [
        ("system", "Say hello to the user."),
        ("assistant", "Hello there!"),
    ]


def test_history_items_and_answer_lengths_reach_the_lm() -> None:
    """A client's system and assistant items join the history between answers; an
    answer's length limit is the request's, else the session's."""
    h = Harness([])
    h.run(400)
    assert h.session.handle(AddMessage("system", "Speak French.")) == []
    h.session.handle(AddMessage("assistant", "Bonjour."))
    assert h.lm.history[-2:] == [["system", "Speak French."], ["assistant", "Bonjour."]]
    h.session.handle(SetMaxTokens(12))
    h.events += h.session.handle(AddUserText("what time is it?"))
    h.events += h.session.handle(Respond())
    h.events += h.session.handle(AddMessage("system", "late"))  # an answer is in progress
    assert any(isinstance(e, Error) and e.code == "response_in_progress" for e in h.events)
    h.run(6000)
    h.events += h.session.handle(AddUserText("and tomorrow?"))
    h.events += h.session.handle(Respond(max_tokens=3))
    assert h.lm.max_tokens_seen == [12, 3]
