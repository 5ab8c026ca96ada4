"""Your own voice: a scene narrated by a recording the user made or uploaded (`Scene.recording`).

`narrate` hands a scene that has a recording to `use_recording` instead of a TTS narrator. The file is checked and
turned into the same narration WAV the narrators write (mono 16-bit PCM, `SAMPLE_RATE`):

1. Check the file: an existing regular file (no folder, device or pipe) with an audio or video suffix, at most
   `MAX_BYTES`, holding an audio stream that FFmpeg's libraries open; then decoded completely by ffmpeg (file protocol
   only, the uploads' container whitelist) to mono float samples, at most `MAX_SECONDS` long.
2. Trim the silence before and after the speech (found with the same energy detector that times words,
   `studio.voice.timing.speech_frames`), keeping a short natural margin (`LEAD_MARGIN_S`, `TAIL_MARGIN_S`) and
   fading the cut edges in and out (`EDGE_FADE_S`) so no click is heard.
3. Match its loudness to the TTS voices': a gain to `TARGET_LUFS` (BS.1770 integrated loudness, what ffmpeg's
   ``ebur128`` reports for the WAV), with a true-peak limiter at `CEILING_DBTP` (the soundtrack's own analysis and
   limiter, `studio.compose.audio`), measured again after limiting. The finished film is normalised as a whole
   later (`studio.compose.audio.encode_soundtrack`); this keeps a quiet phone recording from sounding far away
   beside a synthetic scene.
4. Time its words to the scene's narration text: `studio.voice.align.align` when that module is there and finds an
   alignment, else `estimate_word_timings` from the audio's energy. A recording without narration text keeps its
   audio and has no captions.

The WAV is an asset keyed by the file's sha256 and `VERSION` (the same bytes are processed once, whatever they are
called); the word timings are a second, small asset keyed by the WAV, the text and the language, so editing the text
re-times the words without processing the audio again.
"""

from __future__ import annotations

import importlib
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..assets import AssetStore, asset_key, file_digest
from ..errors import Cancelled, StudioError
from ..media import AUDIO_SUFFIXES, INPUT_GUARD, VIDEO_SUFFIXES, probe, run_ffmpeg_output, write_wav
from ..progress import CancelToken, check
from ..project import Scene, WordTiming
from .normalise import NORMALISER_VERSION, fold_timings, reading
from .timing import _clean, estimate_word_timings, read_wav, speech_frames, split_words

VERSION = "recording-v1"  # bump when the processing below changes what the WAV sounds like
SAMPLE_RATE = 24_000  # Hz: room for a microphone's voice (the TTS voices write 22.05-24 kHz)
# Measured here on one sentence: espeak-ng -20.6 LUFS, Piper (joe-us) -22.4 LUFS; recordings land between them.
TARGET_LUFS = -21.0
CEILING_DBTP = -1.5  # the soundtrack's limiter ceiling (TRUE_PEAK_CEILING_DBTP)
MAX_BYTES = 200_000_000  # a recording file larger than this is refused before anything reads it
MAX_SECONDS = 600.0  # the longest scene a storyboard allows (`duration_s`)
MIN_SPEECH_S = 0.2  # less speech than this is no narration
LEAD_MARGIN_S = 0.15  # silence kept before the first sound
TAIL_MARGIN_S = 0.3  # and after the last (a voice's decay and the room)
EDGE_FADE_S = 0.01
RECORDING_SUFFIXES = frozenset(AUDIO_SUFFIXES | VIDEO_SUFFIXES)
# The containers ffmpeg may open (the uploads' whitelist: nothing that reads playlists or other files).
_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,wav,mp3,ogg,flac,aac"


@dataclass(frozen=True)
class Recording:
    """A user's recording made into a narration WAV.

    Attributes:
        path: The WAV (in the asset store).
        duration_s: Its length after trimming.
        words: One timing per word of the narration text (empty without text).
        timing_source: ``aligned`` (forced alignment of the text), ``estimated`` (from the energy) or ``none``.
        source_s: The file's length before trimming.
        loudness_lufs: Integrated loudness of the WAV, as ffmpeg's ``ebur128`` measured it.
        reused: The WAV was found in the asset store (the same file was processed before).
    """

    path: Path
    duration_s: float
    words: tuple[WordTiming, ...]
    timing_source: str
    source_s: float
    loudness_lufs: float
    reused: bool


def scene_label(scene: Scene, index: int) -> str:
    """How messages name a scene: ``scene 3 (id s1a2b3c4)`` (1-based number)."""
    return f"scene {index + 1} (id {scene.id})"


