"""Word timings for narration: split text into caption words, and place them on real audio.

Engines that report phoneme alignments (Piper) give exact timings; for the others `estimate_word_timings` finds where
speech is in the audio (an energy envelope: leading and trailing silence, pauses) and spreads the words over it by a
weight per word, putting sentence and clause boundaries on the pauses it detected.
"""

from __future__ import annotations

import math
import re
import unicodedata
import wave
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import StudioError
from ..project import WordTiming

HOP_S = 0.01  # envelope resolution (the real hop is a whole number of samples close to this)
MIN_PAUSE_S = 0.15  # shorter silences are stop consonants or breaths inside fluent speech, not pauses
MIN_BLIP_S = 0.03  # shorter bursts of energy are clicks, not speech
# Tokens made only of punctuation that engines say aloud; other punctuation-only tokens join a neighbouring word.
_SPOKEN_PUNCTUATION = set("%&#@")
_SENTENCE_END = set(".!?…。！？؟۔।॥")
_CLAUSE_END = set(",;:—–-،、；：，؛")
# Closing quotes and brackets, and the invisible direction marks (LRM, RLM, ALM, embeddings, isolates) that
# right-to-left text carries after its punctuation.
_CLOSERS = "\"')]}»”’」』）\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Abbreviations whose full stop does not end a sentence (narrators read on without a pause).
_ABBREVIATIONS = re.compile(r"^(mr|mrs|ms|dr|st|prof|sr|jr|vs|fig|approx|e\.g|i\.e)\.$", re.IGNORECASE)
_VOWEL_GROUPS = re.compile(r"[aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ]+", re.IGNORECASE)


# -- words ------------------------------------------------------------------------------------------------------------
def split_words(text: str) -> list[str]:
    """Split `text` into the words captions show: whitespace-separated, punctuation kept attached.

    A token made only of punctuation that is not spoken (a lone dash, quote or bracket) joins the word before it
    (or the one after it at the start), so every word is something the narrator says. Scripts written without
    spaces (Chinese, Japanese, Thai) are cut into caption-sized words (`split_unspaced`).
    """
    tokens = [piece for token in text.split() for piece in split_unspaced(token)]
    words: list[str] = []
    pending = ""  # silent tokens before the first spoken one
    for token in tokens:
        if _is_silent(token):
            if words:
                words[-1] = f"{words[-1]} {token}"
            else:
                pending = f"{pending} {token}".strip()
            continue
        words.append(f"{pending} {token}".strip() if pending else token)
        pending = ""
    if pending:  # nothing but silent punctuation: keep it as one word rather than lose it
        words.append(pending)
    return words


# Scripts written without spaces between words: Han, Hiragana, Katakana (and their marks), Thai.
_UNSPACED_RE = re.compile(r"[\u0e00-\u0e7f\u3005-\u3007\u3021-\u3029\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
                          r"\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff]")
_UNSPACED_CHUNK = 3  # characters per caption word in a run of Han (about a word of Chinese, a second of speech)
_OPENING = set("「『（〔［｛〈《【“‘([{«")


def is_unspaced(ch: str) -> bool:
    """Whether `ch` belongs to a script written without spaces between words (Han, kana, Thai)."""
    return bool(_UNSPACED_RE.match(ch))


