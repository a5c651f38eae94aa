"""Settings: defaults < TOML file < DUPLEX_* environment < --set overrides.

Every test passes `environ` explicitly and runs in an empty tmp directory, so
neither the real environment nor a stray ./duplex.toml can leak in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from duplex.config import (
    PolicySettings,
    Settings,
    VadSettings,
    _coerce,
    load_settings,
    parse_assignments,
)

FILE_TOML = '[policy]\ntick_ms = 120\n\n[vad]\nbackend = "webrtc"\n'


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: Any) -> str:
    """The message of the ValueError that load_settings raises; it must be one line."""
    kwargs.setdefault("environ", {})
    with pytest.raises(ValueError) as info:
        load_settings(**kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# defaults


def test_defaults_validate_and_match_the_dataclasses() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.validate() is settings
    assert settings.device == "auto"
    assert settings.vad == VadSettings()
    assert settings.policy == PolicySettings()
    assert settings.policy.tick_ms == 160
    assert settings.vad.backend == "silero"


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(AttributeError):
        settings.policy.tick_ms = 20  # type: ignore[misc]


# the four layers


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "custom.toml", FILE_TOML)
    settings = load_settings(path, environ={})
    assert settings.policy.tick_ms == 120
    assert settings.vad.backend == "webrtc"
    # untouched keys keep their defaults
    assert settings.policy.max_silence_ms == PolicySettings().max_silence_ms
    assert settings.vad.threshold == VadSettings().threshold
    assert load_settings(str(path), environ={}) == settings


def test_top_level_key_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'device = "cpu"\n')
    assert load_settings(path, environ={}).device == "cpu"


def test_default_file_in_cwd_is_read(tmp_path: Path) -> None:
    write(tmp_path / "duplex.toml", FILE_TOML)
    assert load_settings(environ={}).policy.tick_ms == 120


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", FILE_TOML)
    settings = load_settings(path, environ={"DUPLEX_POLICY__TICK_MS": "240"})
    assert settings.policy.tick_ms == 240
    assert settings.vad.backend == "webrtc"  # from the file, env did not touch it


def test_env_alone_and_top_level(tmp_path: Path) -> None:
    env = {"DUPLEX_VAD__THRESHOLD": "0.7", "DUPLEX_DEVICE": "cuda", "HOME": "/x", "PATH": "/y"}
    settings = load_settings(environ=env)
    assert settings.vad.threshold == 0.7
    assert settings.device == "cuda"


def test_overrides_beat_env(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", FILE_TOML)
    settings = load_settings(
        path,
        overrides={"policy.tick_ms": "320"},
        environ={"DUPLEX_POLICY__TICK_MS": "240"},
    )
    assert settings.policy.tick_ms == 320
    assert settings.vad.backend == "webrtc"


def test_precedence_layer_by_layer(tmp_path: Path) -> None:
    """Each key is set by a different number of layers; the highest one wins."""
    path = write(
        tmp_path / "c.toml",
        "[policy]\ntick_ms = 120\nmin_silence_ms = 150\nmax_silence_ms = 1500\n"
        "audio_lead_ms = 400\n",
    )
    env = {
        "DUPLEX_POLICY__MIN_SILENCE_MS": "200",
        "DUPLEX_POLICY__MAX_SILENCE_MS": "1600",
        "DUPLEX_POLICY__MAX_BACKCHANNEL_MS": "1000",
    }
    overrides = {"policy.max_silence_ms": "1700", "policy.tokens_per_call": "8"}
    p = load_settings(path, overrides=overrides, environ=env).policy
    defaults = PolicySettings()
    assert p.yield_threshold == defaults.yield_threshold  # defaults only
    assert p.tick_ms == 120  # file
    assert p.audio_lead_ms == 400  # file
    assert p.min_silence_ms == 200  # file < env
    assert p.max_backchannel_ms == 1000  # env
    assert p.max_silence_ms == 1700  # file < env < override
    assert p.tokens_per_call == 8  # override


def test_duplex_config_env_points_at_file(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.toml", FILE_TOML)
    write(tmp_path / "duplex.toml", "[policy]\ntick_ms = 60\n")
    settings = load_settings(environ={"DUPLEX_CONFIG": str(path)})
    assert settings.policy.tick_ms == 120
    assert settings.vad.backend == "webrtc"


def test_explicit_path_beats_duplex_config(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", "[policy]\ntick_ms = 60\n")
    b = write(tmp_path / "b.toml", "[policy]\ntick_ms = 80\n")
    assert load_settings(a, environ={"DUPLEX_CONFIG": str(b)}).policy.tick_ms == 60


def test_empty_duplex_config_falls_back_to_default_file(tmp_path: Path) -> None:
    write(tmp_path / "duplex.toml", FILE_TOML)
    assert load_settings(environ={"DUPLEX_CONFIG": ""}).policy.tick_ms == 120


def test_environ_empty_isolates_from_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("DUPLEX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DUPLEX_POLICY__TICK_MS", "240")
    monkeypatch.setenv("DUPLEX_CONFIG", "/does/not/exist.toml")
    assert load_settings(environ={}).policy.tick_ms == 160
    # and without `environ` the process environment is what is read
    monkeypatch.delenv("DUPLEX_CONFIG")
    assert load_settings().policy.tick_ms == 240


# type coercion


def test_coercion_from_strings() -> None:
    settings = load_settings(
        overrides={
            "policy.tick_ms": "320",
            "vad.threshold": "0.25",
            "vad.backend": "webrtc",
            "device": "cpu",
            "policy.yield_threshold": "1",
        },
        environ={},
    )
    assert settings.policy.tick_ms == 320 and type(settings.policy.tick_ms) is int
    assert settings.vad.threshold == 0.25 and type(settings.vad.threshold) is float
    assert settings.vad.backend == "webrtc"
    assert settings.device == "cpu"
    assert settings.policy.yield_threshold == 1.0
    assert type(settings.policy.yield_threshold) is float


def test_int_in_toml_becomes_float(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[policy]\nyield_threshold = 1\n")
    value = load_settings(path, environ={}).policy.yield_threshold
    assert value == 1.0 and type(value) is float


def test_non_string_overrides_are_accepted() -> None:
    settings = load_settings(overrides={"policy.tick_ms": 200, "vad.threshold": 0.3}, environ={})
    assert settings.policy.tick_ms == 200
    assert settings.vad.threshold == 0.3


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("ON", True),
     ("0", False), ("false", False), ("No", False), ("off", False)],
)  # fmt: skip
def test_bool_coercion(text: str, expected: bool) -> None:
    assert _coerce(text, False, "x.flag") is expected
    assert _coerce(expected, True, "x.flag") is expected


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [("7", 0, 7), ("2.5", 0.0, 2.5), (3, 0.0, 3.0), ("abc", "", "abc"), (5, 0, 5)],
)
def test_coerce_values(value: Any, default: Any, expected: Any) -> None:
    result = _coerce(value, default, "x.y")
    assert result == expected
    assert type(result) is type(default)


@pytest.mark.parametrize(
    ("value", "default"),
    [("maybe", False), ("2.5", 0), (True, 0), (1.5, 0), (2.0, 0), ("x", 0.0), (3, ""), (1, False)],
)
def test_coerce_rejects(value: Any, default: Any) -> None:
    with pytest.raises(ValueError, match=f"setting x.y must be {type(default).__name__}"):
        _coerce(value, default, "x.y")


# errors, each one clear line


def test_unknown_section() -> None:
    message = config_error(overrides={"polcy.tick_ms": "120"})
    assert "unknown setting 'polcy.tick_ms'" in message
    assert "device, models, policy, responder, vad" in message


def test_unknown_key_lists_known_keys() -> None:
    message = config_error(overrides={"policy.tick": "120"})
    assert "unknown setting 'policy.tick'" in message
    for name in ("tick_ms", "min_silence_ms", "max_silence_ms", "yield_threshold"):
        assert name in message


def test_unknown_key_from_env() -> None:
    message = config_error(environ={"DUPLEX_VAD__BACKNED": "webrtc"})
    assert "unknown setting 'vad.backned'" in message
    assert "backend" in message and "threshold" in message


def test_unknown_key_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[vad]\nthreshhold = 0.4\n")
    assert "unknown setting 'vad.threshhold'" in config_error(path=path)


def test_section_set_as_value() -> None:
    assert "is a section" in config_error(overrides={"policy": "x"})


def test_scalar_used_as_section(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[device]\nname = "cpu"\n')
    message = config_error(path=path)
    assert "device.name" in message and "not a section" in message


def test_wrong_type() -> None:
    message = config_error(overrides={"policy.tick_ms": "fast"})
    assert message == "setting policy.tick_ms must be int, got 'fast'"


def test_wrong_type_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[policy]\ntick_ms = 120.0\n")
    assert "setting policy.tick_ms must be int, got 120.0" in config_error(path=path)
    path = write(tmp_path / "d.toml", "[vad]\nbackend = 3\n")
    assert "setting vad.backend must be str, got 3" in config_error(path=path)


@pytest.mark.parametrize("tick", ["150", "0", "-20", "10"])
def test_tick_not_multiple_of_20(tick: str) -> None:
    message = config_error(overrides={"policy.tick_ms": tick})
    assert "policy.tick_ms must be a positive multiple of 20" in message
    assert message.endswith(f"got {int(tick)}")


@pytest.mark.parametrize("tick", ["20", "40", "100", "640"])
def test_tick_multiples_of_20_pass(tick: str) -> None:
    assert load_settings(overrides={"policy.tick_ms": tick}, environ={}).policy.tick_ms == int(tick)


def test_min_silence_above_max() -> None:
    message = config_error(
        overrides={"policy.min_silence_ms": "500", "policy.max_silence_ms": "400"}
    )
    assert "policy.min_silence_ms must be between 0 and policy.max_silence_ms" in message
    # equal is fine
    p = load_settings(
        overrides={"policy.min_silence_ms": "400", "policy.max_silence_ms": "400"}, environ={}
    ).policy
    assert p.min_silence_ms == p.max_silence_ms == 400


def test_negative_min_silence() -> None:
    assert "policy.min_silence_ms" in config_error(overrides={"policy.min_silence_ms": "-1"})


def test_bad_backend() -> None:
    message = config_error(overrides={"vad.backend": "energy"})
    assert message == "vad.backend must be silero or webrtc, got 'energy'"


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("device", "tpu", "device must be auto, cpu or cuda"),
        ("vad.threshold", "0", "vad.threshold must be in (0, 1)"),
        ("vad.threshold", "1", "vad.threshold must be in (0, 1)"),
        ("vad.webrtc_mode", "4", "vad.webrtc_mode must be 0..3"),
        ("policy.yield_threshold", "0", "policy.yield_threshold must be in (0, 1]"),
        ("policy.tokens_per_call", "0", "policy.max_tokens_per_tick must be >="),
        ("policy.max_tokens_per_tick", "2", "policy.max_tokens_per_tick must be >="),
    ],
)
def test_other_validation(key: str, value: str, fragment: str) -> None:
    assert fragment in config_error(overrides={key: value})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[policy\ntick_ms = 120\n")
    message = config_error(path=path)
    assert message.startswith(f"config file {path} is not valid TOML")


def test_invalid_default_toml_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "duplex.toml", "tick_ms = = 1\n")
    assert "is not valid TOML" in config_error()


def test_missing_explicit_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert config_error(path=missing) == f"config file {missing} does not exist"


def test_missing_duplex_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    message = config_error(environ={"DUPLEX_CONFIG": str(missing)})
    assert message == f"config file {missing} does not exist"


def test_directory_as_config(tmp_path: Path) -> None:
    assert "cannot be read" in config_error(path=tmp_path)


def test_bad_env_value_is_reported() -> None:
    message = config_error(environ={"DUPLEX_POLICY__TICK_MS": "soon"})
    assert message == "setting policy.tick_ms must be int, got 'soon'"


# --set parsing


def test_parse_assignments() -> None:
    pairs = ["policy.tick_ms=120", " vad.backend = webrtc ", "device=", "a.b=x=y"]
    assert parse_assignments(pairs) == {
        "policy.tick_ms": "120",
        "vad.backend": "webrtc",
        "device": "",
        "a.b": "x=y",
    }
    assert parse_assignments([]) == {}
    assert parse_assignments(["policy.tick_ms=120", "policy.tick_ms=240"]) == {
        "policy.tick_ms": "240"
    }


@pytest.mark.parametrize("pair", ["policy.tick_ms", "=120", " =120", ""])
def test_parse_assignments_rejects(pair: str) -> None:
    with pytest.raises(ValueError, match="--set takes KEY=VALUE") as info:
        parse_assignments([pair])
    assert "\n" not in str(info.value)


def test_parse_assignments_feeds_overrides() -> None:
    overrides = parse_assignments(["policy.tick_ms=320", "vad.threshold=0.4"])
    settings = load_settings(overrides=overrides, environ={"DUPLEX_POLICY__TICK_MS": "240"})
    assert settings.policy.tick_ms == 320
    assert settings.vad.threshold == 0.4


def test_numpy_blas_runs_on_the_calling_thread_unless_the_user_says_otherwise() -> None:
    """numpy's OpenBLAS workers spin between our small products: a sixth of two cores
    under four server sessions. Importing duplex sets one thread, before numpy loads."""
    probe = "import duplex, numpy, os; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run = [sys.executable, "-c", probe]
    assert subprocess.run(run, env=env, capture_output=True, text=True).stdout.strip() == "1"
    env["OPENBLAS_NUM_THREADS"] = "2"
    assert subprocess.run(run, env=env, capture_output=True, text=True).stdout.strip() == "2"
