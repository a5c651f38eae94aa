"""Voice activity backends behind the core's `VoiceActivity` port.

`WebRtcVad` is cheap and binary, and loud broadband noise fools it;
`SileroVad` is a small streaming LSTM (the ONNX that faster-whisper ships),
robust to noise. Their libraries load in the constructors.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio import SAMPLE_RATE, Float32Array, Frame, check_frame

SILERO_CHUNK = 512  # samples the v6 model consumes per call at 16 kHz (32 ms)
SILERO_CONTEXT = 64  # samples of the previous chunk prepended to each call
_SILERO_STATE = (1, 1, 128)


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
        frame = check_frame(frame)
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
        frame = check_frame(frame)
        self._pending = np.concatenate([self._pending, frame.samples()])
        while self._pending.size >= SILERO_CHUNK:
            chunk = self._pending[:SILERO_CHUNK]
            self._pending = self._pending[SILERO_CHUNK:]
            self._last = self._run(chunk)
        return self._last

    def _run(self, chunk: Float32Array) -> float:
        window = np.concatenate([self._context, chunk])[np.newaxis, :]
        out, self._h, self._c = self._session.run(
            None, {"input": window, "h": self._h, "c": self._c}
        )
        self._context = chunk[-SILERO_CONTEXT:].copy()
        return float(np.clip(np.asarray(out).reshape(-1)[0], 0.0, 1.0))
