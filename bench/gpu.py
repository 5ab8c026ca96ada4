"""GPU benchmark: every GPU path of Studio in one command (models, composition, a whole film), JSON and a table.

    python bench/gpu.py --json bench/results/gpu.json                # on a GPU machine: a few minutes
    python bench/gpu.py --only compose --tiers premium,maximum        # one section, some tiers
    python bench/gpu.py --quick --json /tmp/gpu.json                  # anywhere, in about a minute: a smoke test

Sections (``--only models,compose,film``; all by default):

* ``models``  -- the model providers on real-size architectures with random weights in float16, through Studio's own
  provider code: ``bench/models.py``'s cases (SDXL-class images, Bark-small, AnimateDiff) plus the current defaults
  of the tiers' model tables that can be built from their published configs: the Qwen3 writers (tokens per second of
  ``generate``), full Bark, SD-Turbo. Those that cannot be built without their weights say "not built" and why.
* ``compose`` -- the 60 s benchmark case (``bench.common.build_case``: 12 scenes of 5 s, 1920x1080 stills, narration
  with word timings, music) at every tier, three ways, in this process after a warm-up:
  ``gpu``   -- ``compose(..., device="cuda", encoder=<the tier's first NVENC encoder>)``: the GPU renderer and NVENC;
  ``cpu``   -- ``compose(..., device="cpu", encoder="libx264")``: the CPU renderer and x264;
  ``bound`` -- ffmpeg alone encoding the same frames, made beforehand as raw yuv420p (the ``cpu`` row's own output
  decoded, else ``bench.common.render_frames``), with the tier's exact NVENC arguments: the GPU encoder's bound.
  Ratios: gpu/bound (target <= 1.3) and cpu/gpu; Maximum's 60 s in under 20 s on the GPU.
* ``film``    -- a whole 60 s Premium film: storyboard, narration, pictures, composition, on the GPU with real-size
  random-weight models injected into the providers (``use_model``/``use_pipeline``). Random weights cannot write a
  storyboard, so the ``rules`` writer makes the scenes and the Premium writer's architecture (Qwen3-4B) is timed
  generating as many tokens as that storyboard holds. Target: under 3 minutes.

On a machine without CUDA every GPU row says "no GPU" with the reason and the CPU rows still run, so the script never
rots. Every video is probed (size, duration, frame rate, codec, audio) so a broken render cannot look fast; the
script exits 1 if any row failed. Statuses: ``ok``, ``FAILED`` (a real failure), ``no GPU``, ``not available`` (the
GPU renderer or NVENC is missing here), ``not built`` (the architecture needs files that are not on this machine).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import STILL_SIZE, build_case, check_video, exit_on_sigterm, raw_folder, render_frames, write_raw_yuv  # noqa: E402
from studio.presets import Preset, load_preset  # noqa: E402

SECTIONS = ("models", "compose", "film")
TIERS = ("draft", "standard", "premium", "maximum")
APPROACHES = ("gpu", "cpu", "bound")
BOUND_TARGET = 1.3  # GPU compose wall / NVENC bound wall, at most
MAXIMUM_TARGET_S = 20.0  # 60 s at Maximum (4K30) on the GPU, at most
FILM_TARGET_S = 180.0  # the 60 s Premium film end to end, at most
CODECS = {"libx264": "h264", "h264_nvenc": "h264", "hevc_nvenc": "hevc", "av1_nvenc": "av1"}
NO_RENDERER = ("renderer not available: studio.compose.compose() takes no `device` here (the GPU renderer is not "
               "merged into this checkout)")

# Published configs (config.json) of the catalogue's Qwen3 writers, the tiers' [models.transformers] defaults.
QWEN3_COMMON = dict(vocab_size=151936, head_dim=128, num_key_value_heads=8, hidden_act="silu", rms_norm_eps=1e-6,
                    attention_bias=False, max_position_embeddings=40960, rope_theta=1_000_000.0)
QWEN3 = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       tie_word_embeddings=True),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       tie_word_embeddings=True),
    "qwen3-4b-instruct-2507": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                   num_attention_heads=32, tie_word_embeddings=True, max_position_embeddings=262144,
                                   rope_theta=5_000_000.0),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     tie_word_embeddings=False),
}
# The model cards' non-embedding parameter counts, to check the configs above (`--architectures`).
QWEN3_NON_EMBEDDING = {"qwen3-0.6b": 0.44e9, "qwen3-1.7b": 1.4e9, "qwen3-4b-instruct-2507": 3.6e9, "qwen3-8b": 6.95e9}
# SD-Turbo is Stable Diffusion 2.1's architecture at 512x512: its UNet and the OpenCLIP ViT-H/14 text encoder.
SD21_UNET = dict(attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=1024,
                 down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                 in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=64,
                 use_linear_projection=True)
SD21_UNET_PARAMETERS = 865_910_724
CLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, projection_dim=512,
              hidden_act="gelu", max_position_embeddings=77)
LLM_PROMPT_TOKENS = 700  # about what the writer's system prompt and a 60 s script take
LLM_NEW_TOKENS = 256  # tokens timed per writer in the models section (tokens per second is what is reported)

FILM_SCRIPT = """# The lighthouse

