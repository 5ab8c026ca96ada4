"""Segment-wise composition: segments cover the video exactly, join without a seam, are assets named by what changes
their frames, and an edit re-renders only the segments it touches."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import studio
from studio.compose import build_timeline, compose
from studio.compose.captions import CaptionEvent
from studio.compose.segments import (adopt_assets, join_segments, plan_segments, preview_scene, render_segment,
                                     scene_segments, soundtrack_key, sub_timeline)
from studio.compose.timeline import caption_frames, frame_time
from studio.pipeline import make_video
from studio.project import Project

from .conftest import video_facts
from .jobs_support import write_tiny_preset

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf")


@pytest.fixture
def tiny(tmp_path):
    return studio.load_preset(write_tiny_preset(tmp_path))


@pytest.fixture
def fine(tmp_path):
    """The tiny preset with near-lossless x264, so two encodes of the same frames differ very little."""
    path = write_tiny_preset(tmp_path)
    path.write_text(path.read_text("utf-8").replace("crf = 35", "crf = 4"), "utf-8")
    return studio.load_preset(path)


def made_project(tmp_path, preset, scenes, name="proj") -> Project:
    """A project narrated and painted (the first two steps), ready to compose."""
    project = Project.from_storyboard(scenes, title="Segments", aspect="1:1").save(tmp_path / name)
    out = tmp_path / f"{name}-first.mp4"
    return make_video(project, preset=preset, output=out, segments=False).project


def yuv_frames(path) -> np.ndarray:
    """Every decoded frame as its yuv420p bytes (one row per frame)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="yuv420p").reshape(-1) for f in container.decode(video=0)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def render(project, preset, output):
    """make_video segment by segment; returns (summary, {plan index: segment event})."""
    events = []
    summary = make_video(project, preset=preset, output=output, segments=True,
                         on_event=lambda kind, data: events.append((kind, data)))
    return summary, {d["index"] - 1: d for k, d in events if k == "segment"}


FIVE = [{"narration": f"Scene {n} says a few words here.", "transition": "crossfade"} for n in
        ("one", "two", "three", "four", "five")]


def test_segments_cover_the_video_and_join_like_a_one_pass_render(tmp_path, fine):
    scenes = [{"narration": "The first scene speaks a few words.", "transition": "crossfade"},
              {"narration": "Second.", "duration_s": 1.5, "transition": "wipe"},
              {"narration": "The third scene has a caption too.", "transition": "fade"},
              {"narration": "Last one.", "duration_s": 1.2, "transition": "cut"}]
    project = made_project(tmp_path, fine, scenes)
    timeline = build_timeline(project, fine)
    plans = plan_segments(timeline)
    # Each scene's own frames, and each transition between them (the cut into the last scene has none).
    assert [p.kind for p in plans] == ["scene", "transition", "scene", "transition", "scene", "scene"]
    ids = [s.id for s in project.scenes]
    assert [p.scene_ids for p in plans] == [(ids[0],), (ids[0], ids[1]), (ids[1],), (ids[1], ids[2]), (ids[2],),
                                            (ids[3],)]
    assert plans[0].first_frame == 0 and plans[-1].end_frame == timeline.frame_count
    assert all(a.end_frame == b.first_frame for a, b in zip(plans, plans[1:]))
    assert len({p.key for p in plans}) == len(plans)

    parts = [render_segment(timeline, plan, project.assets_dir) for plan in plans]
    assert not any(p.reused for p in parts)
    for plan, part in zip(plans, parts):
        assert video_facts(part.path)["frames"] == plan.frames
    joined = join_segments(timeline, [p.path for p in parts], tmp_path / "joined.mp4")
    whole = compose(project, fine, tmp_path / "whole.mp4")
    a, b = video_facts(joined.path), video_facts(whole.path)
    assert a["frames"] == b["frames"] == timeline.frame_count
    assert abs(a["duration_s"] - timeline.duration_s) <= 1 / fine.fps
    assert a["has_audio"] and a["audio_codec"] == "aac"
    # Same pictures frame by frame (two encodes differ only by compression noise); at every join, the frames either
    # side match the one-pass render closely: a caption or a transition a frame off would show there.
    x, y = yuv_frames(joined.path), yuv_frames(whole.path)
    values = [psnr(x[k], y[k]) for k in range(len(x))]
    assert min(values) > 38, f"frame {int(np.argmin(values))} is at {min(values):.1f} dB"
    for plan in plans[1:]:
        for k in (plan.first_frame - 1, plan.first_frame):
            assert psnr(x[k], y[k]) > 40, f"join at frame {plan.first_frame}: frame {k} differs"

    again = [render_segment(timeline, plan, project.assets_dir) for plan in plans]
    assert all(p.reused for p in again) and [p.path for p in again] == [p.path for p in parts]


