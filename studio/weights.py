"""Finding model weights on this machine, without loading them: a local folder, or the Hugging Face hub cache.

    found = find_weights("stabilityai/sd-turbo", layout="diffusers")   # raises ProviderUnavailable if not here
    found.folder, found.source, found.parameters                        # snapshot folder, "hub cache", 1.3e9

Model providers' ``check()`` uses this to say whether a model can run here (and what to download if not), and `auto`
uses it to move on to the next provider. Nothing is downloaded and nothing is imported beyond ``huggingface_hub``; the
parameter count is read from the ``.safetensors`` headers (a few kB each), so a check stays fast.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import ProviderUnavailable, StudioError

LAYOUTS = ("transformers", "diffusers")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}
_INDEX_FILES = {"transformers": "config.json", "diffusers": "model_index.json"}


@dataclass(frozen=True)
class LocalWeights:
    """A model whose files are all on this machine.

    Attributes:
        model: The hub id or folder as the user gave it.
        folder: The folder holding the files (the folder itself, or the hub cache's snapshot).
        source: ``"folder"`` or ``"hub cache"``.
        parameters: Number of parameters (from the safetensors headers; estimated from file sizes otherwise).
        stored_bytes: Bytes of weights on disk.
        variant: ``"fp16"`` when only the half-precision files are here (pass it to ``from_pretrained``), else None.
    """

    model: str
    folder: Path
    source: str
    parameters: int
    stored_bytes: int
    variant: str | None = None

    def describe(self) -> str:
        size = f"{self.parameters / 1e9:.2f}B" if self.parameters >= 1e8 else f"{self.parameters / 1e6:.1f}M"
        return f"{self.model} ({size} parameters, {self.source})"

    def loaded_bytes(self, dtype_bytes: int) -> int:
        """Memory the weights take once loaded in a dtype of `dtype_bytes` per parameter."""
        return self.parameters * dtype_bytes


def check_model_id(model: str, what: str = "model") -> str:
    """A hub id (``org/name``) or a local folder's path; anything else is refused with a clear message."""
    if not isinstance(model, str) or not model.strip():
        raise StudioError(f"`{what}` must be a Hugging Face hub id such as 'org/name' or a local folder, got {model!r}")
    model = model.strip()
    if "://" in model:
        raise StudioError(f"`{what}` {model!r} is a URL: give a hub id ('org/name') or a local folder; nothing is "
                          "downloaded while rendering (`hf download org/name` fetches a model once)")
    if _looks_like_path(model):
        return model
    if not _HUB_ID.match(model) or ".." in model:
        raise StudioError(f"`{what}` {model!r} is neither a hub id ('org/name': letters, digits, '-', '_', '.') nor an "
                          "existing folder")
    return model


def fetch_hint(model: str) -> str:
    """How to fetch `model`: ``python -m studio models pull NAME`` with its size and licence when the catalogue lists
    it (studio/models.toml), and the hub's own ``hf download MODEL``."""
    try:
        from .catalog import load_catalog

        entry = load_catalog().find(model)
    except StudioError:  # a broken catalogue must not hide what is missing
        entry = None
    if entry is None:
        return f"`hf download {model}`"
    extra = "".join(f", {flag}" for flag in entry.flags if flag != "no provider yet")
    from .catalog import gigabytes

    return (f"`python -m studio models pull {entry.name}` ({gigabytes(entry.download_bytes)} download, licence "
            f"{entry.licence}{extra}) or `hf download {model}`")


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.sep in model.replace("/", "", 1) or Path(model).expanduser().is_dir()


def find_weights(model: str, *, layout: str, cache_dir: str | Path | None = None,
                 extra_files: tuple[str, ...] = (), what: str = "model") -> LocalWeights:
    """Find every file `model` needs on this machine.

    Args:
        model: A hub id or a local folder (saved with ``save_pretrained``).
        layout: ``"transformers"`` (``config.json`` and weights) or ``"diffusers"`` (``model_index.json`` and a folder
            per component).
        cache_dir: The hub cache to look in (default: ``HF_HUB_CACHE``, usually ``~/.cache/huggingface/hub``).
        extra_files: Other files that must be there (e.g. a tokenizer's), relative to the model's folder; a tuple of
            alternatives may be given as ``"a|b"``.
        what: The option's name, for messages.

    Raises:
        ProviderUnavailable: the model is not on this machine, or only partly (the message says what to download).
        StudioError: `model` is neither a hub id nor a folder.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    model = check_model_id(model, what)
    index = _INDEX_FILES[layout]
    if _looks_like_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ProviderUnavailable(f"`{what}` folder {folder} does not exist")
        if not (folder / index).is_file():
            raise ProviderUnavailable(f"`{what}` folder {folder} has no {index}: save the model there with "
                                      "save_pretrained(), or give a hub id")
        source = "folder"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError as exc:
            raise ProviderUnavailable("huggingface_hub is not installed: pip install huggingface_hub") from exc
        found = try_to_load_from_cache(model, index, cache_dir=str(cache_dir) if cache_dir else None)
        if not isinstance(found, str):
            raise ProviderUnavailable(f"weights of {model} are not on this machine: download them once with "
                                      f"{fetch_hint(model)} (or pass a local folder)")
        folder = Path(found).parent
        source = "hub cache"
    missing = [name for name in extra_files if not any((folder / alt).exists() for alt in name.split("|"))]
    if missing:
        raise ProviderUnavailable(f"{model} is incomplete on this machine: {', '.join(missing)} missing; download it "
                                  f"again with {fetch_hint(model)}")
    if layout == "transformers":
        files, variant = _component_weights(folder, model, "")
    else:
        files, variant = _pipeline_weights(folder, model)
    parameters, stored = _count(files)
    return LocalWeights(model=model, folder=folder, source=source, parameters=parameters, stored_bytes=stored,
                        variant=variant)


def _component_weights(folder: Path, model: str, component: str) -> tuple[list[Path], str | None]:
    """The weight files of one model folder (all shards of a sharded checkpoint), and its variant."""
    where = f"{model}/{component}" if component else model
    if not folder.is_dir():
        raise ProviderUnavailable(f"{where} is missing on this machine: download {model} again with {fetch_hint(model)}")
    names = sorted(p.name for p in folder.iterdir())
    for index_name in [n for n in names if n.endswith(".index.json")]:
        variant = _variant_of(index_name)
        try:
            shards = set(json.loads((folder / index_name).read_text("utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProviderUnavailable(f"{where}: {index_name} is unreadable ({exc}); download {model} again") from exc
        lost = sorted(s for s in shards if not (folder / s).is_file())
        if lost:
            raise ProviderUnavailable(f"{where} is only partly downloaded ({len(lost)} of {len(shards)} shards missing, "
                                      f"e.g. {lost[0]}): finish it with {fetch_hint(model)}")
        return [folder / s for s in sorted(shards)], variant
    weights = [n for n in names if n.endswith(_WEIGHT_SUFFIXES) and (folder / n).is_file()]
    if not weights:
        raise ProviderUnavailable(f"{where} has no weights on this machine: download them with {fetch_hint(model)}")
    plain = [n for n in weights if _variant_of(n) is None]
    safe = [n for n in (plain or weights) if n.endswith(".safetensors")]
    chosen = safe or (plain or weights)
    return [folder / chosen[0]], (None if plain else _variant_of(weights[0]))


def _variant_of(name: str) -> str | None:
    """``fp16`` for ``diffusion_pytorch_model.fp16.safetensors`` and ``model.safetensors.index.fp16.json``."""
    parts = name.split(".")
    for part in parts[1:-1]:
        if part in ("fp16", "bf16", "fp32", "fp8"):
            return part
    return None


def _pipeline_weights(folder: Path, model: str) -> tuple[list[Path], str | None]:
    """Weight files of every model component listed in ``model_index.json``."""
    try:
        index = json.loads((folder / "model_index.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ProviderUnavailable(f"{model}: model_index.json is unreadable ({exc}); download it again") from exc
    files: list[Path] = []
    variants = set()
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        sub = folder / component
        if not sub.is_dir() or not any(sub.iterdir()):
            raise ProviderUnavailable(f"{model}/{component} is missing on this machine: download it with "
                                      f"{fetch_hint(model)}")
        if (sub / "config.json").is_file() and not (sub / "scheduler_config.json").is_file():
            found, variant = _component_weights(sub, model, component)
            files += found
            variants.add(variant)
    if not files:
        raise ProviderUnavailable(f"{model}: model_index.json lists no model with weights")
    variant = variants.pop() if len(variants) == 1 else None
    return files, variant


def _count(files: list[Path]) -> tuple[int, int]:
    """(parameters, bytes on disk) of weight files; safetensors headers give exact counts."""
    parameters = stored = 0
    for path in files:
        size = path.stat().st_size
        stored += size
        counted = _safetensors_parameters(path) if path.suffix == ".safetensors" else None
        parameters += counted if counted is not None else size // 4
    return parameters, stored


def _safetensors_parameters(path: Path) -> int | None:
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if not 0 < length < 100_000_000:
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return None
    total = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        count = 1
        for dim in info.get("shape", []):
            count *= int(dim)
        total += count
    return total
