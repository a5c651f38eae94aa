"""`duplex train-state-head`: hidden states from the frozen LM, a small head, a model card.

One LM forward per example gives the hidden state at every word boundary of
a user turn (`LlamaDuplexLM.encode`). Whole conversations are held out. The
head is trained with class weights (proper prefixes far outnumber complete
turns) in torch on the CPU, then saved for numpy inference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from duplex.text import plain
from models.chatml import TURN_END, opening
from models.lm import LlamaDuplexLM
from models.state_head import CARD_PATH, HEAD_PATH, StateHead
from models.training.state_data import DISMISS, LABELS, LISTEN, SPEAK, Conversation, build, split

Progress = Callable[[str, int, int], None]


@dataclass
class Features:
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    conversation: list[str]
    complete: npt.NDArray[np.bool_]  # listening examples: is this the whole turn
    overlap: npt.NDArray[np.bool_]

    def subset(self, mask: npt.NDArray[np.bool_]) -> Self:
        """The examples where `mask` holds (every per-example field, subclasses' too)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                values[f.name] = value[mask]
            else:
                values[f.name] = [v for v, keep in zip(value, mask, strict=True) if keep]
        return type(self)(**values)


def featurize(
    lm: LlamaDuplexLM,
    conversations: list[Conversation],
    text_style: str,
    progress: Progress,
) -> Features:
    """Walk each conversation through the LM's cache as a live session would.

    One forward per turn reads the hidden state at every word of a user
    turn; an overlap probe is appended after the played part of an answer,
    read, and removed again, exactly as `LlamaDuplexLM.overlap` does.
    """
    style: Callable[[str], str] = plain if text_style == "plain" else (lambda t: t)
    xs: list[npt.NDArray[np.float32]] = []
    ys: list[int] = []
    keys: list[str] = []
    complete: list[bool] = []
    over: list[bool] = []
    for n, conversation in enumerate(conversations):
        lm.reset()
        for i, turn in enumerate(conversation.turns):
            words = style(turn).split()
            if not words:
                continue
            if i % 2 == 0:  # the user speaks: every word boundary is an example
                pieces = [opening("user"), words[0], *(" " + w for w in words[1:])]
                xs.append(lm.cache.read(pieces)[1:])
                ys += [LISTEN] * (len(words) - 1) + [SPEAK]
                keys += [conversation.key] * len(words)
                complete += [False] * (len(words) - 1) + [True]
                over += [False] * len(words)
                lm.cache.read([TURN_END])
                continue
            probe = conversation.overlaps.get(i)
            if probe is None:
                lm.cache.read([opening("assistant") + " ".join(words) + TURN_END])
                continue
            lm.cache.read([opening("assistant") + " ".join(words[: probe.cut])])
            mark = len(lm.cache.tokens)
            xs.append(lm.cache.read([TURN_END + opening("user") + style(probe.text)]))
            lm.cache.cut(mark)
            ys.append(probe.label)
            keys.append(conversation.key)
            complete.append(False)
            over.append(True)
            lm.cache.read([" " + " ".join(words[probe.cut :]) + TURN_END])
        progress(f"hidden states ({text_style} text)", n + 1, len(conversations))
    lm.reset()
    return Features(
        np.concatenate(xs).astype(np.float32),
        np.array(ys, dtype=np.int64),
        keys,
        np.array(complete),
        np.array(over),
    )


def fit(
    train: Features, hidden: int = 64, epochs: int = 30, seed: int = 0, text_style: str = "asr"
) -> StateHead:
    """A one-hidden-layer MLP with class-balanced cross-entropy."""
    import torch

    torch.manual_seed(seed)
    mean = train.x.mean(axis=0)
    std = train.x.std(axis=0) + 1e-4
    x = torch.from_numpy((train.x - mean) / std)
    y = torch.from_numpy(train.y)
    counts = np.bincount(train.y, minlength=3).astype(np.float32)
    weights = torch.from_numpy(counts.sum() / (3 * np.maximum(counts, 1)))
    first, second = torch.nn.Linear(x.shape[1], hidden), torch.nn.Linear(hidden, 3)
    model = torch.nn.Sequential(first, torch.nn.ReLU(), second)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), 256):
            batch = order[i : i + 256]
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return StateHead(
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        w1=first.weight.detach().numpy().astype(np.float32),
        b1=first.bias.detach().numpy().astype(np.float32),
        w2=second.weight.detach().numpy().astype(np.float32),
        b2=second.bias.detach().numpy().astype(np.float32),
        text_style=text_style,
    )


