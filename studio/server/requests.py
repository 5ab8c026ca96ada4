"""The one request schema: what a render job may ask for, checked the same way by every face.

`request_models` builds the pydantic models (`JobIn`, `SceneIn`) for a server's limits, presets and providers; the
HTTP API declares them as its request body (so the OpenAPI document is complete), and `parse_request` (which the job
runner calls for every submission, whatever face it came from: the HTTP API, the studio app, ``studio jobs``, Python)
validates with the very same models, then applies the checks that span fields (exactly one source, the frame size,
the length estimate, a script's scene count). An error names its field the same way everywhere
(``storyboard[2].duration_s``) with the same words: `describe_error` turns a pydantic error into both.
"""


import functools
import hashlib
import json
import math
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import StudioError
from .journal import ID_RE, NotFound, RequestError
from .limits import (WORDS_PER_S, Limits, check_project_limits, check_source_limits, estimate_render_bytes,
                     script_scene_count, speech_s)

ASPECTS = ("16:9", "9:16", "1:1")
PROVIDER_KINDS = {"writer": "storyboard", "narrator": "narrator", "painter": "painter"}
SCENE_FIELDS = ("id", "narration", "visual_prompt", "duration_s", "seed", "media", "transition", "recording")
SEED_MAX = 2**31 - 1


# -- field checks, with the words every face answers with ---------------------------------------------------------------
UPLOAD_MISSING = "upload_missing"  # the error type of an upload id that names no upload (answered 404, not 422)


def _fail(message: str, kind: str = "studio"):
    from pydantic_core import PydanticCustomError

    # The message is complete: with no context, braces in a user's value are never read as placeholders.
    return PydanticCustomError(kind, message)


def bad_char(value: str) -> tuple[int, str] | None:
    """The first control character or unpaired surrogate in `value` (tab and newlines are fine), or None."""
    for i, c in enumerate(value):
        if (c < " " and c not in "\n\r\t") or c == "\x7f" or unicodedata.category(c) == "Cs":
            return i, c
    return None


def _text(max_chars: int):
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _fail(f"must be a string, got {type(value).__name__}")
        if len(value) > max_chars:
            raise _fail(f"is {len(value):,} characters long; this server's limit is {max_chars:,}")
        bad = bad_char(value)
        if bad is not None:
            raise _fail(f"holds a control character or an unpaired surrogate (U+{ord(bad[1]):04X}) at position {bad[0]}")
        return value

    return check


def _number(lo: float, hi: float):
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(f"must be a number, got {value!r}"[:200])
        if not lo <= value <= hi:
            raise _fail(f"must be between {lo:g} and {hi:g}, got {value!r}")
        return float(value)

    return check


def _int(lo: int, hi: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(f"must be a whole number, got {value!r}"[:200])
        if not lo <= value <= hi:
            raise _fail(f"must be between {lo} and {hi}, got {value}")
        return value

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"must be true or false, got {value!r}"[:200])
    return value


def _choice(choices: tuple[str, ...]):
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _fail(f"must be one of {', '.join(choices)}, got {value!r}"[:300])
        return value

    return check


def _upload_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"must be an upload id (from POST /api/uploads), got {type(value).__name__}")
    if not ID_RE.match(value):  # a malformed id names nothing, like a wrong one: 404
        raise _fail(f"names no upload: no upload with id {value[:80]!r}", UPLOAD_MISSING)
    return value


def _job_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"must be a job id (from POST /api/jobs), got {type(value).__name__}")
    if not ID_RE.match(value):  # a malformed id names no job: 404, like a wrong one
        raise _fail(f"names no job: no job with id {value[:80]!r}", UPLOAD_MISSING)
    return value


def voice_ok(voice: str) -> bool:
    """A voice *name* (``en-us``, ``en_US-joe-medium``, Bark's ``v2/en_speaker_6``), never a file: no dots, at most one
    '/' between two name parts."""
    parts = voice.split("/")
    return len(parts) <= 2 and all(part and part[0].isalnum() and all(c.isascii() and (c.isalnum() or c in "_-+")
                                                                       for c in part) for part in parts)


