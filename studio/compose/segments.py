"""Segment-wise rendering: the video cut into segments, each an asset of the project (named by the hash of everything
that changes its frames), joined without re-encoding and muxed with the soundtrack.

    result = compose_segments(timeline, project.assets_dir, output)              # plan, find or render, join
    plans = plan_segments(timeline)                                              # or step by step: pure data
    parts = [render_segment(timeline, plan, project.assets_dir).path for plan in plans]   # any order, any machine
    result = join_segments(timeline, parts, output)                              # concat (-c copy) + soundtrack

Why: a segment is a unit of work that is cached and can be spread. A re-render after an edit renders only the
segments whose frames changed (the edited scene and the transitions touching it) and joins the others as they are;
a resumed job re-renders only unfinished segments; segments spread over processes or machines (`studio.executors`).

Where cuts fall. A scene's own frames (``kind="scene"``: only that scene on screen) and each transition (``kind=
"transition"``: the frames two scenes share) are segments of their own, so an edit of one scene re-renders its own
segment and the two transitions at its ends, never a neighbour's own frames. A cut never falls inside a video clip
(clips are decoded from their start), so a clip's transitions join the clip's segment.

What a segment's key holds (`segment_key`): its frame count and its scenes on its own clock (the picture's content
hash, kind, start and length in frames, Ken Burns move, the transition when it is on screen), the captions it shows
(lines and frames, and the words a karaoke caption lights), the caption style and font (by the font's bytes), the
watermark (by its bytes), the preset's video settings (size, fps, encoder and its arguments), and the renderer's
versions (`SEGMENT_VERSION`,
`studio.compose.render.RENDERER_VERSION`, the ffmpeg build). The timeline puts every scene start and caption on whole
frames (`studio.compose.timeline`), so a scene that moves by some frames because an earlier one got longer keeps its
key. A change that touches every frame (preset, aspect, caption style or font, watermark) changes every key; the
music, the narration's audio, the title or the loudness change none (the soundtrack is made as a whole, see
`soundtrack`).

Joins are exact: every segment is its own encode with the timeline's encoder settings, so each starts on a keyframe
and they share their codec parameters; the concat demuxer copies the streams, and the joined file is checked
(duration within one frame of the timeline) before it replaces the output.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..assets import asset_key, atomic_path, file_digest
from ..errors import Cancelled, StudioError
from ..media import INPUT_GUARD, ffmpeg_exe, probe, run_ffmpeg
from ..progress import CancelToken, ProgressFn, no_progress
from .timeline import Timeline, caption_frames, frame_time

if TYPE_CHECKING:
    from ..presets import Preset
    from ..project import Project

# Bump when a change here (where segments are cut, how a part of the timeline is made) changes a segment's frames;
# `studio.compose.render.RENDERER_VERSION` covers the frame loop and the caption drawing.
log = logging.getLogger("studio")

SEGMENT_VERSION = 2
SOUNDTRACK_VERSION = 2  # bump when a change to `studio.compose.audio` changes the soundtrack

SegmentDoneFn = Callable[[int, "SegmentResult"], None]
SegmentProgressFn = Callable[[int, float, str], None]


@dataclass(frozen=True)
class SegmentPlan:
    """One segment of a render: frames ``[first_frame, end_frame)`` of the video and what they depend on.

    Attributes:
        index: Position in the video (0-based).
        first_frame: First frame (inclusive).
        end_frame: Frame after the last one (exclusive).
        scene_ids: The scenes visible in the segment.
        key: sha256 of everything the segment's frames depend on: its file is ``<key>.mp4`` in an asset folder.
        kind: ``scene`` (one scene alone on screen) or ``transition`` (two scenes blend; a clip's segment may hold
            both).
    """

    index: int
    first_frame: int
    end_frame: int
    scene_ids: tuple[str, ...]
    key: str
    kind: str = "scene"

    @property
    def frames(self) -> int:
        return self.end_frame - self.first_frame


@dataclass(frozen=True)
class SegmentResult:
    """A rendered segment: its file and whether it was found in the asset folder rather than rendered."""

    index: int
    path: Path
    reused: bool
    note: str = ""  # e.g. the GPU renderer failed and the segment was rendered on the CPU


def _frame_ranges(timeline: Timeline) -> list[tuple[int, int]]:
    from .render import frame_ranges

    return frame_ranges(timeline)


def segment_path(folder: Path, plan: SegmentPlan) -> Path:
    """Where the segment of `plan` lives in an asset folder."""
    return Path(folder) / f"{plan.key}.mp4"


def plan_segments(timeline: Timeline, *, min_frames: int = 1) -> list[SegmentPlan]:
    """Cut `timeline` into segments: each scene's own frames, and each transition (see the module docstring).

    Args:
        timeline: The whole video.
        min_frames: A segment shorter than this joins the one before it.
    """
    total = timeline.frame_count
    if total < 1:
        raise StudioError("the timeline has no frames; give its scenes some duration")
    ranges = _frame_ranges(timeline)
    candidates = set()
    for i in range(1, len(timeline.segments)):
        candidates.add(ranges[i][0])  # the first frame of scene i: its transition starts
        candidates.add(ranges[i - 1][1] + 1)  # the first frame without scene i-1: its transition has ended
    cuts = [0]
    for cut in sorted(candidates):
        if not cuts[-1] < cut < total:
            continue
        spanning = [j for j, (first, last) in enumerate(ranges) if first <= cut - 1 and last >= cut]
        if any(timeline.segments[j].kind != "image" for j in spanning):
            continue  # a clip cannot start mid-way: keep it whole in one segment
        if cut - cuts[-1] < min_frames:
            continue
        cuts.append(cut)
    if len(cuts) > 1 and total - cuts[-1] < min_frames:
        cuts.pop()
    bounds = list(zip(cuts, cuts[1:] + [total]))
    plans = []
    for index, (first, end) in enumerate(bounds):
        part = sub_timeline(timeline, first, end)
        ids = tuple(seg.scene_id for seg in part.segments)
        plans.append(SegmentPlan(index, first, end, ids, segment_key(part), "transition" if len(ids) > 1 else "scene"))
    return plans


def _on_frame(time_s: float, fps: int) -> int | None:
    """`time_s` in frames, if it is a whole frame (the timeline's scene starts are)."""
    frames = time_s * fps
    return round(frames) if abs(frames - round(frames)) < 1e-6 else None


def sub_timeline(timeline: Timeline, first_frame: int, end_frame: int) -> Timeline:
    """The part of `timeline` shown in frames ``[first_frame, end_frame)``, on a clock that starts at its first frame.

    It holds the visible scenes (shifted, so their motion and transitions continue exactly where they were) and the
    captions shown in it, cut to its frames and timed so that they show on the same frames; no soundtrack (the audio
    is mixed once for the whole video).
    """
    if not 0 <= first_frame < end_frame <= timeline.frame_count:
        raise StudioError(f"frames [{first_frame}, {end_frame}) are outside the video's {timeline.frame_count} frames")
    fps = timeline.fps
    t0 = first_frame / fps
    ranges = _frame_ranges(timeline)
    segments = []
    for seg, (first, last) in zip(timeline.segments, ranges):
        if first <= end_frame - 1 and last >= first_frame:
            start = _on_frame(seg.start_s, fps)
            # On whole frames the local start is exact (the same number wherever the part sits in the video).
            local = (start - first_frame) / fps if start is not None else seg.start_s - t0
            segments.append(replace(seg, start_s=local))
    captions = []
    for c in timeline.captions:
        shown_first, shown_end = caption_frames(c, fps)
        shown_first, shown_end = max(shown_first, first_frame), min(shown_end, end_frame)
        if shown_end > shown_first:
            captions.append(replace(c, start_s=frame_time(shown_first - first_frame, fps),
                                    end_s=frame_time(shown_end - first_frame, fps)))
    return replace(timeline, duration_s=(end_frame - first_frame) / fps, segments=tuple(segments),
                   captions=tuple(captions), narration=(), music=None, notes=())


@functools.lru_cache(maxsize=1)
def ffmpeg_build() -> str:
    """The ffmpeg build that encodes (its file name and size): segments of another build are not joined with these."""
    exe = Path(ffmpeg_exe())
    try:
        return f"{exe.name}:{exe.stat().st_size}"
    except OSError:
        return exe.name


def _source_id(path: Path) -> str:
    """A source by its content: an asset's name is its hash; a user's own file is keyed by its bytes."""
    stem = Path(path).stem
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
        return stem
    return "sha256:" + file_digest(path)


def _watermark_key(timeline: Timeline) -> str | None:
    mark = timeline.watermark
    if mark is None:
        return None
    return f"{file_digest(mark.path)}:{mark.corner}:{mark.width_frac}:{mark.margin_frac}:{mark.opacity}"


def segment_key(part: Timeline) -> str:
    """Everything the frames of a part of the timeline (`sub_timeline`) depend on, as a sha256 (see the module
    docstring); times are in frames of the part's own clock."""
    from .render import RENDERER_VERSION

    fps, frames = part.fps, part.frame_count

    def in_frames(time_s: float) -> float:
        return round(time_s * fps, 3)

    scenes = []
    for s in part.segments:
        start = in_frames(s.start_s)
        overlap = in_frames(s.transition.duration_s)
        # The transition into a scene changes frames only while both scenes are on screen.
        shown = s.transition.kind != "cut" and start + overlap > 0 and start < frames
        scenes.append([_source_id(s.source), s.kind, start, in_frames(s.duration_s), s.motion,
                       [list(r.as_tuple()) for r in s.ken_burns],
                       [s.transition.kind, overlap] if shown else None])
    # A karaoke event adds the words it highlights (other styles' keys stay as they were).
    captions = [[*caption_frames(c, fps), list(c.lines)] + ([list(c.highlight)] if c.highlight else [])
                for c in part.captions]
    return asset_key(
        step="segment",
        version=SEGMENT_VERSION,
        renderer=RENDERER_VERSION,
        ffmpeg=ffmpeg_build(),
        size=[part.width, part.height],
        fps=fps,
        frames=frames,
        encoder=part.encoder,
        encoder_args=list(part.encoder_args),
        # Only where there are any (a VAAPI device), so the keys of segments made without them stay as they were.
        **({"encoder_input_args": list(part.encoder_input_args)} if part.encoder_input_args else {}),
        scenes=scenes,
        captions=captions,
        # The font by its bytes (`font_sha256`), not its path: a changed font re-renders, a moved one does not.
        layout=repr(replace(part.caption_layout, font_path=Path()))
        if part.captions and part.caption_layout is not None else None,
        watermark=_watermark_key(part),
    )


def render_segment(timeline: Timeline, plan: SegmentPlan, folder: Path, *, cancel: CancelToken | None = None,
                   on_progress: ProgressFn | None = None) -> SegmentResult:
    """Render one segment to ``folder/<plan.key>.mp4`` (video only), or find it there.

    Idempotent: the file name is the segment's content key and it appears only when complete (written to a
    temporary name, checked, then renamed), so running it twice, or on two machines sharing `folder`, is safe.

    Args:
        timeline: The whole video's timeline (the segment's part is cut from it).
        plan: Which segment (from `plan_segments` of the same timeline).
        folder: The asset folder the segment file goes in.
        cancel: Cancelling kills the encoder at once; temporary files are removed.
        on_progress: ``on_progress(fraction, message)`` while encoding.

    Returns:
        A `SegmentResult` (index, path, reused).
    """
    from .captions import CaptionOverlays
    from .render import encode_video

    # 1. Find it in the folder.
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = segment_path(folder, plan)
    if final.is_file() and final.stat().st_size > 0:
        return SegmentResult(plan.index, final, True)
    token = cancel if cancel is not None else CancelToken()
    report = on_progress or no_progress
    part = sub_timeline(timeline, plan.first_frame, plan.end_frame)

    # 2. Render it in a private work folder (ffmpeg's working directory: filters see only names made here).
    work = Path(tempfile.mkdtemp(prefix=f".segment-{plan.index:04d}-", dir=folder)).resolve()
    captions = None
    note = ""
    try:
        if part.captions:
            captions = CaptionOverlays(part.caption_layout, part.captions, part.fps, work, token)
        from .gpu import Renderer, gpu_failure

        try:
            video = encode_video(part, work, cancel=token, on_progress=report, captions=captions,
                                 renderer=Renderer(part.compose_device))  # closes `captions`
        except Exception as exc:
            # The GPU renderer failed: this segment once more on the CPU renderer, with the same encoder (a segment
            # joins the others by stream copy, so it must be encoded as they are; an encoder that fails is the
            # caller's to replace for the whole render, see `studio.pipeline`).
            if token.cancelled or part.compose_device == "cpu" or not gpu_failure(part, exc, captions):
                raise
            from .render import _short

            note = (f"compose: the GPU renderer failed on segment {plan.index + 1} ({_short(exc)}); "
                    "that segment was rendered on the CPU")
            log.warning("%s", note)
            if captions is not None:
                captions.close(stop=True)
            captions = (CaptionOverlays(part.caption_layout, part.captions, part.fps, work, token, prefix="retry-")
                        if part.captions else None)
            video = encode_video(part, work, cancel=token, on_progress=report, captions=captions,
                                 renderer=Renderer("cpu"))

        # 3. Check it, then put it in place under its key.
        info = probe(video)
        expected = plan.frames / part.fps
        if not info.has_video or abs(info.duration_s - expected) > 1.0 / part.fps + 1e-3:
            raise StudioError(f"segment {plan.index + 1} came out {info.duration_s:.3f} s long, expected {expected:.3f} s")
        with atomic_path(final) as tmp:
            os.replace(video, tmp)
        return SegmentResult(plan.index, final, False, note)
    except BaseException:
        if captions is not None:
            captions.close(stop=True)
        if cancel is not None and cancel.cancelled:
            raise Cancelled() from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render_segments(timeline: Timeline, plans: Sequence[SegmentPlan], folder: Path, *, executor: Any = None,
                    cancel: CancelToken | None = None, on_done: SegmentDoneFn | None = None,
                    on_progress: SegmentProgressFn | None = None) -> list[SegmentResult]:
    """Every plan's segment: found in `folder` (reported at once as reused), or rendered through `executor`
    (default: here, in order; a `RayExecutor` spreads them over its actors). Returns the results in plan order.

    Args:
        on_done: ``on_done(plan_index, result)`` as each segment is found or finishes.
        on_progress: ``on_progress(plan_index, fraction, message)`` while a segment renders.
    """
    from ..executors import LocalExecutor, Task

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[int, SegmentResult] = {}
    missing: list[SegmentPlan] = []
    for plan in plans:
        path = segment_path(folder, plan)
        if path.is_file() and path.stat().st_size > 0:
            results[plan.index] = SegmentResult(plan.index, path, True)
            if on_done is not None:
                on_done(plan.index, results[plan.index])
        else:
            missing.append(plan)
    if missing:
        executor = executor or LocalExecutor()
        tasks = [Task("segment", {"timeline": timeline, "plan": p, "folder": folder},
                      gpu=timeline.encoder != "libx264" or timeline.compose_device == "cuda",
                      label=f"segment {p.index + 1}") for p in missing]

        def done(i: int, result: SegmentResult) -> None:
            results[missing[i].index] = result
            if on_done is not None:
                on_done(missing[i].index, result)

        def progress(i: int, fraction: float, message: str) -> None:
            if on_progress is not None:
                on_progress(missing[i].index, fraction, message)

        executor.run(tasks, cancel=cancel, on_done=done, on_progress=progress)
    return [results[plan.index] for plan in plans]


# -- the soundtrack, an asset too --------------------------------------------------------------------------------
def soundtrack_key(timeline: Timeline) -> str:
    """Everything the soundtrack depends on (narration files by content, where they play, music, loudness, AAC)."""
    music = timeline.music
    return asset_key(
        step="soundtrack",
        version=SOUNDTRACK_VERSION,
        ffmpeg=ffmpeg_build(),
        frames=timeline.frame_count,
        fps=timeline.fps,
        narration=[[_source_id(v.path), round(v.offset_s, 6), round(v.duration_s, 6), round(v.fade_out_s, 6)]
                   for v in timeline.narration],
        music=None if music is None else [_source_id(music.path), music.volume, music.duck_gain, music.attack_s,
                                          music.release_s],
        sample_rate=timeline.sample_rate,
        bitrate_kbps=timeline.audio_bitrate_kbps,
        loudness_lufs=timeline.loudness_lufs,
    )


def soundtrack(timeline: Timeline, folder: Path, *, cancel: CancelToken | None = None) -> tuple[Path, bool]:
    """The soundtrack of `timeline` as ``folder/<key>.m4a``: found there, or mixed, normalised and encoded for the
    whole video (`studio.compose.audio.encode_soundtrack`). Returns ``(path, reused)``.

    Mixed as a whole, not per scene: one minute mixes, measures and encodes in about a second, and the loudness is
    measured over the whole programme as the preset's target means (per-scene parts would each need their own gain,
    or a second pass over all of them, and AAC joins click unless re-encoded).
    """
    from .audio import encode_soundtrack

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{soundtrack_key(timeline)}.m4a"
    if final.is_file() and final.stat().st_size > 0:
        return final, True
    work = Path(tempfile.mkdtemp(prefix=".soundtrack.render-", dir=folder)).resolve()
    try:
        made = encode_soundtrack(timeline, work, cancel=cancel)
        with atomic_path(final) as tmp:
            os.replace(made, tmp)
        return final, False
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- joining -------------------------------------------------------------------------------------------------------
def join_segments(timeline: Timeline, parts: Sequence[Path], output: Path, *, audio: Path | None = None,
                  cancel: CancelToken | None = None, on_progress: ProgressFn | None = None):
    """Join rendered segments (in order) into the finished MP4 with the soundtrack; returns a `RenderResult`.

    The video streams are concatenated without re-encoding (ffmpeg's concat demuxer reads a list this function
    writes, naming only links it made in its own work folder). The soundtrack is `audio` (an AAC file, e.g. from
    `soundtrack`), else mixed, normalised and encoded here for the whole video. The MP4 is written to a temporary
    ``*.part`` name beside `output`, checked (streams, size, duration within one frame) and only then renamed onto
    `output`.
    """
    from ..media import check_output_path
    from .audio import encode_soundtrack
    from .render import RenderResult, _check_output

    # 1. Check the inputs.
    output = check_output_path(Path(output))
    if not parts:
        raise StudioError("no segments to join: render the segments of `plan_segments(timeline)` first")
    missing = [str(p) for p in [*parts, *([audio] if audio is not None else [])] if not Path(p).is_file()]
    if missing:
        raise StudioError(f"segment file(s) missing: {', '.join(missing)}; render them again")
    report = on_progress or no_progress
    token = cancel if cancel is not None else CancelToken()

    # 2. A private work folder beside the output, with the segments linked under names made here.
    work = Path(tempfile.mkdtemp(prefix=f".{output.stem}.render-", dir=output.parent)).resolve()
    try:
        if audio is None:
            report(0.0, "mixing the soundtrack")
            audio_name = encode_soundtrack(timeline, work, cancel=token).name
        else:
            audio_name = "soundtrack.m4a"
            _link(Path(audio), work / audio_name)
        lines = []
        for i, part in enumerate(parts):
            name = f"segment-{i:05d}.mp4"
            _link(Path(part), work / name)
            lines.append(f"file '{name}'\n")
        (work / "segments.txt").write_text("".join(lines), "utf-8")

        # 3. Join, check, put in place.
        report(0.6 if audio is None else 0.1, "joining the segments")
        with atomic_path(output) as tmp:
            run_ffmpeg([*INPUT_GUARD, "-f", "concat", "-safe", "1", "-i", "segments.txt", *INPUT_GUARD, "-i", audio_name,
                        "-map", "0:v:0", "-map", "1:a:0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4",
                        Path(tmp).resolve()], cwd=work, cancel=token, what="joining the segments")
            info = _check_output(Path(tmp), timeline)
        report(1.0, f"done: {output.name}")
        return RenderResult(path=output, duration_s=info.duration_s, size_bytes=output.stat().st_size,
                            width=info.width, height=info.height, fps=timeline.fps, encoder=timeline.encoder,
                            timeline=timeline, renderer=timeline.compose_label)
    except BaseException:
        if cancel is not None and cancel.cancelled:
            raise Cancelled() from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system: copy
        shutil.copyfile(source, target)


# -- the whole render ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentedRender:
    """What `compose_segments` did: the video (a `RenderResult`), the segments (plans and results) and whether the
    soundtrack was found rather than made."""

    result: Any
    plans: tuple[SegmentPlan, ...]
    parts: tuple[SegmentResult, ...]
    soundtrack_reused: bool

    @property
    def made(self) -> int:
        return sum(1 for p in self.parts if not p.reused)

    @property
    def reused(self) -> int:
        return sum(1 for p in self.parts if p.reused)


def compose_segments(timeline: Timeline, folder: Path, output: Path, *, plans: Sequence[SegmentPlan] | None = None,
                     executor: Any = None,
                     cancel: CancelToken | None = None, on_progress: ProgressFn | None = None,
                     on_segment: Callable[[SegmentPlan, SegmentResult], None] | None = None) -> SegmentedRender:
    """Render `timeline` to `output` segment by segment: segments already in `folder` (an asset folder, e.g. the
    project's ``assets/``) are reused, the others rendered (through `executor`), the soundtrack found or made in a
    thread meanwhile, then everything is joined with stream copy (`join_segments`).

    Args:
        plans: `plan_segments(timeline)`, if the caller has it already.
        on_progress: ``on_progress(fraction, message)``: 0-0.9 while segments render (by frames still to render),
            then the join.
        on_segment: ``on_segment(plan, result)`` as each segment is found or rendered.
    """
    from .render import _check_sources

    # 1. Plan, and check every source before any encoding.
    _check_sources(timeline)
    plans = list(plans) if plans is not None else plan_segments(timeline)
    report = on_progress or no_progress
    folder = Path(folder)
    to_render = {p.index: p.frames for p in plans if not segment_path(folder, p).is_file()}
    frames = sum(to_render.values()) or 1
    finished = [0]
    report(0.0, f"{len(plans)} segments, {len(plans) - len(to_render)} already made")

    # 2. The soundtrack in a thread (it is found, or mixed while the segments render).
    inner = CancelToken()
    unhook = cancel.on_cancel(inner.cancel) if cancel is not None else (lambda: None)
    audio: dict[str, Any] = {}

    def make_audio() -> None:
        try:
            audio["path"], audio["reused"] = soundtrack(timeline, folder, cancel=inner)
        except BaseException as exc:  # handed to the caller
            audio["error"] = exc

    thread = threading.Thread(target=make_audio, name="studio-soundtrack", daemon=True)
    thread.start()
    try:
        # 3. The segments: found, or rendered.
        def done(index: int, result: SegmentResult) -> None:
            if not result.reused:
                finished[0] += to_render.get(index, 0)
                report(0.9 * finished[0] / frames, f"segment {index + 1}/{len(plans)} rendered")
            if on_segment is not None:
                on_segment(plans[index], result)

        def progress(index: int, fraction: float, message: str) -> None:
            report(0.9 * (finished[0] + fraction * to_render.get(index, 0)) / frames,
                   f"segment {index + 1}/{len(plans)}: {message}")

        parts = render_segments(timeline, plans, folder, executor=executor, cancel=cancel, on_done=done,
                                on_progress=progress)
        thread.join()
        if "error" in audio:
            raise audio["error"]

        # 4. Join.
        result = join_segments(timeline, [p.path for p in parts], output, audio=audio["path"], cancel=cancel,
                               on_progress=lambda f, m: report(0.9 + 0.1 * f, m))
        notes = tuple(dict.fromkeys(p.note for p in parts if p.note))
        if notes:
            result = replace(result, notes=result.notes + notes)
        return SegmentedRender(result, tuple(plans), tuple(parts), bool(audio["reused"]))
    except BaseException:
        inner.cancel()
        thread.join()
        if cancel is not None and cancel.cancelled:
            raise Cancelled() from None
        raise
    finally:
        unhook()


# -- one scene's segments (the studio's preview) ----------------------------------------------------------------------
def _neighbourhood(project: "Project", scene_id: str, reach: int) -> list[str]:
    ids = [s.id for s in project.scenes]
    if scene_id not in ids:
        raise StudioError(f"no scene {scene_id!r} in this project")
    at = ids.index(scene_id)
    return ids[max(0, at - reach):at + reach + 1]


def scene_segments(project: "Project", preset: "Preset", scene_id: str, *, encoder: str | None = None,
                   prepare: Callable[["Project", list[str]], "Project"] | None = None,
                   ) -> tuple["Project", Timeline, list[SegmentPlan]]:
    """The segments that show scene `scene_id`: its own and the transitions at its ends, with the keys the whole
    video's render gives them (so rendering them now makes exactly the files that render reuses).

    Only the scene and its neighbours are laid out (`build_timeline(only=...)`): a segment's key depends on its scenes
    on its own clock, which the neighbours fix (the transitions' lengths, the picture blended with). The layout widens
    until the segments lie clear of its edges (a clip's segment can be long).

    Args:
        prepare: ``prepare(project, scene_ids)`` -> the project with those scenes narrated and painted (called
            before each layout); None: they must be already.

    Returns:
        ``(project, timeline, plans)``: the project as `prepare` left it, the neighbourhood's timeline and the plans
        (of that timeline) that show the scene, in order.
    """
    from .timeline import build_timeline

    reach = 1
    edge = round(preset.transition_s * preset.fps)  # the most frames a neighbour's own transition can take
    while True:
        ids = _neighbourhood(project, scene_id, reach)
        if prepare is not None:
            project = prepare(project, ids)
        timeline = build_timeline(project, preset, only=ids, encoder=encoder)
        plans = [p for p in plan_segments(timeline) if scene_id in p.scene_ids]
        clear_before = ids[0] == project.scenes[0].id or plans[0].first_frame >= edge
        clear_after = ids[-1] == project.scenes[-1].id or plans[-1].end_frame <= timeline.frame_count - edge
        if (clear_before and clear_after) or len(ids) == len(project.scenes):
            return project, timeline, plans
        reach += 1


def window_timeline(timeline: Timeline, first_frame: int, end_frame: int) -> Timeline:
    """`sub_timeline` with its soundtrack: the narration heard in those frames (shifted; one that began before them
    plays from the middle) and the music."""
    part = sub_timeline(timeline, first_frame, end_frame)
    t0, t1 = first_frame / timeline.fps, end_frame / timeline.fps
    narration = tuple(replace(v, offset_s=v.offset_s - t0) for v in timeline.narration
                      if v.offset_s < t1 and v.offset_s + v.duration_s > t0)
    return replace(part, narration=narration, music=timeline.music)


@dataclass(frozen=True)
class ScenePreview:
    """A preview of one scene: the MP4 (its segments joined, with the sound of those frames) and its segments."""

    path: Path
    duration_s: float
    width: int
    height: int
    encoder: str
    plans: tuple[SegmentPlan, ...]
    parts: tuple[SegmentResult, ...]

    @property
    def reused(self) -> int:
        return sum(1 for p in self.parts if p.reused)


def preview_scene(project: "Project", preset: "Preset", scene_id: str, output: Path, *, encoder: str | None = None,
                  prepare: Callable[["Project", list[str]], "Project"] | None = None, cancel: CancelToken | None = None,
                  on_progress: ProgressFn | None = None) -> ScenePreview:
    """Render scene `scene_id`'s segments (`scene_segments`) into the project's asset folder, where the whole
    video's render finds them, and join them with their sound into `output`.

    Args:
        prepare: See `scene_segments` (narrate and paint the scenes the preview needs).
    """
    report = on_progress or no_progress
    project, timeline, plans = scene_segments(project, preset, scene_id, encoder=encoder, prepare=prepare)
    from .render import _check_sources

    _check_sources(timeline)
    frames = sum(p.frames for p in plans) or 1
    finished = [0]

    def done(index: int, result: SegmentResult) -> None:
        finished[0] += next(p.frames for p in plans if p.index == index)
        report(0.9 * finished[0] / frames, f"segment {'reused' if result.reused else 'rendered'}")

    parts = render_segments(timeline, plans, project.assets_dir, cancel=cancel, on_done=done)
    window = window_timeline(timeline, plans[0].first_frame, plans[-1].end_frame)
    audio, _ = soundtrack(window, project.assets_dir, cancel=cancel)
    result = join_segments(window, [p.path for p in parts], output, audio=audio, cancel=cancel,
                           on_progress=lambda f, m: report(0.9 + 0.1 * f, m))
    return ScenePreview(result.path, result.duration_s, result.width, result.height, result.encoder, tuple(plans),
                        tuple(parts))


# -- assets made elsewhere (a job's folder) --------------------------------------------------------------------------
def adopt_assets(source: Path, target: Path) -> int:
    """Hard-link (or copy) every finished asset of folder `source` that `target` lacks; returns how many.

    Assets are content-addressed, so a file of the same name is the same asset: nothing is ever replaced. Temporary
    files (names starting with a dot) and anything but plain files are left alone. The studio uses it to keep the
    segments its render jobs made (in their own folders) in the project the job was seeded from.
    """
    source, target = Path(source), Path(target)
    if not source.is_dir() or source.is_symlink():
        return 0
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for entry in os.scandir(source):
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        final = target / entry.name
        if final.exists():
            continue
        try:
            os.link(entry.path, final)
        except FileExistsError:
            continue
        except OSError:
            with atomic_path(final) as tmp:
                shutil.copyfile(entry.path, tmp)
        count += 1
    return count


__all__ = ["SegmentPlan", "SegmentResult", "SegmentedRender", "ScenePreview", "plan_segments", "sub_timeline",
           "segment_key", "render_segment", "render_segments", "soundtrack", "soundtrack_key", "join_segments",
           "compose_segments", "scene_segments", "window_timeline", "preview_scene", "adopt_assets"]
