"""The ``diffusers-video`` painter: a short clip per scene from text, with AnimateDiff (diffusers' ``AnimateDiffPipeline``
and a ``MotionAdapter`` on a Stable Diffusion 1.5 model), for the presets that ask for motion. With ``from_still`` it
animates the scene's current still instead (AnimateDiff's video-to-video pipeline on the still), so a picture the user
liked starts to move.

AnimateDiff makes 16 frames (2 s at 8 fps) at a time. The clip is extended to the scene's length by playing the frames
forwards and backwards (a seamless loop, no jump back to the first frame), fitted to the output size and written as an
H.264 MP4 that the compositor reads like any clip. The scene's length (its fixed duration, or its narration's) is part
of the asset's cache key, so a scene whose narration changes length gets a clip of the new length.

Seeds, the prompt (visual prompt + project style + style words), progress and cancellation per denoising step, and
the out-of-memory retry work as in `diffusers_image`. Making clips on a CPU takes minutes, so `auto` only picks this
painter where a GPU is (or with ``device="cpu"``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import devices
from ..assets import atomic_path
from ..errors import ProviderUnavailable, StudioError
from ..media import INPUT_GUARD, Ffmpeg
from ..progress import CancelToken, ProgressFn, check
from ..project import Scene
from ..providers import register
from ..weights import LocalWeights, find_weights
from . import _diffusion as diffusion
from .diffusers_image import build_prompt, fit_image

log = logging.getLogger("studio")

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_ADAPTER = "guoyww/animatediff-motion-adapter-v1-5-2"
VERSION = 1
MAX_CLIP_S = 120.0
# When a scene's length is not known yet (no narration audio, no fixed duration): the frames as they are.
_PADS_S = 1.0  # about the silence a preset adds around the narration (lead + tail)


def _adapter_for(model: str, adapter: str | None, cache_dir: str | None) -> LocalWeights | None:
    """The motion adapter's weights, or None when `model` is a whole AnimateDiff pipeline."""
    if adapter:
        return find_weights(adapter, layout="transformers", cache_dir=cache_dir, what="adapter")
    return None


