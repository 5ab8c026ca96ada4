"""Segment-wise composition: segments cover the video exactly, match a one-pass render, and are cached by content."""

from __future__ import annotations

import numpy as np
import pytest

import studio
from studio.compose import build_timeline, compose
from studio.compose.segments import join_segments, plan_segments, render_segment, sub_timeline
from studio.pipeline import make_video
from studio.project import Project

from .conftest import video_facts
from .jobs_support import write_tiny_preset


@pytest.fixture
def tiny(tmp_path):
    return studio.load_preset(write_tiny_preset(tmp_path))


@pytest.fixture
def fine(tmp_path):
    """The tiny preset with near-lossless x264, so two encodes of the same frames differ very little."""
    path = write_tiny_preset(tmp_path)
    path.write_text(path.read_text("utf-8").replace("crf = 35", "crf = 4"), "utf-8")
    return studio.load_preset(path)


def made_project(tmp_path, tiny, scenes, name="proj") -> Project:
    """A project narrated and painted (the first two steps), ready to compose."""
    project = Project.from_storyboard(scenes, title="Segments", aspect="1:1").save(tmp_path / name)
    out = tmp_path / f"{name}-first.mp4"
    return make_video(project, preset=tiny, output=out, segments=False).project


def luma_frames(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="gray").astype(np.int16) for f in container.decode(video=0)])


def test_segments_cover_the_video_and_match_a_one_pass_render(tmp_path, fine):
    tiny = fine
    scenes = [{"narration": "The first scene speaks a few words.", "transition": "crossfade"},
              {"narration": "Second.", "duration_s": 1.5, "transition": "wipe"},
              {"narration": "The third scene has a caption too.", "transition": "fade"},
              {"narration": "Last one.", "duration_s": 1.2, "transition": "cut"}]
    project = made_project(tmp_path, tiny, scenes)
    timeline = build_timeline(project, tiny)
    plans = plan_segments(timeline)
    assert len(plans) == 4
    assert plans[0].first_frame == 0 and plans[-1].end_frame == timeline.frame_count
    assert all(a.end_frame == b.first_frame for a, b in zip(plans, plans[1:]))
    assert len({p.key for p in plans}) == len(plans)

    parts = [render_segment(timeline, plan, project.assets_dir) for plan in plans]
    assert not any(p.reused for p in parts)
    for plan, part in zip(plans, parts):
        assert video_facts(part.path)["frames"] == plan.frames
    joined = join_segments(timeline, [p.path for p in parts], tmp_path / "joined.mp4")
    whole = compose(project, tiny, tmp_path / "whole.mp4")
    a, b = video_facts(joined.path), video_facts(whole.path)
    assert a["frames"] == b["frames"] == timeline.frame_count
    assert a["duration_s"] == pytest.approx(b["duration_s"], abs=1 / tiny.fps)
    assert a["has_audio"] and a["audio_codec"] == "aac"
    # Same pictures frame by frame (two encodes differ only by compression noise): a caption or transition one frame
    # off at a segment's edge would show as a large difference on that frame.
    diff = np.abs(luma_frames(joined.path) - luma_frames(whole.path)).mean(axis=(1, 2))
    assert diff.max() < 1.5, f"frame {int(diff.argmax())} differs by {diff.max():.1f} levels"

    again = [render_segment(timeline, plan, project.assets_dir) for plan in plans]
    assert all(p.reused for p in again) and [p.path for p in again] == [p.path for p in parts]


def test_a_clip_is_never_cut(tmp_path, tiny, make_clip):
    clip = make_clip("clip.mp4", size=(160, 120), duration_s=2.0, fps=12)
    scenes = [{"narration": "Before.", "duration_s": 1.0}, {"narration": "", "duration_s": 2.0, "media": str(clip)},
              {"narration": "After.", "duration_s": 1.0}]
    project = Project.from_storyboard(scenes, title="Clip", aspect="1:1").save(tmp_path / "proj")
    project = make_video(project, preset=tiny, output=tmp_path / "a.mp4", media_root=tmp_path, segments=True).project
    timeline = build_timeline(project, tiny)
    plans = plan_segments(timeline)
    clip_id = project.scenes[1].id
    holding = [p for p in plans if clip_id in p.scene_ids]
    assert len(holding) == 1  # the clip's scene lies in one segment, decoded from its start
    part = sub_timeline(timeline, holding[0].first_frame, holding[0].end_frame)
    seg = next(s for s in part.segments if s.scene_id == clip_id)
    assert seg.start_s >= -1e-9


def test_editing_one_scene_renders_only_its_segments_again(tmp_path, tiny):
    scenes = [{"narration": f"Scene number {i}.", "duration_s": 1.0} for i in range(4)]
    project = Project.from_storyboard(scenes, title="Edit", aspect="1:1").save(tmp_path / "proj")
    events = []
    first = make_video(project, preset=tiny, output=tmp_path / "a.mp4", segments=True, on_event=lambda k, d: events.append((k, d)))
    assert [d["reused"] for k, d in events if k == "segment"] == [False] * 4

    edited = first.project.edit_scene(first.project.scenes[2].id, narration="A new line for scene three.")
    events.clear()
    second = make_video(edited, preset=tiny, output=tmp_path / "b.mp4", segments=True, on_event=lambda k, d: events.append((k, d)))
    narrated = [d["reused"] for k, d in events if k == "scene" and d["step"] == "narrate"]
    assert narrated == [True, True, False, True]
    segments = {d["index"]: d for k, d in events if k == "segment"}
    redone = {i for i, d in segments.items() if not d["reused"]}
    # the edited scene's own segment and the one before it (which holds the transition into it) at most
    assert 3 in redone and redone <= {2, 3}
    assert segments[1]["reused"] and segments[4]["reused"]
    video_facts(second.output)


def test_captions_change_on_the_same_frame_in_a_segment():
    """CaptionOverlays shows a caption from the first frame whose whole-millisecond time reaches its start rounded to
    centiseconds; on a segment's clock that must be the same frame of the video."""
    from studio.compose.segments import _local_caption_time

    def first_frame(start_s: float, fps: int) -> int:
        threshold = int(round(start_s * 100)) * 10
        k = -10_000
        while int(k * 1000 / fps) < threshold:
            k += 1
        return k

    rng = np.random.default_rng(7)
    cases = [(3.9137569160997736, 24, 59)] + [(float(rng.uniform(0, 60)), int(rng.choice([12, 24, 25, 30, 60])),
                                                int(rng.integers(0, 1500))) for _ in range(500)]
    for start_s, fps, first in cases:
        local = _local_caption_time(start_s, fps, first)
        global_frame = first_frame(start_s, fps)
        if global_frame >= first:
            assert first_frame(local, fps) == global_frame - first, (start_s, fps, first)
        else:
            assert first_frame(local, fps) <= 0
    # the plain shift gets the first case wrong by a frame, which is why the local time is chosen this way
    start_s, fps, first = cases[0]
    assert first_frame(start_s - first / fps, fps) != first_frame(start_s, fps) - first
