"""`make_video`: the four steps in order, with the asset cache, progress, cancellation and a run summary; the one
orchestration of the steps, whatever runs the scene-level work (`studio.executors`: here, or on Ray)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import StudioError
from .fonts import read_font
from .media import check_output_path, probe
from .presets import Preset, load_preset
from .progress import CancelToken, ProgressFn, Reporter, UpdateFn, check
from .project import Project

@dataclass(frozen=True)
class StepReport:
    """How one step went: seconds, and assets made or found in the cache."""

    name: str
    seconds: float
    made: int = 0
    reused: int = 0


@dataclass(frozen=True)
class RunSummary:
    """What `make_video` made.

    Attributes:
        segmented: Composed segment by segment (the compose step's made/reused count video segments), rather than
            in one pass.
        soundtrack_reused: The soundtrack was found in the asset folder (segments only; None in one pass).
    """

    output: Path
    duration_s: float
    size_bytes: int
    width: int
    height: int
    fps: int
    encoder: str
    steps: tuple[StepReport, ...]
    project: Project
    segmented: bool = False
    soundtrack_reused: bool | None = None
    # Where the frames were made: "GPU compose: NVIDIA H200, hevc_nvenc p6" or "CPU compose: libx264 veryfast (...)".
    compose: str = ""

    @property
    def reused(self) -> int:
        return sum(s.reused for s in self.steps)

    @property
    def made(self) -> int:
        return sum(s.made for s in self.steps)

    def _compose(self) -> StepReport | None:
        return next((s for s in self.steps if s.name == "compose"), None)

    @property
    def segments_made(self) -> int:
        """Video segments rendered (0 in one pass)."""
        step = self._compose()
        return step.made if step is not None and self.segmented else 0

    @property
    def segments_reused(self) -> int:
        """Video segments found in the project's assets and joined as they were (0 in one pass)."""
        step = self._compose()
        return step.reused if step is not None and self.segmented else 0

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.output}  {self.duration_s:.1f} s  {self.size_bytes / 1e6:.2f} MB  {self.width}x{self.height}@{self.fps}  {self.encoder}",
            "steps: " + ", ".join(f"{s.name} {s.seconds:.1f} s" for s in self.steps),
            *([self.compose] if self.compose else []),
            f"assets: {self.made} made, {self.reused} reused",
        ]
        if self.segmented:
            total = self.segments_made + self.segments_reused
            sound = "soundtrack reused" if self.soundtrack_reused else "soundtrack mixed"
            lines.append(f"segments: {self.segments_reused} of {total} reused, {self.segments_made} rendered; {sound}")
        else:
            lines.append("composed in one pass")
        lines += [f"  {note}" for note in self.project.notes]
        return "\n".join(lines)


def _validate_project_files(project: Project) -> None:
    """Check the music, watermark and caption font files before any work is done, so a typo fails in a second, not a
    minute."""
    if project.music is not None:
        info = probe(project.music)  # raises StudioError naming the file
        if not info.has_audio:
            raise StudioError(f"music file {project.music} has no audio stream; choose an audio file (wav, mp3, ogg, m4a, flac)")
    if project.watermark is not None:
        info = probe(project.watermark)
        if not info.is_image:
            raise StudioError(f"watermark {project.watermark} must be an image (PNG with transparency works best)")
    if project.caption_font is not None:
        read_font(project.caption_font)  # raises StudioError naming `caption_font` and the file


@contextlib.contextmanager
def _project_folder(project: Project, project_dir: Path | None) -> Iterator[Project]:
    """The project saved in `project_dir` (kept), or in a temporary folder removed afterwards."""
    if project_dir is not None:
        yield project.save(Path(project_dir))
        return
    if project.folder is not None:
        yield project.save()
        return
    with tempfile.TemporaryDirectory(prefix="studio-") as tmp:
        yield project.save(Path(tmp))


@dataclass
class _Step:
    name: str
    started: float = field(default_factory=time.perf_counter)
    made: int = 0
    reused: int = 0