def _voice(value: Any) -> str:
    value = _text(64)(value)
    if not voice_ok(value):
        raise _fail(f"must be a voice name (letters, digits, '_', '-', '+', one '/' as in v2/en_speaker_6), got {value!r}")
    return value


def _language(value: Any) -> str:
    value = _text(16)(value)
    parts = value.replace("_", "-").split("-")
    if not (2 <= len(parts[0]) <= 3 and parts[0].isascii() and parts[0].isalpha()
            and all(1 <= len(p) <= 8 and p.isascii() and p.isalnum() for p in parts[1:])):
        raise _fail(f"must be a language code like 'en' or 'pt-br', got {value!r}")
    return value


def _scene_id(value: Any) -> str:
    from ..project import _ID_RE

    value = _text(40)(value)
    if not _ID_RE.match(value):
        raise _fail("must be 1-40 letters, digits, '-' or '_', unique in the storyboard")
    return value


def _scenes(max_scenes: int):
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise _fail("must be a list of scenes")
        if not value:
            raise _fail("is empty: give at least one scene")
        if len(value) > max_scenes:
            raise _fail(f"has {len(value)} scenes; this server's limit is {max_scenes}")
        return value

    return check


def _object(what: str):
    def check(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _fail(f"must be {what}")
        return dict(value)

    return check


# -- the models --------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def request_models(limits: Limits, presets: tuple[str, ...], writers: tuple[str, ...], narrators: tuple[str, ...],
                   painters: tuple[str, ...]) -> tuple[type, type]:
    """The pydantic models of a job request (`JobIn`) and of one storyboard scene (`SceneIn`) for a server's `limits`,
    preset names and provider names (each provider tuple holds ``auto`` first)."""
    from typing import Annotated

    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

    from ..compose.captions import STYLES
    from ..compose.timeline import TRANSITIONS

    strict = ConfigDict(extra="forbid", strict=True)
    plain = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # for the document; the checks above are the rule

    def text(limit: int, **extra: Any):
        return Annotated[str, Field(max_length=limit, pattern=plain, **extra), BeforeValidator(_text(limit))]

    def choice(options: tuple[str, ...]):
        from typing import Literal

        return Annotated[Literal[options], BeforeValidator(_choice(options))]  # type: ignore[valid-type]

    def upload(what: str):
        return Annotated[str, Field(pattern=ID_RE.pattern, description=f"an upload id ({what})"),
                         BeforeValidator(_upload_id)]

    # The field types, named first (each carries its document constraints and the check with Studio's words).
    Writer, Narrator, Painter = choice(writers), choice(narrators), choice(painters)
    Narration, Prompt = text(limits.max_narration_chars), text(limits.max_prompt_chars)
    Script = text(limits.max_script_chars, min_length=1,
                  description="a script to narrate as written (Markdown or plain text)")
    Brief = text(limits.max_brief_chars, min_length=1, description="a short request to write about")
    Short = text(limits.max_text_chars)
    SceneId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$"), BeforeValidator(_scene_id)]
    Duration = Annotated[float, Field(ge=0.2, le=limits.max_scene_s), BeforeValidator(_number(0.2, limits.max_scene_s))]
    Seed = Annotated[int, Field(ge=0, le=SEED_MAX), BeforeValidator(_int(0, SEED_MAX))]
    Volume = Annotated[float, Field(ge=0.0, le=1.0), BeforeValidator(_number(0.0, 1.0))]
    Flag = Annotated[bool, BeforeValidator(_bool)]
    Language = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$", max_length=16),
                         BeforeValidator(_language)]
    Voice = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_+-]*(/[A-Za-z0-9][A-Za-z0-9_+-]*)?$", max_length=64),
                      BeforeValidator(_voice)]
    Media, Music = upload("image or video"), upload("audio")
    Recording = upload("audio: your own narration of the scene")
    Watermark, Font = upload("image"), upload("font: TTF or OTF")
    EarlierJob = Annotated[str, Field(pattern=ID_RE.pattern, description="an earlier job of yours (its id) whose "
                                      "narrations, pictures and video segments this render reuses where they match"),
                           BeforeValidator(_job_id)]
    Preset, Aspect = choice(presets), choice(ASPECTS)
    Transition, CaptionStyle = choice(tuple(TRANSITIONS)), choice(tuple(STYLES))

    class ProvidersIn(BaseModel):
        """Providers of the steps; ``auto`` picks by the preset's preferences."""

        model_config = strict
        writer: Optional[Writer] = None
        narrator: Optional[Narrator] = None
        painter: Optional[Painter] = None

    class SceneIn(BaseModel):
        """One scene: narration (or a fixed duration for a silent scene), what it shows, optional media, and optionally
        your own recording of its narration (an audio upload; its words are timed to `narration`)."""

        model_config = strict
        id: Optional[SceneId] = None
        narration: Narration = ""
        visual_prompt: Prompt = ""
        duration_s: Optional[Duration] = None
        seed: Seed = 0
        media: Optional[Media] = None
        transition: Optional[Transition] = None
        recording: Optional[Recording] = None

    Scenes = Annotated[list[Annotated[SceneIn, BeforeValidator(_object("an object with `narration`"))]],
                       Field(min_length=1, max_length=limits.max_scenes), BeforeValidator(_scenes(limits.max_scenes))]
    Providers = Annotated[ProvidersIn, BeforeValidator(_object('an object like {"narrator": "espeak", "painter": "cards"}'))]

    class JobIn(BaseModel):
        """What to render: exactly one of `script`, `brief` or `storyboard`, and how."""

        model_config = strict
        script: Optional[Script] = None
        brief: Optional[Brief] = None
        storyboard: Optional[Scenes] = None
        preset: Preset = "draft" if "draft" in presets else presets[0]
        aspect: Aspect = "16:9"
        title: Optional[Short] = None
        style: Optional[Short] = None
        language: Optional[Language] = None
        voice: Optional[Voice] = None
        seed: Optional[Seed] = None
        providers: Optional[Providers] = None
        captions: Optional[Flag] = None
        caption_style: Optional[CaptionStyle] = None
        music: Optional[Music] = None
        music_volume: Optional[Volume] = None
        watermark: Optional[Watermark] = None
        caption_font: Optional[Font] = None
        project: Optional[EarlierJob] = None

    return JobIn, SceneIn


