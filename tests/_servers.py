"""Start the studio as a real server process on 127.0.0.1 for the client and browser tests, and stop it after."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

from .conftest import ROOT


class ServerURL(str):
    """A running server's base URL, with its process id (`pid`) for checks on its child processes."""

    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(argv: list[str], data_dir: Path, *, port: int | None = None, ready_path: str = "/",
            env: dict | None = None, timeout_s: float = 90.0) -> Iterator[ServerURL]:
    """Run `argv` (a server) with its data in `data_dir`; yields its base URL once `ready_path` answers 200."""
    port = port or free_port()
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_DATA_DIR": str(data_dir),
                   "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                   "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    log = open(data_dir.parent / f"server-{port}.log", "wb")
    proc = subprocess.Popen([sys.executable, *[a.replace("{port}", str(port)) for a in argv]], cwd=ROOT,
                            env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{_tail(log.name)}")
            try:
                if httpx.get(url + ready_path, timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {timeout_s:.0f} s:\n{_tail(log.name)}")
            time.sleep(0.3)
        server = ServerURL(url)
        server.pid = proc.pid
        yield server
    finally:
        if proc.poll() is None:
            # A SIGINT after the SIGTERM makes uvicorn stop waiting for open streams (browsers' and clients' heartbeats),
            # which it otherwise does for its whole graceful-shutdown timeout; the app's shutdown still runs.
            for signum, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGINT, 20.0), (signal.SIGKILL, 10.0)):
                os.killpg(proc.pid, signum)
                try:
                    proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        log.close()


def _tail(path: str, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
