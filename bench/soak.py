"""Soak: N tiny renders through one ``studio serve``, over the HTTP API and the Gradio app, with cancels and SIGKILLs.

    python bench/soak.py                 # 200 renders, 3 kills: the figures in bench/README.md (## Soak), ~3 min
    python bench/soak.py --quick         # 20 renders, 2 kills: a smoke run, about a minute
    python bench/soak.py --jobs 500 --kills 5 --json soak.json

What it does, in one run against one data folder:

1. Starts ``python -m studio serve`` (the studio at /, the API at /api) on a free loopback port with a temporary data
   folder and the tiny test preset (96x96 at 12 fps, espeak-ng and cards: a render takes about a second), renders a
   few warm-up jobs, then samples the server process (RSS, open file descriptors, threads, child processes, with
   psutil) and the data folder's disk usage.
2. Renders N jobs, alternately through the HTTP API (``studio.client.Client``: ``POST /api/jobs`` with an
   ``Idempotency-Key``, polled with ``GET /api/jobs/{id}``) and through the Gradio app (``gradio_client.Client``:
   /write_storyboard, /edit_storyboard to fix the scene lengths, /render, then /wait held open until the job ends),
   keeping a few in flight so there is always a queue. One job in ten is cancelled once it is running (``POST
   /api/jobs/{id}/cancel`` while it encodes, or Gradio's /cancel in any step). In the first half of the run the
   server is killed with SIGKILL a few times while a job runs (the first, third... time the moment the API has
   accepted a cancel of the running job, before the job has stopped) and started again on the same data folder;
   after each restart every API job not yet finished, and the last few finished ones, is submitted again with its
   Idempotency-Key. (gradio_client's stream threads print a traceback or two when the server dies under them.)
3. Every done job's MP4 is fetched (``GET /api/jobs/{id}/video``, or Gradio's /video) and checked with ffprobe:
   video and audio streams, and the video's length and frame count equal to the storyboard's (fixed scene lengths and
   transitions) within one frame.
4. At the end (every job finished, clients disconnected) the server and the data folder are sampled again; then the
   server is restarted with a retention of one second so that its janitor removes every finished job's files, and
   the data folder is measured once more.

Checks (the script exits 1 if one fails): 0 lost (every job ends ``done``, or ``canceled`` when it was cancelled;
none ``failed``, none stuck), accepted cancels honoured (a cancel answered 202 ends the job ``canceled``, even when
the server is killed before the job stopped), 0 duplicated (a resubmission returns the job it made before; the server
holds exactly the jobs submitted), 0 truncated (every MP4 passes ffprobe with the expected length), interrupted jobs
resumed (each
job running at a kill ends done or canceled after another attempt), no leftovers (no temporary files, no files of
cancelled jobs, no job folder the journal does not know). The resource figures are compared with the target (end
within 5 % of start) and reported; with ``--strict`` a missed target fails the run as well.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks run as scripts from a checkout
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench._serve import (Server, become_subreaper, exit_on_signals, folder_bytes, kill_processes,  # noqa: E402
                          stray_processes)
from studio.client import Client  # noqa: E402
from studio.presets import load_preset  # noqa: E402
from studio.testing import write_tiny_preset  # noqa: E402

TERMINAL = ("done", "failed", "canceled")
TARGET = 1.05  # end within 5 % of start
POLL_S = 0.05


@dataclass
class Job:
    """One render of the soak: how it was submitted, what its video must be, what happened to it."""

    n: int
    via: str  # "api" or "gradio"
    scenes: list[dict]
    expected_s: float
    frames: int
    cancel: bool  # cancel it once it runs
    id: str | None = None
    key: str | None = None
    body: dict | None = None
    state: str = "new"
    step: str | None = None
    attempts: int = 0
    cancel_result: str | None = None  # "sent" or "too late"
    cancel_sent_at: float = 0.0
    running_at_kill: int = 0
    wait: Any = None  # the Gradio /wait call in flight (a gradio_client Job)
    wait_state: str | None = None  # what /wait answered last
    verified: str | None = None  # "ok", or what is wrong with the video
    error: str | None = None  # a failed job's message
    finished: bool = False
    submitted_at: float = 0.0
    ended_at: float = 0.0


def storyboard(n: int, transition_s: float, long: bool = False) -> tuple[list[dict], float]:
    """Two scenes of fixed lengths that vary with `n` (`long`: 5-6 s each, for a job to cancel while it runs), and
    the video's length they make (studio.compose.timeline: scene 2 starts its transition's length before scene 1
    ends; a cut has none)."""
    first, second = 0.5 + 0.1 * (n % 5), 0.4 + 0.1 * (n % 3)
    if long:
        first, second = first + 5.0, second + 5.0
    kind = ("cut", "fade", "crossfade")[n % 3]
    scenes = [{"narration": f"Job {n}, scene one.", "visual_prompt": f"job {n} card 1", "duration_s": round(first, 3),
               "transition": "cut"},
              {"narration": "Scene two.", "visual_prompt": f"job {n} card 2", "duration_s": round(second, 3),
               "transition": kind}]
    overlap = 0.0 if kind == "cut" else min(transition_s, first / 2, second / 2)
    return scenes, first + second - overlap


def ffprobe(path: Path, expected_s: float, frames: int, fps: float) -> str:
    """"ok", or why the MP4 is not a whole video of the expected length (within one frame)."""
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_entries",
                              "format=duration:stream=codec_type,duration,nb_read_packets", "-of", "json", str(path)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ffprobe did not run: {exc}"
    if out.returncode != 0:
        return f"ffprobe refused it: {out.stderr.strip()[:200]}"
    info = json.loads(out.stdout or "{}")
    streams = {s.get("codec_type"): s for s in info.get("streams", [])}
    if "video" not in streams or "audio" not in streams:
        return f"streams {sorted(streams)}, not video and audio"
    video = streams["video"]
    packets = int(video.get("nb_read_packets") or 0)
    duration = float(video.get("duration") or 0.0)
    if abs(packets - frames) > 1 or abs(duration - expected_s) > 1.0 / fps + 1e-3:
        return f"{packets} frames / {duration:.3f} s, expected {frames} / {expected_s:.3f} s"
    container = float(info.get("format", {}).get("duration") or 0.0)
    if abs(container - expected_s) > 1.0 / fps + 0.05:
        return f"the file lasts {container:.3f} s, expected {expected_s:.3f} s"
    return "ok"


def process_sample(server: Server) -> dict:
    """The server process now: RSS (MB), open file descriptors, threads, child processes (and zombies among them)."""
    proc = server.process()
    with proc.oneshot():
        rss = proc.memory_info().rss / 1e6
        fds = proc.num_fds()
        threads = proc.num_threads()
    children = proc.children(recursive=True)
    zombies = 0
    for child in children:
        try:
            zombies += child.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            pass
    return {"rss_mb": rss, "fds": fds, "threads": threads, "children": len(children), "zombies": zombies}


def fd_kinds(pid: int) -> dict[str, int]:
    """The process's open file descriptors by what they are: sockets, pipes, event fds, files by folder."""
    kinds: dict[str, int] = {}
    folder = Path(f"/proc/{pid}/fd")
    for fd in folder.iterdir() if folder.is_dir() else ():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            kind = target.split(":")[0]
        elif target.startswith("anon_inode:"):
            kind = target
        else:
            kind = str(Path(target).parent) if not target.endswith((".db", ".db-wal", ".db-shm")) else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def settled_sample(server: Server) -> dict:
    """The server process after a quiet spell, sampled the same way at the start and at the end: anyio's worker
    threads idle for longer than their idle time (10 s) are ended only when the next call comes, so wait that long,
    make two calls, then take the median of a few samples."""
    import httpx

    try:
        from anyio._backends._asyncio import WorkerThread
        idle_s = float(WorkerThread.MAX_IDLE_TIME)
    except (ImportError, AttributeError):
        idle_s = 10.0
    time.sleep(idle_s + 0.5)
    for _ in range(2):
        httpx.get(server.url + "/api/health", timeout=30)
    time.sleep(0.3)
    samples = []
    for _ in range(3):
        samples.append(process_sample(server))
        time.sleep(0.3)
    out = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    out["fd_kinds"] = fd_kinds(server.pid)
    return out


