"""Background jobs: every render is a job that survives closed tabs, cancels, restarts and crashes.

    runner = JobRunner("~/.local/share/studio")                 # or JobRunner() for the default data folder
    job = runner.submit({"script": "# Tea\\n\\nTea is a leaf.", "preset": "draft"}, owner="alice",
                        idempotency_key="tea-1")
    for event in runner.events(job.id, owner="alice"): print(event.kind, event.data)
    job = runner.wait(job.id, timeout_s=600)
    job.state, job.output                                       # "done", .../renders/video.mp4
    runner.close()

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``canceled``; a job that was running when the server
stopped (killed, crashed, or shut down) is ``interrupted`` and runs again first when the server starts, reusing every
asset it had made (the content-addressed cache: only unfinished scenes and segments are made again).

How a job runs: a worker thread of this process claims the next job (fairly: round robin over the users with waiting
jobs), writes its storyboard into the job's project folder in the data folder, then narrates, paints and composes it
scene by scene through an executor (`studio.executors`; local by default, or Ray). Everything it learns goes to the
journal (`studio.journal`, SQLite in WAL mode) as it happens: state, percent, step, scene, per-scene results, step
timings, events. A SIGKILL therefore loses at most the unit of work in flight: the journal says ``running``, which the
next start turns into ``interrupted``; files are written under temporary names and renamed when complete, so no
truncated asset or MP4 ever has a final name, and the temporary ones are swept away. Each job's folder also holds
its record (``job.json``, refreshed at each change of state): with the journal's backup it rebuilds a lost or
damaged journal (`studio.recovery`, ``studio serve --recover``).

A full disk loses nothing: a submission the disk clearly has no room for (`estimate_render_bytes`) raises `DiskFull`
(HTTP 507), the worker checks again before it starts, and a job that still runs out of room fails saying so, keeping
what it made.

Concurrency: ``gpu_slots`` jobs that use model providers on a GPU (default 1) and ``cpu_slots`` jobs that use only
offline providers (default 1) run at once; at most ``max_queued`` jobs wait (``max_queued_per_owner`` per user), and a
submission beyond that raises `QueueFull` at once (HTTP 429).

Cancel stops the work for real: the job's `CancelToken` kills ffmpeg and espeak-ng (each in its own process group, with
any children) at once, stops model loops at their next step, and the job ends ``canceled`` with its temporary files and
assets removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
import traceback
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .assets import atomic_write_text
from .errors import Cancelled, StudioError
from .journal import (BACKUP_FILE, Conflict, DiskFull, Gone, Journal, NotFound, QueueFull, RequestError, ServiceError,
                      TooLarge, check_id, check_owner, default_data_dir, disk_full_message, free_bytes, is_disk_full,
                      new_id, owner_key, safe_path)
from .progress import CancelToken
from .uploads import UploadLimits, UploadStore

__all__ = ["JobRunner", "JobRequest", "SceneRequest", "Job", "Event", "Limits", "Retention", "STATES",
           "ServiceError", "RequestError", "NotFound", "Conflict", "Gone", "QueueFull", "TooLarge", "DiskFull",
           "default_data_dir", "estimate_render_bytes"]

log = logging.getLogger("studio.jobs")

STATES = ("queued", "running", "done", "failed", "canceled", "interrupted")
TERMINAL = frozenset({"done", "failed", "canceled"})
WAITING = ("queued", "interrupted")
JOBS_DIR = "jobs"
JOB_FILE = "job.json"  # a job's record in its folder: what rebuilds its journal row if the journal is lost
OUTPUT_NAME = "video.mp4"
WORDS_PER_S = 2.5  # speaking rate for estimates before narration (150 words a minute)
# Disk space a render needs (`estimate_render_bytes`): the audio mix's temporary float32 stereo samples at 48 kHz
# (studio.compose.audio writes them all before encoding), the narration's WAV files, the video at a generous
# compressed size (segments and the joined MP4 exist at once), a still per scene at full size, and a margin.
AUDIO_MIX_BYTES_PER_S = 384_000
NARRATION_BYTES_PER_S = 96_000
VIDEO_BITS_PER_PIXEL = 0.15
SECONDS_PER_SCENE = 8.0  # a script's or a brief's scenes, before the storyboard is written
BRIEF_GUESS_S = 60.0  # a brief's length is the writer's choice
SPACE_MARGIN_BYTES = 20_000_000
_PROGRESS_EVENT_S = 0.5  # at most two progress events a second (state, scene and step events are never skipped)
_PROGRESS_ROW_S = 0.2


# -- limits and requests ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """What a request may ask for; checked at submission, before any model runs (messages name the limit).

    Attributes:
        max_script_chars: Longest script.
        max_brief_chars: Longest brief.
        max_scenes: Most scenes in a storyboard (a script's scenes are counted after splitting).
        max_narration_chars: Longest narration of one scene.
        max_prompt_chars: Longest visual prompt of one scene.
        max_text_chars: Longest title or style.
        max_scene_s: Longest fixed scene duration.
        max_video_s: Longest video, estimated from the text at 150 words a minute before narration.
        max_pixels: Largest frame (width x height) of the preset at the requested aspect ratio.
    """

    max_script_chars: int = 20_000
    max_brief_chars: int = 2_000
    max_scenes: int = 40
    max_narration_chars: int = 2_000
    max_prompt_chars: int = 500
    max_text_chars: int = 200
    max_scene_s: float = 120.0
    max_video_s: float = 900.0
    max_pixels: int = 1920 * 1080


@dataclass(frozen=True)
class Retention:
    """How long finished work is kept.

    Attributes:
        max_age_s: Renders (project folders) of finished, failed and canceled jobs are removed this long after the
            job ended; None keeps them.
        max_total_bytes: Remove the oldest finished renders until all renders take at most this much; None: no cap.
        upload_max_age_s: Uploads older than this are removed unless a waiting or running job uses them.
        sweep_every_s: How often the server applies the policy.
    """

    max_age_s: float | None = 7 * 86400.0
    max_total_bytes: int | None = None
    upload_max_age_s: float | None = 7 * 86400.0
    sweep_every_s: float = 3600.0


_SCENE_KEYS = ("id", "narration", "visual_prompt", "duration_s", "seed", "media", "transition")
_PROVIDER_KEYS = {"writer": "storyboard", "narrator": "narrator", "painter": "painter"}


@dataclass(frozen=True)
class SceneRequest:
    """One scene of a storyboard request (``media`` is an upload id)."""

    narration: str = ""
    visual_prompt: str = ""
    duration_s: float | None = None
    seed: int = 0
    media: str | None = None
    transition: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class JobRequest:
    """What to render: exactly one of `script`, `brief` or `storyboard`, and how.

    Attributes:
        script: A script to narrate as written (Markdown or plain text).
        brief: A short request to write a storyboard about.
        storyboard: The scenes themselves.
        preset: A render tier this server offers (``draft``, ``standard``, ...).
        aspect: ``16:9``, ``9:16`` or ``1:1``.
        title, style, language, voice, seed: Project settings.
        writer, narrator, painter: Providers of the steps (``auto`` picks by the preset).
        captions, caption_style: Burned-in captions.
        music, music_volume: An upload id of background music and its level (0..1).
        watermark: An upload id of a logo image.
        caption_font: An upload id of a font (TrueType or OpenType) for the captions.
    """

    script: str | None = None
    brief: str | None = None
    storyboard: tuple[SceneRequest, ...] | None = None
    preset: str = "draft"
    aspect: str = "16:9"
    title: str | None = None
    style: str = ""
    language: str = "en"
    voice: str | None = None
    seed: int = 0
    writer: str = "auto"
    narrator: str = "auto"
    painter: str = "auto"
    captions: bool = True
    caption_style: str = "bold"
    music: str | None = None
    music_volume: float = 0.15
    watermark: str | None = None
    caption_font: str | None = None

    @property
    def source(self) -> str:
        """Which of script, brief or storyboard the request holds."""
        return "script" if self.script is not None else "brief" if self.brief is not None else "storyboard"

    def to_dict(self) -> dict:
        """The request as plain JSON data (`from_dict` reads it back)."""
        data = asdict(self)
        if self.storyboard is not None:
            data["storyboard"] = [{k: v for k, v in asdict(s).items() if v is not None} for s in self.storyboard]
        providers = {k: data.pop(k) for k in _PROVIDER_KEYS}
        data["providers"] = providers
        return {k: v for k, v in data.items() if v is not None}

    def upload_ids(self) -> list[tuple[str, str]]:
        """(field, upload id) of every upload the request names."""
        ids = [("music", self.music), ("watermark", self.watermark), ("caption_font", self.caption_font)]
        for i, scene in enumerate(self.storyboard or ()):
            ids.append((f"storyboard[{i}].media", scene.media))
        return [(f, u) for f, u in ids if u is not None]

    def fingerprint(self) -> str:
        """sha256 of the request's canonical JSON (an idempotency key must come back with the same request)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Any, *, limits: Limits | None = None,
                  presets: Mapping[str, str | Path] | None = None) -> "JobRequest":
        """Check a request (JSON data) against `limits` and the server's `presets`.

        Raises:
            RequestError: naming the field (``storyboard[2].duration_s``) and, for a limit, the limit.
        """
        limits = limits or Limits()
        if not isinstance(data, Mapping):
            raise RequestError(f"the request must be a JSON object, got {type(data).__name__}", field="body")
        allowed = {f for f in cls.__dataclass_fields__ if f not in _PROVIDER_KEYS} | {"providers"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise RequestError(f"unknown field `{unknown[0]}`; a request may have {', '.join(sorted(allowed))}",
                               field=str(unknown[0])[:80])

        # 1. The source: exactly one of script, brief, storyboard.
        given = [k for k in ("script", "brief", "storyboard") if data.get(k) is not None]
        if len(given) != 1:
            raise RequestError("give exactly one of `script`, `brief` or `storyboard`" +
                               (f", not {' and '.join(given)}" if given else ""), field=given[1] if given else "script")
        script = _text(data, "script", limits.max_script_chars)
        brief = _text(data, "brief", limits.max_brief_chars)
        for name, value in (("script", script), ("brief", brief)):
            if value is not None and not value.strip():
                raise RequestError(f"`{name}` is empty", field=name)
        storyboard = None
        if data.get("storyboard") is not None:
            storyboard = _storyboard(data["storyboard"], limits)

        # 2. Preset and frame size.
        preset_name = _text(data, "preset", 64) or "draft"
        known = presets if presets is not None else _tier_presets()
        if preset_name not in known:
            raise RequestError(f"`preset` must be one of {', '.join(known)}, got {preset_name!r}", field="preset")
        aspect = _choice(data, "aspect", ("16:9", "9:16", "1:1"), "16:9")
        from .presets import load_preset

        preset = load_preset(known[preset_name])
        width, height = preset.size(aspect)
        if width * height > limits.max_pixels:
            raise RequestError(f"preset {preset_name!r} at {aspect} is {width}x{height}, over this server's limit of "
                               f"{limits.max_pixels:,} pixels a frame; choose a smaller preset", field="preset")

        # 3. Project settings.
        voice = _text(data, "voice", 64)
        if voice is not None and not _VOICE_OK(voice):
            raise RequestError(f"`voice` must be a voice name (letters, digits, '_', '-', '+', one '/' as in v2/en_speaker_6), "
                               f"got {voice!r}",
                               field="voice")
        language = _text(data, "language", 16) or "en"
        if not _LANGUAGE_OK(language):
            raise RequestError(f"`language` must be a language code like 'en' or 'pt-br', got {language!r}",
                               field="language")
        providers = _providers(data.get("providers"))
        from .compose.captions import STYLES

        request = cls(
            script=script, brief=brief, storyboard=storyboard, preset=preset_name, aspect=aspect,
            title=_text(data, "title", limits.max_text_chars), style=_text(data, "style", limits.max_text_chars) or "",
            language=language, voice=voice, seed=_int(data, "seed", 0, 2**31 - 1, 0), **providers,
            captions=_bool(data, "captions", True), caption_style=_choice(data, "caption_style", tuple(STYLES), "bold"),
            music=_upload_id(data, "music"), music_volume=_number(data, "music_volume", 0.0, 1.0, 0.15),
            watermark=_upload_id(data, "watermark"), caption_font=_upload_id(data, "caption_font"),
        )

        # 4. Length, estimated before anything is made; a script is split now, so too many scenes are refused here.
        if script is not None:
            check_source_limits(script, "script", limits)
        estimate = request.estimated_duration_s(preset)
        if estimate > limits.max_video_s:
            raise RequestError(f"the video would last about {estimate:.0f} s (at {WORDS_PER_S * 60:.0f} words a "
                               f"minute), over this server's limit of {limits.max_video_s:.0f} s; shorten the "
                               f"{request.source}", field=request.source)
        return request

    def estimated_duration_s(self, preset: Any) -> float:
        """The video's length estimated from its text (before narration)."""
        pad = preset.lead_s + preset.tail_s
        if self.storyboard is not None:
            return sum(s.duration_s if s.duration_s is not None else _speech_s(s.narration) + pad
                       for s in self.storyboard)
        if self.script is not None:
            return _speech_s(self.script)
        return 0.0  # a brief's length is the writer's choice; checked after the storyboard is written


def estimate_render_bytes(request: JobRequest, preset: Any) -> int:
    """About how much disk a render of `request` takes at its peak, estimated before anything is made.

    The video's length is estimated from its text (`JobRequest.estimated_duration_s`; a brief counts as
    `BRIEF_GUESS_S`); per second of video the render holds the audio mix's temporary samples
    (`AUDIO_MIX_BYTES_PER_S`, ~384 kB), the narration and the video twice over (the segments and the joined MP4), at
    `VIDEO_BITS_PER_PIXEL` of the preset's frame size and rate; per scene a still at full frame size; plus
    `SPACE_MARGIN_BYTES` for the journal and the small files. It errs on the generous side: a server refuses a
    render (HTTP 507) when the disk has less free than this.

    Args:
        request: The checked request.
        preset: Its preset (`studio.presets.Preset`).

    Returns:
        Bytes.
    """
    duration_s = request.estimated_duration_s(preset)
    if request.source == "brief":
        duration_s = max(duration_s, BRIEF_GUESS_S)
    width, height = preset.size(request.aspect)
    scenes = len(request.storyboard) if request.storyboard else max(1, math.ceil(duration_s / SECONDS_PER_SCENE))
    video_bytes_per_s = width * height * preset.fps * VIDEO_BITS_PER_PIXEL / 8
    per_second = AUDIO_MIX_BYTES_PER_S + NARRATION_BYTES_PER_S + 2 * video_bytes_per_s
    return int(duration_s * per_second + scenes * width * height * 3 + SPACE_MARGIN_BYTES)


def _speech_s(text: str) -> float:
    return len(text.split()) / WORDS_PER_S


def script_scene_count(script: str) -> int:
    """How many scenes the offline writer cuts `script` into (cheap: no prompts are made); 0 if it has no narration."""
    from .storyboard.rules import MAX_SCENE_SENTENCES, MAX_SCENE_WORDS, MIN_SCENE_WORDS
    from .storyboard.text import read_markdown, scene_spans

    return sum(len(scene_spans(block, max_words=MAX_SCENE_WORDS, max_sentences=MAX_SCENE_SENTENCES,
                               min_words=MIN_SCENE_WORDS))
               for block in read_markdown(script).blocks if block.kind == "paragraph")


def check_source_limits(source: str, mode: str, limits: Limits) -> None:
    """A script's or a brief's length, and a script's scene count after splitting, before anything is written.

    Raises:
        RequestError: naming ``script`` or ``brief`` and the limit.
    """
    if not isinstance(source, str):
        raise RequestError(f"`source` must be text, got {type(source).__name__}", field="source")
    if mode == "brief" and len(source) > limits.max_brief_chars:
        raise RequestError(f"the brief has {len(source):,} characters; this server's limit is "
                           f"{limits.max_brief_chars:,}", field="brief")
    if len(source) > limits.max_script_chars:
        raise RequestError(f"the script has {len(source):,} characters; this server's limit is "
                           f"{limits.max_script_chars:,}: shorten it or split it into several videos", field="script")
    if mode == "script":
        estimate = _speech_s(source)
        if estimate > limits.max_video_s:
            raise RequestError(f"the video would last about {estimate:.0f} s (at {WORDS_PER_S * 60:.0f} words a "
                               f"minute), over this server's limit of {limits.max_video_s:.0f} s; shorten the script",
                               field="script")
        scenes = script_scene_count(source)
        if scenes > limits.max_scenes:
            raise RequestError(f"the script splits into {scenes} scenes; this server's limit is {limits.max_scenes}: "
                               "shorten it or split it into several videos", field="script")


def check_project_limits(project: Any, limits: Limits, preset: Any = None) -> None:
    """A project within `limits`: scene count, each scene's text and fixed length, title and style, the estimated
    video length and (with `preset`) the frame size. The same limits as a job request's, for faces that edit a
    project directly (the studio app, its API endpoints).

    Raises:
        RequestError: naming the field (``scenes[3].narration``) and the limit.
    """
    scenes = project.scenes
    if len(scenes) > limits.max_scenes:
        raise RequestError(f"the storyboard has {len(scenes)} scenes; this server's limit is {limits.max_scenes}: "
                           "shorten the script or delete scenes", field="scenes")
    for name, limit in (("title", limits.max_text_chars), ("style", limits.max_text_chars)):
        value = getattr(project, name) or ""
        if len(value) > limit:
            raise RequestError(f"the {name} has {len(value)} characters; this server's limit is {limit}", field=name)
    for number, scene in enumerate(scenes, start=1):
        for name, limit in (("narration", limits.max_narration_chars), ("visual_prompt", limits.max_prompt_chars)):
            value = getattr(scene, name) or ""
            if len(value) > limit:
                raise RequestError(f"scene {number}'s {name.replace('_', ' ')} has {len(value):,} characters; this "
                                   f"server's limit is {limit:,}", field=f"scenes[{number - 1}].{name}")
        if scene.duration_s is not None and scene.duration_s > limits.max_scene_s:
            raise RequestError(f"scene {number} lasts {scene.duration_s:g} s; this server's limit is "
                               f"{limits.max_scene_s:g} s a scene", field=f"scenes[{number - 1}].duration_s")
    pad = (preset.lead_s + preset.tail_s) if preset is not None else 0.0
    estimate = sum(s.duration_s if s.duration_s is not None else (s.audio_duration_s or _speech_s(s.narration)) + pad
                   for s in scenes)
    if estimate > limits.max_video_s:
        raise RequestError(f"the video would last about {estimate:.0f} s, over this server's limit of "
                           f"{limits.max_video_s:.0f} s: shorten the storyboard", field="scenes")
    if preset is not None:
        width, height = preset.size(project.aspect)
        if width * height > limits.max_pixels:
            raise RequestError(f"preset {preset.name!r} at {project.aspect} is {width}x{height}, over this server's "
                               f"limit of {limits.max_pixels:,} pixels a frame; choose a smaller preset",
                               field="preset")


def _tier_presets() -> dict[str, str]:
    from .presets import available_presets

    return {name: name for name in available_presets()}


def _bad_char(value: str) -> tuple[int, str] | None:
    for i, c in enumerate(value):
        if (c < " " and c not in "\n\r\t") or c == "\x7f" or unicodedata.category(c) == "Cs":
            return i, c
    return None


def _text(data: Mapping, key: str, max_chars: int, field: str | None = None) -> str | None:
    field = field or key
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"`{field}` must be a string, got {type(value).__name__}", field=field)
    if len(value) > max_chars:
        raise RequestError(f"`{field}` is {len(value):,} characters long; this server's limit is {max_chars:,}",
                           field=field)
    bad = _bad_char(value)
    if bad is not None:
        raise RequestError(f"`{field}` holds a control character or an unpaired surrogate (U+{ord(bad[1]):04X}) at "
                           f"position {bad[0]}", field=field)
    return value


