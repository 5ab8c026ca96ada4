"""Renders from the studio are jobs of the shared `studio.jobs.JobRunner` (the same queue, limits, journal, cancel
and resume as the HTTP API's jobs).

A job normally writes its own project from its request; a render from the studio must instead use exactly what the
user heard and saw. So the job's folder is *seeded* with the studio's project before any worker may take the job:
``project.json`` plus the project's assets and uploads, hard-linked (copied where the file system cannot link). The
runner then loads that project (as it does when it resumes a job) and every narration and visual the panels made is
found in its asset cache; only scenes never narrated or painted are made by the job.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import StudioError
from ..project import Project


def job_request(project: Project, *, preset: str, narrator: str = "auto", painter: str = "auto") -> dict:
    """The job request for `project`: its storyboard and settings (uploads travel in the seeded folder, not here)."""
    scenes = []
    for scene in project.scenes:
        item = {"id": scene.id, "narration": scene.narration, "visual_prompt": scene.visual_prompt,
                "seed": scene.seed}
        if scene.duration_s is not None:
            item["duration_s"] = scene.duration_s
        if scene.transition:
            item["transition"] = scene.transition
        scenes.append(item)
    request: dict[str, Any] = {
        # Title and style are shown in job lists; the job renders the seeded project's own (which may be longer).
        "storyboard": scenes, "preset": preset, "aspect": project.aspect, "title": _cap(project.title),
        "style": _cap(project.style), "language": project.language, "seed": project.seed, "captions": project.captions,
        "caption_style": project.caption_style, "music_volume": project.music_volume,
        "providers": {"narrator": narrator or "auto", "painter": painter or "auto"},
    }
    # The voice, like every other project setting, travels in the seeded project.json that the job renders.
    return request


def seed(project: Project, folder: Path) -> Project:
    """Put `project` into a job's (empty) folder: assets and uploads hard-linked, ``project.json`` written last.

    Scene media (``uploads/...`` names, relative to the studio's project folder) become absolute paths of the linked
    copies, because a job resolves relative media names against the HTTP API's upload folder.
    """
    if project.folder is None:
        raise StudioError("the project has no folder to render from")
    source = Path(project.folder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("assets", "uploads"):
        if (source / sub).is_dir():
            shutil.copytree(source / sub, folder / sub, copy_function=_link_or_copy, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".*"))
    data = project.to_dict(source)
    for scene in data["scenes"]:
        if scene.get("media"):
            scene["media"] = str((folder / scene["media"]).resolve())
    return Project.from_dict(data, base=folder).save(folder)


def submit(runner: Any, project: Project, owner: str, *, preset: str, narrator: str = "auto",
           painter: str = "auto") -> Any:
    """Queue a render of `project` for `owner`; returns the `studio.jobs.Job`.

    Raises:
        StudioError: the runner refuses the request (a limit, a full queue: the message says which).
    """
    request = job_request(project, preset=preset, narrator=narrator, painter=painter)
    # The job's folder is seeded before any worker can take the job.
    return runner.submit(request, owner=owner, prepare=lambda folder: seed(project, folder))


def status(job: Any) -> dict:
    """What the progress bar shows of a job: state, percent, step, scene, ETA, error."""
    data = job.to_dict()
    scene = data.get("scene")
    return {
        "id": data["id"], "state": data["state"], "percent": 100.0 if data["state"] == "done" else data["percent"],
        "step": data.get("step"), "scene": f"scene {scene['index']}/{scene['total']}" if scene and scene.get("total") else None,
        "eta_s": data.get("eta_s"), "error": (data.get("error") or {}).get("message"),
        "message": data.get("message"), "video": data.get("video"), "title": data.get("title"),
        "preset": data.get("preset"), "created_at": data.get("created_at"),
    }


def _cap(text: str, limit: int = 200) -> str:
    """`text` within the request limit for titles and styles (`studio.jobs.Limits.max_text_chars`)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