def resolve_recording(scene: Scene, *, index: int, media_root: Path | None = None) -> Path:
    """The existing regular file that `scene.recording` names, symlinks resolved; relative names are taken from
    `media_root` (default: the current directory).

    Raises:
        StudioError: naming the scene, when there is no such file, it is a folder or device, its type is not audio
            or video, or it is larger than `MAX_BYTES`.
    """
    label = scene_label(scene, index)
    name_text = str(scene.recording or "").strip()
    if not name_text:
        raise StudioError(f"{label} has no `recording` to use")
    name = Path(os.path.expanduser(name_text))
    path = name if name.is_absolute() else Path(media_root if media_root is not None else Path.cwd()) / name
    try:
        resolved = path.resolve(strict=True)
        info = resolved.stat()
    except FileNotFoundError:
        raise StudioError(f"{label}: recording {name_text} does not exist (looked for {path}); record or upload it "
                          "again, or fix the `recording` column (relative names start from the media folder)") from None
    except (OSError, RuntimeError) as exc:  # a symlink loop, a permission problem
        raise StudioError(f"{label}: recording {name_text} cannot be opened ({exc}); fix the path or its "
                          "permissions") from None
    if stat.S_ISDIR(info.st_mode):
        raise StudioError(f"{label}: recording {name_text} is a folder; name one audio file")
    if not stat.S_ISREG(info.st_mode):
        raise StudioError(f"{label}: recording {name_text} is not a regular file (a device, pipe or socket); name "
                          "an audio file")
    suffix = name.suffix.lower()
    if suffix not in RECORDING_SUFFIXES:
        raise StudioError(f"{label}: recording {name_text} has the file type {suffix or '(none)'}, which is not "
                          f"audio; use one of {', '.join(sorted(AUDIO_SUFFIXES))}")
    if info.st_size == 0:
        raise StudioError(f"{label}: recording {name_text} is empty; record or upload it again")
    if info.st_size > MAX_BYTES:
        raise StudioError(f"{label}: recording {name_text} is {info.st_size / 1e6:.0f} MB, over the limit of "
                          f"{MAX_BYTES / 1e6:.0f} MB; export it compressed (MP3, OGG, M4A) or shorter")
    if not os.access(resolved, os.R_OK):
        raise StudioError(f"{label}: recording {name_text} is not readable; check its permissions")
    return resolved


def decode_recording(source: Path, *, label: str, name: str,
                     cancel: CancelToken | None = None) -> tuple[np.ndarray, float]:
    """The recording's first audio stream as mono float32 samples at `SAMPLE_RATE`, and its length in seconds.

    Raises:
        StudioError: naming the scene, when no audio stream decodes or it is longer than `MAX_SECONDS`.
    """
    try:
        info = probe(source)
    except StudioError as exc:  # probe's own message names the absolute path; the cause is what the user needs
        cause = _without_path(str(exc.__cause__ or exc), source)
        raise StudioError(f"{label}: recording {name} is not a readable audio file ({cause}): record or upload it "
                          "again") from None
    if not info.has_audio:
        raise StudioError(f"{label}: recording {name} holds no audio stream (a picture or a silent clip?): use an "
                          "audio file")
    if info.duration_s > MAX_SECONDS + 1:
        raise StudioError(f"{label}: recording {name} lasts {info.duration_s:.0f} s; a scene's recording may last "
                          f"at most {MAX_SECONDS:.0f} s: split it over several scenes")
    args = ["-format_whitelist", _FORMATS, *INPUT_GUARD, "-i", source, "-map", "0:a:0", "-vn", "-sn", "-dn",
            "-t", f"{MAX_SECONDS + 1:.0f}", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]
    try:
        data = run_ffmpeg_output(args, cancel=cancel, what=f"decoding recording {name}")
    except Cancelled:
        raise
    except StudioError as exc:
        raise StudioError(f"{label}: recording {name} does not decode ({_without_path(str(exc), source)}): record or "
                          "upload it again") from None
    samples = np.frombuffer(data, dtype=np.float32)
    if not len(samples):
        raise StudioError(f"{label}: recording {name} holds no audio that decodes: record or upload it again")
    if not np.all(np.isfinite(samples)):
        samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    duration_s = len(samples) / SAMPLE_RATE
    if duration_s > MAX_SECONDS:
        raise StudioError(f"{label}: recording {name} lasts over {MAX_SECONDS:.0f} s, the most a scene's recording "
                          "may last: split it over several scenes")
    return samples, duration_s


def _without_path(text: str, path: Path) -> str:
    return text.replace(str(path), "the file").replace(path.name, "the file")