def models_for(limits: Limits, presets: Mapping[str, Any]) -> tuple[type, type]:
    """`request_models` for a server's limits and presets, with the providers registered now."""
    from .. import providers

    return request_models(limits, tuple(presets), ("auto", *providers.names("storyboard")),
                          ("auto", *providers.names("narrator")),
                          ("auto", *[p for p in providers.names("painter") if p != "local"]))


# -- errors, the same words from every face ----------------------------------------------------------------------------
def field_of(loc: Any) -> str:
    """``("body", "storyboard", 2, "duration_s")`` -> ``storyboard[2].duration_s``; headers and parameters by name."""
    parts = [p for p in (loc or ()) if not (isinstance(p, str) and p.startswith("function-"))]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        kind = parts.pop(0)
        if kind != "body" and parts:
            return str(parts[0])
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def describe_error(error: Mapping[str, Any]) -> tuple[str, str]:
    """(field, message) of one pydantic error, in the words every face answers with."""
    field = field_of(error.get("loc"))
    kind = error.get("type")
    if kind == "json_invalid":
        return "body", "the body is not valid JSON"
    if kind in ("model_type", "model_attributes_type", "dict_type") and field == "body":
        return "body", "the request must be a JSON object with `script`, `brief` or `storyboard`"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return field, f"`{field}` must be an object"
    if kind == "extra_forbidden":
        return field[:80], f"`{field[:80]}` is an unknown field; allowed here: {_allowed(field)}"
    if kind == "missing":
        return field, f"`{field}` is required"
    return field, f"`{field}` {error.get('msg', 'is not valid')}"


