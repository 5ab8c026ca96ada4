"""What every panel shares: the per-user session, the project view, errors, progress, served files, the GPU shim.

Per-user state is the browser's *session*, a small dict kept in ``gr.BrowserState`` (so a page reload finds the same
project and running job): ``{"guest": <key>, "project": <project id or None>, "job": <job id or None>}`` (the open
panel is a browser state of its own, so a tab click never races a handler that changes the session). The
project itself lives on disk in the user's workspace and every handler loads it by id (`Studio.project`), so nothing
about a user is ever held in a module global.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import html
import inspect
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..errors import Cancelled, StudioError
from ..presets import Preset, load_preset
from ..progress import ProgressFn
from ..project import Project
from .workspace import Workspace, new_guest_key, owner_for, project_id_of

# Served copies live in their own folder of Gradio's cache, one sub-folder per user (a keyed tag of the owner), so
# they are never mistaken for uploads and a signed-in user's copies are refused to every other user (`ServedGuard`).
SERVED_DIR = "studio-served"
_SERVE_KEY = secrets.token_bytes(32)  # per process: a restart makes old served URLs unreachable, never guessable

# A queue slot per resource: every handler that runs models or encodes shares the "gpu" slot (one at a time; on a
# CPU-only machine it keeps the cores for one job), light handlers run freely.
GPU = "gpu"


# The panels' tab ids, in order.
TABS = ("brief", "storyboard", "voice", "visuals", "compose", "projects", "models")


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
        runner: The `studio.server.JobRunner` that renders (and checks uploads), shared with the HTTP API.
        single_user: On a local server without authentication (``studio serve``): the one user every browser and
            API caller is (the HTTP API's ``local``), so the studio and the API see the same jobs.
        narrators, painters, writers: Provider choices shown in the panels (``auto`` first).
        allow_downloads: Whether users may download models from the Models panel (`studio.downloads.download_allowed`).
        download_first_use: The app's setting: a step may fetch a missing model it would use (off unless asked; on
            by default on a Space); the download runs in the Models panel's background, never in a panel's handler.
        downloads: The server's `studio.downloads.Downloads`.
    """

    workspace: Workspace
    runner: Any = None
    narrators: list[str] = field(default_factory=list)
    painters: list[str] = field(default_factory=list)
    writers: list[str] = field(default_factory=list)
    single_user: str | None = None
    allow_downloads: bool = False
    download_first_use: bool = False
    downloads: Any = None

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
        """Write the session's project back, if it is within the server's limits (`check`)."""
        return self.workspace.save(self.check(project), self.owner(session, request))

    def write_storyboard(self, source: Any, *, mode: str = "auto", preset: Any = None, **options: Any) -> Project:
        """Step 1 for a face: the source's limits first (length; a script's scene count after splitting), then the
        writer, then the project's limits; nothing is written or saved over a limit."""
        from ..server import check_source_limits
        from ..storyboard import detect_mode, write_storyboard

        source = source or ""
        limits = self.limits
        if not isinstance(source, str) or len(source) > max(limits.max_script_chars, limits.max_brief_chars):
            check_source_limits(source, "script", limits)
        if mode not in ("script", "brief"):
            resolved = detect_mode(source)[0] if mode == "auto" and source.strip() else mode
        else:
            resolved = mode
        if resolved in ("script", "brief"):
            check_source_limits(source, resolved, limits)
        chosen = self.preset(preset)
        project = write_storyboard(source, mode=mode, preset=chosen, **options)
        return self.check(project, chosen)

    def upload(self, project: Project, file: Any, kind: str, session: dict, request: gr.Request | None) -> str:
        """Check an uploaded file (the job runner's checks) and keep it in the project; returns its ``uploads/`` name.

        Only a file that came through Gradio's upload route is taken (`accepted_upload`): a forged event naming a
        server path, or a copy Studio served to someone, is refused whatever the mounting."""
        return self.workspace.add_upload(project, accepted_upload(file), kind, self.runner.uploads,
                                         self.owner(session, request))

    @property
    def limits(self) -> Any:
        """The job runner's limits (`studio.server.Limits`): every face applies the same ones before any work."""
        from ..server import Limits

        return getattr(self.runner, "limits", None) or Limits()

    def check(self, project: Project, preset: Preset | None = None) -> Project:
        """`project` if it is within the server's limits (scenes, text lengths, scene and video length, frame size),
        else a `StudioError` naming the limit; called before any step runs and before any project is saved."""
        from ..server import check_project_limits

        check_project_limits(project, self.limits, preset)
        return project

    def preset(self, value: Any) -> Preset:
        """The preset a request names: a tier name of this server (never a path), as the job runner offers them."""
        return preset_of(value, getattr(self.runner, "presets", None))


