"""Uploads: a user's images, audio, video and fonts for jobs (a scene's media, background music, a watermark, a
caption font).

An upload is checked by its content, never by its name or the type a client claims: images are opened with Pillow
(pixel count checked from the header before anything is decoded, then decoded completely), audio and video with
FFmpeg's libraries restricted to the ``file`` protocol and a list of container formats (no playlists, no
references to other files or URLs), fonts by their signature and then FreeType (through Pillow, see
`studio.fonts.inspect_font`). It is stored under a name the server makes (``<upload id>.<ext>``, the extension
from the detected format) in the owner's folder, with its record beside it (``<upload id>.json``: owner, kind, size,
hash, what the check found) and in the journal; a job names it by its id. The record lets a lost journal be rebuilt
(`UploadStore.adopt`); no stored file is ever deleted because the journal does not know it.

    store = UploadStore(journal, UploadLimits(max_bytes=50_000_000))
    upload = store.save("alice", open("song.mp3", "rb"), filename="song.mp3")
    upload.kind, upload.id        # "audio", "3f2a..."
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Callable, Iterable

from ..assets import atomic_write_text
from ..errors import StudioError
from ..fonts import FONT_MAX_BYTES, FONT_SIGNATURES, FontError, inspect_font
from .journal import (ID_RE, Conflict, DiskFull, Journal, NotFound, RequestError, TooLarge, check_id, check_owner,
                      disk_full_message, free_bytes, is_disk_full, new_id, owner_key, safe_path)

KINDS = ("image", "audio", "video", "font")
UPLOADS_DIR = "uploads"
# Pillow formats accepted, and the extension each is stored with.
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}
# FFmpeg demuxers accepted (nothing that reads playlists or other files), and the extension for each.
MEDIA_FORMATS = {
    "mov,mp4,m4a,3gp,3g2,mj2": (".mp4", ".m4a"),
    "matroska,webm": (".mkv", ".mkv"),
    "avi": (".avi", None),
    "wav": (None, ".wav"),
    "mp3": (None, ".mp3"),
    "ogg": (None, ".ogg"),
    "flac": (None, ".flac"),
    "aac": (None, ".aac"),
}
# Names that claim a font: such a file must be a font Studio can use (a renamed image is refused, not kept as one).
FONT_NAME_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc", ".woff", ".woff2", ".pfb", ".pfa", ".fon", ".fnt")
_FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,wav,mp3,ogg,flac,aac"
_CHUNK = 1 << 20
RECORD_SUFFIX = ".json"  # <upload id>.json beside <upload id>.<ext>: the upload's record (no upload is stored as .json)


@dataclass(frozen=True)
class UploadLimits:
    """Limits on uploads.

    Attributes:
        max_bytes: Largest file accepted.
        max_pixels: Largest image (width x height) accepted; checked from the header before decoding.
        max_duration_s: Longest audio or video accepted.
        max_owner_bytes: Total size of one user's uploads.
        max_font_bytes: Largest font file accepted (Studio reads none larger than `studio.fonts.FONT_MAX_BYTES`).
    """

    max_bytes: int = 50_000_000
    max_pixels: int = 40_000_000
    max_duration_s: float = 1800.0
    max_owner_bytes: int = 1_000_000_000
    max_font_bytes: int = FONT_MAX_BYTES


@dataclass(frozen=True)
class Upload:
    """A stored upload.

    Attributes:
        id: Its id (32 hex digits); job requests name it.
        owner: Who uploaded it.
        kind: ``image``, ``audio``, ``video`` or ``font``.
        file: Its file name in the owner's upload folder (made by the server).
        size_bytes: Its size.
        sha256: Its content hash.
        name: The client's file name, for display only (never used as a path).
        info: What the content check found (format, width, height, duration_s, has_audio, has_video; a font's
            format, family and style).
        created_at: Unix time of the upload.
    """

    id: str
    owner: str
    kind: str
    file: str
    size_bytes: int
    sha256: str
    name: str
    info: dict
    created_at: float

    def to_public(self) -> dict:
        """What the API shows of it."""
        return {"id": self.id, "kind": self.kind, "size_bytes": self.size_bytes, "sha256": self.sha256,
                "name": self.name, "created_at": self.created_at, **{k: v for k, v in self.info.items()}}


def _display_name(filename: str | None) -> str:
    """The client's file name reduced to printable characters, for display only."""
    name = os.path.basename(str(filename or "upload").replace("\\", "/"))
    name = "".join(c for c in name if c.isprintable())[:120]
    return name or "upload"


