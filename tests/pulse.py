"""Real audio devices for tests: PulseAudio with two null sinks.

`mic` is the virtual microphone: what is played into it (paplay) is heard
through its monitor, the default source. `spk` is the virtual speaker, the
default sink: what the assistant plays can be recorded from `spk.monitor`.
PortAudio reaches them through ALSA's pulse plugin (`~/.asoundrc`). A
loopback from `spk.monitor` into `mic` is a speaker heard by the microphone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np

from duplex.audio import SAMPLE_RATE, Int16Array

ASOUNDRC = "pcm.!default { type pulse }\nctl.!default { type pulse }\n"


def _pactl(*args: str) -> str:
    return subprocess.run(
        ["pactl", *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout


def start() -> None:
    """Start PulseAudio with the null sinks (once), make them the defaults."""
    for tool in ("pulseaudio", "pactl", "paplay", "parec"):
        assert shutil.which(tool), (
            f"{tool} is missing: apt-get install pulseaudio pulseaudio-utils libasound2-plugins "
            "(make setup)"
        )
    rc = Path.home() / ".asoundrc"
    if not rc.exists():
        rc.write_text(ASOUNDRC)
    if subprocess.run(["pulseaudio", "--check"], capture_output=True).returncode != 0:
        subprocess.run(
            [
                "pulseaudio", "-D", "--exit-idle-time=-1", "-n",
                "--load=module-null-sink sink_name=spk",
                "--load=module-null-sink sink_name=mic",
                "--load=module-native-protocol-unix",
            ],
            check=True,
            timeout=30,
        )  # fmt: skip
        for _ in range(50):
            if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
    _pactl("set-default-sink", "spk")
    _pactl("set-default-source", "mic.monitor")


def loopback(latency_ms: int = 40, volume_percent: int = 50) -> str:
    """The speaker heard by the microphone; returns the module id to unload.

    At `volume_percent` (PulseAudio's cubic scale: 50% is about -18 dB): a
    loudspeaker reaches the microphone well below the voice of the person at
    it, and the user's words over the answer stand above its echo, as in a room.
    """
    module = _pactl(
        "load-module", "module-loopback", "source=spk.monitor", "sink=mic",
        f"latency_msec={latency_ms}",
    ).strip()  # fmt: skip
    listing = _pactl("list", "sink-inputs")
    for block in listing.split("Sink Input #")[1:]:
        if re.search(rf"Owner Module: {module}\b", block):
            _pactl("set-sink-input-volume", block.split()[0], f"{volume_percent}%")
    return module


def unload(module: str) -> None:
    _pactl("unload-module", module)


def write_wav(path: Path, pcm: Int16Array, rate: int = SAMPLE_RATE) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype("<i2").tobytes())
    return path


def play(path: Path, device: str = "mic") -> subprocess.Popen[bytes]:
    """Play a WAV into a sink (the virtual microphone by default), in the background."""
    return subprocess.Popen(["paplay", f"--device={device}", str(path)])


class Recorder:
    """Records a source (the virtual speaker's monitor) as 16 kHz mono PCM16.

    parec writes to a file, not a pipe: a pipe nobody reads fills after 2 s
    of audio and parec then stops recording.
    """

    def __init__(self, path: Path, source: str = "spk.monitor") -> None:
        self._path = path
        self._file = path.open("wb")
        self._process = subprocess.Popen(
            ["parec", f"--device={source}", "--format=s16le", f"--rate={SAMPLE_RATE}",
             "--channels=1", "--latency-msec=20"],
            stdout=self._file,
        )  # fmt: skip

    def stop(self) -> Int16Array:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._file.close()
        data = self._path.read_bytes()
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)