def journal_bytes(data: Path) -> int:
    """The journal's logical size (pages in use, its write-ahead log included), read-only beside the server."""
    import sqlite3

    db = sqlite3.connect(f"file:{data / 'studio.db'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()


class Soak:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work, self.args = work, args
        self.preset_file = write_tiny_preset(work)
        preset = load_preset(self.preset_file)
        self.fps, self.transition_s = float(preset.fps), float(preset.transition_s)
        self.data = work / "data"
        self.downloads = work / "downloads"
        self.downloads.mkdir()
        self.server = Server(self.data, self.preset_file, work / "server.log", work / "gradio-server",
                             args=("--max-queued-per-user", "50"))
        self.run_id = uuid.uuid4().hex[:8]
        self.jobs: list[Job] = []
        self.api: Client | None = None
        self.gradio = None
        self.kills: list[dict] = []
        self.resubmits = 0
        self.resubmit_new = 0
        self.errors: list[str] = []  # client calls that failed (and were retried)
        self.start_s: list[float] = []
        self.peaks: dict = {}

    # -- clients -------------------------------------------------------------------------------------------------
    def connect(self) -> None:
        from gradio_client import Client as GradioClient

        self.api = Client(self.server.url, timeout_s=30)
        self.gradio = GradioClient(self.server.url + "/", verbose=False, download_files=str(self.downloads))

    def disconnect(self) -> None:
        if self.gradio is not None:
            self.gradio.close()
            self.gradio = None
        if self.api is not None:
            self.api.close()
            self.api = None

    # -- one job ---------------------------------------------------------------------------------------------------
    def new_job(self, n: int) -> Job:
        via = "api" if n % 2 == 0 else "gradio"
        cancel = n >= 0 and n % 20 in (4, 13)  # one in ten: API and Gradio jobs alike
        scenes, expected = storyboard(n, self.transition_s, long=cancel or n in getattr(self, "long_jobs", ()))
        job = Job(n=n, via=via, scenes=scenes, expected_s=expected, frames=round(expected * self.fps), cancel=cancel)
        self.jobs.append(job)
        return job

    def submit(self, job: Job) -> None:
        job.submitted_at = time.monotonic()
        if job.via == "api":
            job.key = f"soak-{self.run_id}-{job.n}"
            job.body = {"storyboard": job.scenes, "preset": "tiny", "aspect": "1:1", "title": f"Soak {job.n}"}
            job.id = self.api.submit(job.body, idempotency_key=job.key)["id"]
        else:
            source = "\n\n".join(s["narration"] for s in job.scenes)
            title = f"Soak {job.n}"
            project = self.gradio_call("/write_storyboard", source=source, title=title, aspect="1:1", mode="script")
            if len(project["scenes"]) != len(job.scenes):
                raise RuntimeError(f"/write_storyboard made {len(project['scenes'])} scenes of a two-paragraph script")
            scenes = [{**planned, "id": made["id"]} for planned, made in zip(job.scenes, project["scenes"])]
            self.gradio_call("/edit_storyboard", project_id=project["project_id"], scenes=scenes)
            # /render has no idempotency key: if its answer is lost, look for the job before asking again
            rendered = self.gradio_call("/render", project_id=project["project_id"], preset="tiny", narrator="espeak",
                                        painter="cards", find=lambda: self.find_by_title(title))
            job.id = rendered["id"]
            self.hold_wait(job)
        job.state = "queued"

    def gradio_call(self, api_name: str, *, find=None, tries: int = 3, **kwargs):
        """A gradio_client call, asked again when gradio_client drops its answer (its shared event stream closes
        under a call now and then: ``concurrent.futures.CancelledError``); `find` first looks for what a lost call
        made."""
        for attempt in range(tries):
            try:
                return self.gradio.predict(api_name=api_name, **kwargs)
            except concurrent.futures.CancelledError:
                self.errors.append(f"{api_name}: gradio_client dropped the answer (CancelledError); asked again")
                if attempt == tries - 1:
                    raise
                time.sleep(0.2)
                found = find() if find is not None else None
                if found is not None:
                    return found
        raise AssertionError("unreachable")

    def find_by_title(self, title: str) -> dict | None:
        return next((j for j in self.api.list(limit=20) if j.get("title") == title), None)

    def hold_wait(self, job: Job) -> None:
        """A Gradio /wait call held open until the job ends (answered by the server when it does)."""
        job.wait = self.gradio.submit(job_id=job.id, timeout_s=120, api_name="/wait")

    def poll(self, job: Job) -> None:
        data = self.api.get(job.id)
        job.state, job.step, job.attempts = data["state"], data.get("step"), data["attempts"]
        job.error = (data.get("error") or {}).get("message")
        if job.via == "gradio" and job.wait is not None and job.wait.done():
            try:
                job.wait_state = job.wait.result()["state"]
            except Exception as exc:  # the server was killed under it, say: ask again
                self.errors.append(f"/wait of job {job.n}: {type(exc).__name__}: {str(exc)[:120]}")
                job.wait_state = None
            job.wait = None
            if job.wait_state not in TERMINAL:
                self.hold_wait(job)
        # API jobs are cancelled while ffmpeg encodes (the step a cancel takes longest to stop: 15-40 ms, see
        # bench/jobs.py), Gradio jobs in whatever step they are seen running
        if (job.cancel and job.cancel_result is None and job.state == "running"
                and (job.via == "gradio" or job.step == "compose")):
            self.cancel(job)
        if job.state in TERMINAL and (job.via == "api" or job.wait_state in TERMINAL):
            if job.via == "gradio" and job.wait_state != job.state:
                self.errors.append(f"/wait of job {job.n} answered {job.wait_state}, the API says {job.state}")
            job.finished, job.ended_at = True, time.monotonic()

    def cancel(self, job: Job) -> None:
        try:
            if job.via == "api":
                self.api.cancel(job.id)
            else:
                self.gradio_call("/cancel", job_id=job.id)
            job.cancel_result, job.cancel_sent_at = "sent", time.monotonic()
        except Exception as exc:
            if "already" not in str(exc):
                raise
            if self.api.get(job.id)["cancel_requested"]:  # a retried /cancel whose first try went through
                job.cancel_result, job.cancel_sent_at = "sent", time.monotonic()
                return
            job.cancel_result = "too late"
            self.errors.append(f"cancel of job {job.n} (seen {job.state} at {job.step}): {str(exc)[:120]}")

    def verify(self, job: Job) -> str:
        if job.via == "api":
            path = self.api.download(job.id, self.downloads / f"{job.id}.mp4")
        else:
            path = Path(self.gradio_call("/video", job_id=job.id))
        try:
            return ffprobe(path, job.expected_s, job.frames, self.fps)
        finally:
            if path.parent == self.downloads:
                path.unlink(missing_ok=True)
            else:  # gradio_client's own folder for the download
                shutil.rmtree(path.parent, ignore_errors=True)

    # -- kills ---------------------------------------------------------------------------------------------------
    def kill_and_restart(self, inflight: list[Job], mode: str = "plain", cancelled: Job | None = None) -> None:
        """SIGKILL the server, see what becomes of its children, start it again, resubmit. Which jobs the kill
        interrupted is read from the journal at the end (`interruptions`): the states polled here may be stale."""
        children = self.server.kill()
        killed_wall = time.time()
        gap_ms = 1000 * (self.server.killed_at - cancelled.cancel_sent_at) if cancelled is not None else None
        names = set()
        for child in children:
            try:
                names.add(child.name())
            except psutil.NoSuchProcess:
                pass
        # The encoder and voice the server ran are in their own sessions: do they end by themselves?
        gone, alive = psutil.wait_procs(children, timeout=3.0)
        kill_processes(alive)
        self.disconnect()
        self.start_s.append(self.server.start())
        restarted_wall = time.time()
        self.connect()
        # Resubmit every API job not yet finished (its answer might have been lost) and the last few finished ones.
        api_jobs = [j for j in self.jobs if j.via == "api" and j.id is not None]
        again = [j for j in api_jobs if not j.finished] + [j for j in api_jobs if j.finished][-3:]
        for job in again:
            self.resubmits += 1
            if self.api.submit(job.body, idempotency_key=job.key)["id"] != job.id:
                self.resubmit_new += 1
        for job in inflight:
            if job.via == "gradio" and not job.finished:
                self.hold_wait(job)  # the held /wait died with the server
        self.kills.append({"mode": mode, "cancelled_job": cancelled.n if cancelled is not None else None,
                           "ms_after_cancel": gap_ms,
                           "after_jobs_submitted": sum(j.id is not None for j in self.jobs) - self.args.warmup,
                           "in_flight": len(inflight), "killed_wall": killed_wall, "restarted_wall": restarted_wall,
                           "server_children": len(children), "child_names": sorted(names),
                           "children_alive_after_3s": len(alive), "resubmitted": len(again)})

    def interruptions(self) -> None:
        """From the journal (the server stopped): the jobs each kill interrupted (an ``interrupted`` event journaled
        when the restarted server recovered) and the step each was in."""
        import sqlite3

        by_id = {j.id: j for j in self.jobs}
        db = sqlite3.connect(f"file:{self.data / 'studio.db'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT job_id, seq, time FROM events WHERE kind = 'interrupted' ORDER BY time").fetchall()
            for kill in self.kills:
                kill["running"], kill["steps"] = 0, []
            for job_id, seq, when in rows:
                kill = next((k for k in self.kills if k["killed_wall"] - 1 <= when <= k["restarted_wall"] + 1), None)
                step = None
                for kind, data in db.execute("SELECT kind, data FROM events WHERE job_id = ? AND seq < ? ORDER BY "
                                             "seq DESC", (job_id, seq)):
                    step = json.loads(data).get("step")
                    if step:  # a `step` event says that step finished: the job was in the next one
                        if kind == "step":
                            order = ("storyboard", "narrate", "illustrate", "compose")
                            step = order[order.index(step) + 1] if step in order[:-1] else f"after {step}"
                        break
                if job_id in by_id:
                    by_id[job_id].running_at_kill += 1
                if kill is not None:
                    kill["running"] += 1
                    kill["steps"].append(step or "?")
        finally:
            db.close()

    def peak(self, sample: dict) -> None:
        """Keep the highest of each figure seen while jobs run (sampled about once a second)."""
        for key, value in sample.items():
            self.peaks[key] = max(self.peaks.get(key, value), value)

    # -- the run -------------------------------------------------------------------------------------------------
    def drive(self, numbers: list[int], kills: list[tuple[int, str]], deadline: float) -> None:
        """Submit jobs `numbers`, keeping `--depth` in flight; return when every job has finished. `kills`: (count
        submitted, mode) in order: once that many were submitted, SIGKILL the server while a job runs ("plain", with
        no cancel under way) or the moment a cancel of a running job has been accepted ("after cancel")."""
        pending = list(numbers)
        inflight: list[Job] = []
        kill_at = list(kills)
        submitted = 0
        finished: list[Job] = []
        next_sample = 0.0
        while pending or inflight:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the soak ran past its time limit with {len(inflight)} jobs unfinished: "
                                   + ", ".join(f"{j.n}:{j.state}" for j in inflight))
            # No new submission while a job to cancel waits to be seen running: the cancel lands within a poll.
            while (pending and len(inflight) < self.args.depth
                   and not any(j.cancel and j.cancel_result is None for j in inflight)):
                job = self.new_job(pending.pop(0))
                self.submit(job)
                submitted += 1
                inflight.append(job)
            # Jobs to cancel first; the videos of finished jobs are checked after the pass (it takes a while).
            for job in sorted(inflight, key=lambda j: not (j.cancel and j.cancel_result is None)):
                sent_before = job.cancel_result
                self.poll(job)
                if job.finished:
                    inflight.remove(job)
                    finished.append(job)
                elif (kill_at and kill_at[0][1] == "after cancel" and submitted >= kill_at[0][0]
                      and sent_before is None and job.cancel_result == "sent" and job.via == "api"):
                    kill_at.pop(0)
                    self.kill_and_restart(inflight, "after cancel", job)
                    break
            # Check the videos (slow: a download and ffprobe) only while no job waits for its cancel.
            if not any(j.cancel and j.cancel_result is None for j in inflight):
                for job in finished:
                    if job.state == "done":
                        job.verified = self.verify(job)
                finished.clear()
            # A plain kill waits while a job to cancel waits to be seen running (the restarted runner renders before
            # the server answers, so the job could end before the cancel can be sent) or a cancel is under way.
            quiet = not any(j.cancel and (j.cancel_result is None or j.cancel_result == "sent") for j in inflight)
            if (kill_at and kill_at[0][1] == "plain" and submitted >= kill_at[0][0] and quiet
                    and any(j.state == "running" for j in inflight)):
                kill_at.pop(0)
                self.kill_and_restart(inflight)
            if time.monotonic() >= next_sample:
                self.peak(process_sample(self.server) | {"pipes": fd_kinds(self.server.pid).get("pipe", 0)})
                next_sample = time.monotonic() + 1.0
            time.sleep(POLL_S)

    def disk(self) -> dict:
        """The data folder: all of it; the folders of finished jobs (which retention removes: the renders it is
        meant to keep until then); the journal (its logical size: the write-ahead log comes and goes); the studio's
        projects; and the rest. `retained_mb` is what stays once retention has run."""
        total = folder_bytes(self.data)
        finished = [j for j in self.jobs if j.state in TERMINAL and self.job_dir(j).exists()]
        finished_bytes = sum(folder_bytes(self.job_dir(j)) for j in finished)
        done_bytes = sum(folder_bytes(self.job_dir(j)) for j in finished if j.state == "done")
        journal_files = sum(p.stat().st_size for p in self.data.glob("studio.db*"))
        journal = journal_bytes(self.data)
        projects = folder_bytes(self.data / "projects")
        rest = total - finished_bytes - journal_files - projects
        return {"total_mb": total / 1e6, "finished_jobs_mb": finished_bytes / 1e6, "done_jobs_mb": done_bytes / 1e6,
                "done_jobs": sum(j.state == "done" for j in finished), "journal_mb": journal / 1e6,
                "journal_files_mb": journal_files / 1e6, "projects_mb": projects / 1e6,
                "projects": len(list((self.data / "projects").glob("*"))), "rest_mb": rest / 1e6,
                "retained_mb": (journal + projects + rest) / 1e6,
                "gradio_cache_mb": folder_bytes(self.work / "gradio-server") / 1e6}

    def job_dir(self, job: Job) -> Path:
        found = list((self.data / "jobs").glob(f"*/{job.id}"))
        return found[0] if found else self.data / "jobs" / "?" / str(job.id)

    def leftovers(self) -> list[str]:
        """Files that should not be there: temporary files, files of cancelled jobs, job folders nobody submitted."""
        out = []
        known = {j.id: j for j in self.jobs}
        for parent, dirs, files in os.walk(self.data):
            for name in dirs + files:
                if name.startswith(".") and (".part" in name or ".render-" in name or name.startswith(".segment-")):
                    out.append(f"temporary file {Path(parent, name).relative_to(self.data)}")
        for folder in (self.data / "jobs").glob("*/*"):
            job = known.get(folder.name)
            if job is None:
                out.append(f"job folder {folder.name} that no submission made")
            elif job.state == "canceled":
                # project.json and job.json (the job's record, which rebuilds a lost journal) stay by design
                kept = [p.name for p in folder.iterdir() if p.name not in ("project.json", "job.json")]
                if kept:
                    out.append(f"cancelled job {job.n} still holds {', '.join(sorted(kept))}")
        return out

    def run(self) -> dict:
        args = self.args
        deadline = time.monotonic() + args.time_limit_s
        report: dict = {"jobs": args.jobs, "kills_planned": args.kills, "depth": args.depth, "warmup": args.warmup}
        self.start_s.append(self.server.start())
        self.connect()
        # 1. Warm up, then the first sample (no client connected, the server idle).
        self.drive(list(range(-args.warmup, 0)), [], deadline)
        self.disconnect()
        start = settled_sample(self.server)
        disk_start = self.disk()
        self.connect()

        # 2. The soak: kills spread over the first half of the run.
        # every second kill (the first, third...) comes the moment the API has accepted a cancel (202), before the
        # job has had the few milliseconds it takes to stop
        kill_at = [(round(args.jobs * (k + 1) / (2 * args.kills + 2)), "plain" if k % 2 else "after cancel")
                   for k in range(args.kills)]
        # The jobs in flight around a plain kill are long ones, so the kill finds one running (a tiny job is over in
        # about the time one poll takes, and the kill would come too late).
        self.long_jobs = {n for count, mode in kill_at if mode == "plain"
                          for n in range(count - args.depth - 1, count + args.depth + 1)}
        began = time.monotonic()
        self.peaks = {}
        self.drive(list(range(args.jobs)), kill_at, deadline)
        soak_s = time.monotonic() - began

        # 3. The end sample (every job finished, no client connected), then the count of jobs the server holds.
        self.disconnect()
        end = settled_sample(self.server)
        disk_end = self.disk()
        import httpx

        counts = httpx.get(self.server.url + "/api/health", timeout=30).json()["jobs"]
        leftovers = self.leftovers()

        # 4. Retention: a restart with a one-second retention removes every finished job's files at start.
        self.server.stop()
        self.interruptions()  # before the retention restart forgets the finished jobs' events
        time.sleep(1.2)
        self.server.start(extra=("--keep-days", f"{1.0 / 86400:.8f}", "--forget-days", "0"))
        wait_until = time.monotonic() + 30
        while any(self.job_dir(j).exists() for j in self.jobs) and time.monotonic() < wait_until:
            time.sleep(0.2)
        disk_retained = self.disk()
        disk_retained["job_folders_left"] = sum(self.job_dir(j).exists() for j in self.jobs)
        self.server.stop()

        soak = [j for j in self.jobs if j.n >= 0]
        report.update({
            "soak_s": soak_s, "server_starts_s": self.start_s, "kills": self.kills,
            "process_start": start, "process_end": end, "process_peak": dict(self.peaks),
            "disk_start": disk_start, "disk_end": disk_end,
            "disk_after_retention": disk_retained, "server_job_counts": counts, "leftovers": leftovers,
            "client_errors": self.errors, "resubmits": self.resubmits, "resubmits_new_job": self.resubmit_new,
            "by_state": {s: sum(j.state == s for j in soak) for s in sorted({j.state for j in soak})},
            "via": {v: sum(j.via == v for j in soak) for v in ("api", "gradio")},
            "jobs_detail": [{k: getattr(j, k) for k in ("n", "via", "id", "state", "attempts", "cancel",
                                                         "cancel_result", "running_at_kill", "verified", "error",
                                                         "expected_s", "frames")} for j in self.jobs],
        })
        return report


