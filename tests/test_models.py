"""Running models well: light imports, devices and memory plans, finding weights, presets' [models] tables, auto on a
machine without weights, doctor, and a whole render with the tiny model providers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from studio import Project, ProviderUnavailable, Scene, StudioError, devices, load_preset, providers
from studio.pipeline import make_video
from studio.presets import TIERS
from studio.testing import ScriptedChat
from studio.weights import check_model_id, find_weights

from .conftest import ROOT, video_facts

HEAVY = ("torch", "transformers", "diffusers", "accelerate", "httpx", "huggingface_hub", "gradio")
OFFLINE = {"storyboard": {"rules"}, "narrator": {"piper", "espeak"}, "painter": {"cards"}}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_import_help_presets_and_doctor_checks_do_not_import_torch():
    code = f"""
import sys, contextlib, io
import studio
from studio.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
after_help = sorted(m for m in {HEAVY!r} if m in sys.modules)
from studio import providers, load_preset
for tier in {TIERS!r}:
    preset = load_preset(tier)
    for kind in providers.KINDS:
        providers.availability(kind, preset.models)
with contextlib.redirect_stdout(io.StringIO()):
    main(["doctor", "--preset", "premium"])
print(after_help, sorted(m for m in ("torch", "transformers", "diffusers") if m in sys.modules))
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] []", f"imported: {proc.stdout}"


