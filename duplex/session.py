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
    AddToolResult,
    AddUserText,
    Cancel,
    ClearInput,
    Command,
    Commit,
    Respond,
    SetAudioOutput,
    SetInstructions,
    SetOutputDelay,
    SetPolicy,
    SetTools,
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
    TurnMetrics,
)
from duplex.listener import Listener
from duplex.overlap import Overlap
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
)
from duplex.turn import UserTurn
from duplex.vad import VadStep, VadTracker

log = logging.getLogger(__name__)

STALL_MS = FRAME_MS  # a step that took longer than this stalled: input arrived meanwhile
UNDERSTANDING = ("text", "speech", "both")  # how the LM hears the user


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
        # the user's audio where each model needs it, and their open turn
        self._listener = Listener(recognizer, turn_audio, speech, self.settings)
        self.understanding = understanding
        self._turn = UserTurn(
            lm, self._listener, self._player, self.settings, understanding,
            self._timeline, self._event,
        )  # fmt: skip
        # the assistant's answer and the user's voice over it
        self._response: Response | None = None
        self._overlap: Overlap | None = None

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
        turn = self._turn
        response = self._response or turn.draft
        if response is not None:
            with contextlib.suppress(Exception):
                self._player.stop_remote(response)  # the engine may be what broke
            response.remote = False  # tried once: `_end_response` does not try again
        if self._response is not None:
            events += self._end_response("failed", now_ms, now_ms)
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._lm.truncate(self._response.played_text())  # what was heard stays
            elif turn.draft is not None:
                self._lm.cancel_response()
        with contextlib.suppress(Exception):
            if self._response is None:
                self._lm.rewrite_turn("")  # the failed turn's words are dropped
        self._listener.reset()
        if turn.record is not None:
            events += self._close_record("failed", now_ms)
        self._move(Move.FAIL)
        turn.reset()
        self._overlap, self._utterance_ended = None, False
        return events

    # per frame ------------------------------------------------------------

    def _hear(self, frame: Frame, vad: VadStep) -> list[Event]:
        events: list[Event] = []
        turn = self._turn
        if vad.started is None and (turn.record is not None or self._overlap is not None):
            self._listener.keep(frame)  # the turn's sound, for the acoustic estimate
        if vad.started is not None:
            events.append(self._event(SpeechStarted, vad.started))
            # a new turn, or words over the answer
            new_turn = self.state is not State.LISTENING or turn.record is None
            self._listener.speech_started(vad.pre_roll, new_turn)
            if turn.draft is not None:
                turn.discard_draft()  # the user goes on: the draft answer is void
            if self.state is State.SPEAKING:
                self._move(Move.TALKED_OVER)
                self._overlap = Overlap(vad.started)
            else:
                turn.open(vad.started)
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
            if self._overlap is not None:
                self._overlap.end_ms = vad.stopped
            elif turn.record is not None:
                turn.record.user_last_voiced_ms = vad.stopped
                # when the loop read it: later than the audio says on a busy machine
                turn.record.vad_end_ms = self._timeline(frame.end_ms)
        return events

    def _hear_in_speech(self, frame: Frame, voiced: bool) -> list[Event]:
        """Voiced audio goes to the recognizer. A short silence makes it decode at once
        and the rest of the silence waits: if the VAD then ends the utterance, `finish`
        has nothing new to decode, and the final pass is off the end of turn's path."""
        if voiced:
            self._turn.retract()  # the user goes on
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
        """The decode at a pause heard `rest` after the stable words: the LM reads
        them tentatively (`UserTurn.read_tentatively`)."""
        if self.understanding != "text" or self.state is not State.LISTENING:
            return []
        if self._turn.record is None or not rest.strip():
            return []
        words = self._recognizer.stable()  # what this decode agreed on
        events = [self._event(TranscriptDelta, now_ms, text=words)] if words.strip() else []
        self._turn.hear(words, ended=False)  # inside speech: no turn is taken here
        self._turn.read_tentatively(rest, now_ms, events)
        return events

    def _feed_speech(self, frame: Frame, vad: VadStep) -> None:
        """The speech path hears the user's turn from its onset, pauses and the silence
        after it included (that silence is what the head reads as an end), up to the
        longest silence the policy waits; or the words said over the answer."""
        if vad.started is not None and not self._listener.feeding and self._overlap:
            self._overlap.restart_speech()
        wanted = self._overlap is not None or self._turn.record is not None
        for embeddings in self._listener.feed_speech(frame, vad, wanted):
            self._hear_speech(embeddings)

    def _hear_speech(self, embeddings: Float32Array) -> None:
        if self._overlap is not None:
            self._overlap.hear_speech(embeddings, self._lm)
        elif self.state is State.LISTENING and self._turn.record is not None:
            self._turn.hear_speech(embeddings)

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
        sent = self._player.send(response, position_ms, self._turn.record)
        if sent is not None:
            return [sent]
        if response.finished and not response.queue:
            return self._finish_response(position_ms)
        return []

    def _read_remote(self, now_ms: int) -> list[Event]:
        """An external responder's text arrives at any time: take it every frame."""
        draft, record = self._turn.draft, self._turn.record
        if draft is not None and draft.remote:
            draft.held += self._player.speak(draft, now_ms, record)
        response = self._response
        if response is not None and response.remote and self.state is not State.LISTENING:
            return self._player.speak(response, now_ms, record)
        return []

    # per tick -------------------------------------------------------------

    def _tick(self, now_ms: int) -> list[Event]:
        words = self._recognizer.stable()
        ended = self._utterance_ended
        if ended:
            words += self._recognizer.finish()
            self._utterance_ended = False
            if self._turn.record is not None and self.state is State.LISTENING:
                self._turn.record.asr_final_ms = self._timeline(now_ms)
        events: list[Event] = []
        if words.strip():
            events.append(self._event(TranscriptDelta, now_ms, text=words))
        if self.state is State.LISTENING and self._turn.record is not None:
            self._turn.hear(words, ended)
            events += self._decide(now_ms)
        elif self.state is State.OVERLAP:
            events += self._overlap_slice(words, now_ms)
        if self._response is not None and self.state is not State.LISTENING:
            events += self._player.speak(self._response, now_ms, self._turn.record)
        return events

    def _first_clause(self, now_ms: int) -> list[Event]:
        """A turn taken between ticks starts its answer now, not at the next tick."""
        if self.state is not State.SPEAKING or self._response is None:
            return []
        return self._player.speak(self._response, now_ms, self._turn.record)

    def _decide(self, now_ms: int) -> list[Event]:
        """While listening: take the turn now? Checked at every tick and, once the
        user's words are all in, at every frame between ticks: only the silence grows."""
        turn = self._turn
        record = turn.record
        # a voiced frame the VAD has not yet called speech may be the user going on
        if record is None or self._vad.in_speech or self._voice_now:
            return []
        if not turn.said_something():  # a cough or a click: no turn
            turn.record, self._listener.feeding = None, False
            return []
        if record.user_last_voiced_ms is None:  # typed words wait for `respond`
            return []
        turn.hear_ending()
        events: list[Event] = []
        probs = turn.estimate(now_ms, events)
        silence = now_ms - record.user_last_voiced_ms
        # who interrupts goes on ("Wait. Stop. What about Spain?"): room for it
        room = self.settings.after_barge_in_silence_ms if turn.after_barge_in else 0
        if silence >= room and self.policy.take_turn(probs, silence):
            ending = self._listener.ending
            if ending is not None and not ending.done():
                # the sound's verdict is still coming, and it may hold the turn: wait
                probs = turn.estimate(now_ms, events, wait=True)
            if self.policy.take_turn(probs, silence):
                return events + self._take_turn(probs, silence, now_ms)
        likely = probs.speak >= self.settings.speculate_threshold
        if turn.draft is None and likely:
            needed = max(room, round(self.policy.required_silence_ms(probs.speak)))
            if not self._already_here(needed - silence):  # else the turn's frame is here
                turn.start_draft(now_ms)
        return events

    def _take_turn(
        self,
        probs: StateProbs,
        silence: int,
        now_ms: int,
        request: Respond | None = None,
    ) -> list[Event]:
        turn = self._turn
        self._response, events = turn.take(probs, silence, now_ms, self.policy, request)
        self._move(Move.TAKE_TURN)
        return events

    def _overlap_slice(self, words: str, now_ms: int) -> list[Event]:
        overlap, response = self._overlap, self._response
        assert overlap is not None and response is not None
        overlap.text += words
        confidence = self._recognizer.last_confidence
        ended = not self._vad.in_speech
        decision = overlap.decide(
            self._lm, confidence, self.policy, self.settings, self.understanding, now_ms, ended
        )
        if decision is OverlapDecision.YIELD:
            return self._yield(now_ms)
        if decision is OverlapDecision.DISMISS:
            if self._turn.record is not None:
                self._turn.record.backchannels += 1
            held = self.settings.hold_on_overlap and not response.finished
            event = self._event(
                BackchannelIgnored,
                now_ms,
                response_id=response.id,
                text=overlap.text.strip(),
                onset_ms=overlap.onset_ms,
                held_ms=max(0, self._timeline(now_ms) - self._player.output_end) if held else 0,
            )
            self._move(Move.DISMISS)
            self._overlap, self._listener.feeding = None, False
            return [event]
        return []

    def _yield(self, now_ms: int) -> list[Event]:
        """Barge-in: stop output now, keep only what was heard, the user has the turn."""
        assert self._overlap is not None
        onset = self._overlap.onset_ms
        if self._turn.record is not None:
            self._turn.record.barge_in_onset_ms = onset
        events = self._stop_output("interrupted", now_ms, onset)
        self._continue_user_turn(Move.YIELD)
        self._turn.after_barge_in = True  # the new turn began by interrupting
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
                    return self.respond(command)
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
            case SetTools(tools):
                self._turn.tools = tools
            case SetAudioOutput(enabled):
                self._turn.audio = enabled
            case AddToolResult(call_id, output):
                return self.add_tool_result(call_id, output)
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
        turn = self._turn
        turn.retract()
        if turn.draft is not None:
            turn.discard_draft()
        words = text.strip()
        if not words:
            return events
        turn.open(now)
        words = (" " if turn.text.strip() else "") + words
        turn.add_text(words)
        return [*events, self._event(TranscriptDelta, now, text=words)]

    def respond(self, request: Respond | None = None) -> list[Event]:
        """Take the turn now, whatever the policy says (a client's explicit request);
        `request` may give the answer its own tools, output and instructions."""
        now = self.position_ms
        if self._response is not None:
            raise ValueError("a response is already in progress; cancel it first")
        self._turn.retract()  # words the recognizer has not finished are not the turn's
        record = self._turn.open(now)
        silence = now - (record.user_last_voiced_ms or now)
        events = self._take_turn(self._turn.probs, silence, now, request)
        assert self._response is not None
        return events + self._player.speak(self._response, now, record)

    def commit(self) -> list[Event]:
        """End the user's utterance now (manual turns): its words join the open turn."""
        self._turn.retract()  # the LM reads the final words instead
        words = self._recognizer.finish()
        self._utterance_ended = False
        if not words.strip():
            return []
        self._turn.open(self.position_ms)
        self._turn.add_text(words)
        return [self._event(TranscriptDelta, self.position_ms, text=words)]

    def add_tool_result(self, call_id: str, output: str) -> list[Event]:
        """A function's output joins the conversation; the next answer (`respond`)
        is written from it. Not while an answer is in progress."""
        if self._response is not None:
            message = "a function's output joins between answers; cancel the answer first"
            return [
                self._event(Error, self.position_ms, code="response_in_progress", message=message)
            ]
        self._turn.retract()
        if self._turn.draft is not None:
            self._turn.discard_draft()
        self._lm.add_tool_result(call_id, output)
        return []

    def clear_input(self) -> None:
        """Drop the utterance being recognized (words not yet heard by the LM)."""
        self._turn.retract()
        self._recognizer.reset()
        self._utterance_ended = False

    def truncate(self, heard_ms: int) -> list[Event]:
        """The user heard only the first `heard_ms` of the latest answer (the client
        plays the audio and says so): one still playing stops, and the LM keeps just
        those words. A finished answer can be cut until the user's next turn begins."""
        if self._response is not None:
            return self.cancel(heard_ms)
        if self._turn.last_response is not None:
            self._lm.truncate(self._turn.last_response.heard_within(heard_ms))
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
        if self._turn.draft is not None:
            self._turn.discard_draft()
        if self._response is None:
            return []
        events = self._stop_output("cancelled", now, now, heard_ms)
        if self._overlap is not None:
            self._continue_user_turn(Move.END)  # the user is talking: their turn goes on
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
        if self._turn.record is not None:
            self._turn.record.output_stopped_ms = stopped_ms
            events += self._close_record(status, position_ms)
        return events

    def _finish_response(self, position_ms: int) -> list[Event]:
        events = self._end_response("completed", position_ms, self._player.output_end)
        self._turn.last_response = self._response
        if self._overlap is not None:
            self._continue_user_turn(Move.END)  # the user was talking
        else:
            self._move(Move.END)
        return events

    def _continue_user_turn(self, move: Move) -> None:
        """The words said over the answer open the next user turn."""
        overlap, self._overlap = self._overlap, None
        assert overlap is not None
        self._move(move)
        turn = self._turn
        turn.open(overlap.onset_ms).user_last_voiced_ms = overlap.end_ms
        turn.text = overlap.text
        self._lm.listen(turn.text)
        if overlap.speech:  # the speech path heard the words said over the answer
            turn.probs = self._lm.listen_speech(np.concatenate(overlap.speech))

    def _close_record(self, outcome: str, position_ms: int) -> list[Event]:
        record, self._turn.record = self._turn.record, None
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
