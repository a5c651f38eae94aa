"""`duplex chat`: the voice assistant on this machine's microphone and speaker.

One sounddevice stream carries input and output in one callback, 20 ms
blocks at 16 kHz. The callback only moves samples: it hands each captured
block, with the block it played at the same moment, to a bounded queue, and
plays the next queued block of the answer (or silence). A worker thread
cancels the echo, steps the engine (in-process, or a server through
`client.remote`) and queues what it says. A barge-in empties the output
queue, so the speaker goes quiet within one block.
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
from client.echo import EchoCanceller, EchoGate, rms_db
from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE, Frame, Int16Array
from duplex.drive import Closes, Steps
from duplex.events import Event, Interrupted, ResponseAudio

log = logging.getLogger(__name__)

MAX_QUEUED_BLOCKS = 100  # 2 s of microphone waiting for the engine; older blocks are dropped


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
    """Levels before and after cancellation while only the assistant was playing.

    ERLE (echo return loss enhancement) is the median drop, in dB, over
    blocks with playback and no user speech: how much of the echo was removed.
    """

    def __init__(self) -> None:
        self.drops: list[float] = []

    def add(self, captured: Int16Array, cleaned: Int16Array, played: Int16Array) -> None:
        if rms_db(played) > -50 and rms_db(captured) > -70:
            self.drops.append(rms_db(captured) - rms_db(cleaned))

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
        self.underruns = 0
        self._input: queue.Queue[tuple[Int16Array, Int16Array]] = queue.Queue(MAX_QUEUED_BLOCKS)
        self._output: deque[Int16Array] = deque()
        self._stop = threading.Event()

    # the audio callback: no allocation beyond a copy, no locks, no waiting ---------------

    def _callback(self, indata: Any, outdata: Any, frames: int, _time: Any, _status: Any) -> None:
        try:
            played = self._output.popleft()
        except IndexError:
            played = np.zeros(frames, np.int16)
        outdata[:, 0] = played
        try:
            self._input.put_nowait((indata[:, 0].copy(), played))
        except queue.Full:
            self.dropped_blocks += 1

    # the worker ---------------------------------------------------------------------

    def run(self, seconds: float | None = None) -> None:
        """Open the devices and talk until `stop()`, Ctrl-C or `seconds`."""
        try:
            stream = self.sd.Stream(
                samplerate=SAMPLE_RATE,
                blocksize=FRAME_SAMPLES,
                channels=1,
                dtype="int16",
                latency="low",
                device=self._devices,
                callback=self._callback,
            )
        except Exception as error:  # PortAudioError, ValueError: no such device
            raise DevicesUnavailable(f"cannot open the audio devices: {error}") from None
        engine = self._make_engine()
        delay_ms = round(sum(stream.latency) * 1000) if isinstance(stream.latency, tuple) else 0
        canceller = EchoCanceller(delay_ms) if self._echo_cancel else None
        deadline = None if seconds is None else time.monotonic() + seconds
        index = 0
        try:
            with stream:
                self._write({"type": "ready", "latency_ms": delay_ms})
                while not self._stop.is_set():
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    try:
                        captured, played = self._input.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    heard = captured
                    if canceller is not None:
                        heard = canceller.process(captured, played)
                        self.echo.add(captured, heard, played)
                        heard = self.gate(heard, played)
                    self._handle(engine.step(Frame(index, heard)))
                    index += 1
        finally:
            if isinstance(engine, Closes):
                engine.close()
            if self._events_file is not None:
                self._write({"type": "echo", "erle_db": self.echo.erle_db,
                             "gated_blocks": self.gate.gated,
                             "dropped_blocks": self.dropped_blocks})  # fmt: skip
                self._events_file.close()

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
