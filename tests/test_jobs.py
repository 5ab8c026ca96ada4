"""The job runner in this process: journal, fairness, bounded queue, idempotency, cancel, resume, disk hygiene."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from studio.errors import StudioError
from studio.server import Conflict, Gone, JobRequest, JobRunner, Limits, NotFound, QueueFull, RequestError, Retention

from .conftest import video_facts
from .jobs_support import make_runner, slow_painter, tiny  # noqa: F401  (pytest fixtures)
from .jobs_support import (child_pids, iter_events, new_children, storyboard, temp_files,
                           tiny_request, wait_for)




def test_job_runs_to_done_and_journals_every_step(make_runner):
    runner = make_runner()
    job = runner.submit(tiny_request((1.0, 1.5, 1.0)), owner="alice")
    assert job.state == "queued" and job.owner == "alice"
    done = runner.wait(job.id, timeout_s=120)
    assert done.state == "done", done.error
    facts = video_facts(done.output)
    assert (facts["width"], facts["height"]) == (96, 96) and facts["has_audio"]
    assert facts["duration_s"] == pytest.approx(done.result["duration_s"], abs=0.1)
    # fixed durations 1.0 + 1.5 + 1.0 minus two 0.2 s transitions
    assert facts["duration_s"] == pytest.approx(3.1, abs=1 / 12 + 0.01)
    assert [s["step"] for s in done.steps] == ["storyboard", "narrate", "illustrate", "compose"]
    assert done.percent == 100 and done.attempts == 1 and done.error is None
    assert len(done.scenes) == 3
    assert all(v == {"narrate": "made", "illustrate": "made", "compose": "made"} for v in done.scenes.values())
    kinds = [e.kind for e in runner.events(job.id)]
    assert kinds[:2] == ["queued", "running"] and kinds[-1] == "done"
    assert kinds.count("scene") == 6 and kinds.count("step") == 4 and "progress" in kinds
    seqs = [e.seq for e in runner.events(job.id)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [e.seq for e in runner.events(job.id, after=3)] == seqs[3:]
    assert temp_files(runner.data_dir) == []
    assert runner.video_path(job.id, "alice") == done.output
    with pytest.raises(NotFound):
        runner.get(job.id, "bob")
    with pytest.raises(NotFound):
        runner.video_path(job.id, "bob")


def test_idempotency_key_gives_one_job(make_runner):
    runner = make_runner(start=False)
    first = runner.submit(tiny_request(), owner="alice", idempotency_key="order-17")
    again = runner.submit(tiny_request(), owner="alice", idempotency_key="order-17")
    assert again.id == first.id
    assert len(runner.list("alice")) == 1
    other_user = runner.submit(tiny_request(), owner="bob", idempotency_key="order-17")
    assert other_user.id != first.id  # keys are per user
    with pytest.raises(Conflict) as err:
        runner.submit(tiny_request((2.0,)), owner="alice", idempotency_key="order-17")
    assert err.value.field == "Idempotency-Key"
    with pytest.raises(RequestError):
        runner.submit(tiny_request(), owner="alice", idempotency_key="has space")


def test_voice_names_of_every_narrator_are_accepted(make_runner):
    runner = make_runner(start=False)
    for voice in ("en-us", "en_US-joe-medium", "v2/en_speaker_6", "en+f3"):
        assert runner.submit({**tiny_request(), "voice": voice}, owner="alice").state == "queued"


def test_prepare_runs_before_a_worker_can_take_the_job_and_a_failure_drops_it(make_runner):
    runner = make_runner()
    seen = []

    def prepare(folder: Path) -> None:
        seen.append((folder, [j.state for j in runner.list("alice")]))
        (folder / "assets").mkdir(parents=True)
        (folder / "assets" / "seeded.txt").write_text("from the studio")

    job = runner.submit(tiny_request(), owner="alice", prepare=prepare)
    assert seen == [(job.project_dir, ["queued"])]  # called once, while the job could not yet run
    done = runner.wait(job.id, timeout_s=120)
    assert done.state == "done", done.error
    assert (job.project_dir / "assets" / "seeded.txt").read_text() == "from the studio"

    def broken(folder: Path) -> None:
        folder.mkdir(parents=True)
        raise StudioError("the project could not be copied")

    with pytest.raises(StudioError, match="could not be copied"):
        runner.submit(tiny_request(), owner="alice", prepare=broken)
    assert [j.id for j in runner.list("alice")] == [job.id]  # the failed submission left no job and no folder
    assert sorted(p.name for p in job.project_dir.parent.iterdir()) == [job.id]


@pytest.mark.parametrize("request_data, field, words", [
    ({"script": "word " * 5000, "preset": "tiny"}, "script", "limit is 20,000"),
    ({"script": "word " * 3000, "preset": "tiny"}, "script", "limit of 900 s"),
    ({"storyboard": storyboard([1.0] * 41), "preset": "tiny"}, "storyboard", "limit is 40"),
    ({"storyboard": [{"narration": "x", "duration_s": 500}], "preset": "tiny"}, "storyboard[0].duration_s", "between 0.2 and 120"),
    ({"storyboard": [{"narration": "x", "duration_s": float("nan")}]}, "storyboard[0].duration_s", "must be a number"),
    ({"script": "hello", "preset": "maximum"}, "preset", "2,073,600 pixels"),
    ({"script": "hello", "preset": "../../etc/passwd"}, "preset", "must be one of"),
    ({"script": "hello", "colour": "red"}, "colour", "unknown field"),
    ({"script": "hello", "brief": "also"}, "brief", "exactly one"),
    ({}, "script", "exactly one"),
    ({"script": "bad \x00 byte"}, "script", "control character"),
    ({"script": "lone \ud800 surrogate"}, "script", "surrogate"),
    ({"script": "hello", "providers": {"painter": "local"}}, "providers.painter", "must be one of"),
    ({"script": "hello", "providers": {"narrator": "nope"}}, "providers.narrator", "must be one of"),
    ({"script": "hello", "voice": "../../voice.onnx"}, "voice", "voice name"),
    ({"script": "hello", "voice": "/etc/voice"}, "voice", "voice name"),
    ({"script": "hello", "voice": "a/b/c"}, "voice", "voice name"),
    ({"script": "hello", "voice": "my.npz"}, "voice", "voice name"),
    ({"script": "hello", "music": "../../etc/passwd"}, "music", "no upload"),
    ({"storyboard": [{"narration": "x", "media": "/etc/passwd"}]}, "storyboard[0].media", "no upload"),
    ({"script": "hello", "aspect": "4:3"}, "aspect", "16:9, 9:16, 1:1"),
    ({"script": "hello", "seed": True}, "seed", "whole number"),
    ({"storyboard": [{"narration": ""}]}, "storyboard[0].narration", "no narration and no duration_s"),
    ([1, 2], "body", "JSON object"),
])
def test_bad_requests_are_refused_before_any_work_naming_the_field(make_runner, request_data, field, words):
    runner = make_runner(start=False)
    with pytest.raises((RequestError, NotFound)) as err:
        runner.submit(request_data, owner="alice")
    assert err.value.field == field
    assert words in str(err.value)
    assert runner.list() == []  # nothing was queued


def test_limits_are_configurable_and_named(make_runner):
    runner = make_runner(start=False, limits=Limits(max_scenes=2, max_pixels=100 * 100))
    with pytest.raises(RequestError, match="limit is 2"):
        runner.submit(tiny_request((1, 1, 1)), owner="a")
    with pytest.raises(RequestError, match="10,000 pixels"):
        runner.submit({"script": "hi", "preset": "draft", "aspect": "1:1"}, owner="a")  # 480x480 > 100x100
    assert runner.submit(tiny_request((1, 1)), owner="a").state == "queued"  # 96x96 fits


def test_a_script_over_the_scene_limit_is_refused_at_submission(make_runner):
    """The script is split when it is submitted: too many scenes is a 422 naming `script`, and no job is made."""
    runner = make_runner(limits=Limits(max_scenes=2))
    script = "# Many\n\n" + "\n\n".join(f"Paragraph number {i} is here." for i in range(5))
    with pytest.raises(RequestError, match="splits into 5 scenes; this server's limit is 2") as caught:
        runner.submit({"script": script, "preset": "tiny"}, owner="a")
    assert caught.value.field == "script" and runner.list("a") == []


def test_full_queue_refuses_at_once(make_runner):
    runner = make_runner(start=False, max_queued=3, max_queued_per_owner=2)
    runner.submit(tiny_request(), owner="alice")
    runner.submit(tiny_request(), owner="alice")
    with pytest.raises(QueueFull, match="you have 2 jobs waiting"):
        runner.submit(tiny_request(), owner="alice")
    runner.submit(tiny_request(), owner="bob")
    started = time.perf_counter()
    with pytest.raises(QueueFull, match="queue is full") as err:
        runner.submit(tiny_request(), owner="carol")
    assert time.perf_counter() - started < 0.5
    assert err.value.status == 429 and err.value.retry_after_s > 0
    assert runner.counts()["queued"] == 3


def test_users_are_served_round_robin(make_runner):
    runner = make_runner(start=False, max_queued_per_owner=10)
    alice = [runner.submit(tiny_request((0.5,)), owner="alice").id for _ in range(5)]
    bob = runner.submit(tiny_request((0.5,)), owner="bob").id
    carol = runner.submit(tiny_request((0.5,)), owner="carol").id
    runner.start()
    for job_id in alice + [bob, carol]:
        assert runner.wait(job_id, timeout_s=120).state == "done"
    order = sorted(alice + [bob, carol], key=lambda j: runner.get(j).started_at)
    # alice's first job was first in line; then bob and carol get a turn before alice's second
    assert order[:3] == [alice[0], bob, carol]
    assert order[3:] == alice[1:]


@pytest.mark.parametrize("step", ["narrate", "illustrate", "compose"])
def test_cancel_stops_each_step_and_leaves_nothing(make_runner, slow_painter, step):
    runner = make_runner()
    baseline = child_pids()
    long_text = " ".join(["The quick brown fox jumps over the lazy dog."] * 30)  # about a minute of speech
    if step == "narrate":
        request = {"storyboard": [{"narration": long_text} for _ in range(5)], "preset": "tiny", "aspect": "1:1"}
    elif step == "illustrate":
        request = {**tiny_request((1.0,) * 4), "providers": {"painter": slow_painter}}
    else:  # a longer video at the draft size, so the encoder is busy when the cancel comes
        request = {"storyboard": storyboard([10.0] * 3), "preset": "draft", "aspect": "1:1"}
    job = runner.submit(request, owner="alice")

    # Wait until the step is under way: espeak-ng speaking (narrate), a scene painted (illustrate), frames being
    # encoded by ffmpeg (compose).
    if step == "illustrate":
        next(e for e in iter_events(runner, job.id, {"scene"}) if e.data["step"] == step)
    else:
        program = "espeak" if step == "narrate" else "ffmpeg"
        wait_for(lambda: runner.get(job.id).step == step
                 and any(p.name().startswith(program) for p in new_children(baseline)), timeout_s=120, interval_s=0.005)

    asked = time.perf_counter()
    runner.cancel(job.id, "alice")
    ended = runner.wait(job.id, timeout_s=30)
    latency = time.perf_counter() - asked
    assert ended.state == "canceled", ended.error
    assert latency < 5.0
    assert step not in [s["step"] for s in ended.steps]  # it really was stopped inside that step
    wait_for(lambda: not new_children(baseline), timeout_s=5)
    assert new_children(baseline) == []
    assert temp_files(runner.data_dir) == []
    assert not (ended.project_dir / "assets").exists() and not (ended.project_dir / "renders").exists()
    assert [e.kind for e in runner.events(job.id)][-1] == "canceled"
    with pytest.raises(Conflict):
        runner.cancel(job.id, "alice")


def test_cancel_of_a_waiting_job_is_immediate(make_runner):
    runner = make_runner(start=False)
    job = runner.submit(tiny_request(), owner="alice")
    assert runner.cancel(job.id, "alice").state == "canceled"
    with pytest.raises(NotFound):
        runner.cancel(job.id, "bob")


def test_shutdown_interrupts_and_restart_resumes_from_assets(make_runner, tmp_path):
    runner = make_runner()
    job = runner.submit(tiny_request((1.0,) * 5), owner="alice")
    next(iter_events(runner, job.id, {"segment"}))  # narration and visuals done, a segment rendered
    runner.close()
    conn = sqlite3.connect(tmp_path / "data" / "studio.db")
    assert conn.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()[0] == "interrupted"
    conn.close()

    again = make_runner()
    done = again.wait(job.id, timeout_s=120)
    assert done.state == "done" and done.attempts == 2
    resumed = [e for e in again.events(job.id) if e.kind == "running"][-1]
    assert resumed.data["resumed"] is True
    after = [e for e in again.events(job.id, after=resumed.seq) if e.kind in ("scene", "segment")]
    assert all(e.data["reused"] for e in after if e.kind == "scene")  # no scene narrated or painted twice
    assert any(e.data["reused"] for e in after if e.kind == "segment")
    video_facts(done.output)
    assert temp_files(again.data_dir) == []


@pytest.mark.parametrize("state", ["running", "interrupted"])
def test_a_cancel_accepted_before_a_stop_is_carried_out_at_the_next_start(make_runner, tmp_path, state):
    """A job whose cancel was accepted (cancel_requested) when the server was killed (`running`) or stopped
    (`interrupted`) ends canceled at the next start, with its files removed: it never resumes and ends done."""
    runner = make_runner(start=False)
    job = runner.submit(tiny_request(), owner="alice")
    runner.close()
    conn = sqlite3.connect(tmp_path / "data" / "studio.db")
    conn.execute("UPDATE jobs SET state = ?, attempts = 1, cancel_requested = 1 WHERE id = ?", (state, job.id))
    conn.commit()
    conn.close()
    (job.project_dir / "assets").mkdir(parents=True)
    (job.project_dir / "assets" / "made.wav").write_bytes(b"RIFF")
    again = make_runner()
    try:
        ended = again.wait(job.id, timeout_s=10)
        assert ended.state == "canceled" and again.recovered == []
        assert [e.kind for e in again.events(job.id)][-1] == "canceled"
        assert not (job.project_dir / "assets" / "made.wav").exists()
    finally:
        again.close()


def test_running_jobs_found_at_start_become_interrupted_then_failed_after_too_many(make_runner, tmp_path):
    runner = make_runner(start=False)
    job = runner.submit(tiny_request(), owner="alice")
    runner.close()
    # As a SIGKILL would leave it: running, with a half-written file and a work folder in its project.
    conn = sqlite3.connect(tmp_path / "data" / "studio.db")
    conn.execute("UPDATE jobs SET state = 'running', attempts = 1 WHERE id = ?", (job.id,))
    conn.commit()
    (job.project_dir / "renders").mkdir(parents=True)
    (job.project_dir / "renders" / ".video.part-x1y2.mp4").write_bytes(b"truncated")
    (job.project_dir / "renders" / ".video.render-abc").mkdir()
    again = make_runner(start=False)
    assert again.recovered == [job.id]
    assert again.get(job.id).state == "interrupted"
    assert temp_files(again.data_dir) == []
    again.close()
    for crash in (2, 3):  # crashes, not graceful stops, are what is counted: two more of them
        conn.execute("UPDATE jobs SET state = 'running', attempts = attempts + 1 WHERE id = ?", (job.id,))
        conn.commit()
        make_runner(start=False).close()
    conn.close()
    third = make_runner(start=False)
    failed = third.get(job.id)
    assert failed.state == "failed" and "3 times" in failed.error and failed.crashes == 3


def test_one_runner_per_data_folder(make_runner, tmp_path):
    make_runner(start=False)
    with pytest.raises(StudioError, match="in use by another Studio server"):
        JobRunner(tmp_path / "data")


def test_failed_job_says_why_and_cleans_up(make_runner):
    runner = make_runner()
    job = runner.submit({**tiny_request(), "voice": "zz", "providers": {"narrator": "espeak"}}, owner="a")
    failed = runner.wait(job.id, timeout_s=60)
    assert failed.state == "failed"
    assert "'zz'" in failed.error and "espeak" in failed.error
    assert failed.error_detail and "Traceback" in failed.error_detail
    assert "Traceback" not in json.dumps(failed.to_dict())  # the user sees the message, not the log details
    assert not (failed.project_dir / "assets").exists() and temp_files(runner.data_dir) == []
    assert [e.kind for e in runner.events(job.id)][-1] == "failed"


def test_retention_removes_old_renders(make_runner):
    runner = make_runner(retention=Retention(max_age_s=3600, max_total_bytes=None))
    first = runner.wait(runner.submit(tiny_request(), owner="a").id, timeout_s=60)
    second = runner.wait(runner.submit(tiny_request((2.0,)), owner="a").id, timeout_s=60)
    assert runner.expire() == []
    assert runner.expire(now=time.time() + 7200) == [first.id, second.id]
    assert not first.project_dir.exists()
    with pytest.raises(Gone):
        runner.video_path(first.id, "a")
    assert runner.get(first.id, "a").expired


def test_retention_forgets_old_expired_jobs_and_compacts_the_journal(make_runner):
    """A job whose files are gone leaves the journal `forget_after_s` after it ended, and the journal's file shrinks
    back (a server that runs for months keeps a journal the size of its recent work)."""
    runner = make_runner(retention=Retention(max_age_s=3600, forget_after_s=86400))

    def journal_bytes() -> int:  # the database and its write-ahead log
        return sum(p.stat().st_size for p in runner.data_dir.glob("studio.db*") if not p.name.endswith(".bak"))

    runner.journal.execute("VACUUM")
    runner.journal.query("PRAGMA wal_checkpoint(TRUNCATE)")
    empty = journal_bytes()
    ids = [runner.wait(runner.submit(tiny_request(), owner="a").id, timeout_s=60).id for _ in range(3)]
    grown = journal_bytes()
    assert runner.expire(now=time.time() + 7200) == ids  # files removed, rows kept (410 for the video)
    assert all(runner.get(i, "a").expired for i in ids)
    runner.expire(now=time.time() + 2 * 86400)
    for job_id in ids:
        with pytest.raises(NotFound):
            runner.get(job_id, "a")
    assert runner.journal.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0
    assert journal_bytes() <= empty + 4096 < grown, (empty, grown, journal_bytes())  # back to the empty size


def test_retention_caps_total_size_oldest_first(make_runner):
    from studio.server.retention import _folder_bytes

    runner = make_runner(retention=Retention(max_age_s=None))
    first = runner.wait(runner.submit(tiny_request(), owner="a").id, timeout_s=60)
    second = runner.wait(runner.submit(tiny_request((2.0,)), owner="a").id, timeout_s=60)
    runner.retention = Retention(max_age_s=None, max_total_bytes=_folder_bytes(second.project_dir) + 1)
    assert runner.expire() == [first.id]
    assert runner.get(first.id).expired and not runner.get(second.id).expired
    assert runner.video_path(second.id).is_file()


def test_job_request_round_trips(make_runner):
    request = JobRequest.from_dict({"storyboard": storyboard([1.0, 2.0]), "preset": "draft", "title": "T",
                                    "providers": {"narrator": "espeak"}, "captions": False})
    again = JobRequest.from_dict(request.to_dict())
    assert again == request and again.fingerprint() == request.fingerprint()
    assert again.narrator == "espeak" and again.captions is False and again.source == "storyboard"


def test_events_can_be_awaited(make_runner):
    runner = make_runner(start=False)
    job = runner.submit(tiny_request(), owner="alice")
    seen = runner.events(job.id, "alice")
    assert [e.kind for e in seen] == ["queued"]
    started = time.perf_counter()
    assert runner.events(job.id, "alice", after=seen[-1].seq, wait_s=0.3) == []  # nothing happens while stopped
    assert time.perf_counter() - started >= 0.3
    runner.start()
    started = time.perf_counter()
    following = runner.events(job.id, "alice", after=seen[-1].seq, wait_s=30)
    assert following and following[0].kind == "running" and time.perf_counter() - started < 5


def test_a_started_runner_has_imported_the_steps_before_its_workers_run(tmp_path):
    """Workers must not import the step modules for the first time concurrently (opposite import-lock orders end in
    an ImportError for one of them), so `start` imports them first, on the caller's thread; in a fresh interpreter."""
    import subprocess

    from .jobs_support import PYTHON, ROOT, python_env

    code = ("import sys, studio.server as j; from studio.server import STEP_MODULES; "
            "before = [m for m in STEP_MODULES if m in sys.modules]; "
            f"r = j.JobRunner({str(tmp_path / 'data')!r}, start=False); "
            "assert all(m not in sys.modules for m in ('studio.compose', 'studio.voice')), 'imported too early'; "
            "r.start(); after = [m for m in STEP_MODULES if m not in sys.modules]; r.close(); "
            "heavy = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', "
            "'transformers', 'gradio')}); print(before, after, heavy)")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] [] []"  # none before, all after, and still no heavy library


