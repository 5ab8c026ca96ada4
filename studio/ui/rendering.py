"""Renders from the studio are jobs of the shared `studio.server.JobRunner` (the same queue, limits, journal, cancel
and resume as the HTTP API's jobs): the app hands the project to `JobRunner.submit_project`, which renders exactly
what the user heard and saw (see `studio.server.projects`)."""

from __future__ import annotations

from typing import Any

from ..project import Project


def submit(runner: Any, project: Project, owner: str, *, preset: str, narrator: str = "auto",
           painter: str = "auto") -> Any:
    """Queue a render of `project` for `owner`; returns the `studio.server.Job`.

    Raises:
        StudioError: the runner refuses it (a limit, a full queue: the message says which).
    """
    return runner.submit_project(project, owner=owner, preset=preset, narrator=narrator, painter=painter)


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
