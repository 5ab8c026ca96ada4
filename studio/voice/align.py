"""Forced alignment: where each word of a known text is heard in a WAV, for narrators without exact timings.

Piper reports its own phoneme timings; espeak-ng, Bark and a recorded voice only get
`studio.voice.timing.estimate_word_timings` (an energy envelope and per-word weights), which runs 120-250 ms late in
the middle of a sentence. `align` places the same words with an acoustic model instead:

- English: **pocketsphinx** (BSD), whose wheel ships a US-English acoustic model and the CMU dictionary. Its alignment
  search decodes the audio against exactly the given word sequence (optional silences between words) and reports each
  word's frames (10 ms). Words the dictionary lacks (names, numbers, "Studio's") get pronunciations from espeak-ng's
  IPA mapped to the model's ARPAbet phones, or from a small letter-to-sound fallback when espeak-ng is missing.
- Other languages (and English without pocketsphinx): a CTC model, the MMS forced aligner (`studio.voice.ctc`), only
  when its weights are already on this machine (never downloaded; CC-BY-NC-4.0 weights).

Text the audio does not match (another script, silence, noise) makes the alignment search lose every path: `align`
logs that and returns None, and the caller keeps its estimate. It never returns timings for a text it could not align.

    alignment = align("Studio turns a script into a video.", Path("scene.wav"), "en")
    if alignment is not None:
        words, source = alignment.words, alignment.aligner     # e.g. "pocketsphinx-5.1.1/en-us"
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import re
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Cancelled, StudioError
from ..progress import CancelToken, check
from ..project import WordTiming
from .timing import _clean, split_words

__all__ = ["Alignment", "aligner_for", "align"]

log = logging.getLogger("studio.voice.align")

SAMPLE_RATE = 16000  # the rate pocketsphinx's en-us model was trained on
FRAME_S = 0.01  # pocketsphinx's frame rate (100 frames per second); frame t starts at t * 10 ms, as its own tools say
ESPEAK_TIMEOUT_S = 60.0
# Search settings. Beams wider than pocketsphinx's defaults (1e-48, 1e-48, 7e-29): at the defaults whole sentences of
# clean espeak-ng speech lost every path; text the audio does not say still loses every path at these (measured).
# No lattice best-path pass: with it the alignment search's result often drops the last word of the sentence.
# Dither (with a fixed seed, so the same WAV always gives the same timings): synthetic voices have exact digital
# silence between sentences, which the silence model fits badly without it (espeak-ng, 11 scenes: p95 onset error
# 66 ms without, 45 ms with).
DECODER_OPTIONS = {"beam": 1e-80, "pbeam": 1e-80, "wbeam": 1e-60, "bestpath": False, "dither": True, "seed": 1}
# Symbols spoken as words, and how (the CMU dictionary has these words).
_SYMBOL_WORDS = {"&": "and", "%": "percent", "@": "at", "#": "number", "+": "plus", "=": "equals"}
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Alignment:
    """Word timings found by forced alignment.

    Attributes:
        words: Exactly one `WordTiming` per word of ``split_words(text)``, in order, monotonic and inside the WAV;
            punctuation stays attached as `split_words` gives it.
        aligner: The aligner's identity including its version, e.g. ``"pocketsphinx-5.1.1/en-us"`` (asset cache
            keys and side files use it: another aligner means aligning again).
    """

    words: tuple[WordTiming, ...]
    aligner: str


def aligner_for(language: str) -> str | None:
    """Which aligner `align` would run for `language` on this machine, or None if none covers it.

    Args:
        language: A language code (``en``, ``en-us``, ``en_GB``, ``fr``...).

    Returns:
        The aligner's identity (the `Alignment.aligner` it would give), or None.
    """
    if _is_english(language):
        version = _pocketsphinx_version()
        if version is not None:
            return f"pocketsphinx-{version}/en-us"
    from .ctc import ctc_aligner_id

    return ctc_aligner_id(language)


def align(text: str, wav: Path, language: str, *, cancel: CancelToken | None = None) -> Alignment | None:
    """Find where each word of `text` is heard in `wav`.

    Args:
        text: What was said in `wav` (the words are `split_words(text)`).
        wav: The audio: any file ffmpeg reads (resampled to 16 kHz mono here).
        language: The text's language code; decides the aligner (`aligner_for`).
        cancel: Checked before and after each stage.

    Returns:
        The `Alignment`, or None when no aligner here covers `language`, the text has no words, or the audio could not
        be aligned to the text (the reason is logged; the caller keeps its own timings).

    Raises:
        Cancelled: `cancel` was cancelled.
    """
    # 1. Check inputs and choose the aligner
    words = split_words(text or "")
    aligner = aligner_for(language)
    if not words or aligner is None:
        return None
    check(cancel)

    # 2. Read the audio at the aligner's rate
    try:
        from ..media import read_audio

        samples = read_audio(Path(wav), SAMPLE_RATE, channels=1, cancel=cancel)[:, 0]
    except Cancelled:
        raise
    except (StudioError, OSError) as exc:
        log.warning("cannot align %s: its audio cannot be read (%s)", wav, exc)
        return None
    check(cancel)

    # 3. Align
    try:
        if aligner.startswith("pocketsphinx-"):
            timings = _align_pocketsphinx(words, samples, cancel)
        else:
            timings = _align_ctc(words, samples, language, cancel)
    except Cancelled:
        raise
    except Exception as exc:  # an engine failure is "could not align", never an error for the caller
        log.warning("cannot align %s with %s: %s: %s", wav, aligner, type(exc).__name__, exc)
        return None
    check(cancel)
    if timings is None:
        return None
    return Alignment(words=timings, aligner=aligner)


# -- other languages: a CTC model -------------------------------------------------------------------------------------
def _align_ctc(words: list[str], samples: np.ndarray, language: str,
               cancel: CancelToken | None) -> tuple[WordTiming, ...] | None:
    """`studio.voice.ctc.align_ctc`'s spans as word timings; a word without characters the model knows sits where
    its neighbours meet."""
    from .ctc import align_ctc

    spans = align_ctc(words, samples, language, cancel)
    if spans is None:
        return None
    timings: list[WordTiming] = []
    for word, span in zip(words, spans):
        if span is None:
            at = timings[-1].end_s if timings else next(s for s in spans if s is not None)[0]
            timings.append(WordTiming(word, at, at))
        else:
            timings.append(WordTiming(word, span[0], span[1]))
    return _clean(timings, len(samples) / SAMPLE_RATE)


# -- English: pocketsphinx --------------------------------------------------------------------------------------------
def _is_english(language: str) -> bool:
    code = (language or "").strip().replace("_", "-").lower()
    return code == "en" or code.startswith("en-")


@functools.lru_cache(maxsize=1)
def _pocketsphinx_version() -> str | None:
    """pocketsphinx's installed version, or None if it is not installed (found without importing it)."""
    if importlib.util.find_spec("pocketsphinx") is None:
        return None
    try:
        return importlib.metadata.version("pocketsphinx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _align_pocketsphinx(words: list[str], samples: np.ndarray,
                        cancel: CancelToken | None) -> tuple[WordTiming, ...] | None:
    """pocketsphinx's alignment search over `samples` (16 kHz float mono); None if it found no path."""
    from pocketsphinx import Decoder

    duration_s = len(samples) / SAMPLE_RATE
    if duration_s < 0.1:
        log.warning("cannot align %d words to %.3f s of audio", len(words), duration_s)
        return None
    # 1. Each caption word becomes zero or more dictionary tokens; words the dictionary lacks get pronunciations
    decoder = Decoder(lm=None, loglevel="FATAL", **DECODER_OPTIONS)
    tokens = [_tokens(word) for word in words]
    missing = sorted({t for ts in tokens for t in ts if decoder.lookup_word(t) is None})
    pronounced = _pronounce(missing, decoder, cancel)
    for i, (token, phones) in enumerate(pronounced.items()):
        decoder.add_word(token, " ".join(phones), i == len(pronounced) - 1)  # rebuild the search once, at the end
    unsaid = [t for t in missing if t not in pronounced]
    if unsaid:
        log.info("aligning without %s: no pronunciation found", unsaid)
    known = [[t for t in ts if t not in unsaid] for ts in tokens]
    sequence = [t for ts in known for t in ts]
    if not sequence:
        log.warning("cannot align %r: none of its words can be pronounced", " ".join(words)[:80])
        return None
    check(cancel)

    # 2. Decode the whole utterance against exactly that word sequence
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    try:
        decoder.set_align_text(" ".join(sequence))
    except RuntimeError as exc:
        log.warning("pocketsphinx cannot set up the alignment of %r: %s", " ".join(sequence)[:80], exc)
        return None
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()
    segments = [(s.word, s.start_frame, s.end_frame) for s in (decoder.seg() or ())]
    spoken = [(w, a, b) for w, a, b in segments if not _is_filler(w)]
    if decoder.hyp() is None or [_base(w) for w, _, _ in spoken] != sequence:
        log.warning("the audio does not match the text %r (pocketsphinx found no alignment); keeping the estimate",
                    " ".join(words)[:80])
        return None
    spoken = _unsqueeze(segments, decoder, samples)

    # 3. Each caption word spans its tokens' frames; a word without tokens sits where its neighbours meet
    timings: list[WordTiming] = []
    k = 0
    for word, ts in zip(words, known):
        if ts:
            first, last = spoken[k], spoken[k + len(ts) - 1]
            timings.append(WordTiming(word, first[1] * FRAME_S, (last[2] + 1) * FRAME_S))
            k += len(ts)
        else:
            at = timings[-1].end_s if timings else spoken[0][1] * FRAME_S
            timings.append(WordTiming(word, at, at))
    return _clean(timings, duration_s)


