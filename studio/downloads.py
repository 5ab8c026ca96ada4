"""Model downloads that run in the background, with progress and cancel: what the studio's Models panel drives.

    downloads = Downloads()
    downloads.start("sdxl-lightning")            # a thread pulls it (`studio.model_store.pull`: allow-listed, resumable)
    downloads.state("sdxl-lightning")            # {"state": "running", "done": ..., "total": ..., "speed": ..., ...}
    downloads.cancel("sdxl-lightning")           # stops it; what was fetched stays, so the next start resumes

One download per model at a time; a handler only starts, reads or cancels (it never waits for a download), so a long
download holds no worker thread of the web server. Whether a download may be started at all is the caller's rule
(`download_allowed`): a studio on the user's own machine or a Space may, a shared server only when its operator says so.

Downloads on first use (`first_use_enabled`): off unless asked for (``--download`` on the CLI, ``STUDIO_DOWNLOAD_MODELS=1``,
the app's setting); on by default on a Hugging Face Space (the hub is near and ``/data`` persists). `fetch_for_run`
then pulls, before a step runs, the model that ``auto`` would use if only its weights were here.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import StudioError
from .progress import CancelToken

DOWNLOAD_ENV = "STUDIO_DOWNLOAD_MODELS"  # download a missing model on first use
ALLOW_ENV = "STUDIO_ALLOW_MODEL_DOWNLOADS"  # let a shared server's users start downloads from the Models panel
STATES = ("running", "done", "failed", "canceled")


def _truthy(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def on_space(environ: Any = os.environ) -> bool:
    """Running on a Hugging Face Space (it sets ``SPACE_ID``)."""
    return bool(environ.get("SPACE_ID", "").strip())


def first_use_enabled(explicit: bool | None = None, environ: Any = os.environ) -> bool:
    """Whether a run may download a missing model before it needs it: `explicit` (``--download``, the app's
    setting) wins, then ``STUDIO_DOWNLOAD_MODELS``, then on for a Hugging Face Space and off elsewhere."""
    if explicit is not None:
        return bool(explicit)
    said = _truthy(environ.get(DOWNLOAD_ENV))
    return said if said is not None else on_space(environ)


def download_allowed(local: bool, environ: Any = os.environ) -> bool:
    """Whether users of a studio may start downloads: yes on the user's own machine (`local`) or a Space (its owner's),
    on a shared server only with ``STUDIO_ALLOW_MODEL_DOWNLOADS=1`` (disk and bandwidth are the operator's)."""
    said = _truthy(environ.get(ALLOW_ENV))
    return said if said is not None else (local or on_space(environ))


@dataclass
class Download:
    """One model's download: its state, bytes so far and in all, speed and what went wrong."""

    name: str
    state: str = "running"
    done: int = 0
    total: int = 0
    message: str = "starting"
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    cancel: CancelToken = field(default_factory=CancelToken, repr=False)

    @property
    def speed(self) -> float:
        """Bytes a second so far."""
        elapsed = (self.finished or time.monotonic()) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.state != "running" or not self.total or self.speed <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.speed)

    def to_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "done": self.done, "total": self.total,
                "percent": round(100.0 * self.done / self.total, 1) if self.total else (100.0 if self.state == "done" else 0.0),
                "speed": self.speed, "eta_s": self.eta_s, "message": self.message, "error": self.error}