class UploadStore:
    """Users' uploads in a data folder, recorded in its journal.

    Args:
        journal: The data folder's journal.
        limits: Size and content limits.
        used_by: ``used_by(db, owner, upload_id) -> (job id, state) | None``: a waiting or running job that uses the
            upload (inside the delete's transaction); such an upload cannot be deleted (the job runner gives it).
    """

    def __init__(self, journal: Journal, limits: UploadLimits | None = None, *,
                 used_by: Callable[[sqlite3.Connection, str, str], tuple[str, str] | None] | None = None) -> None:
        self.journal = journal
        self.limits = limits or UploadLimits()
        self.used_by = used_by
        self.root = journal.data_dir / UPLOADS_DIR
        self.root.mkdir(exist_ok=True)

    def folder(self, owner: str) -> Path:
        """The owner's upload folder (created on first use)."""
        folder = safe_path(self.root, owner_key(owner))
        folder.mkdir(exist_ok=True)
        return folder

    # -- saving ----------------------------------------------------------------------------------------------------
    def save(self, owner: str, source: IO[bytes] | Iterable[bytes], filename: str | None = None) -> Upload:
        """Check and store an upload.

        Args:
            owner: The user.
            source: A binary file object (read in chunks) or an iterable of byte chunks.
            filename: The client's file name (display only).

        Raises:
            TooLarge: over `UploadLimits.max_bytes`, or the owner's total over `max_owner_bytes`.
            DiskFull: the disk holding the data folder filled up (nothing of this upload is kept; HTTP 507).
            RequestError: empty, or not an image, audio, video or font this server accepts (the message says why).
        """
        # 1. Copy it to a temporary name in the owner's folder, counting bytes.
        folder = self.folder(owner)
        upload_id = new_id()
        tmp = folder / f".{upload_id}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            try:
                with open(tmp, "xb") as out:
                    for chunk in _chunks(source):
                        size += len(chunk)
                        if size > self.limits.max_bytes:
                            raise TooLarge(f"the file is larger than the upload limit of "
                                           f"{self.limits.max_bytes // 1_000_000} MB", field="file")
                        digest.update(chunk)
                        out.write(chunk)
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFull(disk_full_message(self._free(), what="the upload",
                                                     then="upload the file again"), field="file") from None
                raise
            if size == 0:
                raise RequestError("the file is empty", field="file")
            used = self._owner_bytes(owner)
            if used + size > self.limits.max_owner_bytes:
                raise TooLarge(f"your uploads would total {(used + size) / 1e6:.0f} MB, over the limit of "
                               f"{self.limits.max_owner_bytes / 1e6:.0f} MB; delete some first", field="file")

            # 2. Check the content and choose the stored name.
            kind, ext, info = self._check_content(tmp, size, filename)
            final = folder / f"{upload_id}{ext}"
            try:
                os.replace(tmp, final)
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFull(disk_full_message(self._free(), what="the upload",
                                                     then="upload the file again"), field="file") from None
                raise
        finally:
            if tmp.exists():
                tmp.unlink()

        # 3. Record it, beside the file (what rebuilds the journal's row if the journal is lost) and in the journal;
        #    a record that cannot be written takes the file with it.
        upload = Upload(id=upload_id, owner=owner, kind=kind, file=final.name, size_bytes=size,
                        sha256=digest.hexdigest(), name=_display_name(filename), info=info, created_at=time.time())
        try:
            self.write_record(upload)
            with self.journal.transaction() as db:
                db.execute("INSERT INTO uploads (id, owner, kind, file, size_bytes, sha256, name, info, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (upload.id, owner, kind, upload.file, size, upload.sha256, upload.name,
                            json.dumps(info, ensure_ascii=True), upload.created_at))
        except BaseException as exc:
            self._record_path(upload).unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskFull(disk_full_message(self._free(), what="the upload", then="upload the file again"),
                               field="file") from exc
            raise
        return upload

    def _free(self) -> int | None:
        try:
            return free_bytes(self.root)
        except OSError:
            return None

    # -- records beside the files ------------------------------------------------------------------------------------
    def _record_path(self, upload: Upload) -> Path:
        return safe_path(self.root, owner_key(upload.owner), f"{upload.id}{RECORD_SUFFIX}")

    def write_record(self, upload: Upload) -> None:
        """Write the upload's record (``<id>.json``, atomically) beside its file."""
        record = {"format": 1, **asdict(upload)}
        atomic_write_text(self._record_path(upload), json.dumps(record, ensure_ascii=True, indent=1))

    def _read_record(self, path: Path) -> Upload | None:
        """The upload a record file describes, if it is a sound record of a file that is there; else None."""
        try:
            data = json.loads(path.read_text("utf-8"))
            upload = Upload(id=str(data["id"]), owner=check_owner(data["owner"]), kind=str(data["kind"]),
                            file=str(data["file"]), size_bytes=int(data["size_bytes"]), sha256=str(data["sha256"]),
                            name=_display_name(data["name"]), info=dict(data["info"]),
                            created_at=float(data["created_at"]))
            if (upload.id != path.name[:-len(RECORD_SUFFIX)] or not ID_RE.match(upload.id) or upload.kind not in KINDS
                    or owner_key(upload.owner) != path.parent.name or not upload.file.startswith(upload.id)):
                return None
            stored = safe_path(self.root, path.parent.name, upload.file)
        except (OSError, ValueError, TypeError, KeyError, StudioError):
            return None
        if stored.is_symlink() or not stored.is_file() or stored.stat().st_size != upload.size_bytes:
            return None
        return upload

    def _owner_folders(self) -> list[Path]:
        return sorted(f for f in self.root.iterdir() if f.is_dir() and not f.is_symlink())

    def adopt(self) -> tuple[list[str], list[str]]:
        """Journal rows for the uploads whose records the journal lacks (it was lost, emptied or restored from an
        older backup); returns (the ids adopted, the record files that could not be used, as ``owner/name``)."""
        known = {row["id"] for row in self.journal.query("SELECT id FROM uploads")}
        adopted, unusable = [], []
        for folder in self._owner_folders():
            for path in sorted(folder.glob(f"*{RECORD_SUFFIX}")):
                upload_id = path.name[:-len(RECORD_SUFFIX)]
                if upload_id in known or not ID_RE.match(upload_id):
                    continue
                upload = self._read_record(path)
                if upload is None:
                    unusable.append(f"{folder.name}/{path.name}")
                    continue
                with self.journal.transaction() as db:
                    db.execute("INSERT OR IGNORE INTO uploads (id, owner, kind, file, size_bytes, sha256, name, info,"
                               " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (upload.id, upload.owner, upload.kind, upload.file, upload.size_bytes, upload.sha256,
                                upload.name, json.dumps(upload.info, ensure_ascii=True), upload.created_at))
                adopted.append(upload.id)
        return adopted, unusable

    def write_missing_records(self) -> int:
        """Write the record of every upload the journal knows whose record is missing (uploads stored before records
        existed); returns how many were written."""
        written = 0
        for row in self.journal.query("SELECT id, owner FROM uploads"):
            upload = self.get(row["owner"], row["id"])
            try:
                if not self._record_path(upload).exists() and self.path(upload):
                    self.write_record(upload)
                    written += 1
            except (NotFound, OSError):
                continue
        return written

    def drop_missing(self) -> list[str]:
        """Remove the journal rows of uploads whose files are gone (after a journal was restored from a backup older
        than their deletion); returns their ids. Only rows go: no file is touched."""
        dropped = []
        for row in self.journal.query("SELECT id, owner, file FROM uploads"):
            try:
                stored = safe_path(self.root, owner_key(row["owner"]), row["file"])
            except (NotFound, StudioError):
                continue
            if not stored.exists():
                self.journal.execute("DELETE FROM uploads WHERE id = ?", (row["id"],))
                dropped.append(row["id"])
        return dropped

    def unknown_files(self) -> list[str]:
        """Stored files (``owner/name``) that neither the journal nor a record names: kept, never deleted."""
        known = {(owner_key(row["owner"]), row["file"]) for row in self.journal.query("SELECT owner, file FROM uploads")}
        found = []
        for folder in self._owner_folders():
            for path in sorted(folder.iterdir()):
                if (not _is_temp(path.name) and not path.name.endswith(RECORD_SUFFIX)
                        and (folder.name, path.name) not in known):
                    found.append(f"{folder.name}/{path.name}")
        return found

    def _owner_bytes(self, owner: str) -> int:
        row = self.journal.query("SELECT COALESCE(SUM(size_bytes), 0) FROM uploads WHERE owner = ?", (owner,))
        return int(row[0][0])

    def _check_content(self, path: Path, size: int, filename: str | None) -> tuple[str, str, dict]:
        """(kind, extension, info) of a file, by its content (a name only ever makes the check stricter)."""
        with open(path, "rb") as handle:
            head = handle.read(64)
        if head[:4] in FONT_SIGNATURES or str(filename or "").lower().endswith(FONT_NAME_SUFFIXES):
            return self._check_font(path, size)
        if head.lstrip().startswith((b"#EXTM3U", b"ffconcat", b"#EXT")):
            raise RequestError("playlists are not accepted; upload the media file itself", field="file")
        image = self._check_image(path)
        if image is not None:
            return image
        return self._check_media(path)

    def _check_font(self, path: Path, size: int) -> tuple[str, str, dict]:
        if size > self.limits.max_font_bytes:
            raise TooLarge(f"the font is {size / 1e6:.1f} MB; fonts of up to {self.limits.max_font_bytes / 1e6:.0f} MB "
                           "are accepted", field="file")
        try:
            facts = inspect_font(path)
        except FontError as exc:  # its message never holds the path
            raise RequestError(f"the file is not a font this server accepts: {exc}; upload a TrueType or OpenType "
                               "font (.ttf, .otf)", field="file") from None
        fmt = "opentype" if facts.suffix == ".otf" else "truetype"
        return "font", facts.suffix, {"format": fmt, "family": facts.family, "style": facts.style}

    def _check_image(self, path: Path) -> tuple[str, str, dict] | None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                fmt = img.format
                width, height = img.size
        except UnidentifiedImageError:
            return None  # not an image: try audio and video
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise RequestError(f"the image cannot be read ({_reason(exc, path)})", field="file") from exc
        if fmt not in IMAGE_FORMATS:
            raise RequestError(f"{fmt} images are not accepted; upload {', '.join(IMAGE_FORMATS)}", field="file")
        if width < 1 or height < 1 or width * height > self.limits.max_pixels:
            raise RequestError(f"the image is {width}x{height}; the limit is {self.limits.max_pixels / 1e6:.0f} "
                               "megapixels: scale it down", field="file")
        try:
            with Image.open(path) as img:
                img.load()  # decode it completely: a truncated or corrupt file fails here, not in a render
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise RequestError(f"the image cannot be decoded ({_reason(exc, path)})", field="file") from exc
        return "image", IMAGE_FORMATS[fmt], {"format": fmt.lower(), "width": width, "height": height}

    def _check_media(self, path: Path) -> tuple[str, str, dict]:
        import av

        try:
            with av.open(str(path), options={"protocol_whitelist": "file", "format_whitelist": _FORMAT_WHITELIST},
                         metadata_errors="ignore") as container:
                fmt = container.format.name
                video = next((s for s in container.streams.video if s.codec_context.width), None)
                audio = container.streams.audio[0] if container.streams.audio else None
                duration = float(container.duration / 1_000_000) if container.duration else 0.0
                width = video.codec_context.width if video is not None else 0
                height = video.codec_context.height if video is not None else 0
                # Decode the first frame: a header alone proves nothing.
                first = video if video is not None else audio
                if first is not None and next(container.decode(first), None) is None:
                    raise ValueError("no frame could be decoded")
        except (av.error.FFmpegError, ValueError, IndexError, OSError, StopIteration) as exc:
            raise RequestError("the file is not an image, audio or video this server accepts (PNG, JPEG, WebP, MP4, "
                               f"MOV, MKV, WebM, AVI, WAV, MP3, OGG, FLAC, AAC): {_reason(exc, path)}",
                               field="file") from exc
        if fmt not in MEDIA_FORMATS:
            raise RequestError(f"{fmt} files are not accepted", field="file")
        if video is None and audio is None:
            raise RequestError("the file holds no audio or video stream", field="file")
        if not 0 < duration <= self.limits.max_duration_s:
            raise RequestError(f"the file lasts {duration:.1f} s; accepted: up to {self.limits.max_duration_s:.0f} s",
                               field="file")
        if video is not None and width * height > self.limits.max_pixels:
            raise RequestError(f"the video is {width}x{height}; the limit is {self.limits.max_pixels / 1e6:.0f} "
                               "megapixels", field="file")
        video_ext, audio_ext = MEDIA_FORMATS[fmt]
        kind = "video" if video is not None else "audio"
        ext = video_ext if kind == "video" else audio_ext
        if ext is None:
            raise RequestError(f"{fmt} files are accepted as {'audio' if kind == 'video' else 'video'} only", field="file")
        return kind, ext, {"format": fmt.split(",")[0], "width": width, "height": height,
                           "duration_s": round(duration, 3), "has_audio": audio is not None,
                           "has_video": video is not None}

    # -- finding ---------------------------------------------------------------------------------------------------
    def get(self, owner: str, upload_id: str, *, field: str = "upload_id") -> Upload:
        """The owner's upload `upload_id`.

        Raises:
            NotFound: a malformed id, or no upload with that id belongs to `owner`.
        """
        check_id(upload_id, field, "upload")
        rows = self.journal.query("SELECT * FROM uploads WHERE id = ? AND owner = ?", (upload_id, owner))
        if not rows:
            raise NotFound(f"no upload with id {upload_id!r}", field=field)
        row = rows[0]
        return Upload(id=row["id"], owner=row["owner"], kind=row["kind"], file=row["file"],
                      size_bytes=row["size_bytes"], sha256=row["sha256"], name=row["name"],
                      info=json.loads(row["info"]), created_at=row["created_at"])

    def path(self, upload: Upload) -> Path:
        """The stored file of an upload, checked (it must still be there, a plain file, not a link)."""
        path = safe_path(self.root, owner_key(upload.owner), upload.file)
        if not path.is_file():
            raise NotFound(f"upload {upload.id} is no longer stored; upload the file again")
        return path

    def list(self, owner: str, limit: int = 100) -> list[Upload]:
        """The owner's uploads, newest first."""
        rows = self.journal.query("SELECT id FROM uploads WHERE owner = ? ORDER BY created_at DESC LIMIT ?",
                                  (owner, int(limit)))
        return [self.get(owner, row["id"]) for row in rows]

    def delete(self, owner: str, upload_id: str) -> None:
        """Remove an upload and its file.

        Raises:
            NotFound: no such upload of `owner`.
            Conflict: a waiting or running job uses it (the message names the job); cancel the job or let it end.
        """
        upload = self.get(owner, upload_id)
        with self.journal.transaction() as db:
            user = self.used_by(db, owner, upload.id) if self.used_by is not None else None
            if user is not None:
                raise Conflict(f"upload {upload.id} is used by job {user[0]}, which is {user[1]}; cancel that job or "
                               "wait until it ends, then delete the upload", field="upload_id")
            db.execute("DELETE FROM uploads WHERE id = ?", (upload.id,))
        self._record_path(upload).unlink(missing_ok=True)
        path = safe_path(self.root, owner_key(owner), upload.file)
        if path.is_file():
            path.unlink()

    def sweep(self, *, older_than_s: float | None = None, keep: Iterable[str] = (), now: float | None = None,
              temp: bool = True) -> int:
        """Remove temporary files left by a crash (with `temp`: only when no upload can be under way, at start) and
        (with `older_than_s`) uploads older than that which no waiting or running job uses (`keep`); returns how
        many files went. A file the journal does not know is never removed for that reason (the journal may have
        been lost: `adopt` brings its row back from its record)."""
        removed = 0
        for folder in self._owner_folders() if temp else ():
            for path in folder.iterdir():
                if _is_temp(path.name) and (path.is_file() or path.is_symlink()):
                    path.unlink()
                    removed += 1
        if older_than_s is not None:
            keep = set(keep)
            cutoff = (time.time() if now is None else now) - older_than_s
            for row in self.journal.query("SELECT id, owner FROM uploads WHERE created_at < ?", (cutoff,)):
                if row["id"] not in keep:
                    try:
                        self.delete(row["owner"], row["id"])
                    except (Conflict, NotFound):  # a job took it up (or it went) since `keep` was made
                        continue
                    removed += 1
        return removed


def _is_temp(name: str) -> bool:
    """A temporary name of this module's or of `studio.assets.atomic_path` (``.<id>.part``, ``.<name>.part-*``)."""
    return name.startswith(".") and (name.endswith(".part") or ".part-" in name)


def _reason(exc: BaseException, path: Path) -> str:
    """A decoder's complaint without the server's own file path in it."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).replace(str(path), "the file").replace(path.name, "the file")


def _chunks(source: IO[bytes] | Iterable[bytes]) -> Iterable[bytes]:
    if hasattr(source, "read"):
        while True:
            chunk = source.read(_CHUNK)  # type: ignore[union-attr]
            if not chunk:
                return
            yield chunk
    else:
        for chunk in source:
            if chunk:
                yield bytes(chunk)