def split_unspaced(token: str) -> list[str]:
    """A whitespace-free token cut into caption-sized words where it holds Chinese, Japanese or Thai text.

    Runs of those scripts are cut where the script changes (Latin or digits beside them, kanji to kana), after a
    run of hiragana that is followed by kanji or katakana (Japanese particles and endings stay with the word before
    them), and Han runs into pieces of about `_UNSPACED_CHUNK` characters (long kana runs into about four); Thai
    runs stay whole. Punctuation stays with the word before it (an opening bracket or quote with the word after
    it). A token without such characters is returned whole.
    """
    if not _UNSPACED_RE.search(token):
        return [token]
    # 1. Runs of one kind: "han", "hira", "kata", "thai", "other" (punctuation and marks join the run they touch)
    runs: list[list] = []  # [kind, text]
    for ch in token:
        kind = _kind(ch)
        if kind == "punct":
            if ch in _OPENING or not runs:
                runs.append(["open", ch])
            else:
                runs[-1][1] += ch
            continue
        if runs and runs[-1][0] == "open":
            runs[-1] = [kind, runs[-1][1] + ch]
        elif runs and (runs[-1][0] == kind or (kind == "mark")) and not _ends_punct(runs[-1][1]):
            runs[-1][1] += ch
        else:
            runs.append([kind, ch])
    # 2. Japanese: hiragana after kanji or katakana belongs to that word (okurigana, particles)
    merged: list[list] = []
    for kind, text in runs:
        if merged and kind == "hira" and merged[-1][0] in ("han", "kata") and not _ends_punct(merged[-1][1]):
            merged[-1] = ["word", merged[-1][1] + text]
        else:
            merged.append([kind, text])
    # 3. Long runs of Han (Chinese) or Thai into even pieces of about _UNSPACED_CHUNK characters
    out: list[str] = []
    for kind, text in merged:
        letters = [i for i, ch in enumerate(text) if _kind(ch) not in ("punct", "mark")]  # cut before these only
        limit = _UNSPACED_CHUNK + 1 if kind == "han" else 6
        # (Thai runs stay whole: its syllables need a dictionary to find; wrapping breaks a long run between clusters)
        if kind in ("han", "hira", "word") and len(letters) > limit:
            pieces = -(-len(letters) // (_UNSPACED_CHUNK if kind == "han" else 4))
            cuts = [letters[round(k * len(letters) / pieces)] for k in range(1, pieces)]
            bounds = [0, *cuts, len(text)]
            out.extend(text[a:b] for a, b in zip(bounds, bounds[1:]))
        else:
            out.append(text)
    return [piece for piece in out if piece]


def join_words(words: Sequence[str]) -> str:
    """Words as text again: a space between them, none where Chinese or Japanese text meets (`split_unspaced`)."""
    out = ""
    for word in words:
        if out and word:
            out += "" if _cjk_side(out[-1]) and _cjk_side(word[0]) else " "
        out += word
    return out


def _cjk_side(ch: str) -> bool:
    """A character of unspaced text, or CJK punctuation and full-width forms (。，「」！)."""
    return is_unspaced(ch) or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef" or ch in _OPENING


def _kind(ch: str) -> str:
    cp = ord(ch)
    if unicodedata.category(ch)[0] in "PS" and not ch.isalnum():
        return "punct"
    if unicodedata.category(ch).startswith("M") or ch in "ー々ๆ":
        return "mark"
    if 0x3040 <= cp <= 0x309F:
        return "hira"
    if 0x30A0 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F:
        return "kata"
    if 0x0E00 <= cp <= 0x0E7F:
        return "thai"
    if _UNSPACED_RE.match(ch):
        return "han"
    return "other"


def _ends_punct(text: str) -> bool:
    return bool(text) and _kind(text[-1]) == "punct" and text[-1] not in _OPENING


def _is_silent(token: str) -> bool:
    return all((unicodedata.category(c).startswith("P") and c not in _SPOKEN_PUNCTUATION)
               or unicodedata.category(c) == "Cf" for c in token)  # direction marks are silent too


def is_abbreviation(word: str) -> bool:
    """Whether `word` is an abbreviation whose full stop ends no sentence ("Dr.", "e.g.", closing quotes looked
    through)."""
    core = word.rstrip(_CLOSERS)
    return bool(core) and bool(_ABBREVIATIONS.match(core.lstrip("\"'([{«“‘")))


def boundary_strength(word: str) -> int:
    """2 if `word` ends a sentence, 1 if it ends a clause, else 0 (closing quotes and brackets are looked through)."""
    core = word.rstrip(_CLOSERS)
    if not core or _ABBREVIATIONS.match(core.lstrip("\"'([{«“‘")):
        return 0
    if core[-1] in _SENTENCE_END:
        return 2
    if core[-1] in _CLAUSE_END:
        return 1
    return 0


def estimate_word_weight(word: str) -> float:
    """How long a word takes to say, in rough syllable units (vowel groups, with a share for its length).

    Digits count as about two syllables each (they are read as number words).
    """
    letters = [c for c in unicodedata.normalize("NFC", word) if c.isalpha()]
    unspaced = sum(is_unspaced(c) for c in letters)
    if unspaced:  # a Han character or a kana is about a syllable
        letters = [c for c in letters if not is_unspaced(c)]
    digits = sum(c.isdigit() for c in word)
    plain = "".join(letters).lower()
    syllables = len(_VOWEL_GROUPS.findall(plain))
    if syllables > 1 and plain.endswith("e") and not plain.endswith(("le", "ee", "ie", "ye")):
        syllables -= 1  # a silent final e ("imagine", "somewhere")
    if letters and not syllables:  # consonant-only tokens ("Mr", "hmm", "BBC") or scripts without Latin vowels
        syllables = max(1, math.ceil(len(letters) / 3))
    weight = syllables + 0.15 * len(letters) + 1.6 * digits + 1.1 * unspaced
    symbols = sum(c in _SPOKEN_PUNCTUATION or unicodedata.category(c).startswith("S") for c in word)
    return max(weight + 1.5 * symbols, 0.5)


# -- audio ------------------------------------------------------------------------------------------------------------
def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Samples (float32, mono, -1..1) and sample rate of a 16-bit PCM WAV file."""
    try:
        with wave.open(str(path), "rb") as handle:
            rate = handle.getframerate()
            channels = handle.getnchannels()
            width = handle.getsampwidth()
            frames = handle.readframes(handle.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise StudioError(f"{path} is not a readable PCM WAV file ({exc})") from exc
    if width != 2:
        raise StudioError(f"{path} is a {8 * width}-bit WAV; narration WAVs are 16-bit PCM")
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def speech_frames(samples: np.ndarray, sample_rate: int, hop_s: float = HOP_S) -> tuple[np.ndarray, float]:
    """Where someone speaks: a boolean per frame, and the frame length in seconds (a whole number of samples).

    Speech is energy above a threshold set from the audio's own levels (relative to its loudest frames, above its
    noise floor); silences shorter than `MIN_PAUSE_S` are filled and bursts shorter than `MIN_BLIP_S` dropped.
    """
    hop = max(1, int(round(sample_rate * hop_s)))
    frame_s = hop / float(sample_rate)
    n = int(math.ceil(len(samples) / hop))
    if n == 0:
        return np.zeros(0, dtype=bool), frame_s
    padded = np.zeros(n * hop, dtype=np.float64)
    padded[: len(samples)] = samples
    rms = np.sqrt(np.mean(padded.reshape(n, hop) ** 2, axis=1))
    level_db = 20.0 * np.log10(rms + 1e-9)
    peak_db = float(np.percentile(level_db, 98))
    floor_db = float(np.percentile(level_db, 5))
    threshold_db = max(peak_db - 38.0, floor_db + 0.3 * (peak_db - floor_db))
    mask = level_db > threshold_db
    mask = _fill_runs(mask, value=False, shorter_than=int(round(MIN_PAUSE_S / frame_s)))
    mask = _fill_runs(mask, value=True, shorter_than=int(round(MIN_BLIP_S / frame_s)))
    return mask, frame_s


def _runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end, value) of each run of equal values."""
    if len(mask) == 0:
        return []
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(mask)]])
    return [(int(s), int(e), bool(mask[s])) for s, e in zip(starts, ends)]


