"""The Timeline: everything a render needs, as plain frozen data built from a project and a preset.

Timing rule. A scene lasts ``L = duration_s`` if set, else ``lead_s + audio_duration_s + tail_s``. Scene i+1 starts
``T`` seconds before scene i ends, where ``T`` is the transition into scene i+1 (the preset's ``transition_s``; 0 for
``cut``; capped at half of either scene so no three scenes ever overlap). Narration plays from ``start + lead_s``;
when a fixed duration leaves it too little room it is trimmed with a short fade (and a note says so). The video ends
where the last scene ends; its frame count is ``round(duration_s * fps)``.

Everything visual sits on whole frames: ``L`` and ``T`` are rounded to whole frames (so every scene starts on a frame),
and each caption is shown from a frame to a frame (its times are half a frame before them, which every clock rounds
the same way: see `on_frames`). So a scene looks the same whatever comes before it: an edit that makes one scene
longer moves the scenes after it by whole frames and leaves their pictures untouched, which is what lets a re-render
reuse their video segments (`studio.compose.segments`).

Nothing here renders or reads media: `build_timeline` only checks that files exist, and everything it decides (Ken
Burns moves, transitions, caption lines) is deterministic, so the same project always gives the same timeline.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Sequence

from ..errors import StudioError
from ..media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..presets import Preset
from ..project import Project, Scene
from .captions import (CaptionEvent, CaptionLayout, TimedWord, caption_events, caption_layout, caption_notes,
                       no_overlaps, spread_words)

if TYPE_CHECKING:
    import pandas as pd

TRANSITIONS = ("crossfade", "fade", "wipe", "slide", "cut")
# The automatic choice per scene (deterministic from the scene's id and seed): mostly crossfades.
AUTO_TRANSITIONS = (("crossfade", 0.7), ("fade", 0.1), ("wipe", 0.1), ("slide", 0.1))
MOTIONS = ("zoom_in", "zoom_out", "pan_right", "pan_left", "pan_down", "still")
NARRATION_FADE_S = 0.15  # fade-out of a narration trimmed by a fixed scene duration
DUCK_GAIN = 0.3  # music level under narration, relative to its level in the gaps (about -10 dB)
# The duck's raised-cosine ramps: down fast enough that a voice's first syllable is clear (120 ms before it starts),
# up slowly enough not to pump (450 ms after it ends); gaps under `studio.compose.audio.DUCK_HOLD_S` stay ducked.
DUCK_ATTACK_S = 0.12
DUCK_RELEASE_S = 0.45


@dataclass(frozen=True)
class Rect:
    """A rectangle of a scene's fitted picture (the source cover-cropped to the frame's aspect ratio), as fractions of
    that picture's width and height: ``x, y`` top-left, ``w, h`` size. Ken Burns rectangles keep the frame's aspect
    ratio, so ``w == h``."""

    x: float
    y: float
    w: float
    h: float

    def lerp(self, other: "Rect", amount: float) -> "Rect":
        return Rect(*(a + (b - a) * amount for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)

    def inside_unit(self, eps: float = 1e-9) -> bool:
        return (-eps <= self.x and -eps <= self.y and self.w > 0 and self.h > 0
                and self.x + self.w <= 1 + eps and self.y + self.h <= 1 + eps)


FULL = Rect(0.0, 0.0, 1.0, 1.0)


def ease(progress: float) -> float:
    """Gentle ease-in-out: half linear, half cosine, so motion starts and ends softly but never stops (monotonic,
    peak speed 1.29x the average)."""
    p = min(max(progress, 0.0), 1.0)
    return 0.5 * p + 0.25 * (1.0 - math.cos(math.pi * p))


@dataclass(frozen=True)
class Transition:
    """How a segment enters: ``crossfade``, ``fade`` (through black), ``wipe``, ``slide`` or ``cut``."""

    kind: str
    duration_s: float


@dataclass(frozen=True)
class Segment:
    """One scene on the timeline.

    Attributes:
        scene_id: The scene's id.
        scene_number: The scene's 1-based position in the project (for messages).
        source: The scene's image or clip.
        kind: ``image`` or ``video``.
        start_s: When the segment starts (it overlaps the previous one by `transition.duration_s`).
        duration_s: How long it is visible, transitions included.
        motion: The Ken Burns move's name (``still`` for clips).
        ken_burns: Start and end rectangles of the move (see `Rect`); equal for clips.
        transition: The transition into this segment.
    """

    scene_id: str
    scene_number: int
    source: Path
    kind: str
    start_s: float
    duration_s: float
    motion: str
    ken_burns: tuple[Rect, Rect]
    transition: Transition

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def progress(self, time_s: float) -> float:
        """0..1: how far into the segment `time_s` (video clock) is."""
        return min(max((time_s - self.start_s) / self.duration_s, 0.0), 1.0)

    def rect_at(self, progress: float) -> Rect:
        """The Ken Burns rectangle at `progress` (0..1), eased."""
        start, end = self.ken_burns
        return start.lerp(end, ease(progress))


@dataclass(frozen=True)
class NarrationTrack:
    """A scene's narration on the video's clock: `path` plays from `offset_s` for `duration_s` seconds."""

    scene_id: str
    path: Path
    offset_s: float
    duration_s: float
    source_duration_s: float
    fade_out_s: float = 0.0


@dataclass(frozen=True)
class MusicTrack:
    """Background music looped to the video's length at `volume`, lowered to ``volume * duck_gain`` under narration."""

    path: Path
    volume: float
    duck_gain: float = DUCK_GAIN
    attack_s: float = DUCK_ATTACK_S
    release_s: float = DUCK_RELEASE_S


