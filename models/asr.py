"""Streaming Whisper (tiny.en, CTranslate2 via faster-whisper) behind the core's `Recognizer` port.

`WhisperRecognizer` keeps the audio of the user's current utterance and,
every `interval_ms` of new audio (longer where a decode takes longer than that:
1.25 times its time), re-decodes all of it (greedy, temperature 0,
no timestamps, no conditioning on earlier text, English). Words become stable
by **LocalAgreement-2**: the committed prefix grows by the longest common word
prefix of the last two hypotheses, beyond what is already committed, so
`stable()` returns append-only deltas that are never retracted. The newest
hypothesis's last word is never committed: it sits where the audio ends, and
a decode at a breath punctuates it as an ending ("What is...", "rain?").

Short encoder windows
---------------------
faster-whisper's `transcribe()` always pads to the 30 s window Whisper was
trained on. CTranslate2's Whisper encoder accepts any number of mel frames up
to 3000, so this module computes the features itself (audio zero-padded to the
window, as Whisper's own `log_mel_spectrogram(padding=...)` does) and calls
`model.model.encode` / `generate` on a window of `min_window_s` seconds
(longer utterances get a window of their length, rounded up to a second): a
shorter window is a faster encoder. Below 10 s greedy decoding of tiny.en
loops ("10 of clubs 10 of clubs ...") too often; forbidding a repeated 3-word
phrase (`no_repeat_ngram_size=3`) stops most loops at 10 s. The measurements
behind both are in docs/decisions.md ("The recognizer's window"). The rare
loop left is still caught:

- generation is capped at `10 + 8 * seconds` new tokens, so a loop costs a
  bounded amount of time;
- a hypothesis that hits the cap, repeats itself (a word 4 times in a row,
  a 2-word phrase 3 times, a longer phrase twice) or has more words than
  the audio could hold (2 + 5 per second: the 3-gram rule bends a loop into
  "10 of clubs 10 of club clubs 10 have clubs" in 1.1 s) is *degenerate*: a
  streaming hypothesis is cut where the repetition starts (LocalAgreement
  still needs a second hypothesis to agree), and a final one is decoded again
  on the full 30 s window (counted in `stats.fallbacks`); if that still
  repeats, it is cut too.
- A hypothesis is no words when P(no speech) > 0.8, or by Whisper's own
  rule (P(no speech) > 0.6 and mean log-probability < -1). Whisper's rule
  alone lets 1 s of digital silence through as "you" (P(no speech) 0.99,
  log-probability -0.65); the final decodes of the recordings have
  P(no speech) <= 0.33, digital silence 0.99, white noise 0.96.

Policies worth knowing
----------------------
- `finish()` decodes the whole utterance once more (or reuses the last
  hypothesis if no audio arrived since: the session calls `pause()` a moment
  into the silence and holds back the rest of the VAD's hangover, so the
  final pass usually runs before the VAD has even decided) and returns the final words *after
  the committed word count*. Committed words are never retracted: if the
  final hypothesis disagrees with them (say it now reads "for" where "4" was
  committed), the committed words stand and only the final's words beyond
  their count are appended. `last_final` holds the final hypothesis itself.
- Sessions share one model, which decodes two utterances at a time (its two
  workers, one thread each). A routine decode (`stable()`) is skipped while
  other sessions' decodes hold both (`stats.skipped`; the next tick tries
  again); the decodes a turn waits on, at a pause and at the end, queue for
  one. Under load the end of a turn is not stuck behind other sessions'
  routine decodes.
- Utterances longer than `max_window_s` (default 20 s) are cut into
  segments: when a segment reaches the cap, it is cut at its quietest 20 ms
  within the last 2 s, decoded as final (its remaining words come out of the
  next `stable()`), and streaming goes on from the cut. Words already
  committed beyond the segment's final word count were heard after the cut,
  so they count as the next segment's first committed words (nothing is
  said twice). A word across a cut may be misrecognised.
- Agreement compares words after `normalize` ("4." agrees with "4"); the
  words returned are the newest hypothesis's surface forms, punctuation kept.

`stats` (decodes, total and last decode time, encoder time, fallbacks) lets a
benchmark read the cost of recognition. `normalize` and `wer` are the word
error rate helpers the tests and benchmarks share.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE, Float32Array, Frame, Int16Array, pcm16_to_float
from models.weights import ASR

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
FULL_WINDOW_S = 30  # Whisper's training window; also the encoder's maximum
_TOKENS_BASE = 10  # generation budget: _TOKENS_BASE + _TOKENS_PER_S * seconds of audio
_TOKENS_PER_S = 8  # fast speech is about 5 tokens/s, punctuation included
_NO_SPEECH_PROB = 0.6  # Whisper's no-speech rule, both thresholds
_NO_SPEECH_LOGPROB = -1.0
_NO_SPEECH_ALONE = 0.8  # no words above this, whatever the text's log-probability
_ROUTINE_SHARE = 1.25  # routine decodes wait for this times their own time in new audio
_CUT_SEARCH_S = 2.0  # where to look for a quiet place to cut an over-long utterance
_NO_REPEAT_NGRAM = 3  # a loop ("10 of clubs 10 of clubs ...") cannot start
# more words than anyone says in the audio: 2 + 5 per second (fast speech is 3-4 words/s)
_WORDS_BASE = 2
_WORDS_PER_S = 5


# -- text normalisation and word error rate ----------------------------------------

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+(?:'[a-z]+)*")


def number_words(n: int) -> list[str]:
    """0-999 as English words ("21" -> twenty one); longer numbers digit by digit."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [_ONES[hundreds], "hundred"] + (number_words(rest) if rest else [])
    return [_ONES[int(d)] for d in str(n)]


