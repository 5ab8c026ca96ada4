"""What every panel shares: the per-user session, the project view, errors, progress, served files, the GPU shim.

Per-user state is the browser's *session*, a small dict kept in ``gr.BrowserState`` (so a page reload finds the same
project and running job): ``{"guest": <key>, "project": <project id or None>, "job": <job id or None>}``. The
project itself lives on disk in the user's workspace and every handler loads it by id (`Studio.project`), so nothing
about a user is ever held in a module global.
"""

from __future__ import annotations

import functools
import html
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..errors import Cancelled, StudioError
from ..presets import Preset, load_preset
from ..progress import ProgressFn
from ..project import Project
from .workspace import Workspace, new_guest_key, owner_for, project_id_of

# A queue slot per resource: every handler that runs models or encodes shares the "gpu" slot (one at a time; on a
# CPU-only machine it keeps the cores for one job), light handlers run freely.
GPU = "gpu"


def empty_session() -> dict:
    return {"guest": new_guest_key(), "project": None, "job": None}


def checked_session(session: Any) -> dict:
    """The session from the browser, repaired if it is missing or malformed (a new anonymous key)."""
    if not isinstance(session, dict) or not isinstance(session.get("guest"), str) or len(session["guest"]) != 32:
        return empty_session()
    return {"guest": session["guest"], "project": session.get("project"), "job": session.get("job")}


@dataclass
class Studio:
    """The app's shared, user-independent parts: the workspace, the job runner and settings.

    Attributes:
        workspace: Where projects live.
        runner: The `studio.jobs.JobRunner` that renders (and checks uploads), shared with the HTTP API.
        single_user: On a local server without authentication (``studio serve``): the one user every browser and
            API caller is (the HTTP API's ``local``), so the studio and the API see the same jobs.
        narrators, painters, writers: Provider choices shown in the panels (``auto`` first).
    """

    workspace: Workspace
    runner: Any = None
    narrators: list[str] = field(default_factory=list)
    painters: list[str] = field(default_factory=list)
    writers: list[str] = field(default_factory=list)
    single_user: str | None = None

    def owner(self, session: dict, request: gr.Request | None) -> str:
        """Who is asking: the signed-in user; else the one user of a local server (`single_user`); else the
        anonymous browser's own key (a public server without sign-in, such as a Space: browsers never share)."""
        username = getattr(request, "username", None) if request is not None else None
        return owner_for(username or self.single_user, checked_session(session)["guest"])

    def project(self, session: dict, request: gr.Request | None) -> Project:
        """The session's current project, loaded from disk (it must belong to the caller)."""
        project_id = checked_session(session).get("project")
        if not project_id:
            raise StudioError("there is no project yet: write a storyboard in the Brief panel, or open one in Projects")
        return self.workspace.load(project_id, self.owner(session, request))

    def save(self, project: Project, session: dict, request: gr.Request | None) -> Project:
        return self.workspace.save(project, self.owner(session, request))

    def upload(self, project: Project, file: str, kind: str, session: dict, request: gr.Request | None) -> str:
        """Check an uploaded file (the job runner's checks) and keep it in the project; returns its ``uploads/`` name."""
        return self.workspace.add_upload(project, file, kind, self.runner.uploads, self.owner(session, request))


