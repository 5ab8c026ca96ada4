"""The ``kokoro`` narrator: Kokoro-82M (Apache-2.0 weights, 24 kHz, 54 voices) on ONNX Runtime, phonemised by espeak-ng.

The weights are the hub's ONNX export ``onnx-community/Kokoro-82M-v1.0-ONNX`` (``python -m studio models pull
kokoro-82m``): ``onnx/model.onnx`` (fp32; ``variant=`` picks a quantised file instead), ``tokenizer.json`` (the phoneme
vocabulary) and ``voices/<name>.bin`` (a voice is a raw float32 array of shape (510, 1, 256): one style vector per
input length). The graph takes ``input_ids`` (int64 [1, T], the phoneme ids padded with 0 at both ends, T <= 512),
``style`` (float32 [1, 256], the voice's row for the number of phonemes) and ``speed`` (float32 [1]) and gives the
``waveform``; an export that also gives per-token ``durations`` (``...-v1.0-ONNX-timestamped``) yields exact word
timings (``timing_source`` "engine"), otherwise they are estimated from the audio.

Studio does not use Kokoro's own G2P (misaki needs spaCy and downloads a spaCy model at run time) nor the
``kokoro-onnx`` package (it phonemises through ``phonemizer-fork``, GPL-3.0). Text is phonemised by the ``espeak-ng``
program (text on stdin, never on the command line), with its multi-letter phonemes tied (``--tie``) and mapped onto
the symbols Kokoro was trained on, as Kokoro's own espeak fall-back does (misaki's ``espeak.py``): ``eɪ`` -> ``A``,
``aɪ`` -> ``I``, ``tʃ`` -> ``ʧ`` ... For Spanish, French, Hindi, Italian and Brazilian Portuguese this *is* Kokoro's
G2P; for English it is Kokoro's fall-back for words outside its dictionary, good but a little less natural. Japanese
and Chinese voices need misaki's own G2P (pyopenjtalk, jieba): `speaks` says no for them.

A long narration is cut into chunks under the model's 510-phoneme limit at sentence ends (a long sentence at its
clauses, then between words), the chunks are spoken one by one (progress after each, cancel checked between them) and
joined. The graph draws its own noise, so the same text can come out very slightly differently each time.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProviderUnavailable, StudioError
from ..progress import CancelToken, ProgressFn, check, no_progress
from ..project import WordTiming
from ..providers import register
from ..weights import LocalWeights, check_model_id, fetch_hint
from . import Speech
from .timing import estimate_word_timings, estimate_word_weight, split_words

log = logging.getLogger("studio")

DEFAULT_MODEL = "onnx-community/Kokoro-82M-v1.0-ONNX"
SAMPLE_RATE = 24000
MAX_TOKENS = 510  # phoneme ids per call; with the two pads the graph's 512-position limit
SAMPLES_PER_FRAME = 600  # one duration unit of Kokoro's predictor is 600 samples (25 ms) at 24 kHz
STYLE_DIM = 256
PARAMETERS = 82_000_000
# The graph files of the hub export, by the names transformers.js gives its dtypes.
VARIANTS = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "q8": "model_quantized.onnx", "q8f16": "model_q8f16.onnx",
            "q4": "model_q4.onnx", "q4f16": "model_q4f16.onnx", "uint8": "model_uint8.onnx",
            "uint8f16": "model_uint8f16.onnx"}
INSTALL_HINT = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"

# Kokoro-82M v1.0's voices and the language each was made for (the first letter of the name; the second is f/m).
_VOICE_NAMES = {
    "en-us": "af_heart af_alloy af_aoede af_bella af_jessica af_kore af_nicole af_nova af_river af_sarah af_sky "
             "am_adam am_echo am_eric am_fenrir am_liam am_michael am_onyx am_puck am_santa",
    "en-gb": "bf_alice bf_emma bf_isabella bf_lily bm_daniel bm_fable bm_george bm_lewis",
    "es": "ef_dora em_alex em_santa",
    "fr": "ff_siwis",
    "hi": "hf_alpha hf_beta hm_omega hm_psi",
    "it": "if_sara im_nicola",
    "ja": "jf_alpha jf_gongitsune jf_nezumi jf_tebukuro jm_kumo",
    "pt-br": "pf_dora pm_alex pm_santa",
    "zh": "zf_xiaobei zf_xiaoni zf_xiaoxiao zf_xiaoyi zm_yunjian zm_yunxi zm_yunxia zm_yunyang",
}
KOKORO_VOICES: dict[str, str] = {name: lang for lang, names in _VOICE_NAMES.items() for name in names.split()}
# The best-rated voice of each language (Kokoro's VOICES.md grades), used when no voice is named.
DEFAULT_VOICES = {"en-us": "af_heart", "en-gb": "bf_emma", "es": "ef_dora", "fr": "ff_siwis", "hi": "hf_alpha",
                  "it": "if_sara", "pt-br": "pf_dora", "ja": "jf_alpha", "zh": "zf_xiaobei"}
# Languages Studio's espeak-ng G2P serves, and the espeak-ng voice for each.
_ESPEAK_VOICES = {"en-us": "en-us", "en-gb": "en-gb", "es": "es", "fr": "fr-fr", "hi": "hi", "it": "it",
                  "pt-br": "pt-br"}
_NEEDS_MISAKI = {"ja": "Japanese", "zh": "Chinese"}
_VOICE_FILE = re.compile(r"^[a-z]{2}_[a-z0-9]{1,30}$")

# espeak-ng (tied with "^") -> Kokoro's symbols. English: misaki's EspeakFallback table; other languages: EspeakG2P's.
_EN_MAP = sorted({
    "ʔˌn\u0329": "ʔn", "ʔn\u0329": "ʔn", "a^ɪ": "I", "a^ʊ": "W", "d^ʒ": "ʤ", "e^ɪ": "A", "e": "A", "t^ʃ": "ʧ",
    "ɔ^ɪ": "Y", "ə^l": "ᵊl", "ʲo": "jo", "ʲə": "jə", "ʲ": "", "ɚ": "əɹ", "r": "ɹ", "x": "k", "ç": "k", "ɐ": "ə",
    "ɬ": "l", "\u0303": "",
}.items(), key=lambda kv: -len(kv[0]))
_OTHER_MAP = (("a^ɪ", "I"), ("a^ʊ", "W"), ("d^z", "ʣ"), ("d^ʒ", "ʤ"), ("e^ɪ", "A"), ("o^ʊ", "O"), ("ə^ʊ", "Q"),
              ("s^s", "S"), ("t^s", "ʦ"), ("t^ʃ", "ʧ"), ("ɔ^ɪ", "Y"))
# Punctuation Kokoro hears (it is in its vocabulary): kept in the phoneme string, not sent to espeak-ng.
_PUNCTUATION = ';:,.!?¡¿—…"«»“”()[]{}'
_PUNCTUATION_RUN = re.compile(r"(\s*[" + re.escape(_PUNCTUATION) + r"]+\s*)+")
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]»”’]*\s+")
_CLAUSE_END = re.compile(r"[,;:—–]+[\"')\]»”’]*\s+")
_LANGUAGE_FLAG = re.compile(r"\([a-z]{2,3}(-[a-z0-9]+)?\)")  # espeak-ng's "(en)word(fr)" language switches


# -- languages and voices -----------------------------------------------------------------------------------------------
def kokoro_language(language: str | None, voice: str | None = None) -> str | None:
    """The Kokoro language tag (``en-us``, ``en-gb``, ``es``, ``fr``, ``hi``, ``it``, ``pt-br``, ``ja``, ``zh``) of a
    project language such as ``en``, ``en-GB``, ``pt_BR`` or ``zh-Hans``; plain English follows `voice`'s accent
    (``bf_emma`` -> ``en-gb``). None when Kokoro has no voice for it."""
    code = (language or "").strip().replace("_", "-").lower()
    primary, _, region = code.partition("-")
    if primary == "en":
        if region in ("gb", "uk"):
            return "en-gb"
        if region:
            return "en-us"
        return "en-gb" if voice is not None and KOKORO_VOICES.get(voice) == "en-gb" else "en-us"
    if primary == "pt":
        return "pt-br"  # Kokoro's Portuguese voices are Brazilian
    if primary in ("zh", "cmn"):
        return "zh"
    return primary if primary in ("es", "fr", "hi", "it", "ja") else None


def speaks(language: str) -> bool:
    """Whether the kokoro narrator speaks `language` (``en``, ``en-gb``, ``es``, ``fr``, ``hi``, ``it``, ``pt``...).

    Japanese and Chinese have Kokoro voices but need misaki's G2P, which Studio does not ship: no for them.
    """
    return kokoro_language(language) in _ESPEAK_VOICES


def default_voice(language: str) -> str:
    """The Kokoro voice used for `language` when none is named (``af_heart`` for English, ``ff_siwis`` for French...).

    Raises:
        StudioError: Kokoro has no voice for `language`.
    """
    tag = kokoro_language(language)
    if tag is None:
        raise StudioError(f"Kokoro has no voice for language {language!r}; it speaks "
                          f"{', '.join(sorted(set(KOKORO_VOICES.values())))}: choose another narrator (espeak speaks "
                          "over a hundred languages)")
    return DEFAULT_VOICES[tag]


def accepts_voice(voice: str | None) -> bool:
    """Whether the kokoro narrator can speak with `voice`: None (one by language), a Kokoro voice name or a voice
    ``.bin`` file. A Bark voice preset (``v2/en_speaker_6``) is not one: ``auto`` then leaves Kokoro out."""
    return not voice or voice in KOKORO_VOICES or (voice.endswith(".bin") and Path(voice).expanduser().is_file())


def _voice_name(voice: str) -> str | None:
    """`voice` as a catalogue voice name, or None when it is a file path."""
    return voice if voice in KOKORO_VOICES else None


# -- finding the weights ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KokoroFiles:
    """Where a Kokoro export's files are: its graph, the phoneme vocabulary file and the voices folder."""

    weights: LocalWeights
    graph: Path
    vocab_file: Path
    voices: Path