def normalize(text: str) -> list[str]:
    """Words for comparison: lowercase, no punctuation, numbers spelled out.

    "4. Queen of Clothes!" -> ["four", "queen", "of", "clothes"]; "2.5" ->
    ["two", "point", "five"]; "1,000" -> ["one", "zero", "zero", "zero"];
    hyphens split words ("twenty-one" -> ["twenty", "one"]); apostrophes
    inside a word are dropped ("don't" -> "dont").
    """
    text = re.sub(r"(?<=\d),(?=\d)", "", text.lower())
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token[0].isdigit():
            whole, _, fraction = token.partition(".")
            words += number_words(int(whole))
            if fraction:
                words += ["point"] + [_ONES[int(d)] for d in fraction]
        else:
            words.append(token.replace("'", ""))
    return words


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of `hyp` against `ref`, both normalised; 0 or 1 for an empty ref."""
    ref_words, hyp_words = normalize(ref), normalize(hyp)
    if not ref_words:
        return 0.0 if not hyp_words else 1.0
    return edit_distance(ref_words, hyp_words) / len(ref_words)


# -- repetition (the way short-window Whisper degenerates) -----------------------------


def repetition_start(keys: list[str]) -> int | None:
    """Where a degenerate repetition begins (its second copy), or None.

    Degenerate: one word 4 times in a row, a 2-word phrase 3 times, or a
    phrase of 3 to 16 words twice. "five five" and "no no no" are speech.
    """
    for i in range(len(keys)):
        for n in range(1, 17):
            copies = 4 if n == 1 else 3 if n == 2 else 2
            end = i + n * copies
            if end > len(keys):
                break
            phrase = keys[i : i + n]
            if all(keys[i + k * n : i + (k + 1) * n] == phrase for k in range(1, copies)):
                return i + n
    return None


def most_words(seconds: float) -> int:
    """The most words `seconds` of audio can hold."""
    return _WORDS_BASE + int(_WORDS_PER_S * seconds)


def too_many_words(words: list[str], seconds: float) -> bool:
    """More words than the audio could hold: a loop that `no_repeat_ngram_size` bent
    out of shape ("10 of clubs 10 of club clubs 10 have clubs" in 1.1 s), which
    `repetition_start` cannot see."""
    return len(words) > most_words(seconds)


def _key(word: str) -> str:
    return " ".join(normalize(word))


# -- the recognizer ------------------------------------------------------------------


@dataclass
class AsrStats:
    """What recognition has cost so far (wall-clock milliseconds)."""

    decodes: int = 0
    total_ms: float = 0.0
    last_ms: float = 0.0
    encode_ms: float = 0.0  # the encoder's share of total_ms
    audio_s: float = 0.0  # seconds of audio decoded, re-decodes included
    fallbacks: int = 0  # final decodes redone on the 30 s window
    degenerate: int = 0  # hypotheses that repeated themselves or ran out of tokens
    skipped: int = 0  # routine decodes left out while another session decoded

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.decodes if self.decodes else 0.0


@dataclass(frozen=True)
class Hypothesis:
    """One decode of the current segment."""

    words: list[str]  # surface words, punctuation kept
    samples: int  # how much of the segment it heard
    degenerate: bool  # repeated itself or ran out of tokens (then `words` are cut)
    logprob: float = 0.0  # the decoder's mean log-probability per token


def resolve_device(device: str) -> str:
    """Map "auto" to "cuda" when CTranslate2 sees a GPU, else to "cpu"."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def load_model(
    path: str | Path | None = None,
    device: str = "auto",
    compute_type: str = "int8",
    cpu_threads: int = 1,
    workers: int = 2,
) -> Any:
    """Load a faster-whisper model once; recognizers share it, `workers` decodes at a
    time on `cpu_threads` each: one thread a decode, since OpenMP's overhead outweighs
    a second on ops this small, and two workers use both cores under load."""
    from faster_whisper import WhisperModel

    path = ASR.resolve(path)
    device = resolve_device(device)
    started = time.perf_counter()
    model = WhisperModel(
        str(path),
        device=device,
        compute_type=compute_type,
        cpu_threads=cpu_threads,
        num_workers=workers,
    )
    log.info("loaded %s on %s in %.2f s", path, device, time.perf_counter() - started)
    return model


