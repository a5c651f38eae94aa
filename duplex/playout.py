"""An answer on its way out: written in clauses, synthesized, queued frame by frame, played.

The session writes an answer's words, cuts them into clauses, has each
synthesized and queues its audio in 20 ms frames; what was sent to play, and
when, says what the user heard if they interrupt, down to the word.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from duplex.audio import FRAME_MS, FRAME_SAMPLES, Int16Array
from duplex.config import PolicySettings
from duplex.events import (
    Event,
    ResponderFallback,
    ResponseAudio,
    ResponseFunctionCall,
    ResponseText,
)
from duplex.metrics import TurnRecord
from duplex.ports import (
    PendingAudio,
    Responder,
    ResponderError,
    Synthesizer,
    SynthesizesAhead,
    WritesAnswers,
)
from duplex.text import ClauseSplitter, played_words
from duplex.timeline import Timeline
from duplex.tools import NO_TOOLS, ToolCall, Tools


@dataclass
class Clause:
    """One clause of an answer: its words, its audio's length in frames, how many played."""

    text: str
    frames: int
    played: int = 0


@dataclass
class Response:
    """An answer being written, synthesized and played."""

    id: int
    # the first clause is written and synthesized while the user waits: 4 words at most
    splitter: ClauseSplitter = field(default_factory=lambda: ClauseSplitter(first_words=4))
    clauses: list[Clause] = field(default_factory=list)
    written: deque[str] = field(default_factory=deque)  # clauses not synthesized yet
    queue: deque[tuple[Int16Array, int]] = field(default_factory=deque)
    # a clause being synthesized in the background, queued once its audio is made
    pending: tuple[str, PendingAudio] | None = None
    sent: list[tuple[int, int]] = field(default_factory=list)  # (play start ms, clause) per frame
    generating: bool = True
    remote: bool = False  # an external responder writes it (until it fails)
    tokens_seen: bool = False
    audio: bool = True  # spoken; else its words go out as text alone
    tools: Tools = NO_TOOLS  # the functions it may call instead of speaking
    instructions: str = ""  # for this answer alone
    max_tokens: int | None = None  # its length at most (None: the LM's own limit)
    call: ToolCall | None = None  # the call it made
    held: list[Event] = field(default_factory=list)  # a speculative answer's events, unsent

    @property
    def queued_ms(self) -> int:
        return len(self.queue) * FRAME_MS

    @property
    def played_ms(self) -> int:
        return sum(c.played for c in self.clauses) * FRAME_MS

    @property
    def finished(self) -> bool:
        return not self.generating and not self.written and not self.queue and self.pending is None

    def collect(self) -> None:
        """Queue the background clause's audio if it is made."""
        if self.pending is not None:
            text, audio = self.pending
            pcm = audio.result()
            if pcm is not None:
                self.enqueue(text, pcm)
                self.pending = None

    def enqueue(self, text: str, pcm: Int16Array) -> None:
        frames = max(1, -(-pcm.size // FRAME_SAMPLES))
        padded = np.zeros(frames * FRAME_SAMPLES, dtype=np.int16)
        padded[: pcm.size] = pcm
        index = len(self.clauses)
        self.clauses.append(Clause(text, frames))
        for i in range(frames):
            self.queue.append((padded[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES], index))

    def flush_after(self, stop_ms: int) -> None:
        """Frames sent to play at or after `stop_ms` are dropped from the output: unheard."""
        while self.sent and self.sent[-1][0] >= stop_ms:
            _, index = self.sent.pop()
            self.clauses[index].played -= 1

    def heard_within(self, ms: int) -> str:
        """The words in the first `ms` of the answer's audio as it was sent (a client
        that plays the audio itself says how much it played). Of a text answer: all
        its words written so far."""
        if not self.audio:
            return " ".join(c.text for c in self.clauses)
        budget, heard = ms // FRAME_MS, []
        for clause in self.clauses:
            take = min(clause.played, budget)
            if take <= 0:
                break
            whole = take == clause.frames
            heard.append(clause.text if whole else played_words(clause.text, take / clause.frames))
            budget -= take
        return " ".join(h for h in heard if h)

    def played_text(self) -> str:
        """The words the user actually heard, up to the current playout position."""
        return self.heard_within(self.played_ms)


class Player:
    """Writes, synthesizes and sends one answer at a time, and stops it where it played.

    It owns the output timeline: where the audio already sent to play ends,
    how far the device plays behind what it was sent, and, after a stall,
    until when nothing more is sent. The session says what to play and when
    to stop; the player keeps the turn's latency marks for the stages it runs.
    """

    def __init__(
        self,
        lm: WritesAnswers,
        synthesizer: Synthesizer,
        responder: Responder | None,
        settings: PolicySettings,
        timeline: Timeline,
    ) -> None:
        self._lm = lm
        self._tts = synthesizer
        self._responder = responder
        self.settings = settings
        self._timeline = timeline
        self.output_end = 0  # where the output already sent to play ends (timeline ms)
        # how long after it is sent a frame is heard: the device's output latency and
        # queue, set by a client that measures it (the local assistant does)
        self.output_delay_ms = 0
        # after a stall, no output until the input that arrived during it is heard
        self.catch_up_to = 0
        self.speed = 1.0  # how fast clauses are spoken (1: the voice's own pace)

    # the engine that writes the words ------------------------------------------

    def start_remote(self, response: Response) -> None:
        """An external responder, if there is one, writes this answer from the history."""
        if self._responder is not None:
            self._responder.start(self._lm.messages(), response.tools, response.max_tokens)
            response.remote = True

    def stop_remote(self, response: Response) -> None:
        """Close the engine's stream for this answer at once, if it is writing it."""
        if response.remote and self._responder is not None:
            self._responder.stop()
            response.remote = False

    def close(self) -> None:
        if self._responder is not None:
            self._responder.stop()

    # writing and synthesis -------------------------------------------------------

    def speak(self, response: Response, now_ms: int, record: TurnRecord | None) -> list[Event]:
        """Write and synthesize just enough to keep the voice ahead of playout."""
        events: list[Event] = []
        budget = self.settings.max_tokens_per_tick
        lead = self.settings.audio_lead_ms
        # one clause in the making at a time; the first plays before more is made (the
        # user is waiting for it), then clauses are made as soon as they are written
        while response.pending is None and (not response.queue or response.sent):
            if response.written:
                clause = response.written.popleft()
                if response.audio:
                    self._synthesize(response, clause, now_ms, record)
                else:
                    response.clauses.append(Clause(clause, 0))  # text: read, not heard
                continue
            if not response.generating:
                break
            if response.queue and (response.queued_ms >= lead or budget <= 0):
                break  # the voice is far enough ahead
            if not response.audio and budget <= 0:
                break  # text: a tick's worth at a time
            text, done = self._write(response, now_ms, events)
            if response.call is not None:  # no words: a function call
                if record is not None:
                    record.first_token_ms = self._timeline.at(now_ms)
                call = response.call
                events.append(
                    self._timeline.event(
                        ResponseFunctionCall,
                        now_ms,
                        response_id=response.id,
                        call_id=call.call_id,
                        name=call.name,
                        arguments=call.arguments,
                    )
                )
                response.generating = False
                break
            if not text and not done:
                break  # the responder has nothing yet: the next frame looks again
            budget -= self.settings.tokens_per_call
            response.written += response.splitter.push(text)
            if text:
                if record is not None and not response.tokens_seen:
                    record.first_token_ms = self._timeline.at(now_ms)
                response.tokens_seen = True
                events.append(
                    self._timeline.event(ResponseText, now_ms, response_id=response.id, text=text)
                )
            if done:
                response.written += response.splitter.flush()
                response.generating = False
        return events

    def _synthesize(
        self, response: Response, clause: str, now_ms: int, record: TurnRecord | None
    ) -> None:
        if response.queue and isinstance(self._tts, SynthesizesAhead):
            # earlier audio plays meanwhile: made off the loop, no stall
            response.pending = (clause, self._tts.start(clause, speed=self.speed))
            return
        response.enqueue(clause, self._tts.synthesize(clause, speed=self.speed))
        if record is not None and record.first_tts_audio_ms is None:
            record.first_tts_audio_ms = self._timeline.at(now_ms)

    def _write(self, response: Response, now_ms: int, events: list[Event]) -> tuple[str, bool]:
        """The answer's next words: the responder's while it works, else the LM's own.
        Until the first clause is complete, one token at a time: it is synthesized as
        soon as its last word is, not after a budget's worth of tokens past it."""
        first = not response.clauses and not response.written
        count = 1 if first else self.settings.tokens_per_call
        if response.remote and self._responder is not None:
            try:
                text, done = self._responder.read(count)
            except ResponderError as error:
                self.stop_remote(response)  # the LM goes on from the words written so far
                events.append(
                    self._timeline.event(
                        ResponderFallback, now_ms, response_id=response.id, reason=str(error)
                    )
                )
            else:
                response.call = self._responder.tool_call() if done else None
                if response.call is not None:
                    self._lm.write_call(response.call)
                    return "", True
                self._lm.write(text, done)
                return text, done
        text, done = self._lm.speak(count)
        response.call = self._lm.tool_call() if done else None
        return text, done

    # playout -------------------------------------------------------------------

    def send(self, response: Response, position_ms: int, record: TurnRecord | None) -> Event | None:
        """The answer's next frame, if it is due: stamped with where it will play."""
        now = self._timeline.at(position_ms)
        if not response.queue or self.output_end > now + self.settings.send_ahead_ms:
            # after a stall the loop catches up on input faster than real time; sending
            # one output frame per input frame then would queue that much at the device,
            # and a barge-in could not stop it
            return None
        pcm, index = response.queue.popleft()
        clause = response.clauses[index]
        clause.played += 1
        # it plays after what was sent before it, and not before it was made
        start = max(now, self.output_end)
        self.output_end = start + FRAME_MS
        response.sent.append((start, index))
        if record is not None and record.first_output_ms is None:
            record.first_output_ms = start
        return self._timeline.event(
            ResponseAudio, start, response_id=response.id, pcm=pcm, text=clause.text
        )

    def stop(self, response: Response, now_ms: int, heard_ms: int | None) -> tuple[str, int]:
        """Stop the answer where playout is: (the words the user heard, where it stopped).
        Frames the device had not played yet are unheard; `heard_ms`: the client plays
        the audio itself and says how much of it played."""
        stopped = min(self._timeline.at(now_ms), self.output_end)
        response.flush_after(stopped - self.output_delay_ms)
        self.output_end = stopped
        heard = response.played_text() if heard_ms is None else response.heard_within(heard_ms)
        return heard, stopped
