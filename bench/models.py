"""Model providers benchmark: seconds per image, audio seconds per second, seconds per clip.

    python bench/models.py                          # on a GPU: real-size architectures, random weights, fp16
    python bench/models.py --only sdxl-turbo-512,bark-small --repeat 5 --json bench/results/models.json
    python bench/models.py --tiny                   # on a CPU: the tiny test models (a smoke test, seconds)

No weights are downloaded (GPU machines have none either): each case builds the real architecture from its published
config with random weights, in float16 on the GPU, and runs it through Studio's own provider code (the painter's
``paint`` with its prompt, seed, progress callback, fitting and PNG/MP4 writing; the narrator's ``speak`` with its
sentence pieces, trimming, pauses and word timings). Random weights do the same arithmetic as trained ones, so the
times stand for the real models; what they make is noise.

Cases (each timed after one warm-up run; the median of ``--repeat`` runs):

* ``sdxl-turbo-512``, ``sdxl-turbo-1024``: the SDXL UNet (2.6 B parameters), both CLIP text encoders and the VAE;
  4 steps, no classifier-free guidance (SDXL-Turbo's recipe) -> seconds per image;
* ``sdxl-512``, ``sdxl-1024``: the same architecture with SDXL base's recipe: 30 steps, guidance 5 -> seconds per
  image;
* ``bark-small``: Bark-small's three 12-layer transformers and the 24 kHz EnCodec codec; a two-sentence narration
  whose semantic stage is capped at the length real speech of those words takes -> audio seconds per wall second;
* ``animatediff``: an SD 1.5 UNet with the v1-5-2 motion adapter, 16 frames at 512x512, 20 steps, guidance 7.5,
  written as a looped MP4 -> seconds per clip.

``--tiny`` runs the same code on the tiny models of ``studio.testing`` on the CPU; its numbers only show the
harness works. ``--architectures`` builds the real-size models on torch's ``meta`` device and checks their parameter
counts against the published ones (no GPU, no memory needed).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.project import Scene  # noqa: E402
from studio.weights import LocalWeights  # noqa: E402

CASES = ("sdxl-turbo-512", "sdxl-turbo-1024", "sdxl-512", "sdxl-1024", "bark-small", "animatediff")
PROMPT = "a lighthouse on a cliff at sunrise, waves below, warm light, highly detailed"
NARRATION = ("The lighthouse has stood on this cliff for two hundred years. Every night its lamp turns, and ships "
             "far out at sea find their way home.")

# Published configs of the real models (diffusers / transformers config.json), as constructor arguments.
SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], in_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=4, projection_class_embeddings_input_dim=2816,
    sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True)
SD15_UNET = dict(
    attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=64)
VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, in_channels=3, out_channels=3, latent_channels=4,
           layers_per_block=2, norm_num_groups=32)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768,
              hidden_act="quick_gelu", max_position_embeddings=77)
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                 projection_dim=1280, hidden_act="gelu", max_position_embeddings=77)
BARK_SMALL = dict(hidden_size=768, num_layers=12, num_heads=12, block_size=1024)
BARK_FULL = dict(hidden_size=1024, num_layers=24, num_heads=16, block_size=1024)  # suno/bark (Premium, Maximum)
MOTION_ADAPTER_V152 = dict(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                           motion_mid_block_layers_per_block=1, motion_num_attention_heads=8, motion_norm_num_groups=32,
                           motion_max_seq_length=32, use_motion_mid_block=True)


def _weights(name: str, *modules: Any) -> LocalWeights:
    parameters = sum(p.numel() for m in modules for p in m.parameters())
    return LocalWeights(model=name, folder=Path("."), source="random weights", parameters=parameters,
                        stored_bytes=parameters * 2)


def _clip(config: dict, with_projection: bool, tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=49408, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **config)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


# -- building the real-size architectures (random weights, fp16, on the GPU) -------------------------------------------------
def build_sdxl(device: str, turbo: bool) -> tuple[Any, LocalWeights]:
    import torch
    from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                           StableDiffusionXLPipeline, UNet2DConditionModel)

    from studio.testing import clip_tokenizer

    tokenizer = clip_tokenizer()
    with torch.device(device):
        unet = UNet2DConditionModel(**SDXL_UNET)
        vae = AutoencoderKL(**VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=False)
        text_encoder = _clip(CLIP_L, False, tokenizer)
        text_encoder_2 = _clip(CLIP_BIGG, True, tokenizer)
    scheduler = (EulerAncestralDiscreteScheduler if turbo else EulerDiscreteScheduler)(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing" if turbo else
        "leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipe.to(device, torch.float16)
    pipe.set_progress_bar_config(disable=True)
    return pipe, _weights("SDXL (random weights)", unet, vae, text_encoder, text_encoder_2)


def animatediff_modules(device: str) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel

    from studio.testing import clip_tokenizer

    tokenizer = clip_tokenizer()
    with torch.device(device):
        return {"unet": UNet2DConditionModel(**SD15_UNET), "vae": AutoencoderKL(**VAE, sample_size=512),
                "text_encoder": _clip(CLIP_L, False, tokenizer), "motion_adapter": MotionAdapter(**MOTION_ADAPTER_V152),
                "tokenizer": tokenizer}


def build_animatediff(device: str) -> tuple[Any, LocalWeights]:
    import torch
    from diffusers import AnimateDiffPipeline, DDIMScheduler

    parts = animatediff_modules(device)
    unet, vae, text_encoder, adapter, tokenizer = (parts[k] for k in ("unet", "vae", "text_encoder", "motion_adapter",
                                                                      "tokenizer"))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                              timestep_spacing="linspace", steps_offset=1)
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                               motion_adapter=adapter, scheduler=scheduler, feature_extractor=None, image_encoder=None)
    pipe.to(device, torch.float16)
    pipe.set_progress_bar_config(disable=True)
    return pipe, _weights("SD 1.5 + AnimateDiff v1-5-2 (random weights)", pipe.unet, vae, text_encoder)


def build_bark(device: str, sizes: dict | None = None, text: str = NARRATION,
               name: str = "Bark-small (random weights)") -> tuple[Any, Any, LocalWeights]:
    """Bark with `sizes` (default Bark-small's; `BARK_FULL` for suno/bark) and a word-piece vocabulary of `text`."""
    import torch
    from transformers import BarkConfig, BarkModel, BarkProcessor, BertTokenizer, EncodecConfig, GenerationConfig
    from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

    sizes = sizes or BARK_SMALL
    config = BarkConfig(
        semantic_config={**sizes, "input_vocab_size": 129600, "output_vocab_size": 10048},
        coarse_acoustics_config={**sizes, "input_vocab_size": 12096, "output_vocab_size": 12096},
        fine_acoustics_config={**sizes, "input_vocab_size": 1056, "output_vocab_size": 1056, "n_codes_total": 8,
                               "n_codes_given": 1},
        codec_config=EncodecConfig().to_dict())  # EnCodec 24 kHz
    with torch.device(device):
        model = BarkModel(config)
    generation = BarkGenerationConfig(semantic_config={"temperature": 0.7, "top_k": 50},
                                      coarse_acoustics_config={"temperature": 0.7, "top_k": 50},
                                      fine_acoustics_config={"temperature": 0.5})
    model.generation_config = GenerationConfig.from_dict(generation.to_dict())
    model.to(device, torch.float16).eval()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w.strip(".,;:!?").lower() for w in text.split()})
    processor = BarkProcessor(tokenizer=BertTokenizer(vocab={w: i for i, w in enumerate(words)}))
    return model, processor, _weights(name, model)


