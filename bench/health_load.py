"""Health under load: the latency of ``GET /api/health`` while 100 long polls and 100 event streams are held open.

    python bench/health_load.py            # the figures in bench/README.md (## Health under load), ~2 min
    python bench/health_load.py --quick    # shorter phases, under a minute
    python bench/health_load.py --polls 41 --streams 0 --json out.json

One ``python -m studio serve`` (the studio at /, the API at /api) on a free loopback port with a temporary data folder
and the tiny test preset. Jobs to wait on: one job is started and *held* in its narration step (its espeak-ng
process is stopped with SIGSTOP, so the job stays ``running`` and uses no CPU), and the rest queue behind it (one CPU
job slot). No render competes for the CPU, so the phases differ only in the clients held open:

1. **no load**: nothing but the health requests;
2. **streams**: `--streams` clients (default 100) on ``GET /api/jobs/{id}/events`` (Server-Sent Events), spread
   over the jobs;
3. **streams + long polls**: the streams, plus `--polls` (default 100) Gradio ``/wait`` calls on the same jobs,
   through Gradio's queue API (``POST /gradio_api/call/wait``, then its event stream held open); each would wait up
   to `--wait-s` for its job to end;
4. **after**: every client has disconnected (the server may still be busy with what they left).

In each phase ``GET /api/health`` is sent open-loop at `--rate` per second for `--seconds` (each with a `--timeout-s`
limit; one that times out counts at the limit and is reported), and the p50 / p95 / max latency are printed side by
side. The target is p95 < 200 ms in phase 3. All clients are asyncio tasks on one httpx client, so the benchmark
itself stays cheap. At the end the server and every process it started are ended (the stopped espeak-ng included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks run as scripts from a checkout
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench._serve import Server, become_subreaper, exit_on_signals, kill_processes, stray_processes  # noqa: E402
from studio.testing import write_tiny_preset  # noqa: E402

TARGET_P95_MS = 200.0
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog while the river runs on."] * 10)


def fmt_ms(value: float | None, limit_s: float) -> str:
    if value is None:
        return "-"
    return f">= {limit_s:g} s" if value >= 1000 * limit_s else f"{value:.1f} ms"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- the jobs to wait on -------------------------------------------------------------------------------------------
def hold_jobs(server: Server, count: int, timeout_s: float = 60.0) -> tuple[list[str], psutil.Process]:
    """One job held `running` (its espeak-ng stopped) and `count - 1` queued behind it; returns their ids and the
    stopped process."""
    http = httpx.Client(base_url=server.url, timeout=30)
    try:
        holder = {"storyboard": [{"narration": LONG_TEXT, "visual_prompt": "held"}] * 3, "preset": "tiny",
                  "aspect": "1:1", "title": "held"}
        ids = [http.post("/api/jobs", json=holder).raise_for_status().json()["id"]]
        deadline = time.monotonic() + timeout_s
        stopped = None
        while stopped is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the held job's espeak-ng never showed up")
            for child in server.descendants():
                try:
                    # the synthesis (it writes a WAV with -w), not the version probe, which has a 30 s timeout
                    if child.name().startswith("espeak") and "-w" in child.cmdline():
                        child.send_signal(signal.SIGSTOP)
                        time.sleep(0.05)
                        if child.status() == psutil.STATUS_STOPPED:
                            stopped = child
                            break
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.005)
        body = {"storyboard": [{"narration": "Queued.", "visual_prompt": "queued", "duration_s": 0.5}],
                "preset": "tiny", "aspect": "1:1"}
        for _ in range(count - 1):
            ids.append(http.post("/api/jobs", json=body).raise_for_status().json()["id"])
        time.sleep(1.0)
        states = [http.get(f"/api/jobs/{i}").json()["state"] for i in ids]
        held = states[0] == "running" and all(s == "queued" for s in states[1:])
        if not held or stopped.status() != psutil.STATUS_STOPPED:
            raise RuntimeError(f"the jobs are not held: {states}")
        return ids, stopped
    finally:
        http.close()


# -- the clients ---------------------------------------------------------------------------------------------------
class Clients:
    """Event streams and Gradio long polls held open as asyncio tasks."""

    def __init__(self, client: httpx.AsyncClient, ids: list[str], wait_s: float) -> None:
        self.client, self.ids, self.wait_s = client, ids, wait_s
        self.tasks: list[asyncio.Task] = []
        self.connected = {"stream": 0, "poll": 0}
        self.answered = {"stream": 0, "poll": 0}  # streams that sent an event / polls that got their answer
        self.refused = 0  # long polls that Gradio's queue refused (503: the queue is full)
        self.errors: list[str] = []

    def open(self, kind: str, count: int) -> None:
        for k in range(count):
            job_id = self.ids[k % len(self.ids)]
            coro = self.stream(job_id) if kind == "stream" else self.poll(job_id)
            self.tasks.append(asyncio.ensure_future(coro))

    async def stream(self, job_id: str) -> None:
        try:
            async with self.client.stream("GET", f"/api/jobs/{job_id}/events") as response:
                response.raise_for_status()
                self.connected["stream"] += 1
                got_event = False
                async for line in response.aiter_lines():
                    if line.startswith("event:") and not got_event:
                        got_event = True
                        self.answered["stream"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors.append(f"stream: {type(exc).__name__}: {exc}"[:200])

    async def poll(self, job_id: str) -> None:
        """Gradio's queue API: POST the call, then hold its event stream until the answer (or the task is cancelled)."""
        try:
            posted = await self.client.post("/gradio_api/call/wait", json={"data": [job_id, self.wait_s]})
            if posted.status_code == 503:
                self.refused += 1
                return
            posted.raise_for_status()
            event_id = posted.json()["event_id"]
            self.connected["poll"] += 1  # in Gradio's queue (its stream answers only once the handler has run)
            async with self.client.stream("GET", f"/gradio_api/call/wait/{event_id}") as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.startswith("event: complete") or line.startswith("event: error"):
                        self.answered["poll"] += 1
                        return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors.append(f"poll: {type(exc).__name__}: {exc}"[:200])

    async def wait_connected(self, kind: str, count: int, timeout_s: float) -> float:
        started = time.monotonic()
        while (self.connected[kind] + (self.refused if kind == "poll" else 0) < count
               and time.monotonic() - started < timeout_s):
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