def _number(data: Mapping, key: str, lo: float, hi: float, default: float | None, field: str | None = None) -> Any:
    field = field or key
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"`{field}` must be a number, got {value!r}"[:200], field=field)
    if not lo <= value <= hi:
        raise RequestError(f"`{field}` must be between {lo:g} and {hi:g}, got {value!r}", field=field)
    return float(value)


def _int(data: Mapping, key: str, lo: int, hi: int, default: int, field: str | None = None) -> int:
    field = field or key
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"`{field}` must be a whole number, got {value!r}"[:200], field=field)
    if not lo <= value <= hi:
        raise RequestError(f"`{field}` must be between {lo} and {hi}, got {value}", field=field)
    return value


def _bool(data: Mapping, key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"`{key}` must be true or false, got {value!r}"[:200], field=key)
    return value


def _choice(data: Mapping, key: str, choices: Sequence[str], default: str | None, field: str | None = None) -> Any:
    field = field or key
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise RequestError(f"`{field}` must be one of {', '.join(choices)}, got {value!r}"[:300], field=field)
    return value


def _upload_id(data: Mapping, key: str, field: str | None = None) -> str | None:
    field = field or key
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"`{field}` must be an upload id (from POST /api/uploads), got {type(value).__name__}",
                           field=field)
    check_id(value, field, "upload")
    return value


