"""Who has the turn, and the answer the assistant holds it with.

The session's turn state machine. `tdm.TRANSITIONS` is the table of every
move (take the turn, talked over, dismiss, yield, end, fail); the floor makes
the moves and keeps what each state holds with it: an answer exists only
while the assistant has the turn (SPEAKING, OVERLAP), the user's voice over
it only in OVERLAP. It plays the answer out frame by frame, holds it while
the user talks over it, and stops it where the user heard it end.
"""

from __future__ import annotations

import contextlib

import numpy as np

from duplex.audio import Frame
from duplex.config import PolicySettings
from duplex.events import BackchannelIgnored, Event, Interrupted, ResponseDone
from duplex.listener import Listener
from duplex.overlap import Overlap
from duplex.playout import Player, Response
from duplex.ports import DuplexLM, Recognizer
from duplex.tdm import Move, OverlapDecision, Policy, State, after
from duplex.timeline import Timeline
from duplex.turn import UserTurn
from duplex.vad import VadStep, VadTracker


class Floor:
    """The turn's state, the answer and the voice over it, moved only by the table."""

    def __init__(
        self,
        lm: DuplexLM,
        recognizer: Recognizer,
        vad: VadTracker,
        listener: Listener,
        player: Player,
        turn: UserTurn,
        settings: PolicySettings,
        understanding: str,
        timeline: Timeline,
    ) -> None:
        self._lm = lm
        self._recognizer = recognizer
        self._vad = vad
        self._listener = listener
        self._player = player
        self._turn = turn
        self._settings = settings
        self._understanding = understanding
        self._timeline = timeline
        self.state = State.LISTENING
        self.response: Response | None = None  # while the assistant has the turn
        self.overlap: Overlap | None = None  # while the user talks over it

    def move(self, move: Move) -> None:
        """Whose turn it is, by the table (`tdm.TRANSITIONS`); IllegalMove if it has no
        such move. What a state holds goes with it."""
        self.state = after(self.state, move)
        if self.state is State.LISTENING:
            self.response = None
        if self.state is not State.OVERLAP:
            self.overlap = None

    @property
    def speaking(self) -> bool:
        """The assistant has the turn (talked over or not)."""
        return self.state is not State.LISTENING

    # the moves ------------------------------------------------------------------------

    def take(self, response: Response) -> None:
        """The assistant takes the turn with `response`."""
        self.move(Move.TAKE_TURN)
        self.response = response

    def talked_over(self, onset_ms: int) -> None:
        """The user's voice begins over the answer: it holds while that is decided."""
        self.move(Move.TALKED_OVER)
        self.overlap = Overlap(onset_ms)

    def hear_over(self, words: str, now_ms: int, policy: Policy) -> list[Event]:
        """New words said over the answer: yield to them, dismiss them, or wait (a policy
        that never yields keeps them for the user's next turn, at the answer's end)."""
        overlap, response = self.overlap, self.response
        assert overlap is not None and response is not None
        overlap.text += words
        if not policy.yields:
            return []
        decision = overlap.decide(
            self._lm,
            self._recognizer.last_confidence,
            policy,
            self._settings,
            self._understanding,
            now_ms,
            ended=not self._vad.in_speech,
        )
        if decision is OverlapDecision.YIELD:
            return self._yield(now_ms)
        if decision is OverlapDecision.DISMISS:
            if self._turn.record is not None:
                self._turn.record.backchannels += 1
            held = self._settings.hold_on_overlap and not response.finished
            event = self._timeline.event(
                BackchannelIgnored,
                now_ms,
                response_id=response.id,
                text=overlap.text.strip(),
                onset_ms=overlap.onset_ms,
                held_ms=max(0, self._timeline.at(now_ms) - self._player.output_end) if held else 0,
            )
            self.move(Move.DISMISS)
            self._listener.feeding = False
            return [event]
        return []

    def _yield(self, now_ms: int) -> list[Event]:
        """Barge-in: stop output now, keep only what was heard, the user has the turn."""
        assert self.overlap is not None
        onset = self.overlap.onset_ms
        if self._turn.record is not None:
            self._turn.record.barge_in_onset_ms = onset
        events = self._stop("interrupted", now_ms, onset)
        self._continue_user_turn(Move.YIELD)
        self._turn.after_barge_in = True  # the new turn began by interrupting
        return events

    def cancel(self, now_ms: int, heard_ms: int | None = None) -> list[Event]:
        """Stop the answer; the LM keeps what was heard (its first `heard_ms`, where the
        client plays the audio and says so)."""
        if self.response is None:
            return []
        events = self._stop("cancelled", now_ms, now_ms, heard_ms)
        self._end_move()
        return events

    def fail(self, now_ms: int) -> list[Event]:
        """A model failed: the answer ends "failed", what was heard of it stays in the LM.
        Each call may meet the broken model again: each is tried alone."""
        answer = self.response
        assert answer is not None
        with contextlib.suppress(Exception):
            self._player.stop_remote(answer)  # the engine may be what broke
        answer.remote = False  # tried once: the answer's end does not try again
        events = self._end("failed", now_ms, now_ms)
        with contextlib.suppress(Exception):
            self._lm.truncate(answer.played_text())
        return events

    def feed_speech(self, frame: Frame, vad: VadStep) -> None:
        """The speech path hears the user's turn from its onset, pauses and the silence
        after it included (that silence is what the head reads as an end), up to the
        longest silence the policy waits; or the words said over the answer."""
        overlap = self.overlap
        if vad.started is not None and not self._listener.feeding and overlap:
            overlap.restart_speech()
        wanted = overlap is not None or self._turn.record is not None
        for embeddings in self._listener.feed_speech(frame, vad, wanted):
            if self.overlap is not None:
                self.overlap.hear_speech(embeddings, self._lm)
            elif not self.speaking and self._turn.record is not None:
                self._turn.hear_speech(embeddings)

    # the answer's audio ---------------------------------------------------------------

    def speak(self, now_ms: int) -> list[Event]:
        """Write and synthesize enough of the answer to stay ahead of playout."""
        if self.response is None or not self.speaking:
            return []
        return self._player.speak(self.response, now_ms, self._turn.record)

    def read_remote(self, now_ms: int) -> list[Event]:
        """An external responder's text arrives at any time: take it every frame."""
        draft, record = self._turn.draft, self._turn.record
        if draft is not None and draft.remote:
            draft.held += self._player.speak(draft, now_ms, record)
        if self.response is not None and self.response.remote:
            return self.speak(now_ms)
        return []

    def play(self, position_ms: int, vad: VadStep, policy: Policy) -> list[Event]:
        """The answer's next frame to play, unless it holds; the end, once played out."""
        response = self.response
        if response is None or not self.speaking:
            return []
        response.collect()
        maybe_voice = vad.probability >= self._settings.hold_probability
        held = self.state is State.OVERLAP or maybe_voice
        if self._settings.hold_on_overlap and policy.yields and held:
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
            events = self._end("completed", position_ms, self._player.output_end)
            self._turn.last_response = response
            self._end_move()
            return events
        return []

    # endings --------------------------------------------------------------------------

    def _stop(
        self, status: str, now_ms: int, onset: int, heard_ms: int | None = None
    ) -> list[Event]:
        """Stop the answer where playout is, keep only what was heard in the LM
        (the first `heard_ms` of it, where the client says so)."""
        response = self.response
        assert response is not None
        played_text, stopped = self._player.stop(response, now_ms, heard_ms)
        self._lm.truncate(played_text)
        event = self._timeline.event(
            Interrupted,
            now_ms,
            response_id=response.id,
            played_ms=response.played_ms,
            played_text=played_text,
            onset_ms=onset,
            stopped_ms=stopped,
        )
        return [event, *self._end(status, now_ms, stopped)]

    def _end(self, status: str, position_ms: int, stopped_ms: int) -> list[Event]:
        response = self.response
        assert response is not None
        self._player.stop_remote(response)  # a barge-in closes the engine's stream at once
        events: list[Event] = [
            self._timeline.event(
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
            events += self._turn.close(status, position_ms)
        return events

    def _end_move(self) -> None:
        """The answer is over; a user talking over it goes on with their turn."""
        if self.overlap is not None:
            self._continue_user_turn(Move.END)
        else:
            self.move(Move.END)

    def _continue_user_turn(self, move: Move) -> None:
        """The words said over the answer open the next user turn."""
        overlap = self.overlap
        assert overlap is not None
        self.move(move)
        turn = self._turn
        turn.open(overlap.onset_ms).user_last_voiced_ms = overlap.end_ms
        turn.text = overlap.text
        self._lm.listen(turn.text)
        if overlap.speech:  # the speech path heard the words said over the answer
            turn.probs = self._lm.listen_speech(np.concatenate(overlap.speech))
