"""The user's open turn while the session listens: what the LM has read of it,
the estimate that it has ended, and the draft answer written meanwhile.

A moment into each pause the recognizer decodes, and the words it heard after
the stable ones are read by the LM *tentatively*: if the turn ends there they
are its last words, already read; if the user goes on, the LM forgets them
(`retract`). A likely end starts a *draft*: the answer's first clause is
written and synthesized while the silence threshold still runs, and it is
thrown away if the user goes on. The session decides when the turn is taken
(`Session._decide`); this object keeps what that decision reads, in one place.
"""

from __future__ import annotations

import contextlib

import numpy as np

from duplex.audio import Float32Array
from duplex.commands import Respond, answer_item
from duplex.config import PolicySettings
from duplex.events import (
    Event,
    ItemDeleted,
    TranscriptDelta,
    TranscriptFinal,
    TurnEstimate,
    TurnMetrics,
    TurnTaken,
)
from duplex.listener import Listener
from duplex.metrics import TurnRecord
from duplex.playout import Player, Response
from duplex.ports import DuplexLM, StateProbs
from duplex.tdm import Policy, fuse, sound_can_tell
from duplex.timeline import Timeline
from duplex.tools import NO_TOOLS

# with speech understanding, voice shorter than this is a cough or a click, not a turn
MIN_TURN_SPEECH_MS = 240
NOTHING_YET = StateProbs(1.0, 0.0, 0.0)


