"""When the journal is lost, emptied or damaged, nothing the data folder holds is lost.

The journal (`studio.journal`) is the truth while it is sound; two copies let it be rebuilt when it is not:

- its backup, ``studio.db.bak``, made with SQLite's online backup API every few minutes and at a clean shutdown
  (`Journal.backup`; never from a journal that fails its check);
- the records in the folders: each job folder holds ``job.json`` (`studio.server.models.JOB_FILE`: owner, request, state,
  result, written at each change of state), each upload ``<id>.json`` beside its file.

A job runner that starts on an emptied journal while the folder holds work restores the backup, then gives every job
and upload folder the journal does not know its row back from its record (`rebuild`); no file is ever deleted because
the journal does not know it. ``studio serve --check`` (`check_data_folder`) reports what SQLite's integrity check and
the folders say; ``studio serve --recover`` (`recover_data_folder`) keeps a damaged journal aside as
``studio.db.damaged-<time>`` and rebuilds it from the backup and the folders.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StudioError
from .journal import (BACKUP_FILE, DB_FILE, ID_RE, FolderLock, Journal, check_database, check_owner, owner_key,
                      _first_line, _read_only_uri)

log = logging.getLogger("studio.recovery")

DAMAGED_PREFIX = f"{DB_FILE}.damaged-"


# -- what a database file holds ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatabaseReport:
    """What SQLite's integrity check and a count of rows say of one journal file (the journal or its backup).

    Attributes:
        path: The file.
        exists: Whether it is there.
        problems: What the check found ([] when sound); one line each, never the rows' contents.
        jobs, uploads: Rows it holds (when it could be read).
        modified: The file's modification time (Unix time), for "taken at".
    """

    path: Path
    exists: bool
    problems: tuple[str, ...] = ()
    jobs: int = 0
    uploads: int = 0
    modified: float | None = None

    @property
    def sound(self) -> bool:
        return self.exists and not self.problems

    def describe(self, name: str) -> str:
        if not self.exists:
            return f"{name}: none"
        taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.modified)) if self.modified else "?"
        if self.problems:
            more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
            return f"{name}: damaged: {self.problems[0]}{more}"
        return f"{name}: ok ({self.jobs} jobs, {self.uploads} uploads; written {taken})"


def inspect_database(path: Path, *, read_only: bool = False) -> DatabaseReport:
    """Check a journal file with SQLite's ``integrity_check`` and count its jobs and uploads; never changes it.

    Args:
        read_only: Open it read-only (a backup, in rollback-journal mode); the live journal, in WAL mode, is opened
            normally (read-only WAL needs its shared-memory file) and only read.
    """
    path = Path(path)
    if not path.is_file():
        return DatabaseReport(path, exists=False)
    modified = path.stat().st_mtime
    try:
        db = sqlite3.connect(_read_only_uri(path), uri=True) if read_only else sqlite3.connect(path)
    except sqlite3.DatabaseError as exc:
        return DatabaseReport(path, True, (_first_line(exc),), modified=modified)
    try:
        problems = check_database(db, full=True)
        if problems:
            return DatabaseReport(path, True, tuple(problems), modified=modified)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not {"jobs", "uploads"} <= tables:
                return DatabaseReport(path, True, ("not a Studio journal (it has no jobs and uploads tables)",),
                                      modified=modified)
            jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] if tables else 0
            uploads = db.execute("SELECT COUNT(*) FROM uploads").fetchone()[0] if tables else 0
        except sqlite3.DatabaseError as exc:
            return DatabaseReport(path, True, (_first_line(exc),), modified=modified)
        return DatabaseReport(path, True, (), jobs, uploads, modified)
    finally:
        db.close()


# -- what the folders hold --------------------------------------------------------------------------------------------
def job_folders(data_dir: Path) -> list[Path]:
    """Every job folder (``jobs/<owner key>/<job id>``), links never followed."""
    from .models import JOBS_DIR

    found = []
    root = Path(data_dir) / JOBS_DIR
    for owner_dir in sorted(root.iterdir()) if root.is_dir() else ():
        if owner_dir.is_dir() and not owner_dir.is_symlink():
            found.extend(d for d in sorted(owner_dir.iterdir())
                         if ID_RE.match(d.name) and d.is_dir() and not d.is_symlink())
    return found


def stored_uploads(data_dir: Path) -> list[Path]:
    """Every stored upload file (not records, not temporary files), links never followed."""
    from .uploads import RECORD_SUFFIX, UPLOADS_DIR, _is_temp

    found = []
    root = Path(data_dir) / UPLOADS_DIR
    for owner_dir in sorted(root.iterdir()) if root.is_dir() else ():
        if owner_dir.is_dir() and not owner_dir.is_symlink():
            found.extend(p for p in sorted(owner_dir.iterdir())
                         if not _is_temp(p.name) and not p.name.endswith(RECORD_SUFFIX) and not p.is_dir())
    return found


def read_job_record(folder: Path) -> dict | None:
    """A job folder's record (`studio.server.models.JOB_FILE`), checked against the folder it is in; None if it is missing
    or unusable."""
    from .models import JOB_FILE, STATES

    path = Path(folder) / JOB_FILE
    try:
        record = json.loads(path.read_text("utf-8"))
        if not isinstance(record, dict) or record.get("id") != folder.name or not ID_RE.match(folder.name):
            return None
        if owner_key(check_owner(record.get("owner"))) != folder.parent.name:
            return None
        if (record.get("state") not in STATES or record.get("resource") not in ("gpu", "cpu")
                or not isinstance(record.get("request"), dict) or not isinstance(record.get("preset"), str)
                or not isinstance(record.get("created_at"), (int, float))):
            return None
    except (OSError, ValueError, StudioError):
        return None
    return record


# -- rebuilding the journal's rows ------------------------------------------------------------------------------------
@dataclass
class Rebuilt:
    """What `rebuild` (and a restore from the backup) did.

    Attributes:
        restored: What was restored from the backup (a sentence), or None.
        jobs: Jobs whose rows were rebuilt from their folders' records.
        uploads: Uploads whose rows were rebuilt from their records.
        updated: Jobs whose restored rows were brought up to their records (they ended after the backup).
        expired: Restored finished jobs whose folders are gone (removed by the retention policy after the backup).
        dropped_uploads: Restored uploads whose files are gone (deleted after the backup): their rows went.
        unusable: Folders and records that could not be used (no record, or a damaged one); kept as they are.
        unknown_uploads: Stored upload files nothing describes; kept as they are.
    """

    restored: str | None = None
    jobs: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    dropped_uploads: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)
    unknown_uploads: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.restored or self.jobs or self.uploads or self.updated or self.expired or self.dropped_uploads)

    def lines(self) -> list[str]:
        out = [self.restored] if self.restored else []
        if self.jobs or self.uploads:
            out.append(f"rebuilt {len(self.jobs)} jobs and {len(self.uploads)} uploads from their folders' records")
        if self.updated:
            out.append(f"brought {len(self.updated)} jobs up to their records (they changed after the backup)")
        if self.expired:
            out.append(f"marked {len(self.expired)} finished jobs expired (their folders were removed after the backup)")
        if self.dropped_uploads:
            out.append(f"forgot {len(self.dropped_uploads)} uploads whose files were deleted after the backup")
        if self.unusable:
            out.append(f"kept {len(self.unusable)} folders or records it could not read as they are (nothing was "
                       f"deleted): {', '.join(self.unusable[:5])}{' ...' if len(self.unusable) > 5 else ''}")
        if self.unknown_uploads:
            out.append(f"kept {len(self.unknown_uploads)} stored upload files that no record describes as they are")
        return out


def holds_work(data_dir: Path) -> bool:
    """Whether the folder holds any job folder or stored upload."""
    return bool(job_folders(data_dir) or stored_uploads(data_dir))


def restore_if_emptied(journal: Journal) -> str | None:
    """When the journal holds no job and no upload but the folder holds work, and a sound backup holds rows, copy
    the backup into the journal (it was deleted, emptied or replaced); returns what was restored, or None."""
    known = journal.query("SELECT (SELECT COUNT(*) FROM jobs) + (SELECT COUNT(*) FROM uploads)")[0][0]
    if known or not holds_work(journal.data_dir):
        return None
    backup = inspect_database(journal.data_dir / BACKUP_FILE, read_only=True)
    if not backup.sound or not (backup.jobs or backup.uploads):
        return None
    journal.restore_from(backup.path)
    return f"restored {backup.jobs} jobs and {backup.uploads} uploads from the journal's backup ({BACKUP_FILE})"


def rebuild(journal: Journal, uploads: Any, *, restored: str | None = None) -> Rebuilt:
    """Give the journal a row for every job and upload folder it does not know, from their records; after a restore
    from the backup (`restored`), also bring restored rows up to what the folders say. Writes the records the
    folders lack (folders made before records existed). Never deletes a file.

    Args:
        journal: The journal (its folder held by this process).
        uploads: The folder's `studio.uploads.UploadStore`.
        restored: What `restore_if_emptied` (or `recover_data_folder`) restored, if anything.
    """
    report = Rebuilt(restored=restored)
    report.uploads, unusable = uploads.adopt()
    report.unusable.extend(f"uploads/{name}" for name in unusable)
    _adopt_jobs(journal, report)
    if restored:
        _reconcile_jobs(journal, report)
        report.dropped_uploads = uploads.drop_missing()
    _write_missing_job_records(journal)
    uploads.write_missing_records()
    report.unknown_uploads = uploads.unknown_files()
    return report


def _adopt_jobs(journal: Journal, report: Rebuilt) -> None:
    from .models import JOB_FILE, TERMINAL

    data_dir = journal.data_dir
    known = {row["id"] for row in journal.query("SELECT id FROM jobs")}
    now = time.time()
    for folder in job_folders(data_dir):
        if folder.name in known:
            continue
        record = read_job_record(folder)
        if record is None:
            why = "no job.json" if not (folder / JOB_FILE).exists() else "an unreadable job.json"
            report.unusable.append(f"{folder.relative_to(data_dir).as_posix()} ({why})")
            continue
        state = record["state"]
        if state not in TERMINAL:  # it was waiting or running when the journal was lost
            state = "interrupted" if (folder / "project.json").is_file() else "queued"
        output, expired = record.get("output"), bool(record.get("expired"))
        if state == "done" and not (isinstance(output, str) and (data_dir / output).is_file()):
            output, expired = None, True
        project = folder.relative_to(data_dir).as_posix()
        with journal.transaction() as db:
            key = record.get("idempotency_key")
            if key is not None and db.execute("SELECT 1 FROM jobs WHERE owner = ? AND idempotency_key = ?",
                                              (record["owner"], key)).fetchone():
                key = None
            db.execute(
                "INSERT INTO jobs (id, owner, state, resource, request, request_sha256, idempotency_key, preset,"
                " project, output, result, percent, steps, scenes, timings, error, attempts, crashes, expired,"
                " created_at, started_at, finished_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record["id"], record["owner"], state, record["resource"], json.dumps(record["request"], ensure_ascii=True),
                 str(record.get("request_sha256") or ""), key, record["preset"], project,
                 output if state == "done" else None, _json(record.get("result")),
                 float(record.get("percent") or 0) if state in TERMINAL else 0.0, _json(record.get("steps"), "[]"),
                 _json(record.get("scenes"), "{}"), _json(record.get("timings"), "{}"), record.get("error"),
                 int(record.get("attempts") or 0), int(record.get("crashes") or 0), int(expired),
                 float(record["created_at"]), record.get("started_at"), record.get("finished_at"), now))
            data: dict[str, Any] = {"state": state, "message": "rebuilt from the job's folder (the journal had lost it)"}
            if record.get("error"):
                data["error"] = record["error"]
            journal.add_event(db, record["id"], state, data, now)
        report.jobs.append(record["id"])


def _reconcile_jobs(journal: Journal, report: Rebuilt) -> None:
    """After a restore: a job that ended after the backup was taken gets its ending from its record; a finished job
    whose folder went (the retention policy) is marked expired. Waiting jobs stay as the backup had them."""
    from .models import TERMINAL

    data_dir = journal.data_dir
    now = time.time()
    for row in journal.query("SELECT id, state, project, finished_at FROM jobs WHERE expired = 0"):
        folder = data_dir / row["project"]
        if not folder.is_dir():
            if row["state"] in TERMINAL:
                with journal.transaction() as db:
                    db.execute("UPDATE jobs SET expired = 1, output = NULL, updated_at = ? WHERE id = ?", (now, row["id"]))
                    journal.add_event(db, row["id"], "expired", {"message": "its files were removed"}, now)
                report.expired.append(row["id"])
            continue
        record = read_job_record(folder)
        if record is None or record["state"] not in TERMINAL:
            continue
        if row["state"] in TERMINAL and (record.get("finished_at") or 0) <= (row["finished_at"] or 0):
            continue
        output = record.get("output") if record["state"] == "done" else None
        if output is not None and not (data_dir / output).is_file():
            output = None
        with journal.transaction() as db:
            db.execute("UPDATE jobs SET state = ?, error = ?, output = ?, result = ?, percent = ?, steps = ?,"
                       " scenes = ?, timings = ?, attempts = ?, crashes = ?, finished_at = ?, updated_at = ?,"
                       " expired = ? WHERE id = ?",
                       (record["state"], record.get("error"), output, _json(record.get("result")),
                        float(record.get("percent") or 0), _json(record.get("steps"), "[]"),
                        _json(record.get("scenes"), "{}"), _json(record.get("timings"), "{}"),
                        int(record.get("attempts") or 0), int(record.get("crashes") or 0), record.get("finished_at"),
                        now, int(record["state"] == "done" and output is None), row["id"]))
            journal.add_event(db, row["id"], record["state"], {"state": record["state"],
                                                               "message": "its ending, from the job's folder"}, now)
        report.updated.append(row["id"])


def _write_missing_job_records(journal: Journal) -> None:
    from .models import JOB_FILE, save_job_record

    for row in journal.query("SELECT * FROM jobs WHERE expired = 0"):
        folder = journal.data_dir / row["project"]
        if folder.is_dir() and not folder.is_symlink() and not (folder / JOB_FILE).exists():
            try:
                save_job_record(journal.data_dir, row)
            except (OSError, StudioError) as exc:
                log.warning("the record of job %s was not written: %s", row["id"], exc)


def _json(value: Any, empty: str | None = None) -> str | None:
    return empty if value is None else json.dumps(value, ensure_ascii=True)


# -- studio serve --check and --recover -------------------------------------------------------------------------------
def check_data_folder(data_dir: Path) -> tuple[bool, list[str]]:
    """What ``studio serve --check`` reports: SQLite's integrity check of the journal and of its backup, and what
    the folders hold that the journal does not know. Changes nothing and works while a server runs.

    Returns:
        (True when no damage was found, the report's lines).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise StudioError(f"there is no data folder {data_dir}; give the one the server uses with --data-dir")
    lines = [f"data folder {data_dir}"]
    journal = inspect_database(data_dir / DB_FILE)
    backup = inspect_database(data_dir / BACKUP_FILE, read_only=True)
    lines.append(journal.describe(f"journal {DB_FILE}"))
    lines.append(backup.describe(f"backup {BACKUP_FILE}") + ("" if backup.exists else " yet (the server takes one every "
                                                              "few minutes and when it stops)"))
    folders, files = job_folders(data_dir), stored_uploads(data_dir)
    line = f"folders: {len(folders)} jobs, {len(files)} uploads"
    if journal.sound:
        db = sqlite3.connect(data_dir / DB_FILE)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            known_jobs = {r[0] for r in db.execute("SELECT id FROM jobs")} if "jobs" in tables else set()
            known_files = {r[0] for r in db.execute("SELECT file FROM uploads")} if "uploads" in tables else set()
        finally:
            db.close()
        unknown = (sum(f.name not in known_jobs for f in folders), sum(f.name not in known_files for f in files))
        if any(unknown):
            line += (f"; {unknown[0]} job folders and {unknown[1]} uploads are not in the journal (the server rebuilds "
                     "their rows from their records when it starts; nothing is deleted)")
    lines.append(line)
    damaged = (journal.exists and not journal.sound) or (backup.exists and not backup.sound)
    if damaged:
        fix = (f"stop the server and run `python -m studio serve --recover --data-dir {data_dir}`"
               if journal.exists and not journal.sound else
               "the server replaces a damaged backup with its next one (every few minutes, and when it stops)")
        lines.append(f"damage found: {fix}")
    else:
        lines.append("no damage found")
    return not damaged, lines


def recover_data_folder(data_dir: Path) -> list[str]:
    """What ``studio serve --recover`` does, with the folder held so that no server runs meanwhile: a damaged (or
    unreadable) journal is kept aside as ``studio.db.damaged-<time>`` and replaced by its backup when that is sound
    (else by a new journal); then every job and upload folder gets its row back from its record (`rebuild`), and
    a fresh backup is taken. A sound journal is kept and only given the rows it lacks.

    Returns:
        What was done, line by line.

    Raises:
        StudioError: the folder is in use by a server (stop it first), or is not there.
    """
    from .uploads import UploadStore

    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise StudioError(f"there is no data folder {data_dir}; give the one the server uses with --data-dir")
    lines = [f"data folder {data_dir}"]
    lock = FolderLock(data_dir)
    try:
        # 1. The journal as it is; a damaged one goes aside, whole (with its -wal and -shm files).
        current = inspect_database(data_dir / DB_FILE)
        restored = None
        if current.exists and not current.sound:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = data_dir / f"{DAMAGED_PREFIX}{stamp}"
            for suffix in ("", "-wal", "-shm"):
                source = data_dir / f"{DB_FILE}{suffix}"
                if source.exists():
                    os.replace(source, data_dir / f"{aside.name}{suffix}")
            lines.append(f"journal {DB_FILE}: damaged ({current.problems[0]}); kept aside as {aside.name}")
        elif current.exists:
            lines.append(current.describe(f"journal {DB_FILE}") + "; kept")
        else:
            lines.append(f"journal {DB_FILE}: none")

        # 2. A new journal from the backup, when the old one went aside or was missing.
        journal = Journal(data_dir, lock=False)
        try:
            if not current.sound or not (current.jobs or current.uploads):
                backup = inspect_database(data_dir / BACKUP_FILE, read_only=True)
                if backup.sound and (backup.jobs or backup.uploads):
                    journal.restore_from(backup.path)
                    restored = f"restored {backup.jobs} jobs and {backup.uploads} uploads from the backup {BACKUP_FILE}"
                elif backup.exists:
                    lines.append(backup.describe(f"backup {BACKUP_FILE}") + "; not used")
            # 3. The rows the folders' records give back, then a fresh backup.
            report = rebuild(journal, UploadStore(journal), restored=restored)
            lines.extend(report.lines() or ["the journal knew every job and upload folder"])
            journal.backup()
            lines.append(f"took a fresh backup ({BACKUP_FILE})")
        finally:
            journal.close()
    finally:
        lock.release()
    lines.append(f"done: start the server again with `python -m studio serve --data-dir {data_dir}`")
    return lines
