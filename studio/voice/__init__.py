"""Step 2: narration. `narrate` gives every scene a WAV of its narration and word-level timings for captions.

    project = studio.narrate(project)                      # auto: Piper if installed, else espeak-ng
    project = studio.narrate(project, narrator="espeak")   # or force one
    project = studio.narrate(project, only=["s1a2b3c4"])    # re-narrate one scene

A scene with its own `Scene.recording` (the user's voice, an audio file) is not spoken by a narrator: the file is
checked, trimmed, loudness-matched and its words timed to the narration text (`studio.voice.recording`).

Providers (one file each): ``piper`` (neural, offline, optional GPL-3.0 extra), ``espeak`` (espeak-ng, offline, many
languages), ``kokoro`` (Kokoro-82M on ONNX Runtime; needs its weights), ``bark`` (Suno Bark through transformers; needs
its weights and, for ``auto``, a GPU). A provider is a
`Narrator`: ``speak(text, voice=, seed=, language=, out=) -> Speech``.

Numbers, dates and abbreviations are read out before synthesis (`studio.voice.normalise`): the narrator is given the
spoken text ("In eighteen twenty-two") and the timings it returns are folded back onto the written words ("In 1822"),
which the captions show. A narrator that reads them itself declares the ``normalises`` hook and gets the written text.
``auto`` takes the first narrator that runs here and speaks the project's language (``register(..., speaks=)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Collection, Optional, Protocol, runtime_checkable

from ..assets import AssetStore, asset_key
from ..errors import Cancelled, StudioError
from ..presets import Preset
from ..providers import leasing, supports
from ..progress import CancelToken, ProgressFn, check
from ..project import Project, Scene, WordTiming
from .normalise import NORMALISER_VERSION, Reading, fold_timings, reading

__all__ = ["Speech", "Narrator", "narrate"]


@dataclass(frozen=True)
class Speech:
    """What a narrator said into its WAV.

    Attributes:
        duration_s: Length of the WAV in seconds.
        words: One timing per caption word (seconds from the start of the WAV).
        sample_rate: The WAV's sample rate (Hz).
        timing_source: ``"engine"`` (from the TTS engine's own alignments) or ``"estimated"`` (from the audio).
        notes: What the user should know about this reading (words left out because the voice cannot read their
            script); `narrate` adds them to the project's notes, naming the scene.
    """

    duration_s: float
    words: tuple[WordTiming, ...]
    sample_rate: int
    timing_source: str
    notes: tuple[str, ...] = ()


@runtime_checkable
class Narrator(Protocol):
    """A text-to-speech provider.

    Optional hooks, declared in ``hooks`` (see `studio.providers.HOOKS`): ``progress`` (`speak` takes
    ``on_progress``), ``release`` (frees its model).
    """

    name: str  # registry name
    model: str  # identity of the voice/model: part of the asset cache key
    hooks: frozenset[str]  # the optional hooks it implements

    def speak(self, text: str, *, voice: str | None, seed: int, language: str, out: Path,
              cancel: CancelToken | None = None) -> Speech:
        """Say `text` into a WAV written exactly at `out`; returns its length and word timings."""
        ...


@leasing
def narrate(project: Project, *, narrator: str = "auto", preset: Preset | None = None,
            only: Collection[str] | None = None, store: AssetStore | None = None, media_root: Path | None = None,
            on_progress: Optional[ProgressFn] = None, cancel: CancelToken | None = None) -> Project:
    """Give each scene its narration audio and word timings.

    Audio is cached in the project's asset store by everything that made it (provider, voice model, `voice`, language,
    text, seed), so running again re-makes only scenes whose narration changed. Narrators without exact engine timings
    get word timings aligned to the text (`studio.voice.align`) where an aligner covers the language; a cached scene
    timed by another aligner than the one here is aligned again from its WAV, without speaking again.

    Args:
        project: A saved project (it needs a folder for its assets).
        narrator: A provider name (``piper``, ``espeak``) or ``auto`` (the preset's preference order, else the
            registration order; the choice and its reason are added to the project's notes).
        preset: Supplies the ``auto`` preference order (``[providers] narrator = [...]``).
        only: Narrate just these scene ids (others keep what they have).
        store: Where assets go; default ``AssetStore(project.assets_dir)``.
        media_root: Folder that relative `Scene.recording` names are resolved against (default: the current
            directory).
        on_progress: ``on_progress(fraction, message)`` after each scene.
        cancel: Checked between scenes (and inside the narrator).

    Returns:
        A new project; the input is not changed.

    Raises:
        StudioError: no project folder, an unknown scene id or narrator, a scene with neither narration,
            `duration_s` nor a recording, or a failed scene (named; scenes made before it stay in the asset store).
        Cancelled: `cancel` was cancelled.
    """
    from .. import providers

    # 1. Check inputs
    if project.folder is None:
        raise StudioError("narrate needs a saved project (its audio goes in the project's assets folder): "
                          "call `project.save(folder)` first")
    ids = [scene.id for scene in project.scenes]
    if only is not None:
        if isinstance(only, str):
            only = [only]
        unknown = [scene_id for scene_id in only if scene_id not in ids]
        if unknown:
            raise StudioError(f"`only` names unknown scene id(s) {unknown}; this project's scenes are {ids}")
    todo = [(i, scene) for i, scene in enumerate(project.scenes) if only is None or scene.id in only]
    for i, scene in todo:
        if not scene.narration.strip() and scene.duration_s is None and not scene.recording:
            raise StudioError(f"scene {i + 1} has no narration and no duration_s: write narration for scene "
                              f"{scene.id!r} or give it a duration_s (seconds) to stay silent")
    check(cancel)

    # 2. Choose the narrator (only when a scene needs one: recordings speak for themselves)
    speaker, provider, notes = None, "", project.notes
    redone = {f"({scene.id})" for _, scene in todo}  # their reading notes are made again below
    notes = tuple(n for n in notes if not (n.startswith("narration: ") and n.split(": ")[1].split(" ")[-1] in redone))
    if any(scene.narration.strip() and not scene.recording for _, scene in todo) or not todo:
        prefer = preset.providers.get("narrator") if preset is not None else None
        if narrator == "auto" and project.voice:
            prefer = _prefer_for_voice(project.voice, prefer)
        configs = preset.models if preset is not None else None
        speaker, choice = providers.create("narrator", narrator, prefer=prefer, configs=configs,
                                           language=project.language)
        provider = choice.name
        notes = tuple(n for n in notes if not n.startswith("narrator: ")) + ("narrator: " + choice.reason,)
    recorded = [i + 1 for i, scene in enumerate(project.scenes) if scene.recording]
    notes = tuple(n for n in notes if not n.startswith("recordings: "))
    if recorded:
        untimed = [i + 1 for i, scene in enumerate(project.scenes) if scene.recording and not scene.narration.strip()]
        notes += (f"recordings: scene(s) {', '.join(map(str, recorded))} use your own recording (trimmed and "
                  "loudness-matched; its words timed to the narration text)"
                  + (f"; scene(s) {', '.join(map(str, untimed))} have no narration text, so no captions" if untimed
                     else ""),)
    store = store if store is not None else AssetStore(project.assets_dir)
    report = on_progress or (lambda fraction, message: None)

    # 3. Speak each scene, or find it in the store
    scenes = {scene.id: scene for scene in project.scenes}
    total, count = len(todo), len(project.scenes)
    for done, (i, scene) in enumerate(todo, start=1):  # messages name the scene's own number (1-based)
        check(cancel)
        within = (lambda f, m, d=done, n=i + 1: report((d - 1 + f) / total, f"narrating scene {n}/{count}: {m}"))
        if scene.recording:
            scenes[scene.id] = _recorded_scene(scene, i, project, store, media_root, cancel)
        else:
            reading_notes: list[str] = []
            scenes[scene.id] = _narrate_scene(scene, i, project, speaker, provider, store, cancel, within,
                                              notes=reading_notes)
            notes += tuple(f"narration: scene {i + 1} ({scene.id}): {n}" for n in reading_notes)
        report(done / total, f"narrating scene {i + 1}/{count}")
    if not total:
        report(1.0, "nothing to narrate")
    return replace(project, scenes=tuple(scenes[scene_id] for scene_id in ids), notes=notes)


def _narrate_scene(scene: Scene, index: int, project: Project, speaker: Narrator, provider: str, store: AssetStore,
                   cancel: CancelToken | None, on_progress: Optional[ProgressFn] = None,
                   notes: list[str] | None = None) -> Scene:
    """One scene's audio: reused from the store when everything that made it is unchanged, else spoken; the
    narrator's notes on its reading (`Speech.notes`) are appended to `notes`."""
    notes = notes if notes is not None else []
    text = scene.narration
    if not text.strip():  # a silent scene with a fixed length
        return replace(scene, audio=None, audio_duration_s=None, words=())
    # Numbers, dates and abbreviations are said as a person reads them, unless the narrator does that itself.
    said = None if supports(speaker, "normalises") else reading(text, project.language)
    spoken = said.text if said is not None else text
    # A narrator that picks its voice by language (Piper) names the voice it would use: a better voice installed
    # for the language later is a new asset, not the old audio.
    chosen = getattr(speaker, "voice_identity", None)
    extra_key = {"chosen_voice": chosen(project.voice, project.language)} if chosen is not None else {}
    key = asset_key(step="narrate", provider=provider, model=speaker.model, voice=project.voice,
                    language=project.language, text=text, seed=scene.seed,
                    normaliser=NORMALISER_VERSION if said is not None else None, **extra_key)
    # The timings are written after the audio: audio without them (a crash between the two) is spoken again.
    meta = store.read_meta(key)
    cached = _cached_speech(meta)
    if cached is not None:
        found = store.find(key, ".wav")
        if found is not None:
            notes.extend(cached[2])
            words, _ = _realign_cached(meta, spoken, found, project.language, store, key, cancel, said)
            return scene.with_audio(found, words, cached[1])
    # Narrators that report progress within a scene (e.g. per sentence) get a callback.
    extra = {"on_progress": on_progress} if on_progress is not None and supports(speaker, "progress") else {}
    try:
        with store.making(key, ".wav") as tmp:
            speech = speaker.speak(spoken, voice=project.voice, seed=scene.seed, language=project.language, out=tmp,
                                   cancel=cancel, **extra)
    except Cancelled:
        raise
    except StudioError as exc:
        raise StudioError(f"scene {index + 1} ({scene.id}): narration failed: {exc}") from exc
    except Exception as exc:  # an engine's own error: say which scene, keep the cause
        raise StudioError(f"scene {index + 1} ({scene.id}): narration failed with {provider}: "
                          f"{type(exc).__name__}: {exc}") from exc
    if said is not None:  # timings of the spoken words, folded back onto the written ones (captions show those)
        speech = replace(speech, words=fold_timings(said, speech.words))
    wav = store.path(key, ".wav")
    words, timing = _aligned_words(spoken, wav, project.language, speech.words, speech.timing_source, cancel, said)
    store.write_meta(key, {
        "step": "narrate", "provider": provider, "model": speaker.model, "voice": project.voice,
        "language": project.language, "text": text, "spoken": spoken, "seed": scene.seed, "duration_s": speech.duration_s,
        "sample_rate": speech.sample_rate, **timing, "words": [[w.word, w.start_s, w.end_s] for w in words],
        "notes": list(speech.notes),
    })
    notes.extend(speech.notes)
    return scene.with_audio(wav, words, speech.duration_s)


def _aligned_words(text: str, wav: Path, language: str, words: tuple[WordTiming, ...], timing_source: str,
                   cancel: CancelToken | None, said: Reading | None = None) -> tuple[tuple[WordTiming, ...], dict]:
    """The words' timings and their side-file fields: forced alignment of `text` (what was spoken) to `wav` for
    narrators whose timings are not the engine's own, else `words` as given. With `said` (the reading `text` was
    made from), aligned timings are folded back onto the written words, as `words` already are.

    Returns:
        (words, {"timing_source": ..., "aligner": ...}): ``"aligned"`` and the aligner's identity when it aligned;
        the given source and ``aligner`` None otherwise (``align_tried`` names an aligner that could not align, so a
        cached asset is not tried again with the same one).
    """
    from .align import align, aligner_for

    if timing_source == "engine":
        return words, {"timing_source": timing_source, "aligner": None}
    alignment = align(text, wav, language, cancel=cancel)
    if alignment is None or not alignment.words:
        return words, {"timing_source": timing_source, "aligner": None, "align_tried": aligner_for(language)}
    aligned = fold_timings(said, alignment.words) if said is not None else alignment.words
    return aligned, {"timing_source": "aligned", "aligner": alignment.aligner}


def _realign_cached(meta: dict, text: str, wav: Path, language: str, store: AssetStore, key: str,
                    cancel: CancelToken | None, said: Reading | None = None) -> tuple[tuple[WordTiming, ...], dict]:
    """A cached asset's words, aligned again from its WAV (no speaking) when the aligner here is not the one that
    timed them; the side file is rewritten with the new timings."""
    from .align import aligner_for

    words = _cached_speech(meta)[0]
    now = aligner_for(language)
    source = meta.get("timing_source")
    if source == "engine" or now is None or now in (meta.get("aligner"), meta.get("align_tried")):
        return words, meta  # exact engine timings, nothing to align with here, or already done with this aligner
    # An "aligned" asset keeps its old aligner's words when the new one cannot align; its estimate is gone.
    original = "estimated" if source in (None, "aligned") else source
    new_words, timing = _aligned_words(text, wav, language, words, original, cancel, said)
    if timing["aligner"] is None and source == "aligned":
        timing = {"timing_source": "aligned", "aligner": meta.get("aligner"), "align_tried": now}
    meta = {**meta, **timing, "words": [[w.word, w.start_s, w.end_s] for w in new_words]}
    store.write_meta(key, meta)
    return new_words, meta


def _prefer_for_voice(voice: str, prefer: list[str] | None) -> list[str] | None:
    """The ``auto`` order for a project that names a voice: the narrator whose voice it is comes first (a Kokoro
    voice such as ``af_heart`` asks for Kokoro, a Bark preset such as ``v2/en_speaker_6`` for Bark), and Kokoro is
    left out for a voice that is not its own."""
    from ..providers import names
    from .kokoro import KOKORO_VOICES, accepts_voice

    owner = "kokoro" if voice in KOKORO_VOICES else "bark" if voice.startswith("v2/") else None
    if owner is None and accepts_voice(voice):
        return prefer
    order = list(prefer) if prefer else names("narrator")
    if owner is not None:  # asked for by its voice, even where the preset does not list it
        order = [owner] + [name for name in order if name != owner]
    if not accepts_voice(voice):
        order = [name for name in order if name != "kokoro"]
    return order


def _recorded_scene(scene: Scene, index: int, project: Project, store: AssetStore, media_root: Path | None,
                    cancel: CancelToken | None) -> Scene:
    """One scene narrated by the user's own recording (`studio.voice.recording.use_recording`)."""
    from .recording import scene_label, use_recording

    try:
        made = use_recording(scene, index, language=project.language, store=store, media_root=media_root,
                             cancel=cancel)
    except (Cancelled, StudioError):
        raise
    except Exception as exc:  # a decoder's or the disk's own error: say which scene, keep the cause
        raise StudioError(f"{scene_label(scene, index)}: its recording could not be used: "
                          f"{type(exc).__name__}: {exc}") from exc
    return scene.with_audio(made.path, made.words, made.duration_s)


def _cached_speech(meta: dict | None) -> tuple[tuple[WordTiming, ...], float, tuple[str, ...]] | None:
    """(words, duration_s, notes) from an asset's side file, or None if it is missing or damaged."""
    if not meta:
        return None
    try:
        words = tuple(WordTiming(str(w), float(a), float(b)) for w, a, b in meta["words"])
        return words, float(meta["duration_s"]), tuple(str(n) for n in meta.get("notes", ()))
    except (KeyError, TypeError, ValueError):
        return None