class UserTurn:
    """The open user turn: its record, words, tentative words, estimate and draft."""

    def __init__(
        self,
        lm: DuplexLM,
        listener: Listener,
        player: Player,
        settings: PolicySettings,
        understanding: str,
        timeline: Timeline,
    ) -> None:
        self._lm = lm
        self._listener = listener
        self._player = player
        self._settings = settings
        self._understanding = understanding
        self._timeline = timeline
        self.responses = 0  # answers begun so far: the next one's id is one more
        self.items = 0  # the user's words named as items of the conversation so far
        self.tools = NO_TOOLS  # the functions an answer may call
        self.audio = True  # answers are spoken (else text alone)
        self.max_tokens: int | None = None  # an answer's length at most (None: the LM's)
        self.last_response: Response | None = None  # the latest finished answer
        self.reset()

    def reset(self) -> None:
        """No turn is open (the record is the session's to close first)."""
        self.record: TurnRecord | None = None
        self.text = ""  # the words the LM has read for good
        self.probs = NOTHING_YET  # the LM's estimate from them
        # the words a decode at a pause heard after the stable ones, read tentatively,
        # when they were read, and the estimate before them
        self.tentative: str | None = None
        self.tentative_ms = 0
        self._probs_before_tentative = NOTHING_YET
        self.draft: Response | None = None  # an answer written while the silence runs
        self._speech_pending: list[Float32Array] = []  # heard while a draft is open
        self.after_barge_in = False  # the turn began by interrupting
        self._estimated: tuple[float, float | None] | None = None  # the last one sent
        self.item = ""  # the name of the words heard so far, once they have one

    def open(self, onset_ms: int) -> TurnRecord:
        """The turn's record, opened at `onset_ms` unless it is open already."""
        if self.record is None:
            self.record = TurnRecord(self.responses + 1, user_onset_ms=onset_ms)
        return self.record

    def close(self, outcome: str, position_ms: int) -> list[Event]:
        """The turn is over (`outcome`: how its answer ended): its metrics go out."""
        record, self.record = self.record, None
        assert record is not None
        record.outcome = outcome
        return [self._timeline.event(TurnMetrics, position_ms, record=record)]

    def fail(self, now_ms: int) -> list[Event]:
        """A model failed while the user had the turn: the draft and the turn's words are
        dropped, its record closes "failed". Each call may meet the broken model again:
        each is tried alone."""
        draft = self.draft
        if draft is not None:
            with contextlib.suppress(Exception):
                self._player.stop_remote(draft)  # the engine may be what broke
            draft.remote = False
            with contextlib.suppress(Exception):
                self._lm.cancel_response()
        with contextlib.suppress(Exception):
            self._lm.rewrite_turn("")
        return self.close("failed", now_ms) if self.record is not None else []

    # the words ------------------------------------------------------------------------

    def hear(self, words: str, ended: bool) -> None:
        """New stable words of the turn (`ended`: the utterance's last)."""
        if self.record is None:  # nobody has spoken since the last answer
            return
        if self.tentative is not None and (words.strip() or ended):
            if ended and words.strip() == self.tentative.strip():
                # the utterance ended with the words the LM read at the pause
                self.text += words
                self.tentative, self.record.asr_final_ms = None, self.tentative_ms
                return
            self.retract()
        if words.strip() and self.draft is not None:
            self.discard_draft()  # the user went on
        self.text += words
        if self.draft is None and self._understanding == "text":
            # while a draft is written, the LM is in the answer
            self.probs = self._lm.listen(words)

    def add_text(self, words: str) -> None:
        """Typed or committed words: read for good, whatever a draft was doing."""
        self.text += words
        if self.draft is None:
            self.probs = self._lm.listen(words)

    def finish_utterance(self, now_ms: int) -> list[Event]:
        """End the utterance being heard now (manual turns): its words join the turn."""
        self.retract()  # the LM reads the final words instead
        words = self._listener.recognizer.finish()
        if not words.strip():
            return []
        self.open(now_ms)
        self.add_text(words)
        return [self._timeline.event(TranscriptDelta, now_ms, text=words)]

    def type_text(self, text: str, now_ms: int, item: str) -> list[Event]:
        """A typed message joins the turn, as if it had been heard; its TranscriptDelta.
        Typed words never end a turn by silence: `Respond` does (or speech that follows).
        With an `item` name it is a message of its own instead, a user turn of the
        conversation between the words heard before and after it."""
        self._drop_draft()
        words = text.strip()
        if not words:
            return []
        if item:
            if self.text.strip():
                self._name_words()  # the words heard before it are an item of their own
            self._lm.listen(words)
            self._lm.name_turn(item, "user")
            return []
        self.open(now_ms)
        words = (" " if self.text.strip() else "") + words
        self.add_text(words)
        return [self._timeline.event(TranscriptDelta, now_ms, text=words)]

    def add_tool_result(self, call_id: str, output: str, item: str) -> None:
        """A function's output joins the conversation: the next answer is written from it."""
        self._drop_draft()
        self._lm.add_tool_result(call_id, output)
        if item:
            self._lm.name_turn(item, "tool")

    def add_message(self, role: str, text: str, item: str) -> None:
        """A system note or an assistant message joins the conversation as its own turn."""
        self._drop_draft()
        self._lm.add_message(role, text)
        if item:
            self._lm.name_turn(item, role)

    def forget(self, item: str, now_ms: int) -> list[Event]:
        """The item leaves the conversation (between answers). What was read at a pause,
        and a draft answer to it, go first: they were read with the item in view."""
        self._drop_draft()
        self._lm.forget(item)
        return [self._timeline.event(ItemDeleted, now_ms, item=item)]

    def _name_words(self) -> str:
        """The words heard so far are an item of the conversation: its name."""
        if not self.item:
            self.items += 1
            self.item = f"duplex-user-{self.items}"
        self._lm.name_turn(self.item, "user")
        return self.item

    def _final(self, now_ms: int) -> Event:
        """The turn's words are final: their TranscriptFinal, named as an item if any."""
        text = self.text.strip()
        item = self._name_words() if text else ""
        self.item = ""
        return self._timeline.event(TranscriptFinal, now_ms, text=text, item=item)

    def _drop_draft(self) -> None:
        """Words that come another way than by voice: what was read at a pause, and a
        draft answer to it, are void."""
        self.retract()
        if self.draft is not None:
            self.discard_draft()

    def read_tentatively(self, rest: str, now_ms: int, events: list[Event], draft: bool) -> None:
        """The decode at a pause heard `rest` after the stable words. If the turn ends
        here, those are its last words: the LM reads them now, and a likely end starts
        the draft while the VAD's hangover still runs (`draft`: an end would be answered).
        If the user goes on, the LM forgets them again (`retract`)."""
        if self.draft is not None:
            return  # a draft for the words before: the LM is in its answer
        self._probs_before_tentative = self.probs
        self.probs = self._lm.listen_tentatively(rest)
        self.tentative, self.tentative_ms = rest, self._timeline.at(now_ms)
        likely = self.estimate(now_ms, events).speak >= self._settings.speculate_threshold
        if likely and draft:
            self.start_draft(now_ms)

    def retract(self) -> None:
        """The LM forgets the words it read at a pause, and a draft answer to them."""
        if self.tentative is None:
            return
        if self.draft is not None:
            self.discard_draft()
        self._lm.retract()
        self.tentative, self.probs = None, self._probs_before_tentative

    def hear_speech(self, embeddings: Float32Array) -> None:
        """The speech path's next chunk of the turn."""
        if self.draft is not None:  # the LM is inside the draft answer
            self._speech_pending.append(embeddings)
        else:
            self.probs = self._lm.listen_speech(embeddings)

    def said_something(self) -> bool:
        """Words, or with speech understanding alone, voice long enough to be words."""
        if self.text.strip():
            return True
        record = self.record
        if record is None or self._understanding != "speech":
            return False
        onset, end = record.user_onset_ms, record.user_last_voiced_ms
        return onset is not None and end is not None and end - onset >= MIN_TURN_SPEECH_MS

    # the estimate ---------------------------------------------------------------------

    def hear_ending(self) -> None:
        """How the voice ended, once per pause: the acoustic half of the estimate, begun
        when the VAD ends the utterance (on the model's thread, while the LM reads and
        drafts): a shorter gap between words is no turn's end, and the model is dear
        (200-300 ms a call on 2 AVX2 cores). Not for words the text calls unfinished:
        the sound cannot finish them (`tdm.fuse`)."""
        if sound_can_tell(self.probs, self._settings):
            self._listener.hear_ending()

    def estimate(self, now_ms: int, events: list[Event], wait: bool = False) -> StateProbs:
        """The words' estimate fused with the sound's, once it is here (`wait`: wait for
        it); a TurnEstimate when either changed."""
        p_audio = self._listener.p_audio(wait)
        probs = fuse(self.probs, p_audio, self._settings)
        if self._estimated != (self.probs.speak, p_audio):
            before = self._estimated[1] if self._estimated else None
            if before is None and p_audio is not None and self.record is not None:
                self.record.turn_audio_ms = self._timeline.at(now_ms)  # the sound's verdict
            self._estimated = (self.probs.speak, p_audio)
            events.append(
                self._timeline.event(
                    TurnEstimate,
                    now_ms,
                    p_text=self.probs.speak,
                    p_audio=p_audio,
                    p_speak=probs.speak,
                )
            )
        return probs

    # the answer -----------------------------------------------------------------------

    def start_draft(self, now_ms: int) -> None:
        """Likely the end: write and synthesize the start of the answer while silence runs.
        Not where the answer may be a call: writing one holds the loop (1.4 s on two slow
        cores), too dear for a draft that three pauses in four throw away."""
        if self.tools.active:
            return
        answer = Response(
            self.responses + 1, audio=self.audio, tools=self.tools, max_tokens=self.max_tokens
        )
        self.draft = self._begin_answer(answer)
        self.draft.held = self._player.speak(self.draft, now_ms, self.record)

    def discard_draft(self) -> None:
        """The user goes on: the draft answer is void."""
        assert self.draft is not None
        self._player.stop_remote(self.draft)
        self._lm.cancel_response()
        self.draft = None
        if self._speech_pending:  # what the speech path heard meanwhile joins the turn
            self.probs = self._lm.listen_speech(np.concatenate(self._speech_pending))
            self._speech_pending = []
        if self.record is not None:
            self.record.first_token_ms = self.record.first_tts_audio_ms = None

    def _begin_answer(self, response: Response) -> Response:
        self.last_response = None  # the one before can no longer be cut
        if self._understanding == "speech":
            # answered straight after speech positions the LM says back what it heard
            # (the adapter was trained to transcribe): it writes down what it read first,
            # and answers that; a draft dropped for more speech keeps its words
            self.text = f"{self.text} {self._lm.transcribe_heard()}".strip()
        if self._understanding != "text":
            self._lm.rewrite_turn(self.text)  # heard as speech, answered from words
        self._lm.begin_response(response.tools, response.instructions, response.max_tokens)
        self._lm.name_turn(answer_item(response.id), "assistant")
        self._player.start_remote(response)
        return response

    def commit(self, now_ms: int) -> list[Event]:
        """The turn has ended and is not answered until `Respond`: its words are final
        and an item of the conversation; the next words open another turn."""
        final = self._final(now_ms)
        self.record, self.text, self.after_barge_in = None, "", False
        self._listener.turn_taken()
        self._estimated = None
        return [final]

    def take(
        self,
        probs: StateProbs,
        silence: int,
        now_ms: int,
        policy: Policy,
        asked: Respond,
    ) -> tuple[Response, list[Event]]:
        """The assistant takes the turn: the draft, or an answer begun now with the
        `asked`'s own tools, output and instructions (else the session's), and the
        turn's events (the draft's held ones included). The words start afresh."""
        record = self.record
        assert record is not None
        self.responses += 1
        own = asked != Respond()
        if own and self.draft is not None:
            self.discard_draft()  # written for other tools, output or instructions
        answer = Response(
            self.responses,
            audio=self.audio if asked.audio is None else asked.audio,
            tools=self.tools if asked.tools is None else asked.tools,
            instructions=asked.instructions,
            max_tokens=self.max_tokens if asked.max_tokens is None else asked.max_tokens,
        )
        response = self.draft or self._begin_answer(answer)
        self.draft, self._speech_pending = None, []
        record.response_id = response.id
        record.decision_ms = self._timeline.at(now_ms)
        self.after_barge_in = False
        self._listener.turn_taken()
        self._estimated = None
        events: list[Event] = [
            self._final(now_ms),
            self._timeline.event(
                TurnTaken,
                now_ms,
                response_id=response.id,
                p_speak=probs.speak,
                silence_ms=silence,
                required_silence_ms=round(policy.required_silence_ms(probs.speak)),
            ),
            *response.held,
        ]
        response.held = []
        self.text = ""
        return response, events
