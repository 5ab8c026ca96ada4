"""The limits of what a request may ask for, checked by every face before any work, and the disk a render needs."""

import math
from dataclasses import dataclass
from typing import Any

from .journal import RequestError

WORDS_PER_S = 2.5  # speaking rate for estimates before narration (150 words a minute)


# -- limits ------------------------------------------------------------------------------------------------------------
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


# -- limits of text and projects, for every face --------------------------------------------------------------------------
def speech_s(text: str) -> float:
    """Seconds it takes to say `text` at `WORDS_PER_S`."""
    return len(text.split()) / WORDS_PER_S


def script_scene_count(script: str) -> int:
    """How many scenes the offline writer cuts `script` into (cheap: no prompts are made); 0 if it has no narration."""
    from ..storyboard.rules import MAX_SCENE_SENTENCES, MAX_SCENE_WORDS, MIN_SCENE_WORDS
    from ..storyboard.text import read_markdown, scene_spans

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
        estimate = speech_s(source)
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
        if scene.recording and scene.duration_s is None and (scene.audio_duration_s or 0) > limits.max_scene_s:
            raise RequestError(f"scene {number}'s recording lasts {scene.audio_duration_s:.0f} s; this server's limit "
                               f"is {limits.max_scene_s:g} s a scene: split it over several scenes",
                               field=f"scenes[{number - 1}].recording")
    pad = (preset.lead_s + preset.tail_s) if preset is not None else 0.0
    estimate = sum(s.duration_s if s.duration_s is not None else (s.audio_duration_s or speech_s(s.narration)) + pad
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


# -- disk space ---------------------------------------------------------------------------------------------------------
# Disk space a render needs (`estimate_render_bytes`): the audio mix's temporary float32 stereo samples at 48 kHz
# (studio.compose.audio writes them all before encoding), the narration's WAV files, the video at a generous
# compressed size (segments and the joined MP4 exist at once), a still per scene at full size, and a margin.
AUDIO_MIX_BYTES_PER_S = 384_000
NARRATION_BYTES_PER_S = 96_000
VIDEO_BITS_PER_PIXEL = 0.15
SECONDS_PER_SCENE = 8.0  # a script's or a brief's scenes, before the storyboard is written
BRIEF_GUESS_S = 60.0  # a brief's length is the writer's choice
SPACE_MARGIN_BYTES = 20_000_000


def estimate_render_bytes(request: Any, preset: Any) -> int:
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
