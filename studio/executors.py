"""Scene-level work behind a small interface: narrate a scene, paint a scene, render a segment.

    executor = LocalExecutor()                        # default: in this process, one task after another
    executor = RayExecutor(address="auto")            # or on a Ray cluster (optional extra: requirements-ray.txt)
    summary = produce_video(project, preset=preset, output=out, executor=executor, on_event=print)

A unit of work is a `Task`: one of the plain functions `narrate_scene`, `paint_scene` or `render_segment` with its
arguments. Every unit is idempotent: its output is a content-addressed file in the project's asset folder (named by
the sha256 of everything that made it, and written atomically), so running it twice, retrying it after a crash, or
running it on another machine that shares the data folder gives the same file, found instead of made the second time.

An `Executor` runs a list of tasks and reports each one as it finishes; it holds no state about jobs. The job
journal and the files stay outside it: the job runner (`studio.jobs`) records progress, and the project folder lives
in the data folder, which every Ray node must see at the same path (a shared file system).

- `LocalExecutor` runs the tasks in the calling thread, in order, with the caller's `CancelToken`: a cancel kills
  ffmpeg and espeak-ng at once and stops model loops at their next check.
- `RayExecutor` runs them on Ray actors: CPU actors for offline providers and encoding, GPU actors (``num_gpus=1``)
  for model providers, which keep their models loaded between tasks (providers are cached per process). Actor tasks
  are retried when an actor dies (``max_restarts``/``max_task_retries``); a cancel removes queued tasks and tells the
  running ones to stop through the actor's own `CancelToken`.

`produce_video` is `studio.pipeline.make_video`'s steps 3-5 (narration, visuals, composition) driven through an
executor, with an event per scene and per segment, so a job can journal exactly which scenes are done.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .assets import AssetStore
from .errors import Cancelled, ProviderUnavailable, StudioError
from .presets import Preset, load_preset
from .progress import CancelToken, ProgressFn, check, no_progress
from .project import Project, Scene

log = logging.getLogger("studio.executors")

# Providers that run on the CPU without a model; any other provider is a model provider, run on a GPU actor when
# the executor has GPU workers.
CPU_PROVIDERS = frozenset({"rules", "espeak", "piper", "cards", "local"})
# Share of the progress bar each step gets (as in `studio.pipeline`).
STEP_WEIGHTS = (("storyboard", 0.02), ("narrate", 0.28), ("illustrate", 0.12), ("compose", 0.58))

EventFn = Callable[[str, dict], None]


def _no_event(kind: str, data: dict) -> None:
    pass


# -- the units of work -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneResult:
    """One scene after a unit of work: the scene with its new asset, whether the asset was found in the asset
    folder rather than made, and notes for the project (which provider ran and why)."""

    scene_id: str
    scene: Scene
    reused: bool
    notes: tuple[str, ...] = ()


def narrate_scene(project: Project, scene_id: str, *, narrator: str = "auto", preset: Preset | None = None,
                  cancel: CancelToken | None = None) -> SceneResult:
    """Narrate one scene of a saved project (its WAV goes to the project's asset folder, or is found there)."""
    from .voice import narrate

    store = AssetStore(project.assets_dir)
    result = narrate(project, narrator=narrator, preset=preset, only=[scene_id], store=store, cancel=cancel)
    notes = tuple(n for n in result.notes if n not in project.notes)
    return SceneResult(scene_id, result.scene(scene_id), reused=store.made == 0, notes=notes)


def paint_scene(project: Project, scene_id: str, *, painter: str = "auto", preset: Preset | None = None,
                media_root: Path | None = None, cancel: CancelToken | None = None) -> SceneResult:
    """Paint one scene of a saved project (its image or clip goes to the project's asset folder, or is found there)."""
    from .visuals import illustrate

    store = AssetStore(project.assets_dir)
    result = illustrate(project, painter=painter, preset=preset, media_root=media_root, only=[scene_id], store=store,
                        cancel=cancel)
    notes = tuple(n for n in result.notes if n not in project.notes)
    return SceneResult(scene_id, result.scene(scene_id), reused=store.made == 0, notes=notes)


def render_segment(timeline: Any, plan: Any, folder: Path, *, cancel: CancelToken | None = None,
                   on_progress: ProgressFn | None = None) -> Any:
    """Render one segment of a timeline into `folder` (see `studio.compose.segments.render_segment`)."""
    from .compose.segments import render_segment as render

    return render(timeline, plan, folder, cancel=cancel, on_progress=on_progress)


UNITS: dict[str, Callable[..., Any]] = {"narrate": narrate_scene, "paint": paint_scene, "segment": render_segment}


@dataclass(frozen=True)
class Task:
    """A unit of work: which function (``narrate``, ``paint``, ``segment``), its keyword arguments (plain data:
    projects, presets, timelines, paths), and whether it wants a GPU."""

    kind: str
    kwargs: Mapping[str, Any]
    gpu: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in UNITS:
            raise StudioError(f"unknown task kind {self.kind!r}; kinds: {', '.join(UNITS)}")


def run_task(task: Task, cancel: CancelToken | None = None, on_progress: ProgressFn | None = None) -> Any:
    """Run one task here."""
    kwargs = dict(task.kwargs)
    if task.kind == "segment" and on_progress is not None:
        kwargs["on_progress"] = on_progress
    return UNITS[task.kind](**kwargs, cancel=cancel)


# -- executors -------------------------------------------------------------------------------------------------------
DoneFn = Callable[[int, Any], None]
TaskProgressFn = Callable[[int, float, str], None]


class Executor:
    """Runs tasks and reports each as it finishes. Subclasses implement `run`."""

    name = "executor"

    def run(self, tasks: Sequence[Task], *, cancel: CancelToken | None = None, on_done: DoneFn | None = None,
            on_progress: TaskProgressFn | None = None) -> list[Any]:
        """Run `tasks`; returns their results in task order.

        Args:
            tasks: The units of work.
            cancel: Cancelling stops the running tasks and drops the others; `run` then raises `Cancelled`.
            on_done: ``on_done(index, result)`` as each task finishes (in any order).
            on_progress: ``on_progress(index, fraction, message)`` within a task, where the executor can report it.

        Raises:
            StudioError: the first task that failed (the others are stopped); `Cancelled` on cancel.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor holds (workers, connections)."""


class LocalExecutor(Executor):
    """Runs tasks in the calling thread, in order, with the caller's `CancelToken` (the default executor)."""

    name = "local"

    def run(self, tasks: Sequence[Task], *, cancel: CancelToken | None = None, on_done: DoneFn | None = None,
            on_progress: TaskProgressFn | None = None) -> list[Any]:
        results = []
        for index, task in enumerate(tasks):
            check(cancel)
            report = (lambda f, m, i=index: on_progress(i, f, m)) if on_progress is not None else None
            result = run_task(task, cancel, report)
            results.append(result)
            if on_done is not None:
                on_done(index, result)
        check(cancel)
        return results


class _SceneWorker:
    """The body of a Ray actor: runs tasks with a `CancelToken` per task that `cancel(key)` can trip."""

    def __init__(self) -> None:
        self._tokens: dict[str, CancelToken] = {}
        self._lock = threading.Lock()
        self.pid = os.getpid()

    def run(self, key: str, task: Task) -> Any:
        token = CancelToken()
        with self._lock:
            if self._tokens.get(key) is not None and self._tokens[key].cancelled:
                raise Cancelled()
            self._tokens[key] = token
        try:
            return run_task(task, token)
        finally:
            with self._lock:
                self._tokens.pop(key, None)

    def cancel(self, key: str) -> bool:
        with self._lock:
            token = self._tokens.get(key)
            if token is None:  # not started yet: remember, so it stops as soon as it starts
                token = self._tokens[key] = CancelToken()
        token.cancel()
        return True

    def info(self) -> dict:
        return {"pid": os.getpid()}


_ACTOR_CLASS: Any = None


def _actor_class() -> Any:
    """The Ray actor class (made on first use, so importing this module never imports Ray)."""
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        @ray.remote(concurrency_groups={"work": 1, "control": 1})
        class SceneWorker(_SceneWorker):
            @ray.method(concurrency_group="work")
            def run(self, key: str, task: Task) -> Any:  # noqa: D102
                return _SceneWorker.run(self, key, task)

            @ray.method(concurrency_group="control")
            def cancel(self, key: str) -> bool:  # noqa: D102
                return _SceneWorker.cancel(self, key)

            @ray.method(concurrency_group="control")
            def info(self) -> dict:  # noqa: D102
                return _SceneWorker.info(self)

        _ACTOR_CLASS = SceneWorker
    return _ACTOR_CLASS


def ray_runtime_env() -> dict:
    """A Ray runtime environment that ships this Studio package to the workers (``py_modules``)."""
    return {"py_modules": [str(Path(__file__).resolve().parent)]}


class RayExecutor(Executor):
    """Runs tasks on Ray actors (``pip install -r requirements-ray.txt``).

    Each actor runs one task at a time (its "work" group) and answers `cancel` at once (its "control" group).
    Tasks go to the least busy actor of their kind (GPU tasks to GPU actors when there are any).

    Args:
        address: A Ray cluster's address (``"auto"``, ``"ray://head:10001"``); None starts a local Ray unless one is
            already initialised in this process.
        cpu_workers: CPU actors (offline providers, segment encoding).
        gpu_workers: GPU actors (``num_gpus=1`` each) for model providers; 0 runs everything on CPU actors.
        retries: How often an actor is restarted, and a task retried, after the actor's process dies.
        runtime_env: Ray runtime environment for the actors; default ships this Studio package (`ray_runtime_env`).
        init_options: More arguments for ``ray.init`` (e.g. ``num_cpus=2``) when this executor starts Ray.

    Raises:
        ProviderUnavailable: Ray is not installed.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, cpu_workers: int = 2, gpu_workers: int = 0, retries: int = 2,
                 runtime_env: dict | None = None, init_options: dict | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ProviderUnavailable("the Ray executor needs Ray: pip install -r requirements-ray.txt") from exc
        if cpu_workers < 1 or gpu_workers < 0:
            raise StudioError(f"`cpu_workers` must be at least 1 and `gpu_workers` at least 0, got {cpu_workers}, {gpu_workers}")
        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            if address is None:  # a local Ray: give its agents time to start on a busy machine (default 15 s)
                os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
            ray.init(address=address, runtime_env=runtime_env if runtime_env is not None else ray_runtime_env(),
                     include_dashboard=False, log_to_driver=False, **(init_options or {}))
            self._started_ray = True
        actor = _actor_class()
        common = {"max_restarts": retries, "max_task_retries": retries}
        self._cpu = [actor.options(num_cpus=1, **common).remote() for _ in range(cpu_workers)]
        self._gpu = [actor.options(num_cpus=1, num_gpus=1, **common).remote() for _ in range(gpu_workers)]
        self._busy: dict[Any, int] = {a: 0 for a in self._cpu + self._gpu}
        self._lock = threading.Lock()

    def worker_pids(self) -> list[int]:
        """Process ids of the actors (for tests and diagnostics)."""
        return [info["pid"] for info in self._ray.get([a.info.remote() for a in self._cpu + self._gpu])]

    def _pick(self, gpu: bool) -> Any:
        pool = self._gpu if gpu and self._gpu else self._cpu
        with self._lock:
            actor = min(pool, key=lambda a: self._busy[a])
            self._busy[actor] += 1
        return actor

    def run(self, tasks: Sequence[Task], *, cancel: CancelToken | None = None, on_done: DoneFn | None = None,
            on_progress: TaskProgressFn | None = None) -> list[Any]:
        import uuid

        ray = self._ray
        check(cancel)
        pending: dict[Any, tuple[int, Any, str]] = {}
        for index, task in enumerate(tasks):
            actor = self._pick(task.gpu)
            key = uuid.uuid4().hex
            pending[actor.run.remote(key, task)] = (index, actor, key)
        results: list[Any] = [None] * len(tasks)
        try:
            while pending:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled()
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.1)
                for ref in ready:
                    index, actor, key = pending.pop(ref)
                    with self._lock:
                        self._busy[actor] -= 1
                    results[index] = self._get(ref)
                    if on_done is not None:
                        on_done(index, results[index])
        except BaseException:
            self._stop(pending)
            raise
        return results

    def _get(self, ref: Any) -> Any:
        """A task's result; a task's own error is raised as it was (its message is written for the user)."""
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
            if isinstance(cause, StudioError):
                raise cause from None
            raise StudioError(f"a task failed on a Ray worker: {cause or exc}") from exc
        except ray.exceptions.RayActorError as exc:
            raise StudioError(f"a Ray worker died and was not restarted in time ({exc}); see the Ray logs") from exc

    def _stop(self, pending: dict[Any, tuple[int, Any, str]]) -> None:
        """Drop queued tasks and tell running ones to stop; wait briefly for them to end."""
        ray = self._ray
        for ref, (_, actor, key) in pending.items():
            actor.cancel.remote(key)
            try:
                ray.cancel(ref)
            except Exception:  # already finished, or not cancellable here: the actor's token stops it
                pass
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=10)
        with self._lock:
            for _, actor, _ in pending.values():
                self._busy[actor] = max(0, self._busy[actor] - 1)

    def close(self) -> None:
        ray = self._ray
        for actor in self._cpu + self._gpu:
            try:
                ray.kill(actor)
            except Exception:
                pass
        self._cpu, self._gpu = [], []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()


def create_executor(spec: str | None) -> Executor:
    """An executor from a command-line spec: ``local`` (default), ``ray`` (local Ray), or ``ray://host:port`` /
    ``ray:auto`` (a cluster). ``ray:...?cpu=4&gpu=1`` sets the actor counts."""
    if spec in (None, "", "local"):
        return LocalExecutor()
    if not spec.startswith("ray"):
        raise StudioError(f"`executor` must be 'local', 'ray', 'ray:auto' or 'ray://HOST:PORT', got {spec!r}")
    address_part, _, query = spec.partition("?")
    options = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in ("cpu", "gpu") or not value.isdigit():
            raise StudioError(f"executor option {item!r} must be cpu=N or gpu=N")
        options[f"{key}_workers"] = int(value)
    if address_part == "ray":
        address = None
    elif address_part.startswith("ray:") and not address_part.startswith("ray://"):
        address = address_part[4:]
    else:
        address = address_part
    return RayExecutor(address, **options)


# -- the pipeline through an executor ----------------------------------------------------------------------------------
def _ranges() -> dict[str, tuple[float, float]]:
    ranges, start = {}, 0.0
    for name, weight in STEP_WEIGHTS:
        ranges[name] = (start, start + weight)
        start += weight
    return ranges


def _is_gpu(kind: str, name: str, preset: Preset) -> bool:
    """Whether the provider that `name` (or auto) picks for `kind` is a model provider."""
    from . import providers

    prefer = preset.providers.get(kind)
    if kind == "painter" and name == "auto":
        prefer = [p for p in (prefer or providers.names("painter")) if p != "local"]
    try:
        chosen = providers.choose(kind, name, prefer=prefer).name
    except StudioError:
        return False  # the unit itself reports why the provider cannot run
    return chosen not in CPU_PROVIDERS


@dataclass
class _Step:
    name: str
    started: float = field(default_factory=time.perf_counter)
    made: int = 0
    reused: int = 0


def produce_video(project: Project, *, preset: Preset | str = "draft", output: Path | str,
                  executor: Executor | None = None, narrator: str = "auto", painter: str = "auto",
                  media_root: Path | str | None = None, encoder: str | None = None, segments: bool = True,
                  on_progress: ProgressFn | None = None, on_event: EventFn | None = None,
                  cancel: CancelToken | None = None):
    """Narrate, illustrate and compose a saved project through an executor, scene by scene.

    Args:
        project: A project with a folder (saved) and a storyboard.
        preset: The render tier (`Preset`, tier name or TOML path).
        output: The MP4 to write (replaced only when the new one is complete and checked).
        executor: Where the units of work run; default `LocalExecutor`.
        narrator, painter: Providers (``auto``: the preset's preference).
        media_root: Folder that scenes' ``media`` names are resolved against.
        encoder: Force a video encoder; default the preset's first that works here.
        segments: Compose segment by segment (cached per segment, spread over workers); False composes in one pass.
        on_progress: ``on_progress(fraction, message)``; fractions start after the storyboard's share.
        on_event: ``on_event(kind, data)`` for ``step_started``, ``scene`` (a scene's narration or visual is ready),
            ``segment`` and ``step`` (a step is done) events.
        cancel: A `CancelToken`.

    Returns:
        A `studio.pipeline.RunSummary`.
    """
    from .compose import build_timeline, compose
    from .media import check_output_path
    from .pipeline import RunSummary, StepReport, _validate_project_files

    # 1. Check inputs before any work
    executor = executor or LocalExecutor()
    preset = preset if isinstance(preset, Preset) else load_preset(preset)
    output = check_output_path(Path(output))
    if project.folder is None:
        raise StudioError("produce_video needs a saved project: call `project.save(folder)` first")
    if not project.scenes:
        raise StudioError("the storyboard has no scenes; add at least one scene with narration")
    _validate_project_files(project)
    preset.size(project.aspect)
    root = Path(media_root) if media_root is not None else None
    report = on_progress or no_progress
    event = on_event or _no_event
    ranges = _ranges()
    steps: list[StepReport] = []
    ids = [s.id for s in project.scenes]
    total = len(ids)

    def step_report(name: str):
        lo, hi = ranges[name]
        number = [n for n, _ in STEP_WEIGHTS].index(name) + 1
        return lambda fraction, message: report(lo + (hi - lo) * min(max(fraction, 0.0), 1.0),
                                                f"[{number}/{len(STEP_WEIGHTS)} {name}] {message}")

    def scene_step(name: str, kind: str, tasks: list[Task], project: Project) -> Project:
        step = _Step(name)
        progress = step_report(name)
        event("step_started", {"step": name, "total": total})
        progress(0.0, f"{total} scenes")
        scenes = dict(zip(ids, project.scenes))
        notes: list[str] = list(project.notes)
        done = [0]

        def on_done(index: int, result: SceneResult) -> None:
            done[0] += 1
            scenes[result.scene_id] = result.scene
            for note in result.notes:
                prefix = note.split(":", 1)[0] + ":"
                if prefix in ("narrator:", "painter:"):
                    notes[:] = [n for n in notes if not n.startswith(prefix)]
                if note not in notes:
                    notes.append(note)
            if result.reused:
                step.reused += 1
            else:
                step.made += 1
            event("scene", {"step": name, "scene_id": result.scene_id, "index": ids.index(result.scene_id) + 1,
                            "total": total, "reused": result.reused})
            progress(done[0] / total, f"scene {done[0]}/{total} {'reused' if result.reused else kind}")

        executor.run(tasks, cancel=cancel, on_done=on_done)
        project = replace(project, scenes=tuple(scenes[i] for i in ids), notes=tuple(notes)).save()
        seconds = time.perf_counter() - step.started
        steps.append(StepReport(name, seconds, step.made, step.reused))
        event("step", {"step": name, "seconds": round(seconds, 3), "made": step.made, "reused": step.reused})
        return project

    # 2. Narration, scene by scene
    gpu = _is_gpu("narrator", narrator, preset)
    project = scene_step("narrate", "narrated", [
        Task("narrate", {"project": project, "scene_id": i, "narrator": narrator, "preset": preset}, gpu=gpu,
             label=f"narrate scene {n}") for n, i in enumerate(ids, 1)], project)
    check(cancel)

    # 3. Visuals, scene by scene
    gpu = _is_gpu("painter", painter, preset)
    project = scene_step("illustrate", "painted", [
        Task("paint", {"project": project, "scene_id": i, "painter": painter, "preset": preset, "media_root": root},
             gpu=gpu and not project.scene(i).media, label=f"paint scene {n}") for n, i in enumerate(ids, 1)], project)
    check(cancel)

    # 4. Composition: segments (each cached, any worker), then joined with the soundtrack; or one pass
    step = _Step("compose")
    progress = step_report("compose")
    event("step_started", {"step": "compose", "total": total})
    if segments:
        from .compose.segments import join_segments, plan_segments

        timeline = build_timeline(project, preset, encoder=encoder)
        plans = plan_segments(timeline)
        frames = sum(p.frames for p in plans)
        finished = [0]
        gpu = timeline.encoder != "libx264"

        def on_segment(index: int, result: Any) -> None:
            finished[0] += plans[index].frames
            if result.reused:
                step.reused += 1
            else:
                step.made += 1
            event("segment", {"step": "compose", "index": index + 1, "total": len(plans), "reused": result.reused,
                              "scene_ids": list(plans[index].scene_ids)})
            progress(0.9 * finished[0] / frames, f"segment {index + 1}/{len(plans)} "
                                                 f"{'reused' if result.reused else 'rendered'}")

        def on_segment_progress(index: int, fraction: float, message: str) -> None:
            progress(0.9 * (finished[0] + fraction * plans[index].frames) / frames,
                     f"segment {index + 1}/{len(plans)}: {message}")

        tasks = [Task("segment", {"timeline": timeline, "plan": p, "folder": project.assets_dir}, gpu=gpu,
                      label=f"segment {p.index + 1}") for p in plans]
        parts = executor.run(tasks, cancel=cancel, on_done=on_segment, on_progress=on_segment_progress)
        check(cancel)
        result = join_segments(timeline, [p.path for p in parts], output, cancel=cancel,
                               on_progress=lambda f, m: progress(0.9 + 0.1 * f, m))
    else:
        result = compose(project, preset, output, encoder=encoder, cancel=cancel, on_progress=progress)
    seconds = time.perf_counter() - step.started
    steps.append(StepReport("compose", seconds, step.made, step.reused))
    event("step", {"step": "compose", "seconds": round(seconds, 3), "made": step.made, "reused": step.reused})
    report(1.0, "done")
    return RunSummary(output=result.path, duration_s=result.duration_s, size_bytes=result.size_bytes,
                      width=result.width, height=result.height, fps=result.fps, encoder=result.encoder,
                      steps=tuple(steps), project=project)
