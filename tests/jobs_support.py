"""Helpers for the job, API and executor tests: a tiny preset, a live server on 127.0.0.1, SSE reading, process and
temporary-file checks."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from studio.server import JobRunner
from studio.testing import TINY_PRESET, write_tiny_preset  # noqa: F401  (the tests import them from here)

ROOT = Path(__file__).resolve().parent.parent


def storyboard(durations: list[float], words: str = "Scene") -> list[dict]:
    """Scenes with fixed durations (the video's length is known in advance) and short narration."""
    return [{"narration": f"{words} {i + 1}.", "visual_prompt": f"card {i + 1}", "duration_s": d}
            for i, d in enumerate(durations)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A uvicorn server on 127.0.0.1 in a thread of this process, serving `app` (stopped by `stop`).

    uvicorn binds the port itself, as `studio serve` does: a socket handed to it pre-bound is served without
    TCP_NODELAY, which adds a 40 ms delayed-ACK stall to every response.
    """

    def __init__(self, app) -> None:
        import uvicorn

        for attempt in range(5):  # another process may take the free port before uvicorn binds it
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                    timeout_graceful_shutdown=2)
            self.server = uvicorn.Server(config)
            self.thread = threading.Thread(target=self.server.run, daemon=True)
            self.thread.start()
            deadline = time.monotonic() + 20
            while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.server.started:
                return
            self.server.should_exit = True
            self.thread.join(5)
        raise RuntimeError("the test server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def read_sse(client, url: str, *, headers: dict | None = None, timeout_s: float = 60.0,
             stop_after: str | None = None) -> list[dict]:
    """Read a Server-Sent Events stream until it ends (or an event of kind `stop_after`); returns the events as
    dicts with ``id``, ``event`` and ``data`` (decoded JSON)."""
    events: list[dict] = []
    current: dict = {}
    with client.stream("GET", url, headers=headers or {}, timeout=timeout_s) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "":
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                    events.append(current)
                    if stop_after is not None and current.get("event") == stop_after:
                        return events
                current = {}
            elif line.startswith(":"):
                continue
            else:
                key, _, value = line.partition(":")
                current[key] = value[1:] if value.startswith(" ") else value
    return events


def temp_files(folder: Path) -> list[Path]:
    """Temporary files and work folders (``.x.part-*``, ``*.part``, ``.x.render-*``, ``.segment-*``) under `folder`."""
    found = []
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            if name.startswith(".") and (".part" in name or ".render-" in name or name.startswith(".segment-")):
                found.append(Path(parent) / name)
    return found


def new_children(baseline: set[int]) -> list:
    """Child processes of this process (recursively) that were not there in `baseline` and are still alive."""
    import psutil

    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in baseline and child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.02):
    """Poll `predicate` until it returns something truthy; returns it (or fails after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {predicate}")
        time.sleep(interval_s)


def python_env() -> dict:
    """The environment for a `python -m studio` subprocess that imports this checkout."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


PYTHON = sys.executable


def iter_events(runner, job_id: str, kinds: set[str], timeout_s: float = 60.0) -> Iterator:
    """Yield the job's events of the given kinds as they are journaled (polling the runner)."""
    seq = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in runner.events(job_id, after=seq):
            seq = event.seq
            if event.kind in kinds:
                yield event
        time.sleep(0.01)
    raise AssertionError(f"no more {kinds} events within {timeout_s} s")


# -- fixtures the job tests share (import them into a test module to use them) ---------------------------------------
@pytest.fixture
def tiny(tmp_path) -> Path:
    """The tiny test preset's file."""
    return write_tiny_preset(tmp_path)


@pytest.fixture
def make_runner(tmp_path, tiny):
    """Make job runners on the test's data folder (the tiny preset offered); all closed at the end."""
    runners = []

    def make(**options) -> JobRunner:
        options.setdefault("presets", [tiny])
        runner = JobRunner(options.pop("data_dir", tmp_path / "data"), **options)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


def tiny_request(durations=(1.0, 1.0), **fields) -> dict:
    """A storyboard request of fixed-length scenes at the tiny preset."""
    return {"storyboard": storyboard(list(durations)), "preset": "tiny", "aspect": "1:1", **fields}


@pytest.fixture
def slow_painter():
    """A painter that draws a card and then takes 0.4 s (respecting cancel), so a job is surely still running when a
    test cancels or restarts it."""
    from studio import providers
    from studio.visuals.cards import CardsPainter

    class SlowCards(CardsPainter):
        name = "slowcards"
        model = "slowcards-test"

        def paint(self, scene, *, cancel=None, **kwargs):
            out = super().paint(scene, cancel=cancel, **kwargs)
            if cancel is not None and cancel.wait(0.4):
                cancel.check()
            return out

    providers.names("painter")  # load the built-in painters first
    providers.register("painter", "slowcards", description="test painter")(lambda: SlowCards())
    yield "slowcards"
    providers._REGISTRY["painter"].pop("slowcards", None)
    providers.release("painter", "slowcards")
