"""Real-speech scenarios: recordings of real people, cut only at their own words.

The synthetic voice pauses where it is told and ends every sentence the same
way; people do not. These scenarios keep real voices as they were spoken and
are reported apart from the synthetic set. The rules are general, so any
folder of recordings makes a set (`duplex bench --recordings DIR`):

- A recording with a `NAME.stm` beside it (`file channel speaker start end
  words`, times in seconds) is a conversation: each speaker's side becomes a
  `dialogue` scenario, the other speaker's turns replaced by silence, the
  user's turns where they were. The assistant should answer where the other
  speaker answered, and hold through the user's pauses inside a turn.
- Every other recording is cut into sentences at the recognizer's final
  punctuation, at a real silence (word times from Whisper). Each sentence,
  as spoken and then silence, is a `turn_end` scenario. Each sentence with a
  word that leaves it unfinished ("and", "the", "of", ...) followed by a
  gap between words also makes a `pause` scenario: 500-1500 ms of silence
  inserted there.
- Inside any turn, a natural gap of `NATURAL_PAUSE_MS` or more between words
  (by level) is a pause the assistant must hold through: the turn is split
  there into a question and continuations, at their original times, so the
  audio is exactly the recording's.
- A one-word acknowledgement ("yes", "yeah", "okay", ...) said as a sentence
  of its own is cut out as a real backchannel, said 400-1200 ms into the
  answer to a real sentence.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.scenarios import Cue, Scenario
from duplex.audio import FRAME_MS, SAMPLE_RATE, Int16Array, read_wav
from models.weights import cache_dir

NATURAL_PAUSE_MS = 200  # a gap this long between words is a pause the policy must hold
EDGE_SILENCE_MS = 150  # a sentence is cut out only where the voice is silent this long
LEVEL_FRAME_MS = 10
PER_MS = SAMPLE_RATE // 1000  # samples per ms
BLIP_FRAMES = 3
WORD_END_SLACK_MS = 150  # the voice ends at most this long after the recognizer's last word
WORD_GAP_MS = 50  # silence between two words, where a pause may be inserted
MIN_WORD_MS = 120  # less sound than this between two pauses is a breath, not a word
INSERTED_PAUSE_MS = (500, 1500)
# words after which an English sentence cannot be finished
UNFINISHED = frozenset(
    {
        "a", "an", "the", "and", "but", "or", "nor", "so", "because", "if", "that", "than",
        "to", "of", "in", "on", "at", "by", "for", "with", "about", "from", "into", "onto",
        "like", "my", "your", "our", "their", "his", "her", "its", "whose", "which", "who",
        "is", "was", "are", "were", "am", "be", "been", "has", "have", "had", "will", "would",
        "can", "could", "should", "must", "i", "we", "you", "they", "he", "she", "it", "this",
        "these", "those", "very", "really", "just", "not",
    }
)  # fmt: skip
ACKNOWLEDGEMENTS = frozenset(
    {"yes", "yeah", "yep", "okay", "ok", "right", "mm-hm", "uh-huh", "mhm", "sure"}
)


@dataclass(frozen=True)
class Word:
    text: str
    start_ms: int
    end_ms: int

    @property
    def bare(self) -> str:
        return re.sub(r"[^\w'-]", "", self.text.lower())

    @property
    def ends_sentence(self) -> bool:
        return self.text.rstrip().endswith((".", "?", "!"))


@dataclass(frozen=True)
class RecordedCue(Cue):
    """A piece of a recording, its voice found by the recording's own background: a
    room's tone after the last word is not the user still speaking."""

    voice_ms: tuple[int, int] = (0, 0)

    @property
    def voiced(self) -> tuple[int, int]:
        return self.voice_ms


# reads a recording's words with their times (16 kHz PCM16 in)
WordTimes = Callable[[Int16Array], list[Word]]


