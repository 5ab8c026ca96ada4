"""The workers: claim the next job fairly, run it through the pipeline, journal what happens (the worker half of
`studio.server.runner.JobRunner`)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import Cancelled, StudioError
from ..progress import CancelToken, Progress
from .journal import DiskFull, RequestError, ServiceError, disk_full_message, is_disk_full
from .models import OUTPUT_NAME, Job
from .requests import JobRequest, check_project_limits, estimate_render_bytes, parse_request
from .retention import sweep_temp

log = logging.getLogger("studio.jobs")
_PROGRESS_EVENT_S = 0.5  # at most two progress events a second (state, scene and step events are never skipped)
_PROGRESS_ROW_S = 0.2


@dataclass
class _Run:
    """What a worker knows about the job it runs (written to the journal as it changes)."""

    job: Job
    token: CancelToken
    started: float = field(default_factory=time.perf_counter)
    step: str | None = None
    scene_index: int | None = None
    scene_total: int | None = None
    steps: list = field(default_factory=list)
    scenes: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    last_row: float = 0.0
    last_event: float = 0.0
    last_event_percent: float = -100.0


def _keep_scene_ids(project: Any, earlier: Job, request: JobRequest) -> Any:
    """`project` with the earlier job's scene ids on the scenes whose narration it has unchanged (a scene's automatic
    motion and transition follow its id), where the request gave no ids of its own: so an edit of one scene leaves
    the others' video segments as they were."""
    from ..project import PROJECT_FILE, Project

    given = {s.id for s in request.storyboard or () if s.id is not None}
    try:
        before = Project.load(earlier.project_dir) if (earlier.project_dir / PROJECT_FILE).is_file() else None
    except StudioError:
        before = None
    if before is None:
        return project
    free = [s for s in before.scenes]
    taken = {s.id for s in project.scenes} | given
    scenes = []
    for scene in project.scenes:
        match = next((s for s in free if s.narration == scene.narration and s.id not in taken), None)
        if scene.id not in given and match is not None:
            free.remove(match)
            taken.add(match.id)
            scene = replace(scene, id=match.id)
        scenes.append(scene)
    return project.with_scenes(scenes)