def find_kokoro(model: str = DEFAULT_MODEL, variant: str = "fp32", *, voice: str | None = None,
                cache_dir: str | Path | None = None) -> KokoroFiles:
    """Find a Kokoro ONNX export on this machine (a local folder or the hub cache); nothing is downloaded.

    Raises:
        ProviderUnavailable: the model, its vocabulary or `voice` is not here (the message says how to fetch it).
        StudioError: `model` or `variant` is malformed.
    """
    from ..weights import _looks_like_path

    if variant not in VARIANTS:
        raise StudioError(f"`variant` must be one of {', '.join(VARIANTS)}, got {variant!r}")
    model = check_model_id(model)
    graph_name = f"onnx/{VARIANTS[variant]}"
    if _looks_like_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ProviderUnavailable(f"`model` folder {folder} does not exist")
        graph = folder / graph_name
        if not graph.is_file():
            raise ProviderUnavailable(f"`model` folder {folder} has no {graph_name}: it needs the layout of "
                                      f"{DEFAULT_MODEL} (onnx/, voices/, tokenizer.json)")
        source = "folder"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError as exc:
            raise ProviderUnavailable("huggingface_hub is not installed: pip install huggingface_hub") from exc
        found = try_to_load_from_cache(model, graph_name, cache_dir=str(cache_dir) if cache_dir else None)
        if not isinstance(found, str):
            raise ProviderUnavailable(f"the Kokoro weights {model} ({graph_name}) are not on this machine: download "
                                      f"them once with {fetch_hint(model)} (or pass a local folder)")
        graph = Path(found)
        folder = graph.parent.parent
        source = "hub cache"
    vocab_file = next((folder / name for name in ("tokenizer.json", "config.json") if _has_vocab(folder / name)), None)
    voices = folder / "voices"
    missing = [what for what, ok in (("tokenizer.json (the phoneme vocabulary)", vocab_file is not None),
                                     ("voices/*.bin", voices.is_dir() and any(voices.glob("*.bin")))) if not ok]
    if missing:
        raise ProviderUnavailable(f"{model} is incomplete on this machine: {', '.join(missing)} missing; download it "
                                  f"again with {fetch_hint(model)}")
    if voice and _voice_name(voice) and not (voices / f"{voice}.bin").is_file():
        raise ProviderUnavailable(f"voice {voice} of {model} is not on this machine (voices/{voice}.bin): download it "
                                  f"with {fetch_hint(model)}")
    weights = LocalWeights(model=model, folder=folder, source=source, parameters=PARAMETERS,
                           stored_bytes=graph.stat().st_size)
    return KokoroFiles(weights=weights, graph=graph, vocab_file=vocab_file, voices=voices)


