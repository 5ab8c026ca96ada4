"""Segment-wise rendering: the timeline's frames cut into segments, each encoded to its own content-addressed file,
then joined without re-encoding and muxed with the soundtrack.

    plans = plan_segments(timeline)                                   # pure data: frame ranges and cache keys
    parts = [render_segment(timeline, plan, project.assets_dir).path for plan in plans]   # any order, any machine
    result = join_segments(timeline, parts, output)                   # concat (-c copy) + soundtrack, checked

Why: a segment is a unit of work that can be cached (a resumed or re-edited render re-encodes only the segments
whose inputs changed: a scene's picture, its Ken Burns move, its captions, the transitions at its ends) and spread
over processes or machines (`studio.executors`). One-pass `compose` stays the fastest way to render once on one
machine; the segment path costs an encoder start per segment and one extra copy of the video stream.

A segment is a frame range ``[first, end)`` of the whole video, rendered by the same frame loop as `compose`
(`encode_video`) from a *sub-timeline*: the scenes it shows, shifted so that the segment starts at 0, and the
captions on screen during it. Cuts fall where the previous scene has just left the screen (after a transition), so
every segment shows one scene's body and the transition out of it; a cut never falls inside a video clip (clips are
decoded from their start), so a clip's scene joins the segment before it.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ..assets import asset_key, atomic_path, file_digest
from ..errors import Cancelled, StudioError
from ..media import INPUT_GUARD, probe, run_ffmpeg
from ..progress import CancelToken, ProgressFn, no_progress
from .timeline import Timeline

SEGMENT_VERSION = 1  # bump when a change here changes the frames a segment holds


@dataclass(frozen=True)
class SegmentPlan:
    """One segment of a render: frames ``[first_frame, end_frame)`` of the video and what they depend on.

    Attributes:
        index: Position in the video (0-based).
        first_frame: First frame (inclusive).
        end_frame: Frame after the last one (exclusive).
        scene_ids: The scenes visible in the segment.
        key: sha256 of everything the segment's pixels depend on: its file is ``<key>.mp4`` in an asset folder.
    """

    index: int
    first_frame: int
    end_frame: int
    scene_ids: tuple[str, ...]
    key: str

    @property
    def frames(self) -> int:
        return self.end_frame - self.first_frame


@dataclass(frozen=True)
class SegmentResult:
    """A rendered segment: its file and whether it was found in the asset folder rather than rendered."""

    index: int
    path: Path
    reused: bool


def _frame_ranges(timeline: Timeline) -> list[tuple[int, int]]:
    from .render import frame_ranges

    return frame_ranges(timeline)


def plan_segments(timeline: Timeline, *, min_frames: int = 1) -> list[SegmentPlan]:
    """Cut `timeline` into segments, one per scene where possible (see the module docstring for where cuts fall).

    Args:
        timeline: The whole video.
        min_frames: A segment shorter than this joins the one before it.
    """
    total = timeline.frame_count
    if total < 1:
        raise StudioError("the timeline has no frames; give its scenes some duration")
    ranges = _frame_ranges(timeline)
    cuts = [0]
    for i in range(1, len(timeline.segments)):
        cut = ranges[i - 1][1] + 1  # the first frame without the previous scene
        if not cuts[-1] < cut < total:
            continue
        spanning = [j for j, (first, last) in enumerate(ranges) if first <= cut - 1 and last >= cut]
        if any(timeline.segments[j].kind != "image" for j in spanning):
            continue  # a clip cannot start mid-way: keep it whole in the segment before
        if cut - cuts[-1] < min_frames:
            continue
        cuts.append(cut)
    if len(cuts) > 1 and total - cuts[-1] < min_frames:
        cuts.pop()
    bounds = list(zip(cuts, cuts[1:] + [total]))
    watermark = _watermark_key(timeline)
    plans = []
    for index, (first, end) in enumerate(bounds):
        part = sub_timeline(timeline, first, end)
        ids = tuple(seg.scene_id for seg in part.segments)
        plans.append(SegmentPlan(index, first, end, ids, _segment_key(part, watermark)))
    return plans


def sub_timeline(timeline: Timeline, first_frame: int, end_frame: int) -> Timeline:
    """The part of `timeline` shown in frames ``[first_frame, end_frame)``, on a clock that starts at its first frame.

    It holds the visible scenes (shifted, so their motion and transitions continue exactly where they were) and the
    captions on screen; no soundtrack (the audio is mixed once for the whole video).
    """
    if not 0 <= first_frame < end_frame <= timeline.frame_count:
        raise StudioError(f"frames [{first_frame}, {end_frame}) are outside the video's {timeline.frame_count} frames")
    fps = timeline.fps
    t0 = first_frame / fps
    t1 = end_frame / fps
    ranges = _frame_ranges(timeline)
    segments = tuple(replace(seg, start_s=seg.start_s - t0)
                     for seg, (first, last) in zip(timeline.segments, ranges)
                     if first <= end_frame - 1 and last >= first_frame)
    captions = tuple(replace(c, start_s=_local_caption_time(c.start_s, fps, first_frame),
                             end_s=_local_caption_time(c.end_s, fps, first_frame))
                     for c in timeline.captions if c.end_s > t0 and c.start_s < t1)
    return replace(timeline, duration_s=(end_frame - first_frame) / fps, segments=segments, captions=captions,
                   narration=(), music=None, notes=())


def _local_caption_time(time_s: float, fps: int, first_frame: int) -> float:
    """A caption time moved onto a segment's clock so that it changes on the same frame as in the whole video.

    `CaptionOverlays` shows a caption from the first frame whose time in whole milliseconds reaches the caption's
    start rounded to centiseconds (ASS times). Shifting the time itself would round differently and could move a
    caption by a frame at a segment's edge, so the frame is found on the whole video's clock and the local time is
    that frame's time, rounded down to a centisecond.
    """
    threshold_ms = int(round(time_s * 100)) * 10
    frame = max(0, math.ceil(threshold_ms * fps / 1000) - 1)
    while int(frame * 1000 / fps) < threshold_ms:
        frame += 1
    local_ms = int((frame - first_frame) * 1000 / fps) if frame >= first_frame else -int(round((first_frame - frame) * 1000 / fps))
    return math.floor(local_ms / 10) / 100


def _watermark_key(timeline: Timeline) -> str | None:
    mark = timeline.watermark
    if mark is None:
        return None
    return f"{file_digest(mark.path)}:{mark.corner}:{mark.width_frac}:{mark.margin_frac}:{mark.opacity}"


def _segment_key(part: Timeline, watermark: str | None) -> str:
    """Everything a segment's pixels depend on. Sources are content-addressed assets (their names are hashes);
    a user's own file outside an asset folder is keyed by its bytes."""

    def source_id(path: Path) -> str:
        stem = Path(path).stem
        if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
            return stem
        return "sha256:" + file_digest(path)

    return asset_key(
        step="segment",
        version=SEGMENT_VERSION,
        size=[part.width, part.height],
        fps=part.fps,
        frames=part.frame_count,
        encoder=part.encoder,
        encoder_args=list(part.encoder_args),
        segments=[[source_id(s.source), s.kind, round(s.start_s, 6), round(s.duration_s, 6), s.motion,
                   [list(r.as_tuple()) for r in s.ken_burns], s.transition.kind, round(s.transition.duration_s, 6)]
                  for s in part.segments],
        captions=[[round(c.start_s, 4), round(c.end_s, 4), list(c.lines)] for c in part.captions],
        # The font by its bytes (`font_sha256`), not its path: a changed font re-renders, a moved one does not.
        layout=repr(replace(part.caption_layout, font_path=Path()))
        if part.captions and part.caption_layout is not None else None,
        watermark=watermark,
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
    final = folder / f"{plan.key}.mp4"
    if final.is_file() and final.stat().st_size > 0:
        return SegmentResult(plan.index, final, True)
    token = cancel if cancel is not None else CancelToken()
    report = on_progress or no_progress
    part = sub_timeline(timeline, plan.first_frame, plan.end_frame)

    # 2. Render it in a private work folder (ffmpeg's working directory: filters see only names made here).
    work = Path(tempfile.mkdtemp(prefix=f".segment-{plan.index:04d}-", dir=folder)).resolve()
    captions = None
    try:
        if part.captions:
            captions = CaptionOverlays(part.caption_layout, part.captions, part.fps, work, token)
        video = encode_video(part, work, cancel=token, on_progress=report, captions=captions)  # closes `captions`

        # 3. Check it, then put it in place under its key.
        info = probe(video)
        expected = plan.frames / part.fps
        if not info.has_video or abs(info.duration_s - expected) > 1.0 / part.fps + 1e-3:
            raise StudioError(f"segment {plan.index + 1} came out {info.duration_s:.3f} s long, expected {expected:.3f} s")
        with atomic_path(final) as tmp:
            os.replace(video, tmp)
        return SegmentResult(plan.index, final, False)
    except BaseException:
        if captions is not None:
            captions.close(stop=True)
        if cancel is not None and cancel.cancelled:
            raise Cancelled() from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def join_segments(timeline: Timeline, parts: Sequence[Path], output: Path, *, cancel: CancelToken | None = None,
                  on_progress: ProgressFn | None = None):
    """Join rendered segments (in order) into the finished MP4 with the soundtrack; returns a `RenderResult`.

    The video streams are concatenated without re-encoding (ffmpeg's concat demuxer reads a list this function
    writes, naming only links it made in its own work folder); the soundtrack is mixed, normalised and encoded for the
    whole video. The MP4 is written to a temporary ``*.part`` name beside `output`, checked (streams, size, duration
    within one frame) and only then renamed onto `output`.
    """
    from ..media import check_output_path
    from .audio import encode_soundtrack
    from .render import RenderResult, _check_output

    # 1. Check the inputs.
    output = check_output_path(Path(output))
    if not parts:
        raise StudioError("no segments to join: render the segments of `plan_segments(timeline)` first")
    missing = [str(p) for p in parts if not Path(p).is_file()]
    if missing:
        raise StudioError(f"segment file(s) missing: {', '.join(missing)}; render them again")
    report = on_progress or no_progress
    token = cancel if cancel is not None else CancelToken()

    # 2. A private work folder beside the output, with the segments linked under names made here.
    work = Path(tempfile.mkdtemp(prefix=f".{output.stem}.render-", dir=output.parent)).resolve()
    try:
        report(0.0, "mixing the soundtrack")
        audio = encode_soundtrack(timeline, work, cancel=token)
        lines = []
        for i, part in enumerate(parts):
            name = f"segment-{i:05d}.mp4"
            try:
                os.link(part, work / name)
            except OSError:  # another file system: copy
                shutil.copyfile(part, work / name)
            lines.append(f"file '{name}'\n")
        (work / "segments.txt").write_text("".join(lines), "utf-8")

        # 3. Join, check, put in place.
        report(0.6, "joining the segments")
        with atomic_path(output) as tmp:
            run_ffmpeg([*INPUT_GUARD, "-f", "concat", "-safe", "1", "-i", "segments.txt", *INPUT_GUARD, "-i", audio.name,
                        "-map", "0:v:0", "-map", "1:a:0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4",
                        Path(tmp).resolve()], cwd=work, cancel=token, what="joining the segments")
            info = _check_output(Path(tmp), timeline)
        report(1.0, f"done: {output.name}")
        return RenderResult(path=output, duration_s=info.duration_s, size_bytes=output.stat().st_size,
                            width=info.width, height=info.height, fps=timeline.fps, encoder=timeline.encoder,
                            timeline=timeline)
    except BaseException:
        if cancel is not None and cancel.cancelled:
            raise Cancelled() from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)

