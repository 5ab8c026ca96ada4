"""Content-addressed assets and atomic writes.

An asset's file name is the sha256 of everything that made it (step, provider, model, options, text, seed), so an
edited scene re-makes only its own assets and an unchanged one is found again, whatever its position.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

# Bump when a change to Studio's own code changes what an asset would look like, so old caches are not reused.
ASSET_VERSION = 1


def asset_key(**parts: Any) -> str:
    """The sha256 (hex) of `parts` as canonical JSON; paths and tuples are turned into strings and lists."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    payload = json.dumps(plain({"v": ASSET_VERSION, **parts}), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def file_digest(path: Path, chunk_size: int = 1 << 20) -> str:
    """The sha256 (hex) of a file's bytes, for keys of assets made from user files."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    The temporary name keeps `final`'s extension (``name.part-XXXX.wav``) so tools that choose a format by extension
    still work. On error the temporary file is removed and `final` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = final.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.part-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _usual_mode(tmp)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _process_umask(fallback: int | None = None) -> int:
    """This process's umask, read without changing it (Linux); elsewhere `fallback`, or (at import, while no other
    thread makes files) by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    if fallback is not None:
        return fallback
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _process_umask()


def _usual_mode(path: Path) -> None:
    """Give a temporary file the mode a plainly created file gets (mkstemp makes it 0600, so a finished video or
    asset would be readable by its owner alone); a mode the caller set on purpose is kept."""
    try:
        mode = 0o666 & ~_process_umask(_IMPORT_UMASK)
        if stat.S_IMODE(os.stat(path).st_mode) == 0o600 and mode != 0o600:
            os.chmod(path, mode)
    except OSError:  # the block replaced or removed it: the rename reports what matters
        pass


def atomic_write_bytes(final: Path, data: bytes) -> None:
    """Write `data` to `final` atomically (temp file, fsync, rename)."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def link_or_copy(src: str, dst: str) -> str:
    """Hard-link a file (assets never change in place), or copy it where links are not possible (``shutil``'s
    ``copy_function`` shape)."""
    import os
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def atomic_write_text(final: Path, text: str) -> None:
    """Write `text` (UTF-8) to `final` atomically."""
    atomic_write_bytes(final, text.encode("utf-8"))


class AssetStore:
    """A folder of content-addressed files: ``<key><suffix>`` plus an optional ``<key>.json`` of metadata."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.reused = 0
        self.made = 0

    def path(self, key: str, suffix: str) -> Path:
        return self.folder / f"{key}{suffix}"

    def find(self, key: str, suffix: str) -> Path | None:
        """The asset's path if it is there (counted as reused), else None."""
        path = self.path(key, suffix)
        if path.is_file() and path.stat().st_size > 0:
            self.reused += 1
            return path
        return None

    def read_meta(self, key: str) -> dict | None:
        meta = self.folder / f"{key}.json"
        if not meta.is_file():
            return None
        try:
            return json.loads(meta.read_text("utf-8"))
        except (OSError, ValueError):
            return None  # a damaged side file only means the asset is made again

    def write_meta(self, key: str, meta: dict) -> None:
        atomic_write_text(self.folder / f"{key}.json", json.dumps(meta, ensure_ascii=False, indent=1))

    @contextlib.contextmanager
    def making(self, key: str, suffix: str) -> Iterator[Path]:
        """Yield a temporary path to write the asset to; it becomes ``<key><suffix>`` when the block succeeds."""
        with atomic_path(self.path(key, suffix)) as tmp:
            yield tmp
        self.made += 1