def _has_vocab(path: Path) -> bool:
    """Whether a JSON file holds Kokoro's vocabulary (config.json's ``vocab``, tokenizer.json's ``model.vocab``)."""
    if not path.is_file():
        return False
    try:
        return bool(_read_vocab(path))
    except StudioError:
        return False


def _read_vocab(path: Path) -> dict[str, int]:
    """Phoneme symbol -> id, from ``config.json`` (``vocab``) or ``tokenizer.json`` (``model.vocab``)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise StudioError(f"{path} is unreadable ({exc}); download the Kokoro model again") from exc
    vocab = data.get("vocab") if isinstance(data, dict) else None
    if vocab is None and isinstance(data, dict) and isinstance(data.get("model"), dict):
        vocab = data["model"].get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        return {}
    if not all(isinstance(k, str) and len(k) == 1 and isinstance(v, int) and v >= 0 for k, v in vocab.items()):
        raise StudioError(f"{path}: the Kokoro vocabulary must map single symbols to ids")
    return {k: v for k, v in vocab.items() if k != "$"}  # "$" is the pad (id 0)


def read_voice(path: Path) -> np.ndarray:
    """A voice file (raw little-endian float32, 510 x 1 x 256) as an array of shape (rows, 256).

    Raises:
        StudioError: the file is missing or not a Kokoro voice.
    """
    try:
        data = np.fromfile(path, dtype="<f4")
    except OSError as exc:
        raise StudioError(f"Kokoro voice file {path} cannot be read: {exc}") from exc
    if data.size == 0 or data.size % STYLE_DIM:
        raise StudioError(f"{path} is not a Kokoro voice (a float32 array of N x 1 x {STYLE_DIM} values; it holds "
                          f"{data.size} values)")
    return data.reshape(-1, STYLE_DIM)


# -- the provider -----------------------------------------------------------------------------------------------------
def _check(model: str = DEFAULT_MODEL, variant: str = "fp32", voice: str | None = None, device: str | None = None,
           cache_dir: str | None = None) -> str:
    """Cheap: onnxruntime and espeak-ng installed, the graph, vocabulary and voice on this machine."""
    import importlib.util

    from .espeak import _exe

    if importlib.util.find_spec("onnxruntime") is None:
        raise ProviderUnavailable(f"ONNX Runtime is not installed: {INSTALL_HINT}")
    _exe()  # espeak-ng phonemises for Kokoro
    if device not in (None, "cpu", "cuda"):
        raise StudioError(f"`device` must be 'cpu', 'cuda' or None, got {device!r}")
    files = find_kokoro(model, variant, voice=voice, cache_dir=cache_dir)
    where = {"cuda": "CUDA", "cpu": "CPU"}.get(device or "", "CUDA when ONNX Runtime has it, else CPU")
    return f"{files.weights.describe()}, {variant}, voice {voice or 'by language'}, {where}"


@register("narrator", "kokoro", check=_check, speaks=speaks,
          description="Kokoro-82M (ONNX Runtime): natural neural voices in 6 languages, fast even on a CPU; Apache-2.0")
def kokoro(model: str = DEFAULT_MODEL, variant: str = "fp32", voice: str | None = None, speed: float = 1.0,
           device: str | None = None, max_chunk_tokens: int = MAX_TOKENS,
           cache_dir: str | None = None) -> "KokoroNarrator":
    """A Kokoro narrator; the model loads on first use and stays loaded until released.

    Args:
        model: ``onnx-community/Kokoro-82M-v1.0-ONNX`` (in the hub cache) or a folder of the same layout.
        variant: Which graph: ``fp32`` (``onnx/model.onnx``, default), ``fp16``, ``q8``, ``q8f16``, ``q4``, ``q4f16``,
            ``uint8``, ``uint8f16``.
        voice: The default voice (``af_heart``, ``bf_emma``, ``ff_siwis``... or a voice ``.bin`` file); None picks
            one by the project's language. A project's own `voice` wins.
        speed: Speaking rate, 0.5 to 2.0 (1.0 is the voice's own).
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when ONNX Runtime has its CUDA provider, else CPU).
        max_chunk_tokens: Phonemes per model call, 16 to 510 (a narration is spoken in chunks of at most this).
        cache_dir: The hub cache to load from (default: ``HF_HUB_CACHE``).
    """
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.5 <= float(speed) <= 2.0:
        raise StudioError(f"`speed` must be a number from 0.5 to 2.0, got {speed!r}")
    if device not in (None, "cpu", "cuda"):
        raise StudioError(f"`device` must be 'cpu', 'cuda' or None, got {device!r}")
    if isinstance(max_chunk_tokens, bool) or not isinstance(max_chunk_tokens, int) or \
            not 16 <= max_chunk_tokens <= MAX_TOKENS:
        raise StudioError(f"`max_chunk_tokens` must be a whole number from 16 to {MAX_TOKENS}, got {max_chunk_tokens!r}")
    if voice is not None and (not isinstance(voice, str) or not accepts_voice(voice)):
        raise StudioError(f"`voice` must be a Kokoro voice such as 'af_heart' (see studio.voice.kokoro.KOKORO_VOICES) "
                          f"or a voice .bin file, got {voice!r}")
    files = find_kokoro(model, variant, voice=voice, cache_dir=cache_dir)
    return KokoroNarrator(files, variant=variant, voice=voice or None, speed=float(speed), device=device,
                          max_chunk_tokens=max_chunk_tokens)


@dataclass
class _Chunk:
    """A piece of the narration spoken in one model call."""

    text: str
    phonemes: str
    ids: list[int]


class KokoroNarrator:
    """Speaks with Kokoro-82M on ONNX Runtime (see the module's notes)."""

    name = "kokoro"
    hooks = frozenset({"progress", "release"})  # optional hooks it implements (studio.providers.HOOKS)

    def __init__(self, files: KokoroFiles, *, variant: str = "fp32", voice: str | None = None, speed: float = 1.0,
                 device: str | None = None, max_chunk_tokens: int = MAX_TOKENS) -> None:
        from .espeak import _exe, espeak_version

        self.files = files
        self.variant = variant
        self.voice = voice
        self.speed = speed
        self.device = device
        self.max_chunk_tokens = max_chunk_tokens
        self.sample_rate = SAMPLE_RATE
        self.vocab = _read_vocab(files.vocab_file)
        if not self.vocab:
            raise StudioError(f"{files.vocab_file} holds no Kokoro vocabulary; download the model again")
        version = espeak_version(_exe())
        # Everything that changes the audio: part of the asset cache key.
        self.model = (f"kokoro:{files.weights.model}:{variant}@{speed:g}x;voice={voice or 'by-language'};"
                      f"chunks<={max_chunk_tokens};espeak-ng-{version}")
        self._session: Any = None
        self._voices: dict[str, np.ndarray] = {}
        self._lock = threading.RLock()
        self.calls = 0  # model calls so far (tests and benchmarks read it)

    # -- loading ---------------------------------------------------------------------------------------------------------
    def load(self) -> Any:
        """Start the ONNX Runtime session (once; it stays until `release`)."""
        with self._lock:
            if self._session is None:
                self._session = _open_session(self.files.graph, self.device)
            return self._session

    def release(self) -> None:
        """Drop the session and the loaded voices."""
        with self._lock:
            self._session = None
            self._voices.clear()

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def _style(self, voice: str) -> np.ndarray:
        """The voice's style table (rows x 256), loaded once."""
        with self._lock:
            if voice not in self._voices:
                if _voice_name(voice):
                    path = self.files.voices / f"{voice}.bin"
                    if not path.is_file():
                        raise StudioError(f"voice {voice} of {self.files.weights.model} is not on this machine "
                                          f"(voices/{voice}.bin): download it with {fetch_hint(self.files.weights.model)}")
                else:
                    path = Path(voice).expanduser()
                self._voices[voice] = read_voice(path)
            return self._voices[voice]

    def _choose_voice(self, voice: str | None, language: str) -> tuple[str, str]:
        """(voice, Kokoro language tag) for a project's `voice` and `language`, checked."""
        chosen = voice
        if not chosen and self.voice:  # the narrator's default voice, unless it was made for another language
            own = KOKORO_VOICES.get(self.voice)
            wanted = kokoro_language(language, self.voice)
            if own is None or wanted is None or own.split("-")[0] == wanted.split("-")[0]:
                chosen = self.voice
        if chosen:
            if not accepts_voice(chosen):
                hint = " (Bark's voice presets need narrator='bark')" if chosen.startswith("v2/") else ""
                raise StudioError(f"`voice` {chosen!r} is not a Kokoro voice{hint}; Kokoro's voices: "
                                  f"{', '.join(KOKORO_VOICES)} (or the path of a voice .bin file)")
        tag = kokoro_language(language, chosen)
        if tag is None:
            raise StudioError(f"Kokoro does not speak language {language!r}; it speaks "
                              f"{', '.join(sorted(_ESPEAK_VOICES))}: choose another narrator (espeak speaks over a "
                              "hundred languages)")
        if tag in _NEEDS_MISAKI:
            raise StudioError(f"Kokoro's {_NEEDS_MISAKI[tag]} voices need misaki's {_NEEDS_MISAKI[tag]} G2P, which "
                              "Studio does not ship (espeak-ng's phonemes are not the ones they were trained on): "
                              "choose the bark or espeak narrator for this language")
        return chosen or DEFAULT_VOICES[tag], tag

    # -- speaking --------------------------------------------------------------------------------------------------------
    def speak(self, text: str, *, voice: str | None = None, seed: int = 0, language: str = "en", out: Path,
              cancel: CancelToken | None = None, on_progress: ProgressFn | None = None) -> Speech:
        """Say `text` into a 16-bit mono 24 kHz WAV at `out` (written atomically).

        Args:
            text: What to say (any characters; it reaches espeak-ng on stdin only).
            voice: A Kokoro voice (``af_heart``...) or a voice ``.bin`` file; None uses the narrator's default, else
                the language's (`default_voice`).
            seed: Ignored: the graph draws its own noise.
            language: The text's language (``en``, ``en-gb``, ``es``, ``fr``, ``hi``, ``it``, ``pt``).
            out: Where to write the WAV.
            cancel: Checked between chunks (and stops espeak-ng at once).
            on_progress: ``on_progress(fraction, message)`` after each chunk.

        Returns:
            The `Speech`: word timings from the model's durations when it gives them ("engine"), else estimated.
        """
        # 1. Check inputs
        if not isinstance(text, str) or not text.strip():
            raise StudioError("`text` is empty: there is nothing to say")
        name, tag = self._choose_voice(voice, language)
        report = on_progress or no_progress
        check(cancel)
        style = self._style(name)
        session = self.load()

        # 2. Phonemise and cut into chunks the model can take
        g2p = _G2P(tag, self.vocab, cancel)
        chunks = plan_chunks(text, g2p, self.max_chunk_tokens)
        if not chunks:
            raise StudioError(f"Kokoro has nothing to say in {text[:60]!r}: espeak-ng gave no phonemes for it")

        # 3. Speak chunk by chunk
        audios: list[np.ndarray] = []
        durations: list[np.ndarray | None] = []
        for index, chunk in enumerate(chunks, start=1):
            check(cancel)
            audio, duration = _run(session, chunk.ids, style, self.speed)
            self.calls += 1
            audios.append(audio)
            durations.append(duration)
            report(index / len(chunks), f"chunk {index}/{len(chunks)}")
        check(cancel)
        samples = np.concatenate(audios).astype(np.float32)
        if not len(samples):
            raise StudioError(f"Kokoro produced no audio for {text[:60]!r}")
        peak = float(np.abs(samples).max())
        if peak > 1.0:  # scale down rather than clip
            samples = samples / peak

        # 4. Word timings: the model's own durations, else an estimate on each chunk's audio
        timings = None
        if all(d is not None for d in durations):
            timings = _engine_timings(chunks, audios, durations, g2p, self.sample_rate)
        source = "engine" if timings is not None else "estimated"
        if timings is None:
            timings = _estimated_timings(chunks, audios, g2p, self.sample_rate)

        # 5. Write the WAV
        from ..media import write_wav

        write_wav(Path(out), samples, self.sample_rate)
        return Speech(duration_s=len(samples) / self.sample_rate, words=tuple(timings), sample_rate=self.sample_rate,
                      timing_source=source)


# -- ONNX Runtime -----------------------------------------------------------------------------------------------------
def _open_session(graph: Path, device: str | None) -> Any:
    """An ONNX Runtime session on CUDA (when asked for, or when there by default) or the CPU."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ProviderUnavailable(f"ONNX Runtime is not installed: {INSTALL_HINT}") from exc
    available = onnxruntime.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise StudioError("`device` 'cuda' was asked for but ONNX Runtime has no CUDA provider: pip install "
                          "onnxruntime-gpu (and remove onnxruntime)")
    use_cuda = device == "cuda" or (device is None and "CUDAExecutionProvider" in available)
    providers: list[Any] = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda else []
    providers.append("CPUExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(graph), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime's errors are not one class
        raise StudioError(f"ONNX Runtime cannot load the Kokoro graph {graph}: {exc}") from exc
    names = {i.name for i in session.get_inputs()}
    if not ({"input_ids", "tokens"} & names and {"style", "ref_s"} & names and "speed" in names):
        raise StudioError(f"{graph} is not a Kokoro graph: its inputs are {sorted(names)} (expected input_ids, style "
                          "and speed)")
    log.info("Kokoro graph %s loaded on %s", graph.name, session.get_providers()[0])
    return session


def _run(session: Any, ids: list[int], style: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray | None]:
    """One model call: (waveform, per-token durations or None) for phoneme ids (without pads)."""
    inputs = {i.name: i for i in session.get_inputs()}
    ids_name = "input_ids" if "input_ids" in inputs else "tokens"
    style_name = "style" if "style" in inputs else "ref_s"
    row = style[min(len(ids), len(style) - 1)]
    speed_type = inputs["speed"].type
    if "int" in speed_type:  # some exports take an integer speed
        if float(speed) != int(speed):
            raise StudioError(f"this Kokoro graph takes a whole-number speed only, got {speed}")
        speed_value = np.array([int(speed)], dtype=np.int32 if "int32" in speed_type else np.int64)
    else:
        speed_value = np.array([speed], dtype=np.float16 if "float16" in speed_type else np.float32)
    style_dtype = np.float16 if "float16" in inputs[style_name].type else np.float32  # an fp16 graph's own inputs
    feeds = {ids_name: np.array([[0, *ids, 0]], dtype=np.int64), style_name: row.reshape(1, STYLE_DIM).astype(style_dtype),
             "speed": speed_value}
    try:
        outputs = session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument classes
        raise StudioError(f"Kokoro failed on a chunk of {len(ids)} phonemes: {exc}") from exc
    names = [o.name for o in session.get_outputs()]
    audio = outputs[names.index("waveform")] if "waveform" in names else outputs[0]
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    duration = None
    for candidate in ("durations", "duration", "pred_dur"):
        if candidate in names:
            values = np.asarray(outputs[names.index(candidate)], dtype=np.float64).reshape(-1)
            duration = values if len(values) == len(ids) + 2 and values.sum() > 0 else None
            break
    return audio, duration


# -- G2P ----------------------------------------------------------------------------------------------------------------
class _G2P:
    """espeak-ng phonemes in Kokoro's symbols, for one language."""

    def __init__(self, tag: str, vocab: dict[str, int], cancel: CancelToken | None) -> None:
        from .espeak import EspeakNarrator

        self.tag = tag
        self.voice = _ESPEAK_VOICES[tag]
        self.vocab = vocab
        self.cancel = cancel
        self._espeak = EspeakNarrator()

    def ids(self, phonemes: str) -> list[int]:
        """Kokoro ids of a phoneme string (symbols outside the vocabulary are dropped)."""
        return [self.vocab[c] for c in phonemes if c in self.vocab]

    def phonemize(self, text: str) -> str:
        """`text` as Kokoro phonemes, its punctuation kept where Kokoro hears it."""
        text = _normalize(text, self.tag)
        sections: list[tuple[bool, str]] = []  # (is punctuation, text)
        position = 0
        for match in _PUNCTUATION_RUN.finditer(text):
            start, end = match.span()
            if _between_digits(text, start, end):
                continue  # 3.5, 1,000 and 10:30 are read by espeak-ng as numbers
            if start > position:
                sections.append((False, text[position:start]))
            sections.append((True, match.group()))
            position = end
        if position < len(text):
            sections.append((False, text[position:]))
        spoken = [s for is_mark, s in sections if not is_mark and s.strip()]
        lines = iter(self._lines(spoken))
        parts = []
        for is_mark, section in sections:
            if is_mark:
                marks = "".join(c for c in section.strip() if c in self.vocab)
                parts.append((" " if section[:1].isspace() else "") + marks + (" " if section[-1:].isspace() else ""))
            elif section.strip():
                parts.append(self._map(next(lines)))
        joined = re.sub(r" {2,}", " ", "".join(parts)).strip()
        return "".join(c for c in joined if c in self.vocab)

    def word_phonemes(self, words: list[str]) -> list[str] | None:
        """Each caption word's phonemes said alone (None when espeak-ng's lines do not match the words up)."""
        from .espeak import _core

        cores = [_core(_normalize(word, self.tag)) for word in words]
        spoken = [c for c in cores if c]
        if not spoken:
            return None
        stdout = self._espeak._run(["-q", "--ipa", "--tie=^", "-v", self.voice], "".join(f"{c}.\n" for c in spoken),
                                   self.voice, self.cancel)
        lines = stdout.decode("utf-8", "replace").splitlines()
        if len(lines) != len(spoken):
            return None
        mapped = iter(self._map(line) for line in lines)
        return ["".join(c for c in next(mapped) if c in self.vocab) if core else "" for core in cores]

    def _lines(self, sections: list[str]) -> list[str]:
        """espeak-ng's IPA for each section (one clause each): one call, or one per section when lines do not match."""
        if not sections:
            return []
        args = ["-q", "--ipa", "--tie=^", "-v", self.voice]
        text = "".join(f"{' '.join(s.split())}.\n" for s in sections)
        lines = self._espeak._run(args, text, self.voice, self.cancel).decode("utf-8", "replace").splitlines()
        if len(lines) == len(sections):
            return lines
        # espeak-ng cut a section into clauses of its own: ask for each one alone and join its lines
        return [" ".join(self._espeak._run(args, f"{' '.join(s.split())}.\n", self.voice, self.cancel)
                         .decode("utf-8", "replace").split()) for s in sections]

    def _map(self, ipa: str) -> str:
        """espeak-ng's tied IPA as Kokoro symbols (see the module's notes)."""
        ps = _LANGUAGE_FLAG.sub("", ipa).strip()
        if self.tag in ("en-us", "en-gb"):
            for old, new in _EN_MAP:
                ps = ps.replace(old, new)
            ps = re.sub(r"(\S)\u0329", r"ᵊ\1", ps).replace("\u0329", "")
            if self.tag == "en-gb":
                ps = ps.replace("e^ə", "ɛː").replace("iə", "ɪə").replace("ə^ʊ", "Q")
            else:
                ps = ps.replace("o^ʊ", "O").replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ").replace("ɪə", "iə")
                ps = ps.replace("ː", "")
                ps = ps.replace("ɹɹ", "ɹ")  # espeak-ng's ɚ before ɹ ("interarticular"): one ɹ, as in misaki
                ps = re.sub(r"ᵻ(?![dz](?:$|[^\w]))", "ə", ps)  # misaki keeps ᵻ only in the -ed and -es endings
            ps = ps.replace("o", "ɔ").replace("ɾ", "T").replace("ʔ", "t").replace("^", "")
            ps = re.sub(r"(?<=[a-zɹː])(?=hˈʌndɹɪd)", " ", ps)  # "nineteen hundred" said as two words
            ps = re.sub(r" z(?=[;:,.!?¡¿—…\"«»“” ]|$)", "z", ps)  # "1990s": the plural joins its number
        else:
            for old, new in _OTHER_MAP:
                ps = ps.replace(old, new)
            ps = ps.replace("^", "").replace("-", "")
        return ps


def _between_digits(text: str, start: int, end: int) -> bool:
    """A single . , or : with digits on both sides (a number, not punctuation)."""
    return end - start == 1 and text[start] in ".,:" and 0 < start and end < len(text) and \
        text[start - 1].isdigit() and text[end].isdigit()


_TITLES = ((re.compile(r"\bD[Rr]\.(?= [A-Z])"), "Doctor"), (re.compile(r"\b(?:Mr\.|MR\.(?= [A-Z]))"), "Mister"),
           (re.compile(r"\b(?:Ms\.|MS\.(?= [A-Z]))"), "Miss"), (re.compile(r"\b(?:Mrs\.|MRS\.(?= [A-Z]))"), "Mrs"))


def _normalize(text: str, tag: str) -> str:
    """Text as espeak-ng should read it for Kokoro: typographic quotes and CJK punctuation made plain; for English,
    titles spelled out and years read as years (Kokoro's own normalisation, in part)."""
    text = unicodedata.normalize("NFC", text).replace("‘", "'").replace("’", "'")
    for a, b in zip("、。！，：；？।", ",.!,:;?."):
        text = text.replace(a, b + " ")
    text = " ".join(text.split())
    if tag in ("en-us", "en-gb"):
        for pattern, spoken in _TITLES:
            text = pattern.sub(spoken, text)
        text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
        text = re.sub(r"\b(1[1-9]|20)(\d\d)(s?)\b", _year, text)
    return text


def _year(match: re.Match) -> str:
    """1990 -> "19 90", 1905 -> "19 oh 5", 1900 -> "19 hundred" (2000-2009 stay as numbers)."""
    left, right, plural = match.group(1), int(match.group(2)), match.group(3)
    if left == "20" and right < 10:
        return match.group()
    if right == 0:
        return f"{left} hundred{plural}"
    return f"{left} oh {right}{plural}" if right < 10 else f"{left} {right}{plural}"


# -- chunks -------------------------------------------------------------------------------------------------------------
def plan_chunks(text: str, g2p: _G2P, limit: int = MAX_TOKENS) -> list[_Chunk]:
    """Cut `text` into chunks of at most `limit` phoneme ids: sentences packed together while they fit; a sentence
    over the limit is cut at its clauses, then between words (a single word over it is cut short)."""
    pieces: list[_Chunk] = []
    for sentence in _split_at(text, _SENTENCE_END):
        pieces += _fit(sentence, g2p, limit)
    chunks: list[_Chunk] = []
    for piece in pieces:
        if not piece.ids:
            continue
        last = chunks[-1] if chunks else None
        if last is not None and len(last.ids) + 1 + len(piece.ids) <= limit:
            phonemes = f"{last.phonemes} {piece.phonemes}"
            chunks[-1] = _Chunk(f"{last.text} {piece.text}", phonemes, g2p.ids(phonemes))
        else:
            chunks.append(piece)
    return chunks


def _fit(text: str, g2p: _G2P, limit: int) -> list[_Chunk]:
    """`text` as one chunk, or cut in two at the clause end (else the space) nearest its middle, recursively."""
    phonemes = g2p.phonemize(text)
    ids = g2p.ids(phonemes)
    if len(ids) <= limit:
        return [_Chunk(text, phonemes, ids)]
    cuts = [m.end() for m in _CLAUSE_END.finditer(text)] or [m.end() for m in re.finditer(r"\s+", text)]
    cuts = [c for c in cuts if 0 < c < len(text)]
    if not cuts:
        log.warning("Kokoro: a word of %d phonemes is longer than a chunk (%d); it is cut short", len(ids), limit)
        kept = ids[:limit]
        return [_Chunk(text, "".join(c for c in phonemes if c in g2p.vocab)[:limit], kept)]
    middle = len(text) / 2
    cut = min(cuts, key=lambda c: abs(c - middle))
    return _fit(text[:cut].strip(), g2p, limit) + _fit(text[cut:].strip(), g2p, limit)


def _split_at(text: str, pattern: re.Pattern) -> list[str]:
    """`text` cut after each match of `pattern` (a boundary followed by whitespace), pieces stripped."""
    pieces, position = [], 0
    for match in pattern.finditer(text):
        pieces.append(text[position:match.end()].strip())
        position = match.end()
    pieces.append(text[position:].strip())
    return [p for p in pieces if p]


# -- word timings -------------------------------------------------------------------------------------------------------
def _estimated_timings(chunks: list[_Chunk], audios: list[np.ndarray], g2p: _G2P, rate: int) -> list[WordTiming]:
    """Word timings estimated on each chunk's audio (weighted by the words' phonemes), shifted to where it sits."""
    timings: list[WordTiming] = []
    offset = 0
    for chunk, audio in zip(chunks, audios):
        words = split_words(chunk.text)
        per_word = g2p.word_phonemes(words)
        weights = None
        if per_word is not None:
            weights = [float(_count(p)) or estimate_word_weight(w) for p, w in zip(per_word, words)]
        for t in estimate_word_timings(chunk.text, audio, rate, weights=weights):
            timings.append(WordTiming(t.word, round(t.start_s + offset / rate, 4), round(t.end_s + offset / rate, 4)))
        offset += len(audio)
    return timings


def _engine_timings(chunks: list[_Chunk], audios: list[np.ndarray], durations: list[np.ndarray | None], g2p: _G2P,
                    rate: int) -> list[WordTiming] | None:
    """Word timings from the model's per-token durations (scaled to each chunk's real length), matched to the caption
    words as Piper's are (`studio.voice.piper._align_words`); None when they cannot be matched up."""
    from .piper import _align_words, _phoneme_words

    timings: list[WordTiming] = []
    offset = 0
    for chunk, audio, duration in zip(chunks, audios, durations):
        words = split_words(chunk.text)
        per_word = g2p.word_phonemes(words)
        if per_word is None or duration is None:
            return None
        scale = len(audio) / float(duration.sum())  # ~600 samples a unit; exact to the chunk's own length
        edges = np.round(np.concatenate([[0.0], np.cumsum(duration)]) * scale).astype(np.int64)
        symbols = [c for c in chunk.phonemes if c in g2p.vocab]
        if len(symbols) != len(duration) - 2:
            return None
        spans = [(symbol, int(edges[k + 1]) + offset, int(edges[k + 2]) + offset) for k, symbol in enumerate(symbols)]
        expected = [_phoneme_words(list(p)) for p in per_word]
        aligned = _align_words(words, expected, _phoneme_words(spans, lambda span: span[0]), rate)
        if aligned is None:
            return None
        timings += aligned
        offset += len(audio)
    return timings


def _count(phonemes: str) -> int:
    """Phoneme symbols in a Kokoro phoneme string (stress and length marks, spaces and punctuation not counted)."""
    return sum(unicodedata.category(c)[0] == "L" and unicodedata.category(c) != "Lm" for c in phonemes)