def friendly(fn: Callable) -> Callable:
    """Turn `StudioError` (bad input, a failed step) into a readable ``gr.Error`` instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Cancelled as exc:
            raise gr.Error(str(exc) or "cancelled", title="Cancelled", print_exception=False) from None
        except StudioError as exc:
            raise gr.Error(str(exc), title="Studio", print_exception=False) from None

    return wrapper


def named(fn: Callable, outputs: dict[str, Any]) -> tuple[Callable, list]:
    """Wire a handler that returns a dict of *named* results to components given by the same names.

    Returns ``(wrapped function, output components)`` for an event listener; keys the handler leaves out are left
    unchanged on the page. Handlers stay plain functions of plain values (and testable as such).
    """
    names = list(outputs)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict:
        result = friendly(fn)(*args, **kwargs)
        unknown = set(result) - set(names)
        if unknown:
            raise RuntimeError(f"{fn.__name__} returned {sorted(unknown)}, not wired to any component")
        return {outputs[name]: value for name, value in result.items()}

    wrapper.__signature__ = inspect.signature(fn)  # Gradio reads gr.Request / gr.Progress parameters from it
    return wrapper, [outputs[name] for name in names]


def fix(fn: Callable, **values: Any) -> Callable:
    """`fn` with some parameters filled in by name; the others keep their names (and Gradio reads the rest of the
    signature: inputs by name, ``gr.Request`` and ``gr.Progress`` parameters)."""
    signature = inspect.signature(fn)
    rest = signature.replace(parameters=[p for p in signature.parameters.values() if p.name not in values])

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = rest.bind_partial(*args, **kwargs)
        return fn(**values, **bound.arguments)

    wrapper.__signature__ = rest
    return wrapper


def bind(fn: Callable, studio: Studio) -> Callable:
    """`fn` with its `studio` parameter filled in."""
    return fix(fn, studio=studio)


def preset_of(value: Any) -> Preset:
    """The preset a panel names (a tier name from the preset radio; a `Preset` when called from Python)."""
    return value if isinstance(value, Preset) else load_preset(value or "draft")


def progress_to(progress: Any) -> ProgressFn:
    """A Studio ``on_progress(fraction, message)`` that drives a ``gr.Progress`` bar."""

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(min(max(fraction, 0.0), 1.0), desc=message)

    return report


def gpu(fn: Callable | None = None, *, duration: int | None = None) -> Callable:
    """``@spaces.GPU`` on a ZeroGPU Hugging Face Space (the function gets a GPU while it runs); a no-op elsewhere."""

    def decorate(func: Callable) -> Callable:
        try:
            import spaces  # the Hugging Face Spaces package; present on Spaces only
        except ImportError:
            return func
        return spaces.GPU(duration=duration)(func) if duration else spaces.GPU(func)

    return decorate(fn) if fn is not None else decorate


def served(path: Path | str | None) -> str | None:
    """A copy of a project file that Gradio may serve, or None.

    Project files stay where they are; the page gets a copy in Gradio's own cache, named by a keyed hash of the
    content, so no folder of the data directory is ever opened to the web (``allowed_paths`` stays empty) and one
    user cannot fetch another's files by guessing a path.
    """
    if path is None or not Path(path).is_file():
        return None
    from gradio import processing_utils, utils

    return processing_utils.save_file_to_cache(Path(path), utils.get_upload_folder())


# -- the project view: a plain snapshot of the project that every panel draws from ---------------------------------
def view(project: Project | None) -> dict | None:
    """What the panels show of `project`, as plain data (a ``gr.State`` value whose change redraws them)."""
    if project is None:
        return None
    scenes = []
    for number, scene in enumerate(project.scenes, start=1):
        scenes.append({
            "n": number,
            "id": scene.id,
            "narration": scene.narration,
            "visual_prompt": scene.visual_prompt,
            "duration_s": scene.duration_s,
            "seed": scene.seed,
            "media": scene.media,
            "transition": scene.transition,
            "audio": str(scene.audio) if scene.audio else None,
            "audio_s": scene.audio_duration_s,
            "visual": str(scene.visual) if scene.visual else None,
        })
    return {
        "id": project_id_of(project),
        "title": project.title,
        "aspect": project.aspect,
        "style": project.style,
        "language": project.language,
        "voice": project.voice,
        "captions": project.captions,
        "caption_style": project.caption_style,
        "music": project.music.name if project.music else None,
        "music_volume": project.music_volume,
        "watermark": project.watermark.name if project.watermark else None,
        "caption_font": _font_family(project.caption_font) if project.caption_font else None,
        "notes": list(project.notes),
        "scenes": scenes,
        "mtime": _mtime(project),
    }


def _font_family(path: Path) -> str:
    """A caption font as the panel names it: its family (read from the file), or its file name if it is unreadable."""
    from ..fonts import FontError, inspect_font

    try:
        return inspect_font(path).family
    except FontError:
        return Path(path).name


def _mtime(project: Project) -> float:
    try:
        return os.stat(Path(project.folder) / "project.json").st_mtime
    except OSError:
        return 0.0


def notes_md(view_: dict | None, *prefixes: str) -> str:
    """The project's notes that start with one of `prefixes` (``narrator:`` ...), as Markdown: which provider ran
    and why."""
    if not view_:
        return ""
    notes = [n for n in view_["notes"] if not prefixes or n.startswith(prefixes)]
    return "\n".join(f"- {html.escape(n)}" for n in notes)


def providers_md(kind: str, preset: str = "draft") -> str:
    """Every provider of `kind`: whether it can run on this machine and why not, and the order ``auto`` tries
    them in for `preset` (checks are cheap: no model is loaded)."""
    from .. import providers
    from ..presets import load_preset

    loaded = load_preset(preset)
    order = [n for n in loaded.providers.get(kind, ()) if n != "local"]
    lines = [f"`auto` tries {', '.join(order) or 'them in registration order'} ({loaded.label} preset) and takes the "
             "first that runs here:"]
    for name, ok, note in providers.availability(kind, configs=loaded.models):
        if name != "local":
            lines.append(f"- {'✅' if ok else '⛔'} **{name}**: {html.escape(note)}")
    return "\n".join(lines)


def scene_choices(view_: dict | None) -> list[tuple[str, str]]:
    """(label, scene id) pairs for scene pickers: ``3 · The hive keeps warm...``."""
    if not view_:
        return []
    return [(f"{s['n']} · {shorten(s['narration'] or s['visual_prompt'] or '(empty)', 60)}", s["id"]) for s in view_["scenes"]]


def shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def scene_index(view_: dict, scene_id: str) -> int:
    for i, scene in enumerate(view_["scenes"]):
        if scene["id"] == scene_id:
            return i
    raise StudioError(f"no scene {scene_id!r} in this project")