class WhisperRecognizer:
    """Streaming Whisper with LocalAgreement-2 on short encoder windows; see the module doc."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "auto",
        compute_type: str = "int8",
        interval_ms: int = 320,
        min_window_s: float = 10.0,
        max_window_s: float = 20.0,
        beam_size: int = 1,
        cpu_threads: int = 1,
        model: Any | None = None,
    ) -> None:
        """`model`: an already loaded WhisperModel to share between sessions (it is thread-safe)."""
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        if not 1 <= min_window_s <= FULL_WINDOW_S:
            raise ValueError(f"min_window_s must be 1 to {FULL_WINDOW_S} s, got {min_window_s}")
        if not 2 * _CUT_SEARCH_S <= max_window_s <= FULL_WINDOW_S:
            low = 2 * _CUT_SEARCH_S
            raise ValueError(
                f"max_window_s must be {low:g} to {FULL_WINDOW_S} s, got {max_window_s}"
            )
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        path = ASR.resolve(model_path)
        self.device = resolve_device(device)
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        if model is None:
            model = load_model(path, self.device, compute_type, cpu_threads)
        self._model: Any = model
        self._busy = _busy_slots(model)  # one held per decode running on this model
        multilingual = bool(self._model.model.is_multilingual)
        self._tokenizer: Any = Tokenizer(
            self._model.hf_tokenizer, multilingual, task="transcribe", language="en"
        )
        self._prompt: list[int] = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress: list[int] = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self._features: Any = self._model.feature_extractor
        self.interval_samples = interval_ms * SAMPLE_RATE // 1000
        self.min_window_s = min_window_s
        self.max_window_s = max_window_s
        self.beam_size = beam_size
        self.stats = AsrStats()
        self.last_final = ""  # the final transcript of the last finished utterance
        # the latest decode's mean token log-probability: below about -0.45 Whisper
        # guessed words for a sound that was no word ("mm-hm" -> "and then make them.",
        # -0.58; clear words score -0.1 to -0.4)
        self.last_confidence = 0.0
        self._chunks: list[Int16Array] = []
        self._size = 0  # samples in the current segment
        self._previous: Hypothesis | None = None  # the last decode of the current segment
        self._committed: list[str] = []  # the segment's stable words
        self._pending: list[str] = []  # stable words agreed by `pause`, not yet returned
        self._final_parts: list[str] = []

    # -- the Recognizer port ----------------------------------------------------------

    def accept(self, frame: Frame) -> None:
        self._chunks.append(frame.pcm)
        self._size += frame.pcm.size

    def stable(self) -> str:
        words = self._take_pending() + self._roll_over()
        last = self._previous.samples if self._previous else 0
        if self._size >= self.interval_samples and self._size - last >= self._routine_samples():
            # a routine decode gives way when another session's decode holds the shared
            # model: decodes at a pause and at the end, which turns wait on, go first
            if self._busy.acquire(blocking=False):
                try:
                    words += self._agree(self._decode(self._pcm(), final=False))
                finally:
                    self._busy.release()
            else:
                self.stats.skipped += 1
        return _delta(words)

    def _routine_samples(self) -> int:
        """New audio a routine decode waits for: `interval_ms`, or on a CPU where a
        decode takes longer, 1.25 times the last one's time, so that routine decodes
        take at most 80% of real time and the session does not fall behind the audio."""
        slowest = int(_ROUTINE_SHARE * self.stats.last_ms * SAMPLE_RATE / 1000)
        return max(self.interval_samples, slowest)

    def pause(self) -> str:
        """Decode what was heard now, unless the latest decode covers it already; the
        words it heard beyond the committed ones (what `finish` would add).

        Called when the user may have stopped: if no more audio comes, `finish`
        reuses this decode, so the final pass runs during the VAD's hangover
        instead of after it.
        """
        last = self._previous.samples if self._previous else 0
        if self._size and self._size != last:
            with self._busy:
                hypothesis = self._decode(self._pcm(), final=False)
            if self._size - last >= self.interval_samples // 2:
                self._pending += self._agree(hypothesis)
            else:
                # two decodes this close heard the same half word ("time in-" and its
                # closure): agreeing would commit a guess ("and")
                self._previous = hypothesis
        if self._previous is None or self._previous.degenerate:
            return ""  # `finish` decodes again
        return _delta(self._previous.words[len(self._committed) :])

    def finish(self) -> str:
        words = self._take_pending() + self._roll_over()
        if self._size:
            previous = self._previous
            if previous and previous.samples == self._size and not previous.degenerate:
                hypothesis = previous  # nothing new was heard since the last decode
            else:
                with self._busy:
                    hypothesis = self._decode(self._pcm(), final=True)
            final = hypothesis.words
            self._final_parts.append(" ".join(final))
            words += final[len(self._committed) :]
        self.last_final = " ".join(p for p in self._final_parts if p)
        self._final_parts = []
        self._clear_segment()
        return _delta(words)

    def reset(self) -> None:
        self._final_parts = []
        self._pending = []
        self._clear_segment()

    # -- decoding ---------------------------------------------------------------------

    def window_s(self, samples: int) -> int:
        """The encoder window for this much audio: at least `min_window_s`, whole seconds."""
        needed = math.ceil(max(samples / SAMPLE_RATE, self.min_window_s))
        return min(FULL_WINDOW_S, needed)

    def features(self, audio: Float32Array, window_s: int) -> Float32Array:
        """Log-mel features of `audio` zero-padded to `window_s` seconds (80 x 100 per s).

        Equal to the extractor's output on the padded audio, but the STFT runs
        over the audio only: frames that see nothing but padding are at the
        spectrogram's floor (its maximum minus 8, in log10 units) either way.
        """
        hop: int = self._features.hop_length
        n_fft: int = self._features.n_fft
        frames = window_s * SAMPLE_RATE // hop
        audio = audio[: frames * hop]
        # frames whose (centred) STFT window overlaps the audio; the rest see only padding
        computed = min(frames, -(-(audio.size + n_fft // 2) // hop))
        # enough zeros after the audio that the STFT's reflect padding reflects zeros only
        padded = np.zeros(computed * hop + n_fft, dtype=np.float32)
        padded[: audio.size] = audio
        mel: Float32Array = np.asarray(self._features(padded, padding=0), dtype=np.float32)
        mel = mel[:, :computed]
        if computed < frames:
            # in log10 units the floor is max - 8, or -10 (the 1e-10 clip) for silence
            floor = (max(float(mel.max()) * 4.0 - 4.0 - 8.0, -10.0) + 4.0) / 4.0
            mel = np.pad(mel, ((0, 0), (0, frames - computed)), constant_values=floor)
        return np.ascontiguousarray(mel[:, :frames])

    def transcribe(self, audio: Float32Array, window_s: int | None = None) -> tuple[str, bool]:
        """One decode of `audio` (at most 30 s): (text, degenerate). For tests and benchmarks."""
        words, degenerate, _ = self._run(audio, window_s or self.window_s(audio.size))
        return " ".join(words), degenerate

    def _decode(self, pcm: Int16Array, *, final: bool) -> Hypothesis:
        audio = pcm16_to_float(pcm)
        words, degenerate, logprob = self._run(audio, self.window_s(audio.size))
        if degenerate:
            self.stats.degenerate += 1
            if final and self.window_s(audio.size) < FULL_WINDOW_S:
                self.stats.fallbacks += 1
                words, degenerate, logprob = self._run(audio, FULL_WINDOW_S)
        if degenerate:
            cut = repetition_start([_key(w) for w in words])
            if cut is None:
                cut = most_words(audio.size / SAMPLE_RATE)  # a no-op unless too many
            words = words[:cut] if cut is not None else words
        self.last_confidence = logprob
        return Hypothesis(words, audio.size, degenerate, logprob)

    def _run(self, audio: Float32Array, window_s: int) -> tuple[list[str], bool, float]:
        import ctranslate2

        started = time.perf_counter()
        mel = self.features(audio, window_s)
        encoded = self._model.model.encode(
            ctranslate2.StorageView.from_array(mel[np.newaxis]), to_cpu=False
        )
        encoded_at = time.perf_counter()
        seconds = audio.size / SAMPLE_RATE
        budget = _TOKENS_BASE + math.ceil(_TOKENS_PER_S * seconds)
        result = self._model.model.generate(
            encoded,
            [self._prompt],
            beam_size=self.beam_size,
            max_length=len(self._prompt) + budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            no_repeat_ngram_size=_NO_REPEAT_NGRAM,
        )[0]
        tokens: list[int] = result.sequences_ids[0]
        text: str = self._tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        done = time.perf_counter()
        stats = self.stats
        stats.decodes += 1
        stats.last_ms = (done - started) * 1000.0
        stats.total_ms += stats.last_ms
        stats.encode_ms += (encoded_at - started) * 1000.0
        stats.audio_s += seconds
        no_speech = float(result.no_speech_prob)
        if no_speech > _NO_SPEECH_ALONE or (
            no_speech > _NO_SPEECH_PROB and avg_logprob < _NO_SPEECH_LOGPROB
        ):
            return [], False, 0.0
        words = text.split()
        looped = repetition_start([_key(w) for w in words]) is not None
        return (
            words,
            looped or len(tokens) >= budget or too_many_words(words, seconds),
            float(avg_logprob),
        )

    # -- LocalAgreement-2 and segments ------------------------------------------------

    def _agree(self, hypothesis: Hypothesis) -> list[str]:
        previous, self._previous = self._previous, hypothesis
        if previous is None:
            return []
        agreed = 0
        for a, b in zip(previous.words, hypothesis.words, strict=False):
            if _key(a) != _key(b):
                break
            agreed += 1
        # the word where the audio ends waits: its punctuation is a guess ("What is..."
        # or "rain?" from a decode at a breath, the sentence going on)
        agreed = min(agreed, len(hypothesis.words) - 1)
        new = hypothesis.words[len(self._committed) : agreed]
        self._committed += new
        return new

    def _roll_over(self) -> list[str]:
        """Finalise segments that reached `max_window_s`; their remaining words."""
        limit = int(self.max_window_s * SAMPLE_RATE)
        words: list[str] = []
        while self._size > limit:
            pcm = self._pcm()
            cut = _quiet_cut(pcm[:limit], int(_CUT_SEARCH_S * SAMPLE_RATE))
            with self._busy:
                final = self._decode(pcm[:cut], final=True).words
            self._final_parts.append(" ".join(final))
            words += final[len(self._committed) :]
            # words committed beyond the segment's final were heard after the cut:
            # they count as committed words of the next segment
            carried = self._committed[len(final) :]
            self._clear_segment()
            self._committed = carried
            if cut < pcm.size:
                self._chunks = [pcm[cut:]]
                self._size = pcm.size - cut
        return words

    def _take_pending(self) -> list[str]:
        words, self._pending = self._pending, []
        return words

    def _pcm(self) -> Int16Array:
        """The current segment's audio, gathered into one array."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)

    def _clear_segment(self) -> None:
        self._chunks = []
        self._size = 0
        self._previous = None
        self._committed = []