The lighthouse has stood on this cliff for two hundred years. Every night its lamp turns, and ships far out at sea find
their way home.

It was built by hand, stone by stone. The keepers lived in the small white house beside it, with the wind for
company.

Each evening the keeper climbed one hundred and twelve steps to light the lamp. He trimmed the wick, polished the great
glass lens, and wound the clock that turned it.

The keeper wrote in his log every hour: the wind, the sea, the ships he saw.

Today the lamp is electric and no one lives in the house. But the light still turns, and the logbooks are kept in the
village museum.

Visitors climb the same steps now. At the top they see what the keepers saw: the long coast, the open sea, and the
light going round.
"""


# -- the machine --------------------------------------------------------------------------------------------------------
def cuda_state() -> tuple[bool, str]:
    """(CUDA usable, GPU name or why not): the compositor's own check when it is here, else torch's, imported lazily."""
    try:
        from studio.compose.gpu import cuda_ready
    except ImportError:
        try:
            import torch
        except ImportError:
            return False, "torch is not installed"
        if not torch.cuda.is_available():
            return False, f"torch {torch.__version__} finds no CUDA GPU"
        return True, torch.cuda.get_device_name(0)
    return cuda_ready()


def first_nvenc(preset: Preset) -> str | None:
    return next((e for e in preset.encoders if e.endswith("_nvenc")), None)


def nvenc_state(preset: Preset) -> tuple[str | None, str]:
    """(the tier's first NVENC encoder, "" if it really encodes here, else why not)."""
    from studio.compose.encoders import probe_encoder

    encoder = first_nvenc(preset)
    if encoder is None:
        return None, f"preset {preset.name!r} lists no NVENC encoder"
    ok, reason = probe_encoder(encoder, preset.encoder_args(encoder))
    return encoder, "" if ok else f"{encoder} does not encode here: {reason.splitlines()[-1] if reason else '?'}"


def machine(gpu: tuple[bool, str]) -> dict:
    import psutil

    info = {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(), "cuda": gpu[0],
            "gpu": gpu[1] if gpu[0] else None, "no_gpu_reason": None if gpu[0] else gpu[1]}
    if gpu[0]:
        import torch

        info["torch"] = torch.__version__
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"not run: {exc}"
    return info


def row(section: str, case: str, status: str, **fields: Any) -> dict:
    return {"section": section, "case": case, "status": status, "reason": fields.pop("reason", ""), **fields}


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def gpu_peak_reset() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_gib() -> float | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def probe(path: Path, *, expected_s: float, size: tuple[int, int], fps: int, codec: str,
          need_audio: bool) -> tuple[bool, str, dict]:
    """`bench.common.check_video`, with the codec the encoder makes (it expects h264) instead of h264."""
    ok, problem, facts = check_video(path, expected_s=expected_s, size=size, fps=fps, need_audio=need_audio)
    if not facts:
        return ok, problem, facts
    problems = [p for p in problem.split("; ") if p and not p.startswith("video codec ")]
    if facts.get("video_codec") != codec:
        problems.append(f"video codec {facts.get('video_codec')}, expected {codec}")
    return not problems, "; ".join(problems), facts


# -- compose ------------------------------------------------------------------------------------------------------------
def compose_takes_device() -> bool:
    from studio.compose import compose

    return "device" in inspect.signature(compose).parameters


def run_compose(project, preset: Preset, out: Path, *, encoder: str, device: str | None) -> dict:
    """Compose in this process and time it: wall, CPU of the process and its children, peak GPU memory."""
    from studio.compose import compose

    out.unlink(missing_ok=True)
    kwargs: dict[str, Any] = {"encoder": encoder}
    if device is not None:
        kwargs["device"] = device
    gpu_peak_reset()
    c0, t0 = cpu_seconds(), time.perf_counter()
    result = compose(project, preset, out, **kwargs)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "cpu_s": cpu_seconds() - c0, "peak_gpu_gib": gpu_peak_gib(), "encoder": result.encoder,
            "renderer": getattr(result, "renderer", "cpu (the only renderer of this checkout)"),
            "notes": list(getattr(result, "notes", ())), "result_duration_s": result.duration_s}


def on_gpu(renderer: str) -> bool:
    """Whether a `RenderResult.renderer` label names the GPU renderer ("GPU compose: NVIDIA H200, hevc_nvenc p6")."""
    return str(renderer).strip().lower().startswith("gpu")


def raw_from_video(video: Path, raw: Path, size: tuple[int, int]) -> int:
    """Decode `video` to raw yuv420p at `raw` (the bound's input); returns the frame count."""
    from studio.media import INPUT_GUARD, Ffmpeg

    Ffmpeg([*INPUT_GUARD, "-i", video, "-an", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{size[0]}x{size[1]}",
            raw], what="decoding the CPU render for the encoder bound").wait()
    return raw.stat().st_size // (size[0] * size[1] * 3 // 2)