# -- running through Studio's providers -------------------------------------------------------------------------------------
def timed(run: Callable[[], Any], repeat: int, device: str) -> tuple[list[float], Any]:
    """One warm-up run, then `repeat` timed runs (synchronised on a GPU); returns the times and the last result."""
    import torch

    def once() -> tuple[float, Any]:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    once()
    times, result = [], None
    for _ in range(repeat):
        seconds, result = once()
        times.append(seconds)
    return times, result


def image_case(painter: Any, size: tuple[int, int], repeat: int, device: str, out: Path) -> dict:
    from PIL import Image

    scene = Scene("bench", "A lighthouse.", PROMPT, seed=1)
    times, path = timed(lambda: painter.paint(scene, index=0, size=size, style="", project_seed=0, out=out), repeat,
                        device)
    with Image.open(path) as image:
        made = list(image.size)
    return {"seconds": statistics.median(times), "times": times, "unit": "s/image", "output": {"size": made},
            "steps": painter.steps}


def bark_case(narrator: Any, repeat: int, device: str, out: Path) -> dict:
    times, speech = timed(lambda: narrator.speak(NARRATION, voice=None, seed=0, language="en", out=out), repeat,
                          device)
    seconds = statistics.median(times)
    return {"seconds": seconds, "times": times, "audio_s": speech.duration_s, "unit": "audio s per s",
            "value": speech.duration_s / seconds, "output": {"audio_s": speech.duration_s, "words": len(speech.words),
                                                             "sample_rate": speech.sample_rate}}


