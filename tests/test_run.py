"""`duplex run` end to end: real models, no network, a two-turn spoken exchange."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from duplex.audio import SAMPLE_RATE, read_wav, write_wav

TURNS = ((300, "What is the capital of France?"), (9000, "And how far away is the moon?"))
TOTAL_MS = 18_000


def _no_network() -> list[str]:
    """Run in a fresh network namespace (no interfaces) where the system allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


@pytest.fixture(scope="module")
def user_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.tts import PiperSynthesizer

    voice = PiperSynthesizer(noise_scale=0.0, noise_w=0.0)
    track = np.zeros(TOTAL_MS * SAMPLE_RATE // 1000, dtype=np.int16)
    for start_ms, text in TURNS:
        pcm = voice.synthesize(text)
        start = start_ms * SAMPLE_RATE // 1000
        track[start : start + pcm.size] = pcm
    path = tmp_path_factory.mktemp("run") / "user.wav"
    write_wav(path, track)
    return path


def test_duplex_run_answers_each_turn_offline(user_wav: Path, tmp_path: Path) -> None:
    from faster_whisper import WhisperModel

    from models.weights import ASR

    out, track, transcript = tmp_path / "reply.wav", tmp_path / "assistant.wav", tmp_path / "t.json"
    command = [
        *_no_network(),
        sys.executable, "-m", "app.cli", "run", "--fast",
        "--input", str(user_wav), "--output", str(out),
        "--assistant-track", str(track), "--transcript", str(transcript),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(transcript.read_text())
    users = [t for t in data["turns"] if t["role"] == "user"]
    answers = [t for t in data["turns"] if t["role"] == "assistant"]
    assert len(users) == 2 and users[0]["text"].lower().startswith("what is the capital")
    assert "moon" in users[1]["text"].lower()
    assert len(answers) >= 2 and all(a["text"] for a in answers)
    assert len(data["metrics"]) >= 2
    # each answer is heard after its question, and Whisper hears words in it
    assistant = read_wav(track)
    whisper = WhisperModel(str(ASR.resolve()), device="cpu", compute_type="int8")
    for (question_ms, _), answer in zip(TURNS, answers, strict=False):
        assert answer["audio_start_ms"] > question_ms
        a, b = (answer[k] * SAMPLE_RATE // 1000 for k in ("audio_start_ms", "audio_end_ms"))
        segments, _ = whisper.transcribe(
            assistant[a:b].astype(np.float32) / 32768, language="en", beam_size=1
        )
        words = " ".join(s.text for s in segments).split()
        assert len(words) >= 2, f"no words heard in answer {answer}"
    assert read_wav(out).size >= assistant.size > 0


def test_the_last_answer_is_heard_to_its_end(tmp_path: Path) -> None:
    """A recording that ends right after a question: silence follows it while the
    answer plays, so the answer is there, complete, in the transcript and the track."""
    from models.tts import PiperSynthesizer

    pcm = PiperSynthesizer(noise_scale=0.0, noise_w=0.0).synthesize("Why is the sky blue?")
    wav = tmp_path / "user.wav"
    write_wav(wav, np.concatenate([np.zeros(4800, np.int16), pcm, np.zeros(4800, np.int16)]))
    transcript, track = tmp_path / "t.json", tmp_path / "assistant.wav"
    command = [
        sys.executable, "-m", "app.cli", "run", "--fast", "--input", str(wav),
        "--output", str(tmp_path / "reply.wav"), "--assistant-track", str(track),
        "--transcript", str(transcript),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [answer] = [t for t in json.loads(transcript.read_text())["turns"] if t["role"] == "assistant"]
    assert answer["status"] == "completed" and answer["text"]
    assert read_wav(track).size * 1000 // SAMPLE_RATE >= answer["audio_end_ms"] > 0
