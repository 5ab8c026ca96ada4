"""`make_video`: the four steps in order, with the asset cache, progress, cancellation and a run summary."""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from .assets import AssetStore
from .errors import StudioError
from .fonts import read_font
from .media import check_output_path, probe
from .presets import Preset, load_preset
from .progress import CancelToken, ProgressFn, check, no_progress, scaled
from .project import Project

# Share of the progress bar each step gets (narration and encoding take most of the time offline).
_WEIGHTS = (("storyboard", 0.02), ("narrate", 0.28), ("illustrate", 0.12), ("compose", 0.58))


@dataclass(frozen=True)
class StepReport:
    """How one step went: seconds, and assets made or found in the cache."""

    name: str
    seconds: float
    made: int = 0
    reused: int = 0


@dataclass(frozen=True)
class RunSummary:
    """What `make_video` made."""

    output: Path
    duration_s: float
    size_bytes: int
    width: int
    height: int
    fps: int
    encoder: str
    steps: tuple[StepReport, ...]
    project: Project

    @property
    def reused(self) -> int:
        return sum(s.reused for s in self.steps)

    @property
    def made(self) -> int:
        return sum(s.made for s in self.steps)

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.output}  {self.duration_s:.1f} s  {self.size_bytes / 1e6:.2f} MB  {self.width}x{self.height}@{self.fps}  {self.encoder}",
            "steps: " + ", ".join(f"{s.name} {s.seconds:.1f} s" for s in self.steps),
            f"assets: {self.made} made, {self.reused} reused",
        ]
        lines += [f"  {note}" for note in self.project.notes]
        return "\n".join(lines)


def _step_progress(report: ProgressFn, ranges: dict, name: str) -> ProgressFn:
    """The step's share of the bar, its messages prefixed with the step (``[2/4 narrate] scene 3/7``)."""
    number = [n for n, _ in _WEIGHTS].index(name) + 1
    inner = scaled(report, *ranges[name])
    return lambda fraction, message: inner(fraction, f"[{number}/{len(_WEIGHTS)} {name}] {message}")


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


def make_video(
    project: Project | str,
    *,
    preset: Preset | str = "draft",
    output: Path | str,
    project_dir: Path | str | None = None,
    writer: str = "auto",
    narrator: str = "auto",
    painter: str = "auto",
    media_root: Path | str | None = None,
    encoder: str | None = None,
    on_progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    **project_fields: Any,
) -> RunSummary:
    """Turn a script, a brief or a storyboard into a finished MP4.

    Args:
        project: A `Project` (e.g. from a storyboard file) or text: a script or a short brief (see `write_storyboard`).
        preset: A tier name (``draft``, ``standard``, ``premium``, ``maximum``), a preset file's path, or a `Preset`.
        output: The MP4 to write; it is replaced only when the new video is complete.
        project_dir: Keep the project (``project.json``, ``assets/``, ``renders/``) here, so a second run reuses every
            asset whose inputs did not change. Without it a temporary folder is used and removed.
        writer, narrator, painter: Providers for the steps (``auto`` picks by the preset's preferences).
        media_root: Folder that relative ``media`` paths in the storyboard are resolved against.
        encoder: Force a video encoder (``libx264``, ``h264_nvenc``, ``hevc_nvenc``); default: the preset's first that works.
        on_progress: ``on_progress(fraction, message)``.
        cancel: A `CancelToken`; cancelling stops the current step (and ffmpeg) and raises `Cancelled`.
        **project_fields: Project settings for text input or overrides (``title``, ``aspect``, ``style``, ``voice``,
            ``music``, ``music_volume``, ``captions``, ``caption_style``, ``caption_font``, ``watermark``, ``seed``,
            ``language``).

    Returns:
        A `RunSummary` with the output's facts, each step's time and how many assets were reused.
    """
    from .compose import compose
    from .storyboard import write_storyboard
    from .visuals import illustrate
    from .voice import narrate

    # 1. Check inputs before any work
    preset = preset if isinstance(preset, Preset) else load_preset(preset)
    output = check_output_path(Path(output))
    if project_fields.get("caption_font") is not None:  # before a writer model runs (checked again with the project)
        read_font(Path(project_fields["caption_font"]))
    report = on_progress or no_progress
    ranges, start = {}, 0.0
    for name, weight in _WEIGHTS:
        ranges[name] = (start, start + weight)
        start += weight
    steps: list[StepReport] = []

    # 2. Storyboard
    t0 = time.perf_counter()
    if isinstance(project, str):
        story_fields = {k: project_fields.pop(k) for k in ("title", "aspect", "style", "language", "voice", "seed") if k in project_fields}
        project = write_storyboard(project, writer=writer, preset=preset, cancel=cancel,
                                   on_progress=_step_progress(report, ranges, "storyboard"), **story_fields)
    if project_fields:
        project = replace(project, **{k: (Path(v) if k in ("music", "watermark", "caption_font") and v is not None else v)
                                      for k, v in project_fields.items()})
    if not project.scenes:
        raise StudioError("the storyboard has no scenes; add at least one scene with narration")
    _validate_project_files(project)
    preset.size(project.aspect)
    steps.append(StepReport("storyboard", time.perf_counter() - t0))
    check(cancel)

    with _project_folder(project, Path(project_dir) if project_dir is not None else None) as project:
        store = AssetStore(project.assets_dir)

        # 3. Narration
        t0 = time.perf_counter()
        project = narrate(project, narrator=narrator, preset=preset, store=store, cancel=cancel,
                          on_progress=_step_progress(report, ranges, "narrate"))
        steps.append(StepReport("narrate", time.perf_counter() - t0, store.made, store.reused))
        project = project.save()

        # 4. Visuals
        made, reused = store.made, store.reused
        t0 = time.perf_counter()
        project = illustrate(project, painter=painter, preset=preset, store=store, cancel=cancel,
                             media_root=Path(media_root) if media_root is not None else None,
                             on_progress=_step_progress(report, ranges, "illustrate"))
        steps.append(StepReport("illustrate", time.perf_counter() - t0, store.made - made, store.reused - reused))
        project = project.save()

        # 5. Compose and encode
        t0 = time.perf_counter()
        result = compose(project, preset, output, encoder=encoder, cancel=cancel,
                         on_progress=_step_progress(report, ranges, "compose"))
        steps.append(StepReport("compose", time.perf_counter() - t0))
        report(1.0, "done")
        return RunSummary(
            output=result.path,
            duration_s=result.duration_s,
            size_bytes=result.size_bytes,
            width=result.width,
            height=result.height,
            fps=result.fps,
            encoder=result.encoder,
            steps=tuple(steps),
            project=project,
        )
