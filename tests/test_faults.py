"""Faults that must lose nothing (issue 10, items 6-10): a full disk, an emptied journal, a damaged journal page, a
deleted server.lock, crash counting, deleting an upload a job needs, the studio app on a data folder in use.

Each test names what it checks; the full disk is simulated by making `shutil.disk_usage` report little free space
and by making a write raise ``OSError(errno.ENOSPC)``; the damaged journal is a real runner's journal with pages in
its middle overwritten."""

from __future__ import annotations

import errno
import io
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from studio.errors import StudioError
from studio.server import JobRequest, JobRunner

from .jobs_support import make_runner, slow_painter, tiny  # noqa: F401  (pytest fixtures)
from .jobs_support import storyboard, temp_files, tiny_request, wait_for




def png_bytes(size=(64, 48), seed: int = 1) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    pixels = np.random.default_rng(seed).random((size[1], size[0], 3)) * 255
    Image.fromarray(pixels.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def api_client(runner):
    """An HTTP client of the runner's API (no auth: every request is the ``local`` user); server errors come back as
    responses, as a real server sends them."""
    from starlette.testclient import TestClient

    from studio.server.api import create_app

    return TestClient(create_app(runner), raise_server_exceptions=False)


def full_disk(monkeypatch, free_bytes: int) -> None:
    """Make every free-space query report `free_bytes` free."""
    real = shutil.disk_usage

    def disk_usage(path):
        usage = real(path)
        return type(usage)(usage.total, usage.total - free_bytes, free_bytes)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


def damage(db: Path) -> None:
    """Overwrite the middle third of a journal's pages with garbage (page 1, the header and schema, stays)."""
    data = bytearray(db.read_bytes())
    page = 4096
    pages = len(data) // page
    assert pages >= 6, f"the journal has only {pages} pages; make more rows first"
    for i in range(pages // 3, 2 * pages // 3 + 1):
        data[i * page:(i + 1) * page] = bytes([0xA5, 0x5A]) * (page // 2)
    db.write_bytes(bytes(data))


def journal_files(data: Path) -> None:
    for name in ("studio.db", "studio.db-wal", "studio.db-shm"):
        (data / name).unlink(missing_ok=True)


# -- 6. a full disk ------------------------------------------------------------------------------------------------
def test_render_space_estimate_follows_frame_size_length_and_the_audio_mix():
    from studio.server.limits import AUDIO_MIX_BYTES_PER_S, estimate_render_bytes
    from studio.presets import load_preset

    draft, standard = load_preset("draft"), load_preset("standard")
    assert AUDIO_MIX_BYTES_PER_S == 384_000  # float32 stereo at 48 kHz
    one = JobRequest.from_dict({"storyboard": storyboard([10.0]), "preset": "draft"})
    six = JobRequest.from_dict({"storyboard": storyboard([10.0] * 6), "preset": "draft"})
    big = JobRequest.from_dict({"storyboard": storyboard([10.0] * 6), "preset": "standard"})
    small, long_, large = (estimate_render_bytes(r, p) for r, p in ((one, draft), (six, draft), (big, standard)))
    assert 0 < small < long_ < large
    assert long_ - small >= 50 * AUDIO_MIX_BYTES_PER_S  # 50 s more video: at least the mix's temporary space more
    assert large - long_ > 6 * (1280 * 720 - 854 * 480)  # bigger frames need more room
    script = JobRequest.from_dict({"script": "word " * 150, "preset": "draft"})  # about 60 s of speech
    assert estimate_render_bytes(script, draft) >= 60 * AUDIO_MIX_BYTES_PER_S
    brief = JobRequest.from_dict({"brief": "Why tea is a leaf", "preset": "draft"})  # its length is the writer's
    assert estimate_render_bytes(brief, draft) >= 30 * AUDIO_MIX_BYTES_PER_S
    assert small < 200_000_000  # an estimate, not a refusal of every render


def test_submit_on_a_full_disk_answers_507_naming_the_space(make_runner, monkeypatch):
    from studio.server.journal import DiskFull

    runner = make_runner(start=False)
    client = api_client(runner)
    full_disk(monkeypatch, 2_000_000)
    answer = client.post("/api/jobs", json=tiny_request())
    assert answer.status_code == 507, answer.text
    body = answer.json()
    assert set(body) >= {"detail", "field"}
    assert "the disk holding the data folder is full (2 MB free, this render needs about" in body["detail"]
    assert str(runner.data_dir) not in body["detail"]
    with pytest.raises(DiskFull) as err:
        runner.submit(tiny_request(), owner="alice")
    assert err.value.status == 507
    assert runner.list() == []  # nothing was queued


def test_a_write_failing_with_enospc_at_submit_answers_507_and_queues_nothing(make_runner, monkeypatch):
    from studio.server.journal import DiskFull

    runner = make_runner(start=False)

    def prepare(folder: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull, match="the disk holding the data folder is full"):
        runner.submit(tiny_request(), owner="local", prepare=prepare)
    assert runner.list() == []
    assert list((runner.data_dir / "jobs").glob("*/*")) == []  # its folder went too

    client = api_client(runner)
    import studio.server.models

    monkeypatch.setattr(studio.server.models, "atomic_write_text", lambda path, text: prepare(path))  # the job's record
    answer = client.post("/api/jobs", json=tiny_request())
    assert answer.status_code == 507, answer.text
    assert "disk holding the data folder is full" in answer.json()["detail"]
    assert runner.list() == [] and list((runner.data_dir / "jobs").glob("*/*")) == []

    monkeypatch.setattr(runner, "submit", lambda *a, **k: prepare(None))  # any other write of a route that fails so
    answer = client.post("/api/jobs", json=tiny_request())
    assert answer.status_code == 507, answer.text
    assert answer.json()["field"] is None and "disk holding the data folder is full" in answer.json()["detail"]


class _FullFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_an_upload_on_a_full_disk_answers_507_and_keeps_the_earlier_uploads(make_runner, monkeypatch):
    import studio.server.uploads

    runner = make_runner(start=False)
    client = api_client(runner)
    first = client.post("/api/uploads", files={"file": ("a.png", png_bytes())})
    assert first.status_code == 201, first.text
    stored = runner.uploads.path(runner.uploads.get("local", first.json()["id"]))
    before = stored.read_bytes()

    real_open = open
    monkeypatch.setattr(studio.server.uploads, "open",
                        lambda path, mode="r", *a, **k: (_FullFile(real_open(path, mode, *a, **k)) if "x" in mode
                                                         else real_open(path, mode, *a, **k)), raising=False)
    full_disk(monkeypatch, 1_000_000)
    answer = client.post("/api/uploads", files={"file": ("b.png", png_bytes(seed=2))})
    assert answer.status_code == 507, answer.text
    body = answer.json()
    assert body["field"] == "file" and "the disk holding the data folder is full (1 MB free" in body["detail"]
    assert [u["id"] for u in client.get("/api/uploads").json()["uploads"]] == [first.json()["id"]]
    assert stored.read_bytes() == before
    assert list(runner.uploads.folder("local").glob(".*")) == []  # no temporary file left


def test_a_job_that_hits_enospc_fails_saying_so_and_loses_nothing(make_runner, monkeypatch):
    from studio.visuals.cards import CardsPainter

    runner = make_runner()
    upload = runner.uploads.save("local", io.BytesIO(png_bytes()), "logo.png")
    earlier = runner.wait(runner.submit(tiny_request(), owner="local").id, timeout_s=120)
    assert earlier.state == "done", earlier.error
    video = earlier.output.read_bytes()

    def paint(self, *args, **kwargs):  # the disk fills up while the job paints
        full_disk(monkeypatch, 4_000_000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CardsPainter, "paint", paint)
    job = runner.submit(tiny_request((1.0, 1.5)), owner="local")
    failed = runner.wait(job.id, timeout_s=120)
    assert failed.state == "failed"
    assert "the disk holding the data folder is full (4 MB free, this render needs about" in failed.error
    assert "internal error" not in failed.error and "OSError" not in failed.error
    assert api_client(runner).get(f"/api/jobs/{job.id}").json()["error"]["message"] == failed.error
    # Nothing already made is lost: the earlier render, the upload, and this job's narration made before the failure.
    assert runner.video_path(earlier.id).read_bytes() == video
    assert runner.uploads.path(runner.uploads.get("local", upload.id)).is_file()
    assert any(p.suffix == ".wav" for p in (failed.project_dir / "assets").rglob("*"))
    assert temp_files(runner.data_dir) == []


def test_the_worker_checks_free_space_again_before_it_starts_a_job(make_runner, monkeypatch):
    runner = make_runner(start=False)
    job = runner.submit(tiny_request(), owner="local")  # enough room when it was submitted
    full_disk(monkeypatch, 3_000_000)
    runner.start()
    failed = runner.wait(job.id, timeout_s=60)
    assert failed.state == "failed"
    assert "the disk holding the data folder is full (3 MB free, this render needs about" in failed.error
    assert failed.steps == []  # not even the storyboard was written


# -- 7. an emptied journal -----------------------------------------------------------------------------------------
def _work(runner) -> tuple:
    """An upload and a finished job in `runner`'s folder."""
    upload = runner.uploads.save("alice", io.BytesIO(png_bytes()), "logo.png")
    done = runner.wait(runner.submit(tiny_request(watermark=upload.id), owner="alice").id, timeout_s=120)
    assert done.state == "done", done.error
    return upload, done


def test_a_lost_journal_deletes_no_upload_and_its_jobs_are_rebuilt_from_their_folders(make_runner, tmp_path):
    data = tmp_path / "data"
    runner = make_runner()
    upload, done = _work(runner)
    queued = runner.submit(tiny_request((3.0,)), owner="bob")
    runner.cancel(queued.id, "bob")
    assert runner.wait(queued.id, timeout_s=60).state == "canceled"
    kept = runner.uploads.path(upload).read_bytes()
    runner.close()
    journal_files(data)
    (data / "studio.db.bak").unlink(missing_ok=True)  # no backup either: only the folders are left

    again = make_runner()
    assert again.uploads.path(again.uploads.get("alice", upload.id)).read_bytes() == kept
    rebuilt = again.get(done.id, "alice")
    assert rebuilt.state == "done" and rebuilt.request == done.request and rebuilt.result == done.result
    assert again.video_path(done.id, "alice").read_bytes() == done.output.read_bytes()
    assert again.get(queued.id, "bob").state == "canceled"
    assert [e.kind for e in again.events(done.id)][-1] == "done"


def test_the_journal_is_backed_up_atomically_and_an_emptied_journal_comes_back_from_it(make_runner, tmp_path):
    data = tmp_path / "data"
    runner = make_runner()
    upload, done = _work(runner)
    runner.backup_journal()
    assert not list(data.glob(".studio.db.bak*")) and not list(data.glob("studio.db.bak-*"))  # no temporary file
    backup = sqlite3.connect(data / "studio.db.bak")
    assert backup.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert backup.execute("SELECT state FROM jobs WHERE id = ?", (done.id,)).fetchone()[0] == "done"
    backup.close()
    events = [e.kind for e in runner.events(done.id)]
    runner.close()  # a clean shutdown refreshes the backup too
    journal_files(data)
    sqlite3.connect(data / "studio.db").close()  # an empty journal where the real one was

    again = make_runner()
    assert [e.kind for e in again.events(done.id)] == events  # the whole history, from the backup
    assert again.uploads.get("alice", upload.id).sha256 == upload.sha256


def test_serve_check_and_recover_a_damaged_journal(make_runner, tmp_path, capsys):
    from studio.cli import main

    data = tmp_path / "data"
    runner = make_runner(start=False, max_queued_per_owner=50)
    upload = runner.uploads.save("alice", io.BytesIO(png_bytes()), "logo.png")
    jobs = [runner.submit(tiny_request(), owner="alice").id for _ in range(20)]
    runner.backup_journal()
    older = (data / "studio.db.bak").read_bytes()  # a backup from before the last ten jobs and a cancel
    jobs += [runner.submit(tiny_request(), owner="alice").id for _ in range(10)]
    runner.cancel(jobs[3], "alice")
    runner.close()

    assert main(["serve", "--check", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "30 jobs" in out

    damage(data / "studio.db")
    (data / "studio.db.bak").write_bytes(older)
    with pytest.raises(StudioError) as err:  # 8. refused at start, naming the fix
        JobRunner(data, start=False)
    message = str(err.value)
    assert "damaged" in message and "studio serve --recover" in message and "\n" not in message

    assert main(["serve", "--check", "--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert "damaged" in out and "--recover" in out

    assert main(["serve", "--recover", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    assert len(list(data.glob("studio.db.damaged-*"))) >= 1  # the damaged file is kept aside
    again = make_runner(start=False)
    assert sorted(j.id for j in again.list("alice", limit=100)) == sorted(jobs)  # the backup's and the folders'
    assert again.get(jobs[3]).state == "canceled"  # its ending came from its folder's record
    assert [j.state for j in again.list("alice", limit=100)].count("queued") == 29
    assert again.uploads.path(again.uploads.get("alice", upload.id)).is_file()
    assert main(["serve", "--recover", "--data-dir", str(data)]) == 2  # not while a server uses the folder
    assert "in use by another Studio server" in capsys.readouterr().err


# -- 8. a damaged journal page while serving -----------------------------------------------------------------------
def test_a_journal_damaged_while_serving_answers_503_and_health_says_degraded(make_runner, tmp_path):
    db = tmp_path / "data" / "studio.db"
    runner = make_runner(start=False, max_queued_per_owner=50)
    jobs = [runner.submit(tiny_request(), owner="local").id for _ in range(30)]
    client = api_client(runner)
    assert client.get("/api/health").json()["status"] == "ok"

    with runner.journal.lock:
        runner.journal.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        damage(db)
        other = sqlite3.connect(db)
        with pytest.raises(sqlite3.DatabaseError):
            other.execute("SELECT * FROM jobs").fetchall()
        other.close()
        runner.journal.db.execute("PRAGMA shrink_memory")  # its cached pages go, as a busy server's would

    for method, url, kwargs in (("GET", "/api/jobs", {}), ("GET", f"/api/jobs/{jobs[0]}", {}),
                                ("POST", "/api/jobs", {"json": tiny_request()}), ("GET", "/api/uploads", {}),
                                ("POST", "/api/uploads", {"files": {"file": ("a.png", png_bytes())}})):
        answer = client.request(method, url, **kwargs)
        assert answer.status_code == 503, (url, answer.text)
        body = answer.json()
        assert "field" in body and "damaged" in body["detail"] and "studio serve --recover" in body["detail"], body
    health = client.get("/api/health")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert "studio serve --recover" in health.json()["reason"]
    assert list(runner.uploads.folder("local").iterdir()) == []  # the refused upload left nothing


# -- 9. server.lock deleted ----------------------------------------------------------------------------------------
def test_deleting_server_lock_does_not_let_a_second_runner_in(make_runner, tmp_path, tiny):
    data = tmp_path / "data"
    first = make_runner(start=False)
    (data / "server.lock").unlink()
    with pytest.raises(StudioError) as err:
        JobRunner(data, presets=[tiny], start=False)
    message = str(err.value)
    assert "in use by another Studio server" in message and f"pid {os.getpid()}" in message and "\n" not in message
    assert not (data / "server.lock").exists()  # the refused one changed nothing
    assert first.submit(tiny_request(), owner="a").state == "queued"


# -- 10. smaller -------------------------------------------------------------------------------------------------
def test_graceful_restarts_are_not_counted_as_crashes(make_runner, tmp_path, slow_painter):
    runner = make_runner()
    job = runner.submit({**tiny_request((1.0,) * 6), "providers": {"painter": slow_painter}}, owner="a")
    for _ in range(3):  # three graceful restarts while it runs...
        wait_for(lambda: runner.get(job.id).state == "running", timeout_s=60)
        runner.close()
        runner = make_runner()
    wait_for(lambda: runner.get(job.id).state == "running", timeout_s=60)
    runner.close()
    conn = sqlite3.connect(tmp_path / "data" / "studio.db")  # ...and one crash: the journal as a SIGKILL leaves it
    conn.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (job.id,))
    conn.commit()
    conn.close()
    again = make_runner()
    assert again.recovered == [job.id]
    done = again.wait(job.id, timeout_s=120)
    assert done.state == "done", done.error
    assert done.attempts == 5


def test_a_journal_of_schema_1_gains_the_crash_count_and_keeps_its_jobs(tmp_path):
    from studio.server.journal import _SCHEMA, Journal

    data = tmp_path / "data"
    data.mkdir()
    old = sqlite3.connect(data / "studio.db")
    old.executescript(_SCHEMA.replace("    crashes INTEGER NOT NULL DEFAULT 0,\n", ""))
    old.execute("PRAGMA user_version=1")
    old.execute("INSERT INTO jobs (id, owner, state, resource, request, request_sha256, preset, project, created_at,"
                " updated_at) VALUES ('a' , 'x', 'running', 'cpu', '{}', '', 'tiny', 'jobs/x/a', 0, 0)")
    old.commit()
    old.close()
    journal = Journal(data)
    assert journal.query("SELECT id, crashes FROM jobs")[0][:] == ("a", 0)
    journal.close()


def test_deleting_an_upload_a_waiting_job_uses_answers_409_naming_the_job(make_runner):
    runner = make_runner(start=False)
    client = api_client(runner)
    upload = client.post("/api/uploads", files={"file": ("logo.png", png_bytes())}).json()
    job = client.post("/api/jobs", json=tiny_request(watermark=upload["id"])).json()
    answer = client.delete(f"/api/uploads/{upload['id']}")
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert job["id"] in body["detail"] and "cancel" in body["detail"] and body["field"] == "upload_id"
    assert client.get(f"/api/uploads/{upload['id']}").status_code == 200
    assert runner.uploads.path(runner.uploads.get("local", upload["id"])).is_file()
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 202
    assert client.delete(f"/api/uploads/{upload['id']}").status_code == 204


def test_the_app_on_a_folder_in_use_prints_one_line_and_exits(make_runner, tmp_path, capsys):
    from studio.ui.app import launch

    make_runner(start=False)
    with pytest.raises(SystemExit) as exit_:
        launch(tmp_path / "data")
    assert exit_.value.code not in (0, None)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the data folder") and "in use by another Studio server" in err
    assert "\n" not in err and "Traceback" not in err
