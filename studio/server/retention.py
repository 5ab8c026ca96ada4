"""What a server keeps and for how long: finished renders and uploads expire, temporary files are swept, the journal
is backed up (the housekeeping half of `studio.server.runner.JobRunner`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .journal import BACKUP_FILE
from .models import Job, request_upload_ids

log = logging.getLogger("studio.jobs")


@dataclass(frozen=True)
class Retention:
    """How long finished work is kept.

    Attributes:
        max_age_s: Renders (project folders) of finished, failed and canceled jobs are removed this long after the
            job ended; None keeps them.
        max_total_bytes: Remove the oldest finished renders until all renders take at most this much; None: no cap.
        upload_max_age_s: Uploads older than this are removed unless a waiting or running job uses them.
        forget_after_s: A job whose files were removed and that ended this long ago leaves the journal too (its row
            and events; the journal's file is then compacted), so a server that runs for months keeps a journal of
            the size its recent work needs; None keeps every row.
        sweep_every_s: How often the server applies the policy.
    """

    max_age_s: float | None = 7 * 86400.0
    max_total_bytes: int | None = None
    upload_max_age_s: float | None = 7 * 86400.0
    forget_after_s: float | None = 30 * 86400.0
    sweep_every_s: float = 3600.0


def sweep_temp(folder: Path) -> int:
    """Remove temporary files and work folders that an interrupted write left in `folder` (never following links);
    returns how many were removed."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return 0
    for parent, dirs, files in os.walk(folder, followlinks=False):
        for name in list(dirs):
            if name.startswith(".") and (".render-" in name or name.startswith(".segment-")):
                shutil.rmtree(Path(parent) / name, ignore_errors=True)
                dirs.remove(name)
                removed += 1
        for name in files:
            if name.startswith(".") and (".part-" in name or name.endswith(".part")):
                try:
                    os.unlink(Path(parent) / name)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _folder_bytes(folder: Path) -> int:
    total = 0
    for parent, _, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                total += os.lstat(Path(parent) / name).st_size
            except OSError:
                pass
    return total


class Housekeeping:
    """`JobRunner`'s retention, clean-up and journal backups (a mixin: it uses the runner's journal and folders)."""

    def _discard_files(self, job: Job) -> None:
        """A failed or canceled job's temporary files, assets and renders (its project.json stays, for the record)."""
        folder = job.project_dir
        if not folder.is_dir() or folder.is_symlink():
            return
        sweep_temp(folder)
        for name in ("assets", "renders"):
            target = folder / name
            if target.is_symlink():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target, ignore_errors=True)

    # -- disk hygiene ----------------------------------------------------------------------------------------------
    def _janitor(self) -> None:
        """Apply the retention policy every `Retention.sweep_every_s`, and back the journal up (checking it first)
        every `backup_every_s`."""
        next_sweep = time.monotonic()
        next_backup = next_sweep + self.backup_every_s
        while not self._closing:
            now = time.monotonic()
            if now >= next_sweep:
                try:
                    self.expire()
                except Exception:
                    log.exception("applying the retention policy failed")
                next_sweep = now + self.retention.sweep_every_s
            if now >= next_backup:
                self._backup_quietly()
                next_backup = now + self.backup_every_s
            self._janitor_wake.wait(max(0.0, min(next_sweep, next_backup) - time.monotonic()))

    def backup_journal(self) -> Path:
        """Back the journal up now (``studio.db.bak`` in the data folder, atomically; `Journal.backup`); the
        server does this every `backup_every_s` and when it stops.

        Raises:
            JournalDamaged: the journal failed its check (the previous backup is kept); DiskFull: no room for it.
        """
        return self.journal.backup()

    def _backup_quietly(self) -> None:
        try:
            if self.journal.changed_since_backup or not (self.data_dir / BACKUP_FILE).is_file():
                self.journal.backup()
        except Exception as exc:  # a damaged journal or a full disk: the previous backup stays, the log says why
            log.error("the journal's backup was not refreshed: %s", exc)

    def expire(self, now: float | None = None) -> list[str]:
        """Apply the retention policy now: remove the folders of jobs that ended more than `Retention.max_age_s`
        ago, then the oldest finished renders while all renders take more than `Retention.max_total_bytes`, then old
        uploads no waiting or running job uses; returns the ids of the jobs whose files were removed."""
        now = time.time() if now is None else now
        policy = self.retention
        expired: list[str] = []
        rows = self.journal.query("SELECT id, owner, finished_at, project FROM jobs WHERE state IN ('done', 'failed',"
                                  " 'canceled') AND expired = 0 ORDER BY finished_at")
        keep = []
        for row in rows:
            if policy.max_age_s is not None and row["finished_at"] is not None and row["finished_at"] < now - policy.max_age_s:
                expired.append(row["id"])
            else:
                keep.append(row)
        if policy.max_total_bytes is not None:
            sizes = [(row, _folder_bytes(self.data_dir / row["project"])) for row in keep]
            total = sum(size for _, size in sizes)
            for row, size in sizes:  # oldest first
                if total <= policy.max_total_bytes:
                    break
                expired.append(row["id"])
                total -= size
        for job_id in expired:
            row = self.journal.query("SELECT project FROM jobs WHERE id = ?", (job_id,))[0]
            folder = self.data_dir / row["project"]
            if folder.is_symlink():
                folder.unlink()
            elif folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            stamp = time.time()
            with self.journal.transaction() as db:
                db.execute("UPDATE jobs SET expired = 1, output = NULL, updated_at = ? WHERE id = ?", (stamp, job_id))
                self.journal.add_event(db, job_id, "expired", {"message": "its files were removed by the retention "
                                                                          "policy"}, stamp)
        if policy.upload_max_age_s is not None:
            in_use = set()
            for row in self.journal.query("SELECT request FROM jobs WHERE state IN ('queued', 'interrupted', 'running')"):
                in_use.update(request_upload_ids(json.loads(row["request"])))
            # (not the temporary files: an upload may be under way; the start's sweep removes a crash's)
            self.uploads.sweep(older_than_s=policy.upload_max_age_s, keep=in_use, now=now, temp=False)
        if policy.forget_after_s is not None:
            self._forget(now - policy.forget_after_s)
        return expired

    def _forget(self, ended_before: float) -> int:
        """Remove from the journal the jobs whose files are gone and that ended before `ended_before` (rows and
        events), then compact the journal's file; returns how many were removed."""
        with self.journal.transaction() as db:
            ids = [row["id"] for row in db.execute("SELECT id FROM jobs WHERE expired = 1 AND finished_at < ?",
                                                   (ended_before,)).fetchall()]
            for job_id in ids:
                db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        if ids:
            log.info("retention: %d old job(s) left the journal", len(ids))
            self.journal.execute("VACUUM")  # give the freed pages back to the disk
            self.journal.query("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(ids)
