"""The model catalogue: what each model the studio knows costs to fetch and run, and under which licence.

    catalog = load_catalog()                       # studio/models.toml, validated once and cached
    entry = catalog.get("qwen3-0.6b")              # by short name or by hub repo id
    entry.repo, entry.download_bytes, entry.licence, entry.commercial
    catalog.for_preset(load_preset("draft"))       # the catalogued models a preset names

Presets name catalogue models by short name (``[models.transformers] model = "qwen3-0.6b"``); `resolve_option` turns a
name into its hub id when the preset loads, and a hub id or a local folder passes through as before. Fetching,
checking and removing the files is `studio.model_store` (``python -m studio models``).
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import StudioError

if TYPE_CHECKING:
    from .presets import Preset

CATALOG_FILE = Path(__file__).resolve().parent / "models.toml"  # package data, beside presets/
STEPS = ("storyboard", "narrator", "painter", "aligner")
PROVIDERS = {"transformers": "storyboard", "bark": "narrator", "kokoro": "narrator", "diffusers-image": "painter",
             "diffusers-video": "painter", "mms-aligner": "aligner"}  # mms-aligner: studio.voice.ctc
OPTIONS = ("model", "adapter")  # the provider options a catalogue entry can fill
# Licence ids (SPDX where SPDX has one); `commercial` says per entry whether the weights may be used commercially.
LICENCES = {
    "apache-2.0": "Apache License 2.0",
    "mit": "MIT License",
    "openrail++": "CreativeML Open RAIL++-M (use-based restrictions; commercial use allowed)",
    "creativeml-openrail-m": "CreativeML Open RAIL-M (use-based restrictions; commercial use allowed)",
    "cc-by-4.0": "Creative Commons Attribution 4.0",
    "cc-by-nc-4.0": "Creative Commons Attribution-NonCommercial 4.0",
    "sai-nc-community": "Stability AI Non-Commercial Research Community License",
    "qwen-research": "Qwen Research License (non-commercial)",
    "llama3.1": "Llama 3.1 Community License", "llama3.2": "Llama 3.2 Community License",
    "llama3.3": "Llama 3.3 Community License",
    "gemma": "Gemma Terms of Use",
    "flux-1-dev-non-commercial": "FLUX.1 [dev] Non-Commercial License",
    "other": "another licence: read it on the model's page",
}
_FIELDS = {
    "step": str, "provider": str, "repo": str, "revision": str, "allow_patterns": list, "download_bytes": int,
    "gpu_bytes": int, "cpu_bytes": int, "cpu_ok": bool, "languages": list, "licence": str, "commercial": bool,
    "gated": bool, "licence_url": str, "gpu_s_per_scene": (int, float), "cpu_s_per_scene": (int, float), "why": str,
    "option": str, "supported": bool, "loader": str, "notes": str,
}
_OPTIONAL = {"revision": "main", "option": "model", "supported": True, "loader": "", "notes": ""}


@dataclass(frozen=True)
class ModelEntry:
    """One model of the catalogue (see ``studio/models.toml`` for every field, commented).

    Sizes and timings are approximate; `download_bytes` is what `pull` fetches (the `allow_patterns` files only).
    """

    name: str
    step: str
    provider: str
    repo: str
    revision: str
    allow_patterns: tuple[str, ...]
    download_bytes: int
    gpu_bytes: int
    cpu_bytes: int
    cpu_ok: bool
    languages: tuple[str, ...]
    licence: str
    commercial: bool
    gated: bool
    licence_url: str
    gpu_s_per_scene: float
    cpu_s_per_scene: float
    why: str
    option: str = "model"
    supported: bool = True
    loader: str = ""
    notes: str = ""

    @property
    def flags(self) -> tuple[str, ...]:
        """``non-commercial`` / ``gated`` / ``no provider yet``, as `models list` shows them."""
        return tuple(f for f, on in (("non-commercial", not self.commercial), ("gated", self.gated),
                                     ("no provider yet", not self.supported)) if on)

    def describe(self) -> str:
        """``qwen3-0.6b (1.5 GB, apache-2.0)``: the name, download size and licence (with its flags)."""
        extra = ", ".join((self.licence,) + tuple(f for f in self.flags if f != "no provider yet"))
        return f"{self.name} ({gigabytes(self.download_bytes)}, {extra})"


class Catalog:
    """The validated catalogue: entries by name, looked up by name or hub repo id."""

    def __init__(self, entries: dict[str, ModelEntry], source: Path | None = None) -> None:
        self.entries = dict(entries)
        self.source = source
        self._by_repo = {e.repo.lower(): e for e in entries.values()}

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name_or_repo: object) -> bool:
        return isinstance(name_or_repo, str) and self.find(name_or_repo) is not None

    def find(self, name_or_repo: str) -> ModelEntry | None:
        """The entry named `name_or_repo` (short name, or hub repo id in any case), or None."""
        if name_or_repo in self.entries:
            return self.entries[name_or_repo]
        key = name_or_repo.strip()
        return self.entries.get(key.lower()) or self._by_repo.get(key.lower())

    def get(self, name_or_repo: str) -> ModelEntry:
        """The entry named `name_or_repo` (short name or hub repo id); StudioError listing the names otherwise."""
        found = self.find(name_or_repo) if isinstance(name_or_repo, str) else None
        if found is None:
            shown = repr(name_or_repo)[:60] if isinstance(name_or_repo, str) else type(name_or_repo).__name__
            raise StudioError(f"{shown} is not in the model catalogue; catalogued models: "
                              f"{', '.join(self.entries)} (see `python -m studio models list`)")
        return found

    def for_preset(self, preset: "Preset") -> list[ModelEntry]:
        """The catalogued models a preset names in its ``[models]`` tables, in the preset's order (raw hub ids that are
        not catalogued and local folders are left out)."""
        found: list[ModelEntry] = []
        for options in preset.models.values():
            for key in OPTIONS:
                value = options.get(key)
                entry = self.find(value) if isinstance(value, str) else None
                if entry is not None and entry not in found:
                    found.append(entry)
        return found

    def presets_using(self, entry: ModelEntry) -> list[str]:
        """Names of the shipped presets that name `entry`."""
        from .presets import available_presets, load_preset

        return [name for name in available_presets() if entry in self.for_preset(load_preset(name))]


def gigabytes(count: int | float) -> str:
    """``1.5 GB`` (``820 MB`` below one GB)."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


