"""How well the frozen LM reads speech through the adapter: transcript WER.

The LM hears an utterance as adapter embeddings in a user turn (the session's
context: the system prompt, the turn opened) and its greedy continuation is
compared with the reference: that is the transcript it formed, and so what
it will answer to. Measured on held-out synthesized speech (sentences and
voices not trained on) and on ../shared/speech's real recordings, through
llama.cpp, the path a session runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio import read_wav
from models.adapter import SpeechAdapter, SpeechEncoder
from models.training.adapter_data import SpokenSet

Progress = Callable[[str, int, int], None]

SHARED_SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "speech"


def shared_recordings(directory: Path = SHARED_SPEECH) -> list[tuple[str, np.ndarray]]:
    """(reference, pcm) for the real recordings, read from their README's table."""
    readme = directory / "README.md"
    if not readme.exists():
        return []
    out = []
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].endswith((".wav", ".raw")):
            continue
        out.append((cells[2], read_wav(directory / cells[0])))
    return out


def evaluate_adapter(
    settings: Any,
    adapter_path: Path,
    held: SpokenSet,
    whisper: Any,
    progress: Progress,
    count: int = 100,
) -> dict[str, Any]:
    """Transcript WER on `count` held-out utterances and on the real recordings."""
    from models import weights
    from models.asr import wer
    from models.lm import LlamaDuplexLM

    adapter = SpeechAdapter.load(adapter_path)
    lm = LlamaDuplexLM(
        weights.LM.resolve(settings.models.lm),
        system_prompt=settings.models.system_prompt,
        device=settings.device,
    )

    def read(frames: np.ndarray) -> str:
        lm.reset()
        lm.listen("")
        lm.cache.hear(adapter.embed(frames))
        return lm.transcribe_heard()

    examples: list[dict[str, str]] = []
    scores = []
    for i in range(min(count, len(held))):
        heard = read(held.utterance(i))
        scores.append(wer(held.texts[i], heard))
        examples.append({"reference": held.texts[i], "heard": heard, "voice": held.voices[i]})
        progress("transcript WER, held-out speech", i + 1, min(count, len(held)))
    encoder = SpeechEncoder(whisper)
    real = []
    for reference, pcm in shared_recordings():
        heard = read(encoder.utterance(pcm))
        real.append({"reference": reference, "heard": heard, "wer": wer(reference, heard)})
    return {
        "wer": float(np.mean(scores)),
        "wer_examples": examples[:12],
        "real_wer": float(np.mean([r["wer"] for r in real])) if real else None,
        "real": real,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def write_card(report: dict[str, Any], path: Path) -> None:
    """The adapter's model card: data, method, metrics, date."""
    rows = "\n".join(
        f"| {e['reference']} | {e['heard']} | {e['voice']} |" for e in report["wer_examples"]
    )
    real = "\n".join(
        f"| {r['reference']} | {r['heard']} | {r['wer']:.2f} |" for r in report["real"]
    )
    real_wer = "n/a" if report["real_wer"] is None else f"{report['real_wer']:.2f}"
    path.write_text(
        f"""# Speech adapter

Whisper tiny.en's encoder (CTranslate2 int8, a 1.28 s window ending at each
160 ms chunk, the chunk's last 8 frames) -> an MLP adapter (4 frames, 1536 ->
768 -> 576, GELU) -> two SmolLM2-135M-Instruct input embeddings per chunk
(12.5 per second), appended to the frozen LM's KV cache in the user turn.

- **Data**: {report["utterances"]} user sentences of `chitchat-dataset` (2-16 words),
  {report["hours"]:.1f} hours of speech: the shipped Piper voice with sampled
  rate, pitch and variation, and espeak-ng voices (accents, variants); white
  noise at 10-40 dB SNR on half. Voices: {report["voices"]}.
- **Method (stage 1)**: the LM frozen (torch, dequantized from the same GGUF);
  next-token loss on the transcript and `<|im_end|>` after the speech
  positions, in the session's context (system prompt, user turn opened).
  AdamW, lr 1e-3, warmup then cosine, batch {report["batch"]}: {_steps(report)}.
- **Loss**: {report["first_loss"]:.2f} at the start, {report["last_loss"]:.2f} at the end;
  held-out {report["held_out_loss"]:.2f} ({report["held_out_utterances"]} utterances,
  sentences not trained on).
- **Trained** {report["date"]}.

## Transcript WER (greedy continuation after the speech, through llama.cpp)

Generation stops at `<|im_end|>` or after 4 + 6 tokens per second of speech heard.

- held-out synthesized speech: **{report["wer"]:.2f}**
- ../shared/speech (real recordings): **{real_wer}**

| reference | the LM read | voice |
| --- | --- | --- |
{rows}

| recording | the LM read | WER |
| --- | --- | --- |
{real}
{_head_section(report.get("state_head"))}"""
    )


def trained_so_far(report: dict[str, Any]) -> tuple[int, float]:
    """Steps and minutes in an adapter, its earlier runs (`--init`) included."""
    return report.get("total_steps", report["steps"]), report.get(
        "total_minutes", report["minutes"]
    )


def _steps(report: dict[str, Any]) -> str:
    total, minutes = trained_so_far(report)
    said = f"{total} steps, {minutes:.0f} minutes on a 2-core CPU"
    if total == report["steps"]:
        return said
    last = report["steps"]
    return f"{said}, in runs that each went on from the adapter before (the last: {last} steps)"


def _head_section(head: dict[str, Any] | None) -> str:
    if head is None:
        return ""
    from models.training.state_data import LABELS

    speech, text = head["speech"], head["text"]

    def confusion(m: dict[str, Any]) -> str:
        c = m["confusion"]
        rows = "\n".join(
            f"| {t} | " + " | ".join(str(c[t][g]) for g in LABELS) + " |" for t in LABELS
        )
        return (
            "| truth \\ predicted | "
            + " | ".join(LABELS)
            + " |\n| --- | --- | --- | --- |\n"
            + rows
        )

    real = head["real"].get("end_of_turn_auc")
    real_auc = "n/a" if real is None else f"{real:.3f}"
    return f"""
# Speech state head (stage 2)

The text head's shape (576 -> 64 -> 3), trained on the LM's hidden states at
speech positions (`models/training/speech_state.py`): {head["train_conversations"]} dialogues of
`chitchat-dataset`, the user turns spoken by the stage-1 voices, half of them
(4+ words) with a 600-1000 ms pause at a random word boundary
({head["pauses"]} positions inside pauses); acknowledgements and interruptions
spoken over partly played answers. Positions in the silence after a turn
(from 160 ms) are speak, inside speech or a pause listen. Classes:
{head["class_counts"]}.

Held out: the text head's {head["held_out_conversations"]} held-out dialogues, for both heads.

| | speech path | text path |
| --- | ---: | ---: |
| end-of-turn ROC AUC | {speech["end_of_turn_auc"]:.3f} | {text["end_of_turn_auc"]:.3f} |
| overlap yield ROC AUC | {speech["overlap_yield_auc"]:.3f} | {text["overlap_yield_auc"]:.3f} |
| accuracy | {speech["accuracy"]:.3f} | {text["accuracy"]:.3f} |
| balanced accuracy | {speech["balanced_accuracy"]:.3f} | {text["balanced_accuracy"]:.3f} |
| examples | {speech["examples"]} | {text["examples"]} |

- Speech path, end of turn against a mid-turn pause (both silences): AUC
  {speech["pause_auc"]:.3f}.
- On ../shared/speech (speech vs the silence after it): AUC {real_auc}.
- The text path's examples are word boundaries (complete turn vs proper
  prefix); the speech path's are 80 ms positions, silences included.

Speech path:

{confusion(speech)}

Text path:

{confusion(text)}
"""
