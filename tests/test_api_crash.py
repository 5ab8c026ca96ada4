"""A real `python -m studio serve` process killed with SIGKILL in the middle of a render, then started again: the job
resumes from the assets it had made and finishes, and ffprobe accepts the video."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from .conftest import video_facts
from .jobs_support import PYTHON, ROOT, free_port, python_env, read_sse, storyboard, wait_for, write_tiny_preset


class ServerProcess:
    """``python -m studio serve`` in its own process, on a free port."""

    def __init__(self, data_dir: Path, preset: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "studio", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
             "--preset-file", str(preset), "--log-level", "warning"],
            cwd=ROOT, env=python_env(), stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=60)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                return self.client.get("/api/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout_s=60, interval_s=0.1)

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def processes_working_in(folder: Path) -> list:
    """Live processes whose working directory is inside `folder` (ffmpeg runs in its render's work folder)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            cwd = proc.cwd()
        except (psutil.Error, OSError):
            continue
        if cwd.startswith(str(folder)) and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_sigkill_during_a_render_then_restart_resumes_and_finishes(tmp_path):
    data = tmp_path / "data"
    preset = write_tiny_preset(tmp_path)
    log = tmp_path / "server.log"
    durations = [2.0] * 6
    body = {"storyboard": storyboard(durations), "preset": "draft", "aspect": "1:1", "title": "Crash"}

    # 1. Start a server, submit, and kill it with SIGKILL as soon as the first segment of the video is encoded.
    first = ServerProcess(data, preset, log)
    try:
        job_id = first.client.post("/api/jobs", json=body).json()["id"]
        events = read_sse(first.client, f"/api/jobs/{job_id}/events", stop_after="segment")
        assert events[-1]["event"] == "segment"
        os.kill(first.proc.pid, signal.SIGKILL)
        assert first.proc.wait(10) == -signal.SIGKILL
    finally:
        first.close()

    # The journal, as the killed server left it: the job is still `running`, with its finished steps recorded.
    conn = sqlite3.connect(data / "studio.db")
    state, steps, output = conn.execute("SELECT state, steps, output FROM jobs WHERE id = ?", (job_id,)).fetchone()
    conn.close()
    assert state == "running" and output is None
    assert '"narrate"' in steps and '"illustrate"' in steps and '"compose"' not in steps
    final = next(data.glob(f"jobs/*/{job_id}")) / "renders" / "video.mp4"
    assert not final.exists()  # never a truncated MP4 under the final name
    wait_for(lambda: not processes_working_in(data), timeout_s=15)  # the killed server's ffmpeg ended too

    # 2. Start it again: the job is interrupted, resumes first, and finishes.
    second = ServerProcess(data, preset, log)
    try:
        job = second.client.get(f"/api/jobs/{job_id}").json()
        assert job["state"] in ("interrupted", "running", "done")
        rest = read_sse(second.client, f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": events[-1]["id"]})
        kinds = [e["event"] for e in rest]
        # (a progress event journaled just before the kill may come first)
        assert kinds.index("interrupted") < kinds.index("running") and kinds[-1] == "done", kinds
        at = kinds.index("running")
        restart = rest[at]
        assert restart["data"]["resumed"] is True and restart["data"]["attempt"] == 2
        resumed = rest[at + 1:]  # (another segment may have been journaled between the event read and the kill)
        scenes = [e["data"] for e in resumed if e["event"] == "scene"]
        assert len(scenes) == 12 and all(s["reused"] for s in scenes)  # no scene narrated or painted again
        segments = [e["data"] for e in resumed if e["event"] == "segment"]
        # 6 scenes and the 5 transitions between them; a segment encoded before the kill is not encoded again
        assert len(segments) == 11 and segments[0]["reused"]
        redone = sum(not s["reused"] for s in segments) / len(segments)
        assert redone < 1.0

        done = second.client.get(f"/api/jobs/{job_id}").json()
        assert done["state"] == "done" and done["attempts"] == 2
        video = second.client.get(f"/api/jobs/{job_id}/video")
        saved = tmp_path / "resumed.mp4"
        saved.write_bytes(video.content)
        facts = video_facts(saved)  # ffprobe accepts it
        assert (facts["width"], facts["height"]) == (480, 480) and facts["has_audio"]
        overlap = round(0.4 * 24) / 24  # Draft's transitions, in whole frames
        assert facts["duration_s"] == pytest.approx(sum(durations) - overlap * (len(durations) - 1), abs=1 / 24 + 0.01)
        leftovers = [p for p in final.parent.parent.rglob(".*") if ".part" in p.name or ".render-" in p.name
                     or p.name.startswith(".segment-")]
        assert leftovers == []

        # 3. A graceful stop (SIGTERM; uvicorn re-raises it once shut down) closes the journal and frees the folder.
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        second.close()
    from studio.server import JobRunner

    with JobRunner(data, start=False) as runner:
        assert runner.recovered == [] and runner.counts()["running"] == 0
