"""The embedded speech stack: real models wired behind the core's ports.

The heavy, stateless parts (the Whisper model, the Piper voice) are loaded
once and shared by every session; what holds a conversation's state (the
recognizer's utterance, the LM's KV cache, the VAD) is per session. An LM
can be handed back and reused after `reset()`, which costs no reload.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

from duplex.audio import Float32Array, Frame, float_to_pcm16, pcm16_to_float
from duplex.clock import ChargedClock, Clock, RealClock
from duplex.config import Settings
from duplex.ports import Recognizer
from duplex.session import Session
from duplex.tdm import Policy
from duplex.vad import VadTracker
from models import weights
from models.adapter import SPEECH_HEAD_PATH, AdapterListener, SpeechAdapter, SpeechEncoder
from models.lm import LlamaDuplexLM
from models.responder import RemoteResponder
from models.state_head import HEAD_PATH, StateHead
from models.tts import AheadSynthesizer, PiperSynthesizer
from models.turn_audio import InlineTurnAudio, SmartTurn
from models.vad import SileroVad, WebRtcVad


class SpeechStack:
    """Loads the models once and builds sessions from them."""

    def __init__(self, settings: Settings) -> None:
        m = settings.models
        self.settings = settings
        # resolve every path now, so a missing model fails before any audio flows
        self.asr_path = weights.ASR.resolve(m.asr)
        self.lm_path = weights.LM.resolve(m.lm)
        self.voice_path = weights.VOICE.resolve(m.voice)
        if m.turn_audio != "off":
            weights.SMART_TURN.resolve(m.turn_audio_path)

    @cached_property
    def whisper(self) -> Any:
        """The shared Whisper model (CTranslate2 serves concurrent sessions)."""
        from models.asr import load_model

        return load_model(self.asr_path, self.settings.device)

    @cached_property
    def turn_audio(self) -> SmartTurn | None:
        """The shared acoustic end-of-turn model (onnxruntime serves concurrent calls)."""
        m = self.settings.models
        return None if m.turn_audio == "off" else SmartTurn(m.turn_audio_path)

    @cached_property
    def voice(self) -> PiperSynthesizer:
        """The shared Piper voice; synthesis keeps no state between clauses."""
        return PiperSynthesizer(self.voice_path, device=self.settings.device)

    def load(self) -> None:
        """Load the shared models now and run each once, so no session pays a cold start."""
        from models.asr import WhisperRecognizer

        speech = pcm16_to_float(self.voice.synthesize("Hello, how are you today?"))
        device = self.settings.device
        WhisperRecognizer(self.asr_path, device=device, model=self.whisper).transcribe(speech)
        self._warm_full_window(speech)
        if self.turn_audio is not None:
            self.turn_audio.end_probability(float_to_pcm16(speech))

    def _warm_full_window(self, speech: Float32Array) -> None:
        """Decode one 30 s window on every recognizer worker at once: each worker's
        buffers grow to the largest window it has decoded and stay, so the growth
        (about 45 MB) lands in warm-up, not as a step in the middle of a call."""
        from models.asr import FULL_WINDOW_S, WhisperRecognizer

        workers = int(getattr(self.whisper.model, "num_workers", 1))
        device = self.settings.device

        def decode() -> None:
            recognizer = WhisperRecognizer(self.asr_path, device=device, model=self.whisper)
            recognizer.transcribe(speech, FULL_WINDOW_S)

        with ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(decode) for _ in range(workers)]:
                done.result()

    @cached_property
    def state_head(self) -> StateHead | None:
        """`models.state_head`: the shipped head, a trained one's path, or None for the rule.

        The rule is the default for now: on `duplex bench` it beat the shipped
        head on pauses (TOR 1/3 against 3/3) at the same end-of-turn latency.
        """
        choice = self.settings.models.state_head
        if choice in ("", "rule"):
            return None
        return StateHead.load(HEAD_PATH if choice == "shipped" else choice)

    @cached_property
    def adapter(self) -> SpeechAdapter:
        """The speech adapter (`models.adapter`), shared: it keeps no state."""
        return SpeechAdapter.load(self.settings.models.adapter or None)

    @cached_property
    def speech_head(self) -> StateHead:
        """The state head trained on speech positions (`models.speech_head`)."""
        return StateHead.load(self.settings.models.speech_head or SPEECH_HEAD_PATH)

    def new_listener(self) -> AdapterListener:
        """A session's speech path: the shared encoder and adapter, its own window."""
        return AdapterListener(SpeechEncoder(self.whisper), self.adapter)

    def new_lm(self) -> LlamaDuplexLM:
        m = self.settings.models
        return LlamaDuplexLM(
            self.lm_path,
            system_prompt=m.system_prompt,
            device=self.settings.device,
            context_tokens=m.context_tokens,
            history_tokens=m.history_tokens,
            threads=m.lm_threads,
            read_threads=m.lm_read_threads,
            max_response_tokens=m.max_response_tokens,
            temperature=m.temperature,
            seed=m.seed,
            state_head=self.state_head,
            calculator=m.calculator,
        )

    def new_responder(self) -> RemoteResponder:
        """A client of the configured external engine (`responder.*`), for one session."""
        m = self.settings.models
        return RemoteResponder(
            self.settings.responder, max_tokens=m.max_response_tokens, temperature=m.temperature
        )

    def new_session(
        self,
        clock: Clock,
        *,
        lm: LlamaDuplexLM | None = None,
        policy: Policy | None = None,
        remote: bool | None = None,
        ahead: bool | None = None,
        understanding: str | None = None,
    ) -> Session:
        """A session on the shared models; pass `lm` to reuse one (it is reset here).

        `remote`: answers from the external engine (default: `responder.kind`).
        `ahead`: later clauses synthesized on background threads (default: where
        the clock is real; on a virtual clock synthesis stays in the loop, charged).
        `understanding`: text, speech or both (default: `models.understanding`).
        """
        from models.asr import WhisperRecognizer

        s = self.settings
        if remote is None:
            remote = s.responder.kind == "remote"
        if ahead is None:
            ahead = isinstance(clock, RealClock)
        if lm is None:
            lm = self.new_lm()
        else:
            lm.reset()
        backend = SileroVad() if s.vad.backend == "silero" else WebRtcVad(s.vad.webrtc_mode)
        vad = VadTracker(
            backend,
            threshold=s.vad.threshold,
            start_ms=s.vad.start_ms,
            end_ms=s.vad.end_ms,
            pre_roll_ms=s.vad.pre_roll_ms,
        )
        understanding = understanding or s.models.understanding
        if understanding != "text" and lm.speech_head is None:
            lm.speech_head = self.speech_head
        recognizer: Recognizer = (
            NoRecognizer()  # the LM hears the speech itself: no decodes
            if understanding == "speech"
            else WhisperRecognizer(
                self.asr_path,
                device=s.device,
                interval_ms=s.models.asr_interval_ms,
                model=self.whisper,
            )
        )
        return Session(
            vad=vad,
            recognizer=recognizer,
            lm=lm,
            synthesizer=AheadSynthesizer(self.voice) if ahead else self.voice,
            clock=clock,
            settings=s.policy,
            policy=policy,
            responder=self.new_responder() if remote else None,
            speech=None if understanding == "text" else self.new_listener(),
            understanding=understanding,
            turn_audio=(
                self.turn_audio
                if self.turn_audio is None or isinstance(clock, RealClock | ChargedClock)
                else InlineTurnAudio(self.turn_audio)  # compute is free: its answer at once
            ),
        )


class NoRecognizer:
    """The recognizer of a session that hears speech through the adapter alone: no
    words, no decodes, so no transcript events either."""

    last_confidence = 0.0

    def accept(self, frame: Frame) -> None:
        pass

    def stable(self) -> str:
        return ""

    def pause(self) -> str:
        return ""

    def finish(self) -> str:
        return ""

    def reset(self) -> None:
        pass
