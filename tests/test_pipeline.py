"""End to end: script -> storyboard -> narration -> visuals -> MP4, through the library and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import studio
from studio import Project, StudioError
from studio.pipeline import make_video

from .conftest import ROOT, video_facts

SHORT_SCRIPT = "# Tiny test\n\nThe sun rises.\n\nThe moon sets slowly."
TRICKY_SCRIPT = "# Odd {text}\n\nIt's 50% off: a, b; [c] \\d {e} \\N {\\b1}bold.\nNew line here."


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def check_video(summary, preset_name: str, aspect: str) -> dict:
    preset = studio.load_preset(preset_name)
    facts = video_facts(summary.output)
    assert (facts["width"], facts["height"]) == preset.size(aspect)
    assert facts["fps"] == pytest.approx(preset.fps, abs=0.01)
    assert abs(facts["video_duration_s"] - summary.duration_s) <= 1.0 / preset.fps + 1e-6
    assert facts["has_audio"] and facts["audio_codec"] == "aac"
    assert facts["video_codec"] == "h264"
    return facts


def test_script_to_video_and_reuse(tmp_path):
    project_dir = tmp_path / "proj"
    out = tmp_path / "tiny.mp4"
    summary = make_video(SHORT_SCRIPT, preset="draft", output=out, project_dir=project_dir)
    facts = check_video(summary, "draft", "16:9")
    narration_s = sum(s.audio_duration_s for s in summary.project.scenes)
    assert facts["duration_s"] > narration_s  # narration plus pads, transitions overlap less than the pads
    assert [s.name for s in summary.steps] == ["storyboard", "narrate", "illustrate", "compose"]
    # 2 scenes x (audio + card); a kept project composes segment by segment: 2 scenes and the transition between
    assert summary.segmented and summary.segments_made == 3
    assert summary.made == 4 + 3 and summary.reused == 0
    assert (project_dir / "project.json").is_file()

    # A second run over the kept project reuses every asset.
    again = make_video(Project.load(project_dir), preset="draft", output=tmp_path / "again.mp4", project_dir=project_dir)
    assert again.made == 0 and again.reused == 4 + 3 and again.soundtrack_reused
    assert "segments: 3 of 3 reused, 0 rendered; soundtrack reused" in again.describe()

    # Editing one scene's narration re-makes only that scene's audio (and the card, whose key words follow it).
    project = Project.load(project_dir)
    first, second = project.scenes
    edited = project.edit_scene(second.id, narration="The moon sets behind the hills.")
    third = make_video(edited, preset="draft", output=tmp_path / "edited.mp4", project_dir=project_dir)
    narrate_step = next(s for s in third.steps if s.name == "narrate")
    assert narrate_step.made == 1 and narrate_step.reused == 1
    kept = {s.id: s for s in third.project.scenes}
    assert kept[first.id].audio == first.audio and kept[second.id].audio != second.audio


def test_brief_vertical_standard(tmp_path):
    summary = make_video("Why the sky is blue", preset="standard", output=tmp_path / "sky.mp4", aspect="9:16")
    check_video(summary, "standard", "9:16")
    assert any("LLM" in note or "outline" in note for note in summary.project.notes)


def test_special_characters_render(tmp_path):
    summary = make_video(TRICKY_SCRIPT, preset="draft", output=tmp_path / "tricky.mp4", aspect="1:1")
    check_video(summary, "draft", "1:1")
    narration = " ".join(s.narration for s in summary.project.scenes)
    for piece in ("50%", "[c]", "\\d", "{e}", "\\N", "{\\b1}bold"):
        assert piece in narration


def test_failed_render_keeps_existing_output(tmp_path, make_image):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"previous video")
    bad = tmp_path / "broken.png"
    bad.write_bytes(os.urandom(2048))
    project = Project.from_storyboard([{"narration": "Hello there.", "media": str(bad)}], title="Broken")
    with pytest.raises(StudioError, match="broken.png"):
        make_video(project, preset="draft", output=out)
    assert out.read_bytes() == b"previous video"
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"output": "missing-folder/x.mp4"}, "does not exist"),
        ({"preset": "ultra"}, "unknown preset"),
        ({"aspect": "4:3"}, "aspect"),
        ({"output": "video.avi"}, "must end in .mp4"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    args = {"preset": "draft", "output": str(tmp_path / "x.mp4"), **kwargs}
    if not Path(args["output"]).is_absolute():
        args["output"] = str(tmp_path / args["output"])
    with pytest.raises(StudioError, match=message):
        make_video(SHORT_SCRIPT, **args)


def test_bad_music_file(tmp_path):
    music = tmp_path / "music.mp3"
    music.write_bytes(b"not really audio" * 100)
    with pytest.raises(StudioError, match="music.mp3"):
        make_video(SHORT_SCRIPT, preset="draft", output=tmp_path / "x.mp4", music=music)


def test_cli_storyboard_then_render(tmp_path):
    csv = tmp_path / "sky.csv"
    res = run_cli("storyboard", "examples/sky.md", "--output", str(csv))
    assert res.returncode == 0, res.stderr
    assert csv.is_file() and "scenes" in res.stdout
    project = Project.read_storyboard(csv)
    assert len(project.scenes) >= 2
    # keep the render short: only the first two scenes
    short = project.with_scenes(project.scenes[:2])
    short.write_storyboard_file(csv)
    out = tmp_path / "sky.mp4"
    res = run_cli("render", "--storyboard", str(csv), "--preset", "draft", "--output", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout and "narrate" in res.stdout and "reused" in res.stdout
    assert "composed in one pass" in res.stdout  # no --project: nothing could be reused, so no segments
    assert video_facts(out)["has_audio"]


def test_cli_render_dry_run_plans_each_step_and_makes_nothing(tmp_path):
    out = tmp_path / "plan.mp4"
    res = run_cli("render", "--brief", "How bees make honey", "--aspect", "9:16", "--preset", "standard",
                  "--output", str(out), "--dry-run", "--narrator", "espeak", "--painter", "cards")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "9:16, Standard (720x1280 at 30 fps)" in lines[0] and "on this machine" in lines[0]
    steps = [line.strip().split(":")[0] for line in lines[1:]]
    assert steps == ["storyboard", "narrate", "illustrate", "compose"]
    assert "espeak" in lines[2] and "cards" in lines[3] and "[test encode]" in lines[4]
    assert not out.exists()


def test_cli_project_re_renders_only_the_edited_scene(tmp_path):
    from studio.testing import write_tiny_preset

    preset = str(write_tiny_preset(tmp_path))
    csv = tmp_path / "story.csv"
    Project.from_storyboard([{"narration": f"Scene {n} speaks.", "transition": "crossfade"}
                             for n in ("one", "two", "three")]).write_storyboard_file(csv)
    folder, out = tmp_path / "proj", tmp_path / "a.mp4"
    res = run_cli("render", "--storyboard", str(csv), "--preset", preset, "--project", str(folder), "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    assert "segments: 0 of 5 reused, 5 rendered; soundtrack mixed" in res.stdout

    # Edit the last scene in the kept project, then render the project again: its segment and the transition into it.
    project = Project.load(folder)
    project.edit_scene(project.scenes[2].id, narration="Scene three says something else now.").save()
    res = run_cli("render", "--preset", preset, "--project", str(folder), "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    assert "segments: 3 of 5 reused, 2 rendered; soundtrack mixed" in res.stdout
    from studio.compose import build_timeline

    timeline = build_timeline(Project.load(folder), studio.load_preset(preset))
    assert abs(video_facts(out)["duration_s"] - timeline.duration_s) <= 1 / timeline.fps
    res = run_cli("render", "--preset", preset, "--project", str(folder), "-o", str(tmp_path / "b.mp4"), "-q",
                  "--one-pass")
    assert res.returncode == 0 and "composed in one pass" in res.stdout, res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["render", "--output", "x.mp4"], "nothing to work from"),
        (["render", "EMPTY", "--output", "x.mp4"], "empty"),
        (["render", "examples/coffee.md", "--preset", "nope", "--output", "x.mp4"], "unknown preset"),
        (["render", "examples/coffee.md", "--output", "no/such/dir/x.mp4"], "does not exist"),
        (["render", "missing.md", "--output", "x.mp4"], "missing.md"),
        (["render", "--brief", "  ", "--output", "x.mp4"], "empty"),
    ],
)
def test_cli_errors_are_clear(tmp_path, args, message):
    empty = tmp_path / "empty.md"
    empty.write_text("   \n")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    args = [str(tmp_path / a) if a.endswith(".mp4") else a for a in args]
    res = run_cli(*args)
    assert res.returncode == 2
    assert "error:" in res.stderr and message in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_rejects_unsupported_aspect(tmp_path):
    res = run_cli("render", "examples/sky.md", "--aspect", "4:3", "--output", str(tmp_path / "x.mp4"))
    assert res.returncode == 2 and "4:3" in res.stderr


def test_cli_doctor_and_presets():
    res = run_cli("doctor")
    assert res.returncode == 0, res.stderr
    for name in ("rules", "piper", "espeak", "cards", "local", "libx264"):
        assert name in res.stdout
    res = run_cli("presets")
    assert res.returncode == 0 and all(t in res.stdout for t in ("draft", "standard", "premium", "maximum"))


def test_progress_is_structured_data(tmp_path):
    """`on_update` gets `Progress` events: every step in order, fractions that only grow, scene numbers as fields;
    `on_progress` gets the same as text labelled with the step."""
    from studio.progress import STEP_NAMES, Progress

    updates: list[Progress] = []
    labels: list[tuple[float, str]] = []
    make_video(SHORT_SCRIPT, preset="draft", output=tmp_path / "p.mp4", narrator="espeak", painter="cards",
               on_update=updates.append, on_progress=lambda f, m: labels.append((f, m)))
    assert all(isinstance(u, Progress) for u in updates) and len(updates) == len(labels)
    seen = [u.step for u in updates if u.step is not None]
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == list(STEP_NAMES)
    fractions = [u.fraction for u in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    narrated = [u for u in updates if u.step == "narrate" and u.scene is not None]
    numbers = [u.scene for u in narrated]
    assert numbers == sorted(numbers) and set(numbers) == {1, 2} and {u.scenes for u in narrated} == {2}
    assert all(0.0 <= u.step_fraction <= 1.0 for u in updates if u.step is not None)
    assert labels[len(updates) // 2][1].startswith("[")  # e.g. "[3/4 illustrate] scene 1/2 painted"
    assert [u.label() for u in updates] == [m for _, m in labels]


def test_composition_notes_reach_the_project(tmp_path):
    """What composing found (captions drawn with fallback fonts) is a project note, shown by every face; a render
    without it leaves no stale note behind."""
    folder = tmp_path / "p"
    project = Project.from_storyboard([{"narration": "We flew to 東京 today."}], title="Tokyo")
    summary = make_video(project, preset="draft", output=tmp_path / "a.mp4", project_dir=folder, narrator="espeak",
                         painter="cards")
    notes = [n for n in summary.project.notes if n.startswith("compose:")]
    assert len(notes) == 1 and "captions:" in notes[0] and "Han (東京)" in notes[0], summary.project.notes
    assert Project.load(folder).notes == summary.project.notes  # saved with the project
    latin = summary.project.edit_scene(summary.project.scenes[0].id, narration="We flew home today.")
    again = make_video(latin, preset="draft", output=tmp_path / "b.mp4", project_dir=folder, narrator="espeak",
                       painter="cards")
    assert not [n for n in again.project.notes if n.startswith("compose:")]
