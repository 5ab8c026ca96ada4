"""Model steps on a Hugging Face ZeroGPU Space: GPU calls sized from the work they do.

On ZeroGPU a function has a GPU only while it runs inside ``@spaces.GPU``; the render's job threads have none. So the
app runs the model steps (narration with Bark, painting with diffusers) for the project's scenes in GPU calls first,
then hands the project to the CPU job, which only composes: it reuses every narration and picture it finds. This
module holds the pure parts of that, without Gradio or torch::

    costs = costs_for(preset, narrator, painter)            # seconds per scene and per load, per model step
    plan = plan_calls(scene_ids, costs)                     # [["s1", .., "s8"], ["s9", .., "s14"]]
    durations(plan, costs)                                  # [110.0, 86.0]: what each call asks ZeroGPU for
    if on_zerogpu():
        run_in_gpu_calls(work, scene_ids, costs, on_progress=report, cancel=token)
    else:
        work(list(scene_ids))                               # anywhere else: just call it (a GPU, if any, is there)

The ``spaces`` API (read in the package itself, ``spaces`` 0.51 on PyPI, and in the Hub's ZeroGPU page,
https://huggingface.co/docs/hub/spaces-zerogpu):

- ``spaces.GPU(task=None, *, duration=None, size=None)``: ``duration`` is seconds (an int, or a ``timedelta``), or a
  CALLABLE that gets the same arguments as the decorated function and returns them ("dynamic duration"); the package
  turns a number into ``timedelta(seconds=...)`` and sends ``.seconds`` (whole seconds, truncated) when it schedules the
  call, so the durations here are rounded up to whole seconds. Without a duration a call asks for 60 s
  (``DEFAULT_SCHEDULE_DURATION``). ``size`` is ``"large"`` (half an H200, 70 GB, the default) or ``"xlarge"``.
- The duration is a reservation, not a bill: a call asking for more than the visitor's tier allows fails at once
  ("The requested GPU duration (300s) is larger than the maximum allowed"), one asking for more than the quota left
  fails with "quota exceeded", and a shorter request ranks higher in the queue. Only the seconds used are charged.
  The tier caps are not published (300 s is refused for many visitors); daily quotas are 2 min unauthenticated,
  3.5 min for a free account and 25 min for PRO. Hence `MAX_CALL_S`: 120 s by default, ``STUDIO_ZEROGPU_MAX_S`` to
  change it (e.g. a PRO-only Space), and work longer than that is split into several calls.
- Outside ZeroGPU (``SPACES_ZERO_GPU`` unset) ``spaces.GPU`` returns the function itself: "effect-free".
- ``SPACES_ZERO_GPU`` is what Spaces set on ZeroGPU hardware; ``spaces.config`` reads it as true when it is ``1``,
  ``t`` or ``true`` (any case), and so does `on_zerogpu`.
- The decorated function runs in a FORKED worker process: its arguments and its return value are pickled, so pass
  plain values (the chunk of scene ids is a list of strings) and keep results on disk. What the work changes in memory
  (a `Project` object, a progress store, a `CancelToken` set later in the app's process) is not seen across the
  process boundary: write narrations and pictures to the project's asset store (they are files) and let the CPU job
  find them. So `run_in_gpu_calls` checks the cancel token between calls, where it can act. An exception that is not a
  ``gr.Error`` comes back as a generic "ZeroGPU worker error" naming only its class: raise ``gr.Error`` inside the
  work to keep a message for the user. ``spaces`` keeps every decorated function in a cache for the life of the
  process, so each `run_in_gpu_calls` leaves one small wrapper behind. A call that runs past its duration is warned
  ("GPU task is exceeding its requested duration and might be aborted"), hence the margin.

Every call loads its models again, so running each model step in its own series of calls (``[narrator_cost]`` for
narrating, then ``[painter_cost]`` for painting) fits more scenes in a call than both steps together: Premium's
AnimateDiff and Bark together need about 140 s for a single scene, more than a call may ask for, apart 1 and 5 scenes
a call.

Costs (`costs_for`): seconds a model step spends per scene on the GPU and seconds to load its model once per call, from
the model catalogue when one is given (``catalog.for_provider(provider, preset)``), else from `BUILTIN_COSTS` (per
provider) and `MODEL_COSTS` (per model id, for the presets' heavier models), conservative figures from the anchors in
bench/README.md (SDXL-Turbo at 512x512 in about 84 ms on an H100 with TensorRT; Bark about real time on an H100, and
`studio.estimate.SECONDS_PER_SCENE`, 8 s of narration a scene), rounded up for plain PyTorch in float16 on half an
H200, the VAE decode, and loading float16 weights from the Space's disk into GPU memory in a fresh worker. They are
not measured on ZeroGPU yet (``python bench/models.py`` on one gives the real figures); `margin` covers the rest.
Offline providers (piper, espeak, cards, rules, local) and the remote OpenAI-compatible writer need no GPU: cost 0,
and no GPU call at all when every chosen step is one of them.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from .errors import ProviderUnavailable, StudioError
from .progress import ProgressFn

log = logging.getLogger("studio.zerogpu")

DEFAULT_MAX_CALL_S = 120.0
"""The longest GPU call asked for unless ``STUDIO_ZEROGPU_MAX_S`` says otherwise (see the module's notes)."""
ENV_MAX_S = "STUDIO_ZEROGPU_MAX_S"
ENV_ZERO_GPU = "SPACES_ZERO_GPU"
DEFAULT_MARGIN = 1.25
DEFAULT_FLOOR_S = 10.0

# Providers that never touch a GPU: the offline ones, and the OpenAI-compatible writer (a remote server does the work).
OFFLINE_PROVIDERS = frozenset({"piper", "espeak", "cards", "rules", "local", "openai"})
# Studio's own providers of each step, for ``auto`` without a preset's list.
KIND_PROVIDERS: dict[str, tuple[str, ...]] = {
    "storyboard": ("openai", "transformers", "rules"),
    "narrator": ("bark", "piper", "espeak"),
    "painter": ("diffusers-video", "diffusers-image", "cards", "local"),
}


@dataclass(frozen=True)
class StepCost:
    """What one model step costs on the GPU: `seconds_per_scene` for each scene, plus `load_s` once per GPU call
    (a call starts a fresh worker, which loads the model again)."""

    step: str
    seconds_per_scene: float
    load_s: float

    def __post_init__(self) -> None:
        for name in ("seconds_per_scene", "load_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"StepCost {self.step!r}: `{name}` must be a number of seconds >= 0, got {value!r}")

    @property
    def needs_gpu(self) -> bool:
        return self.seconds_per_scene > 0 or self.load_s > 0


# Per provider: (seconds per scene, load seconds). See the module's notes for where the figures come from.
BUILTIN_COSTS: dict[str, tuple[float, float]] = {
    "bark": (8.0, 20.0),              # bark-small about real time: ~8 s of speech a scene; ~1.7 GB of weights
    "kokoro": (0.5, 5.0),             # Kokoro-82M on ONNX Runtime: many times faster than real time; 330 MB graph
    "diffusers-image": (3.0, 25.0),   # SDXL-Turbo class: 1-4 steps at 512x512, well under a second; ~7 GB fp16
    "diffusers-video": (40.0, 30.0),  # AnimateDiff: 16 frames at 512x512, 20 steps with CFG; SD 1.5 + adapter
    "transformers": (0.0, 20.0),      # the LLM writer: one call writes the whole storyboard (small Qwen2.5)
}
# Per model id (a preset's ``[models.<provider>] model``), where it differs much from its provider's figure.
MODEL_COSTS: dict[str, tuple[float, float]] = {
    "suno/bark": (12.0, 30.0),                                  # full Bark: slower than real time
    "stabilityai/sd-turbo": (2.0, 15.0),                        # SD 2.1-sized, one step
    "stabilityai/stable-diffusion-xl-base-1.0": (10.0, 30.0),   # 30 steps with CFG at 1024x1024
    "black-forest-labs/FLUX.1-schnell": (8.0, 60.0),            # 4 steps at 1024x1024; 12B + T5-XXL in bfloat16
    "Qwen/Qwen2.5-3B-Instruct": (0.0, 30.0),
    "Qwen/Qwen2.5-7B-Instruct": (0.0, 45.0),
    "Qwen/Qwen3-4B-Instruct-2507": (0.0, 35.0),                 # the presets' writers (studio/models.toml)
    "Qwen/Qwen3-8B": (0.0, 50.0),
}
# A provider this table does not know (a third-party one) is assumed to need the GPU, generously.
UNKNOWN_COST = (20.0, 30.0)


def max_call_s(environ: Mapping[str, str] = os.environ) -> float:
    """The longest GPU call to ask for: ``STUDIO_ZEROGPU_MAX_S`` (seconds > 0), else `DEFAULT_MAX_CALL_S`."""
    raw = environ.get(ENV_MAX_S)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_CALL_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        log.warning("%s=%r is not a number of seconds > 0; using %g s", ENV_MAX_S, raw, DEFAULT_MAX_CALL_S)
        return DEFAULT_MAX_CALL_S
    return value


MAX_CALL_S = max_call_s()
"""`max_call_s` as read at import; the functions below read the environment again when `limit_s` is None."""


def _limit(limit_s: Optional[float]) -> float:
    if limit_s is None:
        return max_call_s()
    if isinstance(limit_s, bool) or not isinstance(limit_s, (int, float)) or not limit_s > 0:
        raise ValueError(f"limit_s must be a number of seconds > 0, got {limit_s!r}")
    return float(limit_s)


def _truthy(value: Optional[str]) -> bool:
    return value is not None and value.strip().lower() in ("1", "t", "true")


def on_zerogpu(environ: Mapping[str, str] = os.environ) -> bool:
    """Running on a ZeroGPU Space: ``SPACES_ZERO_GPU`` true (as ``spaces`` reads it) and the ``spaces`` package
    importable. Nothing is imported."""
    if not _truthy(environ.get(ENV_ZERO_GPU)):
        return False
    if sys.modules.get("spaces") is not None:
        return True
    try:
        return importlib.util.find_spec("spaces") is not None
    except (ImportError, ValueError):
        return False


def needs_gpu(costs: Sequence[StepCost]) -> bool:
    """Whether any of the steps uses the GPU at all (False: every step is offline, make no GPU call)."""
    return any(cost.needs_gpu for cost in costs)


def gpu_seconds(costs: Sequence[StepCost], scenes: int, *, margin: float = DEFAULT_MARGIN,
                floor_s: float = DEFAULT_FLOOR_S) -> float:
    """Seconds one GPU call needs to run every step of `costs` for `scenes` scenes: each model loaded once, then
    each scene, times `margin`, and at least `floor_s`. 0 when no step needs the GPU (no call to make)."""
    if isinstance(scenes, bool) or not isinstance(scenes, int) or scenes < 0:
        raise ValueError(f"scenes must be a whole number >= 0, got {scenes!r}")
    if not margin >= 1:
        raise ValueError(f"margin must be >= 1, got {margin!r}")
    if not needs_gpu(costs):
        return 0.0
    work = sum(c.load_s for c in costs if c.needs_gpu) + scenes * sum(c.seconds_per_scene for c in costs)
    return max(float(floor_s), work * margin)


def scenes_per_call(costs: Sequence[StepCost], limit_s: Optional[float] = None) -> int:
    """The most scenes one call can take within `limit_s` (at least 1: a scene never waits for a bigger limit)."""
    limit = _limit(limit_s)
    per_scene = sum(c.seconds_per_scene for c in costs)
    if per_scene <= 0:  # load only (e.g. the writer): any number of scenes fits, if the load does
        return sys.maxsize
    # gpu_seconds grows with the count: start just below the closed form's answer, then step to the exact one
    guess = (limit / DEFAULT_MARGIN - sum(c.load_s for c in costs)) // per_scene
    count = int(max(1, min(guess - 1, 1_000_000)))
    while gpu_seconds(costs, count + 1) <= limit:
        count += 1
    while count > 1 and gpu_seconds(costs, count) > limit:
        count -= 1
    return count


def plan_calls(scene_ids: Sequence[str], costs: Sequence[StepCost], *,
               limit_s: Optional[float] = None) -> list[list[str]]:
    """The GPU calls to make: `scene_ids` split into consecutive chunks, in order, each scene in exactly one, each
    chunk's `gpu_seconds` within `limit_s` (default `max_call_s()`), the chunks as even as the count of calls allows
    (shorter requests queue sooner). A scene that alone needs more than the limit gets a chunk of its own (its
    duration is then the limit, and a warning is logged). ``[]`` when there are no scenes or no step needs the GPU."""
    limit = _limit(limit_s)
    ids = list(scene_ids)
    if not ids or not needs_gpu(costs):
        return []
    if gpu_seconds(costs, 1) > limit:
        log.warning("one scene needs about %.0f s of GPU, more than the %.0f s a call may ask for: each scene gets a "
                    "call of %.0f s (raise %s if the Space's visitors may ask for more)",
                    gpu_seconds(costs, 1), limit, limit, ENV_MAX_S)
    cap = min(scenes_per_call(costs, limit), len(ids))
    calls = -(-len(ids) // cap)
    base, extra = divmod(len(ids), calls)
    plan, start = [], 0
    for index in range(calls):
        size = base + (1 if index < extra else 0)
        plan.append(ids[start:start + size])
        start += size
    return plan


def call_duration(chunk: Sequence[str], costs: Sequence[StepCost], limit_s: Optional[float] = None) -> int:
    """Whole seconds one call for `chunk` asks for: `gpu_seconds` rounded up, at most the limit."""
    limit = _limit(limit_s)
    return int(max(1, min(math.floor(limit), math.ceil(gpu_seconds(costs, len(chunk))))))


def durations(plan: Sequence[Sequence[str]], costs: Sequence[StepCost],
              limit_s: Optional[float] = None) -> list[float]:
    """Seconds each call of `plan` asks for (whole seconds, rounded up, each clamped to the limit)."""
    return [float(call_duration(chunk, costs, limit_s)) for chunk in plan]


def _scenes_label(first: int, last: int) -> str:
    return f"scene {first}" if first == last else f"scenes {first}-{last}"


def run_in_gpu_calls(work: Callable[[list[str]], Any], scene_ids: Sequence[str], costs: Sequence[StepCost], *,
                     spaces_module: Any = None, limit_s: Optional[float] = None,
                     on_progress: Optional[ProgressFn] = None, cancel: Any = None) -> list:
    """Run ``work(chunk)`` for each chunk of `plan_calls` inside ``spaces_module.GPU(duration=...)``, whose duration
    is a callable that gets the chunk and returns `call_duration` of it; the results, one per call, in order.

    Only for a ZeroGPU Space (`on_zerogpu`); anywhere else call ``work(list(scene_ids))`` directly. `spaces_module`
    defaults to the ``spaces`` package. `work` runs in ZeroGPU's forked worker: see the module's notes (pickled
    arguments and results, files kept, memory changes lost). No call at all, and ``[]``, when no step needs the GPU or
    there are no scenes. `on_progress(fraction, message)` is told before each call ("GPU call 2/3: scenes 5-8") and at
    the end; `cancel` (a `studio.progress.CancelToken`, or anything with ``check()``) is checked before the first call
    and after each: a cancel during a call raises `studio.errors.Cancelled` once that call has returned.
    """
    limit = _limit(limit_s)
    plan = plan_calls(scene_ids, costs, limit_s=limit)
    if not plan:
        return []
    if spaces_module is None:
        try:
            import spaces as spaces_module  # the Hugging Face Spaces package; present on Spaces only
        except ImportError as exc:
            raise ProviderUnavailable("the `spaces` package is not installed: GPU calls run on a ZeroGPU Space "
                                      "only; elsewhere the model steps run directly") from exc
    report = on_progress or (lambda fraction, message: None)
    costs = tuple(costs)

    def duration(chunk: list[str]) -> int:  # spaces calls it with the decorated function's own arguments
        return call_duration(chunk, costs, limit)

    def gpu_call(chunk: list[str]) -> Any:
        return work(chunk)

    decorated = spaces_module.GPU(duration=duration)(gpu_call)
    oversized = gpu_seconds(costs, 1) > limit
    results, first = [], 1
    for index, chunk in enumerate(plan):
        if cancel is not None:
            cancel.check()
        last = first + len(chunk) - 1
        note = f" (may need more than the {limit:g} s a call may ask for)" if oversized else ""
        report(index / len(plan), f"GPU call {index + 1}/{len(plan)}: {_scenes_label(first, last)}{note}")
        results.append(decorated(list(chunk)))
        first = last + 1
    if cancel is not None:
        cancel.check()
    report(1.0, f"GPU calls done ({len(plan)})")
    return results


# ---------------------------------------------------------------------------------------------------------- costs


def _preset_object(preset: Any) -> Any:
    """A `Preset` for a name or path; a Preset (or anything with ``models``/``providers``) as it is; None stays."""
    if isinstance(preset, (str, os.PathLike)):
        from .presets import load_preset

        return load_preset(preset)
    return preset


def _model_of(preset: Any, provider: str) -> Optional[str]:
    models = getattr(preset, "models", None) or {}
    options = models.get(provider) if isinstance(models, Mapping) else None
    model = options.get("model") if isinstance(options, Mapping) else None
    return model if isinstance(model, str) else None


def _number(entry: Any, *names: str) -> Optional[float]:
    for name in names:
        value = entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)
        if value is not None:
            return float(value)
    return None


def _from_catalog(catalog: Any, provider: str, preset: Any) -> Optional[tuple[float, float]]:
    """(seconds per scene, load seconds) from a duck-typed catalogue, or None when it has no entry."""
    if catalog is None:
        return None
    lookup = getattr(catalog, "for_provider", None)
    if lookup is None:
        raise TypeError("catalog must have a for_provider(provider, preset) method")
    try:
        entry = lookup(provider, preset)
    except LookupError:
        return None
    if entry is None:
        return None
    if getattr(entry, "gpu", True) is False or getattr(entry, "offline", False) is True:
        return (0.0, 0.0)
    per_scene = _number(entry, "gpu_s_per_scene", "seconds_per_scene")
    load = _number(entry, "load_s", "gpu_load_s")
    if per_scene is None and load is None:
        return None
    return (per_scene or 0.0, load or 0.0)


def provider_cost(provider: str, preset: Any = None, catalog: Any = None, *, step: Optional[str] = None) -> StepCost:
    """The GPU cost of one provider in `preset` (its ``[models.<provider>] model``): catalogue, else built-in."""
    if not isinstance(provider, str) or not provider:
        raise StudioError(f"a provider name is needed, got {provider!r}")
    step = step or provider
    if provider in OFFLINE_PROVIDERS:
        return StepCost(step, 0.0, 0.0)
    found = _from_catalog(catalog, provider, preset)
    if found is None:
        model = _model_of(_preset_object(preset), provider)
        found = MODEL_COSTS.get(model) if model else None
    if found is None:
        found = BUILTIN_COSTS.get(provider)
    if found is None:
        log.warning("no GPU figures for provider %r: assuming %g s a scene and %g s to load", provider, *UNKNOWN_COST)
        found = UNKNOWN_COST
    return StepCost(step, *found)


def _choice_cost(kind: str, choice: str, preset: Any, catalog: Any) -> StepCost:
    """The cost of `choice` for `kind`; for ``auto``, the dearest provider of the preset's list (auto may take any)."""
    if choice != "auto":
        return provider_cost(choice, preset, catalog, step=kind)
    providers = getattr(preset, "providers", None) or {}
    names = list(providers.get(kind, ())) if isinstance(providers, Mapping) else []
    if not names:
        names = list(KIND_PROVIDERS.get(kind, ()))
    costs = [provider_cost(name, preset, catalog, step=kind) for name in names]
    return max(costs, key=lambda c: (c.seconds_per_scene, c.load_s))


def costs_for(preset: Any, narrator: str, painter: str, catalog: Any = None, *,
              writer: Optional[str] = None) -> list[StepCost]:
    """The GPU costs of the chosen narrator and painter (and `writer`, the storyboard provider, when given) for
    `preset` (a `Preset`, a preset name or path, or None for provider figures only).

    `catalog`, when given, is asked first: ``catalog.for_provider(provider, preset)`` returns an entry with
    ``gpu_s_per_scene`` and ``load_s`` (attributes or keys; ``seconds_per_scene`` is read too), or None (or raises
    ``LookupError``) for a provider it does not know, which then gets the built-in figures. ``auto`` costs as the
    dearest provider of the preset's list for that step. Offline providers cost 0.

    The writer runs once, before the scenes exist, so give it only to size the storyboard call
    (``gpu_seconds(costs_for(p, "espeak", "cards", writer="transformers"), 0)``): a writer among the scene steps
    would add its load to every call.
    """
    preset_obj = _preset_object(preset)
    costs = [_choice_cost("narrator", narrator, preset_obj, catalog), _choice_cost("painter", painter, preset_obj, catalog)]
    if writer is not None:
        costs.insert(0, _choice_cost("storyboard", writer, preset_obj, catalog))
    return costs