def test_editing_one_scene_re_renders_its_segment_and_its_two_transitions(tmp_path, tiny):
    project = Project.from_storyboard(FIVE, title="Edit", aspect="1:1").save(tmp_path / "proj")
    first, first_events = render(project, tiny, tmp_path / "a.mp4")
    assert first.segmented and first.segments_made == 9 and first.segments_reused == 0
    assert len(first_events) == 9 and not any(d["reused"] for d in first_events.values())
    old_timeline = build_timeline(first.project, tiny)
    old_plans = plan_segments(old_timeline)
    old_frames = yuv_frames(first.output)

    # A longer narration for scene 3: its length changes, so everything after it moves.
    edited = first.project.edit_scene(first.project.scenes[2].id,
                                      narration="Scene three now says rather more words than it did before.")
    second, events = render(edited, tiny, tmp_path / "b.mp4")
    timeline = build_timeline(second.project, tiny)
    assert timeline.duration_s > old_timeline.duration_s
    plans = plan_segments(timeline)
    redone = {i for i, d in events.items() if not d["reused"]}
    third = second.project.scenes[2].id
    # Exactly scene 3's own segment and the transitions into and out of it.
    assert [plans[i].kind for i in sorted(redone)] == ["transition", "scene", "transition"]
    assert all(third in plans[i].scene_ids for i in redone)
    assert second.segments_made == 3 and second.segments_reused == 6 and not second.soundtrack_reused
    assert "segments: 6 of 9 reused, 3 rendered" in second.describe()

    # The output lasts the timeline's length, within a frame; outside the re-rendered segments every frame is the
    # previous render's, bit for bit (reused segments are joined as they were).
    facts = video_facts(second.output)
    assert abs(facts["duration_s"] - timeline.duration_s) <= 1 / tiny.fps
    assert facts["frames"] == timeline.frame_count
    new_frames = yuv_frames(second.output)
    by_key = {p.key: p for p in old_plans}
    for plan in plans:
        if plan.index in redone:
            continue
        old = by_key[plan.key]
        assert np.array_equal(new_frames[plan.first_frame:plan.end_frame], old_frames[old.first_frame:old.end_frame])
    assert sum(p.frames for p in plans if p.index not in redone) > 0.5 * timeline.frame_count


def test_a_new_picture_or_transition_re_renders_only_what_shows_it(tmp_path, tiny):
    project = made_project(tmp_path, tiny, FIVE)
    before = {p.key for p in plan_segments(build_timeline(project, tiny))}
    second = project.scenes[1].id

    # Another picture for scene 2: its own segment and its two transitions.
    painted = studio.illustrate(project.edit_scene(second, visual_prompt="a red barn"), painter="cards",
                                preset=tiny).save()
    plans = plan_segments(build_timeline(painted, tiny))
    changed = [p for p in plans if p.key not in before]
    assert [p.kind for p in changed] == ["transition", "scene", "transition"]
    assert all(second in p.scene_ids for p in changed)

    # Another transition into scene 2 (as long as the one before): only that transition.
    wiped = project.edit_scene(second, transition="wipe")
    plans = plan_segments(build_timeline(wiped, tiny))
    changed = [p for p in plans if p.key not in before]
    assert [(p.kind, p.scene_ids) for p in changed] == [("transition", (project.scenes[0].id, second))]
    # The soundtrack does not depend on pictures or on the kind of a transition.
    assert soundtrack_key(build_timeline(painted, tiny)) == soundtrack_key(build_timeline(project, tiny))


def test_what_touches_every_frame_invalidates_every_segment_and_nothing_else_does(tmp_path, tiny, make_image,
                                                                               make_tone):
    project = made_project(tmp_path, tiny, FIVE[:3])
    keys = [p.key for p in plan_segments(build_timeline(project, tiny))]
    (tmp_path / "other").mkdir()
    path = write_tiny_preset(tmp_path / "other")
    path.write_text(path.read_text("utf-8").replace("crf = 35", "crf = 30"), "utf-8")
    other_preset = studio.load_preset(path)  # the same tier with another encoder setting
    logo = make_image("logo.png", size=(64, 32))
    every = {
        "preset": (project, other_preset),
        "aspect": (replace(project, aspect="16:9"), tiny),
        "caption style": (replace(project, caption_style="boxed"), tiny),
        "karaoke captions": (replace(project, caption_style="karaoke"), tiny),
        "words captions": (replace(project, caption_style="words"), tiny),
        "font": (replace(project, caption_font=FONT), tiny),
        "watermark": (replace(project, watermark=logo), tiny),
    }
    for what, (changed, preset) in every.items():
        new = [p.key for p in plan_segments(build_timeline(changed, preset))]
        assert not set(new) & set(keys), f"a {what} change left some segments valid"
    nothing = {
        "title": replace(project, title="Another title"),
        "music": replace(project, music=make_tone("music.wav", 3.0), music_volume=0.4),
        "brief": replace(project, brief="Something else entirely"),
    }
    for what, changed in nothing.items():
        assert [p.key for p in plan_segments(build_timeline(changed, tiny))] == keys, f"a {what} change re-renders"
    assert soundtrack_key(build_timeline(nothing["music"], tiny)) != soundtrack_key(build_timeline(project, tiny))


