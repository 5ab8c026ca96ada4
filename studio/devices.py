"""Where models run: device and dtype per machine, free GPU memory, and what to do when it is short.

    from studio import devices
    print(devices.describe())                 # "cuda: NVIDIA H100 80GB HBM3, 77.1 GiB free of 79.1 GiB"
    device = devices.choose_device(None)       # "cuda", "mps" or "cpu"
    dtype = devices.choose_dtype(device)       # torch.float16 on CUDA and mps, torch.float32 on CPU

Two kinds of question are asked here. Providers' ``check()`` must stay cheap, so `gpus` and `torch_build` answer
without importing torch (``nvidia-smi`` and torch's own ``version.py``; torch's numbers when it is already imported).
Loading a model (`choose_device`, `choose_dtype`, `plan_memory`, `free_memory`) imports torch: it is about to be used.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import logging
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StudioError

log = logging.getLogger("studio")

DEVICES = ("cuda", "mps", "cpu")
DTYPES = ("float16", "bfloat16", "float32")
GIB = 1024 ** 3
# What a running diffusion or speech model needs beyond its weights (activations, attention, the VAE decode).
ACTIVATION_MARGIN = 0.35
_NVIDIA_SMI_TTL_S = 5.0


@dataclass(frozen=True)
class Gpu:
    """One GPU as the machine reports it."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    source: str  # "torch" or "nvidia-smi"

    @property
    def free_gib(self) -> float:
        return self.free_bytes / GIB


# -- cheap questions (no torch import) -----------------------------------------------------------------------------------
def torch_build() -> dict[str, Any]:
    """What the installed torch can use, read from its ``version.py`` without importing it.

    Returns:
        ``{"installed": bool, "version": str | None, "cuda": str | None}``; ``cuda`` is None for a CPU-only build.
    """
    if "torch" in sys.modules:  # already imported: ask it
        torch = sys.modules["torch"]
        return {"installed": True, "version": torch.__version__, "cuda": torch.version.cuda}
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return {"installed": False, "version": None, "cuda": None}
    text = ""
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "version.py"
        if path.is_file():
            text = path.read_text("utf-8", "replace")
            break
    version = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", text, re.M)
    cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)", text, re.M)
    return {"installed": True, "version": version.group(1) if version else None, "cuda": cuda.group(1) if cuda else None}


@functools.lru_cache(maxsize=1)
def _nvidia_smi_cached(stamp: int) -> tuple[Gpu, ...]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if out.returncode != 0:
        return ()
    found = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            found.append(Gpu(int(parts[0]), parts[1], int(float(parts[2])) * 1024 ** 2, int(float(parts[3])) * 1024 ** 2,
                             "nvidia-smi"))
        except ValueError:
            continue
    return tuple(found)


def gpus() -> tuple[Gpu, ...]:
    """The CUDA GPUs torch can use here, with free memory; empty on a machine without one (or with a CPU-only torch).

    Uses torch's own numbers when torch is already imported, else ``nvidia-smi`` (cached for a few seconds), so that
    asking does not import torch.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if not torch.cuda.is_available():
                return ()
            found = []
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                found.append(Gpu(i, torch.cuda.get_device_name(i), int(total), int(free), "torch"))
            return tuple(found)
        except RuntimeError:  # a broken driver: no usable GPU
            return ()
    if not torch_build()["cuda"]:
        return ()  # a CPU-only torch cannot use a GPU, whatever nvidia-smi says
    return _nvidia_smi_cached(int(time.monotonic() // _NVIDIA_SMI_TTL_S))


def has_mps() -> bool:
    """Whether this is an Apple-silicon Mac, where torch's ``mps`` backend runs (checked without importing torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return sys.platform == "darwin" and platform.machine() == "arm64"


def best_device() -> str:
    """``cuda`` when a usable NVIDIA GPU is here, else ``mps`` on Apple silicon, else ``cpu`` (no torch import)."""
    if gpus():
        return "cuda"
    if has_mps() and torch_build()["installed"]:
        return "mps"
    return "cpu"


def describe() -> str:
    """One line for ``doctor``: the device models would use and its free memory, or why there is no GPU."""
    build = torch_build()
    if not build["installed"]:
        return "cpu: torch is not installed (the model providers need it: pip install torch)"
    found = gpus()
    if found:
        return "; ".join(f"cuda:{g.index}: {g.name}, {g.free_gib:.1f} GiB free of {g.total_bytes / GIB:.1f} GiB "
                         f"({g.source})" for g in found)
    if has_mps():
        return f"mps: Apple silicon GPU (torch {build['version']})"
    why = "torch is a CPU-only build" if not build["cuda"] else (
        "nvidia-smi is not installed" if shutil.which("nvidia-smi") is None else "no NVIDIA GPU answered nvidia-smi")
    return f"cpu: no CUDA GPU ({why}; torch {build['version']}); models run in float32 on the CPU"


def free_gpu_bytes() -> int:
    """Free memory of the first GPU (bytes), 0 without one."""
    found = gpus()
    return found[0].free_bytes if found else 0


# -- model loading (imports torch) -----------------------------------------------------------------------------------------
def check_device(device: str | None) -> str | None:
    """Validate a user's `device` option (None, ``cuda``, ``cuda:1``, ``mps``, ``cpu``)."""
    if device is None:
        return None
    if not isinstance(device, str) or not re.fullmatch(r"(cuda(:\d+)?|mps|cpu)", device):
        raise StudioError(f"`device` must be one of cuda, cuda:N, mps, cpu (or None for the best here), got {device!r}")
    return device


