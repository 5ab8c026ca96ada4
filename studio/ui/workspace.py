"""Where the studio keeps each user's projects, and how a request reaches only its own.

The data folder (``STUDIO_DATA_DIR``, else ``/data/studio`` on a Hugging Face Space with persistent storage, else a
per-user folder) is shared with the job runner (``studio.db``, ``jobs/``, ``uploads/``: see `studio.server.journal`) and
holds the studio's own::

    projects/<project id>/      one Studio project folder (project.json, assets/, renders/, uploads/) + owner.json
                                (renders/jobs.json: the render jobs seeded from it whose assets it has not taken back)
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
MAX_JOBS_KEPT = 50
# What each use of an upload accepts, by the kind the content check finds.
UPLOAD_KINDS = {"media": ("image", "video"), "music": ("audio", "video"), "watermark": ("image",),
                "caption_font": ("font",)}


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

    # -- uploads -------------------------------------------------------------------------------------------------
    def add_upload(self, project: Project, source: Path | str, kind: str, store: Any, owner: str) -> str:
        """Check an uploaded file by its content and keep it in the project under a name the server made.

        The check is the job runner's (`studio.server.uploads.UploadStore`: format whitelist, no playlists, pixel and length
        limits, a full decode), so the app and the HTTP API accept exactly the same files.

        Args:
            project: The project it belongs to (saved).
            source: The uploaded file (Gradio's temporary copy).
            kind: ``media`` (an image or video for a scene), ``music`` (audio), ``watermark`` (an image) or
                ``caption_font`` (a TrueType or OpenType font).
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
        if upload.kind not in wanted or (kind == "music" and not upload.info.get("has_audio")):
            store.delete(owner, upload.id)
            what = " or ".join(f"{_article(w)} {w} file" for w in wanted) + (" with sound" if kind == "music" else "")
            raise StudioError(f"{upload.name!r} is {_article(upload.kind)} {upload.kind} file; the {kind.replace('_', ' ')}"
                              f" must be {what}")
        name = f"uploads/{upload.id}{Path(upload.file).suffix}"
        target = project.folder / name
        target.parent.mkdir(exist_ok=True)
        link_or_copy(str(store.path(upload)), str(target))
        return name

    def upload_path(self, project: Project, name: str) -> Path:
        """The file an ``uploads/...`` name stands for, checked to be one the server made in this project."""
        if not isinstance(name, str) or not UPLOAD_RE.match(name):
            raise StudioError(f"{name!r} is not a file uploaded to this project; upload the file in the studio")
        path = project.folder / name
        if not path.is_file() or path.is_symlink():
            raise StudioError(f"the uploaded file {name!r} is gone from this project; upload it again")
        return path


def project_id_of(project: Project) -> str:
    """The id of a project that lives in a workspace (its folder's name)."""
    if project.folder is None or not PROJECT_ID_RE.match(Path(project.folder).name):
        raise StudioError("this project does not live in the studio's workspace")
    return Path(project.folder).name