def test_scene_preview_makes_the_segments_the_whole_render_reuses(tmp_path, tiny):
    project = made_project(tmp_path, tiny, FIVE)
    full = plan_segments(build_timeline(project, tiny))
    for scene in project.scenes:  # the first, the middle ones and the last: the same keys as in the whole video
        _, _, plans = scene_segments(project, tiny, scene.id)
        assert [p.key for p in plans] == [p.key for p in full if scene.id in p.scene_ids]

    preview = preview_scene(project, tiny, project.scenes[2].id, tmp_path / "preview.mp4")
    assert [p.kind for p in preview.plans] == ["transition", "scene", "transition"] and preview.reused == 0
    facts = video_facts(preview.path)
    assert facts["has_audio"] and facts["frames"] == sum(p.frames for p in preview.plans)
    summary, events = render(project, tiny, tmp_path / "whole.mp4")
    reused = {d["index"] - 1 for d in events.values() if d["reused"]}
    assert reused == {p.index for p in full if project.scenes[2].id in p.scene_ids}
    assert summary.segments_reused == 3


def test_assets_are_adopted_without_replacing_anything(tmp_path):
    source, target = tmp_path / "job" / "assets", tmp_path / "mine" / "assets"
    source.mkdir(parents=True)
    target.mkdir(parents=True)
    (source / "a.mp4").write_bytes(b"a")
    (source / "b.mp4").write_bytes(b"b")
    (source / ".b.part-x.mp4").write_bytes(b"partial")
    (target / "b.mp4").write_bytes(b"mine")
    assert adopt_assets(source, target) == 1
    assert (target / "a.mp4").read_bytes() == b"a" and (target / "b.mp4").read_bytes() == b"mine"
    assert not (target / ".b.part-x.mp4").exists()
    assert adopt_assets(tmp_path / "missing", target) == 0


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
    _, _, preview = scene_segments(project, tiny, clip_id)
    assert [p.key for p in preview] == [holding[0].key]


def test_timing_and_captions_are_on_whole_frames(tmp_path, tiny):
    project = made_project(tmp_path, tiny, FIVE[:3])
    timeline = build_timeline(project, tiny)
    fps = timeline.fps
    for seg in timeline.segments:
        assert seg.start_s * fps == pytest.approx(round(seg.start_s * fps), abs=1e-9)
        assert seg.duration_s * fps == pytest.approx(round(seg.duration_s * fps), abs=1e-9)
    assert timeline.captions
    for c in timeline.captions:
        first, end = caption_frames(c, fps)
        assert (c.start_s, c.end_s) == (frame_time(first, fps), frame_time(end, fps))


def test_a_caption_shows_on_the_same_frames_on_any_clock():
    """`frame_time` gives the time that shows a caption from exactly a frame on (CaptionOverlays' rule: whole
    milliseconds against centisecond ASS times), so a segment shows a caption on the frames the whole video does."""
    for fps in (1, 12, 24, 25, 30, 50, 60, 100):
        for k in range(0, 30000, 13):
            event = CaptionEvent(frame_time(k, fps), frame_time(k + 2, fps), ("x",))
            assert caption_frames(event, fps) == (k, k + 2), (fps, k)
    rng = np.random.default_rng(7)
    for _ in range(300):  # a caption at any time, cut out of the video at any frame, shows on the same frames
        fps = int(rng.choice([12, 24, 25, 30, 60]))
        event = CaptionEvent(float(rng.uniform(0, 60)), 0.0, ("x",))
        event = replace(event, end_s=event.start_s + float(rng.uniform(0.05, 3)))
        first, end = caption_frames(event, fps)
        cut = int(rng.integers(max(0, first - 20), end + 5))
        from studio.compose.timeline import Timeline

        timeline = Timeline(width=16, height=16, fps=fps, duration_s=(end + 40) / fps, segments=(), captions=(event,),
                            caption_layout=None, narration=(), music=None, watermark=None, encoder="libx264",
                            encoder_args=(), audio_bitrate_kbps=32, sample_rate=16000, loudness_lufs=-16)
        part = sub_timeline(timeline, cut, end + 40)
        if end <= cut:
            assert part.captions == ()
        else:
            assert caption_frames(part.captions[0], fps) == (max(first, cut) - cut, end - cut)
