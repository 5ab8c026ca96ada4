"""The notebook helpers (`studio.notebook`) and the notebooks' hygiene. The notebooks themselves run under
``pytest --nbmake notebooks`` (part of the README's test command)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from studio import Project, Scene, StudioError, WordTiming
from studio import notebook as nb
from studio.media import write_wav

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["00_quickstart.ipynb", "01_storyboard.ipynb", "02_voice.ipynb", "03_visuals.ipynb", "04_compose.ipynb"]


def test_every_step_has_its_notebook():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stripped_and_say_how_to_use_real_models(path):
    data = json.loads(path.read_text("utf-8"))
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code"
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
            f"{path.name} carries outputs: clear them before committing"
    first = "".join(data["cells"][0]["source"])
    assert data["cells"][0]["cell_type"] == "markdown" and "GPU" in first and "Settings" in first, \
        f"{path.name}: the first cell must say which cell to change for real models on a GPU"
    assert data["metadata"]["kernelspec"]["name"] == "python3"


@pytest.fixture
def narrated(tmp_path, make_image):
    audio = tmp_path / "voice.wav"
    rate = 16000
    t = np.arange(int(1.2 * rate)) / rate
    write_wav(audio, 0.4 * np.sin(2 * np.pi * 180 * t) * (t < 1.0), rate)
    words = (WordTiming("Hello", 0.1, 0.4), WordTiming("there,", 0.5, 0.95))
    scene = Scene(id="a", narration="Hello there,", visual_prompt="a red square", seed=3, audio=audio,
                  audio_duration_s=1.2, words=words, visual=make_image("a.png", (320, 180), (200, 30, 30)))
    other = Scene(id="b", narration="Second.", visual_prompt="blue", visual=make_image("b.png", (320, 180), (20, 40, 220)))
    return Project(title="T", scenes=(scene, other))


def test_show_storyboard_and_word_table(narrated):
    table = nb.show_storyboard(narrated)
    assert list(table.index) == [1, 2] and table.index.name == "scene"
    assert list(table.columns) == ["id", "narration", "visual_prompt", "duration_s", "seed", "audio_s", "visual"]
    assert table.loc[1, "audio_s"] == 1.2 and pd.isna(table.loc[2, "audio_s"]) and table.loc[1, "visual"] == "a.png"
    assert list(nb.show_storyboard(narrated, ["narration"], assets=False).columns) == ["narration"]
    with pytest.raises(StudioError, match="unknown storyboard column"):
        nb.show_storyboard(narrated, ["colour"])
    words = nb.word_table(narrated.scenes[0])
    assert words["word"].tolist() == ["Hello", "there,"] and words["end_s"].tolist() == [0.4, 0.95]


def test_play_and_plot_narration(narrated):
    audio = nb.play(narrated.scenes[0])
    assert audio.data[:4] == b"RIFF"  # the WAV is embedded in the player
    with pytest.raises(StudioError, match="no narration yet"):
        nb.play(narrated.scenes[1])
    fig = nb.plot_narration(narrated.scenes[0])
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # one span per word
    assert [t.get_text() for t in ax.texts] == ["Hello", "there,"]
    line = ax.lines[0]
    assert line.get_xdata()[-1] == pytest.approx(1.2, abs=1e-3)  # the whole waveform, in seconds


def test_scene_player_swaps_the_audio_of_the_chosen_scene(narrated, tmp_path):
    import ipywidgets as widgets
    from dataclasses import replace

    second = tmp_path / "second.wav"
    write_wav(second, 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000), 16000)
    project = replace(narrated, scenes=(narrated.scenes[0], replace(narrated.scenes[1], audio=second)))
    box = nb.scene_player(project)
    slider, player = box.children
    # plain widgets only: no Output widget (headless runners stall on those), so nothing but a slider and a player
    assert isinstance(slider, widgets.IntSlider) and isinstance(player, widgets.Audio)
    assert (slider.min, slider.max) == (1, 2) and player.format == "wav"
    assert player.value == narrated.scenes[0].audio.read_bytes()
    slider.value = 2
    assert player.value == second.read_bytes()
    slider.value = 1
    assert player.value == narrated.scenes[0].audio.read_bytes()
    with pytest.raises(StudioError, match="no narration yet"):
        nb.scene_player(narrated)  # its second scene has not been narrated
    with pytest.raises(StudioError, match="no scenes"):
        nb.scene_player([])


def test_scrubber_shows_the_frame_at_the_sliders_time(tmp_path, make_image):
    import io

    import ipywidgets as widgets
    from PIL import Image

    from studio.media import run_ffmpeg

    # one second of red, then one of blue
    video = tmp_path / "two.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=red:s=160x90:r=25:d=1", "-f", "lavfi", "-i",
                "color=c=blue:s=160x90:r=25:d=1", "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", video])
    box = nb.scrubber(video, width=80)
    slider, picture = box.children
    assert isinstance(slider, widgets.FloatSlider) and isinstance(picture, widgets.Image)
    assert slider.max == pytest.approx(1.95, abs=0.05)

    def colour() -> np.ndarray:
        image = np.asarray(Image.open(io.BytesIO(picture.value)).convert("RGB"), dtype=float)
        assert image.shape == (44, 80, 3)  # 80 wide, an even height for 16:9
        return image.reshape(-1, 3).mean(axis=0)

    red = colour()
    slider.value = 1.5
    blue = colour()
    assert red[0] > 150 > red[2] and blue[2] > 150 > blue[0]
    with pytest.raises(StudioError, match="not a video"):
        nb.scrubber(make_image("still.png", (64, 64), (1, 2, 3)))


def test_frame_at_reads_the_right_picture(narrated, make_clip):
    frame = nb.frame_at(narrated.scenes[0].visual)
    assert frame.shape == (180, 320, 3)
    clip = make_clip(size=(160, 120), duration_s=1.0)
    small = nb.frame_at(clip, 0.5, width=80)
    assert small.shape == (60, 80, 3) and small.std() > 10  # testsrc2 is colourful
    with pytest.raises(StudioError, match="between 0 and"):
        nb.frame_at(clip, 5.0)


def test_grid_compare_and_displays(narrated, tmp_path):
    fig = nb.show_grid(narrated, columns=2)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 2
    red, blue = (np.asarray(img, dtype=float).reshape(-1, 3).mean(axis=0) for img in images)
    assert red[0] > red[2] and blue[2] > blue[0]  # each picture in its own place
    with pytest.raises(StudioError, match="no visual yet"):
        nb.show_grid([Scene(id="x", narration="n")])
    with pytest.raises(StudioError, match="empty"):
        nb.compare({})
    assert nb.show_scene(narrated.scenes[0]).width == 480
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 100)
    assert "base64" in nb.show_video(video)._repr_html_()  # small files are embedded


def test_notebook_dir_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_NOTEBOOK_DIR", str(tmp_path))
    assert nb.notebook_dir("voice") == tmp_path / "voice" and (tmp_path / "voice").is_dir()
    for bad in ("", "..", "a/b", "..\\x"):
        with pytest.raises(StudioError, match="plain folder name"):
            nb.notebook_dir(bad)


def test_with_models_updates_one_providers_options_and_keeps_the_rest():
    from studio import load_preset

    draft = load_preset("draft")
    changed = nb.with_models("draft", {"diffusers-image": {"model": "/models/sd", "steps": 2}, "bark": {"device": "cpu"}})
    assert changed.models["diffusers-image"] == {**draft.models["diffusers-image"], "model": "/models/sd", "steps": 2}
    assert changed.models["bark"] == {"device": "cpu"}
    assert changed.models["transformers"] == draft.models["transformers"]
    assert load_preset("draft").models == draft.models  # the preset itself is not changed
    with pytest.raises(StudioError, match="must be a dict"):
        nb.with_models(draft, {"bark": "suno/bark"})
