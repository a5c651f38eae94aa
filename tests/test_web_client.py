"""The browser client in headless Chromium against a live server with the real models.

Chromium's fake microphone plays a WAV file (in a loop): a spoken question,
then a barge-in over the answer, then silence. The page must connect, the
server must hear the question, the page must play an answer and flush it
when the user talks over it.
"""

from __future__ import annotations

import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from app.stack import SpeechStack
from duplex.audio import SAMPLE_RATE, Int16Array
from duplex.config import Settings
from server.app import DuplexServer, Limits, StackSessions
from tests.live import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUESTION = "Can you tell me a long story about a dragon and a princess?"
BARGE_IN = "No, tell me about the moon instead."
BARGE_IN_AFTER_S = 4.0  # after the question ends: the answer is playing by then
LEAD_IN_S = 3.0  # silence before the question: the page connects meanwhile


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    sessions = StackSessions(SpeechStack(Settings()))
    server = LiveServer(DuplexServer(sessions, port=0, limits=Limits(max_sessions=2)))
    yield server
    server.stop()


def microphone_wav(live: LiveServer, path: Path) -> Path:
    """Silence, the question, a pause while the answer plays, the barge-in, then silence."""
    voice = live.server.sessions.stack.voice  # type: ignore[attr-defined]

    def silence(seconds: float) -> Int16Array:
        return np.zeros(int(SAMPLE_RATE * seconds), np.int16)

    pcm = np.concatenate(
        [
            # the fake microphone starts with getUserMedia; what it plays before the
            # session's `ready` is not sent (the page sets up its audio, then connects)
            silence(LEAD_IN_S),
            voice.synthesize(QUESTION),
            silence(BARGE_IN_AFTER_S),
            voice.synthesize(BARGE_IN),
            silence(30.0),
        ]
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.astype("<i2").tobytes())
    return path


@pytest.fixture
def page(live: LiveServer, tmp_path: Path) -> Iterator[Page]:
    assert Path(CHROMIUM).exists(), "chromium is missing: apt-get install chromium (make setup)"
    wav = microphone_wav(live, tmp_path / "microphone.wav")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
            ],
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_browser_client_talks_and_is_interrupted(live: LiveServer, page: Page) -> None:
    logs: list[str] = []
    page.on("console", lambda message: logs.append(message.text))
    page.on("pageerror", lambda error: logs.append(f"page error: {error}"))
    page.goto(f"http://{live.url}/")
    page.click("#start")

    page.wait_for_function("window.duplex.sessionId !== null", timeout=30_000)
    assert page.evaluate("window.duplex.state") in ("listening", "hearing"), logs

    page.wait_for_function("window.duplex.finals.length > 0", timeout=60_000)
    heard = page.evaluate("window.duplex.finals[0]").lower()
    assert "story" in heard and "dragon" in heard, heard

    # the answer is played here: at least half a second of audible samples
    page.wait_for_function("window.duplex.audible > window.duplex.sampleRate / 2", timeout=60_000)
    assert page.locator("#transcript li.assistant").count() >= 1

    # the barge-in: the server stops the answer and the page flushes its playback
    page.wait_for_function("window.duplex.cleared.length > 0", timeout=60_000)
    interrupted = page.evaluate("window.duplex.events.find(e => e.type === 'interrupted') ?? null")
    assert interrupted is not None, page.evaluate("window.duplex.events.map(e => e.type)")
    answer = page.evaluate("window.duplex.answers[0]")
    assert answer["heard"] is not None and len(answer["heard"]) < len(answer["text"])
    assert page.locator("#transcript .unheard").count() >= 1, (answer, interrupted)

    # the barge-in was heard as the user's next turn, and the turn table filled in
    page.wait_for_function(
        "window.duplex.finals.slice(1).some(f => f.toLowerCase().includes('moon'))",
        timeout=60_000,
    )
    page.wait_for_function("window.duplex.turns.length > 0", timeout=30_000)
    first = page.evaluate("window.duplex.turns[0]")
    assert first["outcome"] == "interrupted" and first["end_of_turn_ms"] > 0
    assert page.locator("#turns tbody tr").count() >= 1
    assert not [line for line in logs if line.startswith("page error")], logs