def compose_section(args: argparse.Namespace, gpu: tuple[bool, str], work: Path) -> list[dict]:
    from bench.common import scene_starts
    from bench.compose import time_bound

    rows: list[dict] = []
    tiers = [load_preset(t) for t in args.tiers]
    # 1. The case: 12 scenes of 5 s (60 s), or 2 of 1 s with quarter-size stills for --quick.
    scenes, scene_s = (2, 1.0) if args.quick else (12, 5.0)
    t0 = time.perf_counter()
    project = build_case(work / "case", scenes=scenes, scene_s=scene_s, preset=tiers[0],
                         still_size=(960, 540) if args.quick else STILL_SIZE)
    print(f"[compose: {scenes} scenes x {scene_s:g} s made in {time.perf_counter() - t0:.1f} s]", flush=True)
    takes_device = compose_takes_device()
    warmed = False
    for preset in tiers:
        size = preset.size(project.aspect)
        _, _, total_s = scene_starts(project, preset)
        base = {"tier": preset.name, "size": f"{size[0]}x{size[1]}@{preset.fps}", "video_s": round(total_s, 3),
                "frames": int(round(total_s * preset.fps))}
        nvenc, nvenc_problem = (None, "") if not gpu[0] else nvenc_state(preset)
        cpu_out = work / f"{preset.name}-cpu.mp4"
        for approach in args.approaches:
            case = f"{preset.name} {approach}"
            out = work / f"{preset.name}-{approach}.mp4"
            # 2. Rows that cannot run here say why.
            if approach in ("gpu", "bound") and not gpu[0]:
                rows.append(row("compose", case, "no GPU", approach=approach, reason=gpu[1], **base))
                print(f"  {case:18s} no GPU ({gpu[1]})", flush=True)
                continue
            if approach in ("gpu", "bound") and nvenc_problem:
                rows.append(row("compose", case, "not available", approach=approach, reason=nvenc_problem, **base))
                print(f"  {case:18s} not available ({nvenc_problem})", flush=True)
                continue
            if approach == "gpu" and not takes_device:
                rows.append(row("compose", case, "not available", approach=approach, reason=NO_RENDERER, **base))
                print(f"  {case:18s} {NO_RENDERER}", flush=True)
                continue
            encoder = "libx264" if approach == "cpu" else nvenc
            try:
                if approach == "bound":
                    # 3. The bound: the frames made beforehand (not timed), then NVENC alone on them.
                    raw = raw_folder(base["frames"] * size[0] * size[1] * 3 // 2) / f"studio-gpu-bench-{os.getpid()}.yuv"
                    t0 = time.perf_counter()
                    try:
                        if cpu_out.is_file():
                            frames, source = raw_from_video(cpu_out, raw, size), "the cpu row's output, decoded"
                        else:
                            frames, source = write_raw_yuv(render_frames(project, preset), raw), "bench.common.render_frames"
                        print(f"  [bound: {frames} frames from {source} in {time.perf_counter() - t0:.1f} s]", flush=True)
                        m = time_bound(raw, preset, size, out, encoder=encoder)
                    finally:
                        raw.unlink(missing_ok=True)
                    info = {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "peak_rss_mb": m.peak_rss_mb, "encoder": encoder,
                            "frames_from": source}
                    error, expected_s = m.error, frames / preset.fps
                else:
                    if approach == "gpu" and not warmed:
                        warm_up(work, preset, nvenc)
                        warmed = True
                    info = run_compose(project, preset, out, encoder=encoder,
                                       device=("cuda" if approach == "gpu" else "cpu") if takes_device else None)
                    error, expected_s = "", total_s
                    if approach == "gpu" and not on_gpu(info["renderer"]):
                        error = f"rendered by {info['renderer']!r}, not the GPU: {'; '.join(info['notes']) or 'no note'}"
            except Exception as exc:  # a failed render is a row, not the end of the benchmark
                rows.append(row("compose", case, "FAILED", approach=approach, reason=f"{type(exc).__name__}: {exc}",
                                **base))
                print(f"  {case:18s} FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            # 4. Probe every output, so a broken render cannot look fast.
            ok, problem, facts = probe(out, expected_s=expected_s, size=size, fps=preset.fps, codec=CODECS[encoder],
                                       need_audio=approach != "bound")
            status = "ok" if ok and not error else "FAILED"
            rows.append(row("compose", case, status, approach=approach, reason=error or problem, **base, **info,
                            realtime_x=total_s / info["wall_s"], output=facts))
            print(f"  {case:18s} {info['wall_s']:7.2f} s  {encoder:10s} {status}"
                  + (f": {error or problem}" if status != "ok" else ""), flush=True)
            if approach == "bound" or (approach == "gpu" and "cpu" not in args.approaches):
                out.unlink(missing_ok=True)
        cpu_out.unlink(missing_ok=True)
        for leftover in work.glob(f"{preset.name}-*.mp4"):
            leftover.unlink()
    return rows


def warm_up(work: Path, preset: Preset, encoder: str) -> None:
    """One small GPU compose first (CUDA context, kernels, NVENC session), so the timed rows measure rendering."""
    t0 = time.perf_counter()
    tiny = build_case(work / "warm", scenes=2, scene_s=1.0, preset=preset, still_size=(960, 540))
    run_compose(tiny, preset, work / "warm.mp4", encoder=encoder, device="cuda")
    print(f"  [GPU warm-up compose in {time.perf_counter() - t0:.1f} s]", flush=True)


def compose_summary(rows: list[dict], quick: bool) -> list[dict]:
    out = []
    for tier in dict.fromkeys(r["tier"] for r in rows if r["section"] == "compose"):
        got = {r["approach"]: r for r in rows if r["section"] == "compose" and r["tier"] == tier and r["status"] == "ok"}
        entry: dict[str, Any] = {"tier": tier}
        if "gpu" in got and "bound" in got:
            entry["gpu_over_bound"] = got["gpu"]["wall_s"] / got["bound"]["wall_s"]
            entry["bound_met"] = entry["gpu_over_bound"] <= BOUND_TARGET
        if "gpu" in got and "cpu" in got:
            entry["cpu_over_gpu"] = got["cpu"]["wall_s"] / got["gpu"]["wall_s"]
        if tier == "maximum" and "gpu" in got and not quick:
            entry["maximum_s"] = got["gpu"]["wall_s"]
            entry["maximum_met"] = got["gpu"]["wall_s"] < MAXIMUM_TARGET_S
        out.append(entry)
    return out


# -- models -------------------------------------------------------------------------------------------------------------
def qwen3_config(name: str) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(**{**QWEN3_COMMON, **QWEN3[name]})


def build_llm(name: str, device: str) -> Any:
    """A Qwen3 writer of the catalogue with random weights, in float16 on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(qwen3_config(name), dtype=torch.float16)
    return model.eval()


def time_generate(model: Any, prompt_tokens: int, new_tokens: int, device: str) -> dict:
    """Sample exactly `new_tokens` after a `prompt_tokens` prompt, as the writer samples (temperature 0.7, top-p 0.95)."""
    import torch

    ids = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), device=device)
    options = dict(do_sample=True, temperature=0.7, top_p=0.95, pad_token_id=0, eos_token_id=None)

    def sync() -> None:
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **options)  # warm-up
        sync()
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **options)
        sync()
    seconds = time.perf_counter() - t0
    made = int(out.shape[1] - prompt_tokens)
    return {"seconds": seconds, "tokens": made, "prompt_tokens": prompt_tokens, "value": made / seconds,
            "unit": "tokens/s"}


def build_sd_turbo(device: str) -> tuple[Any, Any]:
    """SD-Turbo's architecture (Stable Diffusion 2.1 at 512x512) with random weights, float16."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from bench.models import VAE, _clip, _weights
    from studio.testing import clip_tokenizer

    tokenizer = clip_tokenizer()
    with torch.device(device):
        unet = UNet2DConditionModel(**SD21_UNET)
        vae = AutoencoderKL(**VAE, sample_size=512)
        text_encoder = _clip(CLIP_H, False, tokenizer)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if device != "meta":
        pipe.to(device, torch.float16)
        pipe.set_progress_bar_config(disable=True)
    return pipe, _weights("SD-Turbo / SD 2.1 (random weights)", unet, vae, text_encoder)


def tier_defaults() -> dict[str, dict[str, str]]:
    """{provider: {tier: model}} of the shipped tiers' [models.*] tables."""
    from studio.catalog import load_catalog

    catalog = load_catalog()
    table: dict[str, dict[str, str]] = {}
    for tier in TIERS:
        for provider, options in load_preset(tier).models.items():
            if "model" in options:  # the loader resolves catalogue names to hub ids: back to the catalogue's name
                entry = catalog.find(str(options["model"]))
                table.setdefault(provider, {})[tier] = entry.name if entry is not None else str(options["model"])
    return table


def catalogue_model_cases() -> list[tuple[str, str, str | None]]:
    """(case, which tiers use it, why it is not built or None) for the tiers' defaults beyond bench/models.py."""
    defaults = tier_defaults()
    used: dict[str, list[str]] = {}
    for provider, by_tier in defaults.items():
        for tier, model in by_tier.items():
            used.setdefault(f"{provider}:{model}", []).append(tier)
    cases = []
    for key, tiers in used.items():
        provider, model = key.split(":", 1)
        where = f"{provider} default of {', '.join(tiers)}"
        if provider == "transformers" and model in QWEN3:
            cases.append((f"llm {model}", where, None))
        elif provider == "bark" and model == "bark":
            cases.append(("bark", where, None))
        elif provider == "bark" and model == "bark-small":
            cases.append(("bark-small", where, "measured by the bark-small row (bench/models.py)"))
        elif provider == "diffusers-image" and model == "sd-turbo":
            cases.append(("sd-turbo-512", where, None))
        elif provider == "diffusers-image" and model in ("sdxl-turbo", "sdxl-base"):
            cases.append((model, where, "measured by the sdxl rows (bench/models.py): same architecture"))
        elif provider == "diffusers-video":
            cases.append((f"{model} + adapter", where, "measured by the animatediff row (bench/models.py)"))
        elif provider == "kokoro":
            cases.append((model, where, "not built: Kokoro ships as an ONNX graph; a real-size graph cannot be made "
                                        "from a config without its weights (studio.testing's tiny graph is not real size)"))
        elif model == "flux.1-schnell":
            cases.append((model, where, "not built: FLUX.1-schnell's T5-XXL tokenizer needs its sentencepiece files, "
                                        "which are not on this machine, and the 12 B transformer has no builder here yet"))
        else:
            cases.append((model, where, "not built: no real-size builder for this architecture in bench/gpu.py"))
    return cases


def models_section(args: argparse.Namespace, gpu: tuple[bool, str], work: Path) -> list[dict]:
    from bench import models as bm

    groups = [["sdxl-turbo-512", "sdxl-turbo-1024"], ["sdxl-512", "sdxl-1024"], ["bark-small"], ["animatediff"]]
    if args.quick:
        groups = [["sdxl-turbo-512"], ["bark-small"]]
    rows: list[dict] = []
    extra = catalogue_model_cases()
    if not gpu[0]:
        for case in [c for g in groups for c in g] + [c for c, _, why in extra if why is None]:
            rows.append(row("models", case, "no GPU", reason=gpu[1]))
        for case, where, why in extra:
            if why is not None:
                rows.append(row("models", case, "not built" if why.startswith("not built") else "covered",
                                reason=why, used_by=where))
        for r in rows:
            print(f"  {r['case']:26s} {r['status']}: {r['reason']}", flush=True)
        return rows
    # 1. bench/models.py's cases, one architecture at a time (a failure is that group's row).
    for group in groups:
        try:
            for r in bm.run_gpu(group, args.repeat, work):
                rows.append(row("models", r.pop("case"), "ok", **r))
        except Exception as exc:
            for case in group:
                rows.append(row("models", case, "FAILED", reason=f"{type(exc).__name__}: {exc}"))
            traceback.print_exc()
        free_gpu()
    # 2. The tiers' defaults that bench/models.py does not cover.
    for case, where, why in extra:
        if why is not None:
            rows.append(row("models", case, "not built" if why.startswith("not built") else "covered", reason=why,
                            used_by=where))
            continue
        if args.quick and case.startswith("llm") and case != "llm qwen3-0.6b":
            continue
        try:
            rows.append(row("models", case, "ok", used_by=where, **model_case(case, args, work)))
            r = rows[-1]
            print(f"  {case:26s} {r['value']:9.2f} {r['unit']:14s} ({r['seconds']:.2f} s)  peak "
                  f"{r['peak_gpu_gib']:.1f} GiB  {where}", flush=True)
        except Exception as exc:
            rows.append(row("models", case, "FAILED", reason=f"{type(exc).__name__}: {exc}", used_by=where))
            traceback.print_exc()
        free_gpu()
    return rows


def free_gpu() -> None:
    from studio.devices import free_memory

    free_memory()


def model_case(case: str, args: argparse.Namespace, work: Path) -> dict:
    """One catalogue default on the GPU: build (timed apart), run through the provider, report the provider's unit."""
    import torch

    from bench import models as bm

    device = "cuda"
    gpu_peak_reset()
    t0 = time.perf_counter()
    if case.startswith("llm "):
        name = case.split(" ", 1)[1]
        model = build_llm(name, device)
        build_s = time.perf_counter() - t0
        result = time_generate(model, LLM_PROMPT_TOKENS, 64 if args.quick else LLM_NEW_TOKENS, device)
        parameters = sum(p.numel() for p in model.parameters())
        del model
        return {**result, "build_s": build_s, "parameters": parameters, "model": f"{name} (Qwen3, random weights)",
                "peak_gpu_gib": gpu_peak_gib()}
    if case == "bark":
        from studio.voice.bark import BarkNarrator

        model, processor, weights = bm.build_bark(device, bm.BARK_FULL, name="Bark (suno/bark, random weights)")
        build_s = time.perf_counter() - t0
        narrator = BarkNarrator(weights, voice=None, device=device, dtype="float16", batch_size=4, pause_s=0.3,
                                temperature=0.7)
        narrator.use_model(model, processor)
        result = bm.bark_case(narrator, args.repeat, device, work / "bark-full.wav")
        narrator.release()
        del model
        return {**result, "build_s": build_s, "model": weights.describe(), "peak_gpu_gib": gpu_peak_gib()}
    if case == "sd-turbo-512":
        from studio.visuals.diffusers_image import DiffusersImagePainter

        pipe, weights = build_sd_turbo(device)
        build_s = time.perf_counter() - t0
        steps = int(load_preset("draft").models.get("diffusers-image", {}).get("steps", 1))
        painter = DiffusersImagePainter(weights, steps=steps, guidance_scale=0.0, negative_prompt="", style_prompt="",
                                        native_size=512, device=device, dtype="float16")
        painter.use_pipeline(pipe, device)
        result = bm.image_case(painter, (512, 512), args.repeat, device, work / "sd-turbo.png")
        painter.release()
        del pipe
        torch.cuda.synchronize()
        return {**result, "value": result["seconds"], "build_s": build_s, "model": weights.describe(),
                "peak_gpu_gib": gpu_peak_gib()}
    raise ValueError(f"no model case {case!r}")


def check_architectures() -> list[dict]:
    """Build the catalogue architectures of this file on torch's meta device and check their parameter counts."""
    import torch
    from transformers import AutoModelForCausalLM

    rows = []
    for name, config in QWEN3.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(qwen3_config(name))
        total = sum(p.numel() for p in model.parameters())
        hidden = config["hidden_size"]
        embedding = QWEN3_COMMON["vocab_size"] * hidden * (1 if config["tie_word_embeddings"] else 2)
        non_embedding = total - embedding
        published = QWEN3_NON_EMBEDDING[name]
        rows.append({"architecture": name, "parameters": total, "non_embedding": non_embedding,
                     "published_non_embedding": published,
                     "matches": abs(non_embedding - published) / published < 0.02})
    pipe, _ = build_sd_turbo("meta")
    count = sum(p.numel() for p in pipe.unet.parameters())
    rows.append({"architecture": "SD 2.1 UNet (SD-Turbo)", "parameters": count, "published": SD21_UNET_PARAMETERS,
                 "matches": count == SD21_UNET_PARAMETERS})
    from bench.models import BARK_FULL, build_bark

    bark, _, _ = build_bark("meta", BARK_FULL)
    rows.append({"architecture": "Bark (suno/bark) semantic+coarse+fine",
                 "parameters": sum(p.numel() for m in (bark.semantic, bark.coarse_acoustics, bark.fine_acoustics)
                                   for p in m.parameters()), "published": None, "matches": True})
    for r in rows:
        print(f"  {r['architecture']:40s} {r['parameters'] / 1e6:10.1f} M  "
              + ("(no published count)" if not r.get("published") and not r.get("published_non_embedding")
                 else "same as published" if r["matches"] else "DIFFERENT from published"))
    return rows


# -- the film -----------------------------------------------------------------------------------------------------------
def film_section(args: argparse.Namespace, gpu: tuple[bool, str], work: Path) -> list[dict]:
    if not gpu[0]:
        print(f"  {'premium film':26s} no GPU ({gpu[1]})", flush=True)
        return [row("film", "premium film 60 s", "no GPU", reason=gpu[1])]
    # --quick: the script's first two paragraphs (about 15 s of video), the same steps.
    script = "\n\n".join(FILM_SCRIPT.split("\n\n")[:3]) + "\n" if args.quick else FILM_SCRIPT
    try:
        r = film(work, script=script)
    except Exception as exc:
        traceback.print_exc()
        return [row("film", "premium film 60 s", "FAILED", reason=f"{type(exc).__name__}: {exc}")]
    if args.quick:
        r.update(case="premium film (quick, 2 paragraphs)", met=None)
    print(f"  {r['case']:26s} {r['status']} {r['wall_s']:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                                             r["steps"].items()), flush=True)
    return [r]


# Tiny sizes for `film(..., real=False)`: the same code path on the CPU in seconds (tests).
TINY_QWEN3 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
                  num_key_value_heads=1, tie_word_embeddings=True)
TINY_BARK = dict(hidden_size=16, num_layers=2, num_heads=2, block_size=1024)


def film(work: Path, *, device: str = "cuda", real: bool = True, script: str = FILM_SCRIPT) -> dict:
    """A 60 s Premium film end to end, each step timed; the models are built (untimed) before.

    With ``real=False`` the same steps run with tiny random models (the painter loads its tiny folder itself) on
    `device`, so that a test checks the wiring: the verbs must use the very instances the models were given to.
    """
    import dataclasses

    from bench import models as bm
    from studio import providers
    from studio.compose import compose
    from studio.storyboard import write_storyboard
    from studio.testing import TinyModels
    from studio.visuals import illustrate
    from studio.voice import narrate

    base = load_preset("premium")
    video_opts = dict(base.models.get("diffusers-video", {}))
    # 1. The preset's model tables point at tiny folders (so the factories accept them); the instances they make
    #    are then given the real-size random-weight models, and the verbs get those same cached instances.
    tiny = TinyModels(work / "tiny")
    dtype = "float16" if device.startswith("cuda") else "float32"
    models = {
        "bark": {"model": str(tiny.folder("bark")), "device": device, "dtype": dtype, "voice": None},
        "diffusers-video": {"model": str(tiny.folder("sd")), "adapter": str(tiny.folder("motion_adapter")),
                            "device": device, "dtype": dtype,
                            "steps": int(video_opts.get("steps", 20)) if real else 2,
                            "guidance_scale": float(video_opts.get("guidance_scale", 7.5)),
                            "frames": int(video_opts.get("frames", 16)) if real else 8},
    }
    if not real or "native_size" in video_opts:  # else the provider's own choice, as Premium makes it
        models["diffusers-video"]["native_size"] = int(video_opts.get("native_size", 64)) if real else 64
    preset = dataclasses.replace(base, models=models)
    notes = ["storyboard: the rules writer (random weights write no usable storyboard); the Premium writer's "
             "architecture is timed generating the same number of tokens",
             "narrator: bark (Premium's first choice, Kokoro, is ONNX and cannot be built real-size without weights)"]
    if not real:
        notes.append("tiny models: a wiring check, not a measurement")
    providers.release()
    t0 = time.perf_counter()
    llm_name = str(base.models.get("transformers", {}).get("model", "qwen3-4b-instruct-2507"))
    llm_name = next((n for n in QWEN3 if n.lower() in llm_name.lower() or llm_name.lower().endswith(n)), llm_name)
    if real:
        llm = build_llm(llm_name if llm_name in QWEN3 else "qwen3-4b-instruct-2507", device)
        bark_model, processor, _ = bm.build_bark(device, bm.BARK_FULL, text=script, name="Bark (random weights)")
    else:
        from transformers import AutoModelForCausalLM, Qwen3Config

        llm = AutoModelForCausalLM.from_config(Qwen3Config(**{**QWEN3_COMMON, **TINY_QWEN3})).to(device).eval()
        bark_model, processor, _ = bm.build_bark(device, TINY_BARK, text=script, name="tiny Bark")
        bark_model.to(torch_dtype(dtype))
    narrator, _ = providers.create("narrator", "bark", configs=preset.models)
    narrator.use_model(bark_model, processor)
    painter, _ = providers.create("painter", "diffusers-video", configs=preset.models)
    if real:
        pipe, _ = bm.build_animatediff(device)
        painter.use_pipeline(pipe, device)
    build_s = time.perf_counter() - t0
    print(f"  [film: models built in {build_s:.1f} s (random init stands in for loading weights: not in the total)]",
          flush=True)
    steps: dict[str, float] = {}
    gpu_peak_reset()
    try:
        # 2. Storyboard: the rules writer, then the writer's LLM generating as many tokens as that storyboard holds.
        t0 = time.perf_counter()
        project = write_storyboard(script, mode="script", writer="rules", preset=preset)
        steps["storyboard_rules"] = time.perf_counter() - t0
        tokens = max(16, len(json.dumps([{"narration": s.narration, "visual_prompt": s.visual_prompt}
                                         for s in project.scenes])) // 4)  # about 4 characters a token
        llm_run = time_generate(llm, LLM_PROMPT_TOKENS if real else 32, tokens, device)
        steps["storyboard_llm"] = llm_run["seconds"]
        del llm
        free_gpu()
        project = project.save(work / "film")
        # 3. Narration and pictures (AnimateDiff clips) with the given models: the verbs must get the same instances.
        t0 = time.perf_counter()
        project = narrate(project, narrator="bark", preset=preset)
        steps["narration"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        project = illustrate(project, painter="diffusers-video", preset=preset)
        steps["pictures"] = time.perf_counter() - t0
        used = (providers.create("narrator", "bark", configs=preset.models)[0] is narrator
                and providers.create("painter", "diffusers-video", configs=preset.models)[0] is painter)
        if not used or narrator._bark is not bark_model:
            raise RuntimeError("the verbs did not use the injected models (the provider cache key differs): "
                               "the film's figures would be the tiny models'")
        providers.release()
        free_gpu()
        # 4. Composition with the renderer and encoder `auto` picks (the GPU renderer and NVENC on a GPU machine).
        out = work / "film.mp4"
        t0 = time.perf_counter()
        result = compose(project, preset, out)
        steps["compose"] = time.perf_counter() - t0
    finally:
        providers.release()
        free_gpu()
    total = sum(steps.values())
    size = preset.size(project.aspect)
    ok, problem, facts = probe(out, expected_s=result.duration_s, size=size, fps=preset.fps,
                               codec=CODECS.get(result.encoder, "h264"), need_audio=True)
    renderer = getattr(result, "renderer", "cpu (the only renderer of this checkout)")
    return row("film", "premium film 60 s" if real else "premium film (tiny models)", "ok" if ok else "FAILED",
               reason=problem, wall_s=total, steps=steps, build_s=build_s, scenes=len(project.scenes),
               video_s=result.duration_s, llm_tokens=tokens, llm=f"{llm_name} (random weights)",
               encoder=result.encoder, renderer=renderer, compose_notes=list(getattr(result, "notes", ())),
               notes=notes, peak_gpu_gib=gpu_peak_gib(), target_s=FILM_TARGET_S, met=ok and total < FILM_TARGET_S,
               output=facts)


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


# -- report -------------------------------------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(report: dict) -> None:
    info = report["machine"]
    print()
    print(f"GPU benchmark on {info['gpu'] or 'no GPU (' + str(info['no_gpu_reason']) + ')'}, {info['cpus']} CPU cores, "
          f"{info['memory_gib']} GiB{' (--quick)' if report['args'].get('quick') == 'True' else ''}")
    head = ("section", "case", "status", "wall_s", "value", "peak_GPU_GiB", "detail")
    table = [head]
    for r in report["rows"]:
        if r["section"] == "compose" and r["status"] == "ok":
            value, detail = f"{r['realtime_x']:.1f}x realtime", f"{r['size']} {r['encoder']} {r.get('renderer', '')}"
        elif r["section"] == "models" and r["status"] == "ok":
            value, detail = (f"{r['value']:.2f} {r['unit']}" if "value" in r else f"{r['seconds']:.3f} {r['unit']}",
                             r.get("model", ""))
        elif r["section"] == "film" and r["status"] == "ok":
            value = f"{r['video_s']:.0f} s video"
            detail = ", ".join(f"{k} {v:.1f} s" for k, v in r["steps"].items()) + f"; {r['renderer']}"
        else:
            value, detail = "", r.get("reason", "")
        wall = r.get("wall_s", r.get("seconds"))
        table.append((r["section"], r["case"], r["status"], fmt(wall), value, fmt(r.get("peak_gpu_gib"), 1),
                      detail[:110]))
    widths = [max(len(str(t[i])) for t in table) for i in range(len(head) - 1)]
    for k, t in enumerate(table):
        print("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(t[:-1])) + "  " + t[-1])
        if k == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    print()
    print("Ratios and targets:")
    for s in report["summary"]:
        where = f"  {s['tier']:9s}"
        if "gpu_over_bound" in s:
            print(f"{where} gpu/bound = {s['gpu_over_bound']:.2f}x (target <= {BOUND_TARGET}): "
                  f"{'met' if s['bound_met'] else 'NOT MET'}")
        if "cpu_over_gpu" in s:
            print(f"{where} cpu/gpu   = {s['cpu_over_gpu']:.2f}x")
        if "maximum_s" in s:
            print(f"{where} 60 s at 4K30 on the GPU in {s['maximum_s']:.1f} s (target < {MAXIMUM_TARGET_S:g} s): "
                  f"{'met' if s['maximum_met'] else 'NOT MET'}")
        if len(s) == 1:
            print(f"{where} no ratio: the GPU rows did not run here")
    for r in report["rows"]:
        if r["section"] == "film" and r["status"] == "ok":
            verdict = "no target for --quick" if r["met"] is None else "met" if r["met"] else "NOT MET"
            print(f"  film      {r['wall_s']:.1f} s end to end (target < {FILM_TARGET_S:g} s for 60 s): {verdict}; "
                  f"models built beforehand in {r['build_s']:.1f} s")
    print("(sections took: " + ", ".join(f"{k} {v:.0f} s" for k, v in report["section_s"].items()) + ")")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: models,compose,film")
    parser.add_argument("--tiers", default=",".join(TIERS), help="compose tiers (default: all four)")
    parser.add_argument("--approaches", default=",".join(APPROACHES), help="compose approaches: gpu,cpu,bound")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per model case after a warm-up (default 1)")
    parser.add_argument("--quick", action="store_true", help="2 scenes of 1 s and fewer model cases: a smoke test")
    parser.add_argument("--json", type=Path, help="write every row to this JSON file")
    parser.add_argument("--architectures", action="store_true", help="only build this file's catalogue architectures "
                        "on the meta device and check their parameter counts (no GPU needed)")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    args.tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    args.approaches = [a.strip() for a in args.approaches.split(",") if a.strip()]
    for name, got, allowed in (("--only", args.sections, SECTIONS), ("--tiers", args.tiers, TIERS),
                               ("--approaches", args.approaches, APPROACHES)):
        bad = sorted(set(got) - set(allowed))
        if bad or not got:
            parser.error(f"{name} must name some of {', '.join(allowed)}; got {bad or 'nothing'}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    if args.architectures:
        rows = check_architectures()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"architectures": rows}, indent=1), "utf-8")
        return 0 if all(r["matches"] for r in rows) else 1
    gpu = cuda_state()
    print(f"CUDA: {'yes, ' + gpu[1] if gpu[0] else 'no (' + gpu[1] + ')'}", flush=True)
    sections: dict[str, Callable] = {"models": models_section, "compose": compose_section, "film": film_section}
    work = Path(tempfile.mkdtemp(prefix="studio-gpu-bench-"))
    rows: list[dict] = []
    took: dict[str, float] = {}
    try:
        for name in SECTIONS:
            if name in args.sections:
                print(f"== {name}", flush=True)
                t0 = time.perf_counter()
                rows += sections[name](args, gpu, work)
                took[name] = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"machine": machine(gpu), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
              "summary": compose_summary(rows, args.quick), "section_s": took,
              "failures": [f"{r['case']}: {r['reason']}" for r in rows if r["status"] == "FAILED"]}
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str), "utf-8")
    for failure in report["failures"]:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