# -- the measurement -----------------------------------------------------------------------------------------------
async def measure_health(url: str, *, rate: float, seconds: float, timeout_s: float) -> dict:
    """``GET /api/health`` sent open-loop at `rate` per second for `seconds`; latencies in ms (a timeout counts at
    the limit)."""
    latencies: list[float] = []
    timeouts = errors = 0
    limits = httpx.Limits(max_connections=int(rate * timeout_s) + 10, max_keepalive_connections=20)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        try:
            await client.get("/api/health")  # a connection in the pool (not counted)
        except httpx.HTTPError:
            pass

        async def one() -> None:
            nonlocal timeouts, errors
            started = time.perf_counter()
            try:
                response = await client.get("/api/health")
                response.raise_for_status()
                latencies.append(1000 * (time.perf_counter() - started))
            except httpx.TimeoutException:
                timeouts += 1
                latencies.append(1000 * timeout_s)
            except httpx.HTTPError:
                errors += 1

        tasks = []
        began = time.monotonic()
        for k in range(int(rate * seconds)):
            delay = began + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    if not latencies:
        return {"requests": len(tasks), "timeouts": timeouts, "errors": errors}
    return {"requests": len(tasks), "p50_ms": pct(latencies, 0.5), "p95_ms": pct(latencies, 0.95),
            "max_ms": max(latencies), "mean_ms": statistics.mean(latencies), "timeouts": timeouts, "errors": errors}


def server_threads(server: Server) -> int:
    try:
        return server.process().num_threads()
    except psutil.NoSuchProcess:
        return 0