# How a panel names what the library's messages call by field name (the API keeps the field names: they are its words).
FIELD_WORDS = {"narration": "narration", "visual_prompt": "visual prompt", "duration_s": "length",
               "seed": "seed", "media": "own image or clip", "transition": "transition",
               "recording": "own recording", "title": "title",
               "style": "style", "preset": "preset", "voice": "voice", "caption_style": "caption style",
               "music_volume": "music volume", "scene": "scene"}


def user_words(message: str) -> str:
    """A library message as the studio's panels say it: 1-based scene numbers instead of ``storyboard[3]``, words
    instead of field names, no scene ids."""
    text = re.sub(r"`?storyboard\[(\d+)\]`?", lambda m: f"scene {int(m.group(1)) + 1}", str(message))
    text = re.sub(r"(?:for |of )?scene '?s[0-9a-f]{8}'?", "for that scene", text)
    text = re.sub(r"`?\b(" + "|".join(FIELD_WORDS) + r")\b`?", lambda m: FIELD_WORDS[m.group(1)], text)
    return text[:1].upper() + text[1:]


def friendly(fn: Callable, *, words: bool = False) -> Callable:
    """Turn `StudioError` (bad input, a failed step) into a readable ``gr.Error`` instead of a traceback (in the
    panels' words, `user_words`, when `words`)."""

    say = user_words if words else str

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Cancelled as exc:
            raise gr.Error(str(exc) or "cancelled", title="Cancelled", print_exception=False) from None
        except StudioError as exc:
            raise gr.Error(say(str(exc)), title="Studio", print_exception=False) from None

    return wrapper


def friendly_async(fn: Callable) -> Callable:
    """`friendly` for a coroutine function (Gradio runs it on the event loop: it holds no worker thread)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except Cancelled as exc:
            raise gr.Error(str(exc) or "cancelled", title="Cancelled", print_exception=False) from None
        except StudioError as exc:
            raise gr.Error(str(exc), title="Studio", print_exception=False) from None

    return wrapper


def named(fn: Callable, outputs: dict[str, Any], *, soft: bool = False) -> tuple[Callable, list]:
    """Wire a handler that returns a dict of *named* results to components given by the same names.

    Returns ``(wrapped function, output components)`` for an event listener; keys the handler leaves out are left
    unchanged on the page. Handlers stay plain functions of plain values (and testable as such). With `soft`, a
    refused edit (a `StudioError`) is a warning toast and changes nothing on the page (an error would put an error
    badge over every output, hiding a field such as the scene number the user needs to fix it).
    """
    names = list(outputs)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict:
        if soft:
            try:
                result = fn(*args, **kwargs)
            except StudioError as exc:
                gr.Warning(user_words(str(exc)), title="Not changed")
                return {component: gr.skip() for component in outputs.values()}
        else:
            result = friendly(fn, words=True)(*args, **kwargs)
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


def preset_of(value: Any, offered: Any = None) -> Preset:
    """The preset a panel or an API call names: a tier name (``draft`` ... or one of the server's configured preset
    files, `offered`: name -> file), or a `Preset` when called from Python. A path is never opened: the error lists
    the names and quotes nothing read from a file."""
    if isinstance(value, Preset):
        return value
    from ..presets import available_presets

    name = value or "draft"
    known = dict(offered) if offered else {n: n for n in available_presets()}
    if not isinstance(name, str) or name not in known:
        shown = repr(name)[:60] if isinstance(name, str) else type(name).__name__
        raise StudioError(f"`preset` must be one of {', '.join(known)}, got {shown}")
    return load_preset(known[name])


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


def upload_folder() -> Path:
    """Gradio's upload folder (its cache), resolved."""
    from gradio import utils

    return Path(utils.get_upload_folder()).resolve()