def clip_case(painter: Any, size: tuple[int, int], repeat: int, device: str, out: Path) -> dict:
    from studio.media import probe

    scene = Scene("bench", "A lighthouse.", PROMPT, seed=1, duration_s=4.0)
    times, path = timed(lambda: painter.paint(scene, index=0, size=size, style="", project_seed=0, out=out), repeat,
                        device)
    info = probe(path)
    return {"seconds": statistics.median(times), "times": times, "unit": "s/clip",
            "output": {"size": [info.width, info.height], "duration_s": info.duration_s}, "frames": painter.frames,
            "steps": painter.steps}


def run_gpu(cases: list[str], repeat: int, work: Path) -> list[dict]:
    import torch

    from studio.visuals.diffusers_image import DiffusersImagePainter
    from studio.visuals.diffusers_video import DiffusersVideoPainter
    from studio.voice.bark import BarkNarrator
    from studio.devices import free_memory

    device = "cuda"
    rows = []
    for turbo in (True, False):
        wanted = [c for c in cases if c.startswith("sdxl-turbo-" if turbo else "sdxl-") and
                  c.startswith("sdxl-turbo") == turbo]
        if not wanted:
            continue
        pipe, weights = build_sdxl(device, turbo)
        painter = DiffusersImagePainter(weights, steps=4 if turbo else 30, guidance_scale=0.0 if turbo else 5.0,
                                        negative_prompt="" if turbo else "blurry, low quality", style_prompt="",
                                        native_size=None, device=device, dtype="float16")
        painter.use_pipeline(pipe, device)
        for case in wanted:
            side = int(case.rsplit("-", 1)[1])
            painter.native_size = side
            torch.cuda.reset_peak_memory_stats()
            row = image_case(painter, (side, side), repeat, device, work / f"{case}.png")
            rows.append({"case": case, "model": weights.describe(), "size": [side, side],
                         "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2 ** 30, **row})
            print(_line(rows[-1]), flush=True)
        painter.release()
        del pipe
        free_memory()
    if "bark-small" in cases:
        model, processor, weights = build_bark(device)
        narrator = BarkNarrator(weights, voice=None, device=device, dtype="float16", batch_size=4, pause_s=0.3,
                                temperature=0.7)
        narrator.use_model(model, processor)
        torch.cuda.reset_peak_memory_stats()
        row = bark_case(narrator, repeat, device, work / "bark.wav")
        rows.append({"case": "bark-small", "model": weights.describe(),
                     "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2 ** 30, **row})
        print(_line(rows[-1]), flush=True)
        narrator.release()
        del model
        free_memory()
    if "animatediff" in cases:
        pipe, weights = build_animatediff(device)
        painter = DiffusersVideoPainter(weights, None, steps=20, guidance_scale=7.5, frames=16, fps=8,
                                        negative_prompt="blurry, low quality", style_prompt="", native_size=512,
                                        crf=18, device=device, dtype="float16")
        painter.use_pipeline(pipe, device)
        torch.cuda.reset_peak_memory_stats()
        row = clip_case(painter, (512, 512), repeat, device, work / "clip.mp4")
        rows.append({"case": "animatediff", "model": weights.describe(), "size": [512, 512],
                     "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2 ** 30, **row})
        print(_line(rows[-1]), flush=True)
        painter.release()
    return rows


def run_tiny(repeat: int, work: Path) -> list[dict]:
    from studio import providers
    from studio.testing import TinyModels, use_one_thread

    use_one_thread()
    tiny = TinyModels(work / "models")
    rows = []
    painter, _ = providers.create("painter", "diffusers-image", **tiny.options("diffusers-image"))
    for side in (64, 128):
        painter.native_size = side
        row = image_case(painter, (side, side), repeat, "cpu", work / f"tiny-{side}.png")
        rows.append({"case": f"tiny-sd-{side}", "model": painter.weights.describe(), "size": [side, side], **row})
        print(_line(rows[-1]), flush=True)
    narrator, _ = providers.create("narrator", "bark", **tiny.options("bark"))
    rows.append({"case": "tiny-bark", "model": narrator.weights.describe(),
                 **bark_case(narrator, repeat, "cpu", work / "tiny.wav")})
    print(_line(rows[-1]), flush=True)
    clip_painter, _ = providers.create("painter", "diffusers-video", **tiny.options("diffusers-video"))
    rows.append({"case": "tiny-animatediff", "model": clip_painter.weights.describe(), "size": [64, 64],
                 **clip_case(clip_painter, (64, 64), repeat, "cpu", work / "tiny.mp4")})
    print(_line(rows[-1]), flush=True)
    providers.release()
    return rows


# Parameter counts of the published models, to check that the configs above build the real architectures.
PUBLISHED = {"SDXL UNet": 2_567_463_684, "SD 1.5 UNet": 859_520_964, "SD VAE": 83_653_863,
             "CLIP ViT-L/14 text encoder": 123_060_480, "OpenCLIP ViT-bigG/14 text encoder": 694_659_840}


def check_architectures() -> list[dict]:
    """Build every real-size architecture on torch's ``meta`` device (no memory, no arithmetic) and count its
    parameters; the ones with published counts must match them exactly."""
    from diffusers import UNet2DConditionModel

    pipe, _ = build_sdxl("meta", turbo=True)
    parts = animatediff_modules("meta")
    bark, _, _ = build_bark("meta")
    modules = {"SDXL UNet": pipe.unet, "SD VAE": pipe.vae, "CLIP ViT-L/14 text encoder": pipe.text_encoder,
               "OpenCLIP ViT-bigG/14 text encoder": pipe.text_encoder_2, "SD 1.5 UNet": parts["unet"],
               "AnimateDiff motion adapter v1-5-2": parts["motion_adapter"], "Bark-small semantic": bark.semantic,
               "Bark-small coarse": bark.coarse_acoustics, "Bark-small fine": bark.fine_acoustics,
               "EnCodec 24 kHz": bark.codec_model}
    assert isinstance(parts["unet"], UNet2DConditionModel)
    rows = []
    for name, module in modules.items():
        count = sum(p.numel() for p in module.parameters())
        rows.append({"architecture": name, "parameters": count, "published": PUBLISHED.get(name),
                     "matches": PUBLISHED.get(name) in (None, count)})
        print(f"{name:36s} {count / 1e6:10.2f} M" + (f"  (published {PUBLISHED[name] / 1e6:.2f} M: "
                                                       f"{'same' if rows[-1]['matches'] else 'DIFFERENT'})"
                                                       if name in PUBLISHED else ""))
    return rows


def _line(row: dict) -> str:
    value = f"{row['value']:.2f} {row['unit']}" if "value" in row else f"{row['seconds']:.3f} {row['unit']}"
    peak = f"  peak {row['peak_gpu_gib']:.1f} GiB" if "peak_gpu_gib" in row else ""
    return f"{row['case']:18s} {value:>22s}  (median of {len(row['times'])}: {row['seconds']:.3f} s){peak}  {row['model']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated cases (default: all): {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case after a warm-up (default 3)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test models on the CPU (a smoke test)")
    parser.add_argument("--json", type=Path, help="write the measurements to this JSON file")
    parser.add_argument("--architectures", action="store_true",
                        help="only build the real-size architectures on the meta device and check their parameter "
                             "counts (no GPU needed)")
    args = parser.parse_args(argv)
    import torch

    if args.architectures:
        rows = check_architectures()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"architectures": rows}, indent=1), "utf-8")
        return 0 if all(r["matches"] for r in rows) else 1

    cases = [c.strip() for c in (args.only or ",".join(CASES)).split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; cases: {', '.join(CASES)}")
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA GPU here: the real-size cases need one (use --tiny for the CPU smoke test)", file=sys.stderr)
        return 2
    machine = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.tiny else "cpu",
               "tiny": args.tiny}
    print(f"device: {machine['device']}  torch {machine['torch']}  {'(tiny models)' if args.tiny else 'fp16'}")
    with tempfile.TemporaryDirectory(prefix="studio-bench-models-") as tmp:
        rows = run_tiny(args.repeat, Path(tmp)) if args.tiny else run_gpu(cases, args.repeat, Path(tmp))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
