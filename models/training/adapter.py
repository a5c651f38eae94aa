"""`duplex train-adapter`: teach the adapter to make the frozen LM read speech.

Stage 1 (this module's `train`): every example is the session's context
(system prompt, the user turn opened) followed by an utterance's adapter
embeddings, then its transcript and the turn's end. The loss is the LM's
next-token loss on the transcript tokens and `<|im_end|>` only; the LM
(torch, from the same GGUF: `models/training/torch_lm.py`) is frozen, the adapter
alone learns. So the LM learns nothing, and the speech positions come to
mean what the words would: a greedy continuation after them is a
transcript, and `<|im_end|>` after them is the turn's end.

Stage 2 (`models/training/speech_state.py`) retrains the state head on the speech
path's hidden states.

Runs on the 2-core CPU: encoder frames are cached on disk
(`models/training/adapter_data.py`), checkpoints are written every `checkpoint_every`
steps and a rerun resumes from the last one.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.adapter import SpeechAdapter
from models.training.adapter_data import SpokenSet

SPEECH_HEAD_NAME = "speech_state_head.npz"  # saved beside the adapter
_SYSTEM = "<|im_start|>system\n{prompt}<|im_end|>\n<|im_start|>user\n"
_END = "<|im_end|>"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch: int = 8
    lr: float = 1e-3
    warmup: int = 60
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 50
    system_prompt: str = "You are a helpful voice assistant. Keep answers short."


class Tokenizer:
    """The GGUF's own tokenizer (llama.cpp, vocabulary only): tokens as a session makes them."""

    def __init__(self, model_path: str | Path) -> None:
        import llama_cpp

        with contextlib.redirect_stderr(io.StringIO()):  # llama.cpp's load chatter
            self._llm = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)

    def __call__(self, text: str, special: bool = True) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def decode(self, tokens: list[int]) -> str:
        return self._llm.detokenize(tokens).decode("utf-8", "replace")


class Stage1:
    """The adapter, the frozen torch LM and the batches they train on."""

    def __init__(
        self, lm: Any, tokenizer: Tokenizer, adapter: SpeechAdapter, config: TrainConfig
    ) -> None:
        import torch

        self.lm, self.tokenizer, self.adapter, self.config = lm, tokenizer, adapter, config
        self.prefix = torch.tensor(tokenizer(_SYSTEM.format(prompt=config.system_prompt)))
        self.end = tokenizer(_END)
        self._text_cache: dict[str, list[int]] = {}
        self._prefix: Any = None  # the system prompt's keys and values in the frozen LM

    def _text(self, text: str) -> list[int]:
        if text not in self._text_cache:
            self._text_cache[text] = self.tokenizer(text, special=False) + self.end
        return self._text_cache[text]

    def loss(self, data: SpokenSet, indices: list[int]) -> Any:
        """Mean next-token loss over the batch's transcript tokens."""
        import torch
        from torch.nn import functional as F

        embed = self.lm.embed.weight
        if self._prefix is None or self._prefix[0][0].device != embed.device:
            # the system prompt is the same in every sequence and the LM is frozen
            self._prefix = self.lm.prefix_cache(embed[self.prefix.to(embed.device)][None])
        rows, targets = [], []
        for i in indices:
            speech = self.adapter(torch.from_numpy(data.utterance(i)).to(embed.device))
            text = self._text(data.texts[i])
            text_t = torch.tensor(text, device=embed.device)
            rows.append(torch.cat([speech, embed[text_t[:-1]]]))
            # position p predicts token p + 1: the last speech position predicts the first word
            targets.append((len(speech) - 1, text_t))
        length = max(len(r) for r in rows)
        batch = torch.zeros(len(rows), length, embed.shape[1], device=embed.device)
        for b, row in enumerate(rows):
            batch[b, : len(row)] = row
        hidden = self.lm.hidden_states(batch, self._prefix)
        picked = torch.cat([hidden[b, s : s + len(t)] for b, (s, t) in enumerate(targets)])
        labels = torch.cat([t for _, t in targets])
        return F.cross_entropy(self.lm.logits(picked), labels)


