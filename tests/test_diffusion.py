"""The diffusers painters on tiny random-weight models: seeds, sizes, progress and cancel inside the denoising loop,
running out of memory, loading from a folder and from the hub cache, AnimateDiff clips looped to the scene, auto
choices, illustrate() with its cache, and (on a GPU) fp16 and release()."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import Cancelled, CancelToken, Project, ProviderUnavailable, Scene, StudioError, load_preset, providers
from studio.assets import AssetStore
from studio.testing import put_in_hub_cache
from studio.visuals import illustrate
from studio.visuals._diffusion import generation_size, mix_seed
from studio.visuals.diffusers_video import clip_length_s, loop_frames

from .conftest import ffprobe

SCENE = Scene("s1", "The sun rises over the hills.", "sunrise over green hills, warm light", seed=4)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def image_painter(tiny_models):
    painter, _ = providers.create("painter", "diffusers-image", **tiny_models.options("diffusers-image"))
    return painter


@pytest.fixture
def video_painter(tiny_models):
    painter, _ = providers.create("painter", "diffusers-video", **tiny_models.options("diffusers-video"))
    return painter


class UnetCalls:
    """Counts the UNet's forward passes (one per denoising step without guidance, batched with it)."""

    def __init__(self, pipe) -> None:
        self.count = 0
        self.handle = pipe.unet.register_forward_hook(self._hook)

    def _hook(self, *args) -> None:
        self.count += 1

    def __enter__(self) -> "UnetCalls":
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


# -- images ---------------------------------------------------------------------------------------------------------------
def test_same_prompt_seed_and_model_give_the_same_image(image_painter, tmp_path):
    def paint(name: str, scene: Scene = SCENE, project_seed: int = 1, style: str = "") -> np.ndarray:
        out = image_painter.paint(scene, index=0, size=(160, 96), style=style, project_seed=project_seed,
                                  out=tmp_path / name)
        return _pixels(out)

    first = paint("a.png")
    assert first.shape == (96, 160, 3) and first.std() > 5
    assert np.array_equal(paint("b.png"), first), "same prompt, seed and model: the same image"
    assert np.abs(paint("c.png", replace(SCENE, seed=5)) - first).mean() > 1, "another scene seed"
    assert np.abs(paint("d.png", project_seed=2) - first).mean() > 1, "another project seed"
    # The text conditions the image (a tiny random text encoder moves it only a little)
    assert not np.array_equal(paint("e.png", replace(SCENE, visual_prompt="a red boat at sea")), first)
    assert not np.array_equal(paint("f.png", style="watercolour"), first), "the project style is in the prompt"
    assert mix_seed(1, 4) != mix_seed(4, 1) and mix_seed(0, 0) == 0


def test_generation_size_keeps_the_aspect_at_the_native_area():
    for size in ((1920, 1080), (1080, 1920), (1080, 1080), (854, 480)):
        w, h = generation_size(size, 512, 64)
        assert w % 64 == 0 and h % 64 == 0
        assert abs(w / h - size[0] / size[1]) < 0.2
        assert 0.8 < w * h / 512 ** 2 < 1.25
    assert generation_size((1920, 1080), 1024, 64) == (1344, 768)
    assert generation_size((1080, 1080), 512, 8) == (512, 512)


def test_progress_per_step_and_cancel_within_one_step(tiny_models, tmp_path):
    painter, _ = providers.create("painter", "diffusers-image", **{**tiny_models.options("diffusers-image"),
                                                                    "steps": 6})
    seen = []
    painter.paint(SCENE, index=0, size=(64, 64), style="", project_seed=0, out=tmp_path / "ok.png",
                  on_progress=lambda f, m: seen.append((round(f, 3), m)))
    assert seen == [(round(i / 6, 3), f"step {i}/6") for i in range(1, 7)]

    token = CancelToken()

    def cancel_at_step_two(fraction: float, message: str) -> None:
        if message == "step 2/6":
            token.cancel()

    with UnetCalls(painter.load().pipe) as calls, pytest.raises(Cancelled):
        painter.paint(SCENE, index=0, size=(64, 64), style="", project_seed=0, out=tmp_path / "x.png",
                      cancel=token, on_progress=cancel_at_step_two)
    assert calls.count == 2, f"{calls.count} denoising steps ran; the cancel came during step 2 of 6"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]


class _Flaky:
    """Stands in front of a pipeline and runs out of GPU memory on the first `fails` calls (then runs it)."""

    def __init__(self, pipe, fails: int) -> None:
        self._pipe = pipe
        self.fails = fails
        self.sizes: list[tuple[int, int]] = []

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **options):
        import torch

        self.sizes.append((options["width"], options["height"]))
        if len(self.sizes) <= self.fails:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self._pipe(**options)


