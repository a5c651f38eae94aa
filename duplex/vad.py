"""Voice activity: per-frame speech probability and the hysteresis that turns it into turns.

Two backends answer "how likely is this 20 ms frame speech?": `WebRtcVad` (cheap,
binary, fooled by loud broadband noise) and `SileroVad` (a small streaming
LSTM, robust to noise). Both satisfy the core's `VoiceActivity` port
structurally, so the session can be tested with a scripted fake instead.

`VadTracker` turns those probabilities into speech start/stop events on the input
timeline. Start needs a run of voiced frames (so a click does not open a turn),
stop needs a run of unvoiced frames (so a pause between words does not close
one), and the threshold drops while in speech (so a soft word ending stays in).
On start it hands back the frames just before the onset, so the recognizer also
hears the first syllable that was spoken before the tracker was sure.

Heavy libraries (webrtcvad, onnxruntime, faster_whisper) are imported inside the
backend constructors only, keeping `import duplex.vad` numpy + stdlib.
"""

from __future__ import annotations

import importlib.resources
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from duplex.audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Frame, rms_db

__all__ = ["SileroVad", "VadStep", "VadTracker", "WebRtcVad"]

# A frame in speech is *quiet* when its level is this far below the utterance's loudest
# frame, or this close to the background's floor: the voice has likely stopped, about
# 60-140 ms before Silero's probability falls (its 32 ms chunks and its smoothing)
QUIET_BELOW_PEAK_DB = 35.0
QUIET_ABOVE_FLOOR_DB = 3.0
# the floor is the quietest recent level: it drops at once and rises 2.5 dB a second,
# so it follows a background that grows louder
FLOOR_RISE_DB = 0.05

SILERO_CHUNK = 512  # samples the v6 model consumes per call at 16 kHz (32 ms)
SILERO_CONTEXT = 64  # samples of the previous chunk prepended to each call
_SILERO_STATE = (1, 1, 128)


class _Backend(Protocol):
    """What the tracker needs from a backend (the core's `VoiceActivity` port)."""

    def probability(self, frame: Frame) -> float: ...

    def reset(self) -> None: ...


def _check_frame(frame: object) -> Frame:
    """Reject anything that is not a well-formed 20 ms frame, before any state changes."""
    if not isinstance(frame, Frame):
        raise ValueError(f"expected a duplex.audio.Frame, got {type(frame).__name__}")
    pcm = frame.pcm
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.shape != (FRAME_SAMPLES,):
        dtype = getattr(pcm, "dtype", type(pcm).__name__)
        shape = getattr(pcm, "shape", "?")
        raise ValueError(f"a frame holds {FRAME_SAMPLES} int16 samples, got {dtype} {shape}")
    if isinstance(frame.index, bool) or not isinstance(frame.index, int | np.integer):
        raise ValueError(f"frame index must be an integer, got {frame.index!r}")
    return frame


class WebRtcVad:
    """Google's WebRTC GMM VAD: a binary decision per 20 ms frame, nearly free.

    `mode` 0..3 trades recall for precision (3 rejects the most non-speech).
    It has no notion of confidence, so the probability is 1.0 or 0.0.
    """

    def __init__(self, mode: int = 2) -> None:
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 3:
            raise ValueError(f"WebRTC VAD mode must be 0, 1, 2 or 3, got {mode!r}")
        try:
            import webrtcvad
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "WebRtcVad needs the webrtcvad module; pip install webrtcvad-wheels"
            ) from exc
        self.mode = mode
        self._module: Any = webrtcvad
        self._vad: Any = webrtcvad.Vad(mode)

    def probability(self, frame: Frame) -> float:
        frame = _check_frame(frame)
        return 1.0 if self._vad.is_speech(frame.to_bytes(), SAMPLE_RATE) else 0.0

    def reset(self) -> None:
        """A fresh instance: the GMM adapts its noise model, which must not leak across sessions."""
        self._vad = self._module.Vad(self.mode)


def silero_model_path() -> Path:
    """The Silero v6 ONNX model that ships inside faster-whisper (no download needed)."""
    hint = "the Silero VAD model ships with faster-whisper; pip install faster-whisper"
    try:
        resource = importlib.resources.files("faster_whisper") / "assets" / "silero_vad_v6.onnx"
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"faster_whisper is not installed: {hint}") from exc
    path = Path(str(resource))
    if not path.is_file():
        raise RuntimeError(f"Silero VAD model not found at {path}: {hint}")
    return path


class SileroVad:
    """Silero VAD v6 run as a stream: one 512-sample chunk as soon as 512 new samples exist.

    The model wants 32 ms chunks (plus 64 samples of left context) while frames
    are 20 ms, so samples are buffered and the LSTM state (h, c) is carried
    across chunks. A frame's probability is the output of the latest chunk that
    has finished (0.0 before the first one), i.e. it lags by at most one chunk.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        model = silero_model_path() if path is None else Path(path)
        if not model.is_file():
            raise RuntimeError(f"Silero VAD model not found at {model}")
        try:
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError("SileroVad needs onnxruntime; pip install onnxruntime") from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one tiny LSTM step: threads cost more than they save
        options.inter_op_num_threads = 1
        options.log_severity_level = 4
        self.path = model
        self._session: Any = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.reset()

    def reset(self) -> None:
        """Zero the LSTM state, the context and the sample buffer."""
        self._h = np.zeros(_SILERO_STATE, dtype=np.float32)
        self._c = np.zeros(_SILERO_STATE, dtype=np.float32)
        self._context = np.zeros(SILERO_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._last = 0.0

    def probability(self, frame: Frame) -> float:
        frame = _check_frame(frame)
        self._pending = np.concatenate([self._pending, frame.samples()])
        while self._pending.size >= SILERO_CHUNK:
            chunk = self._pending[:SILERO_CHUNK]
            self._pending = self._pending[SILERO_CHUNK:]
            self._last = self._run(chunk)
        return self._last

    def _run(self, chunk: npt.NDArray[np.float32]) -> float:
        window = np.concatenate([self._context, chunk])[np.newaxis, :]
        out, self._h, self._c = self._session.run(
            None, {"input": window, "h": self._h, "c": self._c}
        )
        self._context = chunk[-SILERO_CONTEXT:].copy()
        return float(np.clip(np.asarray(out).reshape(-1)[0], 0.0, 1.0))


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
        backend: _Backend,
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

    def reset(self) -> None:
        """Forget everything, backend included, so the next session starts clean."""
        self.backend.reset()
        self._reset_state()

    def push(self, frame: Frame) -> VadStep:
        frame = _check_frame(frame)
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
