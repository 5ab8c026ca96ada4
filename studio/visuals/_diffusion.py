"""What the diffusers painters share: loading a pipeline onto the right device, seeds, the size to generate at,
progress and cancellation inside the denoising loop, and a second chance after running out of GPU memory."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

from .. import devices
from ..errors import Cancelled, ProviderUnavailable, StudioError
from ..progress import CancelToken, ProgressFn, no_progress
from ..weights import LocalWeights, find_weights

log = logging.getLogger("studio")

DEFAULT_NEGATIVE = "blurry, low quality, distorted, deformed, text, letters, watermark, signature, frame, border"
# A painter is not picked by `auto` on a CPU unless its model is this small and needs this few steps (Turbo-class).
CPU_MAX_PARAMETERS = 3_000_000_000
CPU_MAX_STEPS = 4
SHRINK = 0.75  # the second try after running out of memory paints this much smaller (then scales up)


def check_diffusers(model: str, *, steps: int, device: str | None, cache_dir: str | None,
                    cpu_ok: bool = True, extra: tuple[LocalWeights, ...] = ()) -> tuple[LocalWeights, str]:
    """The cheap part of a diffusers painter's check: packages, weights here, and a device that runs them in reasonable
    time. Returns the weights found and a note; raises `ProviderUnavailable` with what is missing."""
    import importlib.util

    if not devices.torch_build()["installed"]:
        raise ProviderUnavailable("torch is not installed: pip install torch diffusers transformers accelerate")
    for package in ("diffusers", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise ProviderUnavailable(f"{package} is not installed: pip install diffusers transformers accelerate")
    found = find_weights(model, layout="diffusers", cache_dir=cache_dir)
    devices.check_device(device)
    where = device or devices.best_device()
    parameters = found.parameters + sum(e.parameters for e in extra)
    if where == "cpu" and device is None:
        if not cpu_ok:
            raise ProviderUnavailable(f"{found.describe()} is here, but no GPU: making clips on a CPU takes many "
                                      "minutes per scene; pass device='cpu' to use it anyway")
        if parameters > CPU_MAX_PARAMETERS or steps > CPU_MAX_STEPS:
            raise ProviderUnavailable(f"{found.describe()} with {steps} steps is too slow on a CPU and no GPU is here; "
                                      "pass device='cpu' to use it anyway, or a Turbo model with 1-4 steps")
    placed = devices.check_gpu_memory(where, parameters * 2, forced=device is not None, what=found.model)
    return found, f"{found.describe()}, {steps} steps, {placed}"


def mix_seed(project_seed: int, scene_seed: int) -> int:
    """One generator seed from the project's and the scene's: every scene of a project starts from the same noise
    (so the scenes look like one film) unless its own seed is changed."""
    return (int(project_seed) * 1_000_003 + int(scene_seed)) % (2 ** 63 - 1)


def generation_size(size: tuple[int, int], native: int, multiple: int) -> tuple[int, int]:
    """The size to generate at: the output's aspect ratio at about the model's native area (native x native pixels),
    in multiples of `multiple` (what the UNet's down-sampling needs)."""
    width, height = size
    aspect = width / height
    h = math.sqrt(native * native / aspect)
    w = h * aspect

    def snap(value: float) -> int:
        return max(multiple, int(round(value / multiple)) * multiple)

    return snap(w), snap(h)


def size_multiple(pipe: Any) -> int:
    """Pixel multiple a pipeline's sizes must be: the VAE's scale times the UNet's down-sampling (or the
    transformer's patch size), and a multiple of 8."""
    vae_scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        multiple = vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
    else:
        transformer = getattr(pipe, "transformer", None)
        config = getattr(transformer, "config", None)
        # Transformer pipelines patchify the latents (FLUX packs 2x2 with patch_size 1): at least 2 latent pixels.
        multiple = vae_scale * max(2, int(getattr(config, "patch_size", 2) or 2))
    return math.lcm(multiple, 8)  # pipelines check for multiples of 8 whatever their VAE


def native_size(pipe: Any) -> int:
    """The side of the square a pipeline was trained at (e.g. 512 for SD 1.5 and SD-Turbo, 1024 for SDXL)."""
    vae_scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    unet = getattr(pipe, "unet", None)
    sample = getattr(pipe, "default_sample_size", None) or (unet.config.sample_size if unet is not None else 128)
    if isinstance(sample, (list, tuple)):
        sample = sample[0]
    return int(sample) * vae_scale


@dataclass
class Loaded:
    """A pipeline on its device, and how memory was planned for it."""

    pipe: Any
    device: str
    dtype: Any
    plan: devices.MemoryPlan


def place(pipe: Any, device: str, loaded_bytes: int) -> devices.MemoryPlan:
    """Put `pipe` on `device`, with model offload, VAE tiling and attention slicing as GPU memory requires."""
    plan = devices.plan_memory(device, loaded_bytes)
    gpu = int(device.split(":")[1]) if ":" in device else 0
    if plan.mode == "offload":
        pipe.enable_model_cpu_offload(gpu_id=gpu)
    elif plan.mode == "sequential":
        pipe.enable_sequential_cpu_offload(gpu_id=gpu)
    else:
        pipe.to(device)
    if plan.tiling:
        _enable_vae_tiling(pipe)
    if plan.slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
    return plan


def _enable_vae_tiling(pipe: Any) -> None:
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()


def offload_after_oom(loaded: Loaded) -> bool:
    """After running out of GPU memory: free it and switch to model CPU offload with VAE tiling. False when already
    offloaded (or not on a GPU): the caller then tries a smaller size instead."""
    devices.free_memory()
    if not loaded.device.startswith("cuda") or loaded.plan.mode != "full":
        return False
    pipe = loaded.pipe
    pipe.to("cpu")
    devices.free_memory()
    pipe.enable_model_cpu_offload(gpu_id=int(loaded.device.split(":")[1]) if ":" in loaded.device else 0)
    _enable_vae_tiling(pipe)
    loaded.plan = devices.MemoryPlan("offload", True, False, "ran out of GPU memory: model CPU offload and VAE tiling")
    log.warning("painter: out of GPU memory; retrying with model CPU offload and VAE tiling")
    return True


def step_callback(steps: int, on_progress: ProgressFn | None, cancel: CancelToken | None,
                  counter: list[int] | None = None) -> Callable:
    """A ``callback_on_step_end`` that reports each denoising step and stops the loop on cancel (within one step)."""
    report = on_progress or no_progress

    def callback(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        if counter is not None:
            counter[0] += 1
        report((step + 1) / max(steps, 1), f"step {step + 1}/{steps}")
        if cancel is not None and cancel.cancelled:
            raise Cancelled()
        return callback_kwargs

    return callback


def with_memory_retry(run: Callable[[tuple[int, int]], Any], size: tuple[int, int], loaded: Loaded, multiple: int,
                      what: str) -> Any:
    """Run `run(size)`; on running out of memory free it and try once more with offloading or at a smaller size.

    Raises:
        StudioError: out of memory twice (the message says what to change); the finished scenes stay in the store.
    """
    try:
        return run(size)
    except Cancelled:
        raise
    except Exception as exc:
        if not devices.is_out_of_memory(exc):
            raise
        first = exc
    if not offload_after_oom(loaded):
        size = (max(multiple, int(size[0] * SHRINK) // multiple * multiple),
                max(multiple, int(size[1] * SHRINK) // multiple * multiple))
        log.warning("painter: out of memory; retrying %s at %dx%d", what, *size)
    try:
        return run(size)
    except Cancelled:
        raise
    except Exception as exc:
        if not devices.is_out_of_memory(exc):
            raise
        devices.free_memory()
        raise StudioError(f"out of {'GPU ' if loaded.device.startswith('cuda') else ''}memory making {what}, even "
                          f"after freeing memory and retrying {'with offloading' if loaded.plan.mode != 'full' else f'at {size[0]}x{size[1]}'}"
                          f" ({type(first).__name__}); close other programs using the GPU, choose a smaller model "
                          "or fewer frames, or use the cards painter") from exc


class PipelineHolder:
    """Loads a pipeline once (thread-safe) and frees it on `release()`."""

    def __init__(self) -> None:
        self._loaded: Loaded | None = None
        self._lock = threading.Lock()

    def get(self, build: Callable[[], Loaded]) -> Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = build()
            return self._loaded

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def set(self, loaded: Loaded) -> None:
        """Use a pipeline built elsewhere (already on its device), instead of loading one."""
        with self._lock:
            self._loaded = loaded

    def release(self) -> None:
        with self._lock:
            loaded, self._loaded = self._loaded, None
        if loaded is not None:
            if hasattr(loaded.pipe, "remove_all_hooks"):
                loaded.pipe.remove_all_hooks()
            del loaded
        devices.free_memory()


class HeldPipeline:
    """What the diffusers painters share: a pipeline loaded once by their ``_build()`` into ``self._holder``."""

    _holder: PipelineHolder
    _build: Callable[[], Loaded]  # each painter's loader

    def load(self) -> Loaded:
        """Load the pipeline (once)."""
        return self._holder.get(self._build)

    @property
    def loaded(self) -> bool:
        return self._holder.loaded

    def use_pipeline(self, pipe: Any, device: str) -> None:
        """Paint with a pipeline built elsewhere and already on `device` (benchmarks of random-weight architectures,
        notebooks), instead of loading this painter's model."""
        import torch

        dtype = getattr(pipe, "dtype", torch.float32)
        self._holder.set(Loaded(pipe, device, dtype, devices.MemoryPlan("full", False, False, "given")))


def load_error(model: str, exc: Exception) -> StudioError:
    return StudioError(f"cannot load the diffusers pipeline {model}: {type(exc).__name__}: {exc}")
