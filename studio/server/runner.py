"""Background jobs: every render is a job that survives closed tabs, cancels, restarts and crashes.

    runner = JobRunner("~/.local/share/studio")                 # or JobRunner() for the default data folder
    job = runner.submit({"script": "# Tea\\n\\nTea is a leaf.", "preset": "draft"}, owner="alice",
                        idempotency_key="tea-1")
    for event in runner.events(job.id, owner="alice"): print(event.kind, event.data)
    job = runner.wait(job.id, timeout_s=600)
    job.state, job.output                                       # "done", .../renders/video.mp4
    runner.close()

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``canceled``; a job that was running when the server
stopped (killed, crashed, or shut down) is ``interrupted`` and runs again first when the server starts, reusing every
asset it had made (the content-addressed cache: only unfinished scenes and segments are made again).

How a job runs: a worker thread of this process claims the next job (fairly: round robin over the users with waiting
jobs), writes its storyboard into the job's project folder in the data folder, then narrates, paints and composes it
scene by scene through an executor (`studio.executors`; local by default, or Ray). Everything it learns goes to the
journal (`studio.journal`, SQLite in WAL mode) as it happens: state, percent, step, scene, per-scene results, step
timings, events. A SIGKILL therefore loses at most the unit of work in flight: the journal says ``running``, which the
next start turns into ``interrupted``; files are written under temporary names and renamed when complete, so no
truncated asset or MP4 ever has a final name, and the temporary ones are swept away. Each job's folder also holds
its record (``job.json``, refreshed at each change of state): with the journal's backup it rebuilds a lost or
damaged journal (`studio.recovery`, ``studio serve --recover``).

A full disk loses nothing: a submission the disk clearly has no room for (`estimate_render_bytes`) raises `DiskFull`
(HTTP 507), the worker checks again before it starts, and a job that still runs out of room fails saying so, keeping
what it made.

Concurrency: ``gpu_slots`` jobs that use model providers on a GPU (default 1) and ``cpu_slots`` jobs that use only
offline providers (default 1) run at once; at most ``max_queued`` jobs wait (``max_queued_per_owner`` per user), and a
submission beyond that raises `QueueFull` at once (HTTP 429).

Cancel stops the work for real: the job's `CancelToken` kills ffmpeg and espeak-ng (each in its own process group, with
any children) at once, stops model loops at their next step, and the job ends ``canceled`` with its temporary files and
assets removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import StudioError
from ..progress import CancelToken
from .journal import (Conflict, DiskFull, Gone, Journal, NotFound, QueueFull, RequestError, check_id, check_owner,
                      default_data_dir, disk_full_message, free_bytes, is_disk_full, new_id, owner_key, safe_path)
from .models import (JOBS_DIR, STATES, WAITING, Event, Job, _job_from_row, _job_using_upload, save_job_record)
from .limits import Limits, estimate_render_bytes
from .requests import PROVIDER_KINDS, JobRequest, parse_request, tier_presets
from .retention import sweep_temp
from .retention import Housekeeping, Retention
from .uploads import UploadLimits, UploadStore
from .worker import Worker

log = logging.getLogger("studio.jobs")


def _gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def default_classify(request: JobRequest, preset: Any) -> str:
    """``gpu`` when a step would use a model provider and a GPU is here, else ``cpu``."""
    from .. import providers
    from ..executors import CPU_PROVIDERS

    if not _gpu_present():
        return "cpu"
    for key, kind in PROVIDER_KINDS.items():
        name = getattr(request, key)
        prefer = preset.providers.get(kind)
        if kind == "painter":
            prefer = [p for p in (prefer or providers.names("painter")) if p != "local"]
        try:
            chosen = providers.choose(kind, name, prefer=prefer).name
        except StudioError:
            continue
        if chosen not in CPU_PROVIDERS:
            return "gpu"
    return "cpu"


# -- the runner ------------------------------------------------------------------------------------------------------
# The modules the workers run, imported lazily elsewhere so `import studio` stays light.
STEP_MODULES = ("studio.pipeline", "studio.executors", "studio.storyboard", "studio.voice", "studio.visuals",
                "studio.compose", "studio.compose.segments")


def import_steps() -> None:
    """Import the step modules on this thread before any worker starts. Two workers importing them at once for their
    first jobs take Python's per-module import locks in opposite orders (one imports ``studio.compose.timeline`` while
    the other is inside ``studio.compose``, whose ``render`` -> ``audio`` imports ``timeline``); Python breaks that
    deadlock by handing one of them a partly initialised module, and its job fails with an ImportError (seen once in
    ``bench/jobs.py``)."""
    import importlib

    for name in STEP_MODULES:
        importlib.import_module(name)


class JobRunner(Worker, Housekeeping):
    """Runs render jobs from a journal in a data folder; the one object the API, the app and the CLI share.

    Args:
        data_dir: The data folder (default `default_data_dir()`). One runner per folder at a time (a lock enforces it).
        executor: Where scene-level work runs (`studio.executors`); default local. The runner closes an executor it
            was given when it closes.
        gpu_slots: Jobs using a GPU that run at once.
        cpu_slots: Jobs using only the CPU that run at once.
        max_queued: Most jobs waiting in all; more raise `QueueFull`.
        max_queued_per_owner: Most jobs one user may have waiting.
        limits: Request limits (`Limits`).
        upload_limits: Upload limits (`studio.uploads.UploadLimits`).
        retention: What to keep and for how long (`Retention`).
        presets: Extra preset files this server offers besides the tiers (by their ``name``).
        max_attempts: A job that was running when the server crashed or was killed this many times fails instead
            of starting again (a job that kills the server must not do so forever). Graceful stops (`close`, a
            restart) are not counted: the job resumes however often the server is restarted.
        classify: ``classify(request, preset) -> "gpu" | "cpu"``; default `default_classify`.
        segments: Compose segment by segment (cached, so a resumed job re-encodes only unfinished segments).
        backup_every_s: How often the journal is checked and backed up to ``studio.db.bak`` (also at `close`).
        start: Start the workers now (False: call `start()` later; submissions wait in the queue).
    """

    def __init__(self, data_dir: Path | str | None = None, *, executor: Any = None, gpu_slots: int = 1,
                 cpu_slots: int = 1, max_queued: int = 100, max_queued_per_owner: int = 20,
                 limits: Limits | None = None, upload_limits: UploadLimits | None = None,
                 retention: Retention | None = None, presets: Iterable[Path | str] = (), max_attempts: int = 3,
                 classify: Callable[[JobRequest, Any], str] | None = None, segments: bool = True,
                 backup_every_s: float = 600.0, start: bool = True) -> None:
        from ..executors import LocalExecutor
        from ..presets import load_preset

        # 1. Check the settings.
        for name, value, lo in (("gpu_slots", gpu_slots, 0), ("cpu_slots", cpu_slots, 1), ("max_queued", max_queued, 1),
                                ("max_queued_per_owner", max_queued_per_owner, 1), ("max_attempts", max_attempts, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise StudioError(f"`{name}` must be a whole number of at least {lo}, got {value!r}")
        self.limits = limits or Limits()
        self.retention = retention or Retention()
        self.gpu_slots, self.cpu_slots = gpu_slots, cpu_slots
        self.max_queued, self.max_queued_per_owner = max_queued, max_queued_per_owner
        self.max_attempts = max_attempts
        self.classify = classify or default_classify
        self.segments = segments
        if isinstance(backup_every_s, bool) or not isinstance(backup_every_s, (int, float)) or not backup_every_s > 0:
            raise StudioError(f"`backup_every_s` must be a number of seconds above 0, got {backup_every_s!r}")
        self.backup_every_s = float(backup_every_s)
        self.presets: dict[str, str] = tier_presets()
        for path in presets:
            preset = load_preset(Path(path))  # raises naming the file
            self.presets[preset.name] = str(Path(path).resolve())

        # 2. Open the journal (taking the folder's lock) and recover from a crash.
        self.journal = Journal(Path(data_dir) if data_dir is not None else default_data_dir())
        self.data_dir = self.journal.data_dir
        (self.data_dir / JOBS_DIR).mkdir(exist_ok=True)
        self.uploads = UploadStore(self.journal, upload_limits, used_by=_job_using_upload)
        self.executor = executor or LocalExecutor()
        self._cond = threading.Condition(threading.RLock())
        self._tokens: dict[str, CancelToken] = {}
        self._stopping: set[str] = set()
        self._served: dict[str, int] = {}
        self._serial = 0
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._janitor_wake = threading.Event()

        # 3. Nothing the folders hold is lost with the journal: an emptied journal comes back from its backup, and
        #    every job or upload folder whose record the journal lacks gets its row back (`studio.recovery`).
        from .recovery import rebuild, restore_if_emptied

        try:
            restored = restore_if_emptied(self.journal)
            self.rebuilt = rebuild(self.journal, self.uploads, restored=restored)
            if self.rebuilt.changed:
                log.warning("the journal did not know everything in %s: %s", self.data_dir,
                            "; ".join(self.rebuilt.lines()))
            self.recovered = self._recover()
            if self.rebuilt.changed:
                self._backup_quietly()
        except BaseException:
            self.journal.close()  # release the folder: the caller may try again
            raise

        if start:
            self.start()

    # -- life cycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads and the janitor (once)."""
        import_steps()
        with self._cond:
            if self._threads or self._closing:
                return
            for resource, count in (("gpu", self.gpu_slots), ("cpu", self.cpu_slots)):
                for i in range(count):
                    thread = threading.Thread(target=self._work, args=(resource,), name=f"studio-job-{resource}-{i}",
                                              daemon=True)
                    self._threads.append(thread)
            janitor = threading.Thread(target=self._janitor, name="studio-janitor", daemon=True)
            self._threads.append(janitor)
        for thread in self._threads:
            thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop: running jobs are stopped and left ``interrupted`` (they resume at the next start), workers end, the
        journal closes and the data folder is released."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._stopping.update(self._tokens)
            tokens = list(self._tokens.values())
            self._cond.notify_all()
        self._janitor_wake.set()
        for token in tokens:
            token.cancel()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        try:
            self._backup_quietly()  # a clean shutdown leaves a fresh backup
            self.executor.close()
        finally:
            self.journal.close()

    def __enter__(self) -> "JobRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _recover(self) -> list[str]:
        """Jobs found ``running`` were cut off by a crash (a graceful stop leaves them ``interrupted``): mark them
        ``interrupted`` (or ``failed`` after `max_attempts` crashes) and sweep the temporary files every job folder
        may hold; returns the ids marked."""
        now = time.time()
        marked, failed, canceled = [], [], []
        with self.journal.transaction() as db:
            # A cancel that was accepted but not carried out before the server stopped is carried out now: the job
            # ends canceled (it never resumes and ends done after its owner was told it was being cancelled).
            for row in db.execute("SELECT id FROM jobs WHERE state IN ('running', 'interrupted') AND cancel_requested = 1"
                                  ).fetchall():
                db.execute("UPDATE jobs SET state = 'canceled', finished_at = ?, updated_at = ? WHERE id = ?",
                           (now, now, row["id"]))
                self.journal.add_event(db, row["id"], "canceled", {"state": "canceled"}, now)
                canceled.append(row["id"])
            for row in db.execute("SELECT id, crashes FROM jobs WHERE state = 'running'").fetchall():
                crashes = row["crashes"] + 1  # a graceful stop leaves `interrupted`, never `running`: this was a crash
                if crashes >= self.max_attempts:
                    message = (f"the server was killed or crashed {crashes} times while it ran this job, so it was not "
                               "started again; submit it again, or a smaller version of it")
                    db.execute("UPDATE jobs SET state = 'failed', crashes = ?, error = ?, finished_at = ?, updated_at = ?"
                               " WHERE id = ?", (crashes, message, now, now, row["id"]))
                    self.journal.add_event(db, row["id"], "failed", {"state": "failed", "error": message}, now)
                    failed.append(row["id"])
                else:
                    db.execute("UPDATE jobs SET state = 'interrupted', crashes = ?, updated_at = ? WHERE id = ?",
                               (crashes, now, row["id"]))
                    self.journal.add_event(db, row["id"], "interrupted", {
                        "state": "interrupted",
                        "message": "the server stopped while this job ran; it resumes from the assets already made"}, now)
                    marked.append(row["id"])
        for job_id in failed + canceled:
            self._save_record(job_id)
        for job_id in canceled:
            self._discard_files(self.get(job_id))
        jobs_root = self.data_dir / JOBS_DIR
        for owner_dir in jobs_root.iterdir() if jobs_root.is_dir() else ():
            if owner_dir.is_dir() and not owner_dir.is_symlink():
                for job_dir in owner_dir.iterdir():
                    sweep_temp(job_dir)
        self.uploads.sweep()
        if marked:
            log.warning("resuming %d interrupted job(s): %s", len(marked), ", ".join(marked))
        return marked

    # -- submitting ------------------------------------------------------------------------------------------------
    def submit(self, request: JobRequest | Mapping[str, Any], *, owner: str = "local",
               idempotency_key: str | None = None, prepare: Callable[[Path], Any] | None = None) -> Job:
        """Queue a render.

        Args:
            request: A `JobRequest` or its JSON form (checked with `parse_request`, the one request schema).
            owner: The user it belongs to; only they see it.
            idempotency_key: The same key with the same request returns the job it made the first time instead of
                making another (1-200 printable ASCII characters).
            prepare: Called with a new job's project folder before any worker can take the job (the studio app
                seeds it with the project and the assets its panels made); the job's record (`JOB_FILE`) is
                written there after it. If it raises, the job is dropped and the error is raised.

        Returns:
            The queued `Job` (or the earlier one, for a repeated idempotency key).

        Raises:
            RequestError: a bad field or a limit (named); NotFound: an upload id that is not the owner's;
            Conflict: the idempotency key was used with another request; QueueFull: too many jobs wait;
            DiskFull: the disk holding the data folder has clearly too little room for the render
            (`estimate_render_bytes`).
        """
        # 1. Check the request and the uploads it names, before anything is queued.
        check_owner(owner)
        if idempotency_key is not None:
            if (not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 200
                    or not all("!" <= c <= "~" for c in idempotency_key)):
                raise RequestError("`Idempotency-Key` must be 1-200 printable ASCII characters without spaces",
                                   field="Idempotency-Key")
        data = request.to_dict() if isinstance(request, JobRequest) else request
        checked = parse_request(data, limits=self.limits, presets=self.presets)
        self._check_uploads(checked, owner)
        from ..presets import load_preset

        preset = load_preset(self.presets[checked.preset])
        resource = self.classify(checked, preset)
        if resource not in ("gpu", "cpu"):
            raise StudioError(f"`classify` must return 'gpu' or 'cpu', got {resource!r}")
        if resource == "gpu" and self.gpu_slots == 0:
            resource = "cpu"

        # 2. One transaction: the idempotency key, the queue bounds, the new job; then its folder.
        job_id = new_id()
        with self._cond:
            if self._closing:
                raise QueueFull("the server is shutting down; try again in a moment", retry_after_s=5)
            existing = self._enqueue(job_id, checked, preset, owner, resource, idempotency_key)
            if existing is None:
                self._prepare_folder(job_id, checked, preset, prepare)
            self._cond.notify_all()
        return self.get(existing or job_id, owner)

    def _check_key(self, db: Any, owner: str, idempotency_key: str | None, fingerprint: str) -> str | None:
        """The job an idempotency key already made (None: a new key); the same key with another request is 409."""
        if idempotency_key is None:
            return None
        row = db.execute("SELECT id, request_sha256 FROM jobs WHERE owner = ? AND idempotency_key = ?",
                         (owner, idempotency_key)).fetchone()
        if row is None:
            return None
        if row["request_sha256"] != fingerprint:
            raise Conflict("this Idempotency-Key was used before with a different request; use a new key for a new "
                           "request", field="Idempotency-Key")
        return row["id"]

    def _enqueue(self, job_id: str, checked: JobRequest, preset: Any, owner: str, resource: str,
                 idempotency_key: str | None) -> str | None:
        """Journal a new job, queued, unless its idempotency key names one already (returned); the queue bounds,
        the free space and the uploads (not deleted since they were checked) are checked in the same transaction."""
        now = time.time()
        fingerprint = checked.fingerprint()
        with self.journal.transaction() as db:
            existing = self._check_key(db, owner, idempotency_key, fingerprint)
            if existing is not None:
                return existing
            self._check_space(checked, preset, then="submit the job again")
            for field_name, upload_id in checked.upload_ids():
                if db.execute("SELECT 1 FROM uploads WHERE id = ? AND owner = ?", (upload_id, owner)).fetchone() is None:
                    raise NotFound(f"no upload with id {upload_id!r}", field=field_name)
            waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'interrupted')").fetchone()[0]
            if waiting >= self.max_queued:
                raise QueueFull(f"the queue is full ({waiting} jobs waiting); try again later", retry_after_s=30)
            mine = db.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'interrupted')",
                              (owner,)).fetchone()[0]
            if mine >= self.max_queued_per_owner:
                raise QueueFull(f"you have {mine} jobs waiting, the most one user may have; wait for some to finish "
                                "or cancel some", retry_after_s=30)
            db.execute(
                "INSERT INTO jobs (id, owner, state, resource, request, request_sha256, idempotency_key, preset,"
                " project, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, owner, resource, json.dumps(checked.to_dict(), ensure_ascii=True), fingerprint,
                 idempotency_key, checked.preset, f"{JOBS_DIR}/{owner_key(owner)}/{job_id}", now, now))
            self.journal.add_event(db, job_id, "queued", {"state": "queued"}, now)
        return None

    def _prepare_folder(self, job_id: str, checked: JobRequest, preset: Any,
                        prepare: Callable[[Path], Any] | None) -> Path:
        """A new job's folder: `prepare` fills it (the studio app's project), then its record; if either fails the
        job is dropped again (a full disk says so)."""
        row = self.journal.query("SELECT project FROM jobs WHERE id = ?", (job_id,))
        folder = self.data_dir / row[0]["project"]
        try:
            if prepare is not None:
                prepare(folder)
            self._save_record(job_id, quiet=False)
        except BaseException as exc:
            shutil.rmtree(folder, ignore_errors=True)  # first: it frees a full disk
            with self.journal.transaction() as db:
                db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            if is_disk_full(exc) and not isinstance(exc, DiskFull):
                raise DiskFull(disk_full_message(self._free(), estimate_render_bytes(checked, preset),
                                                 then="submit the job again")) from exc
            raise
        return folder

    def submit_project(self, project: Any, *, owner: str = "local", preset: str = "draft", narrator: str = "auto",
                       painter: str = "auto", idempotency_key: str | None = None) -> Job:
        """Queue a render of a saved `studio.Project` exactly as it is (the studio app's Render): its settings are
        checked by the same request schema and limits as any request, and the runner puts the project, with its
        assets and uploads, into the job's folder before a worker can take it, so nothing the user made is made
        again (`studio.server.projects`).

        Raises:
            RequestError, NotFound, QueueFull, DiskFull: as `submit`.
        """
        from .projects import submit_project

        return submit_project(self, project, owner=owner, preset=preset, narrator=narrator, painter=painter,
                              idempotency_key=idempotency_key)

    def _save_record(self, job_id: str, *, quiet: bool = True) -> None:
        """Refresh the job's record in its folder (after each change of state); a failure is logged, not raised,
        unless `quiet` is False: the journal stays the truth, the record is its copy for a lost journal."""
        try:
            rows = self.journal.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
            if rows and not rows[0]["expired"]:
                save_job_record(self.data_dir, rows[0])
        except (OSError, StudioError) as exc:
            if not quiet:
                raise
            log.warning("the record of job %s was not written: %s", job_id, exc)

    def _check_space(self, request: JobRequest, preset: Any, *, then: str) -> None:
        """Refuse a render the disk clearly has no room for (`DiskFull`, HTTP 507)."""
        need = estimate_render_bytes(request, preset)
        free = self._free()
        if free is not None and free < need:
            raise DiskFull(disk_full_message(free, need, then=then))

    def _free(self) -> int | None:
        try:
            return free_bytes(self.data_dir)
        except OSError:
            return None

    def _check_uploads(self, request: JobRequest, owner: str) -> None:
        wanted = {"music": ("audio", "video"), "watermark": ("image",), "caption_font": ("font",)}
        recorded_s = 0.0
        for field_name, upload_id in request.upload_ids():
            upload = self.uploads.get(owner, upload_id, field=field_name)
            recording = field_name.endswith(".recording")
            kinds = ("audio", "video") if recording else wanted.get(field_name, ("image", "video"))
            if upload.kind not in kinds:
                raise RequestError(f"`{field_name}` must name an upload of {' or '.join(kinds)}, "
                                   f"but {upload_id} is {upload.kind}", field=field_name)
            if (field_name == "music" or recording) and not upload.info.get("has_audio"):
                raise RequestError(f"`{field_name}` names upload {upload_id}, which holds no audio", field=field_name)
            if recording and float(upload.info.get("duration_s") or 0) > self.limits.max_scene_s:
                raise RequestError(f"`{field_name}` names a recording of {upload.info['duration_s']:.0f} s, over this "
                                   f"server's limit of {self.limits.max_scene_s:.0f} s a scene; split it over several "
                                   "scenes", field=field_name)
            if recording:
                recorded_s += float(upload.info.get("duration_s") or 0)
                if recorded_s > self.limits.max_video_s:  # the recordings alone, before any trimming
                    raise RequestError(f"the recordings last {recorded_s:.0f} s together, over this server's limit of "
                                       f"{self.limits.max_video_s:.0f} s a video; shorten the storyboard",
                                       field=field_name)
        if request.project is not None:  # an earlier job of the same user (another user's is no job at all)
            try:
                earlier = self.get(request.project, owner)
            except NotFound:
                raise NotFound(f"no job with id {request.project!r} to reuse", field="project") from None
            if earlier.expired:
                raise Gone(f"job {request.project} has expired: its files were removed, so there is nothing to "
                           "reuse; leave `project` out", field="project")

    # -- reading ---------------------------------------------------------------------------------------------------
    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job `job_id`; with `owner`, only if it is theirs (another user's job is `NotFound`, like a missing one)."""
        check_id(job_id, "job_id")
        rows = self.journal.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            raise NotFound(f"no job with id {job_id!r}", field="job_id")
        return _job_from_row(rows[0], self.data_dir)

    def find(self, owner: str, idempotency_key: str) -> Job | None:
        """The owner's job made with `idempotency_key`, if there is one."""
        rows = self.journal.query("SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", (owner, idempotency_key))
        return _job_from_row(rows[0], self.data_dir) if rows else None

    @property
    def closing(self) -> bool:
        """True once `close` has begun."""
        return self._closing

    def list(self, owner: str | None = None, *, state: str | None = None, limit: int = 50) -> list[Job]:
        """Jobs, newest first: the owner's (or everyone's with None), optionally in one state."""
        if state is not None and state not in STATES:
            raise RequestError(f"`state` must be one of {', '.join(STATES)}, got {state!r}", field="state")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise RequestError(f"`limit` must be between 1 and 1000, got {limit!r}", field="limit")
        sql, params = "SELECT * FROM jobs WHERE 1 = 1", []
        if owner is not None:
            sql += " AND owner = ?"
            params.append(owner)
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        params.append(limit)
        return [_job_from_row(row, self.data_dir) for row in self.journal.query(sql, tuple(params))]

    def events(self, job_id: str, owner: str | None = None, *, after: int = 0, limit: int = 1000,
               wait_s: float = 0.0) -> list[Event]:
        """The job's events with ``seq > after`` (the SSE stream's ``Last-Event-ID`` is `after`).

        Args:
            wait_s: When there are none yet, wait up to this long for the next one (a UI's long poll), instead of
                answering an empty list at once.
        """
        self.get(job_id, owner)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise RequestError(f"`after` must be a whole number of at least 0, got {after!r}", field="after")
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            rows = self.journal.query("SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                      (job_id, after, int(limit)))
            left = deadline - time.monotonic()
            if rows or left <= 0 or self._closing:
                return [Event(row["job_id"], row["seq"], row["time"], row["kind"], json.loads(row["data"]))
                        for row in rows]
            with self._cond:
                self._cond.wait(min(left, 0.5))  # woken by every journaled event

    def wait(self, job_id: str, timeout_s: float | None = None, owner: str | None = None) -> Job:
        """Block until the job is done, failed or canceled (or `timeout_s` passes); returns it as it then is."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                job = self.get(job_id, owner)
                if job.terminal or self._closing:
                    return job
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return job
                self._cond.wait(0.5 if left is None else min(0.5, left))

    def video_path(self, job_id: str, owner: str | None = None) -> Path:
        """The finished MP4 of a job, checked: done, not expired, a plain file inside its project folder."""
        job = self.get(job_id, owner)
        if job.expired:
            raise Gone(f"the video of job {job_id} was removed by the retention policy; render it again")
        if job.state != "done" or job.output is None:
            raise Conflict(f"job {job_id} is {job.state}, so it has no video yet", field="job_id")
        path = safe_path(self.data_dir, *job.output.relative_to(self.data_dir).parts)
        if not path.is_file():
            raise Gone(f"the video of job {job_id} is no longer stored; render it again")
        return path

    def counts(self, owner: str | None = None) -> dict[str, int]:
        """How many jobs are in each state (of `owner`'s, when given)."""
        if owner is None:
            rows = self.journal.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        else:
            rows = self.journal.query("SELECT state, COUNT(*) AS n FROM jobs WHERE owner = ? GROUP BY state", (owner,))
        counts = {state: 0 for state in STATES}
        counts.update({row["state"]: row["n"] for row in rows})
        return counts

    # -- cancelling ------------------------------------------------------------------------------------------------
    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel a job: a waiting one ends ``canceled`` at once; a running one is stopped (ffmpeg and espeak-ng are
        killed, model loops stop at their next step) and ends ``canceled`` moments later (`wait` for it).

        Raises:
            NotFound: no such job for `owner`. Conflict: the job has already ended.
        """
        with self._cond:
            job = self.get(job_id, owner)
            if job.terminal:
                raise Conflict(f"job {job_id} is already {job.state}", field="job_id")
            now = time.time()
            token = None
            with self.journal.transaction() as db:
                if job.state in WAITING:
                    db.execute("UPDATE jobs SET state = 'canceled', cancel_requested = 1, finished_at = ?, updated_at = ?"
                               " WHERE id = ?", (now, now, job_id))
                    self.journal.add_event(db, job_id, "canceled", {"state": "canceled"}, now)
                else:
                    db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
                    self.journal.add_event(db, job_id, "cancel_requested", {"state": job.state}, now)
                    token = self._tokens.get(job_id)
            self._cond.notify_all()
        if token is not None:
            token.cancel()
        elif job.state in WAITING:
            self._discard_files(job)
            self._save_record(job_id)
        return self.get(job_id, owner)

    # -- the workers -----------------------------------------------------------------------------------------------