def trim_silence(samples: np.ndarray, sample_rate: int, *, lead_s: float = LEAD_MARGIN_S,
                 tail_s: float = TAIL_MARGIN_S) -> tuple[np.ndarray, float, float]:
    """`samples` without the silence before and after the speech, keeping `lead_s` and `tail_s` of it.

    Returns:
        (trimmed samples, seconds cut from the start, seconds cut from the end). An audio clip in which no speech
        stands out (silence, a steady hum) comes back whole.
    """
    mask, frame_s = speech_frames(samples, sample_rate)
    if not mask.any() or mask.all():
        return samples, 0.0, 0.0
    loud = np.flatnonzero(mask)
    first_s, last_s = loud[0] * frame_s, (loud[-1] + 1) * frame_s
    start = max(0, int(math.floor((first_s - lead_s) * sample_rate)))
    end = min(len(samples), int(math.ceil((last_s + tail_s) * sample_rate)))
    trimmed = np.array(samples[start:end], dtype=np.float32)
    fade = min(len(trimmed) // 2, int(round(EDGE_FADE_S * sample_rate)))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        if start > 0:
            trimmed[:fade] *= ramp
        if end < len(samples):
            trimmed[-fade:] *= ramp[::-1]
    return trimmed, start / sample_rate, (len(samples) - end) / sample_rate


def _analyse(samples: np.ndarray, sample_rate: int, cancel: CancelToken | None = None):
    """The soundtrack's BS.1770 analysis (`studio.compose.audio.analyse_mix`: K-weighted energy and 4x true peak per
    millisecond) of mono samples, their energy counted once, as ffmpeg's ``ebur128`` weighs a mono file."""
    import tempfile
    from dataclasses import replace

    from ..compose.audio import Mix, analyse_mix

    with tempfile.TemporaryDirectory(prefix="studio-recording-") as tmp:
        work = Path(tmp)
        stereo = np.repeat(samples.astype(np.float32)[:, None], 2, axis=1)  # the mix is stereo, the voice centred
        (work / "voice.f32").write_bytes(stereo.tobytes())
        mix = Mix(work / "voice.f32", 2, sample_rate, len(samples), float(np.abs(samples).max(initial=0.0)))
        analysis = analyse_mix(mix, work, cancel=cancel)
    return replace(analysis, energy=analysis.energy / 2.0)


def match_loudness(samples: np.ndarray, sample_rate: int, target_lufs: float = TARGET_LUFS,
                   ceiling_dbtp: float = CEILING_DBTP, *, cancel: CancelToken | None = None) -> np.ndarray:
    """`samples` at `target_lufs` integrated loudness with true peaks under `ceiling_dbtp` (gain, lookahead limiter,
    gain corrected after limiting: `studio.compose.audio.normalise`). Silence comes back unchanged."""
    from ..compose.audio import normalise

    analysis = _analyse(samples, sample_rate, cancel)
    norm = normalise(analysis, target_lufs, ceiling_dbtp)
    if norm is None:
        return samples
    centres = (np.arange(len(norm.limiter)) + 0.5) * analysis.block
    curve = norm.gain * np.interp(np.arange(len(samples)) + 0.5, centres, norm.limiter)
    return (samples * curve).astype(np.float32)


def _measure(path: Path, cancel: CancelToken | None) -> float:
    """Integrated loudness of a WAV as ffmpeg's ``ebur128`` reports it (what the tests and platforms measure)."""
    from ..compose.audio import measure_file

    return measure_file([*INPUT_GUARD, "-i", path], cancel=cancel)[0]


def _aligner(language: str):
    """`studio.voice.align.align` and the identity of the aligner it would run for `language` (for cache keys:
    ``aligner_for(language)``, e.g. ``pocketsphinx-5.1.1/en-us``), or (None, ``none``) where the module is missing or
    covers no such language: words estimated without an aligner are timed again once there is one."""
    try:
        module = importlib.import_module(f"{__package__}.align")  # through sys.modules, as any import
    except ImportError:
        return None, "none"
    which = getattr(module, "aligner_for", None)
    try:
        identity = which(language) if which is not None else getattr(module, "VERSION", "align")
    except StudioError:
        identity = None
    return getattr(module, "align", None), str(identity or "none")


def time_words(text: str, wav: Path, language: str, *, cancel: CancelToken | None = None
               ) -> tuple[tuple[WordTiming, ...], str]:
    """When each word of `text` is heard in `wav`: (timings, source). Forced alignment (`studio.voice.align.align`)
    where that module is present and finds an alignment, else an estimate from the audio's energy."""
    if not text.strip():
        return (), "none"
    align, _ = _aligner(language)
    found = None
    # A person reads "1822" or "Dr." as the narrators do (studio.voice.normalise): the aligner is given that reading,
    # and its timings are folded back onto the written words the captions show.
    said = reading(text, language)
    if align is not None:
        try:
            found = align(said.text, wav, language, cancel=cancel)
        except Cancelled:
            raise
        except StudioError:
            found = None  # no aligner for this language or model: the estimate below still times the words
    samples, rate = read_wav(wav)
    if align is not None and found is not None:
        words = tuple(getattr(found, "words", None) or ())
        if [w.word for w in words] == split_words(said.text):
            words = fold_timings(said, words)
        # One timing per caption word, clamped into the audio and monotonic; an alignment of other words is not used.
        if [w.word for w in words] == split_words(text):
            return _clean(list(words), len(samples) / float(rate)), "aligned"
    return estimate_word_timings(text, samples, rate), "estimated"


def use_recording(scene: Scene, index: int, *, language: str, store: AssetStore, media_root: Path | None = None,
                  cancel: CancelToken | None = None) -> Recording:
    """Make (or find) the narration WAV of a scene's own recording and time its words (see the module's notes).

    Args:
        scene: A scene with `recording` set; its `narration` is the text the words are timed to.
        index: Its 0-based position (messages name it by number and id).
        language: The project's language (for the aligner).
        store: The project's asset store.
        media_root: Folder that a relative `recording` name is resolved against (default: the current directory).
        cancel: Checked between the steps and inside ffmpeg.

    Returns:
        The `Recording`.

    Raises:
        StudioError: naming the scene: a missing, empty, oversized, non-audio or undecodable file, one that is too
            long, or one with too little sound in it. Nothing in the store is changed by a failure.
        Cancelled: `cancel` was cancelled.
    """
    # 1. Check the file (cheap), and find its processed WAV by its bytes
    check(cancel)
    label = scene_label(scene, index)
    name = str(scene.recording).strip()
    shown = Path(name).name
    source = resolve_recording(scene, index=index, media_root=media_root)
    key = asset_key(step="recording", model=VERSION, sha256=file_digest(source), sample_rate=SAMPLE_RATE,
                    target_lufs=TARGET_LUFS)
    meta = store.read_meta(key)
    found = store.find(key, ".wav") if meta else None
    reused = found is not None
    if found is None:
        # 2. Decode, trim, match the loudness, write
        samples, source_s = decode_recording(source, label=label, name=shown, cancel=cancel)
        check(cancel)
        trimmed, cut_start, cut_end = trim_silence(samples, SAMPLE_RATE)
        mask, frame_s = speech_frames(trimmed, SAMPLE_RATE)
        peak = float(np.abs(trimmed).max(initial=0.0))
        if peak < 1e-4 or mask.sum() * frame_s < MIN_SPEECH_S:
            raise StudioError(f"{label}: recording {shown} is silent (or almost: no speech stands out in it); check "
                              "the microphone and record again")
        levelled = match_loudness(trimmed, SAMPLE_RATE, cancel=cancel)
        check(cancel)
        with store.making(key, ".wav") as tmp:
            write_wav(tmp, levelled, SAMPLE_RATE)
            loudness = _measure(tmp, cancel)
        found = store.path(key, ".wav")
        meta = {"step": "recording", "model": VERSION, "source": shown, "source_s": round(source_s, 4),
                "duration_s": round(len(levelled) / SAMPLE_RATE, 6), "trimmed_start_s": round(cut_start, 4),
                "trimmed_end_s": round(cut_end, 4), "loudness_lufs": loudness, "target_lufs": TARGET_LUFS,
                "sample_rate": SAMPLE_RATE}
        store.write_meta(key, meta)
    duration_s = float(meta["duration_s"])

    # 3. The words of the narration text, on this WAV (cached by the WAV, the text and the language)
    words_key = asset_key(step="recording-words", audio=key, text=scene.narration, language=language,
                          aligner=_aligner(language)[1], normaliser=NORMALISER_VERSION)
    cached = store.read_meta(words_key)
    words: tuple[WordTiming, ...] | None = None
    source_kind = "none"
    if cached:
        try:
            words = tuple(WordTiming(str(w), float(a), float(b)) for w, a, b in cached["words"])
            source_kind = str(cached["timing_source"])
        except (KeyError, TypeError, ValueError):
            words = None
    if words is None:
        check(cancel)
        words, source_kind = time_words(scene.narration, found, language, cancel=cancel)
        store.write_meta(words_key, {"step": "recording-words", "audio": key, "text": scene.narration,
                                     "language": language, "timing_source": source_kind,
                                     "words": [[w.word, w.start_s, w.end_s] for w in words]})
    return Recording(path=found, duration_s=duration_s, words=words, timing_source=source_kind,
                     source_s=float(meta.get("source_s", duration_s)),
                     loudness_lufs=float(meta.get("loudness_lufs", math.nan)), reused=reused)