@dataclass(frozen=True)
class Watermark:
    """A logo drawn in a corner of every frame: `width_frac` of the frame's width, `margin_frac` from the edges."""

    path: Path
    corner: str = "top-right"
    width_frac: float = 0.12
    margin_frac: float = 0.03
    opacity: float = 0.85


@dataclass(frozen=True)
class Timeline:
    """Everything a render needs (see the module docstring for the timing rule)."""

    width: int
    height: int
    fps: int
    duration_s: float
    segments: tuple[Segment, ...]
    captions: tuple[CaptionEvent, ...]
    caption_layout: CaptionLayout | None
    narration: tuple[NarrationTrack, ...]
    music: MusicTrack | None
    watermark: Watermark | None
    encoder: str
    encoder_args: tuple[str, ...]
    audio_bitrate_kbps: int
    sample_rate: int
    loudness_lufs: float
    preset: str = ""
    notes: tuple[str, ...] = field(default=())
    # Where the frames are made (`studio.compose.gpu.resolve_device`): "cpu", "cuda" or "tensor-cpu", and the words
    # for it ("GPU compose: NVIDIA H200, hevc_nvenc p6"). Not part of a segment's key: both renderers make the same
    # frames to within rounding (PSNR >= 40 dB, tests/test_gpu_compose.py).
    compose_device: str = "cpu"
    compose_label: str = ""
    # What the encoder needs before the first input (a VAAPI device: `Preset.encoder_input_args`); usually empty.
    encoder_input_args: tuple[str, ...] = field(default=())

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def frame_count(self) -> int:
        return int(round(self.duration_s * self.fps))

    def to_rows(self) -> list[dict]:
        """One dict per segment (timing, source, motion, transition, narration, caption count), for a table."""
        narration = {n.scene_id: n for n in self.narration}
        rows = []
        for seg in self.segments:
            voice = narration.get(seg.scene_id)
            start_rect, end_rect = seg.ken_burns
            rows.append({
                "scene": seg.scene_number,
                "id": seg.scene_id,
                "start_s": round(seg.start_s, 3),
                "end_s": round(seg.end_s, 3),
                "duration_s": round(seg.duration_s, 3),
                "kind": seg.kind,
                "source": seg.source.name,
                "transition": seg.transition.kind,
                "transition_s": round(seg.transition.duration_s, 3),
                "motion": seg.motion,
                "ken_burns_start": tuple(round(v, 4) for v in start_rect.as_tuple()),
                "ken_burns_end": tuple(round(v, 4) for v in end_rect.as_tuple()),
                "narration_at_s": round(voice.offset_s, 3) if voice else None,
                "narration_s": round(voice.duration_s, 3) if voice else None,
                # Captions, not events: karaoke shows each caption as one event per word, all with its lines.
                "captions": sum(1 for i, c in enumerate(self.captions) if c.scene_id == seg.scene_id and not (
                    i and c.highlight and self.captions[i - 1].lines == c.lines
                    and self.captions[i - 1].scene_id == c.scene_id)),
            })
        return rows

    def to_dataframe(self) -> "pd.DataFrame":
        """`to_rows` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.to_rows())


def _unit_floats(*parts: object, count: int = 4) -> list[float]:
    """`count` deterministic numbers in [0, 1) from `parts` (the same scene always moves the same way)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return [int.from_bytes(digest[4 * i:4 * i + 4], "big") / 2**32 for i in range(count)]


