"""Scene-level executors: the local one (default) and the Ray one on this machine (``ray.init(num_cpus=2)``)."""

from __future__ import annotations

import os
import threading
import time

import pytest

import studio
from studio.errors import Cancelled, StudioError
from studio.executors import LocalExecutor, Task, create_executor
from studio.pipeline import make_video
from studio.progress import CancelToken
from studio.project import Project

from .conftest import video_facts
from .jobs_support import storyboard, temp_files, wait_for, write_tiny_preset


@pytest.fixture
def tiny(tmp_path):
    return studio.load_preset(write_tiny_preset(tmp_path))


def saved_project(folder, durations) -> Project:
    return Project.from_storyboard(storyboard(durations), title="Exec", aspect="1:1").save(folder)


def test_local_executor_runs_tasks_in_order_and_reports_each(tmp_path, tiny):
    project = saved_project(tmp_path / "p", [1.0, 1.0, 1.0])
    tasks = [Task("narrate", {"project": project, "scene_id": s.id, "preset": tiny}) for s in project.scenes]
    done = []
    results = LocalExecutor().run(tasks, on_done=lambda i, r: done.append((i, r.scene_id, r.reused)))
    assert [r.scene_id for r in results] == [s.id for s in project.scenes]
    assert done == [(i, s.id, False) for i, s in enumerate(project.scenes)]
    assert all(r.scene.audio.is_file() and r.scene.audio.parent == project.assets_dir for r in results)
    again = LocalExecutor().run(tasks)
    assert all(r.reused for r in again)  # idempotent: the same task finds its asset

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        LocalExecutor().run(tasks, cancel=token)
    with pytest.raises(StudioError, match="unknown task kind"):
        Task("dance", {})


def test_local_executor_renders_segments_side_by_side_and_a_cancel_stops_them(tmp_path):
    folder, plans, tasks = long_segments(tmp_path, [6.0, 6.0])
    token = CancelToken()
    outcome = {}

    def run():
        try:
            LocalExecutor(segment_workers=2).run(tasks, cancel=token)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    # two segments encode at once, each in its own work folder
    wait_for(lambda: len({p.cwd() for p in encoders_working_in(folder)}) >= 2, timeout_s=120, interval_s=0.01)
    token.cancel()
    thread.join(30)
    assert isinstance(outcome.get("error"), Cancelled)
    wait_for(lambda: not encoders_working_in(folder), timeout_s=10)
    assert temp_files(folder) == [] and not list(folder.glob("*.mp4"))

    done = []
    results = LocalExecutor(segment_workers=2).run(tasks, on_done=lambda i, r: done.append((i, threading.get_ident())))
    assert [r.index for r in results] == [p.index for p in plans] and not any(r.reused for r in results)
    assert sorted(i for i, _ in done) == list(range(len(tasks)))
    assert {ident for _, ident in done} == {threading.get_ident()}  # on_done runs in the calling thread
    assert all(video_facts(r.path)["frames"] == p.frames for r, p in zip(results, plans))


def test_create_executor_specs():
    assert isinstance(create_executor(None), LocalExecutor) and isinstance(create_executor("local"), LocalExecutor)
    for bad in ("threads", "ray?cpu=x", "ray?mem=2"):
        with pytest.raises(StudioError):
            create_executor(bad)