def accepted_upload(file: Any) -> Path:
    """The path of a file that reached the server through Gradio's upload route, else a `StudioError`.

    Gradio's own check is skipped when the app is mounted into FastAPI and never "launched", so the handler checks
    too: the file must be a regular file inside Gradio's upload folder (symlinks resolved), and not one of the copies
    Studio serves to pages (`served`). The message names no server path.
    """
    if isinstance(file, dict):  # a FileData as JSON
        file = file.get("path")
    elif hasattr(file, "path") and not isinstance(file, (str, Path)):
        file = file.path
    if not isinstance(file, (str, Path)) or not str(file):
        raise StudioError("choose a file to upload")
    refused = StudioError("that file did not come through the studio's upload button; upload it again")
    root = upload_folder()
    try:
        resolved = Path(os.path.abspath(file)).resolve(strict=True)
    except (OSError, RuntimeError):
        raise refused from None
    if (not resolved.is_relative_to(root) or resolved == root or resolved.relative_to(root).parts[0] == SERVED_DIR
            or not resolved.is_file() or Path(file).is_symlink()):
        raise refused
    return resolved


def owner_tag(owner: str) -> str:
    """The folder of `owner`'s served copies: a keyed hash of the owner (no user name in any URL)."""
    return hmac.new(_SERVE_KEY, f"owner:{owner}".encode(), hashlib.sha256).hexdigest()[:32]


def _owner_from_path(path: Path) -> str | None:
    """The owner of a workspace project file: ``owner.json`` of the project folder above it."""
    import json

    for folder in Path(path).resolve().parents:
        owner_file = folder / "owner.json"
        if folder.parent.name == "projects" and owner_file.is_file():
            try:
                return json.loads(owner_file.read_text("utf-8")).get("owner")
            except (OSError, ValueError, AttributeError):
                return None
    return None


_HASHES: dict[tuple, str] = {}  # (file, inode, size, mtime) -> sha256: a redraw does not read every video again


def _content_hash(path: Path) -> str:
    info = path.stat()
    key = (str(path.resolve()), info.st_ino, info.st_size, info.st_mtime_ns)
    known = _HASHES.get(key)
    if known is None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        known = digest.hexdigest()
        if len(_HASHES) > 4096:
            _HASHES.clear()
        _HASHES[key] = known
    return known


def served(path: Path | str | None, owner: str | None = None, name: str | None = None) -> str | None:
    """A copy of a project file that Gradio may serve, or None.

    Project files stay where they are; the page gets a copy in Gradio's cache under ``studio-served/<owner tag>/``
    and a keyed hash of the owner and the content, so no folder of the data directory is ever opened to the web
    (``allowed_paths`` stays empty), a URL cannot be guessed, and `ServedGuard` answers 404 to a signed-in user who
    asks for another user's copy.

    Args:
        path: The file.
        owner: Whose it is; default: the owner of the workspace project it lives in.
        name: The copy's file name (what a download saves it as); default: the file's own name. Made safe here.
    """
    if path is None or not Path(path).is_file():
        return None
    owner = owner or _owner_from_path(Path(path))
    if not owner:
        raise RuntimeError(f"served(): no owner for {Path(path).name}; pass owner=")
    tag = owner_tag(owner)
    key = hmac.new(_SERVE_KEY, f"{tag}:{_content_hash(Path(path))}".encode(), hashlib.sha256).hexdigest()[:40]
    folder = upload_folder() / SERVED_DIR / tag / key
    target = folder / (safe_name(name) if name else Path(path).name)
    if target.is_file():
        os.utime(target)  # Gradio's cache clean-up ages files; a copy handed out again starts a new day
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".part-")
    os.close(fd)
    try:
        shutil.copyfile(path, staging)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(target)


