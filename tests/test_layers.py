"""The layers, as imports: they point inward, and only the composition root (`app/`)
imports every package. Read from the source, so an import inside a function counts
too; one under `if TYPE_CHECKING:` does not (it is never run)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("duplex", "models", "server", "client", "benchmarks", "app")
# what each package may import of the others at run time
ALLOWED = {
    "duplex": set(),
    "models": {"duplex"},
    "server": {"duplex"},
    "client": {"duplex", "server"},  # the remote session reads the server's wire tables
    "benchmarks": {"duplex", "models", "client", "server"},
    "app": {"duplex", "models", "server", "client", "benchmarks"},
}


def _runtime_imports(path: Path) -> set[str]:
    """Top-level names of the modules `path` imports when it runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_inward(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _modules(package)
        for name in _runtime_imports(path)
        if (top := name.split(".")[0]) in PACKAGES
        and top != package
        and top not in ALLOWED[package]
    }
    assert not wrong, sorted(wrong)


def test_the_runtime_never_imports_training() -> None:
    runtime = [p for p in _modules("models") if "training" not in p.parts]
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in runtime + _modules("server") + _modules("client") + _modules("duplex")
        for name in _runtime_imports(path)
        if name.startswith("models.training")
    }
    assert not wrong, sorted(wrong)


def test_the_core_imports_no_model_or_server_library() -> None:
    """The core is numpy + stdlib: the backends live in models/, Prometheus at the server."""
    code = (
        "import sys, duplex.session, duplex.vad, duplex.drive, duplex.events; "
        "heavy = {'webrtcvad', 'onnxruntime', 'faster_whisper', 'ctranslate2', 'llama_cpp', "
        "'torch', 'prometheus_client', 'websockets', 'models', 'server', 'app'} "
        "& set(sys.modules); "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": "."}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env)
