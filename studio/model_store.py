"""Fetching catalogue models into the Hugging Face hub cache, checking what is here, and removing them.

    entry = load_catalog().get("qwen3-0.6b")
    status(entry).state                  # "present", "partial", "missing" or "gated" (no network)
    folder = pull(entry, on_progress=lambda done, total, msg: ..., cancel=token, yes=True)
    remove(entry)                        # bytes freed

`pull` fetches only the entry's `allow_patterns` files (and drops a ``.bin``/``.ckpt``/flax duplicate of a folder that
has ``.safetensors``), into the standard hub cache layout (``models--org--name/blobs``, ``snapshots/<commit>``,
``refs/<revision>`` and the ``trees/<commit>.json`` listing huggingface_hub itself writes), so `find_weights`, the
providers and ``from_pretrained`` find the files as if ``hf download`` had fetched them.

It downloads file by file itself (huggingface_hub's HTTP session, headers and errors) rather than through
``snapshot_download``: huggingface_hub 2.x deletes a partial file when a download fails or is stopped, and Studio
keeps it (``blobs/<etag>.incomplete``) so that a pull stopped by a cancel, a dropped connection or Ctrl-C continues
where it stopped (an HTTP Range request). Before any byte is fetched it checks the free disk space against what is
left to fetch. Errors are one line: the hub unreachable, a gated repo (the page where its licence is accepted and
HF_TOKEN), not enough space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .catalog import ModelEntry, gigabytes
from .errors import Cancelled, StudioError
from .progress import CancelToken

log = logging.getLogger("studio")

STATES = ("present", "partial", "missing", "gated")
CONFIRM_BYTES = 1_000_000_000  # a pull of more than this asks first (``yes=True`` / ``--yes``)
RETRIES = 3  # a connection dropped in the middle of a file is resumed this many times before the pull gives up
CHUNK_BYTES = 1 << 20
# Weight formats dropped from a folder that has .safetensors (the same weights again, in another format).
_DUPLICATE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".onnx_data")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_GATED: set[str] = set()  # repos whose pull failed as gated in this process

ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ModelStatus:
    """What of a catalogue model is on this machine.

    Attributes:
        entry: The catalogue entry.
        state: ``present`` (every file), ``partial`` (some bytes: a pull to finish), ``missing`` or ``gated``
            (nothing here, and the hub wants its licence accepted with a token: a pull failed so, or the catalogue
            says so and no HF_TOKEN is set).
        bytes_here: Bytes of the entry's files here (partial files included).
        bytes_needed: Bytes of all its files: exact once a pull has listed the repo, else the catalogue's estimate.
        exact: Whether `bytes_needed` comes from the repo's listing.
        folder: The snapshot folder when the model is present.
    """

    entry: ModelEntry
    state: str
    bytes_here: int
    bytes_needed: int
    exact: bool
    folder: Path | None = None

    def describe(self) -> str:
        if self.state == "present":
            return f"present ({gigabytes(self.bytes_here)})"
        if self.state == "partial":
            return f"partial ({gigabytes(self.bytes_here)} of {gigabytes(self.bytes_needed)})"
        return self.state


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    etag: str  # the LFS sha256, or the git blob id: the blob's name in the cache, as huggingface_hub names it


def hub_cache(cache_dir: str | Path | None = None) -> Path:
    """The hub cache folder: `cache_dir`, else ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else huggingface_hub's default
    (read now, so a change of the environment after import counts)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _storage(entry: ModelEntry, cache_dir: str | Path | None) -> Path:
    return hub_cache(cache_dir) / ("models--" + entry.repo.replace("/", "--"))


def _commit_here(storage: Path, revision: str) -> str | None:
    if _COMMIT.match(revision):
        return revision
    try:
        return (storage / "refs" / revision).read_text("utf-8").strip() or None
    except OSError:
        return None