def _allowed(field: str) -> str:
    if field.startswith("storyboard["):
        return ", ".join(SCENE_FIELDS)
    if field.startswith("providers."):
        return ", ".join(PROVIDER_KINDS)
    return ", ".join(sorted([*JOB_FIELDS, "providers"]))


# -- the checked request -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneRequest:
    """One scene of a storyboard request (``media`` and ``recording`` are upload ids)."""

    narration: str = ""
    visual_prompt: str = ""
    duration_s: float | None = None
    seed: int = 0
    media: str | None = None
    transition: str | None = None
    id: str | None = None
    recording: str | None = None


@dataclass(frozen=True)
class JobRequest:
    """What to render, checked (`parse_request`): exactly one of `script`, `brief` or `storyboard`, and how.

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
        project: An earlier job of the same user: this render starts from its assets (narrations, pictures, video
            segments, soundtrack), so after an edit of one scene only what the edit touched is made again.
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
    project: str | None = None

    @property
    def source(self) -> str:
        """Which of script, brief or storyboard the request holds."""
        return "script" if self.script is not None else "brief" if self.brief is not None else "storyboard"

    def to_dict(self) -> dict:
        """The request as plain JSON data (`parse_request` reads it back)."""
        data = asdict(self)
        if self.storyboard is not None:
            data["storyboard"] = [{k: v for k, v in asdict(s).items() if v is not None} for s in self.storyboard]
        data["providers"] = {k: data.pop(k) for k in PROVIDER_KINDS}
        return {k: v for k, v in data.items() if v is not None}

    def upload_ids(self) -> list[tuple[str, str]]:
        """(field, upload id) of every upload the request names."""
        ids = [("music", self.music), ("watermark", self.watermark), ("caption_font", self.caption_font)]
        for i, scene in enumerate(self.storyboard or ()):
            ids.append((f"storyboard[{i}].media", scene.media))
            ids.append((f"storyboard[{i}].recording", scene.recording))
        return [(f, u) for f, u in ids if u is not None]

    def fingerprint(self) -> str:
        """sha256 of the request's canonical JSON (an idempotency key must come back with the same request)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Any, *, limits: Limits | None = None,
                  presets: Mapping[str, str | Path] | None = None) -> "JobRequest":
        """`parse_request` (kept for callers of the job runner's first API)."""
        return parse_request(data, limits=limits, presets=presets)

    def estimated_duration_s(self, preset: Any) -> float:
        """The video's length estimated from its text (before narration)."""
        pad = preset.lead_s + preset.tail_s
        if self.storyboard is not None:
            return sum(s.duration_s if s.duration_s is not None else speech_s(s.narration) + pad
                       for s in self.storyboard)
        if self.script is not None:
            return speech_s(self.script)
        return 0.0  # a brief's length is the writer's choice; checked after the storyboard is written


JOB_FIELDS = tuple(f for f in JobRequest.__dataclass_fields__ if f not in PROVIDER_KINDS)


def tier_presets() -> dict[str, str]:
    """The built-in tiers, name -> name (a server's default presets)."""
    from ..presets import available_presets

    return {name: name for name in available_presets()}