def batch_indices(lengths: list[int], config: TrainConfig, step: int) -> list[int]:
    """The utterances of one step: each epoch is a fresh shuffle, cut into groups of 50
    batches whose utterances are sorted by length, so a batch holds similar lengths and
    little of it is padding (2/3 of a random batch's positions were real, 98% of these).
    Every utterance is seen once per epoch; a step's batch depends only on seed and step."""
    per_epoch = max(1, len(lengths) // config.batch)
    epoch, position = divmod(step, per_epoch)
    rng = random.Random(config.seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = config.batch * 50
    batches = []
    for start in range(0, per_epoch * config.batch, group):
        part = sorted(
            order[start : min(start + group, per_epoch * config.batch)], key=lengths.__getitem__
        )
        batches += [part[i : i + config.batch] for i in range(0, len(part), config.batch)]
    rng.shuffle(batches)
    return batches[position]


def train(
    stage: Stage1,
    data: SpokenSet,
    held_out: SpokenSet,
    run_dir: Path,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Stage 1, resumable: returns the training report (losses, steps, minutes)."""
    import torch

    config = stage.config
    torch.manual_seed(config.seed)
    params = list(stage.adapter.module.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def rate(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        done = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "checkpoint.pt"
    state: dict[str, Any] = {"step": 0, "losses": [], "seconds": 0.0}
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False, map_location="cpu")
        if saved["config"] == asdict(config):
            stage.adapter.module.load_state_dict(saved["adapter"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            state = saved["state"]
    lengths = (data.ends - data.starts).tolist()
    stage.adapter.module.train()
    started = time.perf_counter() - state["seconds"]
    while state["step"] < config.steps:
        step = state["step"]
        indices = batch_indices(lengths, config, step)
        loss = stage.loss(data, indices)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        state["losses"].append(loss.item())
        state["step"] = step + 1
        state["seconds"] = time.perf_counter() - started
        if progress:
            progress(state["step"], state["losses"][-1])
        if state["step"] % config.checkpoint_every == 0 or state["step"] == config.steps:
            partial = checkpoint.with_suffix(".part")
            torch.save(
                {
                    "config": asdict(config),
                    "adapter": stage.adapter.module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "state": state,
                },
                partial,
            )
            partial.replace(checkpoint)
    stage.adapter.module.eval()
    by_length = sorted(range(len(held_out)), key=lambda i: held_out.ends[i] - held_out.starts[i])
    with torch.no_grad():
        held = [
            float(stage.loss(held_out, by_length[i : i + 16])) for i in range(0, len(held_out), 16)
        ]
    losses = state["losses"]
    report = {
        "steps": state["step"],
        "batch": config.batch,
        "minutes": state["seconds"] / 60,
        "first_loss": float(np.mean(losses[:20])),
        "last_loss": float(np.mean(losses[-50:])),
        "held_out_loss": float(np.mean(held)),
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


Progress = Callable[[str, int, int], None]


def spoken_sets(
    encoder: Any, utterances: int, held_out: int, seed: int, progress: Progress
) -> tuple[SpokenSet, SpokenSet]:
    """Training and held-out speech (different sentences), built once into the cache."""
    from models.training.adapter_data import build_set, sentences
    from models.weights import cache_dir

    texts = sentences(utterances + held_out, seed=seed)
    root = cache_dir() / "adapter-speech"
    sets = []
    for name, part, offset in (
        ("held-out", texts[:held_out], 1),
        (f"train-{seed}", texts[held_out:], 0),
    ):
        done = 0

        def step(n: int, name: str = name, total: int = len(part)) -> None:
            nonlocal done
            done += n
            progress(f"speaking and encoding {name}", done, total)

        sets.append(build_set(root / name, part, encoder, seed=seed + offset, progress=step))
    return sets[1], sets[0]


def train_adapter(
    settings: Any,
    *,
    utterances: int = 6000,
    held_out: int = 200,
    steps: int = 1000,
    batch: int = 8,
    seed: int = 0,
    out: str | Path | None = None,
    stages: tuple[int, ...] = (1, 2),
    conversations: int = 120,
    init: str | Path | None = None,
    progress: Progress = lambda what, done, total: None,
) -> dict[str, Any]:
    """Speak and encode, train the adapter (stage 1), measure its transcripts, train the
    speech state head (stage 2); save both with the model card. A rerun resumes; `init`
    starts stage 1 from a saved adapter (the shipped one: train it further)."""
    import torch

    from models import weights
    from models.adapter import ADAPTER_PATH, SpeechEncoder
    from models.asr import load_model
    from models.training.adapter_eval import evaluate_adapter, write_card
    from models.training.torch_lm import TorchLM
    from models.weights import cache_dir

    whisper = load_model(weights.ASR.resolve(settings.models.asr), settings.device)
    encoder = SpeechEncoder(whisper)
    data, held = spoken_sets(encoder, utterances, held_out, seed, progress)
    lm_path = weights.LM.resolve(settings.models.lm)
    path = Path(out) if out else ADAPTER_PATH
    report_path = path.with_suffix(".json")
    report: dict[str, Any] = {}
    if report_path.exists():
        report = json.loads(report_path.read_text())
    if 1 in stages:
        progress("loading the LM in torch", 0, 1)
        config = TrainConfig(
            steps=steps, batch=batch, seed=seed, system_prompt=settings.models.system_prompt
        )
        adapter = SpeechAdapter.load(init) if init else SpeechAdapter()
        device = "cuda" if settings.device != "cpu" and torch.cuda.is_available() else "cpu"
        adapter.module.to(device)
        frozen = TorchLM.from_gguf(lm_path).to(device)
        stage = Stage1(frozen, Tokenizer(lm_path), adapter, config)

        def step(done: int, loss: float) -> None:
            progress(f"stage 1, loss {loss:.2f}", done, steps)

        run = f"adapter-run-{seed}" + (f"-from-{Path(init).stem}" if init else "")
        report = train(stage, data, held, cache_dir() / run, step)
        adapter.module.to("cpu")
        stage.adapter.save(path)
        report.update(
            utterances=len(data),
            hours=float(sum(data.ends - data.starts)) * 0.16 / 3600,
            held_out_utterances=len(held),
            voices=_voice_mix(data),
        )
        steps_before, minutes_before = _earlier_training(init)
        report.update(
            total_steps=steps_before + report["steps"],
            total_minutes=minutes_before + report["minutes"],
        )
    if "wer" not in report:
        report.update(evaluate_adapter(settings, path, held, whisper, progress))
    if 2 in stages:
        from models.lm import LlamaDuplexLM
        from models.training.speech_state import train_speech_head

        lm = LlamaDuplexLM(lm_path, system_prompt=settings.models.system_prompt, device="cpu")
        head, report["state_head"] = train_speech_head(
            lm,
            encoder,
            SpeechAdapter.load(path),
            conversations=conversations,
            seed=seed,
            progress=progress,
        )
        head.save(path.with_name(SPEECH_HEAD_NAME))
    report_path.write_text(json.dumps(report, indent=1))
    write_card(report, path.with_suffix(".md"))
    return report


def _earlier_training(init: str | Path | None) -> tuple[int, float]:
    """Steps and minutes already in the adapter training starts from (its report, if any)."""
    from models.training.adapter_eval import trained_so_far

    report = Path(init).with_suffix(".json") if init else None
    if report is None or not report.exists():
        return 0, 0.0
    return trained_so_far(json.loads(report.read_text()))


def _voice_mix(data: SpokenSet) -> dict[str, int]:
    kinds = [v.split()[0] for v in data.voices]
    return {k: kinds.count(k) for k in sorted(set(kinds))}