def _unsqueeze(segments: list[tuple[str, int, int]], decoder, samples: np.ndarray) -> list[tuple[str, int, int]]:
    """The spoken words' (token, first frame, last frame), with words squeezed beside a silence moved onto the speech.

    The search sometimes labels a short word that opens (or closes) a sentence as silence and squeezes the word into
    its minimum length (3 frames per phone) on the far side of the pause: "numerator. It tells" came back with "It"
    right after "numerator" and the pause over its sound, 370 ms early. Where the energy envelope
    (`studio.voice.timing.speech_frames`) hears speech at the pause's edge next to the following (preceding) word, a
    squeezed word is moved onto that speech.
    """
    from .timing import speech_frames

    mask, _ = speech_frames(samples, SAMPLE_RATE, hop_s=FRAME_S)
    out = [list(segment) for segment in segments]
    for i, (token, first, last) in enumerate(segments):
        if _is_filler(token):
            continue
        phones = len((decoder.lookup_word(token) or "").split())
        if not phones or last - first + 1 > 3 * phones:
            continue
        if i + 2 < len(segments) and _is_pause(segments[i + 1]) and not _is_filler(segments[i + 2][0]):
            pause_first, pause_last = segments[i + 1][1], segments[i + 1][2]
            start = pause_last + 1
            while start - 1 >= pause_first and start - 1 < len(mask) and mask[start - 1]:
                start -= 1
            if pause_first + 3 < start <= pause_last:  # speech runs from inside the pause into the next word
                out[i][1:] = [start, pause_last]
                out[i + 1][1:] = [first, start - 1]
        elif i >= 2 and _is_pause(segments[i - 1]) and not _is_filler(segments[i - 2][0]):
            pause_first, pause_last = segments[i - 1][1], segments[i - 1][2]
            end = pause_first - 1
            while end + 1 <= pause_last and end + 1 < len(mask) and mask[end + 1]:
                end += 1
            if pause_first <= end < pause_last - 3:  # speech runs from the previous word into the pause
                out[i][1:] = [pause_first, end]
                out[i - 1][1:] = [end + 1, last]
    return [(token, first, last) for token, first, last in out if not _is_filler(token)]