async def run_phases(server: Server, ids: list[str], args: argparse.Namespace) -> list[dict]:
    rows = []
    limits = httpx.Limits(max_connections=args.streams + args.polls + 20, max_keepalive_connections=20)
    timeout = httpx.Timeout(30.0, read=None)  # the streams are quiet for long spells; the tasks are cancelled
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits) as client:
        clients = Clients(client, ids, args.wait_s)

        async def phase(name: str, **extra) -> None:
            await asyncio.sleep(args.settle_s)
            cpu0 = server.process().cpu_times()
            figures = await measure_health(server.url, rate=args.rate, seconds=args.seconds, timeout_s=args.timeout_s)
            cpu1 = server.process().cpu_times()
            busy = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / args.seconds
            rows.append({"phase": name, **figures, "server_threads": server_threads(server),
                         "server_cpu": busy, **extra})
            limit = args.timeout_s
            print(f"   {name}: p50 {fmt_ms(figures.get('p50_ms'), limit)}, p95 {fmt_ms(figures.get('p95_ms'), limit)}, "
                  f"max {fmt_ms(figures.get('max_ms'), limit)}, {figures['timeouts']} timeouts"
                  f" ({figures['requests']} requests); server {server_threads(server)} threads, "
                  f"{100 * busy:.0f} % of a core", flush=True)

        await phase("no load")
        if args.streams:
            clients.open("stream", args.streams)
            took = await clients.wait_connected("stream", args.streams, args.connect_s)
            await phase(f"{args.streams} streams", connected=dict(clients.connected), connect_s=took)
        if args.polls:
            clients.open("poll", args.polls)
            took = await clients.wait_connected("poll", args.polls, args.connect_s)
            await phase(f"{args.streams} streams + {args.polls} long polls", connected=dict(clients.connected),
                        refused=clients.refused, connect_s=took)
        answered = dict(clients.answered)
        await clients.close()
        if args.after:
            await phase("after the clients left")
        if clients.errors:
            rows.append({"phase": "client errors", "errors": clients.errors[:10], "count": len(clients.errors)})
        rows.append({"phase": "answered", **answered})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases (5 s each)")
    parser.add_argument("--streams", type=int, default=100, help="event streams held open (default 100)")
    parser.add_argument("--polls", type=int, default=100, help="Gradio /wait long polls held open (default 100)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs they wait on: one held running, the rest queued")
    parser.add_argument("--rate", type=float, default=10.0, help="health requests per second (default 10)")
    parser.add_argument("--seconds", type=float, help="length of each phase (default 20, quick 5)")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="limit of one health request (default 5 s)")
    parser.add_argument("--wait-s", type=float, help="timeout_s of each /wait call (default: past the last phase)")
    parser.add_argument("--settle-s", type=float, help="pause before each phase's measurement (default 2, quick 1)")
    parser.add_argument("--connect-s", type=float, default=20.0, help="longest wait for the clients to connect")
    parser.add_argument("--no-after", dest="after", action="store_false", help="skip the phase after the clients left")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    args.settle_s = args.settle_s if args.settle_s is not None else (1.0 if args.quick else 2.0)
    phases_s = 4 * (args.seconds + args.settle_s + args.timeout_s) + 2 * args.connect_s
    args.wait_s = args.wait_s or phases_s + 30  # the long polls outlast the phases; the server is stopped after
    exit_on_signals()
    become_subreaper()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.streams} streams, {args.polls} long "
          f"polls on {args.jobs} jobs; health at {args.rate:g}/s for {args.seconds:g} s per phase")
    tmp = Path(tempfile.mkdtemp(prefix="studio-bench-health-"))
    server = None
    code = 0
    try:
        server = Server(tmp / "data", write_tiny_preset(tmp), tmp / "server.log", tmp / "gradio-server",
                        args=("--max-queued", str(args.jobs + 10), "--max-queued-per-user", str(args.jobs + 10)))
        started_s = server.start()
        ids, stopped = hold_jobs(server, args.jobs)
        print(f"server up in {started_s:.1f} s; job {ids[0][:8]} held running (espeak-ng {stopped.pid} stopped), "
              f"{len(ids) - 1} queued")
        rows = asyncio.run(asyncio.wait_for(run_phases(server, ids, args), timeout=phases_s + 120))
        measured = [r for r in rows if "requests" in r]
        print("\n| phase | clients held | health p50 | p95 | max | timed out | server threads | server CPU |")
        print("|---|---|---|---|---|---|---|---|")
        for r in measured:
            def fmt(key: str) -> str:
                return fmt_ms(r.get(key), args.timeout_s)

            held = "-"
            if "connected" in r:
                held = f"{r['connected']['stream']} streams"
                if "refused" in r:
                    held += f" + {r['connected']['poll']} long polls"
                    held += f" ({r['refused']} more refused: 503)" if r["refused"] else ""
            print(f"| {r['phase']} | {held} | {fmt('p50_ms')} | {fmt('p95_ms')} | {fmt('max_ms')} | "
                  f"{r['timeouts']} of {r['requests']} (limit {args.timeout_s:g} s) | {r['server_threads']} | "
                  f"{100 * r['server_cpu']:.0f} % |")
        for r in rows:
            if r["phase"] == "client errors":
                print(f"client errors: {r['count']}, e.g. {r['errors'][0]}")
            if r.get("refused"):
                print(f"{r['refused']} of {args.polls} long polls were refused by Gradio's queue (503, queue full)")
            if r["phase"] == "answered":
                print(f"streams that got an event: {r['stream']}; long polls answered before the end: {r['poll']} "
                      "(none should be: their jobs never end)")
        loaded = [r for r in measured if r["phase"] not in ("no load", "after the clients left")]
        if loaded:
            target = loaded[-1]
            p95 = target.get("p95_ms", float("inf"))
            met = p95 < TARGET_P95_MS and not target["timeouts"]
            timed_out = f", {target['timeouts']} timeouts" if target["timeouts"] else ""
            print(f"target: p95 < {TARGET_P95_MS:.0f} ms with {target['phase']}: "
                  f"{'met' if met else '**not met**'} (p95 {p95:.0f} ms{timed_out})")
            code = 0 if met else 1
        if args.json:
            command = "python bench/health_load.py" + (" --quick" if args.quick else "")
            settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            args.json.write_text(json.dumps({"command": command, "args": settings,
                                             "rows": rows, "load_average": os.getloadavg()}, indent=2), "utf-8")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        return code
    except BaseException:
        if server is not None:
            print(f"server log (tail):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop(term_s=1.0, int_s=3.0)  # threads stuck in long polls would hold a graceful stop for minutes
        kill_processes(stray_processes())
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