def choose_device(device: str | None = None) -> str:
    """The torch device to load a model on: `device` if given (checked to exist), else the best one here.

    Raises:
        StudioError: `device` names a backend this machine or this torch build does not have.
    """
    import torch

    device = check_device(device)
    if device is None:
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StudioError(f"`device` {device!r} was asked for, but torch sees no CUDA GPU here "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use device='cpu'")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise StudioError("`device` 'mps' was asked for, but this is not an Apple-silicon Mac with torch's mps backend")
    return device


def choose_dtype(device: str, dtype: str | None = None) -> Any:
    """The torch dtype for `device`: `dtype` if given (``float16``, ``bfloat16``, ``float32``), else float16 on a GPU
    and float32 on the CPU (half precision is slow there, and some CPU kernels lack it)."""
    import torch

    if dtype is not None:
        if dtype not in DTYPES:
            raise StudioError(f"`dtype` must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return getattr(torch, dtype)
    if device.startswith("cuda") or device == "mps":
        return torch.float16
    return torch.float32


def bf16_supported(device: str) -> bool:
    """Whether `device` computes in bfloat16 natively (Ampere or newer)."""
    import torch

    return device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class MemoryPlan:
    """How to place a model on the GPU given its size and the free memory.

    Attributes:
        mode: ``"full"`` (all on the device), ``"offload"`` (model CPU offload: each sub-model moves to the GPU while
            it runs), ``"sequential"`` (layer by layer: slowest, least memory), or ``"cpu"`` (no GPU).
        tiling: Decode images in tiles (VAE tiling/slicing) to bound the decoder's peak memory.
        slicing: Compute attention in slices.
        reason: Why, for the logs and the project's notes.
    """

    mode: str
    tiling: bool
    slicing: bool
    reason: str


def plan_memory(device: str, loaded_bytes: int, *, free_bytes: int | None = None) -> MemoryPlan:
    """Decide whether a model fits on `device` as it is, needs offloading, or memory-saving tricks.

    Args:
        device: ``cuda``/``cuda:N``, ``mps`` or ``cpu``.
        loaded_bytes: Size of the weights once loaded in their dtype (0 when unknown: assume it fits).
        free_bytes: Free GPU memory; None asks the device.
    """
    if not device.startswith("cuda"):
        return MemoryPlan("cpu" if device == "cpu" else "full", False, device == "mps",
                          f"{device}: no CUDA memory planning")
    if free_bytes is None:
        import torch

        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        free_bytes = int(torch.cuda.mem_get_info(index)[0])
    need = int(loaded_bytes * (1 + ACTIVATION_MARGIN)) + GIB // 2
    have = f"{free_bytes / GIB:.1f} GiB free"
    if loaded_bytes <= 0 or need <= free_bytes:
        return MemoryPlan("full", False, False, f"fits: needs about {need / GIB:.1f} GiB, {have}")
    # Offloading keeps one sub-model (the largest, e.g. the UNet: about three quarters of a pipeline) on the GPU.
    if int(loaded_bytes * 0.75 * (1 + ACTIVATION_MARGIN)) + GIB // 2 <= free_bytes:
        return MemoryPlan("offload", True, False, f"short of memory (needs about {need / GIB:.1f} GiB, {have}): "
                                                    "model CPU offload and VAE tiling")
    return MemoryPlan("sequential", True, True, f"far short of memory (needs about {need / GIB:.1f} GiB, {have}): "
                                                 "sequential offload, VAE tiling and attention slicing (slow)")


def check_gpu_memory(device: str, loaded_bytes: int, *, forced: bool, what: str) -> str:
    """The cheap GPU-memory part of a provider's check: a note on how the model would be placed, or
    `ProviderUnavailable` when so little GPU memory is free that only layer-by-layer offloading would fit (far too slow
    for `auto` to choose; a user who names the device gets it anyway).

    Args:
        device: Where the model would run (``cuda``, ``cuda:N``; other devices get no memory check).
        loaded_bytes: The model's size once loaded.
        forced: The user named the device (``device="cuda"``).
        what: The model, for the message.
    """
    from .errors import ProviderUnavailable

    if not device.startswith("cuda"):
        return f"on {device}"
    found = gpus()
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= len(found):
        return f"on {device}"
    plan = plan_memory(device, loaded_bytes, free_bytes=found[index].free_bytes)
    if plan.mode == "sequential" and not forced:
        raise ProviderUnavailable(f"{what} needs about {loaded_bytes / GIB:.1f} GiB on the GPU and only "
                                  f"{found[index].free_gib:.1f} GiB is free ({found[index].name}): free GPU memory, "
                                  "choose a smaller model, or pass device='cuda' to run it layer by layer (slow)")
    return f"on {device}, {plan.reason}"


def dtype_bytes(dtype: Any) -> int:
    """Bytes per parameter of a torch dtype."""
    return int(getattr(dtype, "itemsize", 4))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the GPU (or the CPU allocator) running out of memory."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "mps backend out of memory" in text)


def free_memory() -> None:
    """Collect garbage and hand cached GPU memory back to the driver (after `release()` or an OOM)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()
