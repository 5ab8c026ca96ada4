"""The data folder and its journal: where jobs, uploads and renders live, and the SQLite database that records them.

    data_dir = default_data_dir()            # --data-dir, $STUDIO_DATA_DIR, or $XDG_DATA_HOME/studio
    journal = Journal(data_dir)              # <data_dir>/studio.db, WAL mode; one server per data folder

Layout of a data folder::

    studio.db (+ -wal, -shm)    the journal: jobs, their events, uploads
    studio.db.bak               its backup (SQLite's online backup API), refreshed every few minutes and at a clean
                                shutdown, written atomically; `studio serve --recover` restores from it
    server.lock                 the pid of the one server using the folder; that server holds an flock on the folder
                                itself (and on this file) for its whole life; the kernel drops them if it dies
    jobs/<owner key>/<job id>/  a job's project folder (job.json: its record; project.json, assets/, renders/video.mp4)
    uploads/<owner key>/        uploaded files, under names the server makes (<upload id>.<ext>), each with its
                                record (<upload id>.json)

The records in the folders let a lost or damaged journal be rebuilt (`studio.recovery`): no file is ever deleted
because the journal does not know it.

Owner keys are hashes of user names, job and upload ids are random hex: no name from a request ever becomes a path.
Every path built from an id goes through `safe_path`, which refuses anything that would leave the data folder or
pass through a symbolic link.

Durability: the journal runs in WAL mode with ``synchronous=NORMAL``: a committed change survives the server being
killed (SIGKILL, OOM); only a power cut can lose the last moments, never corrupt the database.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from ..errors import StudioError

SCHEMA_VERSION = 1
DB_FILE = "studio.db"
BACKUP_FILE = "studio.db.bak"
LOCK_FILE = "server.lock"
ID_RE = re.compile(r"^[0-9a-f]{32}$")
# A name inside the data folder: letters, digits, '.', '_', '-'; never "." or "..", never starting with a dot.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
OWNER_RE = re.compile(r"^[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,63}$")

log = logging.getLogger("studio.journal")


class ServiceError(StudioError):
    """An error of the job service, with the HTTP status it maps to and the request field it is about.

    Attributes:
        status: HTTP status code (4xx).
        field: The request field (or header, or path parameter) that is wrong; None when it is not about one field.
    """

    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RequestError(ServiceError):
    """A request field is missing, malformed or over a limit (the message names the field and the limit)."""

    status = 422


class NotFound(ServiceError):
    """No such job or upload for this user (another user's ids are not found either)."""

    status = 404


class Conflict(ServiceError):
    """The request conflicts with the state of a job (cancel a finished job, reuse an idempotency key)."""

    status = 409


class Gone(ServiceError):
    """A render that existed was removed by the retention policy."""

    status = 410


class TooLarge(ServiceError):
    """An upload is over the size limit."""

    status = 413


class DiskFull(ServiceError):
    """The disk holding the data folder is full (or the user's disk quota is spent); nothing was queued or stored
    (HTTP 507 Insufficient Storage)."""

    status = 507


class Unavailable(ServiceError):
    """The journal cannot be used right now (busy, or a disk I/O error); HTTP 503."""

    status = 503


class JournalDamaged(Unavailable):
    """The journal's file is damaged: every job and upload route answers 503 saying so, until the operator runs
    ``studio serve --recover``."""


class QueueFull(ServiceError):
    """The queue is full; try again later (`retry_after_s`)."""

    status = 429

    def __init__(self, message: str, *, retry_after_s: int = 30) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# errno values of a full disk, and SQLite's code for it (SQLITE_FULL)
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 10, 11, 26
# what ffmpeg (and other programs whose messages become a StudioError) say on a full disk
_DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded")


def free_bytes(folder: Path) -> int:
    """Free space on the disk holding `folder`, in bytes (what an unprivileged process may still write)."""
    return shutil.disk_usage(folder).free


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it was raised from, says the disk is full: ``OSError`` ENOSPC or EDQUOT, SQLite's
    SQLITE_FULL, a `DiskFull`, or a program's "No space left on device" in a `StudioError`'s message."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull):
            return True
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if isinstance(exc, StudioError) and any(words in str(exc) for words in _DISK_FULL_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_message(free: int | None, need: int | None = None, *, what: str = "this render",
                      then: str = "try again") -> str:
    """What a user reads when the disk holding the data folder is full: the free space, what the work needs (when
    known), and what to do. Never a path: the user of an API does not see the server's folders."""
    facts = [] if free is None else [f"{_mb(free)} MB free"]
    if need:
        facts.append(f"{what} needs about {_mb(need)} MB")
    found = f" ({', '.join(facts)})" if facts else ""
    return (f"the disk holding the data folder is full{found}; free some space there (remove old renders, uploads or "
            f"other files) or ask the server's operator to, then {then}")


def _mb(size: int) -> str:
    return f"{max(0, size) / 1e6:,.0f}"


def default_data_dir() -> Path:
    """The data folder: ``$STUDIO_DATA_DIR``, else ``$XDG_DATA_HOME/studio``, else ``~/.local/share/studio``."""
    env = os.environ.get("STUDIO_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".local" / "share") / "studio"


def new_id() -> str:
    """A random id for a job or an upload: 32 hex digits."""
    return secrets.token_hex(16)


def check_id(value: Any, field: str, what: str = "job") -> str:
    """`value` if it is a well-formed id; otherwise `NotFound` (a malformed id names nothing, like a wrong one)."""
    if not isinstance(value, str) or not ID_RE.match(value):
        raise NotFound(f"no {what} with id {str(value)[:80]!r}", field=field)
    return value


def check_owner(owner: Any) -> str:
    """A user name: 1-64 letters, digits and ``_ . @ + -`` (not starting with a dot)."""
    if not isinstance(owner, str) or not OWNER_RE.match(owner):
        raise RequestError(f"`owner` must be 1-64 letters, digits or _ . @ + - (not starting with '.'), got {owner!r}",
                           field="owner")
    return owner


def owner_key(owner: str) -> str:
    """The folder name of a user's files: a hash, so no user name ever becomes a path."""
    return "u" + hashlib.sha256(check_owner(owner).encode("utf-8")).hexdigest()[:24]


def safe_path(root: Path, *names: str) -> Path:
    """``root/names...``, checked: every name is a plain file name made by the server (no separators, no ``..``,
    no leading dot), and no existing part of the path below `root` is a symbolic link.

    Raises:
        NotFound: a name that is not allowed, or a symbolic link on the way (a link planted inside a project must
            not lead a request out of the data folder).
    """
    path = Path(root)
    for name in names:
        if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
            raise NotFound(f"no such file: {str(name)[:80]!r}")
        path = path / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            raise NotFound(f"no such file: {name!r} (a symbolic link is never followed)")
    return path


def open_no_follow(path: Path) -> int:
    """Open a file for reading without following a symbolic link at its last component; returns the descriptor."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise NotFound(f"no such file: {Path(path).name!r}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotFound(f"no such file: {Path(path).name!r}")
    return fd


def check_database(db: sqlite3.Connection, *, full: bool = False) -> list[str]:
    """The problems SQLite's ``quick_check`` (``integrity_check`` with `full`) finds in an open database, at most
    ten, one line each ([] when it is sound). They name pages and tables, never the rows' contents."""
    try:
        rows = db.execute("PRAGMA integrity_check(10)" if full else "PRAGMA quick_check(10)").fetchall()
    except sqlite3.DatabaseError as exc:
        return [_first_line(exc)]
    problems = [" ".join(str(row[0]).replace("*** in database main ***", "").split()) for row in rows]
    return [p for p in problems if p and p != "ok"]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _read_only_uri(path: Path) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lock_holder(data_dir: Path) -> str:
    """The pid of the server holding `data_dir`: from ``server.lock``, else from the kernel's lock table (the file
    may have been deleted), else ``unknown``."""
    try:
        text = (Path(data_dir) / LOCK_FILE).read_text("ascii", "replace").strip()
        if text.isdigit():
            return text
    except OSError:
        pass
    try:
        info = os.stat(data_dir)
        device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == device and parts[4].isdigit():
                    return parts[4]
    except OSError:
        pass
    return "unknown"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    resource TEXT NOT NULL,
    request TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    idempotency_key TEXT,
    preset TEXT NOT NULL,
    project TEXT NOT NULL,
    output TEXT,
    result TEXT,
    percent REAL NOT NULL DEFAULT 0,
    step TEXT,
    message TEXT,
    scene_index INTEGER,
    scene_total INTEGER,
    steps TEXT NOT NULL DEFAULT '[]',
    scenes TEXT NOT NULL DEFAULT '{}',
    timings TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    error_detail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    run_started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, resource, created_at);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, created_at);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    file TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    info TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_owner ON uploads(owner, created_at);
"""
# (column, definition) added to `jobs` after schema 1 was released; `crashes`: runs of the job that ended without a
# graceful stop (the server was killed or crashed), which is what `JobRunner(max_attempts=...)` counts.
_ADDED_COLUMNS = (("crashes", "INTEGER NOT NULL DEFAULT 0"),)


class FolderLock:
    """Hold a data folder for this process's whole life: an flock on the data folder itself (a folder cannot be
    deleted out from under a running server, while ``server.lock`` can) and on ``server.lock``, which holds the pid
    for the message a second server prints (and keeps older Studio versions out). The kernel drops both when the
    process ends, however it ends.

    Raises:
        StudioError: another server holds the folder (one line: its pid, and what to do).
    """

    def __init__(self, data_dir: Path) -> None:
        import fcntl

        self.data_dir = Path(data_dir)
        cloexec = getattr(os, "O_CLOEXEC", 0)
        folder_fd: int | None = os.open(self.data_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | cloexec)
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(folder_fd)
            raise StudioError(self.in_use_message()) from None
        except OSError as exc:  # a file system without flock on folders (some network ones): server.lock alone
            log.warning("cannot lock the data folder %s itself (%s); relying on %s alone", self.data_dir, exc, LOCK_FILE)
            os.close(folder_fd)
            folder_fd = None
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | cloexec, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if folder_fd is not None:
                os.close(folder_fd)
            raise StudioError(self.in_use_message()) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._fds = [fd] + ([folder_fd] if folder_fd is not None else [])

    def in_use_message(self) -> str:
        return (f"the data folder {self.data_dir} is in use by another Studio server (pid {_lock_holder(self.data_dir)});"
                " stop it, or give this one another --data-dir")

    def release(self) -> None:
        """Let the folder go (closing the descriptors drops the flocks)."""
        while self._fds:
            os.close(self._fds.pop())


class Journal:
    """The SQLite journal of a data folder (one connection, shared by threads under a lock).

    Args:
        data_dir: The data folder (created if missing).
        lock: Take the folder's lock (`FolderLock`), so that two servers never run the same jobs; the kernel
            releases it when the process ends, however it ends.
        check: Run SQLite's ``quick_check`` first and refuse a damaged journal.

    Raises:
        StudioError: the folder is used by another running server, the database is not a Studio journal, or it is
            damaged (`JournalDamaged`; the message says to run ``studio serve --recover``).
    """

    def __init__(self, data_dir: Path, *, lock: bool = True, check: bool = True) -> None:
        self.data_dir = Path(data_dir).expanduser()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudioError(f"cannot create the data folder {self.data_dir} ({exc}); choose another --data-dir") from exc
        self.data_dir = self.data_dir.resolve()
        self.path = self.data_dir / DB_FILE
        self.damage: str | None = None  # set when SQLite reports the file damaged: what the API and health say
        self._folder_lock = FolderLock(self.data_dir) if lock else None
        self.lock = threading.RLock()
        self._backed_up_changes = -1
        recover = f"run `python -m studio serve --recover --data-dir {self.data_dir}`"
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        except sqlite3.DatabaseError as exc:
            self._release_lock()
            raise StudioError(f"cannot open the journal {self.path} ({exc}); check the data folder's permissions and "
                              "disk, or choose another --data-dir") from exc
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StudioError(f"{self.path} was written by another version of Studio "
                                  f"(schema {version}, expected {SCHEMA_VERSION}); use another --data-dir")
            problems = self.check() if check else []
            if problems:
                raise JournalDamaged(f"the journal {self.path} is damaged ({problems[0]}); nothing was changed: stop "
                                     f"every server using the folder and {recover}, which keeps the damaged file "
                                     "aside and rebuilds the journal from its backup and the job and upload folders")
            self._create()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            if is_disk_full(exc):
                raise DiskFull(disk_full_message(self._free(), then="start the server again")) from exc
            raise StudioError(f"{self.path} is not a Studio journal or is damaged ({_first_line(exc)}); {recover} to "
                              "keep it aside and rebuild the journal, or choose another --data-dir") from exc
        except BaseException:
            self._close_quietly()
            raise

    def _create(self) -> None:
        """The tables, and the columns added since schema 1 (only ever added, with defaults, so an older server
        still reads the journal)."""
        self.db.executescript(_SCHEMA)
        have = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        for name, definition in _ADDED_COLUMNS:
            if name not in have:
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _close_quietly(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._folder_lock is not None:
            self._folder_lock.release()
            self._folder_lock = None

    def close(self) -> None:
        """Close the database and release the folder."""
        with self.lock:
            try:
                self.db.close()
            finally:
                self._release_lock()

    # -- integrity and backups -------------------------------------------------------------------------------------
    def check(self, *, full: bool = False) -> list[str]:
        """SQLite's ``quick_check`` (or, with `full`, ``integrity_check``: also indexes against tables) of the
        journal; returns the problems found, [] when it is sound. A damaged journal is remembered (`damage`)."""
        with self.lock:
            problems = check_database(self.db, full=full)
        if problems and self.damage is None:
            self.damage = self._damaged_message(problems[0])
        return problems

    def backup(self) -> Path:
        """Copy the journal to ``studio.db.bak`` beside it with SQLite's online backup API, atomically (a temporary
        file, checked, then renamed): a good backup is never replaced by a damaged journal or a half-written copy.

        Raises:
            JournalDamaged: the journal failed its check (the old backup stays).
            DiskFull: no room for the copy (the old backup stays).
        """
        target = self.data_dir / BACKUP_FILE
        with self.lock:
            problems = self.check()
            if problems:
                raise JournalDamaged(self._damaged_message(problems[0]))
            changes = self.db.total_changes
            fd, name = tempfile.mkstemp(prefix=f".{BACKUP_FILE}.part-", dir=self.data_dir)
            os.close(fd)
            tmp = Path(name)
            try:
                copy = sqlite3.connect(tmp, isolation_level=None)
                try:
                    self.db.backup(copy)
                    copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                    problems = check_database(copy)
                finally:
                    copy.close()
                if problems:
                    raise JournalDamaged(self._damaged_message(problems[0]))
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
                _fsync_folder(self.data_dir)
            except (OSError, sqlite3.DatabaseError) as exc:
                if is_disk_full(exc):
                    raise DiskFull(disk_full_message(self._free(), what="the journal's backup")) from exc
                raise
            finally:
                for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
                    leftover.unlink(missing_ok=True)
            self._backed_up_changes = changes
        return target

    @property
    def changed_since_backup(self) -> bool:
        """Whether this connection changed the journal since its last `backup`."""
        return self.db.total_changes != self._backed_up_changes

    def restore_from(self, backup: Path) -> None:
        """Replace the journal's content with a backup's (SQLite's backup API, into this connection), then bring
        its tables up to date. Only for a journal that holds nothing worth keeping (new, emptied, or set aside)."""
        with self.lock:
            source = sqlite3.connect(_read_only_uri(backup), uri=True)
            try:
                source.backup(self.db)
            finally:
                source.close()
            self.db.execute("PRAGMA journal_mode=WAL")
            self._create()

    def _damaged_message(self, problem: str) -> str:
        """What every job and upload route answers (503) once the journal is found damaged: no server paths."""
        return (f"the server's journal (studio.db in its data folder) is damaged ({problem}); jobs and uploads are "
                "unavailable until the server's operator stops it and runs `studio serve --recover`, which keeps the "
                "damaged file aside and rebuilds the journal from its backup and the job and upload folders")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), serialised with every other use.

        Raises:
            DiskFull: the disk is full (the transaction was rolled back).
        """
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                self._raise(exc)
            try:
                yield self.db
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled it back itself (a full disk)
                    self.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    self._raise(exc)
                raise
            try:
                self.db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                self._raise(exc)

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self.lock:
            try:
                return self.db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                self._raise(exc)

    def execute(self, sql: str, params: tuple = ()) -> int:
        """Run one statement in its own transaction; returns the number of rows changed."""
        with self.lock:
            try:
                return self.db.execute(sql, params).rowcount
            except sqlite3.DatabaseError as exc:
                self._raise(exc)

    def _raise(self, exc: sqlite3.DatabaseError) -> None:
        translated = self._translate(exc)
        if translated is exc:
            raise exc
        raise translated from exc

    def _translate(self, exc: sqlite3.DatabaseError) -> Exception:
        """The error to raise for one of SQLite's: a full disk is `DiskFull` (507); a damaged file `JournalDamaged`
        (503, remembered in `damage`); a busy journal or an I/O error `Unavailable` (503); anything else (a bug) is
        raised as it is."""
        if is_disk_full(exc):
            return DiskFull(disk_full_message(self._free(), then="try again"))
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (type(exc) is sqlite3.DatabaseError and "malformed" in str(exc)):
            if self.damage is None:
                self.damage = self._damaged_message(_first_line(exc))
                log.error("the journal %s is damaged (%s): run `studio serve --recover`", self.path, _first_line(exc))
            return JournalDamaged(self.damage)
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return Unavailable("the server's journal is busy (another program is using it); try again in a moment")
        if code == _SQLITE_IOERR:
            return Unavailable("the server cannot read or write its journal (a disk I/O error); the server's operator "
                               "should check the disk holding the data folder and run `studio serve --check`")
        return exc

    def _free(self) -> int | None:
        try:
            return free_bytes(self.data_dir)
        except OSError:
            return None

    def add_event(self, db: sqlite3.Connection, job_id: str, kind: str, data: dict, time_s: float) -> int:
        """Append an event to a job's stream (inside a transaction); returns its sequence number (1, 2, ...)."""
        row = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)).fetchone()
        seq = int(row[0])
        db.execute("INSERT INTO events (job_id, seq, time, kind, data) VALUES (?, ?, ?, ?, ?)",
                   (job_id, seq, time_s, kind, json.dumps(data, ensure_ascii=True)))
        return seq
