"""Multilingual forced alignment with a CTC acoustic model (MMS forced aligner), when its weights are on this machine.

A wav2vec2 CTC model (``transformers.Wav2Vec2ForCTC``) trained on romanised characters of 1,130 languages
(`MMS_MODEL`, MMS weights: CC-BY-NC-4.0, non-commercial) gives per-frame log-probabilities of each character; the text,
romanised (``uroman`` when installed, else accents stripped), is forced through them with a CTC Viterbi
(`ctc_forced_align`, numpy), and each word spans its characters' frames (20 ms).

Nothing is downloaded: the weights must already be in the hub cache or a folder (``STUDIO_ALIGNER_MODEL`` names
another hub id or a folder). `ctc_aligner_id` says whether they are; `studio.voice.align` uses this for languages
pocketsphinx does not cover.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import threading
import unicodedata

import numpy as np

from ..errors import ProviderUnavailable, StudioError
from ..progress import CancelToken, check

log = logging.getLogger("studio.voice.align")

MMS_MODEL = "MahmoudAshraf/mms-300m-1130-forced-aligner"
SAMPLE_RATE = 16000
# A path whose mean log-probability per frame falls this far below the model's own best guess (greedy) is taken as
# audio that does not say the text. UNCALIBRATED: no real MMS weights were on the development machine.
MAX_MEAN_LOSS = 4.0
_lock = threading.Lock()


def model_name() -> str:
    """The CTC model to use: ``STUDIO_ALIGNER_MODEL`` (a hub id or folder) or `MMS_MODEL`."""
    return os.environ.get("STUDIO_ALIGNER_MODEL", "").strip() or MMS_MODEL


def ctc_aligner_id(language: str) -> str | None:
    """The CTC aligner's identity (``"ctc-<model>@<weights>/<language>"``) if torch, transformers and its weights are
    all here, else None. Nothing is imported beyond huggingface_hub and nothing is downloaded."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return None
    from ..weights import find_weights

    try:
        found = find_weights(model_name(), layout="transformers", extra_files=("vocab.json",), what="aligner model")
    except (ProviderUnavailable, StudioError):
        return None
    code = (language or "").strip().replace("_", "-").lower() or "und"
    return f"ctc-{found.model}@{found.stored_bytes}/{code}"