@functools.lru_cache(maxsize=4)
def load_catalog(path: str | Path | None = None) -> Catalog:
    """The catalogue from ``studio/models.toml`` (or `path`), validated; cached.

    Raises:
        StudioError: a field missing, of the wrong type or out of range, an unknown step, provider or licence, a
            duplicate name or repo; the message names the entry.
    """
    source = Path(path) if path is not None else CATALOG_FILE
    try:
        data = tomllib.loads(source.read_text("utf-8"))
    except OSError as exc:
        raise StudioError(f"the model catalogue {source} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise StudioError(f"the model catalogue {source} is not valid TOML: {exc}") from exc
    return parse_catalog(data, source)


def parse_catalog(data: dict[str, Any], source: Path | None = None) -> Catalog:
    """Validate a catalogue's TOML data (``{"models": {name: {...}}}``) into a `Catalog`."""
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise StudioError("the model catalogue has no [models.\"NAME\"] tables")
    entries: dict[str, ModelEntry] = {}
    repos: dict[str, str] = {}
    for name, table in models.items():
        entry = _entry(name, table)
        if name.lower() in {n.lower() for n in entries}:
            raise StudioError(f"model catalogue: the name {name!r} is used twice")
        key = (entry.repo.lower(), entry.revision)
        if f"{key}" in repos:
            raise StudioError(f"model catalogue: {name!r} and {repos[f'{key}']!r} are the same repo {entry.repo}")
        repos[f"{key}"] = name
        entries[name] = entry
    return Catalog(entries, source)


def _entry(name: str, table: Any) -> ModelEntry:
    from .weights import check_model_id

    where = f"model catalogue entry {name!r}"
    if not isinstance(table, dict):
        raise StudioError(f"{where} must be a table")
    if not name or name != name.strip() or "/" in name:
        raise StudioError(f"{where}: a name is a short word without '/' (the hub id goes in `repo`)")
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise StudioError(f"{where}: unknown field(s) {', '.join(unknown)}; fields: {', '.join(_FIELDS)}")
    values: dict[str, Any] = {}
    for field, kind in _FIELDS.items():
        if field not in table:
            if field in _OPTIONAL:
                values[field] = _OPTIONAL[field]
                continue
            raise StudioError(f"{where}: `{field}` is missing")
        value = table[field]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise StudioError(f"{where}: `{field}` must be {getattr(kind, '__name__', 'a number')}, got {value!r}")
        values[field] = value
    if values["step"] not in STEPS:
        raise StudioError(f"{where}: unknown step {values['step']!r}; steps: {', '.join(STEPS)}")
    if values["provider"] not in PROVIDERS:
        raise StudioError(f"{where}: unknown provider {values['provider']!r}; providers: {', '.join(PROVIDERS)}")
    if PROVIDERS[values["provider"]] != values["step"]:
        raise StudioError(f"{where}: provider {values['provider']} is a {PROVIDERS[values['provider']]}, "
                          f"not a {values['step']}")
    if values["option"] not in OPTIONS:
        raise StudioError(f"{where}: `option` must be one of {', '.join(OPTIONS)}, got {values['option']!r}")
    if values["licence"] not in LICENCES:
        raise StudioError(f"{where}: unknown licence {values['licence']!r}; known: {', '.join(LICENCES)}")
    if not values["supported"] and not values["loader"]:
        raise StudioError(f"{where}: `supported = false` needs `loader`: the class that would load it")
    check_model_id(values["repo"], f"{name}.repo")
    if "/" not in values["repo"]:
        raise StudioError(f"{where}: `repo` must be a hub id 'org/name', got {values['repo']!r}")
    for field in ("download_bytes", "gpu_bytes", "cpu_bytes"):
        if values[field] <= 0:
            raise StudioError(f"{where}: `{field}` must be a positive number of bytes, got {values[field]}")
    for field in ("gpu_s_per_scene", "cpu_s_per_scene"):
        if values[field] <= 0:
            raise StudioError(f"{where}: `{field}` must be positive, got {values[field]}")
    patterns = values["allow_patterns"]
    if not patterns or not all(isinstance(p, str) and p.strip() for p in patterns):
        raise StudioError(f"{where}: `allow_patterns` must list the files to fetch (non-empty strings)")
    if not values["languages"] or not all(isinstance(x, str) and x for x in values["languages"]):
        raise StudioError(f"{where}: `languages` must list language codes, e.g. [\"en\"]")
    if not values["licence_url"].startswith("https://"):
        raise StudioError(f"{where}: `licence_url` must be an https:// address")
    if not values["why"].strip():
        raise StudioError(f"{where}: `why` must say in one line why the model is listed")
    values["allow_patterns"] = tuple(patterns)
    values["languages"] = tuple(values["languages"])
    values["gpu_s_per_scene"] = float(values["gpu_s_per_scene"])
    values["cpu_s_per_scene"] = float(values["cpu_s_per_scene"])
    return ModelEntry(name=name, **values)


def resolve_option(value: str, *, provider: str, option: str, where: str) -> str:
    """A preset's model option: a catalogue name becomes its hub repo id; a hub id or a folder is kept as given.

    Raises:
        StudioError: the name is catalogued for another provider or option, or no provider loads it yet.
    """
    entry = load_catalog().find(value) if isinstance(value, str) and "/" not in value else None
    if entry is None:
        return value
    if entry.provider != provider or entry.option != option:
        raise StudioError(f"{where}: `{option}` names catalogue model {entry.name!r}, which is a {entry.provider} "
                          f"`{entry.option}`, not a {provider} `{option}`")
    if not entry.supported:
        raise StudioError(f"{where}: catalogue model {entry.name!r} has no Studio provider yet (it needs "
                          f"{entry.loader}); choose another")
    return entry.repo


def non_commercial(preset: "Preset") -> list[ModelEntry]:
    """The catalogued models of `preset` whose licence forbids commercial use."""
    return [e for e in load_catalog().for_preset(preset) if not e.commercial]


def licence_problems(preset: "Preset") -> list[str]:
    """What a preset must declare and does not: non-commercial models without ``non_commercial_ok = true``."""
    if preset.non_commercial_ok:
        return []
    return [f"preset {preset.name!r} uses {e.name} ({e.repo}), whose licence {e.licence} is non-commercial, without "
            "declaring `non_commercial_ok = true`" for e in non_commercial(preset)]
