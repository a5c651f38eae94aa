"""One settings object, from defaults < TOML file < environment < CLI flags.

Every key has one name everywhere: `policy.tick_ms` in the TOML table
`[policy]`, `DUPLEX_POLICY__TICK_MS` in the environment, `--set
policy.tick_ms=120` on the command line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "DUPLEX_"
DEFAULT_CONFIG = Path("duplex.toml")


@dataclass(frozen=True)
class VadSettings:
    """Voice activity detection and its hysteresis."""

    backend: str = "silero"  # silero | webrtc
    threshold: float = 0.5  # speech probability that counts as voiced
    start_ms: int = 60  # voiced this long before speech starts
    end_ms: int = 100  # unvoiced this long before speech ends (and the policy may decide)
    pre_roll_ms: int = 200  # audio kept before the onset for the recognizer
    webrtc_mode: int = 2  # WebRTC aggressiveness, 0..3


@dataclass(frozen=True)
class PolicySettings:
    """The TDM loop's cadence and its turn-taking thresholds."""

    tick_ms: int = 160  # one listen/decide/speak slice
    # while listening: silence needed to take the turn shrinks as P(speak) grows
    min_silence_ms: int = 150  # needed when P(speak) = 1
    max_silence_ms: int = 2000  # the cap, needed when P(speak) = 0
    # after this much unvoiced audio inside speech the recognizer decodes at once and
    # the rest of the VAD's hangover is held back: if the turn ends there, its final
    # pass is already done (from vad.end_ms on, never)
    pause_decode_ms: int = 40
    speculate_threshold: float = 0.6  # P(speak) to start writing the answer early (1 never)
    # the acoustic end-of-turn estimate (models.turn_audio) fused with the words': in
    # log-odds, logit(p_speak) = logit(p_text) + audio_weight * logit(p_audio) + audio_bias;
    # words the text estimate calls unfinished (P(speak) <= text_unfinished) stay so
    audio_weight: float = 1.0
    audio_bias: float = 0.0
    text_unfinished: float = 0.1
    # while speaking: what to do when the user talks over the answer
    yield_threshold: float = 0.5  # P(speak) over the overlap that makes the assistant yield
    max_backchannel_ms: int = 1200  # overlap speech longer than this always yields
    # after a barge-in the user has the floor and usually goes on ("Wait. Stop. What
    # about Spain?"): the turn is not taken back before this much silence
    after_barge_in_silence_ms: int = 600
    hold_on_overlap: bool = True  # pause output at the user's onset until yield or dismiss
    # a frame this likely to be speech pauses the answer for that frame (below the VAD's
    # threshold: in noise a voice's first frames score lower); 20 ms lost if it was not
    hold_probability: float = 0.3
    # words said over the answer that the recognizer decoded with a lower mean token
    # log-probability are a guess at a non-word sound ("mm-hm"): never a reason to yield
    min_overlap_confidence: float = -0.45
    # speak slice
    audio_lead_ms: int = 480  # keep this much synthesized audio ahead of playout
    # output is sent at most this far ahead of the clock: a cushion against the
    # device running dry, paid for in barge-in latency (sent audio plays out)
    send_ahead_ms: int = 60
    # bound on decoding work in one tick once audio is queued, so the loop keeps hearing
    # the user (8 tokens ~ 75 ms on 2 cores); the first clause is written in one go
    max_tokens_per_tick: int = 8
    tokens_per_call: int = 4  # tokens decoded between cancellation checks