# -- CTC Viterbi -------------------------------------------------------------------------------------------------------
def ctc_forced_align(log_probs: np.ndarray, targets: list[int], blank: int = 0) -> tuple[np.ndarray, float] | None:
    """The most likely CTC path of `targets` through `log_probs`.

    Args:
        log_probs: ``(frames, vocabulary)`` log-probabilities (log-softmax of a CTC model's logits).
        targets: Token ids to align, in order (no blanks).
        blank: The blank token's id.

    Returns:
        (path, log probability): ``path[t]`` is the index into `targets` that frame t emits, or -1 for a blank; None
        when the audio has too few frames for the targets (each token needs a frame, repeated tokens a blank between).

    Raises:
        StudioError: `log_probs` is not 2-D, or a target is out of the vocabulary or is the blank.
    """
    emissions = np.asarray(log_probs, dtype=np.float64)
    if emissions.ndim != 2:
        raise StudioError(f"`log_probs` must be (frames, vocabulary), got shape {emissions.shape}")
    frames, vocabulary = emissions.shape
    labels = np.asarray(targets, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= vocabulary or np.any(labels == blank)):
        raise StudioError(f"`targets` must be token ids in 0..{vocabulary - 1} other than the blank {blank}")
    repeats = int(np.sum(labels[1:] == labels[:-1])) if len(labels) > 1 else 0
    if frames < len(labels) + repeats or frames == 0:
        return None
    # 1. The extended sequence: blank, t1, blank, t2, ..., blank (state s emits ext[s])
    ext = np.full(2 * len(labels) + 1, blank, dtype=np.int64)
    ext[1::2] = labels
    states = len(ext)
    # a state may be entered from two back when it is a token different from the token two back (skipping a blank)
    skip = np.zeros(states, dtype=bool)
    skip[3::2] = labels[1:] != labels[:-1]
    # 2. Viterbi over frames
    score = np.full(states, -np.inf)
    score[0] = emissions[0, ext[0]]
    if states > 1:
        score[1] = emissions[0, ext[1]]
    back = np.zeros((frames, states), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, frames):
        stay = score
        step = np.concatenate([[-np.inf], score[:-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        choices = np.stack([stay, step, jump])
        back[t] = np.argmax(choices, axis=0)
        score = choices[back[t], np.arange(states)] + emissions[t, ext]
    # 3. End in the last token or the final blank, then walk back
    last = states - 1 if states == 1 or score[-1] >= score[-2] else states - 2
    total = float(score[last])
    if not np.isfinite(total):
        return None
    path = np.empty(frames, dtype=np.int64)
    s = last
    for t in range(frames - 1, -1, -1):
        path[t] = (s - 1) // 2 if s % 2 else -1
        s -= int(back[t, s])
    return path, total


def token_spans(path: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(first frame, last frame) of each of `count` targets in a `ctc_forced_align` path."""
    spans = [(-1, -1)] * count
    for t, k in enumerate(path):
        if k >= 0:
            first, _ = spans[k]
            spans[k] = (t if first < 0 else first, t)
    return spans


# -- the model ---------------------------------------------------------------------------------------------------------
def romanise(text: str, language: str) -> str:
    """Lower-case Latin letters for the CTC model: ``uroman`` when installed (any script), else accents stripped."""
    if importlib.util.find_spec("uroman") is not None:
        try:
            return _uroman().romanize_string(text, lcode=_iso3(language)).lower()
        except Exception as exc:  # a romaniser failure leaves the plainer fallback below
            log.info("uroman could not romanise %r (%s); stripping accents instead", text[:40], exc)
    plain = unicodedata.normalize("NFKD", text)
    return "".join(c for c in plain if not unicodedata.combining(c)).lower()


@functools.lru_cache(maxsize=1)
def _uroman():
    import uroman

    return uroman.Uroman()


_ISO3 = {"en": "eng", "fr": "fra", "de": "deu", "es": "spa", "it": "ita", "pt": "por", "ru": "rus", "zh": "cmn",
         "ja": "jpn", "ko": "kor", "ar": "ara", "hi": "hin", "nl": "nld", "pl": "pol", "tr": "tur", "uk": "ukr",
         "el": "ell", "he": "heb", "sv": "swe", "cs": "ces", "vi": "vie", "th": "tha", "id": "ind", "fa": "fas"}


def _iso3(language: str) -> str | None:
    return _ISO3.get((language or "").split("-")[0].split("_")[0].lower())


@functools.lru_cache(maxsize=2)
def _load(model: str):
    """(model, vocabulary {token: id}, blank id, device) for `model`, from this machine only; cached per process."""
    import torch
    from transformers import Wav2Vec2ForCTC

    from ..weights import find_weights

    found = find_weights(model, layout="transformers", extra_files=("vocab.json",), what="aligner model")
    vocab = json.loads((found.folder / "vocab.json").read_text("utf-8"))
    if vocab and all(isinstance(v, dict) for v in vocab.values()):  # {language: {token: id}} (MMS ASR layout)
        vocab = next(iter(vocab.values()))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = Wav2Vec2ForCTC.from_pretrained(str(found.folder), local_files_only=True).to(device).eval()
    blank = net.config.pad_token_id
    for name in ("<blank>", "<pad>", "[PAD]"):
        if blank is None and name in vocab:
            blank = vocab[name]
    return net, {str(k): int(v) for k, v in vocab.items()}, int(blank or 0), device


def align_ctc(words: list[str], samples: np.ndarray, language: str,
              cancel: CancelToken | None = None) -> list[tuple[float, float] | None] | None:
    """(start_s, end_s) per word of `words` in `samples` (16 kHz float mono), None for a word with no character the
    model knows; None when the audio could not be aligned (too short, or not saying the text)."""
    import torch

    net, vocab, blank, device = _load(model_name())
    # 1. Each word's characters as token ids
    ids_per_word = []
    for word in words:
        letters = romanise(word, language)
        ids_per_word.append([vocab[c] for c in letters if c in vocab and vocab[c] != blank])
    targets = [i for ids in ids_per_word for i in ids]
    if not targets:
        log.warning("cannot align %r: the aligner model knows none of its characters", " ".join(words)[:80])
        return None
    check(cancel)
    # 2. Emissions (log-probabilities per 20 ms frame)
    x = samples.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    with _lock, torch.inference_mode():
        logits = net(torch.from_numpy(x)[None].to(device)).logits[0]
        log_probs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
    check(cancel)
    # 3. Viterbi, a check that the path is plausible, and the words' frames
    found = ctc_forced_align(log_probs, targets, blank)
    if found is None:
        log.warning("cannot align %d characters to %.2f s of audio", len(targets), len(samples) / SAMPLE_RATE)
        return None
    path, total = found
    loss = (float(log_probs.max(axis=1).sum()) - total) / len(log_probs)
    if loss > MAX_MEAN_LOSS:
        log.warning("the audio does not match the text %r (CTC path %.1f nats per frame below the model's own best "
                    "guess); keeping the estimate", " ".join(words)[:80], loss)
        return None
    frame_s = len(samples) / SAMPLE_RATE / len(log_probs)
    spans = token_spans(path, len(targets))
    out: list[tuple[float, float] | None] = []
    k = 0
    for ids in ids_per_word:
        if not ids:
            out.append(None)
            continue
        first, last = spans[k][0], spans[k + len(ids) - 1][1]
        out.append((first * frame_s, (last + 1) * frame_s))
        k += len(ids)
    return out
