"""Render time estimates (`studio.estimate`): properties, not timings (the machine's speed is what is measured)."""

from __future__ import annotations

import math
import threading

import pytest

from studio import estimate as est
from studio.compose import build_timeline
from studio.errors import StudioError
from studio.presets import load_preset
from studio.project import Project, Scene

TIERS = ("draft", "standard", "premium", "maximum")


def story(scenes: int = 3, words: int = 20) -> Project:
    text = " ".join(["word"] * words)
    return Project(title="T", scenes=tuple(Scene(id=f"s{i}", narration=text) for i in range(scenes)))


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty rate cache for this test (the module's own is left as it was)."""
    monkeypatch.setattr(est, "_rates", {})
    monkeypatch.setattr(est, "_locks", {})


@pytest.fixture
def ffmpeg_runs(monkeypatch):
    """Counts the ffmpeg processes `studio.estimate` starts (they still run for real)."""
    runs: list[list[str]] = []
    real = est.Ffmpeg

    def counting(args, **kwargs):
        runs.append(list(args))
        return real(args, **kwargs)

    monkeypatch.setattr(est, "Ffmpeg", counting)
    return runs


def test_estimate_grows_with_resolution():
    project = story()
    seconds = [est.estimate_render_s(project, tier).seconds for tier in TIERS]
    assert seconds == sorted(seconds) and len(set(seconds)) == len(seconds), dict(zip(TIERS, seconds))
    maximum = load_preset("maximum")
    wide, square = est.estimate_render_s(project, maximum, "16:9"), est.estimate_render_s(project, maximum, "1:1")
    assert (wide.width, wide.height, square.width, square.height) == (3840, 2160, 2160, 2160)
    assert wide.seconds > square.seconds
    assert est.estimate_render_s(project, "draft").video_s == est.estimate_render_s(project, "draft", "1:1").video_s


def test_estimate_grows_with_length():
    draft = load_preset("draft")
    assert est.estimate_render_s(30, draft).seconds < est.estimate_render_s(60, draft).seconds \
        < est.estimate_render_s(600, draft).seconds
    assert est.estimate_render_s(story(words=10), draft).seconds < est.estimate_render_s(story(words=40), draft).seconds
    assert est.estimate_render_s(story(3), draft).seconds < est.estimate_render_s(story(6), draft).seconds
    # The per-scene overhead: the same length in more scenes takes longer.
    assert est.estimate_render_s(60, draft, scenes=20).seconds > est.estimate_render_s(60, draft, scenes=2).seconds


@pytest.mark.parametrize("tier", TIERS)
def test_estimate_is_positive_finite_and_describes_the_render(tier):
    preset = load_preset(tier)
    e = est.estimate_render_s(45.0, preset, "1:1")
    assert math.isfinite(e.seconds) and e.seconds > 0
    assert e.video_s == 45.0 and e.fps == preset.fps and (e.width, e.height) == preset.size("1:1")
    assert e.encoder in preset.encoders and e.scenes == 6  # one scene per 8 s
    assert e.text.startswith(e.duration_text + " on this machine (")
    assert f"{e.width}x{e.height} at {preset.fps} fps, {e.encoder}, " in e.text
    assert e.text.endswith("GPU)" if "nvenc" in e.encoder else "CPU)")
    if tier == "maximum":
        assert "(4K 2160x2160 at 30 fps" in e.text


def test_text_names_seconds_minutes_and_hours():
    assert est.duration_words(0.3) == "about 5 s"
    assert est.duration_words(12) == "about 10 s"
    assert est.duration_words(44) == "about 45 s"
    assert est.duration_words(50) == "about 1 min"
    assert est.duration_words(100) == "about 2 min"
    assert est.duration_words(3 * 60 + 10) == "about 3 min"
    assert est.duration_words(59 * 60) == "about 59 min"
    assert est.duration_words(60 * 60) == "about 1 h"
    assert est.duration_words(80 * 60) == "about 1 h 20 min"
    e = est.Estimate(seconds=185, video_s=60, width=2160, height=2160, fps=30, encoder="libx264")
    assert e.text == "about 3 min on this machine (4K 2160x2160 at 30 fps, libx264, CPU)"
    assert est.Estimate(seconds=20, video_s=9, width=1280, height=720, fps=30, encoder="h264_nvenc").text \
        == "about 20 s on this machine (720p 1280x720 at 30 fps, h264_nvenc, GPU)"


def test_rate_is_measured_once_and_cached(fresh_cache, ffmpeg_runs):
    preset = load_preset("standard")
    first = est.encode_rate(preset, "libx264")
    assert len(ffmpeg_runs) == 1 and first > 0 and math.isfinite(first)
    assert "lavfi" in ffmpeg_runs[0] and "libx264" in ffmpeg_runs[0] and "-crf" in ffmpeg_runs[0]
    assert est.encode_rate(preset, "libx264") == first
    est.estimate_render_s(story(), preset, encoder="libx264")
    est.estimate_render_s(90, preset, "9:16", encoder="libx264")
    assert len(ffmpeg_runs) == 1  # the estimates used the cached rate
    est.encode_rate(load_preset("draft"), "libx264")  # other options: measured on their own
    assert len(ffmpeg_runs) == 2


def test_rate_is_measured_once_when_threads_ask_together(fresh_cache, ffmpeg_runs):
    preset = load_preset("draft")
    rates: list[float] = []
    start = threading.Barrier(4)

    def ask() -> None:
        start.wait()
        rates.append(est.encode_rate(preset, "libx264"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ffmpeg_runs) == 1 and len(rates) == 4 and len(set(rates)) == 1


def test_project_lengths_follow_the_timeline(make_image, make_tone):
    """Audio durations are used where narration exists (not the text's speech estimate), fixed durations win, and
    transitions overlap: the frame count is exactly the timeline's."""
    preset = load_preset("standard")
    image = make_image()
    scenes = (
        Scene(id="a", narration="short words", audio=make_tone("a.wav", 2.5), audio_duration_s=2.5, visual=image),
        Scene(id="b", narration="one two three", audio=make_tone("b.wav", 1.2), audio_duration_s=1.2, visual=image,
              transition="cut"),
        Scene(id="c", narration="fixed", duration_s=3.0, visual=image, transition="crossfade"),
        Scene(id="d", narration="spoken", audio=make_tone("d.wav", 4.0), audio_duration_s=4.0, visual=image),
    )
    project = Project(title="T", scenes=scenes, captions=False)
    frames = est.video_frames(project, preset)
    assert frames == build_timeline(project, preset, encoder="libx264").frame_count
    e = est.estimate_render_s(project, preset, encoder="libx264")
    assert e.video_s == frames / preset.fps and e.scenes == 4
    # Without the audio the words are counted instead (2.5 words a second): a much shorter video.
    unnarrated = project.with_scenes([Scene(id=s.id, narration=s.narration, duration_s=s.duration_s) for s in scenes])
    assert est.estimate_render_s(unnarrated, preset, encoder="libx264").video_s < e.video_s - 3


@pytest.mark.parametrize("bad", [0, -3, float("nan"), float("inf"), "long"])
def test_bad_lengths_are_refused(bad):
    with pytest.raises(StudioError):
        est.estimate_render_s(bad, "draft")


# -- every step before a run: providers, seconds, memory; measured history --------------------------------------
def test_history_keeps_a_running_mean_per_provider_and_device(tmp_path):
    from studio import history

    path = tmp_path / "timings.json"
    assert history.per_scene_s("narrate", "piper", None, "cpu", path=path) is None
    history.record("narrate", "piper", None, "cpu", seconds=4.0, scenes=4, path=path)
    assert history.per_scene_s("narrate", "piper", None, "cpu", path=path) == pytest.approx(1.0)
    history.record("narrate", "piper", None, "cpu", seconds=2.0, scenes=1, path=path)
    assert history.per_scene_s("narrate", "piper", None, "cpu", path=path) == pytest.approx(0.7 * 1.0 + 0.3 * 2.0)
    assert history.per_scene_s("narrate", "piper", None, "gpu", path=path) is None  # another device: no figure
    history.record("narrate", "piper", None, "cpu", seconds=9.0, scenes=0, path=path)  # nothing made: not counted
    assert history.per_scene_s("narrate", "piper", None, "cpu", path=path) == pytest.approx(1.3)
    path.write_text("{not json")
    assert history.per_scene_s("narrate", "piper", None, "cpu", path=path) is None  # damaged: no history, no error


def test_estimate_steps_names_providers_and_uses_what_a_run_measured(tmp_path, monkeypatch):
    from studio import Project, history
    from studio.estimate import estimate_steps
    from studio.pipeline import make_video
    from studio.storyboard import write_storyboard

    monkeypatch.setenv("STUDIO_HISTORY_FILE", str(tmp_path / "timings.json"))
    project = write_storyboard("One short scene.\n\nAnother short scene.", mode="script")
    before = {e.step: e for e in estimate_steps(project, "draft", narrator="espeak", painter="cards", device="cpu")}
    assert list(before) == ["narrate", "illustrate", "compose"]
    assert before["narrate"].provider == "espeak" and before["narrate"].source == "typical"
    assert before["illustrate"].provider == "cards" and before["illustrate"].memory_bytes == 0
    assert before["compose"].source == "test encode" and before["compose"].seconds > 0

    make_video(project, preset="draft", output=tmp_path / "out.mp4", narrator="espeak", painter="cards",
               project_dir=tmp_path / "p")
    measured = history.per_scene_s("narrate", "espeak", None, "cpu")
    assert measured is not None and measured > 0
    after = {e.step: e for e in estimate_steps(project, "draft", narrator="espeak", painter="cards", device="cpu")}
    assert after["narrate"].source == "measured here"
    assert after["narrate"].seconds == pytest.approx(measured * 2)  # two scenes still to narrate in `project`
    done = Project.load(tmp_path / "p")
    assert {e.step: e.seconds for e in estimate_steps(done, "draft", narrator="espeak", painter="cards",
                                                      device="cpu")}["narrate"] == 0  # nothing left to narrate