def safe_name(name: str, default: str = "video.mp4") -> str:
    """A file name made from user text (a title): letters, digits, ``-`` and ``_`` of any script, ``.`` before the
    extension; never a path."""
    stem, dot, ext = str(name).rpartition(".")
    if not dot:
        stem, ext = str(name), ""
    stem = re.sub(r"[^\w-]+", "-", stem, flags=re.UNICODE).strip("-_")[:80] or Path(default).stem
    ext = re.sub(r"[^a-z0-9]", "", ext.lower())[:5]
    return f"{stem}.{ext}" if ext else stem


def title_file(title: str, ext: str = "mp4") -> str:
    """The file name of a download named after the project's title (``How-bees-make-honey.mp4``)."""
    return safe_name(f"{title}.{ext}", default=f"video.{ext}")


class ServedGuard:
    """ASGI middleware for Gradio's file route: a served copy (`served`) is given only to its owner.

    Installed on Gradio's own app (``app_kwargs``), under ``python app.py`` and ``studio serve`` alike. On a server
    with sign-in, a request for a copy in another user's folder answers 404 (as one that does not exist); without
    sign-in there is no user to compare, and the copy's unguessable keyed name is what keeps it private.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and "/file=" in scope.get("path", ""):
            refused = await self._refused(scope)
            if refused:
                from starlette.responses import JSONResponse

                await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _refused(self, scope: dict) -> bool:
        target = scope["path"].split("/file=", 1)[1]
        try:
            resolved = Path(os.path.abspath(target)).resolve()
        except (OSError, RuntimeError, ValueError):
            return False  # Gradio's own route refuses it
        root = upload_folder() / SERVED_DIR
        if not resolved.is_relative_to(root) or resolved == root:
            return False
        tag = resolved.relative_to(root).parts[0]
        user = await self._user(scope)
        return user is not None and not hmac.compare_digest(tag, owner_tag(user))

    @staticmethod
    async def _user(scope: dict) -> str | None:
        """The signed-in user of Gradio's app (its login cookie), or None on a server without sign-in."""
        from starlette.requests import Request

        app = scope.get("app")
        if app is None or (getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None):
            return None
        request = Request(scope)
        if app.auth_dependency is not None:
            user = app.auth_dependency(request)
            return await user if inspect.isawaitable(user) else user
        cookie = getattr(app, "cookie_id", "")
        token = request.cookies.get(f"access-token-{cookie}") or request.cookies.get(f"access-token-unsecure-{cookie}")
        # A signed-in server without a valid login: never the owner of anything.
        return app.tokens.get(token) or ""


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
            "media_label": Workspace.upload_label(project, scene.media) if scene.media else None,
            "recording": scene.recording,
            "recording_label": Workspace.upload_label(project, scene.recording) if scene.recording else None,
            "audio": str(scene.audio) if scene.audio else None,
            "audio_s": scene.audio_duration_s,
            "visual": str(scene.visual) if scene.visual else None,
        })
    return {
        "id": project_id_of(project),
        "folder": str(project.folder),
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
        "music_label": Workspace.upload_label(project, project.music.name) if project.music else None,
        "watermark_label": Workspace.upload_label(project, project.watermark.name) if project.watermark else None,
        "notes": list(project.notes),
        "scenes": scenes,
        "seconds": round(sum(s["audio_s"] or s["duration_s"] or len(s["narration"].split()) / 2.5 for s in scenes), 1),
        "settings": Workspace.settings(project),
        "last": _last(project),
        "mtime": _mtime(project),
    }


def _last(project: Project) -> dict | None:
    kept = Workspace.last_render(project)
    return {**kept[1], "path": str(kept[0]), "mtime": kept[0].stat().st_mtime} if kept else None


def blank_scenes(view_: dict | None) -> list[int]:
    """The 1-based numbers of scenes with neither narration, a length nor a recording (nothing to say, no time to
    fill)."""
    return [s["n"] for s in (view_ or {}).get("scenes", [])
            if not (s["narration"] or "").strip() and s["duration_s"] is None and not s.get("recording")]


def blank_message(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return (f"Scene {numbers[0]} is empty: write its narration or delete it (or give it a length in the "
                "Storyboard table to keep it silent)")
    shown = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
    return f"Scenes {shown} are empty: write their narration or delete them (or give them a length to keep them silent)"


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