# -- the summary ---------------------------------------------------------------------------------------------------
def checks(report: dict, jobs: list[dict]) -> list[tuple[str, bool, str]]:
    rows = []
    bad_end = [j for j in jobs if not (j["state"] == "done" or (j["state"] == "canceled" and j["cancel"]))]
    rows.append(("0 lost (all done, or canceled when cancelled)", not bad_end,
                 f"{len(bad_end)} lost"
                 + (": " + "; ".join(f"job {j['n']} {j['state']}" + (f" ({j['error']})" if j["error"] else "")
                                     for j in bad_end[:5]) if bad_end else "")))
    known = len(report["jobs_detail"])  # the warm-up jobs too
    held = sum(report["server_job_counts"].values())
    rows.append(("0 duplicated (resubmits after kills; jobs held)", report["resubmits_new_job"] == 0 and held == known,
                 f"{report['resubmits']} resubmits made {report['resubmits_new_job']} new jobs; server holds {held} "
                 f"jobs, {known} submitted"))
    done = [j for j in jobs if j["state"] == "done"]
    bad = [j for j in done if j["verified"] != "ok"]
    rows.append(("0 truncated (ffprobe: streams, length within a frame)", not bad,
                 f"{len(done) - len(bad)} of {len(done)} MP4s whole"
                 + (f"; job {bad[0]['n']}: {bad[0]['verified']}" if bad else "")))
    accepted = [j for j in jobs if j["cancel_result"] == "sent"]
    ignored = [j for j in accepted if j["state"] != "canceled"]
    rows.append(("accepted cancels honoured (each ends canceled)", not ignored,
                 f"{len(accepted) - len(ignored)} of {len(accepted)} canceled"
                 + "".join(f"; job {j['n']} ended {j['state']} after {j['attempts']} attempts"
                           + (" (the server was killed before it stopped)" if j["running_at_kill"] else "")
                           for j in ignored)))
    hit = [j for j in jobs if j["running_at_kill"]]
    unresumed = [j for j in hit if not (j["attempts"] > j["running_at_kill"] and j["state"] in ("done", "canceled"))
                 and not (j["state"] == "canceled" and j["cancel"])]
    rows.append(("interrupted jobs resumed", bool(hit) and not unresumed if report["kills_planned"] else not unresumed,
                 f"{len(hit)} jobs were running at {len(report['kills'])} kills; "
                 f"{len(hit) - len(unresumed)} ended done/canceled after another attempt"))
    rows.append(("no leftovers (temporary files, cancelled jobs' files)", not report["leftovers"],
                 "; ".join(report["leftovers"][:3]) or "none"))
    return rows


