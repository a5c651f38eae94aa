"""The learned state head: its metrics' definitions, its training pipeline, the shipped weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duplex.text import plain
from models.lm import LlamaDuplexLM
from models.state_head import HEAD_PATH, StateHead
from models.training.state_data import DISMISS, SPEAK, asr_style, build, is_acknowledgement
from models.training.state_head import roc_auc, train_state_head
from models.weights import LM

SYSTEM = "You are a helpful voice assistant. Keep answers short."


def test_roc_auc_matches_counting_pairs() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(np.float32)  # many ties
    positive = rng.random(60) < 0.4
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p in scores[positive]
        for n in scores[~positive]
    ]
    assert roc_auc(scores, positive) == pytest.approx(np.mean(pairs))


def test_text_styles_and_acknowledgements() -> None:
    assert asr_style("whats up i am fine") == "Whats up I am fine."
    assert asr_style("how are you") == "How are you?"
    assert plain("Hello, World! It's me.") == "hello world it's me"
    assert is_acknowledgement("lol yeah") and is_acknowledgement("Uh-huh.")
    assert not is_acknowledgement("yeah but why")


def test_conversations_carry_overlap_probes_of_both_kinds() -> None:
    data = build(max_conversations=30)
    labels = [o.label for c in data for o in c.overlaps.values()]
    assert SPEAK in labels and DISMISS in labels
    for c in data:
        for i, probe in c.overlaps.items():
            assert i % 2 == 1 and 2 <= probe.cut < len(c.turns[i].split())


@pytest.mark.timeout(900)
def test_training_writes_weights_and_a_model_card(tmp_path: Path) -> None:
    lm = LlamaDuplexLM(LM.resolve(), system_prompt=SYSTEM, device="cpu")
    report = train_state_head(
        lm, conversations=8, out=tmp_path / "head.npz", card=tmp_path / "card.md"
    )
    head = StateHead.load(tmp_path / "head.npz")
    assert head.w1.shape == (64, 576) and head.text_style == report["chosen_text_style"]
    card = (tmp_path / "card.md").read_text()
    assert "end-of-turn ROC AUC" in card and "chitchat-dataset" in card
    for style in ("asr", "plain"):
        assert set(report["metrics"][style]["confusion"]) == {"listen", "speak", "dismiss"}


@pytest.mark.skipif(not HEAD_PATH.exists(), reason="no trained state head shipped")
def test_shipped_head_tells_a_finished_question_from_a_pause() -> None:
    head = StateHead.load()
    lm = LlamaDuplexLM(LM.resolve(), system_prompt=SYSTEM, device="cpu", state_head=head)
    finished = lm.listen("What is the capital of France?")
    lm.reset()
    dangling = lm.listen("I was thinking about going to the")
    assert finished.speak > dangling.speak
    lm.reset()
    lm.listen("Tell me about the moon.")
    lm.begin_response()
    lm.speak(12)
    ack, interruption = lm.overlap("Uh-huh."), lm.overlap("Wait, what about the sun?")
    assert ack.dismiss > interruption.dismiss
    assert interruption.speak > ack.speak
