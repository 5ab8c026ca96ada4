"""Jobs benchmark: cancel latency per step, work redone after a SIGKILL, concurrency and fairness, segment overhead.

    python bench/jobs.py                 # the figures in bench/README.md (## Jobs), a few minutes on 2 cores
    python bench/jobs.py --quick         # a smoke run (fewer repeats, smaller jobs)
    python bench/jobs.py --json out.json

1. Cancel latency: a job is cancelled while each step is under way (espeak-ng speaking, a scene being painted,
   ffmpeg encoding), in a `JobRunner` in this process. Measured from `cancel()` to (a) the journal saying
   ``canceled`` and (b) no process the job started still alive.
2. Resume rework: a real ``python -m studio serve`` is killed with SIGKILL in the middle of narration, or in the
   middle of composition, then started again; the resumed attempt's units of work (scenes narrated, scenes painted,
   frames encoded) are counted as made again or reused, and its time is compared with an uninterrupted run. The
   composition point is measured with segment-wise composition (the default) and with ``--one-pass``.
3. Concurrency: 16 tiny jobs from 4 users through the HTTP API with 1 and 2 CPU job slots (throughput, queue wait,
   API latency under load), and fairness: where one user's single job starts behind another user's ten.
4. Segment overhead: the same fresh render composed in one pass and segment by segment.

Every render is checked (the job ends ``done``; its video is probed) so a broken run cannot look fast. Generated files
go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks run as scripts from a checkout
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from studio.server import JobRunner  # noqa: E402
from studio.media import probe  # noqa: E402
from studio.testing import write_tiny_preset  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog while the river runs on."


def scenes(count: int, words: int = 12, duration_s: float | None = None) -> list[dict]:
    text = " ".join(SENTENCE.split()[:words]) if words <= 14 else " ".join([SENTENCE] * (words // 14))
    out = []
    for i in range(count):
        scene = {"narration": f"Scene {i + 1}. {text}", "visual_prompt": f"card number {i + 1}"}
        if duration_s is not None:
            scene["duration_s"] = duration_s
        out.append(scene)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def children_alive(baseline: set[int]) -> list:
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in baseline and child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_until(predicate, timeout_s: float = 300.0, interval_s: float = 0.002):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise RuntimeError(f"timed out waiting for {predicate}")


# -- 1. cancel latency -------------------------------------------------------------------------------------------------
def bench_cancel(work: Path, repeats: int, quick: bool) -> list[dict]:
    rows = []
    runner = JobRunner(work / "cancel", presets=[work / "tiny.toml"])
    try:
        for step in ("narrate", "illustrate", "compose"):
            state_s, procs_s = [], []
            for _ in range(repeats):
                baseline = {p.pid for p in psutil.Process().children(recursive=True)}
                if step == "narrate":
                    request = {"storyboard": scenes(6, words=140), "preset": "tiny", "aspect": "1:1"}
                elif step == "illustrate":
                    request = {"storyboard": scenes(20 if quick else 40, duration_s=1.0), "preset": "draft",
                               "aspect": "1:1"}
                else:
                    request = {"storyboard": scenes(3, duration_s=4.0 if quick else 8.0), "preset": "draft",
                               "aspect": "1:1"}
                job = runner.submit(request, owner="bench")
                if step == "illustrate":  # two scenes painted: the painter is mid-step
                    wait_until(lambda: (runner.get(job.id).step == "illustrate"
                                        and (runner.get(job.id).scene_index or 0) >= 2))
                else:
                    program = "espeak" if step == "narrate" else "ffmpeg"
                    wait_until(lambda: runner.get(job.id).step == step and any(
                        p.name().startswith(program) for p in children_alive(baseline)))
                asked = time.perf_counter()
                runner.cancel(job.id)
                ended = runner.wait(job.id, timeout_s=60)
                state_s.append(time.perf_counter() - asked)
                wait_until(lambda: not children_alive(baseline), timeout_s=30, interval_s=0.001)
                procs_s.append(time.perf_counter() - asked)
                if ended.state != "canceled" or step in [s["step"] for s in ended.steps]:
                    raise RuntimeError(f"cancel during {step} did not stop the step: {ended.state}, {ended.steps}")
            rows.append({"step": step, "repeats": repeats, "to_canceled_ms_median": 1000 * statistics.median(state_s),
                         "to_canceled_ms_max": 1000 * max(state_s),
                         "no_processes_ms_median": 1000 * statistics.median(procs_s),
                         "no_processes_ms_max": 1000 * max(procs_s)})
    finally:
        runner.close()
    return rows


# -- 2. resume rework after SIGKILL ------------------------------------------------------------------------------------
class Server:
    """``python -m studio serve`` on a free port."""

    def __init__(self, data: Path, preset: Path, one_pass: bool, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        args = [sys.executable, "-m", "studio", "serve", "--port", str(self.port), "--data-dir", str(data),
                "--preset-file", str(preset), "--log-level", "warning"] + (["--one-pass"] if one_pass else [])
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
            try:
                return self.client.get("/api/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout_s=60, interval_s=0.1)

    def events(self, job_id: str, after: int = 0) -> list[dict]:
        """The job's events so far, from the server's SSE stream (read until it goes quiet or ends)."""
        return list(self.follow(job_id, after, until=None, idle_s=0.3))

    def follow(self, job_id: str, after: int = 0, until=None, idle_s: float | None = None):
        """Yield events as they come; stop when `until(event)` is true, the stream ends, or (with `idle_s`) nothing
        arrives for that long."""
        headers = {"Last-Event-ID": str(after)}
        timeout = httpx.Timeout(60, read=idle_s) if idle_s else httpx.Timeout(600)
        try:
            with self.client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers, timeout=timeout) as resp:
                current = {}
                for line in resp.iter_lines():
                    if line == "":
                        if "data" in current:
                            event = {"id": int(current["id"]), "event": current["event"],
                                     "data": json.loads(current["data"])}
                            yield event
                            if until is not None and until(event):
                                return
                        current = {}
                    elif not line.startswith(":"):
                        key, _, value = line.partition(":")
                        current[key] = value.lstrip(" ")
        except httpx.ReadTimeout:
            return

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.client.close()
        self.log.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.client.close()
        self.log.close()


def finished_units(events: list[dict]) -> list[tuple]:
    """Units of work that events report finished: (step, scene id) for scenes, ("segment", n) for segments; with
    whether each was made (True) or found in the cache."""
    out = []
    for e in events:
        if e["event"] == "scene":
            out.append(((e["data"]["step"], e["data"]["scene_id"]), not e["data"]["reused"]))
        elif e["event"] == "segment":
            out.append((("segment", e["data"]["index"]), not e["data"]["reused"]))
    return out


def bench_resume(work: Path, quick: bool) -> list[dict]:
    count = 6 if quick else 12
    body = {"storyboard": scenes(count, words=40), "preset": "draft", "aspect": "1:1"}
    preset = work / "tiny.toml"
    rows = []

    def full_run(one_pass: bool) -> dict:
        data = work / f"full-{one_pass}"
        server = Server(data, preset, one_pass, work / "server.log")
        try:
            job_id = server.client.post("/api/jobs", json=body).json()["id"]
            list(server.follow(job_id, until=lambda e: e["event"] in ("done", "failed")))
            job = server.client.get(f"/api/jobs/{job_id}").json()
            if job["state"] != "done":
                raise RuntimeError(f"the uninterrupted run failed: {job['error']}")
            return job["timings"]
        finally:
            server.stop()

    full = {False: full_run(False), True: full_run(True)}
    points = [("narrate", False), ("compose", False), ("compose", True)]
    for point, one_pass in points:
        data = work / f"kill-{point}-{one_pass}"
        server = Server(data, preset, one_pass, work / "server.log")
        job_id = server.client.post("/api/jobs", json=body).json()["id"]
        seen = []

        def at_point(event: dict) -> bool:
            seen.append(event)
            if point == "narrate":
                return (event["event"] == "scene" and event["data"]["step"] == "narrate"
                        and event["data"]["index"] >= count // 2)
            if one_pass:  # one pass: kill when the encoder is half-way through the video
                return (event["event"] == "progress" and event["data"]["step"] == "compose"
                        and event["data"]["percent"] >= 42 + 58 * 0.5)
            return event["event"] == "segment" and event["data"]["index"] >= count // 2

        list(server.follow(job_id, until=at_point))
        server.kill()
        run_started = next(e["data"]["time"] for e in seen if e["event"] == "running")
        before_kill_s = seen[-1]["data"]["time"] - run_started  # work journaled before the kill
        encoded_before = max([e["data"]["percent"] for e in seen if e["event"] == "progress"
                              and e["data"]["step"] == "compose"] or [42.0])
        # 2. Restart; the job resumes first.
        server = Server(data, preset, one_pass, work / "server.log")
        try:
            rest = list(server.follow(job_id, after=seen[-1]["id"], until=lambda e: e["event"] in ("done", "failed")))
            job = server.client.get(f"/api/jobs/{job_id}").json()
            if job["state"] != "done":
                raise RuntimeError(f"the resumed job failed: {job['error']}")
            video = server.client.get(f"/api/jobs/{job_id}/video")
            path = work / "resumed.mp4"
            path.write_bytes(video.content)
            info = probe(path)
            if not (info.has_video and info.has_audio):
                raise RuntimeError("the resumed video is broken")
        finally:
            server.stop()
        at = max(i for i, e in enumerate(rest) if e["event"] == "running")
        before = {unit for unit, _ in finished_units(seen + rest[:at])}
        after = finished_units(rest[at + 1:])
        redone = [unit for unit, made in after if made and unit in before]
        made_after = sum(made for _, made in after)
        resumed_s = job["timings"]["run_s"]
        if one_pass:  # the encode is one unit: whatever was encoded before the kill is encoded again
            lost = f"{(encoded_before - 42) / 58:.0%} of the video encoded before the kill, all encoded again"
        else:
            lost = f"{len(redone)} of {len(before)} finished units made again"
        rows.append({"kill_during": point, "compose": "one pass" if one_pass else "segments", "scenes": count,
                     "units_finished_before_kill": len(before), "units_made_again": len(redone),
                     "units_made_after_restart": made_after, "lost_work": lost,
                     "full_run_s": full[one_pass]["run_s"], "before_kill_s": before_kill_s, "resumed_run_s": resumed_s,
                     "rework": (before_kill_s + resumed_s - full[one_pass]["run_s"]) / full[one_pass]["run_s"],
                     "compose_s_full": full[one_pass]["compose_s"], "compose_s_resumed": job["timings"]["compose_s"]})
    return rows


# -- 3. concurrency and fairness -----------------------------------------------------------------------------------------
def bench_concurrency(work: Path, quick: bool) -> dict:
    from studio.server.api import create_app

    out: dict = {"throughput": []}
    users = ["ann", "ben", "cat", "dan"]
    per_user = 2 if quick else 4
    for slots in (1, 2):
        runner = JobRunner(work / f"conc-{slots}", cpu_slots=slots, presets=[work / "tiny.toml"])
        server = _LiveServer(create_app(runner))
        client = httpx.Client(base_url=server.url, timeout=60)
        try:
            started = time.perf_counter()
            ids = []
            lock = threading.Lock()

            def submit(user: str, k: int) -> None:
                body = {"storyboard": scenes(3, words=8, duration_s=1.0 + 0.1 * k), "preset": "tiny", "aspect": "1:1"}
                job_id = client.post("/api/jobs", json=body).json()["id"]
                with lock:
                    ids.append(job_id)

            threads = [threading.Thread(target=submit, args=(u, k)) for u in users for k in range(per_user)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            latencies = []
            while True:  # poll like a UI would, measuring the API's answer time under load
                t0 = time.perf_counter()
                states = [client.get(f"/api/jobs/{j}").json()["state"] for j in ids]
                latencies.append((time.perf_counter() - t0) / len(ids))
                if all(s in ("done", "failed", "canceled") for s in states):
                    break
                time.sleep(0.05)
            wall = time.perf_counter() - started
            jobs = [runner.get(j) for j in ids]
            if any(j.state != "done" for j in jobs):
                raise RuntimeError("a concurrent job failed: " + "; ".join(str(j.error) for j in jobs if j.error))
            waits = [j.timings["queued_s"] for j in jobs]
            out["throughput"].append({"cpu_slots": slots, "jobs": len(ids), "wall_s": wall,
                                      "jobs_per_min": 60 * len(ids) / wall,
                                      "queue_wait_s_median": statistics.median(waits),
                                      "queue_wait_s_p95": pct(waits, 0.95),
                                      "api_get_ms_p50": 1000 * statistics.median(latencies),
                                      "api_get_ms_p95": 1000 * pct(latencies, 0.95)})
        finally:
            client.close()
            server.stop()
            runner.close()

    # Fairness: one user queues ten jobs, then another user one; where does the single job start?
    runner = JobRunner(work / "fair", start=False, presets=[work / "tiny.toml"])
    try:
        busy = [runner.submit({"storyboard": scenes(1, words=4, duration_s=0.5), "preset": "tiny"}, owner="busy").id
                for _ in range(10)]
        single = runner.submit({"storyboard": scenes(1, words=4, duration_s=0.5), "preset": "tiny"}, owner="once").id
        runner.start()
        for job_id in busy + [single]:
            runner.wait(job_id, timeout_s=300)
        order = sorted(busy + [single], key=lambda j: runner.get(j).started_at)
        fifo_position = len(busy) + 1
        out["fairness"] = {"queued_before_it": len(busy), "started_at_position": order.index(single) + 1,
                           "fifo_position": fifo_position, "waited_s": runner.get(single).timings["queued_s"]}
    finally:
        runner.close()
    return out


class _LiveServer:
    """uvicorn in a thread on 127.0.0.1, binding its port itself as `studio serve` does (a pre-bound socket would be
    served without TCP_NODELAY: a 40 ms stall on every response)."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, timeout_s=30, interval_s=0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