def test_doctor_shows_device_and_why_each_provider_can_or_cannot_run():
    proc = subprocess.run([sys.executable, "-m", "studio", "doctor", "--preset", "standard"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "preset: standard" in out and "device: " in out
    for name in ("rules", "transformers", "openai", "piper", "espeak", "bark", "cards", "diffusers-image",
                 "diffusers-video", "local"):
        assert f" {name} " in out, name
    if not devices.gpus():
        assert "device: cpu: no CUDA GPU" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(("  ok", "  no"))}
    assert lines["rules"].startswith("  ok") and lines["cards"].startswith("  ok")
    if lines["bark"].startswith("  no"):  # standard's Bark is suno/bark-small: the reason names it
        assert "suno/bark-small" in lines["bark"] or "GPU" in lines["bark"]


def test_cli_storyboard_uses_the_presets_writers_and_models(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(tmp_path / "empty-hub")}
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "STUDIO_LLM_MODEL"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "studio", "storyboard", "--brief", "Why the sky is blue", "--preset",
                           "premium", "-o", str(tmp_path / "sky.csv")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "storyboard: rules: first of [openai, transformers, rules]" in proc.stdout
    assert "models pull qwen3-4b-instruct-2507" in proc.stdout  # premium's model, not the writer's default
    assert (tmp_path / "sky.csv").is_file()


def test_shipped_presets_auto_pick_offline_providers_on_a_machine_without_weights(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "STUDIO_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    sizes = []
    for tier in TIERS:
        preset = load_preset(tier)
        for kind in providers.KINDS:
            prefer = preset.providers[kind]
            if kind != "narrator" or tier != "draft":  # Draft keeps to the fast offline voices
                assert set(prefer) - OFFLINE[kind] - {"local"}, f"{tier} lists no model provider for {kind}"
            choice = providers.choose(kind, "auto", prefer=[p for p in prefer if p != "local"], configs=preset.models)
            assert choice.name in OFFLINE[kind], (tier, kind, choice)
            model_first = [p for p in prefer if p not in OFFLINE[kind]]
            assert all(f"skipped {p} cannot run" in choice.reason or f"; {p} cannot run" in choice.reason
                       for p in model_first), choice.reason
        sizes.append(preset.models["transformers"]["model"])
    assert len(set(sizes)) == len(TIERS), "each tier has its own LLM size"
    assert load_preset("draft").models["diffusers-image"]["model"] == "stabilityai/sd-turbo"
    assert load_preset("premium").models["bark"]["model"] == "suno/bark"


def test_finding_weights_counts_parameters_and_spots_partial_downloads(tiny_models, tmp_path):
    import shutil

    from diffusers import StableDiffusionPipeline

    folder = tiny_models.folder("sd")
    found = find_weights(str(folder), layout="diffusers")
    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    expected = sum(p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
    # The safetensors headers count every stored tensor (a few buffers too), within 1 % of the parameters
    assert abs(found.parameters - expected) <= expected * 0.01 and found.source == "folder" and found.variant is None

    # Only the half-precision files: the loader must ask for the fp16 variant
    half = tmp_path / "half"
    shutil.copytree(folder, half)
    for weights in half.rglob("*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    assert find_weights(str(half), layout="diffusers").variant == "fp16"

    # A sharded checkpoint with a shard missing
    llm = tmp_path / "llm"
    shutil.copytree(tiny_models.folder("llm"), llm)
    (llm / "model.safetensors").rename(llm / "model-00001-of-00002.safetensors")
    (llm / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ProviderUnavailable, match=r"only partly downloaded \(1 of 2 shards missing"):
        find_weights(str(llm), layout="transformers")
    with pytest.raises(ProviderUnavailable, match="has no model_index.json"):
        find_weights(str(llm), layout="diffusers")
    with pytest.raises(ProviderUnavailable, match="does not exist"):
        find_weights(str(tmp_path / "nowhere") + "/", layout="diffusers")
    for bad in ("", "a b/c", "org/na?me", "-rf", "https://example.com/x"):
        with pytest.raises(StudioError, match="`model`"):
            check_model_id(bad)
    assert check_model_id("stabilityai/sd-turbo") == "stabilityai/sd-turbo"


def test_memory_plans_and_devices():
    gib = devices.GIB
    assert devices.plan_memory("cuda", 4 * gib, free_bytes=40 * gib).mode == "full"
    offload = devices.plan_memory("cuda", 10 * gib, free_bytes=11 * gib)
    assert offload.mode == "offload" and offload.tiling and "model CPU offload" in offload.reason
    tight = devices.plan_memory("cuda", 24 * gib, free_bytes=6 * gib)
    assert tight.mode == "sequential" and tight.slicing
    assert devices.plan_memory("cpu", 24 * gib).mode == "cpu"
    assert devices.plan_memory("mps", gib).slicing  # attention slicing helps Macs
    build = devices.torch_build()
    import torch

    assert build["installed"] and build["version"] == torch.__version__
    with pytest.raises(StudioError, match="`device`"):
        devices.check_device("tpu")
    with pytest.raises(StudioError, match="`dtype`"):
        devices.choose_dtype("cpu", "int8")
    assert devices.choose_dtype("cpu") == torch.float32 and devices.choose_dtype("cuda") == torch.float16
    assert devices.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert devices.is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not devices.is_out_of_memory(RuntimeError("shape mismatch"))
    if not torch.cuda.is_available():
        assert devices.gpus() == () and devices.best_device() in ("cpu", "mps")
        with pytest.raises(StudioError, match="torch sees no CUDA GPU"):
            devices.choose_device("cuda")


def test_release_drops_cached_models_and_the_next_use_loads_again(tiny_models, tmp_path):
    options = tiny_models.options("diffusers-image")
    first, _ = providers.create("painter", "diffusers-image", **options)
    assert providers.create("painter", "diffusers-image", **options)[0] is first  # cached per process
    first.load()
    providers.release("painter", "diffusers-image")
    assert not first.loaded
    second, _ = providers.create("painter", "diffusers-image", **options)
    assert second is not first and not second.loaded
    second.paint(Scene("a", "x", "hills"), index=0, size=(64, 64), style="", project_seed=0, out=tmp_path / "a.png")
    assert second.loaded
    # Another model (or other options) of the same provider replaces it, so two never sit in GPU memory together
    third, _ = providers.create("painter", "diffusers-image", **{**options, "steps": 3})
    assert not second.loaded and third is not second
    assert providers.create("painter", "cards")[0] is providers.create("painter", "cards")[0]


def test_a_whole_video_from_a_brief_with_the_tiny_model_providers(tiny_models, tmp_path):
    # Brief -> the transformers writer (its answer scripted: the tiny LM writes noise) -> Bark -> SD images and an
    # AnimateDiff clip for one scene -> the compositor.
    preset = replace(load_preset("draft"), models=tiny_models.preset_models(),
                     providers={"storyboard": ("transformers", "rules"), "narrator": ("bark", "espeak"),
                                "painter": ("diffusers-image", "cards")})
    writer, _ = providers.create("storyboard", "transformers", configs=preset.models)
    answer = json.dumps({"title": "Honey", "scenes": [
        {"narration": "Bees visit flowers.", "visual_prompt": "a bee on a flower"},
        {"narration": "They make honey.", "visual_prompt": "honeycomb"},
        {"narration": "We eat it.", "visual_prompt": "a jar of honey"}]})
    seen = []
    with ScriptedChat(writer, [answer]):
        summary = make_video("A short video about how bees make honey", preset=preset, output=tmp_path / "bees.mp4",
                             project_dir=tmp_path / "project", on_progress=lambda f, m: seen.append(m))
    project = summary.project
    assert project.title == "Honey" and len(project.scenes) == 3
    notes = "\n".join(project.notes)
    assert "storyboard: transformers: first of" in notes and "narrator: bark: first of" in notes
    assert "painter: diffusers-image: first of" in notes
    facts = video_facts(summary.output)
    assert (facts["width"], facts["height"]) == preset.size("16:9") and facts["has_audio"]
    assert facts["video_duration_s"] == pytest.approx(summary.duration_s, abs=1 / preset.fps + 1e-6)
    assert facts["duration_s"] > sum(s.audio_duration_s for s in project.scenes)
    assert all(s.visual.suffix == ".png" and s.audio.suffix == ".wav" for s in project.scenes)
    assert any("sentence 1/1" in m for m in seen) and any("step 1/2" in m for m in seen)

    # Again with moving pictures: AnimateDiff clips looped to each scene; the narration is reused
    clip_preset = replace(preset, models={**preset.models, "diffusers-video": {
        **tiny_models.options("diffusers-video"), "model": str(tiny_models.folder("animatediff")), "adapter": None}})
    again = make_video(Project.load(tmp_path / "project"), preset=clip_preset, painter="diffusers-video",
                       output=tmp_path / "bees-moving.mp4", project_dir=tmp_path / "project")
    narrated = next(s for s in again.steps if s.name == "narrate")
    painted = next(s for s in again.steps if s.name == "illustrate")
    assert (narrated.reused, narrated.made, painted.made) == (3, 0, 3)
    assert all(s.visual.suffix == ".mp4" for s in again.project.scenes)
    for scene in again.project.scenes:  # each clip covers its scene: narration plus the pads
        assert float(video_facts(scene.visual)["duration_s"]) >= scene.audio_duration_s
    assert video_facts(again.output)["duration_s"] == pytest.approx(summary.duration_s, abs=0.1)


def test_auto_skips_a_model_when_the_gpu_has_too_little_free_memory(tiny_models, monkeypatch):
    # A machine whose only GPU has 100 MB free: the tiny SD would fit only layer by layer, so auto moves on
    fake = (devices.Gpu(0, "Fake GPU", 16 * devices.GIB, 100 * 1024 ** 2, "nvidia-smi"),)
    monkeypatch.setattr(devices, "gpus", lambda: fake)
    monkeypatch.setattr(devices, "best_device", lambda: "cuda")
    options = {**tiny_models.options("diffusers-image"), "device": None}
    choice = providers.choose("painter", "auto", prefer=["diffusers-image", "cards"], configs={"diffusers-image": options})
    assert choice.name == "cards" and "only 0.1 GiB is free (Fake GPU)" in choice.reason
    # With 8 GiB free it fits, and the note says how it would be placed
    roomy = (devices.Gpu(0, "Fake GPU", 16 * devices.GIB, 8 * devices.GIB, "nvidia-smi"),)
    monkeypatch.setattr(devices, "gpus", lambda: roomy)
    choice = providers.choose("painter", "auto", prefer=["diffusers-image", "cards"], configs={"diffusers-image": options})
    assert choice.name == "diffusers-image" and "on cuda, fits" in choice.reason
    # Naming the device is the user's choice: allowed even when short
    monkeypatch.setattr(devices, "gpus", lambda: fake)
    assert devices.check_gpu_memory("cuda", 10 * devices.GIB, forced=True, what="m").startswith("on cuda, far short")
    with pytest.raises(ProviderUnavailable, match="layer by layer"):
        devices.check_gpu_memory("cuda", 10 * devices.GIB, forced=False, what="m")


def test_the_dtype_option_reaches_every_loaded_model(tiny_models):
    # What a GPU gets by default (float16): checked here by asking for it on the CPU, loading only.
    import torch

    image, _ = providers.create("painter", "diffusers-image", **tiny_models.options("diffusers-image"), dtype="float16")
    assert image.load().pipe.unet.dtype == torch.float16 and image.load().pipe.text_encoder.dtype == torch.float16
    clip, _ = providers.create("painter", "diffusers-video", **tiny_models.options("diffusers-video"), dtype="bfloat16")
    assert clip.load().pipe.unet.dtype == torch.bfloat16
    voice, _ = providers.create("narrator", "bark", **tiny_models.options("bark"), dtype="float16")
    voice.load()
    assert voice._bark.dtype == torch.float16
    writer, _ = providers.create("storyboard", "transformers", **tiny_models.options("transformers"), dtype="bfloat16")
    writer.load()
    assert writer._lm.dtype == torch.bfloat16
    for kind, name in (("painter", "diffusers-image"), ("painter", "diffusers-video"), ("narrator", "bark"),
                       ("storyboard", "transformers")):
        providers.release(kind, name)
    assert not image.loaded and not clip.loaded and voice._bark is None and writer._lm is None