def _VOICE_OK(voice: str) -> bool:
    """A voice *name* (``en-us``, ``en_US-joe-medium``, Bark's ``v2/en_speaker_6``), never a file: no dots, at most one
    '/' between two name parts."""
    parts = voice.split("/")
    return len(parts) <= 2 and all(part and part[0].isalnum() and all(c.isascii() and (c.isalnum() or c in "_-+")
                                                                       for c in part) for part in parts)


def _LANGUAGE_OK(language: str) -> bool:
    parts = language.replace("_", "-").split("-")
    return (2 <= len(parts[0]) <= 3 and parts[0].isascii() and parts[0].isalpha()
            and all(1 <= len(p) <= 8 and p.isascii() and p.isalnum() for p in parts[1:]))


def _providers(value: Any) -> dict[str, str]:
    from . import providers

    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestError("`providers` must be an object like {\"narrator\": \"espeak\", \"painter\": \"cards\"}",
                           field="providers")
    out = {}
    for key, name in value.items():
        if key not in _PROVIDER_KEYS:
            raise RequestError(f"`providers` may name {', '.join(_PROVIDER_KEYS)}, not {str(key)[:40]!r}",
                               field=f"providers.{str(key)[:40]}")
        if name is None:
            continue
        known = providers.names(_PROVIDER_KEYS[key])
        if key == "painter":
            known = [n for n in known if n != "local"]  # scenes with `media` use it by themselves
        if not isinstance(name, str) or (name != "auto" and name not in known):
            raise RequestError(f"`providers.{key}` must be one of auto, {', '.join(known)}, got {name!r}"[:300],
                               field=f"providers.{key}")
        out[key] = name
    return out


def _storyboard(value: Any, limits: Limits) -> tuple[SceneRequest, ...]:
    from .compose.timeline import TRANSITIONS
    from .project import _ID_RE

    if not isinstance(value, list):
        raise RequestError("`storyboard` must be a list of scenes", field="storyboard")
    if not value:
        raise RequestError("`storyboard` is empty: give at least one scene", field="storyboard")
    if len(value) > limits.max_scenes:
        raise RequestError(f"`storyboard` has {len(value)} scenes; this server's limit is {limits.max_scenes}",
                           field="storyboard")
    scenes = []
    ids = set()
    for i, item in enumerate(value):
        where = f"storyboard[{i}]"
        if not isinstance(item, Mapping):
            raise RequestError(f"`{where}` must be an object with `narration`", field=where)
        unknown = sorted(set(item) - set(_SCENE_KEYS))
        if unknown:
            raise RequestError(f"unknown field `{where}.{str(unknown[0])[:40]}`; a scene may have "
                               f"{', '.join(_SCENE_KEYS)}", field=f"{where}.{str(unknown[0])[:40]}")
        narration = _text(item, "narration", limits.max_narration_chars, f"{where}.narration") or ""
        duration = _number(item, "duration_s", 0.2, limits.max_scene_s, None, f"{where}.duration_s")
        if not narration.strip() and duration is None:
            raise RequestError(f"`{where}` has no narration and no duration_s: give it one or the other",
                               field=f"{where}.narration")
        if duration is None and _speech_s(narration) > limits.max_scene_s:
            raise RequestError(f"`{where}.narration` would take about {_speech_s(narration):.0f} s to say, over the "
                               f"limit of {limits.max_scene_s:.0f} s a scene; split it", field=f"{where}.narration")
        scene_id = _text(item, "id", 40, f"{where}.id")
        if scene_id is not None:
            if not _ID_RE.match(scene_id) or scene_id in ids:
                raise RequestError(f"`{where}.id` must be 1-40 letters, digits, '-' or '_', unique in the storyboard",
                                   field=f"{where}.id")
            ids.add(scene_id)
        scenes.append(SceneRequest(
            narration=narration,
            visual_prompt=_text(item, "visual_prompt", limits.max_prompt_chars, f"{where}.visual_prompt") or "",
            duration_s=duration,
            seed=_int(item, "seed", 0, 2**31 - 1, 0, f"{where}.seed"),
            media=_upload_id(item, "media", f"{where}.media"),
            transition=_choice(item, "transition", TRANSITIONS, None, f"{where}.transition"),
            id=scene_id,
        ))
    return tuple(scenes)


# -- jobs and events -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One entry of a job's event stream. `seq` counts from 1 per job (the SSE event id)."""

    job_id: str
    seq: int
    time: float
    kind: str
    data: dict

    def to_dict(self) -> dict:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, **self.data}