# -- 4. segment overhead -------------------------------------------------------------------------------------------------
def bench_segments(work: Path, repeats: int, quick: bool) -> list[dict]:
    import studio
    from studio.pipeline import make_video
    from studio.project import Project

    count = 6 if quick else 12
    preset = studio.load_preset("draft")
    base = Project.from_storyboard(scenes(count, words=30), title="Segments", aspect="16:9")
    made = make_video(base.save(work / "seg-source"), preset=preset, output=work / "seg-first.mp4", segments=False)
    rows = []
    for mode in ("one pass", "segments"):
        times = []
        for r in range(repeats):
            # a fresh project folder holding the narration and cards already made, but no segments
            folder = work / f"seg-{mode.replace(' ', '-')}-{r}"
            project = made.project.save(folder)
            (folder / "assets").mkdir(exist_ok=True)
            for asset in (work / "seg-source" / "assets").iterdir():
                if asset.suffix in (".wav", ".png", ".json"):
                    os.link(asset, folder / "assets" / asset.name)
            project = Project.load(folder)
            summary = make_video(project, preset=preset, output=folder / "out.mp4", segments=mode == "segments")
            compose_s = next(s.seconds for s in summary.steps if s.name == "compose")
            times.append(compose_s)
            if not probe(summary.output).has_audio:
                raise RuntimeError("a segment-overhead render is broken")
        rows.append({"compose": mode, "scenes": count, "video_s": made.duration_s, "compose_s_median": statistics.median(times)})
    rows.append({"compose": "segments/one pass", "ratio": rows[1]["compose_s_median"] / rows[0]["compose_s_median"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer repeats, smaller jobs")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--repeats", type=int, help="repeats of each cancel and segment measurement (default 5, quick 2)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    report: dict = {"command": "python bench/jobs.py" + (" --quick" if args.quick else ""), "cpus": os.cpu_count(),
                    "load_average_before": os.getloadavg()}
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")
    with tempfile.TemporaryDirectory(prefix="studio-bench-jobs-") as tmp:
        work = Path(tmp)
        write_tiny_preset(work)

        print("1. cancel latency (ms): from cancel() to the journal saying canceled / to no process left")
        report["cancel"] = bench_cancel(work, repeats, args.quick)
        for r in report["cancel"]:
            print(f"   {r['step']:10s} canceled: median {r['to_canceled_ms_median']:6.1f}  max {r['to_canceled_ms_max']:6.1f}"
                  f"   no processes: median {r['no_processes_ms_median']:6.1f}  max {r['no_processes_ms_max']:6.1f}")

        print("2. resume after SIGKILL: work finished before the kill and made again after the restart")
        report["resume"] = bench_resume(work, args.quick)
        for r in report["resume"]:
            print(f"   killed during {r['kill_during']:8s} ({r['compose']:8s}): {r['lost_work']}; run {r['before_kill_s']:.1f} s"
                  f" before the kill + {r['resumed_run_s']:.1f} s after = {r['rework']:+.0%} against an uninterrupted"
                  f" {r['full_run_s']:.1f} s (compose {r['compose_s_resumed']:.1f} s vs {r['compose_s_full']:.1f} s)")

        print("3. concurrency: tiny jobs from 4 users through the HTTP API")
        report["concurrency"] = bench_concurrency(work, args.quick)
        for r in report["concurrency"]["throughput"]:
            print(f"   {r['cpu_slots']} slot(s): {r['jobs']} jobs in {r['wall_s']:.1f} s ({r['jobs_per_min']:.0f}/min), "
                  f"queue wait median {r['queue_wait_s_median']:.1f} s p95 {r['queue_wait_s_p95']:.1f} s, "
                  f"GET /api/jobs/{{id}} p50 {r['api_get_ms_p50']:.1f} ms p95 {r['api_get_ms_p95']:.1f} ms")
        fair = report["concurrency"]["fairness"]
        print(f"   fairness: a single job queued behind {fair['queued_before_it']} of another user's started "
              f"{fair['started_at_position']}{'nd' if fair['started_at_position'] == 2 else 'th'} (FIFO: "
              f"{fair['fifo_position']}th), after {fair['waited_s']:.1f} s")

        print("4. segment overhead: compose step of a fresh render")
        report["segments"] = bench_segments(work, repeats, args.quick)
        for r in report["segments"]:
            if "ratio" in r:
                print(f"   segments / one pass: {r['ratio']:.2f}x")
            else:
                print(f"   {r['compose']:9s} {r['scenes']} scenes, {r['video_s']:.1f} s video: compose {r['compose_s_median']:.2f} s")
    report["load_average_after"] = os.getloadavg()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