# -- Ray ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-ray.txt")
    import ray

    from studio.executors import RayExecutor

    executor = RayExecutor(cpu_workers=2, init_options={"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024})
    yield executor
    executor.close()
    assert not ray.is_initialized()


def test_ray_executor_renders_in_its_actors_and_reuses_assets(tmp_path, tiny, ray_executor):
    project = saved_project(tmp_path / "p", [1.0, 1.2, 1.0])
    pids = ray_executor.worker_pids()
    assert len(set(pids)) == 2 and os.getpid() not in pids  # the work runs in the actors' own processes
    events = []
    summary = make_video(project, preset=tiny, output=tmp_path / "ray.mp4", executor=ray_executor, segments=True,
                            on_event=lambda k, d: events.append((k, d)))
    facts = video_facts(summary.output)
    assert (facts["width"], facts["height"]) == (96, 96) and facts["has_audio"]
    assert facts["duration_s"] == pytest.approx(3.2 - 0.4, abs=1 / 12 + 0.01)
    # 3 scenes' own segments and the 2 transitions between them
    assert sum(1 for k, _ in events if k == "scene") == 6 and sum(1 for k, _ in events if k == "segment") == 5
    assert summary.made == 6 + 5 and summary.reused == 0 and summary.segments_made == 5
    again = make_video(project, preset=tiny, output=tmp_path / "again.mp4", executor=ray_executor, segments=True)
    assert again.made == 0 and again.reused == 6 + 5
    # A new picture for the middle scene: the actors paint it and render its segment and its two transitions only.
    middle = again.project.scenes[1].id
    edited = again.project.edit_scene(middle, visual_prompt="another card")
    third = make_video(edited, preset=tiny, output=tmp_path / "third.mp4", executor=ray_executor)
    assert third.segmented and third.segments_made == 3 and third.segments_reused == 2
    assert next(s for s in third.steps if s.name == "illustrate").made == 1
    assert temp_files(tmp_path) == []


def encoders_working_in(folder) -> list:
    """ffmpeg processes (anywhere, e.g. in a Ray actor) whose working directory is inside `folder`."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if (proc.info["name"] or "").startswith("ffmpeg") and proc.cwd().startswith(str(folder)):
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def long_segments(tmp_path, seconds: list[float]):
    """A narrated, painted project at the draft size and the segment tasks of its video (long enough that a
    segment is still encoding when the test acts)."""
    from studio.compose import build_timeline
    from studio.compose.segments import plan_segments

    draft = studio.load_preset("draft")
    project = saved_project(tmp_path / "p", seconds)
    project = make_video(project, preset=draft, output=tmp_path / "first.mp4", segments=False).project
    timeline = build_timeline(project, draft)
    folder = tmp_path / "segments"
    plans = plan_segments(timeline)
    return folder, plans, [Task("segment", {"timeline": timeline, "plan": p, "folder": folder}) for p in plans]


def test_ray_executor_cancel_stops_running_tasks(tmp_path, ray_executor):
    folder, _, tasks = long_segments(tmp_path, [20.0, 20.0])
    token = CancelToken()
    outcome = {}

    def run():
        try:
            ray_executor.run(tasks, cancel=token)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: encoders_working_in(folder), timeout_s=120, interval_s=0.01)  # an actor's ffmpeg is encoding
    started = time.perf_counter()
    token.cancel()
    thread.join(30)
    assert isinstance(outcome.get("error"), Cancelled)
    assert time.perf_counter() - started < 10
    wait_for(lambda: not encoders_working_in(folder), timeout_s=10)  # the actor's ffmpeg was killed
    assert temp_files(folder) == [] and not list(folder.glob("*.mp4"))  # nothing half-made, nothing finished
    # the actors are still there and working
    quick = saved_project(tmp_path / "q", [0.5])
    tasks = [Task("narrate", {"project": quick, "scene_id": quick.scenes[0].id, "preset": studio.load_preset("draft")})]
    assert ray_executor.run(tasks)[0].scene.audio.is_file()


def test_ray_executor_retries_a_task_whose_actor_died(tmp_path, ray_executor):
    import ray

    folder, plans, tasks = long_segments(tmp_path, [20.0])
    before = ray_executor.worker_pids()
    victim = ray_executor._cpu[0]
    ray_executor._busy[victim] = -100  # make sure the task goes to the actor that will be killed
    result = {}
    runner = threading.Thread(target=lambda: result.update(out=ray_executor.run(tasks[:1])))
    runner.start()
    wait_for(lambda: encoders_working_in(folder), timeout_s=120, interval_s=0.01)
    assert runner.is_alive()  # the task is still in flight when its actor is killed
    ray.kill(victim, no_restart=False)  # the actor's process dies mid-task; Ray restarts it and retries the task
    runner.join(180)
    ray_executor._busy[victim] = 0
    assert "out" in result, "the task was not retried"
    segment = result["out"][0]
    assert not segment.reused and video_facts(segment.path)["frames"] == plans[0].frames
    after = ray_executor.worker_pids()
    assert after[0] != before[0] and after[1] == before[1]  # a new process for the killed actor


def test_job_runner_with_the_ray_executor(tmp_path, ray_executor):
    from studio.server import JobRunner

    class Borrowed:  # the module's executor, not closed by this runner
        name = "ray"
        run = staticmethod(ray_executor.run)

        def close(self):
            pass

    runner = JobRunner(tmp_path / "data", executor=Borrowed(), presets=[write_tiny_preset(tmp_path)])
    try:
        job = runner.submit({"storyboard": storyboard([1.0, 1.0]), "preset": "tiny", "aspect": "1:1"}, owner="a")
        done = runner.wait(job.id, timeout_s=180)
        assert done.state == "done", done.error
        video_facts(done.output)
    finally:
        runner.close()
