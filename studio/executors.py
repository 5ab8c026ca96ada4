"""Scene-level work behind a small interface: narrate a scene, paint a scene, render a segment.

    executor = LocalExecutor()                        # default: in this process, one task after another
    executor = RayExecutor(address="auto")            # or on a Ray cluster (optional extra: requirements-ray.txt)
    summary = make_video(project, preset=preset, output=out, executor=executor, on_event=print)   # studio.pipeline

A unit of work is a `Task`: one of the plain functions `narrate_scene`, `paint_scene` or `render_segment` with its
arguments. Every unit is idempotent: its output is a content-addressed file in the project's asset folder (named by
the sha256 of everything that made it, and written atomically), so running it twice, retrying it after a crash, or
running it on another machine that shares the data folder gives the same file, found instead of made the second time.

An `Executor` runs a list of tasks and reports each one as it finishes; it holds no state about jobs. The job
journal and the files stay outside it: the job runner (`studio.server`) records progress, and the project folder lives
in the data folder, which every Ray node must see at the same path (a shared file system).

- `LocalExecutor` runs the tasks in the calling thread, in order, with the caller's `CancelToken`: a cancel kills
  ffmpeg and espeak-ng at once and stops model loops at their next check.
- `RayExecutor` runs them on Ray actors: CPU actors for offline providers and encoding, GPU actors (``num_gpus=1``)
  for model providers, which keep their models loaded between tasks (providers are cached per process). Actor tasks
  are retried when an actor dies (``max_restarts``/``max_task_retries``); a cancel removes queued tasks and tells the
  running ones to stop through the actor's own `CancelToken`.

`studio.pipeline.make_video` drives the steps through an executor, with an event per scene and per segment, so a job
can journal exactly which scenes are done.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .assets import AssetStore
from .errors import Cancelled, ProviderUnavailable, StudioError
from .presets import Preset
from .progress import CancelToken, ProgressFn, check
from .project import Project, Scene

log = logging.getLogger("studio.executors")

# Providers that run on the CPU without a model; any other provider is a model provider, run on a GPU actor when
# the executor has GPU workers.
CPU_PROVIDERS = frozenset({"rules", "espeak", "piper", "cards", "local"})

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
                  media_root: Path | None = None, cancel: CancelToken | None = None,
                  on_progress: ProgressFn | None = None) -> SceneResult:
    """Narrate one scene of a saved project (its WAV goes to the project's asset folder, or is found there); a
    relative `Scene.recording` is resolved against `media_root`."""
    from .voice import narrate

    store = AssetStore(project.assets_dir)
    result = narrate(project, narrator=narrator, preset=preset, only=[scene_id], store=store, media_root=media_root,
                     cancel=cancel, on_progress=on_progress)
    notes = tuple(n for n in result.notes if n not in project.notes)
    return SceneResult(scene_id, result.scene(scene_id), reused=store.made == 0, notes=notes)


def paint_scene(project: Project, scene_id: str, *, painter: str = "auto", preset: Preset | None = None,
                media_root: Path | None = None, cancel: CancelToken | None = None,
                on_progress: ProgressFn | None = None) -> SceneResult:
    """Paint one scene of a saved project (its image or clip goes to the project's asset folder, or is found there)."""
    from .visuals import illustrate

    store = AssetStore(project.assets_dir)
    result = illustrate(project, painter=painter, preset=preset, media_root=media_root, only=[scene_id], store=store,
                        cancel=cancel, on_progress=on_progress)
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
    if on_progress is not None:
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


def default_segment_workers() -> int:
    """How many video segments `LocalExecutor` renders at once: ``$STUDIO_SEGMENT_WORKERS``, else the CPU count up to 4
    (2 on the 2-core development machine, where 2 at a time rendered a project's segments 1.4x faster than one by
    one and 3 no faster than 2)."""
    value = os.environ.get("STUDIO_SEGMENT_WORKERS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise StudioError(f"STUDIO_SEGMENT_WORKERS must be a whole number of at least 1, got {value!r}")
        return int(value)
    return max(1, min(4, os.cpu_count() or 1))


class LocalExecutor(Executor):
    """Runs tasks here with the caller's `CancelToken` (the default executor): in the calling thread, in order; video
    segments (tasks of kind ``segment``) run `segment_workers` at a time in threads, since their work is in ffmpeg and
    OpenCV, which release the GIL, and a short segment's encoder start and caption drawing leave the cores idle.
    Callbacks come one at a time: ``on_done`` in the calling thread, ``on_progress`` under a lock."""

    name = "local"

    def __init__(self, segment_workers: int | None = None) -> None:
        self.segment_workers = segment_workers if segment_workers is not None else default_segment_workers()
        if self.segment_workers < 1:
            raise StudioError(f"`segment_workers` must be at least 1, got {self.segment_workers}")

    def run(self, tasks: Sequence[Task], *, cancel: CancelToken | None = None, on_done: DoneFn | None = None,
            on_progress: TaskProgressFn | None = None) -> list[Any]:
        if self.segment_workers > 1 and len(tasks) > 1 and all(t.kind == "segment" for t in tasks):
            return self._run_threads(tasks, cancel, on_done, on_progress)
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

    def _run_threads(self, tasks: Sequence[Task], cancel: CancelToken | None, on_done: DoneFn | None,
                     on_progress: TaskProgressFn | None) -> list[Any]:
        """`run` with `segment_workers` threads; the first failure stops the others (their ffmpeg is killed)."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        check(cancel)
        inner = CancelToken()
        unhook = cancel.on_cancel(inner.cancel) if cancel is not None else (lambda: None)
        lock = threading.Lock()

        def reporter(index: int):
            if on_progress is None:
                return None

            def report(fraction: float, message: str) -> None:
                with lock:
                    on_progress(index, fraction, message)

            return report

        results: list[Any] = [None] * len(tasks)
        pool = ThreadPoolExecutor(max_workers=min(self.segment_workers, len(tasks)), thread_name_prefix="studio-segment")
        futures = {pool.submit(run_task, task, inner, reporter(i)): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()  # the first failure (or cancel) raises here
                if on_done is not None:
                    with lock:
                        on_done(index, results[index])
        except BaseException:
            inner.cancel()
            for future in futures:
                future.cancel()
            pool.shutdown(wait=True)
            if cancel is not None and cancel.cancelled:
                raise Cancelled() from None
            raise
        finally:
            pool.shutdown(wait=True)
            unhook()
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