def test_a_job_and_a_cli_render_of_the_same_project_make_the_same_video(make_runner, tiny, tmp_path):
    """One pipeline: the job runner (segments, through its executor) and the CLI's `make_video` (one pass) render
    the same project to the same video facts, and the job reuses every asset the first render made."""
    from studio import Project, load_preset
    from studio.pipeline import make_video

    from .conftest import video_facts

    project = Project.from_storyboard(storyboard([1.0, 1.5]), title="Same", aspect="1:1").save(tmp_path / "proj")
    cli = make_video(project, preset=load_preset(tiny), output=tmp_path / "cli.mp4", narrator="espeak",
                     painter="cards")
    runner = make_runner()
    job = runner.wait(runner.submit_project(cli.project, owner="a", preset="tiny", narrator="espeak",
                                            painter="cards").id, timeout_s=60)
    assert job.state == "done", job.error
    ours, theirs = video_facts(cli.output), video_facts(job.output)
    for key in ("width", "height", "fps", "video_codec", "audio_codec", "has_audio", "frames"):
        assert ours[key] == theirs[key], key
    assert abs(ours["duration_s"] - theirs["duration_s"]) <= 1 / ours["fps"] + 1e-6
    assert {s["step"]: s["made"] for s in job.steps if s["step"] in ("narrate", "illustrate")} == \
        {"narrate": 0, "illustrate": 0}  # every narration and picture found, none made again