def _is_animatediff(folder: Path) -> bool:
    try:
        index = json.loads((folder / "model_index.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return "AnimateDiff" in str(index.get("_class_name", "")) or "motion_adapter" in index


def _check(model: str = DEFAULT_MODEL, adapter: str | None = DEFAULT_ADAPTER, steps: int = 20,
           device: str | None = None, cache_dir: str | None = None) -> str:
    """Cheap: packages, the base model and the motion adapter on this machine, and a GPU (or ``device='cpu'``)."""
    found, note = diffusion.check_diffusers(model, steps=steps, device=device, cache_dir=cache_dir, cpu_ok=False)
    motion = _adapter_for(model, adapter, cache_dir)
    if motion is None and not _is_animatediff(found.folder):
        raise ProviderUnavailable(f"{model} is not an AnimateDiff pipeline: give the motion adapter too "
                                  f"(adapter = \"{DEFAULT_ADAPTER}\")")
    return note + (f" + motion adapter {motion.describe()}" if motion else "")


@register("painter", "diffusers-video", check=_check,
          description="Text-to-video with diffusers AnimateDiff: a moving clip per scene (GPU)")
def diffusers_video(model: str = DEFAULT_MODEL, adapter: str | None = DEFAULT_ADAPTER, steps: int = 20,
                    guidance_scale: float = 7.5, frames: int = 16, fps: int = 8,
                    negative_prompt: str = diffusion.DEFAULT_NEGATIVE, style_prompt: str = "",
                    native_size: int | None = None, crf: int = 18, from_still: bool = False, strength: float = 0.6,
                    device: str | None = None, dtype: str | None = None,
                    cache_dir: str | None = None) -> "DiffusersVideoPainter":
    """An AnimateDiff clip painter.

    Args:
        model: A Stable Diffusion 1.5-class model (hub id in the local cache, or a folder), or a whole AnimateDiff
            pipeline saved with ``save_pretrained`` (then `adapter` may be None).
        adapter: The motion adapter (hub id or folder), e.g. ``guoyww/animatediff-motion-adapter-v1-5-2``.
        steps: Denoising steps.
        guidance_scale: Classifier-free guidance.
        frames: Frames AnimateDiff makes (16 is what its adapters were trained on).
        fps: Frame rate of those frames.
        negative_prompt: What to avoid (used when `guidance_scale` > 1).
        style_prompt: Words added to every prompt.
        native_size: Side of the square the model was trained at (None: from the model; 512 for SD 1.5).
        crf: x264 quality of the written clip (lower is better and bigger).
        from_still: Animate the scene's current still (`Scene.visual`, e.g. painted before by ``diffusers-image``)
            instead of starting from noise: AnimateDiff's video-to-video pipeline on the still repeated, so the clip
            keeps its picture. Scenes without a still are made from text.
        strength: How far the clip may move away from the still (0..1; with `from_still`).
        device: ``cuda``, ``mps``, ``cpu``; None picks the best here.
        dtype: ``float16``, ``bfloat16`` or ``float32``; None: float16 on a GPU, float32 on a CPU.
        cache_dir: The hub cache to load from (default: ``HF_HUB_CACHE``).
    """
    if not isinstance(steps, int) or not 1 <= steps <= 200:
        raise StudioError(f"`steps` must be a whole number from 1 to 200, got {steps!r}")
    if not isinstance(frames, int) or not 2 <= frames <= 64:
        raise StudioError(f"`frames` must be a whole number from 2 to 64, got {frames!r}")
    if not isinstance(fps, int) or not 1 <= fps <= 60:
        raise StudioError(f"`fps` must be a whole number from 1 to 60, got {fps!r}")
    if not isinstance(crf, int) or not 0 <= crf <= 51:
        raise StudioError(f"`crf` must be a whole number from 0 to 51, got {crf!r}")
    if native_size is not None and (not isinstance(native_size, int) or not 64 <= native_size <= 4096):
        raise StudioError(f"`native_size` must be a whole number of pixels from 64 to 4096, got {native_size!r}")
    if not 0.05 <= float(strength) <= 1.0:
        raise StudioError(f"`strength` must be between 0.05 and 1, got {strength!r}")
    found = find_weights(model, layout="diffusers", cache_dir=cache_dir)
    motion = _adapter_for(model, adapter, cache_dir)
    if motion is None and not _is_animatediff(found.folder):
        raise StudioError(f"`model` {model} is not an AnimateDiff pipeline and no `adapter` was given")
    return DiffusersVideoPainter(found, motion, steps=steps, guidance_scale=float(guidance_scale), frames=frames,
                                 fps=fps, negative_prompt=negative_prompt, style_prompt=style_prompt,
                                 native_size=native_size, crf=crf, from_still=bool(from_still),
                                 strength=float(strength), device=devices.check_device(device), dtype=dtype)


def still_of(scene: Scene) -> Path | None:
    """The scene's current still image, if it has one on disk (a clip or nothing gives None)."""
    from ..media import IMAGE_SUFFIXES

    visual = scene.visual
    if visual is None or Path(visual).suffix.lower() not in IMAGE_SUFFIXES or not Path(visual).is_file():
        return None
    return Path(visual)


def clip_length_s(scene: Scene) -> float | None:
    """How long the scene lasts: its fixed duration, else its narration plus the usual pads; None if not known yet."""
    if scene.duration_s:
        return float(scene.duration_s)
    if scene.audio_duration_s:
        return float(scene.audio_duration_s) + _PADS_S
    return None


def loop_frames(count: int, wanted: int) -> list[int]:
    """Frame indexes that play `count` frames forwards, then backwards, and so on, `wanted` long (at least `count`).

    ``loop_frames(4, 10) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]``: no frame is shown twice in a row, so the loop is seamless.
    """
    if count <= 1:
        return [0] * max(wanted, 1)
    cycle = list(range(count)) + list(range(count - 2, 0, -1))
    total = max(wanted, count)
    return [cycle[i % len(cycle)] for i in range(total)]


class DiffusersVideoPainter(diffusion.HeldPipeline):
    """Makes a clip per scene with AnimateDiff; the pipeline loads on first use and stays until `release()`."""

    name = "diffusers-video"
    hooks = frozenset({"progress", "variant", "release"})  # optional hooks it implements (studio.providers.HOOKS)
    suffix = ".mp4"

    def __init__(self, weights: LocalWeights, adapter: LocalWeights | None, *, steps: int, guidance_scale: float,
                 frames: int, fps: int, negative_prompt: str, style_prompt: str, native_size: int | None, crf: int,
                 device: str | None, dtype: str | None, from_still: bool = False, strength: float = 0.6) -> None:
        self.weights = weights
        self.adapter = adapter
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.frames = frames
        self.fps = fps
        self.negative_prompt = negative_prompt
        self.style_prompt = style_prompt
        self.native_size = native_size
        self.crf = crf
        self.device = device
        self.dtype = dtype
        self.from_still = from_still
        self.strength = strength
        self.model = (f"diffusers-video-v{VERSION}:{weights.model}+{adapter.model if adapter else '-'}:steps{steps}:"
                      f"cfg{guidance_scale:g}:frames{frames}@{fps}:neg={negative_prompt}:style={style_prompt}:"
                      f"native={native_size}:crf{crf}" + (f":still{strength:g}" if from_still else ""))
        self._holder = diffusion.PipelineHolder()
        self._from_video: Any = None
        self.denoising_steps = 0
        self.last_source = ""  # "text" or "still": how the last clip was started

    def variant(self, scene: Scene, *, index: int, style: str, project_seed: int) -> dict:
        """The clip's length is part of its cache key (a scene whose narration got longer gets a longer clip)."""
        from ..assets import file_digest

        length = clip_length_s(scene)
        still = still_of(scene) if self.from_still else None
        return {"length_s": round(length, 2) if length else None,
                "still_sha256": file_digest(still) if still is not None else None}

    def _build(self) -> diffusion.Loaded:
        from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

        device = devices.choose_device(self.device)
        dtype = devices.choose_dtype(device, self.dtype)
        options: dict[str, Any] = {"dtype": dtype}
        if self.weights.variant:
            options["variant"] = self.weights.variant
        try:
            if self.adapter is not None:
                motion = MotionAdapter.from_pretrained(str(self.adapter.folder), dtype=dtype)
                pipe = AnimateDiffPipeline.from_pretrained(str(self.weights.folder), motion_adapter=motion, **options)
                # AnimateDiff's adapters were trained with a linear-beta DDIM schedule, not SD 1.5's PNDM.
                pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, beta_schedule="linear",
                                                           clip_sample=False, timestep_spacing="linspace",
                                                           steps_offset=1)
            else:
                pipe = AnimateDiffPipeline.from_pretrained(str(self.weights.folder), **options)
        except (OSError, ValueError, TypeError) as exc:
            raise diffusion.load_error(self.weights.model, exc) from exc
        pipe.set_progress_bar_config(disable=True)
        parameters = self.weights.parameters + (self.adapter.parameters if self.adapter else 0)
        plan = diffusion.place(pipe, device, parameters * devices.dtype_bytes(dtype))
        log.info("diffusers-video: %s loaded on %s (%s; %s)", self.weights.model, device, dtype, plan.reason)
        return diffusion.Loaded(pipe, device, dtype, plan)

    def make_frames(self, scene: Scene, *, size: tuple[int, int], style: str, project_seed: int,
                    cancel: CancelToken | None = None, on_progress: ProgressFn | None = None) -> np.ndarray:
        """AnimateDiff's frames for a scene, fitted to `size`: uint8 array (frames, height, width, 3)."""
        import torch
        from PIL import Image

        prompt = build_prompt(scene, style, self.style_prompt)
        if not prompt:
            raise StudioError("the scene has neither a visual prompt nor narration to paint from")
        loaded = self.load()
        pipe = loaded.pipe
        multiple = diffusion.size_multiple(pipe)
        gen_size = diffusion.generation_size(size, self.native_size or diffusion.native_size(pipe), multiple)
        seed = diffusion.mix_seed(project_seed, scene.seed)
        counter = [0]
        still = still_of(scene) if self.from_still else None
        if still is not None and self._from_video is None:
            from diffusers import AnimateDiffVideoToVideoPipeline

            self._from_video = AnimateDiffVideoToVideoPipeline.from_pipe(pipe)  # shares the loaded components
            self._from_video.set_progress_bar_config(disable=True)
        steps = max(1, int(self.steps * self.strength)) if still is not None else self.steps

        def run(at: tuple[int, int]) -> Any:
            options: dict[str, Any] = {
                "prompt": prompt, "num_inference_steps": self.steps,
                "guidance_scale": self.guidance_scale, "width": at[0], "height": at[1], "output_type": "np",
                "generator": torch.Generator("cpu").manual_seed(seed),
                "callback_on_step_end": diffusion.step_callback(steps, on_progress, cancel, counter),
            }
            if self.guidance_scale > 1.0 and self.negative_prompt:
                options["negative_prompt"] = self.negative_prompt
            with torch.inference_mode():
                if still is None:
                    return pipe(num_frames=self.frames, **options).frames[0]
                with Image.open(still) as image:
                    frame = fit_image(image, at)
                return self._from_video(video=[frame] * self.frames, strength=self.strength, **options).frames[0]

        raw = diffusion.with_memory_retry(run, gen_size, loaded, multiple, f"the clip of {scene.id}")
        self.denoising_steps += counter[0]
        self.last_source = "still" if still is not None else "text"
        check(cancel)
        raw = np.clip(np.asarray(raw, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.stack([np.asarray(fit_image(Image.fromarray(frame), size)) for frame in raw])

    def paint(self, scene: Scene, *, index: int, size: tuple[int, int], style: str, project_seed: int, out: Path,
              cancel: CancelToken | None = None, on_progress: ProgressFn | None = None) -> Path:
        """Make the scene's clip, loop it to the scene's length and write an H.264 MP4 of `size` at `out`.

        Args:
            scene: Its visual prompt (or narration), seed and length (fixed, or its narration's) are used.
            index: The scene's position (not used).
            size: The output (width, height); even numbers.
            style: The project's style, added to the prompt.
            project_seed: Mixed with the scene's seed.
            out: Where to write the MP4 (atomically).
            cancel: Checked at every denoising step, and stops ffmpeg.
            on_progress: ``on_progress(fraction, message)`` at every denoising step.
        """
        # 1. Check inputs
        check(cancel)
        width, height = size
        if width % 2 or height % 2:
            raise StudioError(f"`size` must be even numbers for an H.264 clip, got {width}x{height}")

        # 2. Make the frames, then loop them forwards and backwards to the scene's length
        frames = self.make_frames(scene, size=size, style=style, project_seed=project_seed, cancel=cancel,
                                  on_progress=on_progress)
        length_s = min(clip_length_s(scene) or len(frames) / self.fps, MAX_CLIP_S)
        order = loop_frames(len(frames), math.ceil(length_s * self.fps))

        # 3. Encode
        out = Path(out)
        with atomic_path(out) as tmp:
            args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(self.fps),
                    *INPUT_GUARD, "-i", "pipe:0", "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf",
                    str(self.crf), "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", tmp]
            with Ffmpeg(args, stdin=True, cancel=cancel, what=f"encoding the clip of {scene.id}") as ff:
                for i in order:
                    ff.stdin.write(frames[i].tobytes())
        return out

    def release(self) -> None:
        """Drop the pipeline and free the memory it held (GPU memory first of all)."""
        self._from_video = None
        self._holder.release()