def _listing(storage: Path, commit: str) -> dict[str, RemoteFile] | None:
    """The repo's files at `commit` from ``trees/<commit>.json`` (written by `pull` and by huggingface_hub 2.x)."""
    try:
        data = json.loads((storage / "trees" / f"{commit}.json").read_text("utf-8"))
        return {path: RemoteFile(path, int(info["size"]), info.get("lfs_sha256") or info["blob_id"])
                for path, info in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_listing(storage: Path, commit: str, files: list[dict[str, Any]]) -> None:
    folder = storage / "trees"
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for f in files:
        info: dict[str, Any] = {"size": f["size"], "blob_id": f["blob_id"]}
        if f.get("lfs_sha256"):
            info.update(lfs_sha256=f["lfs_sha256"], lfs_size=f["size"])
        entries[f["path"]] = info
    tmp = folder / f".{commit}.json.tmp"
    tmp.write_text(json.dumps({"format_version": 1, "files": entries}, indent=1), "utf-8")
    os.replace(tmp, folder / f"{commit}.json")


def wanted(entry: ModelEntry, paths: list[str]) -> list[str]:
    """The repo paths `entry` needs: its allow-list, without other-format copies of a folder's safetensors weights."""
    from fnmatch import fnmatch

    chosen = [p for p in paths if any(fnmatch(p, pattern) for pattern in entry.allow_patterns)]
    with_safetensors = {p.rpartition("/")[0] for p in chosen if p.endswith(".safetensors")}
    return [p for p in chosen if not (p.endswith(_DUPLICATE_SUFFIXES) and p.rpartition("/")[0] in with_safetensors)]


def _has_token(token: str | None = None) -> bool:
    if token:
        return True
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except ImportError:
        return bool(os.environ.get("HF_TOKEN"))


def status(entry: ModelEntry, cache_dir: str | Path | None = None) -> ModelStatus:
    """What of `entry` is in the hub cache (no network): see `ModelStatus`."""
    storage = _storage(entry, cache_dir)
    commit = _commit_here(storage, entry.revision) if storage.is_dir() else None
    snapshot = storage / "snapshots" / commit if commit else None
    listing = _listing(storage, commit) if commit else None
    if listing is not None and snapshot is not None:
        files = [listing[p] for p in wanted(entry, list(listing))]
        here = 0
        complete = True
        for f in files:
            if (snapshot / f.path).is_file():
                here += f.size
            else:
                complete = False
                part = storage / "blobs" / f"{f.etag}.incomplete"
                here += part.stat().st_size if part.is_file() else 0
        needed = sum(f.size for f in files)
        state = "present" if complete and files else ("partial" if here else "missing")
        return _gated(ModelStatus(entry, state, here, needed, True, snapshot if state == "present" else None))
    # Fetched some other way (``hf download``, an older huggingface_hub) or not at all: count what is here against
    # the catalogue's estimate.
    here = 0
    if snapshot is not None and snapshot.is_dir():
        paths = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
        here = sum((snapshot / p).stat().st_size for p in wanted(entry, paths))
    if storage.is_dir():
        here += sum(p.stat().st_size for p in (storage / "blobs").glob("*.incomplete"))
    if here and snapshot is not None and here >= 0.9 * entry.download_bytes:
        return ModelStatus(entry, "present", here, here, False, snapshot)
    return _gated(ModelStatus(entry, "partial" if here else "missing", here, entry.download_bytes, False))


def _gated(found: ModelStatus) -> ModelStatus:
    entry = found.entry
    if found.state == "missing" and (entry.repo in _GATED or (entry.gated and not _has_token())):
        return ModelStatus(entry, "gated", found.bytes_here, found.bytes_needed, found.exact)
    return found


# -- pulling -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PullPlan:
    """What a pull would fetch: the commit, the files, the bytes already here and left to fetch, and free space."""

    entry: ModelEntry
    endpoint: str
    commit: str
    files: tuple[RemoteFile, ...]
    total_bytes: int
    remaining_bytes: int
    free_bytes: int
    cache: Path


def _endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"].rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _licence_page(entry: ModelEntry, endpoint: str) -> str:
    return f"https://huggingface.co/{entry.repo}"


def _hub_error(entry: ModelEntry, exc: BaseException, endpoint: str, token: str | None) -> StudioError:
    """One line for what went wrong talking to the hub."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return StudioError(f"cannot fetch {entry.name}: HF_HUB_OFFLINE is set; unset it to download")
    if isinstance(exc, (httpx2.ConnectError, httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)):
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StudioError(f"cannot reach the model hub at {endpoint} to fetch {entry.name} ({reason}); check the "
                           "network connection (or HF_ENDPOINT) and run the pull again")
    status_code = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.GatedRepoError) or (status_code in (401, 403) and entry.gated):
        _GATED.add(entry.repo)
        how = ("your HF_TOKEN is not allowed yet: accept the licence with that account"
               if _has_token(token) else "accept its licence there, then set HF_TOKEN to a token of that account "
               "(https://huggingface.co/settings/tokens)")
        return StudioError(f"{entry.repo} is gated: the hub asks you to accept its licence ({entry.licence}) at "
                           f"{_licence_page(entry, endpoint)} first; {how}")
    if isinstance(exc, errors.RevisionNotFoundError):
        return StudioError(f"{entry.repo} has no revision {entry.revision!r} on the hub")
    if isinstance(exc, errors.RepositoryNotFoundError) or status_code in (401, 403):
        return StudioError(f"{entry.repo} was not found on the hub at {endpoint}, or is private (set HF_TOKEN to a "
                           f"token that can read it; a gated repo's licence is accepted at "
                           f"{_licence_page(entry, endpoint)})")
    if isinstance(exc, errors.HfHubHTTPError):
        return StudioError(f"the hub refused {entry.repo} (HTTP {status_code}); try again later")
    first = str(exc).splitlines()[0] if str(exc) else ""
    return StudioError(f"cannot fetch {entry.name}: {type(exc).__name__}: {first}")


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def plan_pull(entry: ModelEntry, *, token: str | None = None, cache_dir: str | Path | None = None,
              endpoint: str | None = None) -> PullPlan:
    """List the repo on the hub (one request) and work out what a pull would fetch; nothing is downloaded.

    Raises:
        StudioError: the hub cannot be reached, the repo is gated, missing or private (one line each).
    """
    if not entry.supported:
        log.info("%s has no Studio provider yet (needs %s); fetching it anyway", entry.name, entry.loader)
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise StudioError("huggingface_hub is not installed: pip install huggingface_hub") from exc
    url = _endpoint(endpoint)
    try:
        info = HfApi(endpoint=url, token=token).model_info(entry.repo, revision=entry.revision, files_metadata=True)
    except Exception as exc:  # every failure talking to the hub becomes one line
        raise _hub_error(entry, exc, url, token) from None
    if not info.sha or info.siblings is None:
        raise StudioError(f"the hub at {url} gave no file list for {entry.repo}")
    if getattr(info, "gated", False) and not entry.gated:
        log.info("%s is gated on the hub although the catalogue does not say so", entry.repo)
    listed = []
    for s in info.siblings:
        if s.size is None:
            raise StudioError(f"the hub at {url} gave no size for {entry.repo}/{s.rfilename}")
        listed.append({"path": s.rfilename, "size": int(s.size), "blob_id": s.blob_id or "",
                       "lfs_sha256": s.lfs.sha256 if s.lfs else None})
    by_path = {f["path"]: RemoteFile(f["path"], f["size"], f["lfs_sha256"] or f["blob_id"]) for f in listed}
    files = tuple(by_path[p] for p in wanted(entry, list(by_path)))
    if not files:
        raise StudioError(f"none of {entry.repo}'s files match the catalogue's allow_patterns for {entry.name} "
                          f"({', '.join(entry.allow_patterns)}): the repo has changed; the catalogue needs updating")
    storage = _storage(entry, cache_dir)
    _write_listing(storage, info.sha, listed)  # so that `status` knows every file's size from now on, offline
    snapshot = storage / "snapshots" / info.sha
    remaining = 0
    for f in files:
        if (snapshot / f.path).is_file() or (storage / "blobs" / f.etag).is_file():
            continue
        part = storage / "blobs" / f"{f.etag}.incomplete"
        remaining += f.size - (min(part.stat().st_size, f.size) if part.is_file() else 0)
    return PullPlan(entry, url, info.sha, files, sum(f.size for f in files), remaining,
                    _free_bytes(hub_cache(cache_dir)), hub_cache(cache_dir))


def pull(entry: ModelEntry, *, on_progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
         token: str | None = None, cache_dir: str | Path | None = None, yes: bool = False,
         endpoint: str | None = None) -> Path:
    """Fetch `entry`'s files into the hub cache (what is here already is kept; a partial file is continued).

    Args:
        entry: A catalogue entry (`studio.catalog.load_catalog().get(name)`).
        on_progress: Called with (bytes done, bytes in all, message) as bytes arrive (bytes already here count as done).
        cancel: Stops between and within files (`Cancelled`); what was fetched stays, to resume.
        token: A Hugging Face token (default: ``HF_TOKEN`` or the one ``hf auth login`` saved), for gated repos.
        cache_dir: The hub cache (default: ``HF_HUB_CACHE``).
        yes: The caller has confirmed a download of more than `CONFIRM_BYTES` (``--yes``); without it such a pull
            is refused before it starts, naming the size.
        endpoint: The hub (default ``HF_ENDPOINT`` or https://huggingface.co).

    Returns:
        The snapshot folder, which `find_weights` and ``from_pretrained`` load.

    Raises:
        StudioError: unreachable hub, gated/missing repo, not enough disk space, an unconfirmed big download, a
            connection that kept dropping (run again to resume) or a corrupt file (one line each).
        Cancelled: `cancel` was set.
    """
    if cancel is not None:
        cancel.check()
    plan = plan_pull(entry, token=token, cache_dir=cache_dir, endpoint=endpoint)
    if plan.remaining_bytes > plan.free_bytes:
        raise StudioError(f"not enough disk space for {entry.name} in {plan.cache}: "
                          f"{plan.free_bytes / 1e9:.1f} GB free, {plan.remaining_bytes / 1e9:.1f} GB needed; free some "
                          "space or point HF_HUB_CACHE at a bigger disk")
    if plan.remaining_bytes > CONFIRM_BYTES and not yes:
        raise StudioError(f"{entry.name} is a {plan.remaining_bytes / 1e9:.1f} GB download: confirm it (--yes, or "
                          "yes=True)")
    storage = _storage(entry, cache_dir)
    snapshot = storage / "snapshots" / plan.commit
    if plan.commit != entry.revision:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        ref = storage / "refs" / entry.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text("utf-8").strip() != plan.commit:
            tmp = ref.with_name(f".{ref.name}.tmp")
            tmp.write_text(plan.commit, "utf-8")
            os.replace(tmp, ref)
    report = on_progress or (lambda done, total, message: None)
    meter = _Meter(plan.total_bytes - plan.remaining_bytes, plan.total_bytes, report)
    report(meter.done, meter.total, f"{entry.name}: {len(plan.files)} files, "
                                    f"{gigabytes(plan.remaining_bytes)} to fetch")
    for f in plan.files:
        if cancel is not None:
            cancel.check()
        target = snapshot / f.path
        blob = storage / "blobs" / f.etag
        if target.is_file():
            continue
        if not blob.is_file():
            _fetch(entry, plan, f, blob, meter, cancel, token)
        _link(blob, target)
    report(meter.total, meter.total, f"{entry.name}: done")
    return snapshot


class _Meter:
    def __init__(self, done: int, total: int, report: ProgressCallback) -> None:
        self.done, self.total, self.report = done, total, report

    def add(self, count: int, message: str) -> None:
        self.done += count
        self.report(self.done, self.total, message)


def _fetch(entry: ModelEntry, plan: PullPlan, f: RemoteFile, blob: Path, meter: _Meter, cancel: CancelToken | None,
           token: str | None) -> None:
    """Download one file to ``blobs/<etag>``, continuing ``blobs/<etag>.incomplete``; checked by size and sha256."""
    import httpx2
    from filelock import FileLock
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    blob.parent.mkdir(parents=True, exist_ok=True)
    locks = hub_cache(Path(plan.cache)) / ".locks" / blob.parent.parent.name
    locks.mkdir(parents=True, exist_ok=True)
    part = blob.with_name(f"{blob.name}.incomplete")
    url = hf_hub_url(entry.repo, f.path, revision=plan.commit, endpoint=plan.endpoint)
    with FileLock(str(locks / f"{f.etag}.lock")):
        if blob.is_file():  # another process finished it meanwhile
            return
        attempts = 0
        while True:
            have = part.stat().st_size if part.is_file() else 0
            if have > f.size:
                part.unlink()
                meter.add(-have, f.path)
                have = 0
            if have == f.size:
                break
            headers = build_hf_headers(token=token)
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                with get_session().stream("GET", url, headers=headers, follow_redirects=True,
                                          timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
                    if response.status_code >= 400:
                        response.read()
                        hf_raise_for_status(response)
                    if have and response.status_code == 200:  # the server ignored the Range: start again
                        meter.add(-have, f.path)
                        have = 0
                    with open(part, "ab" if have else "wb") as out:
                        for chunk in response.iter_bytes(CHUNK_BYTES):
                            if cancel is not None and cancel.cancelled:
                                raise Cancelled()
                            out.write(chunk)
                            meter.add(len(chunk), f.path)
                break
            except Cancelled:
                raise
            except (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.ReadTimeout, httpx2.WriteError) as exc:
                attempts += 1
                now = part.stat().st_size if part.is_file() else 0
                if attempts > RETRIES:
                    raise StudioError(f"the download of {entry.repo}/{f.path} from {plan.endpoint} broke off "
                                      f"({gigabytes(now)} of {gigabytes(f.size)} here: {type(exc).__name__}); run "
                                      "the same pull again to continue where it stopped") from None
                log.warning("%s/%s: connection dropped at %d bytes; resuming", entry.repo, f.path, now)
                time.sleep(min(0.2 * attempts, 2.0))
            except Exception as exc:
                raise _hub_error(entry, exc, plan.endpoint, token) from None
        size = part.stat().st_size
        if size != f.size:
            raise StudioError(f"{entry.repo}/{f.path}: the hub sent {size} bytes, not {f.size}; run the pull again")
        if _SHA256.match(f.etag) and _sha256(part) != f.etag:
            part.unlink()
            meter.add(-size, f.path)
            raise StudioError(f"{entry.repo}/{f.path} arrived damaged (its sha256 does not match); it was deleted: "
                              "run the pull again")
        os.chmod(part, 0o644)
        os.replace(part, blob)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES * 8), b""):
            digest.update(block)
    return digest.hexdigest()


def _link(blob: Path, target: Path) -> None:
    """``snapshots/<commit>/<path>`` -> ``../../blobs/<etag>`` (relative, as huggingface_hub links; a copy where
    symlinks are not allowed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        os.symlink(os.path.relpath(blob, target.parent), target)
    except OSError:
        shutil.copyfile(blob, target)


# -- removing ----------------------------------------------------------------------------------------------------------
def remove(entry: ModelEntry, cache_dir: str | Path | None = None) -> int:
    """Delete every revision of `entry` from the hub cache (huggingface_hub's delete strategy) and its partial files;
    returns the bytes freed (0 when nothing was here)."""
    storage = _storage(entry, cache_dir)
    if not storage.is_dir():
        return 0
    before = _disk_bytes(storage)
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(hub_cache(cache_dir))
        revisions = [r.commit_hash for repo in info.repos if repo.repo_id == entry.repo and repo.repo_type == "model"
                     for r in repo.revisions]
        if revisions:
            info.delete_revisions(*revisions).execute()
    except Exception as exc:  # a damaged cache entry: removed by hand below
        log.info("scan_cache_dir could not remove %s (%s); removing its folder", entry.repo, exc)
    if storage.exists():
        shutil.rmtree(storage, ignore_errors=True)
    _GATED.discard(entry.repo)
    return before - (_disk_bytes(storage) if storage.exists() else 0)


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