def _fill_runs(mask: np.ndarray, *, value: bool, shorter_than: int) -> np.ndarray:
    """Flip interior runs of `value` shorter than `shorter_than` frames (runs touching either end stay)."""
    out = mask.copy()
    runs = _runs(mask)
    for i, (start, end, v) in enumerate(runs):
        if v == value and 0 < i < len(runs) - 1 and end - start < shorter_than:
            out[start:end] = not value
    return out


# -- estimation -------------------------------------------------------------------------------------------------------
def estimate_word_timings(text: str, samples: np.ndarray, sample_rate: int, *,
                          weights: Sequence[float] | None = None) -> tuple[WordTiming, ...]:
    """Estimate when each word of `text` is heard in `samples`.

    Args:
        text: What was said; split with `split_words` (one timing per word, punctuation attached).
        samples: The audio, float (-1..1) or integer PCM, mono ``(n,)`` or ``(n, channels)``.
        sample_rate: Samples per second.
        weights: Relative length of each word (e.g. its phoneme count), one per word of `split_words(text)`;
            None estimates them from syllables and letters.

    Returns:
        One `WordTiming` per word, in order, monotonic and inside ``[0, len(samples) / sample_rate]``: the words
        cover the speech (leading and trailing silence skipped), and the pauses found in the audio fall between
        words, at sentence and clause ends where those line up.

    Raises:
        StudioError: `sample_rate` is not positive, `samples` is not mono or (n, channels), or `weights` has the
            wrong length or holds a negative number.
    """
    # 1. Check inputs
    words = split_words(text)
    if not words:
        return ()
    if sample_rate <= 0:
        raise StudioError(f"`sample_rate` must be positive, got {sample_rate}")
    audio = np.asarray(samples)
    if audio.dtype.kind in "iu":
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max)
    audio = audio.astype(np.float32, copy=False)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise StudioError(f"`samples` must be mono (n,) or (n, channels), got shape {np.shape(samples)}")
    duration_s = len(audio) / float(sample_rate)
    if weights is None:
        w = np.array([estimate_word_weight(word) for word in words], dtype=np.float64)
    else:
        w = np.asarray(list(weights), dtype=np.float64)
        if w.shape != (len(words),):
            raise StudioError(f"`weights` must hold one number per word ({len(words)} words in {text[:40]!r}), got {len(w)}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise StudioError("`weights` must be finite numbers >= 0")
        if w.sum() <= 0:
            w = np.array([estimate_word_weight(word) for word in words], dtype=np.float64)
    w = np.maximum(w, 0.15 * float(w.mean()))  # every word is heard for some time, however light its weight
    if duration_s <= 0:
        return tuple(WordTiming(word, 0.0, 0.0) for word in words)

    # 2. Find the speech: where it starts and ends, and the pauses inside it
    mask, frame_s = speech_frames(audio, sample_rate)
    if not mask.any():  # silence or noise only: nothing to align to, spread over the whole clip
        mask = np.ones_like(mask)
    runs = _runs(mask)
    first = next(s for s, _, v in runs if v)
    last = max(e for _, e, v in runs if v)
    pauses = [(s, e) for s, e, v in runs if not v and s > first and e < last]

    # 3. Decide which pauses fall between which words
    anchors = _match_pauses(words, w, first, last, pauses, frame_s)

    # 4. Spread each stretch's words over its speech frames by weight
    bounds = [0] + [b for b, _ in anchors] + [len(words)]
    starts = [first] + [pauses[p][1] for _, p in anchors]
    ends = [pauses[p][0] for _, p in anchors] + [last]
    timings: list[WordTiming] = []
    for b0, b1, start_frame, end_frame in zip(bounds, bounds[1:], starts, ends):
        frames = np.flatnonzero(mask[start_frame:end_frame]) + start_frame  # skips pauses left inside the stretch
        cum = np.concatenate([[0.0], np.cumsum(w[b0:b1])])
        positions = cum / cum[-1] * len(frames)
        for k in range(b1 - b0):
            start_s = _position_time(frames, positions[k], frame_s, at_end=False)
            end_s = _position_time(frames, positions[k + 1], frame_s, at_end=True)
            timings.append(WordTiming(words[b0 + k], start_s, end_s))
    return _clean(timings, duration_s)


def _position_time(frames: np.ndarray, position: float, frame_s: float, *, at_end: bool) -> float:
    """Time (s) at `position` frames into the speech frames `frames`; an end stays in the frame before a gap."""
    i = max(int(math.ceil(position)) - 1, 0) if at_end else min(int(math.floor(position)), len(frames) - 1)
    return float(frames[i] + min(max(position - i, 0.0), 1.0)) * frame_s


def _match_pauses(words: list[str], w: np.ndarray, first: int, last: int, pauses: list[tuple[int, int]],
                  frame_s: float, *, max_merge: int = 4, beam: float = 4.0, max_ratio: float = 4.0
                  ) -> list[tuple[int, int]]:
    """Choose which pauses are word boundaries: [(boundary, pause index)], both increasing.

    Boundary b sits before ``words[b]``. The pauses cut the speech into stretches; a dynamic programme picks the
    boundaries so that each stretch between used pauses is said at close to the average rate (cost: its seconds of
    speech times the squared log of predicted over real length), with a bonus for a sentence or clause end on a
    pause, a cost for a pause left unused (a silence inside a word, growing with its length) and a small cost for a
    punctuated boundary without a pause (narrators pause at commas and full stops). Measuring the rate stretch by
    stretch keeps an error in the weights from drifting along a long text.
    """
    n_words = len(words)
    if not pauses or n_words < 2:
        return []
    # 1. Stretches of speech between pauses, and costs per boundary and per pause
    run_starts = [first] + [e for _, e in pauses]
    run_ends = [s for s, _ in pauses] + [last]
    speech_cum = np.concatenate([[0.0], np.cumsum([(e - s) * frame_s for s, e in zip(run_starts, run_ends)])])
    skip_cum = np.concatenate([[0.0], np.cumsum([0.15 + 1.5 * (e - s) * frame_s for s, e in pauses])])
    weight_cum = np.concatenate([[0.0], np.cumsum(w)])
    rate = speech_cum[-1] / weight_cum[-1]  # seconds of speech per unit of weight
    strength = np.array([0] + [boundary_strength(word) for word in words[:-1]] + [0])  # per boundary 0..n
    bonus = np.select([strength == 2, strength == 1], [0.6, 0.35], 0.0)
    missed_cum = np.cumsum(np.select([strength == 2, strength == 1], [0.4, 0.2], 0.0))
    n_runs = len(run_starts)

    # 2. cost[r, b]: best cost with the first r stretches said and boundary b at the pause after stretch r-1.
    # To stay fast on long texts, only states near the best one are extended (a beam), and a stretch is only given
    # word spans whose predicted length is within a factor of `max_ratio` of its real one (the last stretch takes
    # whatever words remain).
    cost = np.full((n_runs + 1, n_words + 1), np.inf)
    back = np.zeros((n_runs + 1, n_words + 1, 2), dtype=np.int64)
    cost[0, 0] = 0.0
    for r in range(1, n_runs + 1):
        last_stretch = r == n_runs
        for r0 in range(max(0, r - max_merge), r):
            row = cost[r0]
            b0 = np.flatnonzero(row <= row.min() + beam) if np.isfinite(row.min()) else np.zeros(0, dtype=np.int64)
            if not len(b0):
                continue
            seconds = speech_cum[r] - speech_cum[r0]
            if last_stretch:
                b0_grid, b1_grid = b0, np.full(len(b0), n_words)
            else:
                lo = np.searchsorted(weight_cum, weight_cum[b0] + seconds / rate / max_ratio, side="left")
                hi = np.searchsorted(weight_cum, weight_cum[b0] + seconds / rate * max_ratio, side="right")
                lo = np.maximum(lo, b0 + 1)
                hi = np.minimum(hi, n_words)  # boundary n is the end, not a pause
                counts = np.maximum(hi - lo, 0)
                if not counts.sum():
                    continue
                b0_grid = np.repeat(b0, counts)
                b1_grid = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
            predicted = np.maximum((weight_cum[b1_grid] - weight_cum[b0_grid]) * rate, 1e-6)
            total = (row[b0_grid] + 3.0 * seconds * np.log(predicted / seconds) ** 2
                     + (skip_cum[r - 1] - skip_cum[r0])  # pauses left inside this stretch
                     + (missed_cum[b1_grid - 1] - missed_cum[b0_grid]))  # punctuation inside it
            if not last_stretch:
                total -= bonus[b1_grid]
            # best per end boundary, then keep it where it beats what other r0 gave
            order = np.lexsort((total, b1_grid))
            head = order[np.concatenate([[True], b1_grid[order][1:] != b1_grid[order][:-1]])]
            better = total[head] < cost[r, b1_grid[head]]
            chosen = head[better]
            cost[r, b1_grid[chosen]] = total[chosen]
            back[r, b1_grid[chosen]] = np.stack([np.full(len(chosen), r0), b0_grid[chosen]], axis=1)
    if not np.isfinite(cost[n_runs, n_words]):
        if max_ratio < 1e6:  # very uneven speech: try again letting a stretch take any number of words
            return _match_pauses(words, w, first, last, pauses, frame_s, max_merge=max_merge, beam=beam, max_ratio=1e9)
        return []  # nothing fits: the words are spread over the speech without anchors

    # 3. Walk back: each stretch boundary that is not the end is a used pause
    anchors: list[tuple[int, int]] = []
    r, b = n_runs, n_words
    while r > 0:
        r0, b0 = (int(x) for x in back[r, b])
        if r < n_runs:
            anchors.append((b, r - 1))  # pause r-1 lies after stretch r-1
        r, b = r0, b0
    anchors.reverse()
    return anchors


def _clean(timings: list[WordTiming], duration_s: float) -> tuple[WordTiming, ...]:
    """Clamp into the audio and make starts and ends monotonic."""
    out: list[WordTiming] = []
    previous_end = 0.0
    for t in timings:
        start = min(max(t.start_s, previous_end, 0.0), duration_s)
        end = min(max(t.end_s, start), duration_s)
        out.append(WordTiming(t.word, round(float(start), 4), round(float(end), 4)))
        previous_end = end
    return tuple(out)
