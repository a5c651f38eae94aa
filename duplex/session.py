"""One conversation: the TDM loop over 20 ms frames, sans I/O.

`Session.step(frame)` takes the next microphone frame and returns the events
it caused, at most one of them a `ResponseAudio` frame to play now. Every
`tick_ms` the session runs one TDM tick: a listen slice (new stable words to
the LM, state probabilities back), a decision (take the turn, yield, dismiss)
and a speak slice (decode just enough to keep synthesized audio ahead of
playout). The session never touches a socket, a device, a thread or the wall
clock; drivers do, which is what makes every decision reproducible in tests.

A model call that raises inside `step` (the recognizer, the LM, the voice,
the acoustic model, an external engine) ends the turn it was in: an `Error`
event (code `model_error`), the answer's `ResponseDone` with status
"failed" if one was under way, and the session listens again from the next
frame. The words of the failed turn are dropped; what was played is kept.

Positions: the input frame with index i covers [20 i, 20 i + 20) ms, and the
output frame returned by `step` for it is played from 20 i + 20 ms. When the
clock runs ahead of the audio (compute took longer than real time), marks use
the clock's position instead, so slow models show up as latency.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import Any

import numpy as np

from duplex.audio import FRAME_MS, Float32Array, Frame
from duplex.clock import Clock
from duplex.commands import (
    AddUserText,
    Cancel,
    ClearInput,
    Command,
    Commit,
    Respond,
    SetInstructions,
    SetOutputDelay,
    SetPolicy,
    ShareCores,
    Truncate,
)
from duplex.config import PolicySettings
from duplex.events import (
    BackchannelIgnored,
    Error,
    Event,
    Interrupted,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptFinal,
    TurnEstimate,
    TurnMetrics,
    TurnTaken,
)
from duplex.listener import Listener
from duplex.metrics import TurnRecord
from duplex.playout import Player, Response
from duplex.ports import (
    DuplexLM,
    Recognizer,
    Responder,
    SpeechListener,
    StateProbs,
    Synthesizer,
    TurnEndAudio,
)
from duplex.tdm import (
    Move,
    OverlapDecision,
    Policy,
    State,
    TurnPolicy,
    after,
    fuse,
    sound_can_tell,
)
from duplex.text import asks_to_stop
from duplex.vad import VadStep, VadTracker

# a step that took longer than this stalled: input arrived meanwhile
log = logging.getLogger(__name__)

STALL_MS = FRAME_MS
# the state read from a stop word said over the answer: yield
_STOP_WORD = StateProbs(0.0, 1.0, 0.0)
# with speech understanding, voice shorter than this is a cough or a click, not a turn
MIN_TURN_SPEECH_MS = 240
UNDERSTANDING = ("text", "speech", "both")


class Session:
    """The TDM loop for one conversation."""

    def __init__(
        self,
        *,
        vad: VadTracker,
        recognizer: Recognizer,
        lm: DuplexLM,
        synthesizer: Synthesizer,
        clock: Clock,
        settings: PolicySettings | None = None,
        policy: Policy | None = None,
        responder: Responder | None = None,
        speech: SpeechListener | None = None,
        understanding: str = "text",
        turn_audio: TurnEndAudio | None = None,
    ) -> None:
        """`responder`: an external engine that writes the answers; None: the LM does.

        `understanding`: how the LM hears the user. "text": the recognizer's words.
        "speech": `speech`'s embeddings, 160 ms at a time; the state head reads them
        and the answer is written from them (no recognizer on the turn's path).
        "both": the state head reads the speech, the answer is written from the
        recognizer's words (the turn's speech is rewritten as text when it begins).
        `turn_audio`: acoustic end-of-turn evidence, asked once per pause and fused
        with the words' estimate (`tdm.fuse`); None: the words alone.
        """
        if understanding not in UNDERSTANDING:
            raise ValueError(
                f"understanding is one of {', '.join(UNDERSTANDING)}, got {understanding!r}"
            )
        if understanding != "text" and speech is None:
            raise ValueError(f"{understanding!r} understanding needs a speech listener")
        self.settings = settings or PolicySettings()
        self.policy: Policy = policy or TurnPolicy(self.settings)
        self._vad = vad
        self._recognizer = recognizer
        self._lm = lm
        self._clock = clock
        self._tick_frames = self.settings.tick_ms // FRAME_MS
        self.state = State.LISTENING
        self._next_index = 0
        self._clock_origin: float | None = None
        self._player = Player(
            lm, synthesizer, responder, self.settings, self._timeline, self._event
        )
        # a moment into each pause the recognizer decodes (if the turn ends there, its
        # final pass is done) and the LM reads the words and drafts an answer to a
        # likely end. Most pauses are not the end (about three in four in the
        # benchmark): the read and the draft pay while a core is idle; a server whose
        # sessions share the cores turns them off and keeps the decode
        self._read_at_pauses = True
        self._posted: deque[Command] = deque()  # from other threads, applied before a frame
        self._utterance_ended = False
        self._voice_now = False  # the latest frame was voiced
        # the open user turn
        self._user_text = ""
        self._record: TurnRecord | None = None
        # the assistant's answer and the user's words over it
        self._response: Response | None = None
        self._last_response: Response | None = None  # the latest finished answer
        self._responses = 0
        self._overlap_onset: int | None = None
        self._overlap_end: int | None = None
        self._overlap_text = ""
        # an answer written while the silence threshold is still running
        self._speculative: Response | None = None
        # the words the decode at a pause heard after the stable ones, which the LM has
        # read tentatively (the turn's last words, unless the user goes on), and when
        self._tentative: str | None = None
        self._tentative_ms = 0
        self._probs_before_tentative = StateProbs(1.0, 0.0, 0.0)
        self._probs = StateProbs(1.0, 0.0, 0.0)
        # the user's audio where each model needs it, and the last estimate sent
        self._listener = Listener(recognizer, turn_audio, speech, self.settings)
        self._estimated: tuple[float, float | None] | None = None
        self._after_barge_in = False
        # the speech path: what it hears of the user's turn, or of words over the answer
        self.understanding = understanding
        self._speech_pending: list[Float32Array] = []  # heard while a draft answer is open
        self._overlap_speech: list[Float32Array] = []
        self._overlap_probs = StateProbs(1.0, 0.0, 0.0)

    @property
    def lm(self) -> DuplexLM:
        return self._lm

    @property
    def frames_seen(self) -> int:
        return self._next_index

    @property
    def read_at_pauses(self) -> bool:
        return self._read_at_pauses

    def post(self, command: Command) -> None:
        """`handle` from another thread: applied before the next frame (its events go
        out with that frame's)."""
        self._posted.append(command)  # a deque's append and popleft are thread-safe

    def step(self, frame: Frame) -> list[Event]:
        """Consume the next input frame; return its events and maybe one output frame.

        A frame out of order raises ValueError and changes nothing, so the
        driver can report it and go on.
        """
        if not isinstance(frame, Frame):
            raise ValueError(f"session.step takes a Frame, got {type(frame).__name__}")
        if frame.index != self._next_index:
            raise ValueError(
                f"frame {frame.index} arrived, the session expects frame {self._next_index}; "
                "fill gaps with silence"
            )
        posted: list[Event] = []
        while self._posted:
            posted += self.handle(self._posted.popleft())
        vad = self._vad.push(frame)
        self._voice_now = vad.voiced
        self._next_index += 1
        if self._clock_origin is None:
            self._clock_origin = self._clock.now_ms() - frame.end_ms
        started = self._clock.now_ms()
        events: list[Event] = posted
        try:
            events += self._hear(frame, vad)
            self._feed_speech(frame, vad)
            # a tick every tick_ms, and at once when speech stops: that is when a turn ends
            if self._next_index % self._tick_frames == 0 or vad.stopped is not None:
                events += self._tick(frame.end_ms)
            else:
                if self.state is State.LISTENING and not self._utterance_ended:
                    events += self._decide(frame.end_ms)
                    events += self._first_clause(frame.end_ms)
                events += self._read_remote(frame.end_ms)
            if self._clock.now_ms() - started > STALL_MS:
                self._player.catch_up_to = self._timeline(frame.end_ms)
            events += self._play(frame.end_ms, vad)
        except Exception as error:  # a model failed: this turn ends, the session goes on
            events += self._fail_turn(error, frame.end_ms)
        return events

    def _fail_turn(self, error: Exception, now_ms: int) -> list[Event]:
        """End the turn a model call failed in, and listen again.

        Each step of the cleanup may meet the same broken model, so each is tried
        alone; the session's own state is reset whatever they do.
        """
        log.error("a model call failed; the turn ends: %r", error, exc_info=error)
        events: list[Event] = [
            self._event(
                Error, now_ms, code="model_error", message=f"{type(error).__name__}: {error}"
            )
        ]
        response = self._response or self._speculative
        if response is not None:
            with contextlib.suppress(Exception):
                self._player.stop_remote(response)  # the engine may be what broke
            response.remote = False  # tried once: `_end_response` does not try again
        if self._response is not None:
            events += self._end_response("failed", now_ms, now_ms)
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._lm.truncate(self._response.played_text())  # what was heard stays
            elif self._speculative is not None:
                self._lm.cancel_response()
        with contextlib.suppress(Exception):
            if self._response is None:
                self._lm.rewrite_turn("")  # the failed turn's words are dropped
        self._listener.reset()
        if self._record is not None:
            events += self._close_record("failed", now_ms)
        self._move(Move.FAIL)
        self._speculative = None
        self._user_text, self._tentative, self._utterance_ended = "", None, False
        self._overlap_onset = self._overlap_end = None
        self._overlap_text, self._after_barge_in = "", False
        self._estimated = None
        self._speech_pending, self._overlap_speech = [], []
        self._probs = StateProbs(1.0, 0.0, 0.0)
        return events

    # per frame ------------------------------------------------------------

    def _hear(self, frame: Frame, vad: VadStep) -> list[Event]:
        events: list[Event] = []
        if vad.started is None and (self._record is not None or self.state is State.OVERLAP):
            self._listener.keep(frame)  # the turn's sound, for the acoustic estimate
        if vad.started is not None:
            events.append(self._event(SpeechStarted, vad.started))
            # a new turn, or words over the answer
            new_turn = self.state is not State.LISTENING or self._record is None
            self._listener.speech_started(vad.pre_roll, new_turn)
            if self._speculative is not None:
                self._discard_speculation()  # the user goes on: the draft answer is void
            if self.state is State.SPEAKING:
                self._move(Move.TALKED_OVER)
                self._overlap_onset, self._overlap_end, self._overlap_text = vad.started, None, ""
            elif self._record is None:
                self._record = TurnRecord(self._responses + 1, user_onset_ms=vad.started)
        elif vad.in_speech:
            # a frame the VAD keeps in speech only by its lower in-speech threshold, or
            # one whose level is down to the background's, is the fading end of a word:
            # a pause may have begun
            voiced = vad.probability >= self._vad.threshold and not vad.quiet
            events += self._hear_in_speech(frame, voiced)
        if vad.stopped is not None:
            events.append(self._event(SpeechStopped, vad.stopped))
            self._listener.speech_stopped()  # the decode at the pause covers the words
            self._utterance_ended = True
            if self.state is State.OVERLAP:
                self._overlap_end = vad.stopped
            elif self._record is not None:
                self._record.user_last_voiced_ms = vad.stopped
                # when the loop read it: later than the audio says on a busy machine
                self._record.vad_end_ms = self._timeline(frame.end_ms)
        return events

    def _hear_in_speech(self, frame: Frame, voiced: bool) -> list[Event]:
        """Voiced audio goes to the recognizer. A short silence makes it decode at once
        and the rest of the silence waits: if the VAD then ends the utterance, `finish`
        has nothing new to decode, and the final pass is off the end of turn's path."""
        if voiced:
            self._retract_tentative()  # the user goes on
            self._listener.voiced(frame)
            return []
        if self._listener.unvoiced(frame) and not self._already_here(self._vad_end_in(frame)):
            rest = self._recognizer.pause()
            if self._read_at_pauses:
                return self._tentative_end(rest, frame.end_ms)
        return []

    def _vad_end_in(self, frame: Frame) -> int:
        """Audio ms from this frame until the VAD ends the utterance at the earliest (if
        the voice does not come back): its hangover after the last frame it heard as
        voice. Later if it goes on hearing voice; the early work keeps to this bound
        anyway, since under load work done while the VAD still hears voice delays
        turn ends (docs/decisions.md, "Early work at a pause")."""
        last = self._vad.last_voiced_end_ms
        return self._vad.end_ms - (frame.end_ms - last if last is not None else 0)

    def _already_here(self, ahead_ms: int) -> bool:
        """Whether the audio `ahead_ms` past the last frame has already arrived: the
        loop runs that far behind the clock (a busy machine). Work done early, to be
        ready at a moment that is already here, wins nothing: the frames that decide
        are waiting, and they are quick to read."""
        position = self._next_index * FRAME_MS
        return self._timeline(position) - position >= ahead_ms

    def _tentative_end(self, rest: str, now_ms: int) -> list[Event]:
        """The decode at a pause heard `rest` after the stable words. If the turn ends
        here, those are its last words: the LM reads them now, and a likely end starts
        the draft answer while the VAD's hangover still runs (the turn is taken only
        once it ends). If the user goes on, the LM forgets them again."""
        if self.understanding != "text" or self.state is not State.LISTENING:
            return []
        if self._record is None or not rest.strip():
            return []
        words = self._recognizer.stable()  # what this decode agreed on
        events = [self._event(TranscriptDelta, now_ms, text=words)] if words.strip() else []
        events += self._listen_slice(words, now_ms, ended=False)
        if self._speculative is not None:
            return events  # a draft for the words before: the LM is in its answer
        self._probs_before_tentative = self._probs
        self._probs = self._lm.listen_tentatively(rest)
        self._tentative, self._tentative_ms = rest, self._timeline(now_ms)
        probs = self._estimate(now_ms, events)
        if probs.speak >= self.settings.speculate_threshold:
            self._speculate(now_ms)
        return events

    def _hear_ending(self) -> None:
        """How the voice ended, once per pause: the acoustic half of the estimate, begun
        when the VAD ends the utterance (on the model's thread, while the LM reads and
        drafts): a shorter gap between words is no turn's end, and the model is dear
        (200-300 ms a call on 2 AVX2 cores). Not for words the text calls unfinished:
        the sound cannot finish them (`tdm.fuse`)."""
        if sound_can_tell(self._probs, self.settings):
            self._listener.hear_ending()

    def _estimate(self, now_ms: int, events: list[Event], wait: bool = False) -> StateProbs:
        """The words' estimate fused with the sound's, once it is here (`wait`: wait for
        it); a TurnEstimate when either changed."""
        p_audio = self._listener.p_audio(wait)
        probs = fuse(self._probs, p_audio, self.settings)
        if self._estimated != (self._probs.speak, p_audio):
            before = self._estimated[1] if self._estimated else None
            if before is None and p_audio is not None and self._record is not None:
                self._record.turn_audio_ms = self._timeline(now_ms)  # the sound's verdict
            self._estimated = (self._probs.speak, p_audio)
            events.append(
                self._event(
                    TurnEstimate,
                    now_ms,
                    p_text=self._probs.speak,
                    p_audio=p_audio,
                    p_speak=probs.speak,
                )
            )
        return probs

    def _retract_tentative(self) -> None:
        """The LM forgets the words it read at a pause, and a draft answer to them."""
        if self._tentative is None:
            return
        if self._speculative is not None:
            self._discard_speculation()
        self._lm.retract()
        self._tentative, self._probs = None, self._probs_before_tentative

    def _feed_speech(self, frame: Frame, vad: VadStep) -> None:
        """The speech path hears the user's turn from its onset, pauses and the silence
        after it included (that silence is what the head reads as an end), up to the
        longest silence the policy waits; or the words said over the answer."""
        overlap = self.state is State.OVERLAP
        if vad.started is not None and not self._listener.feeding and overlap:
            self._overlap_speech, self._overlap_probs = [], StateProbs(1.0, 0.0, 0.0)
        wanted = overlap or self._record is not None
        for embeddings in self._listener.feed_speech(frame, vad, wanted):
            self._hear_speech(embeddings)

    def _hear_speech(self, embeddings: Float32Array) -> None:
        if self.state is State.OVERLAP:
            self._overlap_speech.append(embeddings)
            self._overlap_probs = self._lm.overlap_speech(np.concatenate(self._overlap_speech))
        elif self.state is State.LISTENING and self._record is not None:
            if self._speculative is not None:  # the LM is inside the draft answer
                self._speech_pending.append(embeddings)
            else:
                self._probs = self._lm.listen_speech(embeddings)

    def _play(self, position_ms: int, vad: VadStep) -> list[Event]:
        response = self._response
        if response is None or self.state is State.LISTENING:
            return []
        response.collect()
        maybe_voice = vad.probability >= self.settings.hold_probability
        if self.settings.hold_on_overlap and (self.state is State.OVERLAP or maybe_voice):
            # the user talks over the answer (or may be starting to, a voiced frame the
            # VAD has not confirmed yet): hold it until yield or dismiss
            return []
        if position_ms < self._player.catch_up_to and response.sent:
            # input that arrived during a stall is heard before more of a playing answer
            # is sent: a user who began to talk meanwhile holds it where it was (an
            # answer's first frame does not wait: the user was silent, that is why)
            return []
        sent = self._player.send(response, position_ms, self._record)
        if sent is not None:
            return [sent]
        if response.finished and not response.queue:
            return self._finish_response(position_ms)
        return []

    def _read_remote(self, now_ms: int) -> list[Event]:
        """An external responder's text arrives at any time: take it every frame."""
        if self._speculative is not None and self._speculative.remote:
            self._speculative.held += self._player.speak(self._speculative, now_ms, self._record)
        response = self._response
        if response is not None and response.remote and self.state is not State.LISTENING:
            return self._player.speak(response, now_ms, self._record)
        return []

    # per tick -------------------------------------------------------------

    def _tick(self, now_ms: int) -> list[Event]:
        words = self._recognizer.stable()
        ended = self._utterance_ended
        if ended:
            words += self._recognizer.finish()
            self._utterance_ended = False
            if self._record is not None and self.state is State.LISTENING:
                self._record.asr_final_ms = self._timeline(now_ms)
        events: list[Event] = []
        if words.strip():
            events.append(self._event(TranscriptDelta, now_ms, text=words))
        if self.state is State.LISTENING:
            events += self._listen_slice(words, now_ms, ended)
        elif self.state is State.OVERLAP:
            events += self._overlap_slice(words, now_ms)
        if self._response is not None and self.state is not State.LISTENING:
            events += self._player.speak(self._response, now_ms, self._record)
        return events

    def _first_clause(self, now_ms: int) -> list[Event]:
        """A turn taken between ticks starts its answer now, not at the next tick."""
        if self.state is not State.SPEAKING or self._response is None:
            return []
        return self._player.speak(self._response, now_ms, self._record)

    def _listen_slice(self, words: str, now_ms: int, ended: bool) -> list[Event]:
        if self._record is None:  # nobody has spoken since the last answer
            return []
        if self._tentative is not None and (words.strip() or ended):
            if ended and words.strip() == self._tentative.strip():
                # the utterance ended with the words the LM read at the pause
                self._user_text += words
                self._tentative, self._record.asr_final_ms = None, self._tentative_ms
                return self._decide(now_ms)
            self._retract_tentative()
        if words.strip() and self._speculative is not None:
            self._discard_speculation()  # the user went on
        self._user_text += words
        if self._speculative is None and self.understanding == "text":
            # while a draft is written, the LM is in the answer
            self._probs = self._lm.listen(words)
        return self._decide(now_ms)

    def _decide(self, now_ms: int) -> list[Event]:
        """While listening: take the turn now? Checked at every tick and, once the
        user's words are all in, at every frame between ticks: only the silence grows."""
        # a voiced frame the VAD has not yet called speech may be the user going on
        if self._record is None or self._vad.in_speech or self._voice_now:
            return []
        if not self._said_something(self._record):  # a cough or a click: no turn
            self._record, self._listener.feeding = None, False
            return []
        if self._record.user_last_voiced_ms is None:  # typed words wait for `respond`
            return []
        self._hear_ending()
        events: list[Event] = []
        probs = self._estimate(now_ms, events)
        silence = now_ms - self._record.user_last_voiced_ms
        # who interrupts goes on ("Wait. Stop. What about Spain?"): room for it
        room = self.settings.after_barge_in_silence_ms if self._after_barge_in else 0
        if silence >= room and self.policy.take_turn(probs, silence):
            ending = self._listener.ending
            if ending is not None and not ending.done():
                # the sound's verdict is still coming, and it may hold the turn: wait
                probs = self._estimate(now_ms, events, wait=True)
            if self.policy.take_turn(probs, silence):
                return events + self._take_turn(probs, silence, now_ms)
        likely = probs.speak >= self.settings.speculate_threshold
        if self._speculative is None and likely:
            needed = max(room, round(self.policy.required_silence_ms(probs.speak)))
            if not self._already_here(needed - silence):  # else the turn's frame is here
                self._speculate(now_ms)
        return events

    def _speculate(self, now_ms: int) -> None:
        """Likely the end: write and synthesize the start of the answer while silence runs."""
        self._speculative = self._begin_answer(Response(self._responses + 1))
        self._speculative.held = self._player.speak(self._speculative, now_ms, self._record)

    def _said_something(self, record: TurnRecord) -> bool:
        """Words, or with speech understanding alone, voice long enough to be words."""
        if self._user_text.strip():
            return True
        onset, end = record.user_onset_ms, record.user_last_voiced_ms
        if self.understanding != "speech" or onset is None or end is None:
            return False
        return end - onset >= MIN_TURN_SPEECH_MS

    def _begin_answer(self, response: Response) -> Response:
        self._last_response = None  # the one before can no longer be cut
        if self.understanding == "speech":
            # answered straight after speech positions the LM says back what it heard
            # (the adapter was trained to transcribe): it writes down what it read first,
            # and answers that; a draft dropped for more speech keeps its words
            self._user_text = f"{self._user_text} {self._lm.transcribe_heard()}".strip()
        if self.understanding != "text":
            self._lm.rewrite_turn(self._user_text)  # heard as speech, answered from words
        self._lm.begin_response()
        self._player.start_remote(response)
        return response

    def _discard_speculation(self) -> None:
        assert self._speculative is not None
        self._player.stop_remote(self._speculative)
        self._lm.cancel_response()
        self._speculative = None
        if self._speech_pending:  # what the speech path heard meanwhile joins the turn
            self._probs = self._lm.listen_speech(np.concatenate(self._speech_pending))
            self._speech_pending = []
        if self._record is not None:
            self._record.first_token_ms = self._record.first_tts_audio_ms = None

    def _take_turn(self, probs: StateProbs, silence: int, now_ms: int) -> list[Event]:
        assert self._record is not None
        self._responses += 1
        response = self._speculative or self._begin_answer(Response(self._responses))
        self._speculative = None
        self._speech_pending = []
        self._record.response_id = response.id
        self._record.decision_ms = self._timeline(now_ms)
        self._after_barge_in = False
        self._listener.turn_taken()
        self._estimated = None
        events = [
            self._event(TranscriptFinal, now_ms, text=self._user_text.strip()),
            self._event(
                TurnTaken,
                now_ms,
                response_id=response.id,
                p_speak=probs.speak,
                silence_ms=silence,
                required_silence_ms=round(self.policy.required_silence_ms(probs.speak)),
            ),
            *response.held,
        ]
        response.held = []
        self._user_text = ""
        self._response = response
        self._move(Move.TAKE_TURN)
        return events

    def _overlap_slice(self, words: str, now_ms: int) -> list[Event]:
        assert self._response is not None and self._overlap_onset is not None
        self._overlap_text += words
        ended = not self._vad.in_speech
        if self.understanding != "text":
            probs = self._overlap_probs  # the speech path's reading, chunk by chunk
            if asks_to_stop(self._overlap_text):
                probs = _STOP_WORD  # the recognizer's "wait": the head may hear an "uh-huh"
        else:
            probs = self._lm.overlap(self._overlap_text)
            unsure = self._recognizer.last_confidence < self.settings.min_overlap_confidence
            if unsure and not asks_to_stop(self._overlap_text):
                # the recognizer guessed words for a sound: not words to yield to
                probs = StateProbs(probs.listen + probs.speak, 0.0, probs.dismiss)
        overlap_ms = (
            self._overlap_end if ended and self._overlap_end else now_ms
        ) - self._overlap_onset
        decision = self.policy.on_overlap(probs, overlap_ms, ended)
        speech = self._overlap_speech if self.understanding == "speech" else []
        if decision is OverlapDecision.DISMISS and speech:
            # about to be dismissed: what the LM reads in it, once ("wait, stop." is no
            # "uh-huh"); a yield never waits for this decode
            self._overlap_text = self._lm.overlap_words(np.concatenate(speech))
            if asks_to_stop(self._overlap_text):
                decision = self.policy.on_overlap(_STOP_WORD, overlap_ms, ended)
        if decision is OverlapDecision.YIELD:
            return self._yield(now_ms)
        if decision is OverlapDecision.DISMISS:
            if self._record is not None:
                self._record.backchannels += 1
            held = self.settings.hold_on_overlap and not self._response.finished
            event = self._event(
                BackchannelIgnored,
                now_ms,
                response_id=self._response.id,
                text=self._overlap_text.strip(),
                onset_ms=self._overlap_onset,
                held_ms=max(0, self._timeline(now_ms) - self._player.output_end) if held else 0,
            )
            self._move(Move.DISMISS)
            self._overlap_onset, self._overlap_text = None, ""
            self._listener.feeding, self._overlap_speech = False, []
            return [event]
        return []

    def _yield(self, now_ms: int) -> list[Event]:
        """Barge-in: stop output now, keep only what was heard, the user has the turn."""
        onset = self._overlap_onset
        assert onset is not None
        if self._record is not None:
            self._record.barge_in_onset_ms = onset
        events = self._stop_output("interrupted", now_ms, onset)
        self._continue_user_turn(onset, Move.YIELD)
        self._after_barge_in = True  # the new turn began by interrupting
        return events

    def _stop_output(
        self, status: str, now_ms: int, onset: int, heard_ms: int | None = None
    ) -> list[Event]:
        """Stop the answer where playout is, keep only what was heard in the LM
        (the first `heard_ms` of it, where the client says so)."""
        response = self._response
        assert response is not None
        played_text, stopped = self._player.stop(response, now_ms, heard_ms)
        self._lm.truncate(played_text)
        event = self._event(
            Interrupted,
            now_ms,
            response_id=response.id,
            played_ms=response.played_ms,
            played_text=played_text,
            onset_ms=onset,
            stopped_ms=stopped,
        )
        return [event, *self._end_response(status, now_ms, stopped)]

    # a client's explicit requests, run between frames ---------------------------

    def handle(self, command: Command) -> list[Event]:
        """Apply a driver's command between frames; its events.

        A request the session cannot honour now (an answer while one is in
        progress) is an `error` event; the session goes on.
        """
        match command:
            case Respond():
                try:
                    return self.respond()
                except ValueError as error:  # one is in progress: it goes on
                    code = "response_in_progress"
                    return [self._event(Error, self.position_ms, code=code, message=str(error))]
            case Cancel(heard_ms):
                return self.cancel(heard_ms)
            case Truncate(heard_ms):
                return self.truncate(heard_ms)
            case Commit():
                return self.commit()
            case ClearInput():
                self.clear_input()
            case AddUserText(text, echo):
                events = self.add_user_text(text)
                return events if echo else [e for e in events if not isinstance(e, TranscriptDelta)]
            case SetInstructions(text):
                self.set_instructions(text)
            case SetPolicy(policy):
                self.policy = policy
            case SetOutputDelay(ms):
                self._player.output_delay_ms = ms
            case ShareCores(read_at_pauses, read_threads):
                self._read_at_pauses = read_at_pauses
                self._lm.read_threads = read_threads
            case _:
                raise ValueError(f"not a session command: {command!r}")
        return []

    @property
    def position_ms(self) -> int:
        """The input timeline position: the end of the last frame taken."""
        return self._next_index * FRAME_MS

    def add_user_text(self, text: str) -> list[Event]:
        """A typed message joins the user's open turn, as if it had been heard.

        Typed words never end a turn by silence: `respond` does (or speech that
        follows). Typing over an answer cancels it first.
        """
        now = self.position_ms
        events = self.cancel() if self._response is not None else []
        self._retract_tentative()
        if self._speculative is not None:
            self._discard_speculation()
        words = text.strip()
        if not words:
            return events
        if self._record is None:
            self._record = TurnRecord(self._responses + 1, user_onset_ms=now)
        words = (" " if self._user_text.strip() else "") + words
        self._user_text += words
        self._probs = self._lm.listen(words)
        return [*events, self._event(TranscriptDelta, now, text=words)]

    def respond(self) -> list[Event]:
        """Take the turn now, whatever the policy says (a client's explicit request)."""
        now = self.position_ms
        if self._response is not None:
            raise ValueError("a response is already in progress; cancel it first")
        self._retract_tentative()  # words the recognizer has not finished are not the turn's
        if self._record is None:
            self._record = TurnRecord(self._responses + 1, user_onset_ms=now)
        silence = now - (self._record.user_last_voiced_ms or now)
        events = self._take_turn(self._probs, silence, now)
        return (
            events + self._player.speak(self._response, now, self._record)
            if self._response
            else events
        )

    def commit(self) -> list[Event]:
        """End the user's utterance now (manual turns): its words join the open turn."""
        self._retract_tentative()  # the LM reads the final words instead
        words = self._recognizer.finish()
        self._utterance_ended = False
        if not words.strip():
            return []
        if self._record is None:
            self._record = TurnRecord(self._responses + 1, user_onset_ms=self.position_ms)
        self._user_text += words
        if self._speculative is None:
            self._probs = self._lm.listen(words)
        return [self._event(TranscriptDelta, self.position_ms, text=words)]

    def clear_input(self) -> None:
        """Drop the utterance being recognized (words not yet heard by the LM)."""
        self._retract_tentative()
        self._recognizer.reset()
        self._utterance_ended = False

    def truncate(self, heard_ms: int) -> list[Event]:
        """The user heard only the first `heard_ms` of the latest answer (the client
        plays the audio and says so): one still playing stops, and the LM keeps just
        those words. A finished answer can be cut until the user's next turn begins."""
        if self._response is not None:
            return self.cancel(heard_ms)
        if self._last_response is not None:
            self._lm.truncate(self._last_response.heard_within(heard_ms))
        return []

    def close(self) -> None:
        """The conversation is over: an external responder's stream closes now."""
        self._player.close()

    def set_instructions(self, text: str) -> None:
        """A new system prompt for the rest of the conversation (between answers)."""
        self._lm.set_instructions(text)

    def cancel(self, heard_ms: int | None = None) -> list[Event]:
        """Stop the answer being written or played; the LM keeps what was heard, or the
        words of its first `heard_ms` where the client plays the audio and says so."""
        now = self.position_ms
        if self._speculative is not None:
            self._discard_speculation()
        if self._response is None:
            return []
        onset = self._overlap_onset
        events = self._stop_output("cancelled", now, now, heard_ms)
        if onset is not None:
            self._continue_user_turn(onset, Move.END)  # the user is talking: their turn goes on
        else:
            self._move(Move.END)
        return events

    # turn bookkeeping -------------------------------------------------------

    def _end_response(self, status: str, position_ms: int, stopped_ms: int) -> list[Event]:
        response = self._response
        assert response is not None
        self._player.stop_remote(response)  # a barge-in closes the engine's stream at once
        events: list[Event] = [
            self._event(
                ResponseDone,
                position_ms,
                response_id=response.id,
                status=status,
                played_ms=response.played_ms,
                text=response.played_text(),
            )
        ]
        if self._record is not None:
            self._record.output_stopped_ms = stopped_ms
            events += self._close_record(status, position_ms)
        return events

    def _finish_response(self, position_ms: int) -> list[Event]:
        events = self._end_response("completed", position_ms, self._player.output_end)
        self._last_response = self._response
        if self.state is State.OVERLAP and self._overlap_onset is not None:
            self._continue_user_turn(self._overlap_onset, Move.END)  # the user was talking
        else:
            self._move(Move.END)
        return events

    def _continue_user_turn(self, onset: int, move: Move) -> None:
        """The words said over the answer open the next user turn."""
        self._move(move)
        self._record = TurnRecord(self._responses + 1, user_onset_ms=onset)
        if self._overlap_end is not None:
            self._record.user_last_voiced_ms = self._overlap_end
        self._user_text, self._overlap_text = self._overlap_text, ""
        self._overlap_onset = self._overlap_end = None
        self._lm.listen(self._user_text)
        if self._overlap_speech:  # the speech path heard the words said over the answer
            self._probs = self._lm.listen_speech(np.concatenate(self._overlap_speech))
            self._overlap_speech = []

    def _close_record(self, outcome: str, position_ms: int) -> list[Event]:
        record, self._record = self._record, None
        assert record is not None
        record.outcome = outcome
        return [self._event(TurnMetrics, position_ms, record=record)]

    # helpers ----------------------------------------------------------------

    def _move(self, move: Move) -> None:
        """Whose turn it is, by the table (`tdm.TRANSITIONS`); an answer exists only while
        the assistant has the turn."""
        self.state = after(self.state, move)
        if self.state is State.LISTENING:
            self._response = None

    def _timeline(self, position_ms: int) -> int:
        """The later of the audio position and where the clock says we are."""
        if self._clock_origin is None:
            return position_ms
        return max(position_ms, round(self._clock.now_ms() - self._clock_origin))

    def _event(self, kind: type[Event], audio_ms: int, **fields: Any) -> Event:
        return kind(audio_ms=audio_ms, clock_ms=self._clock.now_ms(), **fields)