def choose_transition(scene: Scene, number: int | None = None) -> str:
    """The transition into `scene`: the one it names, or a deterministic automatic choice (mostly crossfade)."""
    if scene.transition is not None:
        name = str(scene.transition).strip().lower()
        if name not in TRANSITIONS:
            where = _where(scene, number) if number is not None else f"scene {scene.id!r}"
            raise StudioError(f"{where}: `transition` must be one of {', '.join(TRANSITIONS)} "
                              f"or empty for an automatic choice, got {scene.transition!r}")
        return name
    r = _unit_floats("transition", scene.id, scene.seed)[0]
    acc = 0.0
    for name, weight in AUTO_TRANSITIONS:
        acc += weight
        if r < acc:
            return name
    return AUTO_TRANSITIONS[0][0]


def choose_motion(scene: Scene, amount: float) -> tuple[str, Rect, Rect]:
    """A deterministic Ken Burns move for a still: zoom in or out around a focus point, or a slow pan.

    `amount` is the preset's ``ken_burns``: the zoom (0.08 = the picture is 8 % larger at the tight end).
    """
    if amount <= 0:
        return "still", FULL, FULL
    r_kind, r_x, r_y, _ = _unit_floats("motion", scene.id, scene.seed)
    s = 1.0 / (1.0 + amount)  # the tight rectangle's size
    focus_x, focus_y = 0.3 + 0.4 * r_x, 0.3 + 0.4 * r_y
    tight = Rect(min(max(focus_x - s / 2, 0.0), 1.0 - s), min(max(focus_y - s / 2, 0.0), 1.0 - s), s, s)
    if r_kind < 0.4:
        return "zoom_in", FULL, tight
    if r_kind < 0.7:
        return "zoom_out", tight, FULL
    mid = (1.0 - s) / 2
    if r_kind < 0.82:
        return "pan_right", Rect(0.0, mid, s, s), Rect(1.0 - s, mid, s, s)
    if r_kind < 0.94:
        return "pan_left", Rect(1.0 - s, mid, s, s), Rect(0.0, mid, s, s)
    return "pan_down", Rect(mid, 0.0, s, s), Rect(mid, 1.0 - s, s, s)


def _where(scene: Scene, number: int) -> str:
    return f"scene {number} (id {scene.id})"


def _visual_kind(scene: Scene, number: int) -> str:
    if scene.visual is None:
        raise StudioError(f"{_where(scene, number)} has no visual: run illustrate first")
    path = Path(scene.visual)
    if not path.is_file():
        raise StudioError(f"{_where(scene, number)}: its visual {path} does not exist; run illustrate again")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise StudioError(f"{_where(scene, number)}: its visual {path.name} is neither an image "
                      f"({', '.join(sorted(IMAGE_SUFFIXES))}) nor a clip ({', '.join(sorted(VIDEO_SUFFIXES))})")


def _scene_length(scene: Scene, number: int, preset: Preset) -> float:
    if scene.audio is not None:
        if not Path(scene.audio).is_file():
            raise StudioError(f"{_where(scene, number)}: its narration {scene.audio} does not exist; run narrate again")
        if scene.audio_duration_s is None or not scene.audio_duration_s > 0:
            raise StudioError(f"{_where(scene, number)}: its narration has no length (`audio_duration_s`); "
                              "run narrate again")
    if scene.duration_s is not None:
        length = float(scene.duration_s)
    elif scene.audio is not None:
        length = preset.lead_s + float(scene.audio_duration_s) + preset.tail_s
    else:
        raise StudioError(f"{_where(scene, number)} has neither narration audio nor a duration: "
                          "run narrate first, or set its `duration_s`")
    if not length >= 1.0 / preset.fps:
        raise StudioError(f"{_where(scene, number)}: its duration {length} s is shorter than one frame")
    return length


