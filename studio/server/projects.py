"""Renders of a saved project (the studio app's Render): the job renders the project exactly as the user left it.

`JobRunner.submit_project` checks the project's settings with the one request schema (a storyboard request made from
the project: its scenes, preset, aspect, providers) and the project's own limits, then puts the project into the
job's folder before any worker may take the job: ``project.json`` plus its assets and uploads, hard-linked (copied
where the file system cannot link). The worker then loads that project (as it does when it resumes a job), so every
narration and visual the panels made is found in its asset cache; only scenes never narrated or painted are made.
"""

import shutil
from pathlib import Path
from typing import Any

from ..assets import link_or_copy
from ..errors import StudioError
from ..project import Project


def project_request(project: Project, *, preset: str, narrator: str = "auto", painter: str = "auto",
                    max_text_chars: int = 200, max_scene_s: float = 120.0) -> dict:
    """The job request that stands for `project` in the journal (and is checked by the request schema); the job
    renders the seeded project itself, with every setting it holds (voice, uploads, full title)."""
    scenes = []
    for scene in project.scenes:
        item = {"id": scene.id, "narration": scene.narration, "visual_prompt": scene.visual_prompt,
                "seed": scene.seed}
        if scene.duration_s is not None:
            item["duration_s"] = scene.duration_s
        elif scene.recording and not scene.narration.strip():
            # A recording without text: the journal's copy stands for its length (the seeded project keeps the
            # recording itself; its upload id is not named, so a render never depends on the upload's expiry).
            item["duration_s"] = round(min(max(scene.audio_duration_s or 1.0, 0.2), max_scene_s), 3)
        if scene.transition:
            item["transition"] = scene.transition
        scenes.append(item)
    return {
        "storyboard": scenes, "preset": preset, "aspect": project.aspect, "title": _cap(project.title, max_text_chars),
        "style": _cap(project.style, max_text_chars), "language": project.language, "seed": project.seed,
        "captions": project.captions, "caption_style": project.caption_style, "music_volume": project.music_volume,
        "providers": {"narrator": narrator or "auto", "painter": painter or "auto"},
    }


def seed_folder(project: Project, folder: Path) -> Project:
    """Put `project` into a job's (empty) folder: assets and uploads hard-linked, ``project.json`` written last.

    Scene media and recordings (``uploads/...`` names, relative to the project's folder) become absolute paths of the linked copies,
    because a job resolves relative media names against the HTTP API's upload folder.
    """
    if project.folder is None:
        raise StudioError("the project has no folder to render from")
    source = Path(project.folder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("assets", "uploads"):
        if (source / sub).is_dir():
            shutil.copytree(source / sub, folder / sub, copy_function=link_or_copy, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".*"))
    data = project.to_dict(source)
    for scene in data["scenes"]:
        for key in ("media", "recording"):  # a scene's own picture and its own voice
            if scene.get(key):
                scene[key] = str((folder / scene[key]).resolve())
    return Project.from_dict(data, base=folder).save(folder)


def _cap(text: str, limit: int) -> str:
    """`text` within the request limit for titles and styles (the journal's copy; the project keeps the whole)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"



def submit_project(runner: Any, project: Project, *, owner: str, preset: str = "draft", narrator: str = "auto",
                   painter: str = "auto", idempotency_key: str | None = None) -> Any:
    """Queue a render of `project` for `owner` on `runner` (see `JobRunner.submit_project`)."""
    from .requests import check_project_limits

    if project.folder is None:
        raise StudioError("the project has no folder to render from; save it first")
    request = project_request(project, preset=preset, narrator=narrator, painter=painter,
                              max_text_chars=runner.limits.max_text_chars, max_scene_s=runner.limits.max_scene_s)
    if preset in runner.presets:
        from ..presets import load_preset

        check_project_limits(project, runner.limits, load_preset(runner.presets[preset]))
    return runner.submit(request, owner=owner, idempotency_key=idempotency_key,
                         prepare=lambda folder: seed_folder(project, folder))