def test_out_of_memory_is_retried_once_smaller_then_fails_the_scene_clearly(tiny_models, tmp_path):
    providers.release("painter", "diffusers-image")
    painter, _ = providers.create("painter", "diffusers-image", **tiny_models.options("diffusers-image"))
    loaded = painter.load()
    real = loaded.pipe
    try:
        loaded.pipe = flaky = _Flaky(real, fails=1)
        out = painter.paint(SCENE, index=0, size=(160, 96), style="", project_seed=0, out=tmp_path / "a.png")
        with Image.open(out) as image:
            assert image.size == (160, 96)  # painted smaller on the CPU, then fitted to the frame
        first, second = flaky.sizes
        assert second[0] < first[0] and second[1] < first[1]

        # Out of memory again and again: the scene fails with a clear message; the scenes before it stay
        project = Project(title="T", scenes=(Scene("a", "One.", "hills"), Scene("b", "Two.", "sea"),
                                             Scene("c", "Three.", "sky"))).save(tmp_path / "p")
        loaded.pipe = _Flaky(real, fails=0)
        store = AssetStore(project.assets_dir)
        painted = illustrate(project, painter="diffusers-image", size=(64, 64), store=store, only=["a"],
                             preset=replace(load_preset("draft"), models={"diffusers-image": tiny_models.options(
                                 "diffusers-image")}))
        loaded.pipe = _Flaky(real, fails=10)
        with pytest.raises(StudioError) as info:
            illustrate(painted, painter="diffusers-image", size=(64, 64), store=store,
                       preset=replace(load_preset("draft"), models={"diffusers-image": tiny_models.options(
                           "diffusers-image")}))
        message = str(info.value)
        assert message.startswith("scene 2 (id b)") and "out of memory" in message and "cards painter" in message
        assert painted.scene("a").visual.is_file() and store.reused == 1
    finally:
        providers.release("painter", "diffusers-image")


def test_loads_by_hub_id_from_the_cache_and_names_missing_parts(tiny_models, tmp_path):
    cache = tmp_path / "hub"
    snapshot = put_in_hub_cache(tiny_models.folder("sd"), "stabilityai/sd-turbo", cache)
    options = {"model": "stabilityai/sd-turbo", "cache_dir": str(cache), "steps": 2}
    choice = providers.choose("painter", "auto", prefer=["diffusers-image", "cards"],
                              configs={"diffusers-image": options})
    assert choice.name == "diffusers-image" and "hub cache" in choice.reason and "on cpu" in choice.reason
    painter, _ = providers.create("painter", "diffusers-image", **options)
    out = painter.paint(SCENE, index=0, size=(64, 48), style="", project_seed=0, out=tmp_path / "hub.png")
    assert Image.open(out).size == (64, 48)
    painter.release()
    assert not painter.loaded

    # Too many steps for a CPU: auto moves on, a user may still force it onto the CPU
    slow = providers.choose("painter", "auto", prefer=["diffusers-image", "cards"],
                            configs={"diffusers-image": {**options, "steps": 30}})
    assert slow.name == "cards" and "too slow on a CPU" in slow.reason
    assert providers.choose("painter", "diffusers-image", **options, device="cpu").name == "diffusers-image"
    # A half-downloaded model
    shutil.rmtree(snapshot / "vae")
    with pytest.raises(ProviderUnavailable, match=r"stabilityai/sd-turbo/vae is missing.*hf download"):
        providers.choose("painter", "diffusers-image", **options)
    for weights in (snapshot / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ProviderUnavailable, match=r"stabilityai/sd-turbo/unet has no weights.*hf download"):
        providers.choose("painter", "diffusers-image", **options)


def test_illustrate_paints_once_then_reuses_and_reports_steps(tiny_models, tmp_path):
    preset = replace(load_preset("draft"), models={"diffusers-image": tiny_models.options("diffusers-image")})
    project = Project(title="T", scenes=(Scene("a", "One.", "hills"), Scene("b", "Two.", "sea")),
                      style="flat pastel").save(tmp_path / "p")
    seen = []
    store = AssetStore(project.assets_dir)
    done = illustrate(project, preset=preset, size=(96, 64), store=store, on_progress=lambda f, m: seen.append(m))
    assert store.made == 2
    assert any(n.startswith("painter: diffusers-image: first of [diffusers-image, cards]") for n in done.notes)
    assert "scene 1/2: step 1/2 (diffusers-image)" in seen and "scene 2/2: step 2/2 (diffusers-image)" in seen
    again = AssetStore(project.assets_dir)
    illustrate(done, preset=preset, size=(96, 64), store=again)
    assert again.reused == 2 and again.made == 0
    edited = done.edit_scene("b", visual_prompt="a stormy sea")
    third = AssetStore(project.assets_dir)
    illustrate(edited, preset=preset, size=(96, 64), store=third)
    assert third.made == 1 and third.reused == 1