def caption_frames(event: CaptionEvent, fps: int) -> tuple[int, int]:
    """The frames ``[first, end)`` that show `event` on a video at `fps` (`CaptionOverlays`' rule: a frame shows a
    caption while its time in whole milliseconds lies in the caption's times rounded to centiseconds)."""

    def first_frame_at(time_s: float) -> int:
        threshold_ms = int(round(time_s * 100)) * 10
        frame = max(0, math.ceil(threshold_ms * fps / 1000) - 1)
        while int(frame * 1000 / fps) < threshold_ms:
            frame += 1
        return frame

    return first_frame_at(event.start_s), first_frame_at(event.end_s)


def frame_time(frame: int, fps: int) -> float:
    """The caption time that shows (or hides) a caption from exactly `frame` on (`caption_frames`' rule): the first
    whole centisecond after the frame before it. Exact up to 100 fps; a function of the frame number alone, so a
    caption shown on local frame k of a segment is keyed and drawn the same wherever the segment sits in the video."""
    if frame <= 0:
        return 0.0
    before_ms = int((frame - 1) * 1000 / fps)
    return (before_ms // 10 + 1) / 100


def on_frames(events: Sequence[CaptionEvent], fps: int) -> tuple[CaptionEvent, ...]:
    """`events` (in order, none overlapping) moved to the nearest whole frames: each shows from a frame to a frame,
    and one that would show on no frame is dropped."""
    out = []
    for event in events:
        first, end = round(event.start_s * fps), round(event.end_s * fps)
        if end > first:
            out.append(replace(event, start_s=frame_time(first, fps), end_s=frame_time(end, fps)))
    return tuple(out)


def build_timeline(project: Project, preset: Preset, *, only: Collection[str] | None = None,
                   encoder: str | None = None, device: str | None = None) -> Timeline:
    """Lay out `project` as a `Timeline` for `preset` (pure data; only checks that files exist).

    Args:
        project: Scenes with a `visual` and narration `audio` (or a fixed `duration_s`).
        preset: The render tier (size, fps, motion, timing, audio).
        only: Scene ids to lay out (a quick preview of some scenes), back to back in project order; None for all.
        encoder: The video encoder; None picks the first of the preset's encoders that works here (probed once per
            process, see `studio.compose.encoders.pick_encoder`).
        device: Where the frames are made (``auto``, ``cuda``, ``cpu``, ``tensor-cpu``); None: the preset's
            ``[compose] device`` (see `studio.compose.gpu.resolve_device`).

    Raises:
        StudioError: a scene without a visual or without audio and duration, a missing file, an unknown scene id,
            transition or caption style.
    """
    from .encoders import pick_encoder

    # 1. Choose the scenes.
    if not project.scenes:
        raise StudioError("the project has no scenes; write a storyboard first")
    numbered = list(enumerate(project.scenes, start=1))
    if only is not None:
        if isinstance(only, str):
            only = [only]
        wanted = set(only)
        unknown = wanted - {s.id for s in project.scenes}
        if unknown:
            raise StudioError(f"`only` names unknown scene id(s) {sorted(unknown)}; "
                              f"this project's scenes are {[s.id for s in project.scenes]}")
        if not wanted:
            raise StudioError("`only` is empty; name at least one scene id, or pass None for all scenes")
        numbered = [(n, s) for n, s in numbered if s.id in wanted]
    width, height = preset.size(project.aspect)
    encoder = encoder or pick_encoder(preset)
    encoder_args = tuple(preset.encoder_args(encoder))
    encoder_input_args = tuple(preset.encoder_input_args(encoder))
    from .gpu import resolve_device

    compose_device, compose_label, why_cpu = resolve_device(preset, encoder, device)
    if why_cpu:
        compose_label = f"{compose_label} ({why_cpu.removeprefix('CPU compose: ')})"

    # 2. Check each scene and find its length and transition, in whole frames.
    fps = preset.fps
    kinds = [_visual_kind(scene, n) for n, scene in numbered]
    frames = [max(1, round(_scene_length(scene, n, preset) * fps)) for n, scene in numbered]
    lengths = [f / fps for f in frames]
    transitions: list[Transition] = []
    overlaps: list[int] = []  # frames each scene shares with the one before it
    for i, (n, scene) in enumerate(numbered):
        kind = choose_transition(scene, n)
        overlap = 0 if i == 0 or kind == "cut" else min(round(preset.transition_s * fps), frames[i - 1] // 2,
                                                         frames[i] // 2)
        overlaps.append(overlap)
        transitions.append(Transition(kind, overlap / fps) if overlap > 0 else Transition("cut", 0.0))

    # 3. Place the segments and the narration.
    notes: list[str] = []
    segments: list[Segment] = []
    narration: list[NarrationTrack] = []
    words: list[list[TimedWord]] = []
    windows: list[float] = []
    start_frame = 0
    for i, (n, scene) in enumerate(numbered):
        if i:
            start_frame += frames[i - 1] - overlaps[i]
        start = start_frame / fps
        length = lengths[i]
        motion, rect0, rect1 = ("still", FULL, FULL) if kinds[i] == "video" else choose_motion(scene, preset.ken_burns)
        segments.append(Segment(scene.id, n, Path(scene.visual), kinds[i], start, length, motion, (rect0, rect1),
                                transitions[i]))
        next_t = transitions[i + 1].duration_s if i + 1 < len(numbered) else 0.0
        voice_at = start + preset.lead_s
        room = length - max(preset.lead_s, next_t)  # end by the scene's end and before the next narration starts
        scene_words: list[TimedWord] = []
        window_end = start + length
        if scene.audio is not None:
            spoken = float(scene.audio_duration_s)
            played = min(spoken, room)
            if played <= 0.05:
                notes.append(f"{_where(scene, n)}: its fixed duration {length:g} s leaves no room for its narration "
                             f"after the {preset.lead_s:g} s lead; the narration is left out")
            else:
                fade = 0.0
                if played < spoken - 1e-3:
                    fade = min(NARRATION_FADE_S, played / 2)
                    notes.append(f"{_where(scene, n)}: its narration ({spoken:.2f} s) is longer than its fixed duration "
                                 f"allows; trimmed to {played:.2f} s with a {fade:.2f} s fade")
                narration.append(NarrationTrack(scene.id, Path(scene.audio), voice_at, played, spoken, fade))
                window_end = voice_at + played + (preset.tail_s if played >= spoken - 1e-3 else 0.0)
                if scene.words:
                    scene_words = [TimedWord(w.word, voice_at + w.start_s, voice_at + min(w.end_s, played))
                                   for w in scene.words if w.start_s < played]
                else:
                    scene_words = spread_words(scene.narration, voice_at, voice_at + played)
        elif scene.narration.strip():
            # A silent scene with text: show the text as captions over the scene.
            scene_words = spread_words(scene.narration, start + min(preset.lead_s, length / 4),
                                       start + length - min(preset.tail_s, length / 4))
        words.append(scene_words)
        windows.append(min(window_end, start + length))
    duration = (start_frame + frames[-1]) / fps

    # 4. Captions: word groups of at most two lines, never two on screen at once.
    layout = None
    captions: tuple[CaptionEvent, ...] = ()
    if project.captions:
        layout = caption_layout(project.caption_style, (width, height), project.caption_font)
        events: list[CaptionEvent] = []
        for (_, scene), scene_words, window in zip(numbered, words, windows):
            events.extend(caption_events(layout, scene_words, window_end_s=window, scene_id=scene.id))
        captions = on_frames(no_overlaps(events), fps)
        notes.extend(caption_notes(layout, captions))  # glyphs from fallback fonts, or none at all

    # 5. Music and watermark.
    music = None
    if project.music is not None:
        if not Path(project.music).is_file():
            raise StudioError(f"the project's music {project.music} does not exist; choose another file or remove it")
        music = MusicTrack(Path(project.music), float(project.music_volume))
    watermark = None
    if project.watermark is not None:
        if not Path(project.watermark).is_file():
            raise StudioError(f"the project's watermark {project.watermark} does not exist; "
                              "choose another image or remove it")
        if Path(project.watermark).suffix.lower() not in IMAGE_SUFFIXES:
            raise StudioError(f"the project's watermark {Path(project.watermark).name} must be an image "
                              "(a PNG with transparency is best)")
        watermark = Watermark(Path(project.watermark))

    return Timeline(
        width=width, height=height, fps=preset.fps, duration_s=duration, segments=tuple(segments), captions=captions,
        caption_layout=layout, narration=tuple(narration), music=music, watermark=watermark, encoder=encoder,
        encoder_args=encoder_args, audio_bitrate_kbps=preset.audio_bitrate_kbps, sample_rate=preset.sample_rate,
        loudness_lufs=preset.loudness_lufs, preset=preset.name, notes=tuple(notes),
        compose_device=compose_device, compose_label=compose_label,
        encoder_input_args=encoder_input_args,
    )
