"""Jobs and their events as the journal holds them, and each job's record (``job.json``) in its folder."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..assets import atomic_write_text
from .journal import safe_path

STATES = ("queued", "running", "done", "failed", "canceled", "interrupted")
TERMINAL = frozenset({"done", "failed", "canceled"})
WAITING = ("queued", "interrupted")
JOBS_DIR = "jobs"
JOB_FILE = "job.json"  # a job's record in its folder: what rebuilds its journal row if the journal is lost
OUTPUT_NAME = "video.mp4"


# -- jobs and events -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One entry of a job's event stream. `seq` counts from 1 per job (the SSE event id)."""

    job_id: str
    seq: int
    time: float
    kind: str
    data: dict

    def to_dict(self) -> dict:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, **self.data}


@dataclass(frozen=True)
class Job:
    """A job as the journal holds it.

    Attributes:
        id: 32 hex digits.
        owner: The user who submitted it.
        state: One of `STATES`.
        resource: ``gpu`` or ``cpu`` (which slots it runs in).
        request: The checked request (`JobRequest.to_dict`).
        preset: The preset's name.
        percent: 0-100.
        step: The current step (``storyboard``, ``narrate``, ``illustrate``, ``compose``).
        message: The last progress message.
        scene_index, scene_total: Scenes done in the current step, and how many it has.
        steps: Steps done: name, seconds, assets made and reused.
        scenes: Per scene id, what each step did (``made`` or ``reused``).
        timings: Seconds queued, per step, and in total.
        error: What went wrong, for the user (``failed`` jobs).
        error_detail: Details for the log (a traceback); never shown to other users.
        attempts: How many times it started (more than one after an interruption).
        crashes: How many of those runs ended in a crash of the server (not a graceful stop).
        cancel_requested: A cancel was asked for and is being carried out.
        expired: Its files were removed by the retention policy.
        output: The finished MP4 (``done`` jobs), else None.
        result: Facts of the finished video (duration_s, size_bytes, width, height, fps, encoder, notes).
        project_dir: The job's project folder.
    """

    id: str
    owner: str
    state: str
    resource: str
    request: dict
    preset: str
    created_at: float
    started_at: float | None
    run_started_at: float | None
    finished_at: float | None
    updated_at: float
    percent: float
    step: str | None
    message: str | None
    scene_index: int | None
    scene_total: int | None
    steps: list
    scenes: dict
    timings: dict
    error: str | None
    error_detail: str | None
    attempts: int
    crashes: int
    cancel_requested: bool
    expired: bool
    idempotency_key: str | None
    project_dir: Path
    output: Path | None
    result: dict | None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def eta_s(self) -> float | None:
        """Seconds left, estimated from this run's progress so far (None until there is enough to go on)."""
        if self.state != "running" or self.run_started_at is None or self.percent < 3:
            return None
        elapsed = max(0.0, time.time() - self.run_started_at)
        return round(elapsed * (100.0 - self.percent) / self.percent, 1)

    def to_dict(self) -> dict:
        """The job for its owner (the API's job resource); no file paths, no log details."""
        scene = ({"index": self.scene_index, "total": self.scene_total}
                 if self.scene_total is not None and self.state == "running" else None)
        return {
            "id": self.id, "state": self.state, "percent": round(self.percent, 1), "step": self.step,
            "message": self.message, "scene": scene, "eta_s": self.eta_s,
            "error": {"message": self.error} if self.error else None,
            "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "attempts": self.attempts, "cancel_requested": self.cancel_requested, "expired": self.expired,
            "preset": self.preset, "aspect": self.request.get("aspect"), "source": _source_of(self.request),
            "title": self.request.get("title"), "steps": self.steps, "scenes": self.scenes, "timings": self.timings,
            "video": dict(self.result) if self.result and self.state == "done" and not self.expired else None,
        }


def _source_of(request: dict) -> str:
    return next((k for k in ("script", "brief", "storyboard") if k in request), "script")


def _job_from_row(row: Any, data_dir: Path) -> Job:
    return Job(
        id=row["id"], owner=row["owner"], state=row["state"], resource=row["resource"],
        request=json.loads(row["request"]), preset=row["preset"], created_at=row["created_at"],
        started_at=row["started_at"], run_started_at=row["run_started_at"], finished_at=row["finished_at"],
        updated_at=row["updated_at"], percent=float(row["percent"]), step=row["step"], message=row["message"],
        scene_index=row["scene_index"], scene_total=row["scene_total"], steps=json.loads(row["steps"]),
        scenes=json.loads(row["scenes"]), timings=json.loads(row["timings"]), error=row["error"],
        error_detail=row["error_detail"], attempts=row["attempts"], crashes=row["crashes"],
        cancel_requested=bool(row["cancel_requested"]),
        expired=bool(row["expired"]), idempotency_key=row["idempotency_key"],
        project_dir=data_dir / row["project"], output=(data_dir / row["output"]) if row["output"] else None,
        result=json.loads(row["result"]) if row["result"] else None,
    )


def request_upload_ids(request: Mapping) -> set[str]:
    """The upload ids a request (its JSON form, `JobRequest.to_dict`) names."""
    ids = {request.get(k) for k in ("music", "watermark", "caption_font")}
    ids.update(s.get(k) for s in request.get("storyboard") or () if isinstance(s, Mapping) for k in ("media", "recording"))
    return {i for i in ids if isinstance(i, str)}


def _job_using_upload(db: Any, owner: str, upload_id: str) -> tuple[str, str] | None:
    """(id, state) of the owner's oldest waiting or running job that uses the upload, if any (inside a transaction)."""
    rows = db.execute("SELECT id, state, request FROM jobs WHERE owner = ? AND state IN ('queued', 'interrupted',"
                      " 'running') ORDER BY created_at", (owner,)).fetchall()
    for row in rows:
        if upload_id in request_upload_ids(json.loads(row["request"])):
            return row["id"], row["state"]
    return None


# The columns a job's record (`JOB_FILE`) holds; the JSON ones as JSON.
RECORD_COLUMNS = ("id", "owner", "state", "resource", "request_sha256", "idempotency_key", "preset", "output", "error",
                  "percent", "attempts", "crashes", "expired", "created_at", "started_at", "finished_at")
RECORD_JSON_COLUMNS = ("request", "result", "steps", "scenes", "timings")


def save_job_record(data_dir: Path, row: Any) -> None:
    """Write a job's record (`JOB_FILE`, atomically) into its folder from its journal row."""
    record: dict[str, Any] = {"format": 1, **{k: row[k] for k in RECORD_COLUMNS}}
    for key in RECORD_JSON_COLUMNS:
        record[key] = json.loads(row[key]) if row[key] else None
    folder = safe_path(data_dir, *row["project"].split("/"))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / JOB_FILE, json.dumps(record, ensure_ascii=True, indent=1))
