"""The ``diffusers-image`` painter: a still per scene from a text-to-image model, loaded in-process with diffusers'
``AutoPipelineForText2Image`` (SD-Turbo and SDXL-Turbo for the quick tiers, SDXL or FLUX-class models for the best).

- The image is generated at the model's native size (e.g. 512x512 pixels' worth for SD-Turbo) in the output's aspect
  ratio, then scaled and centre-cropped to the output size, so no model is asked for a size it was not trained at.
- The prompt is the scene's visual prompt, the project's style and the painter's own style words; a negative prompt
  is used where the model takes one (classifier-free guidance above 1).
- One project, one look: every scene's noise comes from the project seed mixed with the scene's seed (`mix_seed`), on
  a CPU generator, so the same prompt, seed and model give the same image on any device.
- Progress is reported per denoising step and a cancel stops the loop within one step (``callback_on_step_end``).
- Out of GPU memory: memory is freed and the scene is tried once more with model offloading (or smaller); a second
  failure fails that scene with a clear message, and scenes already painted stay in the asset store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import devices
from ..assets import atomic_path
from ..errors import StudioError
from ..progress import CancelToken, ProgressFn, check
from ..project import Scene
from ..providers import register
from ..weights import LocalWeights, find_weights
from . import _diffusion as diffusion

log = logging.getLogger("studio")

DEFAULT_MODEL = "stabilityai/sd-turbo"
VERSION = 1  # bump when this painter's output for the same inputs changes


def _check(model: str = DEFAULT_MODEL, steps: int = 1, device: str | None = None, cache_dir: str | None = None) -> str:
    """Cheap: packages, the weights on this machine, and a device fast enough (Turbo-class models run on a CPU)."""
    return diffusion.check_diffusers(model, steps=steps, device=device, cache_dir=cache_dir)[1]


@register("painter", "diffusers-image", check=_check,
          description="Text-to-image with diffusers (SD-Turbo, SDXL, FLUX...): a picture per scene")
def diffusers_image(model: str = DEFAULT_MODEL, steps: int = 1, guidance_scale: float = 0.0,
                    negative_prompt: str = diffusion.DEFAULT_NEGATIVE, style_prompt: str = "",
                    native_size: int | None = None, device: str | None = None, dtype: str | None = None,
                    cache_dir: str | None = None) -> "DiffusersImagePainter":
    """A text-to-image painter.

    Args:
        model: Hub id (in the local hub cache) or a folder saved with ``save_pretrained``.
        steps: Denoising steps (1-4 for Turbo models, 20-40 for SDXL).
        guidance_scale: Classifier-free guidance (0 for Turbo models; about 5-7 for SDXL).
        negative_prompt: What to avoid (used when `guidance_scale` > 1).
        style_prompt: Words added to every prompt (e.g. "cinematic lighting, highly detailed").
        native_size: Side in pixels of the square the model was trained at; None reads it from the model (set 512
            for SDXL-Turbo, whose config says 1024).
        device: ``cuda``, ``mps``, ``cpu``; None picks the best here.
        dtype: ``float16``, ``bfloat16`` (FLUX) or ``float32``; None: float16 on a GPU, float32 on a CPU.
        cache_dir: The hub cache to load from (default: ``HF_HUB_CACHE``).
    """
    if not isinstance(steps, int) or not 1 <= steps <= 200:
        raise StudioError(f"`steps` must be a whole number from 1 to 200, got {steps!r}")
    if not 0.0 <= float(guidance_scale) <= 30.0:
        raise StudioError(f"`guidance_scale` must be between 0 and 30, got {guidance_scale!r}")
    if native_size is not None and (not isinstance(native_size, int) or not 64 <= native_size <= 4096):
        raise StudioError(f"`native_size` must be a whole number of pixels from 64 to 4096, got {native_size!r}")
    found = find_weights(model, layout="diffusers", cache_dir=cache_dir)
    return DiffusersImagePainter(found, steps=steps, guidance_scale=float(guidance_scale),
                                 negative_prompt=negative_prompt, style_prompt=style_prompt, native_size=native_size,
                                 device=devices.check_device(device), dtype=dtype)


def build_prompt(scene: Scene, style: str, style_prompt: str) -> str:
    """The scene's visual prompt (its narration when it has none), the project style, the painter's style words."""
    parts = [scene.visual_prompt.strip() or scene.narration.strip(), style.strip(), style_prompt.strip()]
    return ", ".join(p for p in parts if p)


def fit_image(image: Any, size: tuple[int, int]) -> Any:
    """Scale `image` to cover `size` and crop the centre (the generated aspect is already close)."""
    from PIL import Image, ImageOps

    return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS, centering=(0.5, 0.5))


class DiffusersImagePainter(diffusion.HeldPipeline):
    """Paints each scene with a diffusers text-to-image pipeline; it loads on first use and stays until `release()`."""

    name = "diffusers-image"
    hooks = frozenset({"progress", "release"})  # optional hooks it implements (studio.providers.HOOKS)
    suffix = ".png"

    def __init__(self, weights: LocalWeights, *, steps: int, guidance_scale: float, negative_prompt: str,
                 style_prompt: str, native_size: int | None, device: str | None, dtype: str | None) -> None:
        self.weights = weights
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        self.style_prompt = style_prompt
        self.native_size = native_size
        self.device = device
        self.dtype = dtype
        self.model = (f"diffusers-image-v{VERSION}:{weights.model}:steps{steps}:cfg{guidance_scale:g}:"
                      f"neg={negative_prompt}:style={style_prompt}:native={native_size}")
        self._holder = diffusion.PipelineHolder()
        self.denoising_steps = 0  # steps run, over all scenes (tests and benchmarks read it)

    def _build(self) -> diffusion.Loaded:
        from diffusers import AutoPipelineForText2Image

        device = devices.choose_device(self.device)
        dtype = devices.choose_dtype(device, self.dtype)
        options: dict[str, Any] = {"dtype": dtype}
        if self.weights.variant:
            options["variant"] = self.weights.variant
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(str(self.weights.folder), **options)
        except (OSError, ValueError, TypeError) as exc:
            raise diffusion.load_error(self.weights.model, exc) from exc
        pipe.set_progress_bar_config(disable=True)
        plan = diffusion.place(pipe, device, self.weights.loaded_bytes(devices.dtype_bytes(dtype)))
        log.info("diffusers-image: %s loaded on %s (%s; %s)", self.weights.model, device, dtype, plan.reason)
        return diffusion.Loaded(pipe, device, dtype, plan)

    def paint(self, scene: Scene, *, index: int, size: tuple[int, int], style: str, project_seed: int, out: Path,
              cancel: CancelToken | None = None, on_progress: ProgressFn | None = None) -> Path:
        """Paint the scene's still into a PNG of exactly `size` at `out` (atomically).

        Args:
            scene: Its visual prompt (or narration) and seed are used.
            index: The scene's position (not used: the look must not change when scenes move).
            size: The output (width, height).
            style: The project's style, added to the prompt.
            project_seed: Mixed with the scene's seed (see `mix_seed`).
            out: Where to write the PNG.
            cancel: Checked before loading and at every denoising step.
            on_progress: ``on_progress(fraction, message)`` at every denoising step.
        """
        import torch

        # 1. Check inputs and load the model
        check(cancel)
        prompt = build_prompt(scene, style, self.style_prompt)
        if not prompt:
            raise StudioError("the scene has neither a visual prompt nor narration to paint from")
        loaded = self.load()
        pipe = loaded.pipe
        multiple = diffusion.size_multiple(pipe)
        gen_size = diffusion.generation_size(size, self.native_size or diffusion.native_size(pipe), multiple)
        seed = diffusion.mix_seed(project_seed, scene.seed)
        counter = [0]

        # 2. Denoise (a second try after running out of memory)
        def run(at: tuple[int, int]) -> Any:
            options: dict[str, Any] = {
                "prompt": prompt, "num_inference_steps": self.steps, "guidance_scale": self.guidance_scale,
                "width": at[0], "height": at[1], "generator": torch.Generator("cpu").manual_seed(seed),
                "callback_on_step_end": diffusion.step_callback(self.steps, on_progress, cancel, counter),
            }
            if self.guidance_scale > 1.0 and self.negative_prompt:
                options["negative_prompt"] = self.negative_prompt
            with torch.inference_mode():
                return pipe(**options).images[0]

        image = diffusion.with_memory_retry(run, gen_size, loaded, multiple, f"the image of {scene.id}")
        self.denoising_steps += counter[0]
        check(cancel)

        # 3. Fit to the frame and write
        out = Path(out)
        with atomic_path(out) as tmp:
            fit_image(image, size).save(tmp, format="PNG")
        return out

    def release(self) -> None:
        """Drop the pipeline and free the memory it held (GPU memory first of all)."""
        self._holder.release()
