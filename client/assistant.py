"""`duplex chat`: the voice assistant on this machine's microphone and speaker.

Two sounddevice streams, one for the microphone and one for the speaker,
run in 20 ms blocks at 16 kHz: on ALSA's PulseAudio plugin one full-duplex
stream's input falls behind its output and stays there (docs/decisions.md,
"Two device streams"). The callbacks only move samples: the
input one queues each captured block, the output one plays the next block
of the answer (or silence) and queues what it played as the echo
canceller's reference. A worker thread feeds the canceller, steps the
engine (in-process, or a server through `client.remote`) and queues what it
says. A barge-in empties the output queue: the speaker goes quiet within
one block, and the session keeps in the history only what had been heard
(it is told how far playback runs behind what it sent).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from client.conversation import Conversation
from client.echo import EchoCanceller, EchoGate, erle_db
from duplex.audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Frame, Int16Array, rms_db
from duplex.commands import SetOutputDelay
from duplex.events import Event, Interrupted, ResponseAudio
from duplex.ports import Closes, Steps
from duplex.session import Session

log = logging.getLogger(__name__)

MAX_QUEUED_BLOCKS = 100  # 2 s of microphone waiting for the engine; newer blocks are dropped
RECENT_PLAYBACK_BLOCKS = 10  # the echo of what played this long ago may still be arriving


class DevicesUnavailable(RuntimeError):
    """No PortAudio, or no such device."""


def sounddevice_module() -> Any:
    """sounddevice, or one clear line on why audio devices cannot be used."""
    try:
        import sounddevice
    except OSError as error:  # the PortAudio library is missing
        raise DevicesUnavailable(
            f"PortAudio is not available ({error}): install it (apt-get install libportaudio2)"
        ) from None
    return sounddevice


def list_devices() -> str:
    sd = sounddevice_module()
    return str(sd.query_devices())


class EchoStats:
    """Levels before and after cancellation while the assistant was playing.

    ERLE (echo return loss enhancement) is the median drop, in dB, over
    blocks with playback and sound at the microphone: how much of the echo
    was removed (blocks where the user talked over it are counted too).
    """

    def __init__(self) -> None:
        self.drops: list[float] = []

    def add(self, captured: Int16Array, cleaned: Int16Array, played: Int16Array) -> None:
        if rms_db(played) > -50 and rms_db(captured) > -70:
            self.drops.append(erle_db(captured, cleaned))

    @property
    def erle_db(self) -> float | None:
        return float(np.median(self.drops)) if self.drops else None


class Assistant:
    """Runs a conversation on audio devices until `stop()` (or `seconds` pass)."""

    def __init__(
        self,
        make_engine: Callable[[], Steps],
        *,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        echo_cancel: bool = True,
        events_path: Path | None = None,
        on_change: Callable[[Conversation], None] | None = None,
    ) -> None:
        self.sd = sounddevice_module()
        self._make_engine = make_engine
        self._devices = (input_device, output_device)
        self._echo_cancel = echo_cancel
        self._events_file = events_path.open("w") if events_path else None
        self._on_change = on_change
        self.conversation = Conversation()
        self.echo = EchoStats()
        self.gate = EchoGate()
        self.dropped_blocks = 0
        self._delay_ms = 0.0  # input plus output latency, from PortAudio: the echo's delay
        self._input: queue.Queue[Int16Array] = queue.Queue(MAX_QUEUED_BLOCKS)
        self._played: deque[Int16Array] = deque(maxlen=MAX_QUEUED_BLOCKS)  # the reference
        # (level dB, block) of what played lately, the level measured once per block
        self._recent: deque[tuple[float, Int16Array]] = deque(maxlen=RECENT_PLAYBACK_BLOCKS)
        self._output: deque[Int16Array] = deque()
        self._input_ms = self._output_ms = 0.0
        self._stop = threading.Event()

    # the audio callbacks: no allocation beyond a copy, no locks, no waiting -------------

    def _capture(self, indata: Any, frames: int, times: Any, _status: Any) -> None:
        self._input_ms = (times.currentTime - times.inputBufferAdcTime) * 1000
        try:
            self._input.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.dropped_blocks += 1

    def _play(self, outdata: Any, frames: int, times: Any, _status: Any) -> None:
        self._output_ms = (times.outputBufferDacTime - times.currentTime) * 1000
        try:
            played = self._output.popleft()
        except IndexError:
            played = np.zeros(frames, np.int16)
        outdata[:, 0] = played
        self._played.append(played)

    # the worker ---------------------------------------------------------------------

    def run(self, seconds: float | None = None) -> None:
        """Open the devices and talk until `stop()`, Ctrl-C or `seconds`."""
        self._check_devices()  # a missing device fails before the models load
        engine = self._make_engine()
        streams = self._open_streams()
        canceller = None
        if self._echo_cancel:
            canceller = EchoCanceller()
            canceller.capture(np.zeros(FRAME_SAMPLES, np.int16))  # load its library now
        deadline = None if seconds is None else time.monotonic() + seconds
        index = 0
        try:
            for stream in streams:
                stream.start()
            self._write({"type": "ready"})
            self.conversation.status = "ready: talk any time"
            if self._on_change is not None:
                self._on_change(self.conversation)
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                try:
                    captured = self._input.get(timeout=0.1)
                except queue.Empty:
                    continue
                heard = self._cancel_echo(canceller, captured)
                if isinstance(engine, Session):  # what is queued or in the device is unheard
                    delay = round(self._output_ms + len(self._output) * FRAME_MS)
                    self._handle(engine.handle(SetOutputDelay(delay)))
                self._handle(engine.step(Frame(index, heard)))
                index += 1
        finally:
            for stream in streams:  # abort, not stop: nothing left to drain, and stop can hang
                stream.abort()
                stream.close()
            if isinstance(engine, Closes):
                engine.close()
            if self._events_file is not None:
                self._write({"type": "echo", "erle_db": self.echo.erle_db,
                             "gated_blocks": self.gate.gated,
                             "dropped_blocks": self.dropped_blocks})  # fmt: skip
                self._events_file.close()

    def _check_devices(self) -> None:
        settings = {"samplerate": SAMPLE_RATE, "channels": 1, "dtype": "int16"}
        try:
            self.sd.check_input_settings(device=self._devices[0], **settings)
            self.sd.check_output_settings(device=self._devices[1], **settings)
        except Exception as error:  # PortAudioError, ValueError: no such device
            raise DevicesUnavailable(f"cannot open the audio devices: {error}") from None

    def _open_streams(self) -> tuple[Any, Any]:
        common = {
            "samplerate": SAMPLE_RATE,
            "blocksize": FRAME_SAMPLES,
            "channels": 1,
            "dtype": "int16",
            "latency": "low",
        }
        try:
            microphone = self.sd.InputStream(
                device=self._devices[0], callback=self._capture, **common
            )
            speaker = self.sd.OutputStream(device=self._devices[1], callback=self._play, **common)
        except Exception as error:  # PortAudioError, ValueError: no such device
            raise DevicesUnavailable(f"cannot open the audio devices: {error}") from None
        return microphone, speaker

    def _cancel_echo(self, canceller: EchoCanceller | None, captured: Int16Array) -> Int16Array:
        """What the microphone heard, less the assistant's own voice."""
        if canceller is None:
            return captured
        while self._played:  # the reference first: everything played up to now
            played = self._played.popleft()
            canceller.reverse(played)
            self._recent.append((rms_db(played), played))
        canceller.delay_ms = round(self._input_ms + self._output_ms)
        cleaned = canceller.capture(captured)
        _, recent = max(self._recent, key=lambda r: r[0], default=(0.0, np.zeros(0, np.int16)))
        self.echo.add(captured, cleaned, recent)
        return self.gate(cleaned, recent)

    def stop(self) -> None:
        self._stop.set()

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ResponseAudio):
                self._output.append(event.pcm)
            elif isinstance(event, Interrupted):
                self._output.clear()  # the speaker goes quiet at the next block
            self.conversation.apply(event)
            if not isinstance(event, ResponseAudio):
                self._write(event.to_dict())
        if events and self._on_change is not None:
            self._on_change(self.conversation)

    def _write(self, data: dict[str, Any]) -> None:
        if self._events_file is not None:
            self._events_file.write(json.dumps(data) + "\n")
            self._events_file.flush()
