"""The ``bark`` narrator: Suno's Bark text-to-speech through transformers' ``BarkModel`` and ``AutoProcessor``.

``suno/bark-small`` by default (``suno/bark`` for the Premium tiers), with Bark's voice presets (speaker prompts such
as ``v2/en_speaker_6``). Bark makes at most about 13 seconds per generation and drifts into babble after its text, so
a narration is cut at sentence ends (long sentences at their clauses) into pieces Bark can say, the pieces of a scene
are generated in batches, each one's audio is trimmed to its speech, and they are joined with short pauses (longer
after a sentence than after a clause). Word timings are estimated on each piece's real audio (`estimate_word_timings`)
and shifted to where that piece sits in the joined WAV. The model runs in float16 on a GPU, float32 on a CPU.

Cancellation is checked between batches and at every generated token (a stopping criterion), so a cancel does not
wait for a whole batch.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .. import devices
from ..errors import ProviderUnavailable, StudioError
from ..progress import CancelToken, ProgressFn, check, no_progress
from ..providers import register
from ..weights import LocalWeights, find_weights
from . import Speech
from .timing import boundary_strength, estimate_word_timings, join_words, speech_frames, split_words

log = logging.getLogger("studio")

DEFAULT_MODEL = "suno/bark-small"
DEFAULT_VOICE = "v2/en_speaker_6"
# Bark's languages (its voice presets are named v2/<language>_speaker_<n>).
LANGUAGES = ("en", "de", "es", "fr", "hi", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh")
MAX_PIECE_WORDS = 28  # about 11 s of speech: under Bark's ~13 s per generation
SPEECH_S_PER_WORD = 0.7  # generous: a piece may take this long per word (plus `_LEAD_S`) before it is cut off
_LEAD_S = 1.5
_EDGE_S = 0.06  # silence kept before and after each piece's speech


def _check(model: str = DEFAULT_MODEL, voice: str | None = DEFAULT_VOICE, device: str | None = None,
           cache_dir: str | None = None) -> str:
    """Cheap: torch and transformers installed, the weights and the voice preset on this machine, and a GPU (Bark on
    a CPU is several times slower than real time, so `auto` does not pick it there unless ``device='cpu'``)."""
    import importlib.util

    if not devices.torch_build()["installed"] or importlib.util.find_spec("transformers") is None:
        raise ProviderUnavailable("torch and transformers are not installed: pip install torch transformers")
    found = find_weights(model, layout="transformers", cache_dir=cache_dir,
                         extra_files=("tokenizer_config.json|vocab.txt|tokenizer.json",))
    if voice:
        _voice_files(found, voice)
    devices.check_device(device)
    where = device or devices.best_device()
    if where == "cpu" and device is None:
        raise ProviderUnavailable(f"{found.describe()} is here, but no GPU: Bark on a CPU takes several times the "
                                  "audio's length; pass device='cpu' to use it anyway")
    placed = devices.check_gpu_memory(where, found.loaded_bytes(2), forced=device is not None, what=found.model)
    return f"{found.describe()}, voice {voice or 'none'}, {placed}"


def _voice_files(found: LocalWeights, voice: str) -> None:
    """Check that a named voice preset's three prompt files are on this machine (Bark's hub repos fetch them lazily)."""
    import json

    if voice.endswith(".npz"):
        return
    index = found.folder / "speaker_embeddings_path.json"
    if not index.is_file():
        raise ProviderUnavailable(f"{found.model} has no voice presets (no speaker_embeddings_path.json): pass "
                                  "voice=None, or a .npz speaker prompt file")
    try:
        presets = json.loads(index.read_text("utf-8"))
    except ValueError as exc:
        raise ProviderUnavailable(f"{index} is unreadable ({exc}); download {found.model} again") from exc
    if voice not in presets or voice == "repo_or_path":
        names = sorted(k for k in presets if k != "repo_or_path")
        raise ProviderUnavailable(f"{found.model} has no voice preset {voice!r}; it has {', '.join(names[:12])}"
                                  + (" ..." if len(names) > 12 else ""))
    missing = [p for p in presets[voice].values() if not (found.folder / p).is_file()]
    if missing:
        raise ProviderUnavailable(f"voice preset {voice} of {found.model} is not on this machine: download it with "
                                  f"`hf download {found.model} --include 'speaker_embeddings/{voice}*'`")


def _speaks(language: str) -> bool:
    """Whether Bark has voices for `language` (``en``, ``pt-br``, ``zh-CN``: the primary subtag counts)."""
    return (language or "en").strip().replace("_", "-").split("-")[0].lower() in LANGUAGES


@register("narrator", "bark", check=_check, speaks=_speaks, description="Suno Bark (transformers): expressive neural voices, GPU")
def bark(model: str = DEFAULT_MODEL, voice: str | None = DEFAULT_VOICE, device: str | None = None,
         dtype: str | None = None, batch_size: int = 4, pause_s: float = 0.3, temperature: float = 0.7,
         cache_dir: str | None = None) -> "BarkNarrator":
    """A Bark narrator.

    Args:
        model: ``suno/bark-small``, ``suno/bark`` (in the local hub cache) or a folder saved with ``save_pretrained``.
        voice: The default voice preset (``v2/en_speaker_6``), a ``.npz`` speaker prompt, or None for Bark's random
            speaker; a project's own `voice` wins.
        device: ``cuda``, ``mps``, ``cpu``; None picks the best here.
        dtype: ``float16``, ``bfloat16`` or ``float32``; None: float16 on a GPU, float32 on a CPU.
        batch_size: Pieces (sentences) generated together.
        pause_s: Silence after a sentence (half of it after a clause of a long sentence).
        temperature: Sampling temperature of the semantic and coarse models.
        cache_dir: The hub cache to load from (default: ``HF_HUB_CACHE``).
    """
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 64:
        raise StudioError(f"`batch_size` must be a whole number from 1 to 64, got {batch_size!r}")
    if not 0.0 <= float(pause_s) <= 3.0:
        raise StudioError(f"`pause_s` must be between 0 and 3 seconds, got {pause_s!r}")
    if not 0.05 <= float(temperature) <= 2.0:
        raise StudioError(f"`temperature` must be between 0.05 and 2, got {temperature!r}")
    found = find_weights(model, layout="transformers", cache_dir=cache_dir)
    return BarkNarrator(found, voice=voice, device=devices.check_device(device), dtype=dtype, batch_size=batch_size,
                        pause_s=float(pause_s), temperature=float(temperature))


def plan_pieces(text: str, max_words: int = MAX_PIECE_WORDS) -> list[tuple[list[str], bool]]:
    """Cut `text` into pieces Bark can say in one generation: (the piece's caption words, ends a sentence).

    Pieces end at sentence ends; a sentence longer than `max_words` is cut at its clause ends (commas, semicolons),
    and a clause still too long at `max_words`. Every word of `split_words(text)` is in exactly one piece, in order.
    """
    words = split_words(text)
    sentences: list[list[str]] = [[]]
    for word in words:
        sentences[-1].append(word)
        if boundary_strength(word) == 2:
            sentences.append([])
    pieces: list[tuple[list[str], bool]] = []
    for sentence in (s for s in sentences if s):
        if len(sentence) <= max_words:
            pieces.append((sentence, True))
            continue
        current: list[str] = []
        for i, word in enumerate(sentence):
            current.append(word)
            last = i == len(sentence) - 1
            if last or len(current) >= max_words or (boundary_strength(word) == 1 and len(current) >= max_words // 3):
                pieces.append((current, last))
                current = []
    return pieces


class _StopOnCancel:
    def __init__(self, cancel: CancelToken | None) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = bool(self.cancel is not None and self.cancel.cancelled)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class BarkNarrator:
    """Speaks with Bark; the model loads on first use and stays until `release()`."""

    name = "bark"
    hooks = frozenset({"progress", "release"})  # optional hooks it implements (studio.providers.HOOKS)

    def __init__(self, weights: LocalWeights, *, voice: str | None, device: str | None, dtype: str | None,
                 batch_size: int, pause_s: float, temperature: float) -> None:
        self.weights = weights
        self.voice = voice
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.pause_s = pause_s
        self.temperature = temperature
        # Identity for the asset cache: another model, default voice or pause gives other audio.
        self.model = f"bark:{weights.model}:{voice}:pause{pause_s:g}:t{temperature:g}"
        self._bark: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()
        self.generations = 0  # generate() calls made (one per batch)

    # -- loading --------------------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the processor and the model (once), on the chosen device, offloading when GPU memory is short."""
        with self._lock:
            if self._bark is not None:
                return
            from transformers import AutoProcessor, BarkModel

            device = devices.choose_device(self.device)
            dtype = devices.choose_dtype(device, self.dtype)
            source = str(self.weights.folder)
            try:
                processor = AutoProcessor.from_pretrained(source)
                model = BarkModel.from_pretrained(source, dtype=dtype)
            except (OSError, ValueError) as exc:
                raise StudioError(f"cannot load Bark from {self.weights.model}: {exc}") from exc
            plan = devices.plan_memory(device, self.weights.loaded_bytes(devices.dtype_bytes(dtype)))
            if plan.mode in ("offload", "sequential"):
                model.enable_cpu_offload(gpu_id=int(device.split(":")[1]) if ":" in device else 0)
            else:
                model.to(device)
            model.eval()
            self._bark, self._processor, self.device = model, processor, device
            log.info("bark: %s loaded on %s (%s; %s)", self.weights.model, device, dtype, plan.reason)

    def use_model(self, model: Any, processor: Any) -> None:
        """Speak with a ``BarkModel`` and processor built elsewhere, already on their device (benchmarks of
        random-weight architectures, notebooks), instead of loading this narrator's model."""
        with self._lock:
            self._bark, self._processor, self.device = model, processor, str(model.device)

    def voices(self) -> list[str]:
        """The voice presets this model has."""
        self.load()
        return list(self._processor.available_voice_presets)

    @property
    def sample_rate(self) -> int:
        self.load()
        config = self._bark.generation_config
        return int(getattr(config, "sample_rate", None) or self._bark.config.codec_config.sampling_rate)

    # -- speaking -------------------------------------------------------------------------------------------------------
    def _voice_preset(self, voice: str | None, language: str) -> Any:
        """The speaker prompt to use: a preset's name, a checked ``.npz`` file's arrays, or None."""
        presets = set(self._processor.available_voice_presets)
        wanted = voice if voice is not None else self.voice
        lang = language.lower().split("-")[0].split("_")[0]
        if voice is None and wanted and lang != "en" and f"/{lang}_" not in wanted:
            # The default voice speaks another language than the project: take that language's first preset.
            same = sorted(p for p in presets if p.split("/")[-1].startswith(f"{lang}_"))
            if same:
                wanted = same[0]
        if wanted is None:
            return None
        if wanted in presets:
            try:
                _voice_files(self.weights, wanted)  # Bark's hub repos fetch preset files one by one
            except ProviderUnavailable as exc:
                raise StudioError(f"`voice` {wanted}: {exc}") from None
            return wanted
        if wanted.endswith(".npz"):
            path = Path(wanted).expanduser()
            if not path.is_file():
                raise StudioError(f"`voice` file {path} does not exist (a Bark speaker prompt .npz)")
            try:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {k: np.asarray(data[k]) for k in ("semantic_prompt", "coarse_prompt", "fine_prompt")}
            except (OSError, KeyError, ValueError) as exc:
                raise StudioError(f"`voice` file {path} is not a Bark speaker prompt (semantic_prompt, coarse_prompt "
                                  f"and fine_prompt arrays): {exc}") from exc
            return arrays
        shown = ", ".join(sorted(presets)[:10]) or "none"
        raise StudioError(f"`voice` {wanted!r} is not a voice preset of {self.weights.model} (it has {shown}"
                          f"{' ...' if len(presets) > 10 else ''}) nor a .npz speaker prompt file")

    def speak(self, text: str, *, voice: str | None = None, seed: int = 0, language: str = "en", out: Path,
              cancel: CancelToken | None = None, on_progress: ProgressFn | None = None) -> Speech:
        """Say `text` into a 16-bit mono WAV at `out`.

        Args:
            text: What to say.
            voice: A voice preset name or ``.npz`` speaker prompt; None uses the narrator's default (or, for another
                `language`, that language's first preset).
            seed: Seeds Bark's sampling: the same text, voice and seed give the same audio on the same device.
            language: The text's language (Bark speaks en, de, es, fr, hi, it, ja, ko, pl, pt, ru, tr, zh).
            out: Where to write the WAV (atomically).
            cancel: Checked between batches and at every generated token.
            on_progress: ``on_progress(fraction, message)`` after each batch of sentences.

        Returns:
            The `Speech`, with word timings estimated on each piece's audio.
        """
        import torch

        # 1. Check inputs
        if not isinstance(text, str) or not text.strip():
            raise StudioError("`text` is empty: there is nothing to say")
        lang = language.lower().split("-")[0].split("_")[0]
        if lang not in LANGUAGES:
            raise StudioError(f"Bark does not speak language {language!r}; it speaks {', '.join(LANGUAGES)}: choose "
                              "another narrator (espeak speaks over a hundred languages)")
        report = on_progress or no_progress
        check(cancel)
        self.load()
        preset = self._voice_preset(voice, language)

        # 2. Cut the text into pieces Bark can say, and generate them in batches
        pieces = plan_pieces(text)
        rate = self.sample_rate
        config = self._bark.generation_config
        semantic_hz = float(config.semantic_config.get("semantic_rate_hz", 49.9))
        semantic_cap = int(config.semantic_config.get("max_new_tokens", 768))
        stop = [_StopOnCancel(cancel)]
        torch.manual_seed(seed)
        audios: list[np.ndarray] = []
        for start in range(0, len(pieces), self.batch_size):
            check(cancel)
            batch = pieces[start:start + self.batch_size]
            texts = [join_words(words) for words, _ in batch]  # no spaces put into Chinese or Japanese
            longest_s = max(_LEAD_S + SPEECH_S_PER_WORD * len(words) for words, _ in batch)
            max_tokens = max(8, min(semantic_cap, math.ceil(longest_s * semantic_hz)))
            inputs = self._processor(texts, voice_preset=preset, return_tensors="pt")
            inputs = {k: (v.to(self._bark.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
            with torch.inference_mode():
                audio, lengths = self._bark.generate(
                    **inputs, do_sample=True, semantic_temperature=self.temperature,
                    coarse_temperature=self.temperature, semantic_max_new_tokens=max_tokens,
                    semantic_stopping_criteria=stop, coarse_stopping_criteria=stop, return_output_lengths=True)
            self.generations += 1
            check(cancel)
            audio = audio.float().cpu().numpy()
            for row, length in zip(audio, lengths):
                audios.append(_trim(row[: int(length)], rate))
            done = min(start + self.batch_size, len(pieces))
            report(done / len(pieces), f"sentence {done}/{len(pieces)}")

        # 3. Join the pieces with pauses; place each piece's words on its own audio
        parts: list[np.ndarray] = []
        timings = []
        offset = 0
        for i, ((words, sentence_end), samples) in enumerate(zip(pieces, audios)):
            piece_timings = estimate_word_timings(" ".join(words), samples, rate)
            timings += [type(t)(t.word, round(t.start_s + offset / rate, 4), round(t.end_s + offset / rate, 4))
                        for t in piece_timings]
            parts.append(samples)
            offset += len(samples)
            if i < len(pieces) - 1:
                gap = np.zeros(int(rate * (self.pause_s if sentence_end else self.pause_s / 2)), np.float32)
                parts.append(gap)
                offset += len(gap)
        joined = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if not len(joined):
            raise StudioError(f"Bark produced no audio for {text[:60]!r}")
        peak = float(np.abs(joined).max())
        if peak > 1.0:  # Bark can overshoot full scale: scale down rather than clip
            joined = joined / peak

        # 4. Write the WAV
        from ..media import write_wav

        write_wav(Path(out), joined, rate)
        return Speech(duration_s=len(joined) / rate, words=tuple(timings), sample_rate=rate, timing_source="estimated")

    def release(self) -> None:
        """Drop the model and free the memory it held (GPU memory first of all)."""
        with self._lock:
            self._bark = None
            self._processor = None
        devices.free_memory()


def _trim(samples: np.ndarray, rate: int) -> np.ndarray:
    """A piece's audio from just before its first speech to just after its last (Bark pads and trails off)."""
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) < rate // 10:
        return samples
    mask, frame_s = speech_frames(samples, rate)
    voiced = np.flatnonzero(mask)
    if not len(voiced):
        return samples
    start = max(0, int((voiced[0] * frame_s - _EDGE_S) * rate))
    end = min(len(samples), int(((voiced[-1] + 1) * frame_s + _EDGE_S) * rate))
    return samples[start:end] if end - start > rate // 20 else samples
