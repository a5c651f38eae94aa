"""Acoustic end-of-turn evidence: Smart Turn v3.2, behind the TurnEndAudio port.

Smart Turn (BSD-2-Clause, shipped inside the `pipecat-ai` wheel) is a
Whisper-tiny encoder with a classifier, trained on real and synthetic speech
in many languages to say from the sound alone whether a speaker has
finished: 8 s of audio in (the end of the turn, zero-padded at the front),
one probability out. Its features are Whisper's log-mel spectrogram of the
waveform normalized to zero mean and unit variance, which faster-whisper's
feature extractor computes (checked equal to Smart Turn's own to 1e-6).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio import SAMPLE_RATE, Int16Array, pcm16_to_float
from models.weights import SMART_TURN

log = logging.getLogger(__name__)

WINDOW_S = 8  # the model reads exactly this much audio


class SmartTurn:
    """P(the turn is complete) from the last 8 s of the user's audio."""

    def __init__(
        self, path: str | Path | None = None, *, threads: int = 1, workers: int = 2
    ) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        model = SMART_TURN.resolve(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        started = time.perf_counter()
        self._session: Any = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._features: Any = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
        # sessions share the model; an estimate runs beside the recognizer's decode
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="smart-turn")
        log.info("loaded %s in %.2f s", model, time.perf_counter() - started)

    def start(self, pcm: Int16Array) -> Future[float]:
        return self._pool.submit(self.end_probability, pcm.copy())

    def end_probability(self, pcm: Int16Array) -> float:
        samples = WINDOW_S * SAMPLE_RATE
        audio = pcm16_to_float(pcm[-samples:])
        audio = np.pad(audio, (samples - audio.size, 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        features = self._features(audio, padding=0)[:, : samples // 160]
        out = self._session.run(None, {self._input: features[None].astype(np.float32)})
        return float(np.asarray(out[0]).reshape(-1)[0])


class InlineTurnAudio:
    """The model's answer at once, on the caller's thread: for a clock that charges no
    compute (`duplex bench --ideal`), where a thread's result would arrive late."""

    def __init__(self, model: SmartTurn) -> None:
        self._model = model

    def start(self, pcm: Int16Array) -> Future[float]:
        return resolved(self._model.end_probability(pcm))


def resolved(p_end: float) -> Future[float]:
    """An estimate that is already here."""
    done: Future[float] = Future()
    done.set_result(p_end)
    return done