def _is_pause(segment: tuple[str, int, int]) -> bool:
    """A silence in a segmentation long enough to hide a short word (at least 0.1 s)."""
    return segment[0] == "<sil>" and segment[2] - segment[1] + 1 >= 10


def _is_filler(token: str) -> bool:
    """Silence and noise entries of a pocketsphinx segmentation (``<sil>``, ``<s>``, ``[NOISE]``, ``++UH++``)."""
    return token.startswith(("<", "[", "++"))


def _base(token: str) -> str:
    """A dictionary word without its alternate-pronunciation suffix (``the(2)`` -> ``the``)."""
    return re.sub(r"\(\d+\)$", "", token)


_TOKEN_RE = re.compile(r"[^\W_]+(?:['.,][^\W_]+)*")


def _tokens(word: str) -> list[str]:
    """The dictionary tokens a caption word is said as: lower case, punctuation off, symbols as words.

    ``"Studio's"`` -> ``["studio's"]``, ``"well-known,"`` -> ``["well", "known"]``, ``"1,500"`` -> ``["1,500"]``,
    ``"R&D"`` -> ``["r", "and", "d"]``.
    """
    text = unicodedata.normalize("NFKC", word).lower().replace("\u2019", "'").replace("\u2018", "'")
    for symbol, said in _SYMBOL_WORDS.items():
        text = text.replace(symbol, f" {said} ")
    return [t.strip("'") for t in _TOKEN_RE.findall(text) if t.strip("'")]


