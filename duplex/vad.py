"""Voice activity: per-frame speech probability and the hysteresis that turns it into turns.

A backend answers "how likely is this 20 ms frame speech?" through the
`VoiceActivity` port: `models/vad.py` holds the real ones (WebRTC's, Silero's),
tests a scripted fake.

`VadTracker` turns those probabilities into speech start/stop events on the input
timeline. Start needs a run of voiced frames (so a click does not open a turn),
stop needs a run of unvoiced frames (so a pause between words does not close
one), and the threshold drops while in speech (so a soft word ending stays in).
On start it hands back the frames just before the onset, so the recognizer also
hears the first syllable that was spoken before the tracker was sure.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from duplex.audio import FRAME_MS, Frame, check_frame, rms_db
from duplex.ports import VoiceActivity

# A frame in speech is *quiet* when its level is this far below the utterance's loudest
# frame, or this close to the background's floor: the voice has likely stopped, about
# 60-140 ms before Silero's probability falls (its 32 ms chunks and its smoothing)
QUIET_BELOW_PEAK_DB = 35.0
QUIET_ABOVE_FLOOR_DB = 3.0
# the floor is the quietest recent level: it drops at once and rises 2.5 dB a second,
# so it follows a background that grows louder
FLOOR_RISE_DB = 0.05


@dataclass(frozen=True, slots=True)
class VadStep:
    """What one frame did to the tracker. Times are input-timeline milliseconds."""

    probability: float
    voiced: bool  # counted as speech under the threshold in force for this frame
    in_speech: bool  # state after this frame
    started: int | None = None  # onset (start_ms of the run's first voiced frame) on start
    stopped: int | None = None  # end_ms of the last voiced frame on stop
    pre_roll: tuple[Frame, ...] = ()  # on start: pre_roll_ms before the onset .. this frame
    # in speech, by level alone: near the background or far below the utterance's peak
    quiet: bool = False


def _positive_ms(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} ms, got {value!r}")
    return value


class VadTracker:
    """Hysteresis over a per-frame speech probability: speech starts, speech stops.

    Start fires once `start_ms` of consecutive voiced frames is reached; stop
    fires after `end_ms` of consecutive unvoiced frames. While in speech the
    threshold drops to `max(threshold - 0.15, 0.05)` (never above `threshold`),
    so trailing soft phonemes do not end the turn early. A gap in frame indices
    restarts the consecutive counts and the pre-roll, since the audio is not
    contiguous across it.
    """

    def __init__(
        self,
        backend: VoiceActivity,
        threshold: float = 0.5,
        start_ms: int = 60,
        end_ms: int = 300,
        pre_roll_ms: int = 200,
    ) -> None:
        if not callable(getattr(backend, "probability", None)) or not callable(
            getattr(backend, "reset", None)
        ):
            raise ValueError("backend must have probability(frame) and reset() methods")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0.0 < threshold <= 1.0
        ):
            raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
        self.backend = backend
        self.threshold = float(threshold)
        self.end_threshold = min(self.threshold, max(self.threshold - 0.15, 0.05))
        self.start_ms = _positive_ms("start_ms", start_ms, 1)
        self.end_ms = _positive_ms("end_ms", end_ms, 1)
        self.pre_roll_ms = _positive_ms("pre_roll_ms", pre_roll_ms, 0)
        self._start_frames = math.ceil(self.start_ms / FRAME_MS)
        self._end_frames = math.ceil(self.end_ms / FRAME_MS)
        self._pre_frames = math.ceil(self.pre_roll_ms / FRAME_MS)
        self._history: deque[Frame] = deque(maxlen=self._pre_frames + self._start_frames)
        self._reset_state()

    def _reset_state(self) -> None:
        self._floor_db = -math.inf  # the background's level (none heard yet)
        self._peak_db = -math.inf  # the loudest voiced frame of the utterance (or run)
        self._in_speech = False
        self._voiced_run = 0
        self._unvoiced_run = 0
        self._run_start: int | None = None  # index of the first voiced frame of the run
        self._last_voiced_end: int | None = None
        self._prev_index: int | None = None
        self._history.clear()

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def last_voiced_end_ms(self) -> int | None:
        """end_ms of the latest voiced frame since the first start (None before it)."""
        return self._last_voiced_end

    def end_in(self, position_ms: int) -> int:
        """Audio ms from `position_ms` until the utterance ends at the earliest (if the
        voice does not come back): the hangover after the last frame heard as voice."""
        last = self._last_voiced_end
        return self.end_ms - (position_ms - last if last is not None else 0)

    def reset(self) -> None:
        """Forget everything, backend included, so the next session starts clean."""
        self.backend.reset()
        self._reset_state()

    def push(self, frame: Frame) -> VadStep:
        frame = check_frame(frame)
        raw = float(self.backend.probability(frame))
        if not math.isfinite(raw):
            raise ValueError(f"VAD backend returned a non-finite probability {raw!r}")
        probability = min(max(raw, 0.0), 1.0)
        index = int(frame.index)

        # Only now mutate: everything above may raise without touching state.
        if self._prev_index is not None and index != self._prev_index + 1:
            self._voiced_run = 0
            self._unvoiced_run = 0
            self._run_start = None
            self._history.clear()
        self._prev_index = index
        self._history.append(frame)
        level = rms_db(frame.pcm)
        if probability < self.threshold:  # the background, between and around the voice
            rising = self._floor_db + FLOOR_RISE_DB if math.isfinite(self._floor_db) else level
            self._floor_db = min(level, rising)

        if self._in_speech:
            return self._push_in_speech(frame, probability, level)
        return self._push_silent(frame, probability, level)

    def _push_silent(self, frame: Frame, probability: float, level: float) -> VadStep:
        voiced = probability >= self.threshold
        if not voiced:
            self._voiced_run = 0
            self._run_start = None
            self._peak_db = -math.inf
            return VadStep(probability, False, False)
        self._peak_db = max(self._peak_db, level)
        if self._voiced_run == 0:
            self._run_start = int(frame.index)
        self._voiced_run += 1
        if self._voiced_run < self._start_frames or self._run_start is None:
            return VadStep(probability, True, False)
        first = self._run_start - self._pre_frames
        pre_roll = tuple(f for f in self._history if f.index >= first)
        self._in_speech = True
        self._voiced_run = 0
        self._unvoiced_run = 0
        self._last_voiced_end = frame.end_ms
        onset = self._run_start * FRAME_MS
        self._run_start = None
        return VadStep(probability, True, True, started=onset, pre_roll=pre_roll)

    def _push_in_speech(self, frame: Frame, probability: float, level: float) -> VadStep:
        voiced = probability >= self.end_threshold
        quiet = level < max(
            self._peak_db - QUIET_BELOW_PEAK_DB, self._floor_db + QUIET_ABOVE_FLOOR_DB
        )
        if voiced:
            self._peak_db = max(self._peak_db, level)
            self._unvoiced_run = 0
            self._last_voiced_end = frame.end_ms
            return VadStep(probability, True, True, quiet=quiet)
        self._unvoiced_run += 1
        if self._unvoiced_run < self._end_frames:
            return VadStep(probability, False, True, quiet=quiet)
        self._in_speech = False
        self._unvoiced_run = 0
        self._voiced_run = 0
        return VadStep(probability, False, False, stopped=self._last_voiced_end)