def parse_request(data: Any, *, limits: Limits | None = None,
                  presets: Mapping[str, str | Path] | None = None) -> JobRequest:
    """Check a request (JSON data) against `limits` and the server's `presets` (name -> file; default the tiers).

    The fields are checked by the models of `request_models` (the HTTP API's body), then what spans fields: exactly
    one source, the frame size of the preset at the aspect, a scene's narration or duration, unique scene ids, the
    length estimate and a script's scene count after splitting.

    Raises:
        RequestError: naming the field (``storyboard[2].duration_s``) and, for a limit, the limit. NotFound: a
            malformed upload id (it names no upload, like a wrong one).
    """
    from pydantic import ValidationError

    from ..presets import load_preset

    limits = limits or Limits()
    presets = dict(presets) if presets is not None else tier_presets()
    job_model, _ = models_for(limits, presets)

    # 1. Every field on its own.
    try:
        checked = job_model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field, message = describe_error(first)
        if first.get("type") == UPLOAD_MISSING:
            raise NotFound(message, field=field) from None
        raise RequestError(message, field=field) from None

    # 2. The source: exactly one of script, brief, storyboard.
    given = [k for k in ("script", "brief", "storyboard") if getattr(checked, k) is not None]
    if len(given) != 1:
        raise RequestError("give exactly one of `script`, `brief` or `storyboard`" +
                           (f", not {' and '.join(given)}" if given else ""), field=given[1] if given else "script")
    for name in ("script", "brief"):
        value = getattr(checked, name)
        if value is not None and not value.strip():
            raise RequestError(f"`{name}` is empty", field=name)
    storyboard = None
    if checked.storyboard is not None:
        storyboard = tuple(_scene(i, scene, limits) for i, scene in enumerate(checked.storyboard))
        ids = [s.id for s in storyboard if s.id is not None]
        for i, scene in enumerate(storyboard):
            if scene.id is not None and ids.count(scene.id) > 1:
                raise RequestError(f"`storyboard[{i}].id` must be 1-40 letters, digits, '-' or '_', unique in the "
                                   "storyboard", field=f"storyboard[{i}].id")

    # 3. The frame size of the preset at the aspect.
    preset = load_preset(presets[checked.preset])
    width, height = preset.size(checked.aspect)
    if width * height > limits.max_pixels:
        raise RequestError(f"preset {checked.preset!r} at {checked.aspect} is {width}x{height}, over this server's "
                           f"limit of {limits.max_pixels:,} pixels a frame; choose a smaller preset", field="preset")

    chosen = checked.providers.model_dump(exclude_none=True) if checked.providers is not None else {}
    request = JobRequest(
        script=checked.script, brief=checked.brief, storyboard=storyboard, preset=checked.preset,
        aspect=checked.aspect, title=checked.title, style=checked.style or "", language=checked.language or "en",
        voice=checked.voice, seed=checked.seed if checked.seed is not None else 0, **chosen,
        captions=True if checked.captions is None else checked.captions,
        caption_style=checked.caption_style or "bold", music=checked.music,
        music_volume=0.15 if checked.music_volume is None else checked.music_volume,
        watermark=checked.watermark, caption_font=checked.caption_font, project=checked.project,
    )

    # 4. Length, estimated before anything is made; a script is split now, so too many scenes are refused here.
    if request.script is not None:
        check_source_limits(request.script, "script", limits)
    estimate = request.estimated_duration_s(preset)
    if estimate > limits.max_video_s:
        raise RequestError(f"the video would last about {estimate:.0f} s (at {WORDS_PER_S * 60:.0f} words a "
                           f"minute), over this server's limit of {limits.max_video_s:.0f} s; shorten the "
                           f"{request.source}", field=request.source)
    return request


def _scene(index: int, scene: Any, limits: Limits) -> SceneRequest:
    where = f"storyboard[{index}]"
    if not scene.narration.strip() and scene.duration_s is None and scene.recording is None:
        raise RequestError(f"`{where}` has no narration and no duration_s (nor a recording): give it one of them",
                           field=f"{where}.narration")
    if scene.duration_s is None and speech_s(scene.narration) > limits.max_scene_s:
        raise RequestError(f"`{where}.narration` would take about {speech_s(scene.narration):.0f} s to say, over the "
                           f"limit of {limits.max_scene_s:.0f} s a scene; split it", field=f"{where}.narration")
    return SceneRequest(narration=scene.narration, visual_prompt=scene.visual_prompt, duration_s=scene.duration_s,
                        seed=scene.seed, media=scene.media, transition=scene.transition, id=scene.id,
                        recording=scene.recording)


__all__ = ["estimate_render_bytes", "Limits", "JobRequest", "SceneRequest", "parse_request", "request_models", "models_for",
           "describe_error", "field_of", "check_source_limits", "check_project_limits", "script_scene_count",
           "speech_s", "voice_ok", "StudioError"]