class Downloads:
    """The downloads of one process (a studio server): one thread per running download.

    Args:
        pull: ``pull(entry, on_progress=, cancel=)``, default `studio.model_store.pull`.
        catalog: ``catalog.get(name)``, default `studio.catalog.load_catalog()`.
    """

    def __init__(self, pull: Callable | None = None, catalog: Any = None) -> None:
        self._pull = pull
        self._catalog = catalog
        self._lock = threading.Lock()
        self._items: dict[str, Download] = {}

    def _entry(self, name: str) -> Any:
        from .catalog import load_catalog

        return (self._catalog or load_catalog()).get(name)

    def start(self, name: str) -> Download:
        """Start downloading model `name` (a catalogue name or hub id) in the background; a running one is returned
        as it is. Unknown names are refused at once."""
        entry = self._entry(name)
        with self._lock:
            current = self._items.get(entry.name)
            if current is not None and current.state == "running":
                return current
            item = self._items[entry.name] = Download(entry.name)
        threading.Thread(target=self._run, args=(item, entry), name=f"download-{entry.name}", daemon=True).start()
        return item

    def _run(self, item: Download, entry: Any) -> None:
        from .errors import Cancelled

        def on_progress(done: int, total: int, message: str = "") -> None:
            item.done, item.total, item.message = int(done), int(total or 0), message or item.message

        pull = self._pull
        if pull is None:
            from .model_store import pull
        try:
            pull(entry, on_progress=on_progress, cancel=item.cancel, yes=True)  # a click is the confirmation
            item.state, item.message = "done", "downloaded"
            if item.total:
                item.done = item.total
        except Cancelled:
            item.state, item.message = "canceled", "canceled: what was fetched stays, a new download resumes it"
        except StudioError as exc:
            item.state, item.error, item.message = "failed", str(exc), "failed"
        except Exception as exc:  # noqa: BLE001 - a thread must say why it stopped, never die silently
            item.state, item.error, item.message = "failed", f"{type(exc).__name__}: {exc}", "failed"
        finally:
            item.finished = time.monotonic()

    def cancel(self, name: str) -> Download | None:
        """Ask a running download to stop (it ends ``canceled`` within a moment); None when there is none."""
        with self._lock:
            item = self._items.get(name) or next((d for d in self._items.values() if d.name == name), None)
        if item is not None and item.state == "running":
            item.cancel.cancel()
        return item

    def state(self, name: str) -> dict | None:
        item = self._items.get(name)
        return item.to_dict() if item is not None else None

    def all(self) -> list[dict]:
        return [d.to_dict() for d in self._items.values()]

    def running(self) -> bool:
        return any(d.state == "running" for d in self._items.values())


def wanted_for_run(preset: Any, *, narrator: str = "auto", painter: str = "auto", writer: str | None = None,
                   device: str | None = None) -> list[Any]:
    """The catalogue models a run with `preset` would use if their weights were here: for each step, the first
    provider in the preset's order that is named (or is ``auto``'s first model provider) whose model is in the
    catalogue, usable on this device (a GPU, or ``cpu_ok``) and not on this machine yet."""
    from .catalog import load_catalog
    from .model_store import status
    from .devices import gpus

    device = device or ("gpu" if gpus() else "cpu")
    catalog = load_catalog()
    wanted = []
    for kind, asked in (("storyboard", writer), ("narrator", narrator), ("painter", painter)):
        if asked is None:
            continue
        order = [asked] if asked != "auto" else list(preset.providers.get(kind, ()))
        for provider in order:
            model = (preset.models.get(provider) or {}).get("model")
            entry = catalog.find(model) if model else None
            if entry is None:
                if provider in ("rules", "openai", "piper", "espeak", "cards", "local"):
                    break  # an offline provider comes first: nothing to fetch for this step
                continue
            if device != "gpu" and not entry.cpu_ok:
                continue  # auto would skip it here even with its weights
            if status(entry).state != "present":
                wanted.append(entry)
            break
    return wanted


def fetch_for_run(preset: Any, *, narrator: str = "auto", painter: str = "auto", writer: str | None = None,
                  enabled: bool | None = None, on_progress: Callable[[float, str], None] | None = None,
                  cancel: CancelToken | None = None) -> list[str]:
    """Download on first use: when `first_use_enabled` (`enabled`), pull the models `wanted_for_run` names, so that
    ``auto`` takes them; returns the names pulled (none when downloads on first use are off: then ``auto`` goes on
    with what is here, and the notes say what was skipped and how to fetch it)."""
    if not first_use_enabled(enabled):
        return []
    from .catalog import gigabytes
    from .model_store import pull

    pulled = []
    for entry in wanted_for_run(preset, narrator=narrator, painter=painter, writer=writer):
        size = gigabytes(entry.download_bytes)

        def report(done: int, total: int, message: str = "", name: str = entry.name, size: str = size) -> None:
            if on_progress is not None:
                on_progress(done / total if total else 0.0, f"downloading {name} ({size}): {message}")

        pull(entry, on_progress=report, cancel=cancel, yes=True)  # opted in to downloads on first use
        pulled.append(entry.name)
    return pulled
