"""A real OpenAI-compatible inference engine on loopback for tests: llama.cpp's server
(`python -m llama_cpp.server`) serving the shipped GGUF, in its own process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from models.weights import LM

MODEL = "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Engine:
    """`python -m llama_cpp.server` on a free loopback port; `kill` stops it hard."""

    def __init__(self, log: Path, chat_format: str | None = None) -> None:
        """`chat_format`: llama.cpp's prompt format (chatml-function-calling takes tools
        with any GGUF); default: the model's own template."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(LM.resolve()), "--model_alias", MODEL,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", "2048", "--n_threads", "1", "--verbose", "False",
                *(["--chat_format", chat_format] if chat_format else []),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the engine did not start; its log: {log}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/models", timeout=2) as reply:
                return MODEL in json.dumps(json.load(reply))
        except OSError:
            return False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._log.close()