@dataclass(frozen=True)
class Job:
    """A job as the journal holds it.

    Attributes:
        id: 32 hex digits.
        owner: The user who submitted it.
        state: One of `STATES`.
        resource: ``gpu`` or ``cpu`` (which slots it runs in).
        request: The checked request (`JobRequest.to_dict`).
        preset: The preset's name.
        percent: 0-100.
        step: The current step (``storyboard``, ``narrate``, ``illustrate``, ``compose``).
        message: The last progress message.
        scene_index, scene_total: Scenes done in the current step, and how many it has.
        steps: Steps done: name, seconds, assets made and reused.
        scenes: Per scene id, what each step did (``made`` or ``reused``).
        timings: Seconds queued, per step, and in total.
        error: What went wrong, for the user (``failed`` jobs).
        error_detail: Details for the log (a traceback); never shown to other users.
        attempts: How many times it started (more than one after an interruption).
        crashes: How many of those runs ended in a crash of the server (not a graceful stop).
        cancel_requested: A cancel was asked for and is being carried out.
        expired: Its files were removed by the retention policy.
        output: The finished MP4 (``done`` jobs), else None.
        result: Facts of the finished video (duration_s, size_bytes, width, height, fps, encoder, notes).
        project_dir: The job's project folder.
    """

    id: str
    owner: str
    state: str
    resource: str
    request: dict
    preset: str
    created_at: float
    started_at: float | None
    run_started_at: float | None
    finished_at: float | None
    updated_at: float
    percent: float
    step: str | None
    message: str | None
    scene_index: int | None
    scene_total: int | None
    steps: list
    scenes: dict
    timings: dict
    error: str | None
    error_detail: str | None
    attempts: int
    crashes: int
    cancel_requested: bool
    expired: bool
    idempotency_key: str | None
    project_dir: Path
    output: Path | None
    result: dict | None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def eta_s(self) -> float | None:
        """Seconds left, estimated from this run's progress so far (None until there is enough to go on)."""
        if self.state != "running" or self.run_started_at is None or self.percent < 3:
            return None
        elapsed = max(0.0, time.time() - self.run_started_at)
        return round(elapsed * (100.0 - self.percent) / self.percent, 1)

    def to_dict(self) -> dict:
        """The job for its owner (the API's job resource); no file paths, no log details."""
        scene = ({"index": self.scene_index, "total": self.scene_total}
                 if self.scene_total is not None and self.state == "running" else None)
        return {
            "id": self.id, "state": self.state, "percent": round(self.percent, 1), "step": self.step,
            "message": self.message, "scene": scene, "eta_s": self.eta_s,
            "error": {"message": self.error} if self.error else None,
            "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "attempts": self.attempts, "cancel_requested": self.cancel_requested, "expired": self.expired,
            "preset": self.preset, "aspect": self.request.get("aspect"), "source": _source_of(self.request),
            "title": self.request.get("title"), "steps": self.steps, "scenes": self.scenes, "timings": self.timings,
            "video": dict(self.result) if self.result and self.state == "done" and not self.expired else None,
        }


def _source_of(request: dict) -> str:
    return next((k for k in ("script", "brief", "storyboard") if k in request), "script")


def _job_from_row(row: Any, data_dir: Path) -> Job:
    return Job(
        id=row["id"], owner=row["owner"], state=row["state"], resource=row["resource"],
        request=json.loads(row["request"]), preset=row["preset"], created_at=row["created_at"],
        started_at=row["started_at"], run_started_at=row["run_started_at"], finished_at=row["finished_at"],
        updated_at=row["updated_at"], percent=float(row["percent"]), step=row["step"], message=row["message"],
        scene_index=row["scene_index"], scene_total=row["scene_total"], steps=json.loads(row["steps"]),
        scenes=json.loads(row["scenes"]), timings=json.loads(row["timings"]), error=row["error"],
        error_detail=row["error_detail"], attempts=row["attempts"], crashes=row["crashes"],
        cancel_requested=bool(row["cancel_requested"]),
        expired=bool(row["expired"]), idempotency_key=row["idempotency_key"],
        project_dir=data_dir / row["project"], output=(data_dir / row["output"]) if row["output"] else None,
        result=json.loads(row["result"]) if row["result"] else None,
    )


def request_upload_ids(request: Mapping) -> set[str]:
    """The upload ids a request (its JSON form, `JobRequest.to_dict`) names."""
    ids = {request.get(k) for k in ("music", "watermark", "caption_font")}
    ids.update(s.get("media") for s in request.get("storyboard") or () if isinstance(s, Mapping))
    return {i for i in ids if isinstance(i, str)}


def _job_using_upload(db: Any, owner: str, upload_id: str) -> tuple[str, str] | None:
    """(id, state) of the owner's oldest waiting or running job that uses the upload, if any (inside a transaction)."""
    rows = db.execute("SELECT id, state, request FROM jobs WHERE owner = ? AND state IN ('queued', 'interrupted',"
                      " 'running') ORDER BY created_at", (owner,)).fetchall()
    for row in rows:
        if upload_id in request_upload_ids(json.loads(row["request"])):
            return row["id"], row["state"]
    return None


# The columns a job's record (`JOB_FILE`) holds; the JSON ones as JSON.
RECORD_COLUMNS = ("id", "owner", "state", "resource", "request_sha256", "idempotency_key", "preset", "output", "error",
                  "percent", "attempts", "crashes", "expired", "created_at", "started_at", "finished_at")
RECORD_JSON_COLUMNS = ("request", "result", "steps", "scenes", "timings")


def save_job_record(data_dir: Path, row: Any) -> None:
    """Write a job's record (`JOB_FILE`, atomically) into its folder from its journal row."""
    record: dict[str, Any] = {"format": 1, **{k: row[k] for k in RECORD_COLUMNS}}
    for key in RECORD_JSON_COLUMNS:
        record[key] = json.loads(row[key]) if row[key] else None
    folder = safe_path(data_dir, *row["project"].split("/"))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / JOB_FILE, json.dumps(record, ensure_ascii=True, indent=1))


def _gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def default_classify(request: JobRequest, preset: Any) -> str:
    """``gpu`` when a step would use a model provider and a GPU is here, else ``cpu``."""
    from . import providers
    from .executors import CPU_PROVIDERS

    if not _gpu_present():
        return "cpu"
    for key, kind in _PROVIDER_KEYS.items():
        name = getattr(request, key)
        prefer = preset.providers.get(kind)
        if kind == "painter":
            prefer = [p for p in (prefer or providers.names("painter")) if p != "local"]
        try:
            chosen = providers.choose(kind, name, prefer=prefer).name
        except StudioError:
            continue
        if chosen not in CPU_PROVIDERS:
            return "gpu"
    return "cpu"