@dataclass
class _SceneRun:
    """Runs one step's scene tasks through an executor; the project gets each scene as its task finishes."""

    executor: Any
    progress: Reporter
    event: Callable[[str, dict], None]
    steps: list
    cancel: CancelToken | None

    def step(self, name: str, verb: str, project: Project, tasks: list) -> Project:
        ids = [s.id for s in project.scenes]
        total = len(ids)
        step = _Step(name)
        progress, event = self.progress, self.event
        event("step_started", {"step": name, "total": total})
        progress.step(name, 0.0, f"{total} scenes", scenes=total)
        scenes = dict(zip(ids, project.scenes))
        notes: list[str] = list(project.notes)
        done = [0]

        def on_done(index: int, result: Any) -> None:  # a `studio.executors.SceneResult`
            done[0] += 1
            scenes[result.scene_id] = result.scene
            for note in result.notes:
                prefix = note.split(":", 1)[0] + ":"
                if prefix in ("narrator:", "painter:", "recordings:"):  # the latest says it for the whole project
                    notes[:] = [n for n in notes if not n.startswith(prefix)]
                if note not in notes:
                    notes.append(note)
            step.reused += result.reused
            step.made += not result.reused
            number = ids.index(result.scene_id) + 1
            event("scene", {"step": name, "scene_id": result.scene_id, "index": number, "total": total,
                            "reused": result.reused})
            progress.step(name, done[0] / total, f"scene {done[0]}/{total} {'reused' if result.reused else verb}",
                          scene=number, scenes=total)

        def within(index: int, fraction: float, message: str) -> None:  # a scene's own progress (a model's steps)
            progress.step(name, (done[0] + min(max(fraction, 0.0), 1.0)) / total,
                          f"scene {index + 1}/{total}: {message}", scene=index + 1, scenes=total)

        self.executor.run(tasks, cancel=self.cancel, on_done=on_done, on_progress=within)
        project = replace(project, scenes=tuple(scenes[i] for i in ids), notes=tuple(notes)).save()
        seconds = time.perf_counter() - step.started
        self.steps.append(StepReport(name, seconds, step.made, step.reused))
        event("step", {"step": name, "seconds": round(seconds, 3), "made": step.made, "reused": step.reused})
        return project


def _is_gpu(kind: str, name: str, preset: Preset) -> bool:
    """Whether the provider that `name` (or auto) picks for `kind` is a model provider (its tasks want a GPU)."""
    from . import providers
    from .executors import CPU_PROVIDERS

    prefer = preset.providers.get(kind)
    if kind == "painter" and name == "auto":
        prefer = [p for p in (prefer or providers.names("painter")) if p != "local"]
    try:
        chosen = providers.choose(kind, name, prefer=prefer).name
    except StudioError:
        return False  # the unit itself reports why the provider cannot run
    return chosen not in CPU_PROVIDERS