def test_a_job_naming_an_earlier_one_reuses_its_work(make_runner):
    """`project`: a render of the same work after an edit of one scene makes only that scene's narration and the
    segments the edit touched again, over HTTP as in the studio (issue 19)."""
    runner = make_runner()
    scenes = storyboard([1.0, 1.0, 1.0])
    first = runner.wait(runner.submit({"storyboard": scenes, "preset": "tiny", "aspect": "1:1"}, owner="a").id,
                        timeout_s=60)
    assert first.state == "done", first.error
    edited = [dict(s) for s in scenes]
    edited[1]["narration"] = "A new line for the middle scene."
    again = runner.wait(runner.submit({"storyboard": edited, "preset": "tiny", "aspect": "1:1", "project": first.id},
                                      owner="a").id, timeout_s=60)
    assert again.state == "done", again.error
    steps = {s["step"]: s for s in again.steps}
    assert (steps["narrate"]["made"], steps["narrate"]["reused"]) == (1, 2)
    assert steps["illustrate"]["made"] <= 1 and steps["illustrate"]["reused"] >= 2
    # Five segments (three scenes, two transitions): the edited scene's and the two transitions at its ends again.
    assert (steps["compose"]["made"], steps["compose"]["reused"]) == (3, 2)
    # Another user's job, or a malformed id, names no job to reuse.
    for owner, project in (("b", first.id), ("a", "nope")):
        with pytest.raises(NotFound) as caught:
            runner.submit({"storyboard": scenes, "preset": "tiny", "aspect": "1:1", "project": project}, owner=owner)
        assert caught.value.field == "project"