def roc_auc(scores: npt.NDArray[np.float32], positive: npt.NDArray[np.bool_]) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate(head: StateHead, test: Features) -> dict[str, Any]:
    p = head.probabilities(test.x)
    predicted = p.argmax(axis=1)
    confusion = np.zeros((3, 3), dtype=int)
    for truth, guess in zip(test.y, predicted, strict=True):
        confusion[truth, guess] += 1
    listening = ~test.overlap
    overlapping = test.overlap
    return {
        "end_of_turn_auc": roc_auc(p[listening, SPEAK], test.complete[listening]),
        "overlap_yield_auc": roc_auc(p[overlapping, SPEAK], test.y[overlapping] == SPEAK),
        "accuracy": float((predicted == test.y).mean()),
        "balanced_accuracy": float(
            np.mean([confusion[c, c] / max(1, confusion[c].sum()) for c in range(3)])
        ),
        "confusion": {
            LABELS[t]: {LABELS[g]: int(confusion[t, g]) for g in range(3)} for t in range(3)
        },
        "examples": len(test.y),
    }


def train_state_head(
    lm: LlamaDuplexLM,
    *,
    conversations: int = 1200,
    seed: int = 0,
    out: Path = HEAD_PATH,
    card: Path = CARD_PATH,
    progress: Progress = lambda what, done, total: None,
) -> dict[str, Any]:
    """Build the data, featurize both text styles, train, evaluate, save the better one."""
    started = time.perf_counter()
    data = build(seed=seed, max_conversations=conversations)
    held_out = split([c.key for c in data], seed=seed)
    results: dict[str, Any] = {}
    heads: dict[str, StateHead] = {}
    for text_style in ("asr", "plain"):
        features = featurize(lm, data, text_style, progress)
        test_mask = np.array([k in held_out for k in features.conversation])
        head = fit(features.subset(~test_mask), text_style=text_style, seed=seed)
        heads[text_style] = head
        results[text_style] = evaluate(head, features.subset(test_mask))
        results[text_style]["train_examples"] = int((~test_mask).sum())
    best = max(heads, key=lambda s: results[s]["end_of_turn_auc"])
    heads[best].save(out)
    report = {
        "chosen_text_style": best,
        "metrics": results,
        "conversations": conversations,
        "held_out_conversations": len(held_out),
        "listen_turns": sum((len(c.turns) + 1) // 2 for c in data),
        "overlap_examples": sum(len(c.overlaps) for c in data),
        "class_counts": {LABELS[c]: int((features.y == c).sum()) for c in (LISTEN, SPEAK, DISMISS)},
        "seconds": time.perf_counter() - started,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    card.write_text(model_card(report))
    return report


def model_card(report: dict[str, Any]) -> str:
    def block(style: str) -> str:
        m = report["metrics"][style]
        c = m["confusion"]
        rows = "\n".join(
            f"| {t} | " + " | ".join(str(c[t][g]) for g in LABELS) + " |" for t in LABELS
        )
        return (
            f"### Text `{style}`\n\n"
            f"- end-of-turn ROC AUC (complete turn vs proper prefix): {m['end_of_turn_auc']:.3f}\n"
            f"- overlap yield ROC AUC (interruption vs acknowledgement): "
            f"{m['overlap_yield_auc']:.3f}\n"
            f"- accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f} "
            f"on {m['examples']} held-out examples ({m['train_examples']} for training)\n\n"
            "| truth \\ predicted | "
            + " | ".join(LABELS)
            + " |\n| --- | --- | --- | --- |\n"
            + rows
            + "\n"
        )

    return f"""# Duplex state head

A one-hidden-layer classifier (576 -> 64 -> 3, ReLU) on the last hidden
state of the frozen SmolLM2-135M-Instruct (GGUF Q4_1, llama.cpp, after the
final norm), read at the last position every tick: listen / speak / dismiss.

- **Data**: `chitchat-dataset` (MIT), the first {report["conversations"]} conversations;
  speaker A as the user, B as the assistant, the conversation so far (up to 24
  turns) as context in the chat template. {report["listen_turns"]} user turns give one
  example per word boundary (whole turn: speak, proper prefix: listen); {report["overlap_examples"]}
  overlaps over a partly played answer (acknowledgements: dismiss; the user's
  real next turn or its first words: speak). Class counts: {report["class_counts"]}.
- **Method**: one LM forward per example for every prefix's hidden state;
  class-weighted cross-entropy, AdamW, 30 epochs; {report["held_out_conversations"]}
  whole conversations held out for the metrics below.
- **Text**: `asr` writes turns as the recognizer's final pass does (capitalised,
  punctuated); `plain` drops case and punctuation. Shipped: `{report["chosen_text_style"]}`.
- **Trained** {report["date"]} on a 2-core CPU in {report["seconds"] / 60:.1f} minutes.

## Held-out metrics

{block("asr")}
{block("plain")}"""
