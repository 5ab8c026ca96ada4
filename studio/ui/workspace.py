"""Where the studio keeps each user's projects, and how a request reaches only its own.

The data folder (``STUDIO_DATA_DIR``, else ``/data/studio`` on a Hugging Face Space with persistent storage, else a
per-user folder) is shared with the job runner (``studio.db``, ``jobs/``, ``uploads/``: see `studio.server.journal`) and
holds the studio's own::

    projects/<project id>/      one Studio project folder (project.json, assets/, renders/, uploads/) + owner.json
                                (renders/jobs.json: the render jobs seeded from it whose assets it has not taken back;
                                renders/last.mp4 + last.json: its last finished render, kept when the job is removed;
                                studio.json: the panels' choices for it, such as the preset; uploads/names.json: the
                                file names uploads had on the user's machine, for display only)
    (a file ui-secret of older versions is no longer used: the browser session holds no secret)

A project id is a random 96-bit token (``p`` + 24 hex digits); ``owner.json`` names the user it belongs to. A
request names a project by id, and `Workspace.load` answers "no such project" unless the caller owns it, so a user
never sees, opens or changes another user's project, and no id ever becomes a path outside ``projects/``.
Uploaded files are checked by their content (the job runner's upload checks) and kept under names the server makes
(``uploads/<upload id>.png``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..assets import atomic_write_text, link_or_copy
from ..errors import StudioError
from ..project import Project

DATA_ENV = "STUDIO_DATA_DIR"
SPACES_DATA = Path("/data")  # Hugging Face Spaces' persistent storage, when the Space has it
PROJECT_ID_RE = re.compile(r"^p[0-9a-f]{24}$")
OWNER_RE = re.compile(r"^[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,63}$")  # as the job runner's owners
UPLOAD_RE = re.compile(r"^uploads/[0-9a-f]{32}\.[a-z0-9]{2,5}$")  # <upload id><ext>
OWNER_FILE = "owner.json"
JOBS_FILE = "renders/jobs.json"  # render jobs seeded from the project, until their assets are taken back
LAST_VIDEO, LAST_FILE = "renders/last.mp4", "renders/last.json"  # the last finished render, and its facts
SETTINGS_FILE = "studio.json"  # the panels' choices kept with the project (preset, narrator, painter)
NAMES_FILE = "uploads/names.json"  # upload name -> the file's name on the user's machine (display only)
SETTINGS = {"preset": str, "narrator": str, "painter": str}
MAX_JOBS_KEPT = 50
# What each use of an upload accepts, by the kind the content check finds.
UPLOAD_KINDS = {"media": ("image", "video"), "music": ("audio", "video"), "watermark": ("image",),
                "caption_font": ("font",), "recording": ("audio", "video")}
SOUND_KINDS = ("music", "recording")  # uses that need sound in the file


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def default_data_dir() -> Path:
    """``$STUDIO_DATA_DIR``; else ``/data/studio`` when ``/data`` (a Space's persistent storage) is writable; else the
    job runner's default (``$XDG_DATA_HOME/studio``, ``~/.local/share/studio``). The app, its projects and its jobs
    share the folder."""
    from ..server.journal import default_data_dir as journal_default

    if not os.environ.get(DATA_ENV, "").strip() and SPACES_DATA.is_dir() and os.access(SPACES_DATA, os.W_OK):
        return SPACES_DATA / "studio"
    return journal_default()


def new_guest_key() -> str:
    """A random key that names an anonymous browser's projects (kept in its local storage)."""
    return secrets.token_hex(16)


def owner_for(username: str | None, guest_key: str | None) -> str:
    """Who is asking: the signed-in user's name (the same user as in the HTTP API), or ``guest-<key>`` for an
    anonymous browser on a server without authentication."""
    if username:
        owner = username
    elif guest_key and re.fullmatch(r"[0-9a-f]{32}", guest_key):
        owner = f"guest-{guest_key}"
    else:
        raise StudioError("this session has no user: reload the page (an anonymous browser gets a key on load)")
    if not OWNER_RE.match(owner):
        raise StudioError(f"user name {username!r} has characters Studio does not keep: use letters, digits and "
                          "_ . @ + -")
    return owner


@dataclass(frozen=True)
class ProjectInfo:
    """One row of a user's project list."""

    id: str
    title: str
    scenes: int
    updated: float
    folder: Path


class Workspace:
    """The projects of every user, in one data folder."""

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.root = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
        self.projects = self.root / "projects"
        self.projects.mkdir(parents=True, exist_ok=True)

    # -- ids and ownership ---------------------------------------------------------------------------------------
    def folder(self, project_id: str) -> Path:
        """The folder of `project_id`, checked to be a well-formed id (so it is always inside ``projects/``)."""
        if not isinstance(project_id, str) or not PROJECT_ID_RE.match(project_id):
            raise StudioError(f"`project_id` must look like 'p' + 24 hex digits, got {project_id!r}")
        return self.projects / project_id

    def owner_of(self, project_id: str) -> str | None:
        file = self.folder(project_id) / OWNER_FILE
        try:
            return json.loads(file.read_text("utf-8")).get("owner")
        except (OSError, ValueError, AttributeError):
            return None

    def _owned_folder(self, project_id: str, owner: str) -> Path:
        folder = self.folder(project_id)
        if folder.is_symlink() or not folder.is_dir() or self.owner_of(project_id) != owner:
            # The same answer whether it does not exist or belongs to someone else.
            raise StudioError(f"no project {project_id!r} here; open one from the Projects panel or write a new storyboard")
        return folder

    # -- projects ------------------------------------------------------------------------------------------------
    def create(self, project: Project, owner: str) -> Project:
        """Save a new project under a fresh id for `owner`; returns it with its folder set."""
        project_id = "p" + secrets.token_hex(12)
        folder = self.folder(project_id)
        folder.mkdir(parents=True)
        atomic_write_text(folder / OWNER_FILE, json.dumps({"owner": owner, "created": time.time()}))
        return project.save(folder)

    def load(self, project_id: str, owner: str) -> Project:
        """The project `project_id`, if `owner` owns it."""
        return Project.load(self._owned_folder(project_id, owner))

    def save(self, project: Project, owner: str) -> Project:
        """Write `project` back to its own folder (which `owner` must own)."""
        if project.folder is None:
            raise StudioError("this project has no folder; create it with `Workspace.create` first")
        self._owned_folder(project_id_of(project), owner)
        return project.save()

    def list(self, owner: str) -> list[ProjectInfo]:
        """`owner`'s projects, the most recently changed first."""
        rows = []
        for folder in self.projects.iterdir():
            if not PROJECT_ID_RE.match(folder.name) or folder.is_symlink() or self.owner_of(folder.name) != owner:
                continue
            try:
                project = Project.load(folder)
                updated = (folder / "project.json").stat().st_mtime
            except (StudioError, OSError):
                continue  # a half-deleted or damaged folder is not listed
            rows.append(ProjectInfo(folder.name, project.title, len(project.scenes), updated, folder))
        return sorted(rows, key=lambda r: r.updated, reverse=True)

    def duplicate(self, project_id: str, owner: str) -> Project:
        """A copy of the project (assets hard-linked where the file system allows) under a new id."""
        source = self._owned_folder(project_id, owner)
        original = Project.load(source)
        copy = self.create(replace(original, title=f"{original.title} (copy)", scenes=()), owner)
        for sub in ("assets", "uploads", "renders"):
            if (source / sub).is_dir():
                shutil.copytree(source / sub, copy.folder / sub, copy_function=link_or_copy, dirs_exist_ok=True,
                                symlinks=False, ignore=shutil.ignore_patterns(".*"))
        if (source / SETTINGS_FILE).is_file():
            shutil.copyfile(source / SETTINGS_FILE, copy.folder / SETTINGS_FILE)
        data = original.to_dict(source)
        data["title"] = copy.title
        return Project.from_dict(data, base=copy.folder).save()

    def delete(self, project_id: str, owner: str) -> None:
        """Remove the project's folder and everything in it."""
        folder = self._owned_folder(project_id, owner)
        trash = folder.with_name(f".deleting-{folder.name}-{secrets.token_hex(4)}")
        os.replace(folder, trash)  # one atomic step out of the listing, then the slow part
        shutil.rmtree(trash, ignore_errors=True)

    # -- render jobs seeded from a project -------------------------------------------------------------------------
    def render_jobs(self, project: Project) -> list[str]:
        """The ids of render jobs seeded from `project` whose assets it has not taken back yet (`note_render_job`)."""
        try:
            ids = json.loads((Path(project.folder) / JOBS_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return []
        return [i for i in ids if isinstance(i, str) and re.fullmatch(r"[0-9a-f]{32}", i)] if isinstance(ids, list) else []

    def set_render_jobs(self, project: Project, job_ids: list[str]) -> None:
        """Replace the list of render jobs to take assets back from (the newest `MAX_JOBS_KEPT`)."""
        atomic_write_text(Path(project.folder) / JOBS_FILE, json.dumps(list(job_ids)[-MAX_JOBS_KEPT:]))

    def note_render_job(self, project: Project, job_id: str) -> None:
        """Remember that job `job_id` renders `project`: its segments are taken back into the project later."""
        self.set_render_jobs(project, [*[i for i in self.render_jobs(project) if i != job_id], job_id])

    # -- the panels' choices and the last render, kept with the project ----------------------------------------------
    @staticmethod
    def settings(project: Project) -> dict:
        """The panels' choices kept with `project` (``preset``, ``narrator``, ``painter``; those never set are left
        out). A damaged file reads as no choices."""
        data = _read_json(Path(project.folder) / SETTINGS_FILE)
        return {k: v for k, v in data.items() if k in SETTINGS and isinstance(v, SETTINGS[k])} if isinstance(data, dict) else {}

    def save_settings(self, project: Project, **values: Any) -> dict:
        """Keep choices with `project` (unknown names refused; None leaves a choice as it was); returns them all."""
        unknown = set(values) - set(SETTINGS)
        if unknown:
            raise StudioError(f"no setting {', '.join(sorted(unknown))}; the settings are {', '.join(SETTINGS)}")
        kept = {**Workspace.settings(project), **{k: v for k, v in values.items() if v is not None}}
        atomic_write_text(Path(project.folder) / SETTINGS_FILE, json.dumps(kept))
        return kept

    def keep_render(self, project: Project, video: Path | str, facts: dict) -> Path:
        """Keep a finished render with the project (hard-linked: no copy of the video), so it stays the project's
        last good video until a newer one is done, even after the job is removed; returns its path."""
        final = Path(project.folder) / LAST_VIDEO
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.with_name(f".last-{secrets.token_hex(4)}.mp4")
        link_or_copy(str(video), str(staging))
        os.replace(staging, final)
        atomic_write_text(Path(project.folder) / LAST_FILE, json.dumps(facts))
        return final

    @staticmethod
    def last_render(project: Project) -> tuple[Path, dict] | None:
        """The project's last good render (`keep_render`) and its facts, or None."""
        video = Path(project.folder) / LAST_VIDEO
        facts = _read_json(Path(project.folder) / LAST_FILE)
        if not video.is_file() or video.is_symlink() or not isinstance(facts, dict):
            return None
        return video, facts

    @staticmethod
    def upload_label(project: Project, name: str | None) -> str | None:
        """How the panels name an upload: the file's name on the user's machine when known, else the server's."""
        if not name:
            return None
        names = _read_json(Path(project.folder) / NAMES_FILE)
        label = names.get(Path(str(name)).name) if isinstance(names, dict) else None
        return label if isinstance(label, str) and label.strip() else Path(str(name)).name

    # -- uploads -------------------------------------------------------------------------------------------------
    def add_upload(self, project: Project, source: Path | str, kind: str, store: Any, owner: str) -> str:
        """Check an uploaded file by its content and keep it in the project under a name the server made.

        The check is the job runner's (`studio.server.uploads.UploadStore`: format whitelist, no playlists, pixel and length
        limits, a full decode), so the app and the HTTP API accept exactly the same files.

        Args:
            project: The project it belongs to (saved).
            source: The uploaded file (Gradio's temporary copy).
            kind: ``media`` (an image or video for a scene), ``music`` (audio), ``watermark`` (an image),
                ``caption_font`` (a TrueType or OpenType font) or ``recording`` (a scene's own narration: audio).
            store: The runner's upload store.
            owner: Who uploads it.

        Returns:
            Its path relative to the project folder: ``uploads/<upload id><ext>``.
        """
        if kind not in UPLOAD_KINDS:
            raise StudioError(f"`kind` must be one of {', '.join(UPLOAD_KINDS)}, got {kind!r}")
        source = Path(source)
        if not source.is_file():
            raise StudioError(f"the uploaded file {source.name!r} is missing; upload it again")
        with open(source, "rb") as handle:
            upload = store.save(owner, handle, filename=source.name)
        wanted = UPLOAD_KINDS[kind]
        if upload.kind not in wanted or (kind in SOUND_KINDS and not upload.info.get("has_audio")):
            store.delete(owner, upload.id)
            what = " or ".join(f"{_article(w)} {w} file" for w in wanted) + (" with sound" if kind in SOUND_KINDS else "")
            raise StudioError(f"{upload.name!r} is {_article(upload.kind)} {upload.kind} file; the {kind.replace('_', ' ')}"
                              f" must be {what}")
        name = f"uploads/{upload.id}{Path(upload.file).suffix}"
        target = project.folder / name
        target.parent.mkdir(exist_ok=True)
        link_or_copy(str(store.path(upload)), str(target))
        names = _read_json(project.folder / NAMES_FILE)
        names = names if isinstance(names, dict) else {}
        # Display only: a name without folders or control characters, never used as a path.
        names[Path(name).name] = "".join(c for c in re.split(r"[\\/]", str(upload.name or ""))[-1] if c.isprintable())[:120]
        atomic_write_text(project.folder / NAMES_FILE, json.dumps(names))
        return name

    def upload_path(self, project: Project, name: str) -> Path:
        """The file an ``uploads/...`` name stands for, checked to be one the server made in this project."""
        if not isinstance(name, str) or not UPLOAD_RE.match(name):
            raise StudioError(f"{name!r} is not a file uploaded to this project; upload the file in the studio")
        path = project.folder / name
        if not path.is_file() or path.is_symlink():
            raise StudioError(f"the uploaded file {name!r} is gone from this project; upload it again")
        return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def project_id_of(project: Project) -> str:
    """The id of a project that lives in a workspace (its folder's name)."""
    if project.folder is None or not PROJECT_ID_RE.match(Path(project.folder).name):
        raise StudioError("this project does not live in the studio's workspace")
    return Path(project.folder).name

