"""A real ``python -m studio serve`` for the soak and load benchmarks (``bench/soak.py``, ``bench/health_load.py``):
started on a free loopback port with a temporary data folder, killed or stopped on demand, and every process it
started cleaned up, even after a SIGKILL of the server or a Ctrl-C of the benchmark.

The benchmark process makes itself a *child subreaper* (Linux ``prctl``): the encoders and voices a killed server
leaves behind are re-parented to it instead of to init, so they can be seen (counted as orphans) and ended.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt the orphans of our descendants (so a killed server's children stay findable); False where unsupported."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP end the benchmark like Ctrl-C does, so its `finally` blocks clean up."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reap() -> None:
    """Collect our exited children that no `Popen` owns (adopted orphans), by pid: never ``waitpid(-1)``."""
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.NoSuchProcess, ChildProcessError, OSError):
            pass


def stray_processes(exclude: set[int] = frozenset()) -> list[psutil.Process]:
    """Live processes under this one (adopted orphans included) other than `exclude` and their descendants."""
    reap()
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid in exclude or any(p.pid in exclude for p in child.parents()):
                continue
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def kill_processes(procs: list[psutil.Process]) -> int:
    """SIGKILL `procs` (those still the same processes); returns how many were alive."""
    alive = 0
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
                alive += 1
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)
    reap()
    return alive


class Server:
    """``python -m studio serve`` (the studio at /, the API at /api) on 127.0.0.1.

    Args:
        data: Its data folder (kept across `kill` and `start`, so interrupted jobs resume).
        preset: A preset file it offers besides the tiers (``--preset-file``).
        log: Where its output goes (appended; each start is marked).
        gradio_temp: Gradio's cache folder for the server (``GRADIO_TEMP_DIR``), inside the benchmark's folder.
        args: More ``studio serve`` options.
    """

    def __init__(self, data: Path, preset: Path, log: Path, gradio_temp: Path, args: tuple[str, ...] = ()) -> None:
        self.data, self.preset, self.log_path, self.gradio_temp = Path(data), Path(preset), Path(log), Path(gradio_temp)
        self.args = tuple(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.killed_at = 0.0  # time.monotonic() of the last SIGKILL

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def start(self, extra: tuple[str, ...] = (), timeout_s: float = 90.0) -> float:
        """Start it (on the same port as before) and wait for ``/api/health``; returns the seconds it took."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the server is already running")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(self.gradio_temp)}
        argv = [sys.executable, "-m", "studio", "serve", "--port", str(self.port), "--data-dir", str(self.data),
                "--preset-file", str(self.preset), "--log-level", "warning", *self.args, *extra]
        self.starts += 1
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts}: {' '.join(argv[1:])}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = started + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=2.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def descendants(self) -> list[psutil.Process]:
        try:
            return self.process().children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> list[psutil.Process]:
        """SIGKILL the server process alone (as a crash would); returns the processes it had started, which live on
        in their own process groups for a moment."""
        assert self.proc is not None
        children = self.descendants()
        self.killed_at = time.monotonic()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return children

    def stop(self, term_s: float = 3.0, int_s: float = 20.0) -> None:
        """Stop it as an operator would (SIGTERM; after `term_s` SIGINT, to stop waiting for open streams; after
        `int_s` more SIGKILL), then end whatever it left running."""
        if self.proc is None:
            return
        children = self.descendants()
        if self.proc.poll() is None:
            for signum, wait_s in ((signal.SIGTERM, term_s), (signal.SIGINT, int_s), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, signum)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        kill_processes(children)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (links not followed)."""
    total = 0
    for parent, _, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                pass
    return total
