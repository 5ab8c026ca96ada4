"""Measured step times: how long each provider took per scene on this machine, kept for the next estimate.

Every real run of a step records its seconds per scene made (`record`): the narrator, painter or writer that ran,
its model, and the device. Estimates before a run (`studio.estimate.estimate_steps`) use these figures when there are
some, and the model catalogue's when there are none yet, so the second estimate on a machine is its own measurement::

    record("narrate", "piper", None, "cpu", seconds=3.2, scenes=4)
    per_scene_s("narrate", "piper", None, "cpu")        # 0.8 (a running mean over the last runs)

The file is ``timings.json`` in ``$STUDIO_DATA_DIR`` (else ``$XDG_CACHE_HOME/studio`` or ``~/.cache/studio``),
written atomically; a damaged or unreadable file counts as no history (an estimate is no reason to fail a run).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

HISTORY_ENV = "STUDIO_HISTORY_FILE"
WEIGHT = 0.3  # each new run's share of the running mean (recent runs count most; one odd run does not rule)
_LOCK = threading.Lock()


def history_file() -> Path:
    """Where the measured times live: ``$STUDIO_HISTORY_FILE``, else ``timings.json`` in the data or cache folder."""
    if os.environ.get(HISTORY_ENV, "").strip():
        return Path(os.environ[HISTORY_ENV]).expanduser()
    if os.environ.get("STUDIO_DATA_DIR", "").strip():
        return Path(os.environ["STUDIO_DATA_DIR"]).expanduser() / "timings.json"
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "studio" / "timings.json"


def _key(step: str, provider: str, model: str | None, device: str) -> str:
    return f"{step}|{provider}|{model or '-'}|{device}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(step: str, provider: str, model: str | None, device: str, *, seconds: float, scenes: int,
           path: Path | None = None) -> None:
    """Add one run's figure: `seconds` for `scenes` scenes made (scenes found in the cache are not counted)."""
    if scenes <= 0 or not seconds >= 0:
        return
    from .assets import atomic_write_text

    path = path or history_file()
    with _LOCK:
        data = _read(path)
        key = _key(step, provider, model, device)
        now = seconds / scenes
        old = data.get(key)
        mean = now if not isinstance(old, dict) or not isinstance(old.get("per_scene_s"), (int, float)) else \
            (1 - WEIGHT) * float(old["per_scene_s"]) + WEIGHT * now
        runs = int(old.get("runs", 0)) + 1 if isinstance(old, dict) else 1
        data[key] = {"per_scene_s": round(mean, 4), "runs": runs}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only or full disk loses a figure, never a run


def per_scene_s(step: str, provider: str, model: str | None, device: str, *, path: Path | None = None) -> float | None:
    """The measured seconds per scene, or None when this combination never ran here."""
    entry = _read(path or history_file()).get(_key(step, provider, model, device))
    value = entry.get("per_scene_s") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, (int, float)) and value >= 0 else None