def make_video(
    project: Project | str,
    *,
    preset: Preset | str = "draft",
    output: Path | str,
    project_dir: Path | str | None = None,
    executor: Any = None,
    writer: str = "auto",
    narrator: str = "auto",
    painter: str = "auto",
    media_root: Path | str | None = None,
    encoder: str | None = None,
    device: str | None = None,
    segments: bool | None = None,
    download: bool | None = None,
    on_progress: ProgressFn | None = None,
    on_update: UpdateFn | None = None,
    on_event: Callable[[str, dict], None] | None = None,
    cancel: CancelToken | None = None,
    **project_fields: Any,
) -> RunSummary:
    """Turn a script, a brief or a storyboard into a finished MP4: the one orchestration of Studio's steps (the CLI,
    notebooks, the job runner and Ray all call it, with their executor).

    Args:
        project: A `Project` (e.g. from a storyboard file) or text: a script or a short brief (see `write_storyboard`).
        preset: A tier name (``draft``, ``standard``, ``premium``, ``maximum``), a preset file's path, or a `Preset`.
        output: The MP4 to write; it is replaced only when the new video is complete.
        project_dir: Keep the project (``project.json``, ``assets/``, ``renders/``) here, so a second run reuses every
            asset whose inputs did not change. Default: the project's own folder, else a temporary one (removed).
        executor: Where scene-level work runs (`studio.executors`): default `LocalExecutor` (here, in order).
        writer, narrator, painter: Providers for the steps (``auto`` picks by the preset's preferences).
        media_root: Folder that relative ``media`` and ``recording`` paths in the storyboard are resolved against.
        encoder: Force a video encoder (``libx264``, ``h264_nvenc``, ``hevc_nvenc``); default: the preset's first that works.
        device: Where composition makes the frames (``auto``, ``cuda``, ``cpu``, ``tensor-cpu``); default: the
            preset's ``[compose] device`` (see `studio.compose.gpu`).
        segments: Compose segment by segment: each scene's frames and each transition are a video segment, an asset
            of the project named by everything that changes its frames, so a re-render after an edit renders only the
            segments that changed (spread over the executor's workers) and joins the rest with stream copy. False
            composes in one pass. None (default): segments when the project is kept (`project_dir`, or the project's
            own folder), one pass in a temporary folder, where nothing could be reused (see the README's measurements).
        download: Download on first use: pull a missing catalogue model that ``auto`` would use if it were here
            (`studio.downloads.fetch_for_run`). None (default): ``STUDIO_DOWNLOAD_MODELS``, else on for a Hugging
            Face Space only; False never downloads (``auto`` goes on with what is here and the notes say why).
        on_progress: ``on_progress(fraction, message)``, the message labelled with its step (``[2/4 narrate] ...``).
        on_update: ``on_update(progress)`` with a `studio.progress.Progress` (step, scene, fractions as data).
        on_event: ``on_event(kind, data)`` as work completes: ``step_started``, ``scene`` (a scene's narration or
            visual is ready), ``segment`` and ``step`` (a step is done), for a journal.
        cancel: A `CancelToken`; cancelling stops the current step (and ffmpeg) and raises `Cancelled`.
        **project_fields: Project settings for text input or overrides (``title``, ``aspect``, ``style``, ``voice``,
            ``music``, ``music_volume``, ``captions``, ``caption_style``, ``caption_font``, ``watermark``, ``seed``,
            ``language``).

    Returns:
        A `RunSummary` with the output's facts, each step's time and how many assets were made or reused.
    """
    from .executors import LocalExecutor, Task
    from .storyboard import write_storyboard

    # 1. Check inputs before any work
    executor = executor or LocalExecutor()
    preset = preset if isinstance(preset, Preset) else load_preset(preset)
    output = check_output_path(Path(output))
    if project_fields.get("caption_font") is not None:  # before a writer model runs (checked again with the project)
        read_font(Path(project_fields["caption_font"]))
    progress = Reporter(on_progress, on_update)
    event = on_event or (lambda kind, data: None)
    root = Path(media_root) if media_root is not None else None
    steps: list[StepReport] = []

    # 2. Models asked to be fetched on first use (off unless the user or the Space said so)
    from .downloads import fetch_for_run, first_use_enabled

    if first_use_enabled(download):
        fetch_for_run(preset, narrator=narrator, painter=painter, writer=writer if isinstance(project, str) else None,
                      enabled=True, cancel=cancel, on_progress=progress.for_step("storyboard"))

    # 3. Storyboard
    t0 = time.perf_counter()
    if isinstance(project, str):
        story_fields = {k: project_fields.pop(k) for k in ("title", "aspect", "style", "language", "voice", "seed")
                        if k in project_fields}
        project = write_storyboard(project, writer=writer, preset=preset, cancel=cancel,
                                   on_progress=progress.for_step("storyboard"), **story_fields)
    if project_fields:
        project = replace(project, **{k: (Path(v) if k in ("music", "watermark", "caption_font") and v is not None else v)
                                      for k, v in project_fields.items()})
    if not project.scenes:
        raise StudioError("the storyboard has no scenes; add at least one scene with narration")
    _validate_project_files(project)
    preset.size(project.aspect)
    steps.append(StepReport("storyboard", time.perf_counter() - t0))
    check(cancel)

    if segments is None:
        segments = project_dir is not None or project.folder is not None
    with _project_folder(project, Path(project_dir) if project_dir is not None else None) as project:
        ids = [s.id for s in project.scenes]
        run = _SceneRun(executor, progress, event, steps, cancel)

        # 4. Narration, scene by scene
        gpu = _is_gpu("narrator", narrator, preset)
        project = run.step("narrate", "narrated", project, [
            Task("narrate", {"project": project, "scene_id": i, "narrator": narrator, "preset": preset,
                             "media_root": root}, gpu=gpu and not project.scene(i).recording,
                 label=f"narrate scene {n}") for n, i in enumerate(ids, 1)])
        _record_time(project, preset, steps[-1], "narrator")
        check(cancel)

        # 5. Visuals, scene by scene
        gpu = _is_gpu("painter", painter, preset)
        project = run.step("illustrate", "painted", project, [
            Task("paint", {"project": project, "scene_id": i, "painter": painter, "preset": preset, "media_root": root},
                 gpu=gpu and not project.scene(i).media, label=f"paint scene {n}") for n, i in enumerate(ids, 1)])
        _record_time(project, preset, steps[-1], "painter")
        check(cancel)

        # 6. Compose: segments (each cached, any worker) joined with the soundtrack, or one pass
        result, sound_reused = _compose_step(project, preset, output, executor, encoder, segments, progress, event,
                                             steps, cancel, device)
        project = _with_compose_notes(project, (*getattr(getattr(result, "timeline", None), "notes", ()),
                                                *getattr(result, "notes", ())))
        progress.done()
        return RunSummary(output=result.path, duration_s=result.duration_s, size_bytes=result.size_bytes,
                          width=result.width, height=result.height, fps=result.fps, encoder=result.encoder,
                          steps=tuple(steps), project=project, segmented=segments, soundtrack_reused=sound_reused,
                          compose=getattr(result, "renderer", ""))


