"""The embedded speech stack: real models wired behind the core's ports.

Weights are resolved once; each session gets its own recognizer state, LM
context (KV cache) and synthesizer, so sessions never share mutable state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from duplex.clock import Clock
from duplex.config import Settings
from duplex.session import Session
from duplex.vad import SileroVad, VadTracker, WebRtcVad
from models import weights


@dataclass(frozen=True)
class SpeechStack:
    """Paths and settings from which sessions are built."""

    settings: Settings
    asr_path: Path
    lm_path: Path
    voice_path: Path

    @classmethod
    def resolve(cls, settings: Settings) -> SpeechStack:
        """Find every model's weights now, so a missing one fails before any audio flows."""
        m = settings.models
        return cls(
            settings,
            weights.ASR.resolve(m.asr),
            weights.LM.resolve(m.lm),
            weights.VOICE.resolve(m.voice),
        )

    def new_session(self, clock: Clock) -> Session:
        from models.asr import WhisperRecognizer
        from models.lm import LlamaDuplexLM
        from models.tts import PiperSynthesizer

        s, m = self.settings, self.settings.models
        backend = SileroVad() if s.vad.backend == "silero" else WebRtcVad(s.vad.webrtc_mode)
        vad = VadTracker(
            backend,
            threshold=s.vad.threshold,
            start_ms=s.vad.start_ms,
            end_ms=s.vad.end_ms,
            pre_roll_ms=s.vad.pre_roll_ms,
        )
        return Session(
            vad=vad,
            recognizer=WhisperRecognizer(
                self.asr_path, device=s.device, interval_ms=m.asr_interval_ms
            ),
            lm=LlamaDuplexLM(
                self.lm_path,
                system_prompt=m.system_prompt,
                device=s.device,
                context_tokens=m.context_tokens,
                max_response_tokens=m.max_response_tokens,
                temperature=m.temperature,
                seed=m.seed,
            ),
            synthesizer=PiperSynthesizer(self.voice_path, device=s.device),
            clock=clock,
            settings=s.policy,
        )