# -- clips ------------------------------------------------------------------------------------------------------------
def test_animatediff_makes_frames_and_a_clip_looped_to_the_scene(video_painter, tmp_path):
    frames = video_painter.make_frames(SCENE, size=(96, 64), style="", project_seed=0)
    assert frames.shape == (8, 64, 96, 3) and frames.dtype == np.uint8
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 0.5, "the frames differ: motion"
    again = video_painter.make_frames(SCENE, size=(96, 64), style="", project_seed=0)
    assert np.array_equal(frames, again), "seeded"

    scene = replace(SCENE, audio_duration_s=2.2)  # a 2.2 s narration: the clip covers it and the pads
    assert clip_length_s(scene) == pytest.approx(3.2) and clip_length_s(SCENE) is None
    out = video_painter.paint(scene, index=0, size=(96, 64), style="", project_seed=0, out=tmp_path / "c.mp4")
    info = ffprobe(out)
    (video,) = info["streams"]
    assert (video["codec_name"], int(video["width"]), int(video["height"])) == ("h264", 96, 64)
    assert int(video["nb_frames"]) == 26 and float(info["format"]["duration"]) == pytest.approx(3.25, abs=0.01)
    assert loop_frames(4, 10) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3] and loop_frames(3, 2) == [0, 1, 2]
    # The clip's length is part of its cache key
    key = video_painter.variant(scene, index=0, style="", project_seed=0)
    assert key != video_painter.variant(replace(scene, audio_duration_s=4.0), index=0, style="", project_seed=0)


def test_animatediff_from_one_saved_pipeline_and_cancel_within_one_step(tiny_models, tmp_path):
    options = {**tiny_models.options("diffusers-video"), "model": str(tiny_models.folder("animatediff")),
               "adapter": None, "steps": 5}
    painter, choice = providers.create("painter", "diffusers-video", **options)
    assert "motion adapter" not in choice.reason
    token = CancelToken()
    with UnetCalls(painter.load().pipe) as calls, pytest.raises(Cancelled):
        painter.paint(SCENE, index=0, size=(64, 64), style="", project_seed=0, out=tmp_path / "x.mp4", cancel=token,
                      on_progress=lambda f, m: token.cancel())
    assert calls.count == 1 and not (tmp_path / "x.mp4").exists()
    # A plain Stable Diffusion model is not a video model without its adapter
    with pytest.raises(ProviderUnavailable, match="not an AnimateDiff pipeline"):
        providers.choose("painter", "diffusers-video", **{**options, "model": str(tiny_models.folder("sd"))})
    # auto does not make clips on a CPU unless asked
    auto = providers.choose("painter", "auto", prefer=["diffusers-video", "cards"],
                            configs={"diffusers-video": {**options, "device": None}})
    assert auto.name == "cards" and "no GPU" in auto.reason


# -- on a GPU ---------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: fp16 and release(); this machine has none")
def test_fp16_on_the_gpu_and_release_frees_its_memory(tiny_models, tmp_path):
    providers.release("painter")
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    painter, _ = providers.create("painter", "diffusers-image", model=str(tiny_models.folder("sd")), steps=2)
    painter.paint(SCENE, index=0, size=(64, 64), style="", project_seed=0, out=tmp_path / "g.png")
    loaded = painter.load()
    assert loaded.device == "cuda" and loaded.dtype == torch.float16 and loaded.pipe.unet.dtype == torch.float16
    assert torch.cuda.memory_allocated() > base
    del loaded  # the test's own reference would keep the weights alive
    providers.release("painter", "diffusers-image")
    assert torch.cuda.memory_allocated() <= base + 1024


def test_animatediff_can_animate_the_scenes_still(tiny_models, image_painter, tmp_path):
    still = image_painter.paint(SCENE, index=0, size=(96, 64), style="", project_seed=0, out=tmp_path / "still.png")
    options = {**tiny_models.options("diffusers-video"), "steps": 5, "from_still": True, "strength": 0.6}
    painter, _ = providers.create("painter", "diffusers-video", **options)
    text_frames = painter.make_frames(SCENE, size=(96, 64), style="", project_seed=0)  # no still yet: from text
    assert painter.last_source == "text"
    scene = SCENE.with_visual(still)
    seen = []
    frames = painter.make_frames(scene, size=(96, 64), style="", project_seed=0,
                                 on_progress=lambda f, m: seen.append(m))
    assert painter.last_source == "still" and frames.shape == text_frames.shape
    assert not np.array_equal(frames, text_frames)
    assert seen == ["step 1/3", "step 2/3", "step 3/3"]  # 5 steps x strength 0.6 from the still
    # The still is part of the clip's cache key
    key = painter.variant(scene, index=0, style="", project_seed=0)
    other = image_painter.paint(replace(SCENE, seed=9), index=0, size=(96, 64), style="", project_seed=0,
                                out=tmp_path / "other.png")
    assert key["still_sha256"] and key != painter.variant(SCENE.with_visual(other), index=0, style="", project_seed=0)