@dataclass(frozen=True)
class ModelSettings:
    """Which weights to run and how; an empty path means the packaged default."""

    asr: str = ""  # a CTranslate2 Whisper folder (default: packaged tiny.en)
    lm: str = ""  # a GGUF chat model (default: packaged SmolLM2-135M-Instruct)
    voice: str = ""  # a Piper .onnx voice, its .onnx.json beside it (default: en_US-joe-medium)
    state_head: str = "rule"  # "rule", "shipped" (the trained head) or a head's .npz path
    # how the LM hears the user: text (the recognizer's words), speech (the adapter's
    # embeddings, no recognizer), both (speech for the state head, words for the answer)
    understanding: str = "text"
    adapter: str = ""  # a trained speech adapter's .npz (default: the shipped one)
    speech_head: str = ""  # the state head for speech positions (default: the shipped one)
    # acoustic end-of-turn evidence: "smart-turn" (Smart Turn v3.2, from pipecat-ai),
    # "off", or a Smart Turn-format ONNX file
    turn_audio: str = "smart-turn"
    asr_interval_ms: int = 320  # re-decode the current utterance this often
    system_prompt: str = "You are a helpful voice assistant. Keep answers short."
    max_response_tokens: int = 48  # an answer longer than this is cut (a voice answer is short)
    temperature: float = 0.0  # 0 decodes greedily
    # the answer to a spoken sum ("what is seven plus eight") is its result, worked
    # out exactly: the in-process LM cannot add (the external engine answers on its own)
    calculator: bool = True
    seed: int = 0
    context_tokens: int = 4096  # KV cache size per session
    # earlier turns kept in the cache when a user turn opens; the oldest leave first
    history_tokens: int = 2048
    lm_threads: int = 1  # CPU threads per session's LM: a second spins against the recognizer
    # CPU threads for the LM reading several tokens at once (the user's words, the answer's
    # header): the end of a turn waits on it, and nothing else runs then
    lm_read_threads: int = 2

    @property
    def turn_audio_path(self) -> str:
        """The acoustic model's own path, if `turn_audio` names one ("": the packaged one)."""
        return "" if self.turn_audio in ("smart-turn", "off") else self.turn_audio


@dataclass(frozen=True)
class ResponderSettings:
    """Who writes the answers: the frozen LM in process, or an OpenAI-compatible engine
    (vLLM, SGLang, llama.cpp's server) while the frozen LM still decides the turns."""

    kind: str = "local"  # local | remote
    base_url: str = ""  # the engine's API root, e.g. http://127.0.0.1:8000/v1
    model: str = ""  # the model name the engine serves
    api_key: str = ""  # sent as a Bearer token (DUPLEX_RESPONDER__API_KEY keeps it out of files)
    first_token_ms: int = 1500  # no first token by then: the local LM answers instead
    timeout_s: float = 2.0  # to connect, and between two chunks of a stream (then: fallback)