def sweep_temp(folder: Path) -> int:
    """Remove temporary files and work folders that an interrupted write left in `folder` (never following links);
    returns how many were removed."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return 0
    for parent, dirs, files in os.walk(folder, followlinks=False):
        for name in list(dirs):
            if name.startswith(".") and (".render-" in name or name.startswith(".segment-")):
                shutil.rmtree(Path(parent) / name, ignore_errors=True)
                dirs.remove(name)
                removed += 1
        for name in files:
            if name.startswith(".") and (".part-" in name or name.endswith(".part")):
                try:
                    os.unlink(Path(parent) / name)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _folder_bytes(folder: Path) -> int:
    total = 0
    for parent, _, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                total += os.lstat(Path(parent) / name).st_size
            except OSError:
                pass
    return total


@dataclass
class _Run:
    """What a worker knows about the job it runs (written to the journal as it changes)."""

    job: Job
    token: CancelToken
    started: float = field(default_factory=time.perf_counter)
    step: str | None = None
    scene_index: int | None = None
    scene_total: int | None = None
    steps: list = field(default_factory=list)
    scenes: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    last_row: float = 0.0
    last_event: float = 0.0
    last_event_percent: float = -100.0


# -- the runner ------------------------------------------------------------------------------------------------------
# The modules the workers run, imported lazily elsewhere so `import studio` stays light.
STEP_MODULES = ("studio.pipeline", "studio.executors", "studio.storyboard", "studio.voice", "studio.visuals",
                "studio.compose", "studio.compose.segments")


def import_steps() -> None:
    """Import the step modules on this thread before any worker starts. Two workers importing them at once for their
    first jobs take Python's per-module import locks in opposite orders (one imports ``studio.compose.timeline`` while
    the other is inside ``studio.compose``, whose ``render`` -> ``audio`` imports ``timeline``); Python breaks that
    deadlock by handing one of them a partly initialised module, and its job fails with an ImportError (seen once in
    ``bench/jobs.py``)."""
    import importlib

    for name in STEP_MODULES:
        importlib.import_module(name)


class JobRunner:
    """Runs render jobs from a journal in a data folder; the one object the API, the app and the CLI share.

    Args:
        data_dir: The data folder (default `default_data_dir()`). One runner per folder at a time (a lock enforces it).
        executor: Where scene-level work runs (`studio.executors`); default local. The runner closes an executor it
            was given when it closes.
        gpu_slots: Jobs using a GPU that run at once.
        cpu_slots: Jobs using only the CPU that run at once.
        max_queued: Most jobs waiting in all; more raise `QueueFull`.
        max_queued_per_owner: Most jobs one user may have waiting.
        limits: Request limits (`Limits`).
        upload_limits: Upload limits (`studio.uploads.UploadLimits`).
        retention: What to keep and for how long (`Retention`).
        presets: Extra preset files this server offers besides the tiers (by their ``name``).
        max_attempts: A job that was running when the server crashed or was killed this many times fails instead
            of starting again (a job that kills the server must not do so forever). Graceful stops (`close`, a
            restart) are not counted: the job resumes however often the server is restarted.
        classify: ``classify(request, preset) -> "gpu" | "cpu"``; default `default_classify`.
        segments: Compose segment by segment (cached, so a resumed job re-encodes only unfinished segments).
        backup_every_s: How often the journal is checked and backed up to ``studio.db.bak`` (also at `close`).
        start: Start the workers now (False: call `start()` later; submissions wait in the queue).
    """

    def __init__(self, data_dir: Path | str | None = None, *, executor: Any = None, gpu_slots: int = 1,
                 cpu_slots: int = 1, max_queued: int = 100, max_queued_per_owner: int = 20,
                 limits: Limits | None = None, upload_limits: UploadLimits | None = None,
                 retention: Retention | None = None, presets: Iterable[Path | str] = (), max_attempts: int = 3,
                 classify: Callable[[JobRequest, Any], str] | None = None, segments: bool = True,
                 backup_every_s: float = 600.0, start: bool = True) -> None:
        from .executors import LocalExecutor
        from .presets import load_preset

        # 1. Check the settings.
        for name, value, lo in (("gpu_slots", gpu_slots, 0), ("cpu_slots", cpu_slots, 1), ("max_queued", max_queued, 1),
                                ("max_queued_per_owner", max_queued_per_owner, 1), ("max_attempts", max_attempts, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise StudioError(f"`{name}` must be a whole number of at least {lo}, got {value!r}")
        self.limits = limits or Limits()
        self.retention = retention or Retention()
        self.gpu_slots, self.cpu_slots = gpu_slots, cpu_slots
        self.max_queued, self.max_queued_per_owner = max_queued, max_queued_per_owner
        self.max_attempts = max_attempts
        self.classify = classify or default_classify
        self.segments = segments
        if isinstance(backup_every_s, bool) or not isinstance(backup_every_s, (int, float)) or not backup_every_s > 0:
            raise StudioError(f"`backup_every_s` must be a number of seconds above 0, got {backup_every_s!r}")
        self.backup_every_s = float(backup_every_s)
        self.presets: dict[str, str] = _tier_presets()
        for path in presets:
            preset = load_preset(Path(path))  # raises naming the file
            self.presets[preset.name] = str(Path(path).resolve())

        # 2. Open the journal (taking the folder's lock) and recover from a crash.
        self.journal = Journal(Path(data_dir) if data_dir is not None else default_data_dir())
        self.data_dir = self.journal.data_dir
        (self.data_dir / JOBS_DIR).mkdir(exist_ok=True)
        self.uploads = UploadStore(self.journal, upload_limits, used_by=_job_using_upload)
        self.executor = executor or LocalExecutor()
        self._cond = threading.Condition(threading.RLock())
        self._tokens: dict[str, CancelToken] = {}
        self._stopping: set[str] = set()
        self._served: dict[str, int] = {}
        self._serial = 0
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._janitor_wake = threading.Event()

        # 3. Nothing the folders hold is lost with the journal: an emptied journal comes back from its backup, and
        #    every job or upload folder whose record the journal lacks gets its row back (`studio.recovery`).
        from .recovery import rebuild, restore_if_emptied

        try:
            restored = restore_if_emptied(self.journal)
            self.rebuilt = rebuild(self.journal, self.uploads, restored=restored)
            if self.rebuilt.changed:
                log.warning("the journal did not know everything in %s: %s", self.data_dir,
                            "; ".join(self.rebuilt.lines()))
            self.recovered = self._recover()
            if self.rebuilt.changed:
                self._backup_quietly()
        except BaseException:
            self.journal.close()  # release the folder: the caller may try again
            raise

        if start:
            self.start()

    # -- life cycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads and the janitor (once)."""
        import_steps()
        with self._cond:
            if self._threads or self._closing:
                return
            for resource, count in (("gpu", self.gpu_slots), ("cpu", self.cpu_slots)):
                for i in range(count):
                    thread = threading.Thread(target=self._work, args=(resource,), name=f"studio-job-{resource}-{i}",
                                              daemon=True)
                    self._threads.append(thread)
            janitor = threading.Thread(target=self._janitor, name="studio-janitor", daemon=True)
            self._threads.append(janitor)
        for thread in self._threads:
            thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop: running jobs are stopped and left ``interrupted`` (they resume at the next start), workers end, the
        journal closes and the data folder is released."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._stopping.update(self._tokens)
            tokens = list(self._tokens.values())
            self._cond.notify_all()
        self._janitor_wake.set()
        for token in tokens:
            token.cancel()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        try:
            self._backup_quietly()  # a clean shutdown leaves a fresh backup
            self.executor.close()
        finally:
            self.journal.close()

    def __enter__(self) -> "JobRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _recover(self) -> list[str]:
        """Jobs found ``running`` were cut off by a crash (a graceful stop leaves them ``interrupted``): mark them
        ``interrupted`` (or ``failed`` after `max_attempts` crashes) and sweep the temporary files every job folder
        may hold; returns the ids marked."""
        now = time.time()
        marked, failed = [], []
        with self.journal.transaction() as db:
            for row in db.execute("SELECT id, crashes FROM jobs WHERE state = 'running'").fetchall():
                crashes = row["crashes"] + 1  # a graceful stop leaves `interrupted`, never `running`: this was a crash
                if crashes >= self.max_attempts:
                    message = (f"the server was killed or crashed {crashes} times while it ran this job, so it was not "
                               "started again; submit it again, or a smaller version of it")
                    db.execute("UPDATE jobs SET state = 'failed', crashes = ?, error = ?, finished_at = ?, updated_at = ?"
                               " WHERE id = ?", (crashes, message, now, now, row["id"]))
                    self.journal.add_event(db, row["id"], "failed", {"state": "failed", "error": message}, now)
                    failed.append(row["id"])
                else:
                    db.execute("UPDATE jobs SET state = 'interrupted', crashes = ?, updated_at = ? WHERE id = ?",
                               (crashes, now, row["id"]))
                    self.journal.add_event(db, row["id"], "interrupted", {
                        "state": "interrupted",
                        "message": "the server stopped while this job ran; it resumes from the assets already made"}, now)
                    marked.append(row["id"])
        for job_id in failed:
            self._save_record(job_id)
        jobs_root = self.data_dir / JOBS_DIR
        for owner_dir in jobs_root.iterdir() if jobs_root.is_dir() else ():
            if owner_dir.is_dir() and not owner_dir.is_symlink():
                for job_dir in owner_dir.iterdir():
                    sweep_temp(job_dir)
        self.uploads.sweep()
        if marked:
            log.warning("resuming %d interrupted job(s): %s", len(marked), ", ".join(marked))
        return marked

    # -- submitting ------------------------------------------------------------------------------------------------
    def submit(self, request: JobRequest | Mapping[str, Any], *, owner: str = "local",
               idempotency_key: str | None = None, prepare: Callable[[Path], Any] | None = None) -> Job:
        """Queue a render.

        Args:
            request: A `JobRequest` or its JSON form (checked with `JobRequest.from_dict`).
            owner: The user it belongs to; only they see it.
            idempotency_key: The same key with the same request returns the job it made the first time instead of
                making another (1-200 printable ASCII characters).
            prepare: Called with a new job's project folder before any worker can take the job (the studio app
                seeds it with the project and the assets its panels made); the job's record (`JOB_FILE`) is
                written there after it. If it raises, the job is dropped and the error is raised.

        Returns:
            The queued `Job` (or the earlier one, for a repeated idempotency key).

        Raises:
            RequestError: a bad field or a limit (named); NotFound: an upload id that is not the owner's;
            Conflict: the idempotency key was used with another request; QueueFull: too many jobs wait;
            DiskFull: the disk holding the data folder has clearly too little room for the render
            (`estimate_render_bytes`).
        """
        # 1. Check the request and the uploads it names, before anything is queued.
        check_owner(owner)
        if idempotency_key is not None:
            if (not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 200
                    or not all("!" <= c <= "~" for c in idempotency_key)):
                raise RequestError("`Idempotency-Key` must be 1-200 printable ASCII characters without spaces",
                                   field="Idempotency-Key")
        data = request.to_dict() if isinstance(request, JobRequest) else request
        checked = JobRequest.from_dict(data, limits=self.limits, presets=self.presets)
        self._check_uploads(checked, owner)
        from .presets import load_preset

        preset = load_preset(self.presets[checked.preset])
        resource = self.classify(checked, preset)
        if resource not in ("gpu", "cpu"):
            raise StudioError(f"`classify` must return 'gpu' or 'cpu', got {resource!r}")
        if resource == "gpu" and self.gpu_slots == 0:
            resource = "cpu"
        fingerprint = checked.fingerprint()

        # 2. One transaction: the idempotency key, the queue bounds, the new job.
        now = time.time()
        job_id = new_id()
        project = f"{JOBS_DIR}/{owner_key(owner)}/{job_id}"
        with self._cond:
            if self._closing:
                raise QueueFull("the server is shutting down; try again in a moment", retry_after_s=5)
            with self.journal.transaction() as db:
                if idempotency_key is not None:
                    row = db.execute("SELECT id, request_sha256 FROM jobs WHERE owner = ? AND idempotency_key = ?",
                                     (owner, idempotency_key)).fetchone()
                    if row is not None:
                        if row["request_sha256"] != fingerprint:
                            raise Conflict("this Idempotency-Key was used before with a different request; use a new "
                                           "key for a new request", field="Idempotency-Key")
                        existing = row["id"]
                    else:
                        existing = None
                else:
                    existing = None
                if existing is None:
                    self._check_space(checked, preset, then="submit the job again")
                    for field_name, upload_id in checked.upload_ids():  # not deleted since they were checked
                        row = db.execute("SELECT 1 FROM uploads WHERE id = ? AND owner = ?", (upload_id, owner))
                        if row.fetchone() is None:
                            raise NotFound(f"no upload with id {upload_id!r}", field=field_name)
                    waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'interrupted')").fetchone()[0]
                    if waiting >= self.max_queued:
                        raise QueueFull(f"the queue is full ({waiting} jobs waiting); try again later",
                                        retry_after_s=30)
                    mine = db.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'interrupted')",
                                      (owner,)).fetchone()[0]
                    if mine >= self.max_queued_per_owner:
                        raise QueueFull(f"you have {mine} jobs waiting, the most one user may have; wait for some to "
                                        "finish or cancel some", retry_after_s=30)
                    db.execute(
                        "INSERT INTO jobs (id, owner, state, resource, request, request_sha256, idempotency_key, preset,"
                        " project, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                        (job_id, owner, resource, json.dumps(checked.to_dict(), ensure_ascii=True), fingerprint,
                         idempotency_key, checked.preset, project, now, now))
                    self.journal.add_event(db, job_id, "queued", {"state": "queued"}, now)
            if existing is None:
                try:
                    if prepare is not None:
                        prepare(self.data_dir / project)
                    self._save_record(job_id, quiet=False)
                except BaseException as exc:
                    shutil.rmtree(self.data_dir / project, ignore_errors=True)  # first: it frees a full disk
                    with self.journal.transaction() as db:
                        db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
                        db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                    if is_disk_full(exc) and not isinstance(exc, DiskFull):
                        raise DiskFull(disk_full_message(self._free(), estimate_render_bytes(checked, preset),
                                                         then="submit the job again")) from exc
                    raise
            self._cond.notify_all()
        return self.get(existing or job_id, owner)

    def _save_record(self, job_id: str, *, quiet: bool = True) -> None:
        """Refresh the job's record in its folder (after each change of state); a failure is logged, not raised,
        unless `quiet` is False: the journal stays the truth, the record is its copy for a lost journal."""
        try:
            rows = self.journal.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
            if rows and not rows[0]["expired"]:
                save_job_record(self.data_dir, rows[0])
        except (OSError, StudioError) as exc:
            if not quiet:
                raise
            log.warning("the record of job %s was not written: %s", job_id, exc)

    def _check_space(self, request: JobRequest, preset: Any, *, then: str) -> None:
        """Refuse a render the disk clearly has no room for (`DiskFull`, HTTP 507)."""
        need = estimate_render_bytes(request, preset)
        free = self._free()
        if free is not None and free < need:
            raise DiskFull(disk_full_message(free, need, then=then))

    def _free(self) -> int | None:
        try:
            return free_bytes(self.data_dir)
        except OSError:
            return None

    def _check_uploads(self, request: JobRequest, owner: str) -> None:
        wanted = {"music": ("audio", "video"), "watermark": ("image",), "caption_font": ("font",)}
        for field_name, upload_id in request.upload_ids():
            upload = self.uploads.get(owner, upload_id, field=field_name)
            kinds = wanted.get(field_name, ("image", "video"))
            if upload.kind not in kinds:
                raise RequestError(f"`{field_name}` must name an upload of {' or '.join(kinds)}, "
                                   f"but {upload_id} is {upload.kind}", field=field_name)
            if field_name == "music" and not upload.info.get("has_audio"):
                raise RequestError(f"`music` names upload {upload_id}, which holds no audio", field=field_name)

    # -- reading ---------------------------------------------------------------------------------------------------
    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job `job_id`; with `owner`, only if it is theirs (another user's job is `NotFound`, like a missing one)."""
        check_id(job_id, "job_id")
        rows = self.journal.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            raise NotFound(f"no job with id {job_id!r}", field="job_id")
        return _job_from_row(rows[0], self.data_dir)

    def find(self, owner: str, idempotency_key: str) -> Job | None:
        """The owner's job made with `idempotency_key`, if there is one."""
        rows = self.journal.query("SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", (owner, idempotency_key))
        return _job_from_row(rows[0], self.data_dir) if rows else None

    @property
    def closing(self) -> bool:
        """True once `close` has begun."""
        return self._closing

    def list(self, owner: str | None = None, *, state: str | None = None, limit: int = 50) -> list[Job]:
        """Jobs, newest first: the owner's (or everyone's with None), optionally in one state."""
        if state is not None and state not in STATES:
            raise RequestError(f"`state` must be one of {', '.join(STATES)}, got {state!r}", field="state")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise RequestError(f"`limit` must be between 1 and 1000, got {limit!r}", field="limit")
        sql, params = "SELECT * FROM jobs WHERE 1 = 1", []
        if owner is not None:
            sql += " AND owner = ?"
            params.append(owner)
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        params.append(limit)
        return [_job_from_row(row, self.data_dir) for row in self.journal.query(sql, tuple(params))]

    def events(self, job_id: str, owner: str | None = None, *, after: int = 0, limit: int = 1000,
               wait_s: float = 0.0) -> list[Event]:
        """The job's events with ``seq > after`` (the SSE stream's ``Last-Event-ID`` is `after`).

        Args:
            wait_s: When there are none yet, wait up to this long for the next one (a UI's long poll), instead of
                answering an empty list at once.
        """
        self.get(job_id, owner)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise RequestError(f"`after` must be a whole number of at least 0, got {after!r}", field="after")
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            rows = self.journal.query("SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                      (job_id, after, int(limit)))
            left = deadline - time.monotonic()
            if rows or left <= 0 or self._closing:
                return [Event(row["job_id"], row["seq"], row["time"], row["kind"], json.loads(row["data"]))
                        for row in rows]
            with self._cond:
                self._cond.wait(min(left, 0.5))  # woken by every journaled event

    def wait(self, job_id: str, timeout_s: float | None = None, owner: str | None = None) -> Job:
        """Block until the job is done, failed or canceled (or `timeout_s` passes); returns it as it then is."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                job = self.get(job_id, owner)
                if job.terminal or self._closing:
                    return job
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return job
                self._cond.wait(0.5 if left is None else min(0.5, left))

    def video_path(self, job_id: str, owner: str | None = None) -> Path:
        """The finished MP4 of a job, checked: done, not expired, a plain file inside its project folder."""
        job = self.get(job_id, owner)
        if job.expired:
            raise Gone(f"the video of job {job_id} was removed by the retention policy; render it again")
        if job.state != "done" or job.output is None:
            raise Conflict(f"job {job_id} is {job.state}, so it has no video yet", field="job_id")
        path = safe_path(self.data_dir, *job.output.relative_to(self.data_dir).parts)
        if not path.is_file():
            raise Gone(f"the video of job {job_id} is no longer stored; render it again")
        return path

    def counts(self, owner: str | None = None) -> dict[str, int]:
        """How many jobs are in each state (of `owner`'s, when given)."""
        if owner is None:
            rows = self.journal.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        else:
            rows = self.journal.query("SELECT state, COUNT(*) AS n FROM jobs WHERE owner = ? GROUP BY state", (owner,))
        counts = {state: 0 for state in STATES}
        counts.update({row["state"]: row["n"] for row in rows})
        return counts

    # -- cancelling ------------------------------------------------------------------------------------------------
    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel a job: a waiting one ends ``canceled`` at once; a running one is stopped (ffmpeg and espeak-ng are
        killed, model loops stop at their next step) and ends ``canceled`` moments later (`wait` for it).

        Raises:
            NotFound: no such job for `owner`. Conflict: the job has already ended.
        """
        with self._cond:
            job = self.get(job_id, owner)
            if job.terminal:
                raise Conflict(f"job {job_id} is already {job.state}", field="job_id")
            now = time.time()
            token = None
            with self.journal.transaction() as db:
                if job.state in WAITING:
                    db.execute("UPDATE jobs SET state = 'canceled', cancel_requested = 1, finished_at = ?, updated_at = ?"
                               " WHERE id = ?", (now, now, job_id))
                    self.journal.add_event(db, job_id, "canceled", {"state": "canceled"}, now)
                else:
                    db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
                    self.journal.add_event(db, job_id, "cancel_requested", {"state": job.state}, now)
                    token = self._tokens.get(job_id)
            self._cond.notify_all()
        if token is not None:
            token.cancel()
        elif job.state in WAITING:
            self._discard_files(job)
            self._save_record(job_id)
        return self.get(job_id, owner)

    # -- the workers -----------------------------------------------------------------------------------------------
    def _work(self, resource: str) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    try:
                        claimed = self._claim(resource)
                    except ServiceError as exc:  # a damaged or busy journal: keep the worker, try again later
                        log.error("worker %s cannot take a job: %s", threading.current_thread().name, exc)
                        self._cond.wait(5.0)
                        continue
                    if claimed is not None:
                        break
                    self._cond.wait(1.0)
            job, token = claimed
            try:
                self._execute(job, token)
            except Exception:  # never let a worker die: the job is marked failed inside; this is a last resort
                log.exception("worker %s: unexpected error after job %s", threading.current_thread().name, job.id)
            finally:
                with self._cond:
                    self._tokens.pop(job.id, None)
                    self._stopping.discard(job.id)
                    self._cond.notify_all()

    def _claim(self, resource: str) -> tuple[Job, CancelToken] | None:
        """Take the next job of `resource` (called with the runner's lock held): interrupted jobs first, then round
        robin over users (the one served longest ago goes next), each user's jobs in order."""
        rows = self.journal.query("SELECT id, owner, state, created_at FROM jobs WHERE state IN ('queued', 'interrupted')"
                                  " AND resource = ? ORDER BY created_at, id", (resource,))
        if not rows:
            return None
        interrupted = [r for r in rows if r["state"] == "interrupted"]
        if interrupted:
            chosen = interrupted[0]
        else:
            first: dict[str, Any] = {}
            for row in rows:
                first.setdefault(row["owner"], row)
            owner = min(first, key=lambda o: (self._served.get(o, -1), first[o]["created_at"]))
            chosen = first[owner]
        now = time.time()
        with self.journal.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, ?), run_started_at = ?,"
                " attempts = attempts + 1, percent = 0, step = NULL, message = NULL, scene_index = NULL,"
                " scene_total = NULL, updated_at = ? WHERE id = ? AND state IN ('queued', 'interrupted')",
                (now, now, now, chosen["id"])).rowcount
            if not changed:
                return None
            attempts = db.execute("SELECT attempts FROM jobs WHERE id = ?", (chosen["id"],)).fetchone()[0]
            self.journal.add_event(db, chosen["id"], "running", {"state": "running", "attempt": attempts,
                                                                 "resumed": chosen["state"] == "interrupted"}, now)
        self._serial += 1
        self._served[chosen["owner"]] = self._serial
        token = CancelToken()
        self._tokens[chosen["id"]] = token
        return self.get(chosen["id"]), token

    def _execute(self, job: Job, token: CancelToken) -> None:
        """Run one claimed job to its end, journaling as it goes."""
        from .executors import produce_video

        run = _Run(job=job, token=token)
        run.timings = dict(job.timings)
        run.timings["queued_s"] = round((job.started_at or job.created_at) - job.created_at, 3)
        run.scenes = dict(job.scenes)
        need = None
        try:
            # 1. Room on the disk (it may have filled since the job was submitted).
            request = JobRequest.from_dict(job.request, limits=self.limits, presets=self.presets)
            from .presets import load_preset

            preset = load_preset(self.presets[request.preset])
            need = estimate_render_bytes(request, preset)
            self._check_space(request, preset, then="submit the job again")

            # 2. The project: the saved one when resuming, else the storyboard written now.
            project = self._project(run, request, preset)

            # 3. Narration, visuals, composition, scene by scene through the executor.
            output = job.project_dir / "renders" / OUTPUT_NAME
            summary = produce_video(
                project, preset=preset, output=output, executor=self.executor, narrator=request.narrator,
                painter=request.painter, media_root=self.uploads.folder(job.owner), segments=self.segments,
                on_progress=lambda f, m: self._progress(run, f, m), on_event=lambda k, d: self._event(run, k, d),
                cancel=token)
        except Cancelled:
            self._finish(run, "interrupted" if job.id in self._stopping else "canceled")
        except Exception as exc:
            if token.cancelled and not isinstance(exc, ServiceError):
                self._finish(run, "interrupted" if job.id in self._stopping else "canceled")
            elif is_disk_full(exc):
                # The files it made stay (nothing made is thrown away for want of room); temporary ones go.
                error = str(exc) if isinstance(exc, DiskFull) else disk_full_message(self._free(), need,
                                                                                     then="submit the job again")
                self._finish(run, "failed", error=error, detail=traceback.format_exc(), keep_files=True)
            elif isinstance(exc, StudioError):
                self._finish(run, "failed", error=str(exc), detail=traceback.format_exc())
            else:
                log.exception("job %s failed", job.id)
                self._finish(run, "failed", error=f"the render failed with an internal error ({type(exc).__name__}); "
                             f"the server log has the details under job {job.id}", detail=traceback.format_exc())
        else:
            result = {"duration_s": round(summary.duration_s, 3), "size_bytes": summary.size_bytes,
                      "width": summary.width, "height": summary.height, "fps": summary.fps,
                      "encoder": summary.encoder, "made": summary.made, "reused": summary.reused,
                      "notes": list(summary.project.notes)}
            self._finish(run, "done", output=summary.output, result=result)

    def _project(self, run: _Run, request: JobRequest, preset: Any):
        """The job's project: loaded from its folder when a storyboard was already saved there, else written."""
        from .project import PROJECT_FILE, Project
        from .storyboard import write_storyboard

        folder = run.job.project_dir
        if (folder / PROJECT_FILE).is_file():
            project = Project.load(folder)
            self._check_project(project, preset)
            return project
        started = time.perf_counter()
        run.step = "storyboard"
        self._progress(run, 0.0, "[1/4 storyboard] writing the storyboard")
        owner = run.job.owner
        if request.storyboard is not None:
            records = []
            for scene in request.storyboard:
                record = {k: v for k, v in asdict(scene).items() if v is not None}
                if scene.media is not None:
                    record["media"] = self.uploads.get(owner, scene.media).file
                records.append(record)
            project = Project.from_storyboard(records, title=request.title or "Untitled", aspect=request.aspect,
                                              style=request.style, language=request.language, voice=request.voice,
                                              seed=request.seed)
        else:
            text = request.script if request.script is not None else request.brief
            project = write_storyboard(text, mode=request.source, writer=request.writer, title=request.title,
                                       aspect=request.aspect, style=request.style, language=request.language,
                                       voice=request.voice, seed=request.seed, preset=preset, cancel=run.token)
        music = self.uploads.path(self.uploads.get(owner, request.music)) if request.music else None
        watermark = self.uploads.path(self.uploads.get(owner, request.watermark)) if request.watermark else None
        font = self.uploads.path(self.uploads.get(owner, request.caption_font)) if request.caption_font else None
        project = replace(project, captions=request.captions, caption_style=request.caption_style, music=music,
                          music_volume=request.music_volume, watermark=watermark, caption_font=font)
        self._check_project(project, preset)
        run.token.check()
        project = project.save(folder)
        seconds = time.perf_counter() - started
        self._event(run, "step", {"step": "storyboard", "seconds": round(seconds, 3), "made": 0, "reused": 0})
        return project

    def _check_project(self, project: Any, preset: Any) -> None:
        """Limits that only a written storyboard shows (a script's or a brief's scene count and length)."""
        limits = self.limits
        if len(project.scenes) > limits.max_scenes:
            raise RequestError(f"the storyboard has {len(project.scenes)} scenes; this server's limit is "
                               f"{limits.max_scenes}: shorten the script", field="script")
        pad = preset.lead_s + preset.tail_s
        estimate = sum(s.duration_s if s.duration_s is not None else _speech_s(s.narration) + pad for s in project.scenes)
        if estimate > limits.max_video_s:
            raise RequestError(f"the video would last about {estimate:.0f} s, over this server's limit of "
                               f"{limits.max_video_s:.0f} s", field="script")

    # -- journaling a run ------------------------------------------------------------------------------------------
    def _progress(self, run: _Run, fraction: float, message: str) -> None:
        now = time.monotonic()
        percent = round(100.0 * min(max(fraction, 0.0), 1.0), 2)
        if message.startswith("[") and "] " in message:
            head, message = message[1:].split("] ", 1)
            run.step = head.split(" ", 1)[-1] or run.step
        write_row = now - run.last_row >= _PROGRESS_ROW_S or percent >= 100
        write_event = now - run.last_event >= _PROGRESS_EVENT_S or percent - run.last_event_percent >= 5
        if not (write_row or write_event):
            return
        wall = time.time()
        with self.journal.transaction() as db:
            db.execute("UPDATE jobs SET percent = ?, step = ?, message = ?, scene_index = ?, scene_total = ?,"
                       " updated_at = ? WHERE id = ?",
                       (percent, run.step, message[:300], run.scene_index, run.scene_total, wall, run.job.id))
            if write_event:
                self.journal.add_event(db, run.job.id, "progress", {"percent": percent, "step": run.step,
                                                                    "message": message[:300],
                                                                    "scene": run.scene_index, "scenes": run.scene_total},
                                       wall)
                run.last_event, run.last_event_percent = now, percent
        run.last_row = now
        if write_event:
            self._wake()

    def _event(self, run: _Run, kind: str, data: dict) -> None:
        wall = time.time()
        if kind == "step_started":  # not an event of its own, but the job's row shows the new step at once
            run.step, run.scene_index, run.scene_total = data["step"], 0, data.get("total")
            self.journal.execute("UPDATE jobs SET step = ?, scene_index = 0, scene_total = ?, updated_at = ? WHERE id = ?",
                                 (run.step, run.scene_total, wall, run.job.id))
            return
        if kind == "scene":
            run.scene_index = (run.scene_index or 0) + 1
            run.scenes.setdefault(data["scene_id"], {})[data["step"]] = "reused" if data["reused"] else "made"
        elif kind == "segment":
            run.scene_index, run.scene_total = (run.scene_index or 0) + 1, data["total"]
            for scene_id in data.get("scene_ids", ()):
                run.scenes.setdefault(scene_id, {})["compose"] = "reused" if data["reused"] else "made"
        elif kind == "step":
            run.steps = [s for s in run.steps if s["step"] != data["step"]] + [dict(data)]
            run.timings[f"{data['step']}_s"] = data["seconds"]
        with self.journal.transaction() as db:
            db.execute("UPDATE jobs SET scenes = ?, steps = ?, timings = ?, scene_index = ?, scene_total = ?,"
                       " updated_at = ? WHERE id = ?",
                       (json.dumps(run.scenes), json.dumps(run.steps), json.dumps(run.timings), run.scene_index,
                        run.scene_total, wall, run.job.id))
            self.journal.add_event(db, run.job.id, kind, data, wall)
        self._wake()

    def _wake(self) -> None:
        """Wake whoever waits for events or state changes."""
        with self._cond:
            self._cond.notify_all()

    def _finish(self, run: _Run, state: str, *, error: str | None = None, detail: str | None = None,
                output: Path | None = None, result: dict | None = None, keep_files: bool = False) -> None:
        job = run.job
        now = time.time()
        run.timings["run_s"] = round(time.perf_counter() - run.started, 3)
        if state == "failed":
            log.warning("job %s failed: %s", job.id, error)
            # the user's message names files inside their project, not where the server keeps them
            error = (error or "").replace(f"{job.project_dir}{os.sep}", "").replace(str(self.data_dir), "<data folder>")
            if detail:
                log.info("job %s details:\n%s", job.id, detail)
        # Files first, the journal last: a crash in between leaves a job that is still `running`, resumed next time.
        if state in ("failed", "canceled") and not keep_files:
            self._discard_files(job)
        else:
            sweep_temp(job.project_dir)
        data: dict[str, Any] = {"state": state}
        if error:
            data["error"] = error
        if result:
            data["video"] = result
        with self._cond:
            with self.journal.transaction() as db:
                if state == "interrupted":
                    db.execute("UPDATE jobs SET state = 'interrupted', timings = ?, updated_at = ? WHERE id = ?",
                               (json.dumps(run.timings), now, job.id))
                else:
                    db.execute(
                        "UPDATE jobs SET state = ?, error = ?, error_detail = ?, output = ?, result = ?, timings = ?,"
                        " percent = CASE WHEN ? = 'done' THEN 100 ELSE percent END, finished_at = ?, updated_at = ?"
                        " WHERE id = ?",
                        (state, error, detail,
                         output.relative_to(self.data_dir).as_posix() if output is not None else None,
                         json.dumps(result) if result else None, json.dumps(run.timings), state, now, now, job.id))
                self.journal.add_event(db, job.id, state, data, now)
            self._save_record(job.id)  # before anyone waiting for the end wakes
            self._cond.notify_all()

    def _discard_files(self, job: Job) -> None:
        """A failed or canceled job's temporary files, assets and renders (its project.json stays, for the record)."""
        folder = job.project_dir
        if not folder.is_dir() or folder.is_symlink():
            return
        sweep_temp(folder)
        for name in ("assets", "renders"):
            target = folder / name
            if target.is_symlink():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target, ignore_errors=True)

    # -- disk hygiene ----------------------------------------------------------------------------------------------
    def _janitor(self) -> None:
        """Apply the retention policy every `Retention.sweep_every_s`, and back the journal up (checking it first)
        every `backup_every_s`."""
        next_sweep = time.monotonic()
        next_backup = next_sweep + self.backup_every_s
        while not self._closing:
            now = time.monotonic()
            if now >= next_sweep:
                try:
                    self.expire()
                except Exception:
                    log.exception("applying the retention policy failed")
                next_sweep = now + self.retention.sweep_every_s
            if now >= next_backup:
                self._backup_quietly()
                next_backup = now + self.backup_every_s
            self._janitor_wake.wait(max(0.0, min(next_sweep, next_backup) - time.monotonic()))

    def backup_journal(self) -> Path:
        """Back the journal up now (``studio.db.bak`` in the data folder, atomically; `Journal.backup`); the
        server does this every `backup_every_s` and when it stops.

        Raises:
            JournalDamaged: the journal failed its check (the previous backup is kept); DiskFull: no room for it.
        """
        return self.journal.backup()

    def _backup_quietly(self) -> None:
        try:
            if self.journal.changed_since_backup or not (self.data_dir / BACKUP_FILE).is_file():
                self.journal.backup()
        except Exception as exc:  # a damaged journal or a full disk: the previous backup stays, the log says why
            log.error("the journal's backup was not refreshed: %s", exc)

    def expire(self, now: float | None = None) -> list[str]:
        """Apply the retention policy now: remove the folders of jobs that ended more than `Retention.max_age_s`
        ago, then the oldest finished renders while all renders take more than `Retention.max_total_bytes`, then old
        uploads no waiting or running job uses; returns the ids of the jobs whose files were removed."""
        now = time.time() if now is None else now
        policy = self.retention
        expired: list[str] = []
        rows = self.journal.query("SELECT id, owner, finished_at, project FROM jobs WHERE state IN ('done', 'failed',"
                                  " 'canceled') AND expired = 0 ORDER BY finished_at")
        keep = []
        for row in rows:
            if policy.max_age_s is not None and row["finished_at"] is not None and row["finished_at"] < now - policy.max_age_s:
                expired.append(row["id"])
            else:
                keep.append(row)
        if policy.max_total_bytes is not None:
            sizes = [(row, _folder_bytes(self.data_dir / row["project"])) for row in keep]
            total = sum(size for _, size in sizes)
            for row, size in sizes:  # oldest first
                if total <= policy.max_total_bytes:
                    break
                expired.append(row["id"])
                total -= size
        for job_id in expired:
            row = self.journal.query("SELECT project FROM jobs WHERE id = ?", (job_id,))[0]
            folder = self.data_dir / row["project"]
            if folder.is_symlink():
                folder.unlink()
            elif folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            stamp = time.time()
            with self.journal.transaction() as db:
                db.execute("UPDATE jobs SET expired = 1, output = NULL, updated_at = ? WHERE id = ?", (stamp, job_id))
                self.journal.add_event(db, job_id, "expired", {"message": "its files were removed by the retention "
                                                                          "policy"}, stamp)
        if policy.upload_max_age_s is not None:
            in_use = set()
            for row in self.journal.query("SELECT request FROM jobs WHERE state IN ('queued', 'interrupted', 'running')"):
                in_use.update(request_upload_ids(json.loads(row["request"])))
            # (not the temporary files: an upload may be under way; the start's sweep removes a crash's)
            self.uploads.sweep(older_than_s=policy.upload_max_age_s, keep=in_use, now=now, temp=False)
        return expired