def levels_db(pcm: Int16Array) -> np.ndarray:
    """Level per 10 ms frame, in dB relative to the recording's loudest frame."""
    step = SAMPLE_RATE * LEVEL_FRAME_MS // 1000
    n = pcm.size // step
    frames = pcm[: n * step].astype(np.float64).reshape(n, step)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    db: np.ndarray = 20 * np.log10(rms / rms.max())
    return db


def silence_mask(pcm: Int16Array) -> np.ndarray:
    """Per 10 ms frame: quiet enough to be a gap between words. The threshold sits
    between the background (the 10th percentile) and the speech level (the 90th),
    so it holds for a quiet studio and a noisy telephone line alike."""
    db = levels_db(pcm)
    floor, speech = np.percentile(db, 10), np.percentile(db, 90)
    silent = np.asarray(db < floor + 0.35 * (speech - floor))
    # a click or a breath's blip of up to 30 ms does not break a gap
    loud = np.flatnonzero(np.diff(np.concatenate([[1], silent.astype(int), [1]])))
    for start, end in zip(loud[::2], loud[1::2], strict=False):
        if end - start <= BLIP_FRAMES and start > 0 and end < silent.size:
            silent[start:end] = True
    return silent


def gaps(silent: np.ndarray, lo_ms: int, hi_ms: int, min_ms: int) -> list[tuple[int, int]]:
    """Runs of silent frames of at least `min_ms` inside [lo_ms, hi_ms), in ms."""
    out: list[tuple[int, int]] = []
    start = None
    lo, hi = lo_ms // LEVEL_FRAME_MS, min(hi_ms // LEVEL_FRAME_MS, silent.size)
    for i in range(lo, hi + 1):
        quiet = i < hi and bool(silent[i])
        if quiet and start is None:
            start = i
        elif not quiet and start is not None:
            if (i - start) * LEVEL_FRAME_MS >= min_ms:
                out.append((start * LEVEL_FRAME_MS, i * LEVEL_FRAME_MS))
            start = None
    return out


def quiet_point(silent: np.ndarray, lo_ms: int, hi_ms: int, min_ms: int) -> int | None:
    """The middle of the longest gap of at least `min_ms` in [lo_ms, hi_ms), if any."""
    found = gaps(silent, max(lo_ms, 0), hi_ms, min_ms)
    if not found:
        return None
    a, b = max(found, key=lambda g: g[1] - g[0])
    return (a + b) // 2


