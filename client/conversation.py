"""What the local assistant shows: the conversation as its events tell it.

A plain model (no terminal, no audio) so it is tested alone; `client.ui`
renders it with rich.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from duplex.events import (
    BackchannelIgnored,
    Error,
    Event,
    Interrupted,
    ResponseAudio,
    ResponseDone,
    ResponseText,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptFinal,
    TurnMetrics,
    TurnTaken,
)


@dataclass
class Line:
    speaker: str  # "you", "assistant" or "note"
    text: str
    unheard: str = ""  # the part of an answer cut off before it was played
    partial: bool = False


@dataclass
class Conversation:
    state: str = "listening"  # listening / hearing / thinking / speaking / yielded
    lines: list[Line] = field(default_factory=list)
    turns: list[dict[str, float | str | None]] = field(default_factory=list)
    user_speaking: bool = False
    status: str = "loading the models"
    _user: Line | None = None
    _answer: Line | None = None

    def apply(self, event: Event) -> None:
        """Fold one session event into what is shown."""
        if isinstance(event, SpeechStarted):
            self.user_speaking = True
            if self.state != "speaking":
                self.state = "hearing"
        elif isinstance(event, SpeechStopped):
            self.user_speaking = False
            if self.state == "hearing":
                self.state = "thinking"
        elif isinstance(event, TranscriptDelta):
            if self._user is None:
                self._user = self._add(Line("you", "", partial=True))
            self._user.text = " ".join((self._user.text + " " + event.text).split())
        elif isinstance(event, TranscriptFinal):
            line = self._user or self._add(Line("you", ""))
            line.text = event.text or "(heard as speech, no transcript)"
            line.partial, self._user = False, None
        elif isinstance(event, TurnTaken):
            self._answer = self._add(Line("assistant", ""))
            self.state = "thinking"
        elif isinstance(event, ResponseText) and self._answer is not None:
            self._answer.text = " ".join((self._answer.text + event.text).split())
        elif isinstance(event, ResponseAudio):
            self.state = "speaking"
        elif isinstance(event, Interrupted):
            self._interrupted(event)
        elif isinstance(event, BackchannelIgnored):
            self._add(Line("note", f'heard "{event.text}" and went on'))
        elif isinstance(event, ResponseDone):
            self._answer = None
            if self.state in ("speaking", "thinking"):
                self.state = "hearing" if self.user_speaking else "listening"
        elif isinstance(event, TurnMetrics):
            record = event.record
            self.turns.append(
                {
                    "end_of_turn_ms": record.end_of_turn_ms,
                    "barge_in_stop_ms": record.barge_in_stop_ms,
                    "outcome": record.outcome,
                }
            )
        elif isinstance(event, Error):
            self._add(Line("note", f"error {event.code}: {event.message}"))

    def _interrupted(self, event: Interrupted) -> None:
        self.state = "yielded"
        if self._answer is None:
            return
        heard = " ".join(event.played_text.split())
        text = self._answer.text
        if text.startswith(heard):
            self._answer.text, self._answer.unheard = heard, text[len(heard) :].strip()
        self._answer = None

    def _add(self, line: Line) -> Line:
        self.lines.append(line)
        return line