class Worker:
    """`JobRunner`'s workers (a mixin: it uses the runner's journal, queue condition and executor)."""

    def _work(self, resource: str) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    try:
                        claimed = self._claim(resource)
                    except ServiceError as exc:  # a damaged or busy journal: keep the worker, try again later
                        log.error("worker %s cannot take a job: %s", threading.current_thread().name, exc)
                        self._cond.wait(5.0)
                        continue
                    if claimed is not None:
                        break
                    self._cond.wait(1.0)
            job, token = claimed
            try:
                self._execute(job, token)
            except Exception:  # never let a worker die: the job is marked failed inside; this is a last resort
                log.exception("worker %s: unexpected error after job %s", threading.current_thread().name, job.id)
            finally:
                with self._cond:
                    self._tokens.pop(job.id, None)
                    self._stopping.discard(job.id)
                    self._cond.notify_all()

    def _claim(self, resource: str) -> tuple[Job, CancelToken] | None:
        """Take the next job of `resource` (called with the runner's lock held): interrupted jobs first, then round
        robin over users (the one served longest ago goes next), each user's jobs in order."""
        rows = self.journal.query("SELECT id, owner, state, created_at FROM jobs WHERE state IN ('queued', 'interrupted')"
                                  " AND resource = ? ORDER BY created_at, id", (resource,))
        if not rows:
            return None
        interrupted = [r for r in rows if r["state"] == "interrupted"]
        if interrupted:
            chosen = interrupted[0]
        else:
            first: dict[str, Any] = {}
            for row in rows:
                first.setdefault(row["owner"], row)
            owner = min(first, key=lambda o: (self._served.get(o, -1), first[o]["created_at"]))
            chosen = first[owner]
        now = time.time()
        with self.journal.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, ?), run_started_at = ?,"
                " attempts = attempts + 1, percent = 0, step = NULL, message = NULL, scene_index = NULL,"
                " scene_total = NULL, updated_at = ? WHERE id = ? AND state IN ('queued', 'interrupted')",
                (now, now, now, chosen["id"])).rowcount
            if not changed:
                return None
            attempts = db.execute("SELECT attempts FROM jobs WHERE id = ?", (chosen["id"],)).fetchone()[0]
            self.journal.add_event(db, chosen["id"], "running", {"state": "running", "attempt": attempts,
                                                                 "resumed": chosen["state"] == "interrupted"}, now)
        self._serial += 1
        self._served[chosen["owner"]] = self._serial
        token = CancelToken()
        self._tokens[chosen["id"]] = token
        return self.get(chosen["id"]), token

    def _execute(self, job: Job, token: CancelToken) -> None:
        """Run one claimed job to its end, journaling as it goes."""
        from ..pipeline import make_video

        run = _Run(job=job, token=token)
        run.timings = dict(job.timings)
        run.timings["queued_s"] = round((job.started_at or job.created_at) - job.created_at, 3)
        run.scenes = dict(job.scenes)
        need = None
        try:
            # 1. Room on the disk (it may have filled since the job was submitted).
            request = parse_request(job.request, limits=self.limits, presets=self.presets)
            from ..presets import load_preset

            preset = load_preset(self.presets[request.preset])
            need = estimate_render_bytes(request, preset)
            self._check_space(request, preset, then="submit the job again")

            # 2. The project: the saved one when resuming, else the storyboard written now.
            project = self._project(run, request, preset)

            # 3. Narration, visuals, composition, scene by scene through the executor.
            output = job.project_dir / "renders" / OUTPUT_NAME
            summary = make_video(
                project, preset=preset, output=output, executor=self.executor, narrator=request.narrator,
                painter=request.painter, media_root=self.uploads.folder(job.owner), segments=self.segments,
                on_update=lambda progress: self._progress(run, progress),
                on_event=lambda k, d: self._event(run, k, d), cancel=token)
        except Cancelled:
            self._finish(run, self._stopped_as(job))
        except Exception as exc:
            if token.cancelled and not isinstance(exc, ServiceError):
                self._finish(run, self._stopped_as(job))
            elif is_disk_full(exc):
                # The files it made stay (nothing made is thrown away for want of room); temporary ones go.
                error = str(exc) if isinstance(exc, DiskFull) else disk_full_message(self._free(), need,
                                                                                     then="submit the job again")
                self._finish(run, "failed", error=error, detail=traceback.format_exc(), keep_files=True)
            elif isinstance(exc, StudioError):
                self._finish(run, "failed", error=str(exc), detail=traceback.format_exc())
            else:
                log.exception("job %s failed", job.id)
                self._finish(run, "failed", error=f"the render failed with an internal error ({type(exc).__name__}); "
                             f"the server log has the details under job {job.id}", detail=traceback.format_exc())
        else:
            result = {"duration_s": round(summary.duration_s, 3), "size_bytes": summary.size_bytes,
                      "width": summary.width, "height": summary.height, "fps": summary.fps,
                      "encoder": summary.encoder, "compose": summary.compose, "made": summary.made,
                      "reused": summary.reused,
                      "notes": list(summary.project.notes)}
            self._finish(run, "done", output=summary.output, result=result)

    def _stopped_as(self, job: Job) -> str:
        """How a job whose token was cancelled ends: ``canceled`` when its owner asked (even if the server is also
        stopping), ``interrupted`` when only the server's stop cut it off (it resumes at the next start)."""
        rows = self.journal.query("SELECT cancel_requested FROM jobs WHERE id = ?", (job.id,))
        if rows and rows[0]["cancel_requested"]:
            return "canceled"
        return "interrupted" if job.id in self._stopping else "canceled"

    def _project(self, run: _Run, request: JobRequest, preset: Any):
        """The job's project: loaded from its folder when a storyboard was already saved there, else written."""
        from ..project import PROJECT_FILE, Project
        from ..storyboard import write_storyboard

        folder = run.job.project_dir
        if (folder / PROJECT_FILE).is_file():
            project = Project.load(folder)
            self._check_project(project, preset)
            return project
        if request.project is not None:  # reuse the earlier job's narrations, pictures and segments where they match
            from ..compose.segments import adopt_assets

            earlier = self.get(request.project, run.job.owner)
            taken = adopt_assets(earlier.project_dir / "assets", folder / "assets")
            log.info("job %s starts from %d asset(s) of job %s", run.job.id, taken, earlier.id)
        started = time.perf_counter()
        run.step = "storyboard"
        self._progress(run, Progress(0.0, "writing the storyboard", "storyboard", 0.0))
        owner = run.job.owner
        if request.storyboard is not None:
            records = []
            for scene in request.storyboard:
                record = {k: v for k, v in asdict(scene).items() if v is not None}
                if scene.media is not None:
                    record["media"] = self.uploads.get(owner, scene.media).file
                if scene.recording is not None:
                    record["recording"] = self.uploads.get(owner, scene.recording).file
                records.append(record)
            project = Project.from_storyboard(records, title=request.title or "Untitled", aspect=request.aspect,
                                              style=request.style, language=request.language, voice=request.voice,
                                              seed=request.seed)
        else:
            text = request.script if request.script is not None else request.brief
            project = write_storyboard(text, mode=request.source, writer=request.writer, title=request.title,
                                       aspect=request.aspect, style=request.style, language=request.language,
                                       voice=request.voice, seed=request.seed, preset=preset, cancel=run.token)
        music = self.uploads.path(self.uploads.get(owner, request.music)) if request.music else None
        watermark = self.uploads.path(self.uploads.get(owner, request.watermark)) if request.watermark else None
        font = self.uploads.path(self.uploads.get(owner, request.caption_font)) if request.caption_font else None
        project = replace(project, captions=request.captions, caption_style=request.caption_style, music=music,
                          music_volume=request.music_volume, watermark=watermark, caption_font=font)
        if request.project is not None:
            project = _keep_scene_ids(project, self.get(request.project, owner), request)
        self._check_project(project, preset)
        run.token.check()
        project = project.save(folder)
        seconds = time.perf_counter() - started
        self._event(run, "step", {"step": "storyboard", "seconds": round(seconds, 3), "made": 0, "reused": 0})
        return project

    def _check_project(self, project: Any, preset: Any) -> None:
        """Limits that only a written storyboard shows (a script's or a brief's scene count and length): the same
        check as every face's (`check_project_limits`), the fault named as the request's source."""
        try:
            check_project_limits(project, self.limits, preset)
        except RequestError as exc:
            raise RequestError(str(exc), field="script" if exc.field == "scenes" else exc.field) from None

    # -- journaling a run ------------------------------------------------------------------------------------------
    def _progress(self, run: _Run, progress: Progress) -> None:
        """Journal a `studio.progress.Progress` (its fields: step, fraction, message; never parsed from text)."""
        now = time.monotonic()
        percent = round(100.0 * min(max(progress.fraction, 0.0), 1.0), 2)
        run.step = progress.step or run.step
        message = progress.message
        write_row = now - run.last_row >= _PROGRESS_ROW_S or percent >= 100
        write_event = now - run.last_event >= _PROGRESS_EVENT_S or percent - run.last_event_percent >= 5
        if not (write_row or write_event):
            return
        wall = time.time()
        with self.journal.transaction() as db:
            db.execute("UPDATE jobs SET percent = ?, step = ?, message = ?, scene_index = ?, scene_total = ?,"
                       " updated_at = ? WHERE id = ?",
                       (percent, run.step, message[:300], run.scene_index, run.scene_total, wall, run.job.id))
            if write_event:
                self.journal.add_event(db, run.job.id, "progress", {"percent": percent, "step": run.step,
                                                                    "message": message[:300],
                                                                    "scene": run.scene_index, "scenes": run.scene_total},
                                       wall)
                run.last_event, run.last_event_percent = now, percent
        run.last_row = now
        if write_event:
            self._wake()

    def _event(self, run: _Run, kind: str, data: dict) -> None:
        wall = time.time()
        if kind == "step_started":  # not an event of its own, but the job's row shows the new step at once
            run.step, run.scene_index, run.scene_total = data["step"], 0, data.get("total")
            self.journal.execute("UPDATE jobs SET step = ?, scene_index = 0, scene_total = ?, updated_at = ? WHERE id = ?",
                                 (run.step, run.scene_total, wall, run.job.id))
            return
        if kind == "scene":
            run.scene_index = (run.scene_index or 0) + 1
            run.scenes.setdefault(data["scene_id"], {})[data["step"]] = "reused" if data["reused"] else "made"
        elif kind == "segment":
            run.scene_index, run.scene_total = (run.scene_index or 0) + 1, data["total"]
            for scene_id in data.get("scene_ids", ()):
                run.scenes.setdefault(scene_id, {})["compose"] = "reused" if data["reused"] else "made"
        elif kind == "step":
            run.steps = [s for s in run.steps if s["step"] != data["step"]] + [dict(data)]
            run.timings[f"{data['step']}_s"] = data["seconds"]
        with self.journal.transaction() as db:
            db.execute("UPDATE jobs SET scenes = ?, steps = ?, timings = ?, scene_index = ?, scene_total = ?,"
                       " updated_at = ? WHERE id = ?",
                       (json.dumps(run.scenes), json.dumps(run.steps), json.dumps(run.timings), run.scene_index,
                        run.scene_total, wall, run.job.id))
            self.journal.add_event(db, run.job.id, kind, data, wall)
        self._wake()

    def _wake(self) -> None:
        """Wake whoever waits for events or state changes."""
        with self._cond:
            self._cond.notify_all()

    def _finish(self, run: _Run, state: str, *, error: str | None = None, detail: str | None = None,
                output: Path | None = None, result: dict | None = None, keep_files: bool = False) -> None:
        job = run.job
        now = time.time()
        run.timings["run_s"] = round(time.perf_counter() - run.started, 3)
        if state == "failed":
            log.warning("job %s failed: %s", job.id, error)
            # the user's message names files inside their project, not where the server keeps them
            error = (error or "").replace(f"{job.project_dir}{os.sep}", "").replace(str(self.data_dir), "<data folder>")
            if detail:
                log.info("job %s details:\n%s", job.id, detail)
        # Files first, the journal last: a crash in between leaves a job that is still `running`, resumed next time.
        if state in ("failed", "canceled") and not keep_files:
            self._discard_files(job)
        else:
            sweep_temp(job.project_dir)
        data: dict[str, Any] = {"state": state}
        if error:
            data["error"] = error
        if result:
            data["video"] = result
        with self._cond:
            with self.journal.transaction() as db:
                if state == "interrupted":
                    db.execute("UPDATE jobs SET state = 'interrupted', timings = ?, updated_at = ? WHERE id = ?",
                               (json.dumps(run.timings), now, job.id))
                else:
                    db.execute(
                        "UPDATE jobs SET state = ?, error = ?, error_detail = ?, output = ?, result = ?, timings = ?,"
                        " percent = CASE WHEN ? = 'done' THEN 100 ELSE percent END, finished_at = ?, updated_at = ?"
                        " WHERE id = ?",
                        (state, error, detail,
                         output.relative_to(self.data_dir).as_posix() if output is not None else None,
                         json.dumps(result) if result else None, json.dumps(run.timings), state, now, now, job.id))
                self.journal.add_event(db, job.id, state, data, now)
            self._save_record(job.id)  # before anyone waiting for the end wakes
            self._cond.notify_all()