def _record_time(project: Project, preset: Preset, report: StepReport, kind: str) -> None:
    """Keep this run's seconds per scene made by the step's provider (`studio.history`), for later estimates."""
    if report.made <= 0:
        return
    from . import history
    from .devices import gpus

    note = next((n for n in reversed(project.notes) if n.startswith(f"{kind}: ")), "")
    provider = note.split(":", 2)[1].strip() if note.count(":") >= 2 else ""
    if provider:
        model = (preset.models.get(provider) or {}).get("model")
        history.record(report.name, provider, model, "gpu" if gpus() else "cpu", seconds=report.seconds,
                       scenes=report.made)


def _with_compose_notes(project: Project, notes: Any) -> Project:
    """The project with this render's composition notes (captions drawn with fallback fonts or not at all, a fixed
    duration too short ...) in place of the last render's, saved: the CLI, the app and the API show them."""
    fresh = [n if n.startswith("compose:") else f"compose: {n}" for n in notes or ()]
    kept = [n for n in project.notes if not n.startswith("compose:")]
    if fresh == [n for n in project.notes if n.startswith("compose:")]:
        return project
    return replace(project, notes=tuple(kept + fresh)).save()


def _compose_step(project: Project, preset: Preset, output: Path, executor: Any, encoder: str | None, segments: bool,
                  progress: Reporter, event: Callable[[str, dict], None], steps: list[StepReport],
                  cancel: CancelToken | None, device: str | None = None) -> tuple[Any, bool | None]:
    """Compose in one pass, or segment by segment from the project's assets (`studio.compose.segments`); returns the
    `RenderResult` and whether the soundtrack was reused (None in one pass)."""
    from .compose import build_timeline, compose
    from .compose.encoders import check_encoder

    step = _Step("compose")
    event("step_started", {"step": "compose", "total": len(project.scenes)})
    sound_reused = None
    if not segments:
        result = compose(project, preset, output, encoder=encoder, cancel=cancel, device=device,
                         on_progress=progress.for_step("compose"))
    else:
        from .compose.segments import compose_segments, plan_segments

        from .compose.gpu import fallback_timeline, gpu_failure

        timeline = build_timeline(project, preset, encoder=check_encoder(preset, encoder) if encoder else None,
                                  device=device)
        count = [0, 0]

        def on_segment(plan: Any, part: Any) -> None:
            count[0] += 1
            step.reused += part.reused
            step.made += not part.reused
            event("segment", {"step": "compose", "index": plan.index + 1, "total": count[1], "reused": part.reused,
                              "scene_ids": list(plan.scene_ids), "kind": plan.kind})

        def on_progress(fraction: float, message: str) -> None:
            progress.step("compose", fraction, message, scene=count[0] or None, scenes=count[1] or None)

        plans = plan_segments(timeline)
        count[1] = len(plans)
        fallback = None
        try:
            render = compose_segments(timeline, project.assets_dir, output, plans=plans, executor=executor,
                                      cancel=cancel, on_progress=on_progress, on_segment=on_segment)
        except Exception as exc:
            # A hardware encoder that fails (the GPU renderer already fell back per segment): every segment again
            # with libx264 on the CPU, so that the joined segments share one encoder's settings.
            if (cancel is not None and cancel.cancelled) or not gpu_failure(timeline, exc) \
                    or timeline.encoder == fallback_timeline(timeline, preset).encoder:
                raise
            from .compose.render import _short

            fallback = (f"compose: {timeline.encoder} failed ({_short(exc)}); rendered again on the CPU with "
                        "libx264")
            progress.step("compose", 0.0, fallback)
            timeline = fallback_timeline(timeline, preset)
            plans = plan_segments(timeline)
            count[:] = [0, len(plans)]
            render = compose_segments(timeline, project.assets_dir, output, plans=plans, executor=executor,
                                      cancel=cancel, on_progress=on_progress, on_segment=on_segment)
        result, sound_reused = render.result, render.soundtrack_reused
        if fallback:
            result = replace(result, notes=(fallback, *result.notes))
    seconds = time.perf_counter() - step.started
    steps.append(StepReport("compose", seconds, step.made, step.reused))
    event("step", {"step": "compose", "seconds": round(seconds, 3), "made": step.made, "reused": step.reused})
    return result, sound_reused
