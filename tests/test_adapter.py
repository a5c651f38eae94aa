"""The speech path: encoder windows, the adapter, the torch LM it is trained
through, and llama.cpp hearing its embeddings.

Tolerance for torch vs llama.cpp: llama.cpp multiplies the 4-bit weights with
activations quantized to 8 bits, torch with the dequantized weights in fp32;
logits differ by up to ~4% of their range (measured 1.3 of 37) and agree in
correlation to 0.999.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES
from models.adapter import (
    CHUNK_SAMPLES,
    POSITIONS_PER_CHUNK,
    SpeechAdapter,
    SpeechEncoder,
    SpeechStream,
)
from models.llama_cache import SPEECH_MARK
from models.lm import LlamaDuplexLM
from models.training.adapter_data import SpokenSet
from models.weights import ASR, LM, WeightsMissing

torch = pytest.importorskip("torch")

SYSTEM = "You are a helpful voice assistant. Keep answers short."


def _path(kind: object) -> Path:
    try:
        return kind.resolve()  # type: ignore[attr-defined,no-any-return]
    except WeightsMissing as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def encoder() -> SpeechEncoder:
    from models.asr import load_model

    return SpeechEncoder(load_model(_path(ASR), "cpu"))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from models.tts import PiperSynthesizer

    return PiperSynthesizer(noise_scale=0.0, noise_w=0.0).synthesize("Could you tell me a joke?")


@pytest.fixture(scope="module")
def torch_lm():  # type: ignore[no-untyped-def]
    from models.training.torch_lm import TorchLM

    return TorchLM.from_gguf(_path(LM))


def test_streamed_chunks_equal_the_whole_utterance(
    encoder: SpeechEncoder, speech: np.ndarray
) -> None:
    whole = encoder.utterance(speech)
    stream = SpeechStream(encoder)
    padded = np.zeros(len(whole) * CHUNK_SAMPLES, np.int16)
    padded[: speech.size] = speech
    chunks = []
    for start in range(0, padded.size, FRAME_SAMPLES):  # 20 ms frames, as a session feeds it
        out = stream.accept(padded[start : start + FRAME_SAMPLES])
        if out is not None:
            chunks.append(out)
    streamed = np.stack(chunks)
    assert streamed.shape == whole.shape == (-(-speech.size // CHUNK_SAMPLES), 8, 384)
    # CTranslate2 batches of 1 and of 32 take the same int8 kernels: equal to rounding
    np.testing.assert_allclose(streamed, whole, atol=1e-3 * float(np.abs(whole).max()))
    adapter = SpeechAdapter()
    np.testing.assert_allclose(adapter.embed(streamed), adapter.embed(whole), atol=1e-3, rtol=1e-3)
    assert adapter.embed(whole).shape == (len(whole) * POSITIONS_PER_CHUNK, 576)


def test_window_sees_no_audio_after_its_chunk(encoder: SpeechEncoder, speech: np.ndarray) -> None:
    # what follows a chunk cannot change it: the streamed output is final
    cut = 6 * CHUNK_SAMPLES
    early = encoder.utterance(speech[:cut])
    later = encoder.utterance(speech)[:6]
    np.testing.assert_allclose(early, later, atol=1e-3 * float(np.abs(later).max()))


def test_saved_adapter_reloads_to_identical_outputs(tmp_path: Path) -> None:
    adapter = SpeechAdapter()
    frames = np.random.default_rng(0).normal(size=(5, 8, 384)).astype(np.float32)
    adapter.save(tmp_path / "adapter.npz")
    again = SpeechAdapter.load(tmp_path / "adapter.npz")
    assert np.array_equal(adapter.embed(frames), again.embed(frames))


def test_missing_adapter_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="duplex train-adapter"):
        SpeechAdapter.load(tmp_path / "none.npz")


def test_torch_lm_matches_llama_cpp(torch_lm) -> None:  # type: ignore[no-untyped-def]
    lm = LlamaDuplexLM(_path(LM), system_prompt=SYSTEM, device="cpu")
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    tokens = lm.cache.tokenize(text, special=True)
    start = len(lm.cache.tokens)
    lm.cache.read([text])
    expected = lm.cache.logits
    with torch.no_grad():
        context = torch_lm.token_embeddings(lm.cache.tokens[:start] + list(tokens))[None]
        logits = torch_lm.logits(torch_lm.hidden_states(context))[0, -1].numpy()
    assert np.corrcoef(logits, expected)[0, 1] > 0.995
    assert float(np.abs(logits - expected).max()) < 0.05 * float(np.ptp(expected))
    assert int(np.argmax(logits)) == int(np.argmax(expected))


def test_a_cached_prefix_equals_reading_it(torch_lm) -> None:  # type: ignore[no-untyped-def]
    # training computes the shared system prompt once; what follows it must not change
    generator = torch.Generator().manual_seed(0)
    prefix = torch_lm.token_embeddings(list(range(100, 112)))[None]
    rest = torch.randn(3, 7, 576, generator=generator) * 0.05
    with torch.no_grad():
        whole = torch_lm.hidden_states(torch.cat([prefix.expand(3, -1, -1), rest], dim=1))
        cached = torch_lm.hidden_states(rest, torch_lm.prefix_cache(prefix))
    torch.testing.assert_close(cached, whole[:, 12:], atol=1e-4, rtol=1e-4)


def test_batches_see_every_utterance_once_an_epoch() -> None:
    from models.training.adapter import TrainConfig, batch_indices

    lengths = [int(n) for n in np.random.default_rng(0).integers(5, 60, size=1003)]
    config = TrainConfig(batch=8)
    epoch = [batch_indices(lengths, config, step) for step in range(1003 // 8)]
    seen = [i for batch in epoch for i in batch]
    assert len(seen) == len(set(seen)) == 1000
    padded = sum(8 * max(lengths[i] for i in b) for b in epoch)
    assert sum(lengths[i] for i in seen) > 0.9 * padded  # similar lengths share a batch
    assert batch_indices(lengths, config, 5) == epoch[5]
    assert batch_indices(lengths, config, 125 + 5) != epoch[5]  # the next epoch reshuffles


def test_hearing_embeddings_equals_reading_their_tokens(torch_lm) -> None:  # type: ignore[no-untyped-def]
    # speech positions go through the same cache: token embeddings heard as
    # "speech" give the hidden state and logits of reading the tokens
    read, heard = (LlamaDuplexLM(_path(LM), system_prompt=SYSTEM, device="cpu") for _ in range(2))
    read.listen("")
    heard.listen("")
    words = " Tell me a joke"
    tokens = read.cache.tokenize(words, special=False)
    read.cache.read([words])
    states = heard.cache.hear(torch_lm.token_embeddings(tokens).numpy())
    assert states.shape == (len(tokens), 576)
    np.testing.assert_allclose(heard.cache.hidden, states[-1])
    assert np.corrcoef(heard.cache.logits, read.cache.logits)[0, 1] > 0.999
    assert int(np.argmax(heard.cache.logits)) == int(np.argmax(read.cache.logits))
    assert SPEECH_MARK in heard.cache.text()
    # a barge-in's cut and a new turn work across speech positions
    heard.begin_response()
    heard.speak(3)
    # speech over the answer is read and forgotten: the answer goes on as it was
    before = (list(heard.cache.tokens), heard.cache.logits)
    said = heard.overlap_words(torch_lm.token_embeddings(tokens).numpy())
    assert isinstance(said, str)
    assert heard.cache.tokens == before[0] and np.array_equal(heard.cache.logits, before[1])
    heard.truncate("")
    assert heard.cache.text().endswith("<|im_start|>assistant\n<|im_end|>\n")


def test_a_few_steps_lower_the_loss(encoder: SpeechEncoder, torch_lm) -> None:  # type: ignore[no-untyped-def]
    from models.training.adapter import Stage1, Tokenizer, TrainConfig, train
    from models.tts import PiperSynthesizer

    voice = PiperSynthesizer(noise_scale=0.0, noise_w=0.0)
    texts = ["Hello there.", "What time is it?", "I like dogs."]
    frames = [encoder.utterance(voice.synthesize(t)) for t in texts]
    data = SpokenSet.pack(frames, texts, ["piper"] * len(texts))
    config = TrainConfig(steps=12, batch=3, lr=3e-3, warmup=1, checkpoint_every=100)
    stage = Stage1(torch_lm, Tokenizer(_path(LM)), SpeechAdapter(), config)
    with torch.no_grad():
        before = float(stage.loss(data, [0, 1, 2]))
    report = train(stage, data, data, Path(pytest.importorskip("tempfile").mkdtemp()))
    assert report["steps"] == 12
    assert report["held_out_loss"] < 0.7 * before, (before, report)