def turn_cues(
    pcm: Int16Array,
    silent: np.ndarray,
    lo_ms: int,
    hi_ms: int,
    words: Sequence[Word] = (),
    insert: tuple[int, int] = (0, 0),
) -> list[Cue]:
    """One turn of a recording, [lo_ms, hi_ms), as cues at their original times:
    split at its natural pauses (a question, then continuations), each with the
    words said in it. `insert`: at (ms, length), silence is inserted and what
    follows moves later by that length."""
    at, length = insert
    cuts = {(a + b) // 2 for a, b in gaps(silent, lo_ms, hi_ms, NATURAL_PAUSE_MS)}
    # on the 20 ms frame grid, where the simulator places audio: played sample for sample
    lo_ms, hi_ms, at = (x - x % FRAME_MS for x in (lo_ms, hi_ms, at))
    inner = sorted({c - c % FRAME_MS for c in cuts} | ({at} if length else set()))
    bounds = [lo_ms, *(c for c in inner if lo_ms < c < hi_ms), hi_ms]
    cues: list[Cue] = []
    for a, b in itertools.pairwise(bounds):
        sound = np.flatnonzero(~silent[a // LEVEL_FRAME_MS : b // LEVEL_FRAME_MS])
        if sound.size * LEVEL_FRAME_MS < MIN_WORD_MS:
            continue  # a breath or a click between the words
        piece = pcm[a * PER_MS : b * PER_MS]
        inside = [w for w in words if a <= (w.start_ms + w.end_ms) // 2 < b]
        said = " ".join(w.text.strip() for w in inside)
        if words and not said and not cues:
            continue  # the tail of the sentence before, or a breath: no word begins here
        kind = "continuation" if cues else "question"
        # the voice by the recording's own background, not by its loudest frame: a room's
        # tone after the last word is not the user still speaking, nor is a recording's
        # tail (a breath, reverb, noise) long after the recognizer's last word
        first, last = int(sound[0]) * LEVEL_FRAME_MS, int(sound[-1] + 1) * LEVEL_FRAME_MS
        if inside:
            last = max(first + MIN_WORD_MS, min(last, inside[-1].end_ms - a + WORD_END_SLACK_MS))
        voice = (first - first % FRAME_MS, min(last + (-last) % FRAME_MS, b - a))
        onset = a + voice[0] + (length if length and a >= at else 0)
        cues.append(RecordedCue(kind, said, piece, at_ms=onset, voice_ms=voice))
    return cues


def sentences(words: Sequence[Word], silent: np.ndarray) -> list[tuple[int, int, list[Word]]]:
    """Sentences by the recognizer's final punctuation, each cut out at a real
    silence before and after it: (start ms, end ms, its words)."""
    out: list[tuple[int, int, list[Word]]] = []
    group: list[Word] = []
    total_ms = silent.size * LEVEL_FRAME_MS
    for i, word in enumerate(words):
        group.append(word)
        if not word.ends_sentence and i + 1 < len(words):
            continue
        first, last = group[0], group[-1]
        before = words[i - len(group)].end_ms if i - len(group) >= 0 else 0
        after = words[i + 1].start_ms if i + 1 < len(words) else total_ms
        # the recording's own start and end are cuts; elsewhere a real silence must be,
        # between the neighbouring sentences' words (the longest: a stop consonant's
        # closure inside a word is short)
        lo = (
            0
            if before == 0
            else quiet_point(silent, before - 200, first.start_ms + 100, EDGE_SILENCE_MS)
        )
        hi = (
            total_ms
            if after == total_ms
            else quiet_point(silent, last.end_ms - 100, after + 200, EDGE_SILENCE_MS)
        )
        if lo is not None and hi is not None and hi - lo > 300:
            out.append((lo, hi, group))
        group = []
    return out


def from_recording(
    name: str, pcm: Int16Array, words: Sequence[Word], rng: random.Random
) -> list[Scenario]:
    """A recording without speaker turns: turn ends, inserted pauses, backchannels."""
    silent = silence_mask(pcm)
    found: list[Scenario] = []
    acknowledgements: list[Cue] = []
    for n, (lo, hi, said) in enumerate(sentences(words, silent)):
        bare = [w.bare for w in said]
        if len(bare) == 1 and bare[0] in ACKNOWLEDGEMENTS:
            piece = pcm[lo * PER_MS : hi * PER_MS]
            text = said[0].text.strip()
            acknowledgements.append(Cue("backchannel", text, piece, into_answer_ms=0))
        cues = turn_cues(pcm, silent, lo, hi, said)
        if cues:
            found.append(_real(f"{name}-{n:02d}", "turn_end", cues))
        for i, word in enumerate(said[:-1]):
            if i == 0 or word.bare not in UNFINISHED:
                continue
            # a real boundary between the words, not a consonant's closure inside one
            cut = quiet_point(silent, word.end_ms - 60, said[i + 1].start_ms + 60, WORD_GAP_MS)
            if cut is None:
                continue
            length = rng.randrange(INSERTED_PAUSE_MS[0], INSERTED_PAUSE_MS[1] + 1, 20)
            cues = turn_cues(pcm, silent, lo, hi, said, (cut, length))
            found.append(_real(f"{name}-{n:02d}-pause", "pause", cues))
            break  # one inserted pause per sentence
    said_alone = {a.text for a in acknowledgements}
    turns = [s for s in found if s.category == "turn_end" and s.cues[0].text not in said_alone]
    for i, ack in enumerate(acknowledgements):
        if not turns:
            break
        turn = turns[(i * 3 + 1) % len(turns)]
        into = Cue("backchannel", ack.text, ack.pcm, into_answer_ms=rng.randrange(400, 1201, 20))
        found.append(
            Scenario(f"{name}-backchannel-{i}", "backchannel", (*turn.cues, into), source="real")
        )
    return found


def _real(name: str, category: str, cues: Sequence[Cue]) -> Scenario:
    """Cues moved so the scenario's first voice begins at 500 ms."""
    offset = 500 - (cues[0].at_ms or 0)
    moved = tuple(replace(c, at_ms=(c.at_ms or 0) + offset) for c in cues)
    return Scenario(name, category, moved, source="real")


def read_stm(path: Path) -> list[tuple[str, int, int, str]]:
    """(speaker, start ms, end ms, words) per line of an STM transcript."""
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) >= 5 and not line.startswith(";;"):
            words = parts[5] if len(parts) > 5 else ""
            rows.append(
                (parts[2], round(float(parts[3]) * 1000), round(float(parts[4]) * 1000), words)
            )
    return sorted(rows, key=lambda r: r[1])


def from_conversation(name: str, pcm: Int16Array, stm: Path) -> list[Scenario]:
    """Each speaker's side of a conversation, the other's turns silenced."""
    rows = read_stm(stm)
    found = []
    for speaker in dict.fromkeys(r[0] for r in rows):
        side = pcm.copy()
        for who, start, end, _ in rows:
            if who != speaker:
                side[start * PER_MS : end * PER_MS] = 0
        for who, start, end, _ in rows:  # the user's own words stay, overlaps included
            if who == speaker:
                side[start * PER_MS : end * PER_MS] = pcm[start * PER_MS : end * PER_MS]
        silent = silence_mask(side)
        turns: list[list[tuple[str, int, int, str]]] = []
        for row in rows:
            if row[0] != speaker:
                if turns and turns[-1]:
                    turns.append([])
                continue
            if not turns:
                turns.append([])
            turns[-1].append(row)
        cues: list[Cue] = []
        for turn in (t for t in turns if t):
            lo, hi = max(turn[0][1] - 100, 0), turn[-1][2] + 100
            said = " ".join(r[3] for r in turn)
            piece = turn_cues(side, silent, lo, hi)
            if piece:
                first = piece[0]
                cues += [replace(first, text=said), *piece[1:]]
        if cues:
            found.append(Scenario(f"{name}-{speaker}", "dialogue", tuple(cues), source="real"))
    return found


def recordings_in(places: Sequence[Path]) -> list[Path]:
    """The recordings named, or found in the folders named (and one level below)."""
    found: list[Path] = []
    for place in places:
        if place.is_dir():
            found += sorted([*place.glob("*.wav"), *place.glob("*.raw"), *place.glob("*/*.wav")])
        else:
            found.append(place)
    return found


def load(places: Sequence[Path], word_times: WordTimes, *, seed: int = 0) -> list[Scenario]:
    """Every recording in `places` (files or folders) as real-speech scenarios."""
    rng = random.Random(seed)
    found: list[Scenario] = []
    for path in recordings_in(places):
        pcm = read_wav(path)
        name = path.stem
        stm = path.with_suffix(".stm")
        if stm.exists():
            found += from_conversation(name, pcm, stm)
        else:
            found += from_recording(name, pcm, cached_words(path, pcm, word_times), rng)
    return found


def cached_words(path: Path, pcm: Int16Array, word_times: WordTimes) -> list[Word]:
    """The recognizer's words with times, kept per recording's content."""
    digest = hashlib.sha1(pcm.tobytes()).hexdigest()[:16]
    cache = cache_dir() / "words" / f"{path.stem}-{digest}.json"
    if cache.exists():
        return [Word(*w) for w in json.loads(cache.read_text())]
    words = word_times(pcm)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([[w.text, w.start_ms, w.end_ms] for w in words]))
    return words