@dataclass(frozen=True)
class Settings:
    device: str = "auto"  # auto | cpu | cuda
    vad: VadSettings = field(default_factory=VadSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    responder: ResponderSettings = field(default_factory=ResponderSettings)

    def validate(self) -> Settings:
        """Reject combinations the loop cannot run with, in one line each."""
        p, v, r = self.policy, self.vad, self.responder
        checks = [
            (
                r.kind in ("local", "remote"),
                f"responder.kind must be local or remote, got {r.kind!r}",
            ),
            (
                r.kind != "remote" or r.base_url.startswith(("http://", "https://")),
                "responder.kind=remote needs responder.base_url, an http(s) URL such as "
                "http://127.0.0.1:8000/v1",
            ),
            (
                self.models.understanding in ("text", "speech", "both"),
                "models.understanding must be text, speech or both, got "
                f"{self.models.understanding!r}",
            ),
            (
                self.models.lm_threads > 0,
                f"models.lm_threads must be > 0, got {self.models.lm_threads}",
            ),
            (
                0 < self.models.history_tokens < self.models.context_tokens,
                "models.history_tokens must be between 0 and models.context_tokens, "
                f"got {self.models.history_tokens}",
            ),
            (
                self.models.lm_read_threads > 0,
                f"models.lm_read_threads must be > 0, got {self.models.lm_read_threads}",
            ),
            (r.first_token_ms > 0, f"responder.first_token_ms must be > 0, got {r.first_token_ms}"),
            (r.timeout_s > 0, f"responder.timeout_s must be > 0, got {r.timeout_s}"),
            (
                self.device in ("auto", "cpu", "cuda"),
                f"device must be auto, cpu or cuda, got {self.device!r}",
            ),
            (
                v.backend in ("silero", "webrtc"),
                f"vad.backend must be silero or webrtc, got {v.backend!r}",
            ),
            (0.0 < v.threshold < 1.0, f"vad.threshold must be in (0, 1), got {v.threshold}"),
            (v.webrtc_mode in (0, 1, 2, 3), f"vad.webrtc_mode must be 0..3, got {v.webrtc_mode}"),
            (
                p.tick_ms > 0 and p.tick_ms % 20 == 0,
                f"policy.tick_ms must be a positive multiple of 20, got {p.tick_ms}",
            ),
            (
                0 <= p.min_silence_ms <= p.max_silence_ms,
                "policy.min_silence_ms must be between 0 and policy.max_silence_ms, "
                f"got {p.min_silence_ms} and {p.max_silence_ms}",
            ),
            (
                0.0 < p.yield_threshold <= 1.0,
                f"policy.yield_threshold must be in (0, 1], got {p.yield_threshold}",
            ),
            (
                p.pause_decode_ms > 0 and p.pause_decode_ms % 20 == 0,
                "policy.pause_decode_ms must be a positive multiple of 20, "
                f"got {p.pause_decode_ms}",
            ),
            (p.send_ahead_ms >= 0, f"policy.send_ahead_ms must be >= 0, got {p.send_ahead_ms}"),
            (
                p.tokens_per_call > 0 and p.max_tokens_per_tick >= p.tokens_per_call,
                "policy.max_tokens_per_tick must be >= policy.tokens_per_call > 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Turn a TOML or string value into the type of the setting's default."""
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            if kind is bool:
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return kind(value)
        except ValueError:
            pass
    raise ValueError(f"setting {key} must be {kind.__name__}, got {value!r}")


def _apply(settings: Settings, updates: Mapping[str, Any]) -> Settings:
    """Apply dotted keys (`policy.tick_ms`) to a settings object."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    names = {f.name for f in fields(Settings)}
    for key, value in updates.items():
        section, _, name = key.partition(".")
        if section not in names:
            raise ValueError(f"unknown setting {key!r}; sections are {', '.join(sorted(names))}")
        current = getattr(settings, section)
        is_section = is_dataclass(current)
        if not name:
            if is_section:
                raise ValueError(f"setting {key!r} is a section; set {key}.<name>")
            top[section] = _coerce(value, current, key)
            continue
        if not is_section:
            raise ValueError(f"unknown setting {key!r}; {section} is not a section")
        known = {f.name for f in fields(current)}
        if name not in known:
            raise ValueError(f"unknown setting {key!r}; {section} has {', '.join(sorted(known))}")
        sections.setdefault(section, {})[name] = _coerce(value, getattr(current, name), key)
    for section, values in sections.items():
        top[section] = replace(getattr(settings, section), **values)
    return replace(settings, **top)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        key[len(ENV_PREFIX) :].lower().replace("__", "."): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key != "DUPLEX_CONFIG"
    }


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """`KEY=VALUE` strings from `--set` flags."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE (e.g. policy.tick_ms=120), got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def load_settings(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the TOML file, then `DUPLEX_*` variables, then `overrides`.

    Without `path`, `$DUPLEX_CONFIG` is read (it must exist), else `./duplex.toml`
    if it exists. Every error is a ValueError with a one-line message.
    """
    environ = os.environ if environ is None else environ
    settings = Settings()
    explicit = path or environ.get("DUPLEX_CONFIG") or None
    file = Path(explicit) if explicit else DEFAULT_CONFIG
    if explicit and not file.exists():
        raise ValueError(f"config file {file} does not exist")
    if explicit or file.is_file():
        try:
            table = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"config file {file} cannot be read: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"config file {file} is not valid TOML: {error}") from None
        settings = _apply(settings, _flatten(table))
    settings = _apply(settings, _from_env(environ))
    settings = _apply(settings, overrides or {})
    return settings.validate()
