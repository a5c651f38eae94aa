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

The output frame returned by `step` for input frame i is played from
20 i + 20 ms; `timeline` says how marks read the clock.
"""

from __future__ import annotations

import logging
from collections import deque

from duplex.audio import FRAME_MS, Frame
from duplex.clock import Clock
from duplex.commands import (
    AddMessage,
    AddToolResult,
    AddUserText,
    Cancel,
    ClearInput,
    Command,
    Commit,
    DeleteItem,
    Respond,
    SetAudioOutput,
    SetInstructions,
    SetMaxTokens,
    SetOutputDelay,
    SetPolicy,
    SetSpeed,
    SetTools,
    ShareCores,
    Truncate,
)
from duplex.config import PolicySettings
from duplex.events import Error, Event, SpeechStarted, SpeechStopped, TranscriptDelta
from duplex.floor import Floor
from duplex.listener import Listener
from duplex.playout import Player
from duplex.ports import (
    DuplexLM,
    Recognizer,
    Responder,
    SpeechListener,
    StateProbs,
    Synthesizer,
    TurnEndAudio,
)
from duplex.tdm import Move, Policy, State, TurnPolicy
from duplex.timeline import Timeline
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
        self._tick_frames = self.settings.tick_ms // FRAME_MS
        self._next_index = 0
        self._timeline = Timeline(clock)
        self._player = Player(lm, synthesizer, responder, self.settings, self._timeline)
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
            lm, self._listener, self._player, self.settings, understanding, self._timeline
        )
        self._floor = Floor(
            lm, recognizer, vad, self._listener, self._player, self._turn, self.settings,
            understanding, self._timeline,
        )  # fmt: skip

    @property
    def lm(self) -> DuplexLM:
        return self._lm

    @property
    def state(self) -> State:
        """Whose turn it is."""
        return self._floor.state

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
        self._timeline.start(frame.end_ms)
        started = self._timeline.now_ms()
        events: list[Event] = posted
        try:
            events += self._hear(frame, vad)
            self._floor.feed_speech(frame, vad)
            # a tick every tick_ms, and at once when speech stops: that is when a turn ends
            if self._next_index % self._tick_frames == 0 or vad.stopped is not None:
                events += self._tick(frame.end_ms)
            else:
                if not self._floor.speaking and not self._utterance_ended:
                    events += self._decide(frame.end_ms)
                    events += self._floor.speak(frame.end_ms)  # a turn just taken
                events += self._floor.read_remote(frame.end_ms)
            if self._timeline.now_ms() - started > STALL_MS:
                self._player.catch_up_to = self._timeline.at(frame.end_ms)
            events += self._floor.play(frame.end_ms, vad, self.policy)
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
            self._timeline.event(
                Error, now_ms, code="model_error", message=f"{type(error).__name__}: {error}"
            )
        ]
        if self._floor.response is not None:
            events += self._floor.fail(now_ms)
        else:
            events += self._turn.fail(now_ms)
        self._listener.reset()
        self._floor.move(Move.FAIL)
        self._turn.reset()
        self._utterance_ended = False
        return events

    # per frame ------------------------------------------------------------

    def _hear(self, frame: Frame, vad: VadStep) -> list[Event]:
        events: list[Event] = []
        turn, floor = self._turn, self._floor
        if vad.started is None and (turn.record is not None or floor.overlap is not None):
            self._listener.keep(frame)  # the turn's sound, for the acoustic estimate
        if vad.started is not None:
            events.append(self._timeline.event(SpeechStarted, vad.started))
            # a new turn, or words over the answer
            new_turn = floor.speaking or turn.record is None
            self._listener.speech_started(vad.pre_roll, new_turn)
            if turn.draft is not None:
                turn.discard_draft()  # the user goes on: the draft answer is void
            if floor.state is State.SPEAKING:
                floor.talked_over(vad.started)
            else:
                turn.open(vad.started)
        elif vad.in_speech:
            # a frame the VAD keeps in speech only by its lower in-speech threshold, or
            # one whose level is down to the background's, is the fading end of a word:
            # a pause may have begun
            voiced = vad.probability >= self._vad.threshold and not vad.quiet
            events += self._hear_in_speech(frame, voiced)
        if vad.stopped is not None:
            events.append(self._timeline.event(SpeechStopped, vad.stopped))
            self._listener.speech_stopped()  # the decode at the pause covers the words
            self._utterance_ended = True
            if floor.overlap is not None:
                floor.overlap.end_ms = vad.stopped
            elif turn.record is not None:
                turn.record.user_last_voiced_ms = vad.stopped
                # when the loop read it: later than the audio says on a busy machine
                turn.record.vad_end_ms = self._timeline.at(frame.end_ms)
        return events

    def _hear_in_speech(self, frame: Frame, voiced: bool) -> list[Event]:
        """Voiced audio goes to the recognizer. A short silence makes it decode at once
        and the rest of the silence waits: if the VAD then ends the utterance, `finish`
        has nothing new to decode, and the final pass is off the end of turn's path."""
        if voiced:
            self._turn.retract()  # the user goes on
            self._listener.voiced(frame)
            return []
        pause = self._listener.unvoiced(frame)  # the frame to decode the pause at
        # not sooner than the VAD could end the utterance: under load, work done while it
        # still hears voice delays turn ends (docs/decisions.md, "Early work at a pause")
        if pause and not self._arrived(self._vad.end_in(frame.end_ms)):
            rest = self._recognizer.pause()
            if self._read_at_pauses:
                return self._tentative_end(rest, frame.end_ms)
        return []

    def _tentative_end(self, rest: str, now_ms: int) -> list[Event]:
        """The decode at a pause heard `rest` after the stable words: the LM reads
        them tentatively (`UserTurn.read_tentatively`)."""
        if self.understanding != "text" or self._floor.speaking:
            return []
        if self._turn.record is None or not rest.strip():
            return []
        words = self._recognizer.stable()  # what this decode agreed on
        events = (
            [self._timeline.event(TranscriptDelta, now_ms, text=words)] if words.strip() else []
        )
        self._turn.hear(words, ended=False)  # inside speech: no turn is taken here
        self._turn.read_tentatively(rest, now_ms, events, self.policy.answers)
        return events

    # per tick -------------------------------------------------------------

    def _tick(self, now_ms: int) -> list[Event]:
        words = self._recognizer.stable()
        ended = self._utterance_ended
        if ended:
            words += self._recognizer.finish()
            self._utterance_ended = False
            if self._turn.record is not None and not self._floor.speaking:
                self._turn.record.asr_final_ms = self._timeline.at(now_ms)
        events: list[Event] = []
        if words.strip():
            events.append(self._timeline.event(TranscriptDelta, now_ms, text=words))
        if not self._floor.speaking and self._turn.record is not None:
            self._turn.hear(words, ended)
            events += self._decide(now_ms)
        elif self._floor.state is State.OVERLAP:
            events += self._floor.hear_over(words, now_ms, self.policy)
        events += self._floor.speak(now_ms)
        return events

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
                if not self.policy.answers:  # the client answers it (`Respond`)
                    return events + turn.commit(now_ms)
                return events + self._take_turn(probs, silence, now_ms, Respond())
        likely = probs.speak >= self.settings.speculate_threshold and self.policy.answers
        if turn.draft is None and likely:
            needed = max(room, round(self.policy.required_silence_ms(probs.speak)))
            if not self._arrived(needed - silence):  # else the turn's frame is here
                turn.start_draft(now_ms)
        return events

    def _take_turn(self, probs: StateProbs, silence: int, now: int, asked: Respond) -> list[Event]:
        response, events = self._turn.take(probs, silence, now, self.policy, asked)
        self._floor.take(response)
        return events

    # a client's explicit requests, run between frames ---------------------------

    def handle(self, command: Command) -> list[Event]:
        """Apply a driver's command between frames; its events.

        A request the session cannot honour now (an answer while one is in
        progress) is an `error` event; the session goes on.
        """
        now, turn = self.position_ms, self._turn
        match command:
            case Respond():
                return self._respond(command)
            case Cancel(heard_ms):
                return self._cancel(heard_ms)
            case Truncate(heard_ms):
                # the user heard only the first `heard_ms` of the latest answer: one still
                # playing stops; a finished one is cut until the user's next turn begins
                if self._floor.response is not None:
                    return self._cancel(heard_ms)
                if turn.last_response is not None:
                    self._lm.truncate(turn.last_response.heard_within(heard_ms))
            case Commit():  # manual turns: the utterance ends now
                self._utterance_ended = False
                return turn.finish_utterance(now)
            case ClearInput():
                turn.retract()  # the utterance being recognized is dropped
                self._recognizer.reset()
                self._utterance_ended = False
            case AddUserText(text, echo, item):
                # typing over an answer cancels it first
                events = self._cancel() if self._floor.response is not None else []
                events += turn.type_text(text, now, item)
                return events if echo else [e for e in events if not isinstance(e, TranscriptDelta)]
            case AddToolResult() | AddMessage() | DeleteItem() if self._floor.response is not None:
                message = "items join and leave between answers; cancel the answer first"
                return [
                    self._timeline.event(Error, now, code="response_in_progress", message=message)
                ]
            case AddToolResult(call_id, output, item):
                turn.add_tool_result(call_id, output, item)
            case AddMessage(role, text, item):
                turn.add_message(role, text, item)
            case DeleteItem(item):
                return turn.forget(item, now)
            case SetInstructions(text):
                self._lm.set_instructions(text)
            case SetTools(tools):
                turn.tools = tools
            case SetAudioOutput(enabled):
                turn.audio = enabled
            case SetMaxTokens(tokens):
                turn.max_tokens = tokens
            case SetPolicy(policy):
                self.policy = policy
            case SetOutputDelay(ms):
                self._player.output_delay_ms = ms
            case SetSpeed(speed):
                self._player.speed = speed
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

    def _arrived(self, ahead_ms: int) -> bool:
        """Whether the audio `ahead_ms` past the last frame has already arrived. Work done
        early, to be ready at a moment already here, wins nothing: the frames that decide
        are waiting, and they are quick to read."""
        return self._timeline.arrived(self.position_ms, ahead_ms)

    def _respond(self, request: Respond) -> list[Event]:
        """Take the turn now, whatever the policy says; `request` may give the answer its
        own tools, output and instructions."""
        now = self.position_ms
        if self._floor.response is not None:
            message = "a response is already in progress; cancel it first"
            return [self._timeline.event(Error, now, code="response_in_progress", message=message)]
        self._turn.retract()  # words the recognizer has not finished are not the turn's
        record = self._turn.open(now)
        silence = now - (record.user_last_voiced_ms or now)
        events = self._take_turn(self._turn.probs, silence, now, request)
        return events + self._floor.speak(now)

    def _cancel(self, heard_ms: int | None = None) -> list[Event]:
        """Stop the answer being written or played; the LM keeps what was heard, or the
        words of its first `heard_ms` where the client plays the audio and says so."""
        if self._turn.draft is not None:
            self._turn.discard_draft()
        return self._floor.cancel(self.position_ms, heard_ms)

    def close(self) -> None:
        """The conversation is over: an external responder's stream closes now."""
        self._player.close()