def _pronounce(tokens: list[str], decoder, cancel: CancelToken | None) -> dict[str, list[str]]:
    """ARPAbet phones for tokens the dictionary lacks: espeak-ng's IPA mapped to phones, else letter-to-sound rules."""
    if not tokens:
        return {}
    found: dict[str, list[str]] = {}
    for token, ipa in zip(tokens, _espeak_ipa(tokens, cancel)):
        phones = ipa_to_arpabet(ipa) if ipa else []
        if phones:
            found[token] = phones
    for token in tokens:
        if token not in found:
            phones = letters_to_arpabet(token, decoder.lookup_word)
            if phones:
                found[token] = phones
    return found


def _espeak_ipa(tokens: list[str], cancel: CancelToken | None) -> list[str]:
    """espeak-ng's US-English IPA for each token (one clause per token, one line each); empty strings if espeak-ng is
    missing or its lines do not match the tokens up."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return [""] * len(tokens)
    check(cancel)
    try:
        out = subprocess.run([exe, "-q", "--ipa", "-v", "en-us", "--stdin"], input="".join(f"{t}.\n" for t in tokens),
                             capture_output=True, text=True, timeout=ESPEAK_TIMEOUT_S, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("espeak-ng gave no pronunciations (%s); using letter-to-sound rules", exc)
        return [""] * len(tokens)
    check(cancel)
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines if out.returncode == 0 and len(lines) == len(tokens) else [""] * len(tokens)


# IPA (as espeak-ng writes it) to the en-us model's ARPAbet phones; longest symbols first.
_IPA = {
    "aɪə": "AY ER", "aʊə": "AW ER", "aɪ": "AY", "aʊ": "AW", "eɪ": "EY", "oʊ": "OW", "əʊ": "OW", "ɔɪ": "OY",
    "tʃ": "CH", "dʒ": "JH", "iə": "IY AH", "ɪə": "IH R", "oː": "AO", "eə": "EH R", "ɛə": "EH R", "ʊə": "UH R",
    "ɜː": "ER",
    "ɚ": "ER", "ɝ": "ER", "ɜ": "ER", "ə": "AH", "ʌ": "AH", "ɐ": "AH", "æ": "AE", "a": "AE", "ɑ": "AA", "ɒ": "AA",
    "ɔ": "AO", "ɛ": "EH", "e": "EH", "ɪ": "IH", "ᵻ": "IH", "ɨ": "IH", "i": "IY", "u": "UW", "ʊ": "UH", "o": "OW",
    "ɵ": "OW", "y": "UW", "ø": "ER", "œ": "ER",
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "ɡ": "G", "g": "G", "f": "F", "v": "V", "θ": "TH", "ð": "DH",
    "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH", "ɦ": "HH", "m": "M", "n": "N", "ŋ": "NG", "ɲ": "N",
    "l": "L", "ɫ": "L", "ɬ": "L", "ʎ": "L", "ɹ": "R", "r": "R", "ʁ": "R", "ʀ": "R", "ɾ": "T", "ʔ": "T", "w": "W",
    "ʍ": "W", "j": "Y", "x": "K", "ç": "HH", "β": "B", "ɣ": "G", "c": "K", "q": "K",
}
_IPA_MAX = max(len(k) for k in _IPA)


def ipa_to_arpabet(ipa: str) -> list[str]:
    """ARPAbet phones (the CMU dictionary's, no stress) for a line of espeak-ng IPA; unknown symbols are skipped.

    Stress and length marks, syllable breaks, combining marks and espeak-ng's language switches (``(fr)``) carry no
    phone of their own.
    """
    text = re.sub(r"\([a-z-]+\)", " ", unicodedata.normalize("NFD", ipa))
    text = "".join(c for c in text if not unicodedata.category(c).startswith("M") and c not in "ˈˌːˑ.‿|-")
    phones: list[str] = []
    i = 0
    while i < len(text):
        for size in range(_IPA_MAX, 0, -1):
            piece = text[i:i + size]
            if piece in _IPA:
                phones.extend(_IPA[piece].split())
                i += size
                break
        else:
            i += 1  # a space between words, or a symbol the model has no phone for
    return phones


_LETTERS = [  # rough English letter-to-sound rules, longest first: only for tokens espeak-ng could not say
    ("tion", "SH AH N"), ("th", "TH"), ("sh", "SH"), ("ch", "CH"), ("ph", "F"), ("ng", "NG"), ("ck", "K"),
    ("qu", "K W"), ("wh", "W"), ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ou", "AW"), ("ow", "OW"), ("ai", "EY"),
    ("ay", "EY"), ("oa", "OW"), ("oi", "OY"), ("oy", "OY"), ("er", "ER"), ("ir", "ER"), ("ur", "ER"), ("ar", "AA R"),
    ("or", "AO R"), ("a", "AE"), ("b", "B"), ("c", "K"), ("d", "D"), ("e", "EH"), ("f", "F"), ("g", "G"), ("h", "HH"),
    ("i", "IH"), ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"), ("n", "N"), ("o", "AA"), ("p", "P"), ("q", "K"),
    ("r", "R"), ("s", "S"), ("t", "T"), ("u", "AH"), ("v", "V"), ("w", "W"), ("x", "K S"), ("y", "IY"), ("z", "Z"),
]


def letters_to_arpabet(token: str, lookup=lambda word: None) -> list[str]:
    """ARPAbet phones for `token` by spelling rules; digits are read one by one (``lookup(word)`` gives a dictionary
    word's phones, e.g. pocketsphinx's ``Decoder.lookup_word``). Empty if nothing in it can be said."""
    plain = "".join(c for c in unicodedata.normalize("NFD", token.lower())
                    if not unicodedata.category(c).startswith("M"))
    phones: list[str] = []
    for part in re.findall(r"\d|[a-z]+", plain):
        if part.isdigit():
            said = lookup(_DIGIT_WORDS[int(part)])
            phones.extend((said or "").split())
            continue
        if len(part) > 2 and part.endswith("e") and part[-2] not in "aeiou":
            part = part[:-1]  # a silent final e
        i = 0
        while i < len(part):
            for letters, said in _LETTERS:
                if part.startswith(letters, i):
                    phones.extend(said.split())
                    i += len(letters)
                    break
            else:
                i += 1
    return phones