def ratio(start: float, end: float) -> float | None:
    return end / start if start else (1.0 if end == start else None)


def print_summary(report: dict, strict: bool) -> int:
    jobs = [j for j in report["jobs_detail"] if j["n"] >= 0]
    cancelled = [j for j in jobs if j["cancel"]]
    print(f"\n{len(jobs)} renders ({report['via']['api']} HTTP API, {report['via']['gradio']} Gradio) in "
          f"{report['soak_s']:.0f} s ({60 * len(jobs) / report['soak_s']:.0f}/min); end states {report['by_state']}")
    print(f"cancels: {len(cancelled)} jobs to cancel once running: "
          f"{sum(j['cancel_result'] is not None for j in cancelled)} cancels sent, "
          f"{sum(j['state'] == 'canceled' for j in cancelled)} canceled, "
          f"{sum(j['cancel_result'] == 'too late' for j in cancelled)} too late (the job had ended), "
          f"{sum(j['cancel_result'] is None for j in cancelled)} ended before they were seen running")
    by_n = {j["n"]: j for j in jobs}
    for k, kill in enumerate(report["kills"], 1):
        if kill["mode"] == "after cancel":
            victim = by_n[kill["cancelled_job"]]
            print(f"kill {k} came {kill['ms_after_cancel']:.0f} ms after the cancel of running job {victim['n']} was "
                  f"accepted: the job ended {victim['state']} after {victim['attempts']} attempt(s)")
        print(f"kill {k} ({kill['mode']}): after {kill['after_jobs_submitted']} submitted, {kill['running']} running "
              f"({', '.join(kill['steps'])}) of {kill['in_flight']} in flight; the server had "
              f"{kill['server_children']} child "
              f"process(es) {kill['child_names']}, {kill['children_alive_after_3s']} still alive 3 s later; "
              f"{kill['resubmitted']} resubmitted")
    starts = report["server_starts_s"]
    print(f"server starts: {', '.join(f'{s:.1f}' for s in starts)} s")
    if report["client_errors"]:
        print(f"client calls that failed and were retried: {len(report['client_errors'])}, "
              f"e.g. {report['client_errors'][0]}")

    print("\n| figure | start | end | end / start | target | peak while rendering |")
    print("|---|---|---|---|---|---|")
    missed = []
    ps, pe, pk = report["process_start"], report["process_end"], report["process_peak"]
    peak_note = f" ({pk['pipes']} pipes)"
    for key, label, fmt in (("rss_mb", "server RSS (MB)", "{:.1f}"), ("fds", "open file descriptors", "{:.0f}"),
                            ("threads", "threads", "{:.0f}"), ("children", "child processes", "{:.0f}")):
        r = ratio(ps[key], pe[key])
        met = r is not None and r <= TARGET
        missed += [] if met else [label]
        extra = f" ({pe['zombies']:.0f} zombies)" if key == "children" and pe["zombies"] else ""
        if key == "fds" and ps["fd_kinds"] != pe["fd_kinds"]:
            kinds = sorted(set(ps["fd_kinds"]) | set(pe["fd_kinds"]))
            extra = " (" + ", ".join(f"{k} {ps['fd_kinds'].get(k, 0)}->{pe['fd_kinds'].get(k, 0)}" for k in kinds
                                     if ps["fd_kinds"].get(k, 0) != pe["fd_kinds"].get(k, 0)) + ")"
        print(f"| {label} | {fmt.format(ps[key])} | {fmt.format(pe[key])}{extra} | "
              f"{'-' if r is None else f'{r:.2f}x'} | {'met' if met else '**not met**'} | "
              f"{fmt.format(pk[key])}{peak_note if key == 'fds' else ''} |")
    ds, de, dr = report["disk_start"], report["disk_end"], report["disk_after_retention"]
    # What the server keeps for itself (journal and the rest, not the users' own projects, which retention must never
    # delete), at the start and once retention has run at the end (finished jobs expired and forgotten).
    kept_start, kept_end = ds["journal_mb"] + ds["rest_mb"], dr["journal_mb"] + dr["rest_mb"]
    r = ratio(kept_start, kept_end)
    met = r is not None and r <= TARGET
    missed += [] if met else ["disk"]
    print(f"| data folder, server's own, once retention has run (MB) | {kept_start:.2f} | {kept_end:.2f} | "
          f"{r:.2f}x | {'met' if met else '**not met**'} | - |")
    print(f"| - of which the journal (MB) | {ds['journal_mb']:.2f} | {de['journal_mb']:.2f} | "
          f"{ratio(ds['journal_mb'], de['journal_mb']):.2f}x | - | - |")
    print(f"| - of which the studio's projects (MB) | {ds['projects_mb']:.3f} ({ds['projects']}) | "
          f"{de['projects_mb']:.3f} ({de['projects']}) | {ratio(ds['projects_mb'], de['projects_mb']) or 0:.2f}x | - | - |")
    per_start = ds["done_jobs_mb"] / max(ds["done_jobs"], 1)
    per_end = de["done_jobs_mb"] / max(de["done_jobs"], 1)
    print(f"| a done job's folder (MB, mean) | {per_start:.3f} | {per_end:.3f} | {ratio(per_start, per_end):.2f}x | - | - |")
    jobs_all = len(report["jobs_detail"])
    growth = (de["journal_mb"] - ds["journal_mb"]) * 1e3 / max(jobs_all - report["warmup"], 1)
    print(f"\ndisk at the end: {de['total_mb']:.2f} MB = {de['finished_jobs_mb']:.2f} MB in finished jobs' folders "
          f"({de['done_jobs']} done) + journal files {de['journal_files_mb']:.2f} MB (logical {de['journal_mb']:.2f} MB: "
          f"{growth:.1f} kB more per job) + studio projects {de['projects_mb']:.2f} MB + rest {de['rest_mb']:.2f} MB. "
          f"After the retention restart: {dr['total_mb']:.2f} MB on disk, journal {dr['journal_mb']:.2f} MB, "
          f"{dr['job_folders_left']} job folders left. Gradio's cache (outside the data folder): "
          f"{de['gradio_cache_mb']:.2f} MB.")

    print("\n| check | result | detail |")
    print("|---|---|---|")
    failed = []
    for name, ok, detail in checks(report, jobs):
        print(f"| {name} | {'pass' if ok else '**FAIL**'} | {detail} |")
        failed += [] if ok else [name]
    if missed:
        print(f"\ntargets not met (end within 5 % of start): {', '.join(missed)}"
              + ("" if strict else " (reported; --strict makes them fail the run)"))
    if failed or (strict and missed):
        print(f"FAILED: {', '.join(failed + (missed if strict else []))}")
        return 1
    print("all checks passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 renders, 2 kills")
    parser.add_argument("--jobs", type=int, help="renders in the soak (default 200, quick 20)")
    parser.add_argument("--kills", type=int, help="SIGKILLs of the server in the first half (default 3, quick 2); "
                        "the first, third... come right after the API accepts a cancel")
    parser.add_argument("--depth", type=int, default=3, help="jobs in flight at once (default 3)")
    parser.add_argument("--warmup", type=int, default=4, help="renders before the first sample (default 4)")
    parser.add_argument("--time-limit-s", type=float, help="give up after this long (default 900, quick 240)")
    parser.add_argument("--strict", action="store_true", help="a resource figure over its target fails the run too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, data) for a look")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (20 if args.quick else 200)
    args.kills = args.kills if args.kills is not None else (2 if args.quick else 3)
    args.time_limit_s = args.time_limit_s or (240.0 if args.quick else 900.0)
    exit_on_signals()
    become_subreaper()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.jobs} renders, {args.kills} kills, "
          f"{args.depth} in flight")
    tmp = Path(tempfile.mkdtemp(prefix="studio-bench-soak-"))
    soak = None
    try:
        soak = Soak(tmp, args)
        report = soak.run()
        report["command"] = "python bench/soak.py" + (" --quick" if args.quick else "")
        report["load_average"] = os.getloadavg()
        code = print_summary(report, args.strict)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2), "utf-8")
        return code
    except BaseException:
        if soak is not None:
            print(f"server log (tail):\n{soak.server.log_tail()}", file=sys.stderr)
        raise
    finally:
        if soak is not None:
            soak.disconnect()
            soak.server.stop()
        kill_processes(stray_processes())
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