_BUSY: dict[int, threading.BoundedSemaphore] = {}
_BUSY_GUARD = threading.Lock()


def _busy_slots(model: Any) -> threading.BoundedSemaphore:
    """Per shared model, one slot per worker: a decode holds one while it runs."""
    workers = int(getattr(model.model, "num_workers", 1))
    with _BUSY_GUARD:
        return _BUSY.setdefault(id(model), threading.BoundedSemaphore(workers))


def _quiet_cut(pcm: Int16Array, search: int) -> int:
    """The middle of the quietest 20 ms frame in the last `search` samples of `pcm`."""
    start = max(0, pcm.size - search) // FRAME_SAMPLES * FRAME_SAMPLES
    tail = pcm[start : start + (pcm.size - start) // FRAME_SAMPLES * FRAME_SAMPLES]
    if tail.size == 0:
        return pcm.size
    energy = (tail.astype(np.float64).reshape(-1, FRAME_SAMPLES) ** 2).mean(axis=1)
    return start + int(np.argmin(energy)) * FRAME_SAMPLES + FRAME_SAMPLES // 2


def _delta(words: list[str]) -> str:
    return "".join(" " + w for w in words)


def word_times(model: Any, pcm: Int16Array) -> list[tuple[str, int, int]]:
    """Every word of a recording with its start and end (ms), from a whole-file pass
    with Whisper's word timestamps: where real speech may be cut at a word boundary."""
    segments, _ = model.transcribe(
        pcm16_to_float(pcm),
        language="en",
        beam_size=1,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    return [
        (w.word.strip(), round(w.start * 1000), round(w.end * 1000))
        for s in segments
        for w in s.words or []
    ]
