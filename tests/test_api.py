"""The HTTP API, over real HTTP to a server on 127.0.0.1 started by the tests: auth and isolation, jobs, SSE, video
ranges, uploads checked by content, path traversal, bad input, a full queue, concurrency."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from studio.server.auth import Users, hash_secret, is_loopback
from studio.server import JobRunner
from studio.server.uploads import UploadLimits

from .conftest import video_facts
from .jobs_support import (PYTHON, ROOT, LiveServer, free_port, python_env, read_sse, storyboard, temp_files,
                           wait_for, write_tiny_preset)

SECRETS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "carol": "carol-secret-333", "dave": "dave-secret-4444"}


def basic(user: str) -> dict:
    token = base64.b64encode(f"{user}:{SECRETS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(user: str) -> dict:
    return {"Authorization": f"Bearer {SECRETS[user]}"}


class Api:
    """A live server with auth, and a client per user."""

    def __init__(self, tmp_path: Path, **runner_options) -> None:
        from studio.server.api import create_app

        users_file = tmp_path / "users.txt"
        # bob's secret is stored hashed; the others in the clear
        users_file.write_text("# test users\n" + "\n".join(
            f"{u}:{hash_secret(s) if u == 'bob' else s}" for u, s in SECRETS.items()) + "\n", "utf-8")
        users_file.chmod(0o600)
        runner_options.setdefault("presets", [write_tiny_preset(tmp_path)])
        runner_options.setdefault("upload_limits", UploadLimits(max_bytes=3_000_000, max_pixels=1_000_000,
                                                                max_duration_s=60))
        self.runner = JobRunner(tmp_path / "data", **runner_options)
        self.server = LiveServer(create_app(self.runner, auth=Users.from_file(users_file)))
        self.url = self.server.url
        self.clients = {u: httpx.Client(base_url=self.url, headers=(bearer(u) if u in ("alice", "carol") else basic(u)),
                                        timeout=60) for u in SECRETS}
        self.anonymous = httpx.Client(base_url=self.url, timeout=60)

    def __getitem__(self, user: str) -> httpx.Client:
        return self.clients[user]

    def close(self) -> None:
        for client in [*self.clients.values(), self.anonymous]:
            client.close()
        self.server.stop()
        self.runner.close()


@pytest.fixture
def api(tmp_path):
    server = Api(tmp_path, cpu_slots=2)
    yield server
    server.close()


@pytest.fixture(scope="module")
def idle_api(tmp_path_factory):
    """A server whose workers never start: for requests that must be refused (nothing they send may queue a job)."""
    server = Api(tmp_path_factory.mktemp("idle"), start=False)
    yield server
    server.close()


def tiny_job(durations=(1.0, 1.0), **fields) -> dict:
    return {"storyboard": storyboard(list(durations)), "preset": "tiny", "aspect": "1:1", **fields}


def expected_duration(durations, transition_s=0.2, fps=12) -> float:
    """Fixed scene durations minus the transitions between them (the tiny preset's 0.2 s), in whole frames."""
    return (sum(round(d * fps) for d in durations) - round(transition_s * fps) * (len(durations) - 1)) / fps


def wait_done(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict:
    def finished():
        job = client.get(f"/api/jobs/{job_id}").json()
        return job if job["state"] in ("done", "failed", "canceled") else None

    return wait_for(finished, timeout_s=timeout_s, interval_s=0.1)


# -- auth, isolation, the job resource ---------------------------------------------------------------------------------
def test_auth_is_required_and_each_user_sees_only_their_jobs(api):
    assert api.anonymous.get("/api/health").json()["status"] == "ok"  # health needs no sign-in
    refused = api.anonymous.get("/api/jobs")
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
    assert refused.json()["detail"]
    wrong = api.anonymous.get("/api/jobs", headers={"Authorization": "Basic " + base64.b64encode(b"alice:nope").decode()})
    assert wrong.status_code == 401
    assert api.anonymous.get("/api/jobs", headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401
    assert api.anonymous.get("/api/jobs", headers={"Authorization": "Basic !!!"}).status_code == 401
    # bob's secret is stored as a hash: both basic and bearer work with the secret itself
    assert api.anonymous.get("/api/jobs", headers=bearer("bob")).status_code == 200

    created = api["alice"].post("/api/jobs", json=tiny_job())
    assert created.status_code == 202 and created.headers["location"] == f"/api/jobs/{created.json()['id']}"
    job_id = created.json()["id"]
    done = wait_done(api["alice"], job_id)
    assert done["state"] == "done"
    for method, path in [("GET", f"/api/jobs/{job_id}"), ("GET", f"/api/jobs/{job_id}/events"),
                         ("GET", f"/api/jobs/{job_id}/video"), ("POST", f"/api/jobs/{job_id}/cancel")]:
        answer = api["bob"].request(method, path)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["field"] == "job_id"
    assert api["bob"].get("/api/jobs").json()["jobs"] == []
    assert [j["id"] for j in api["alice"].get("/api/jobs").json()["jobs"]] == [job_id]
    # Health: liveness for anyone, and only your own job counts when signed in (never the other users').
    anonymous = api.anonymous.get("/api/health").json()
    assert anonymous["status"] == "ok" and "jobs" not in anonymous and "executor" not in anonymous
    assert api["alice"].get("/api/health").json()["jobs"]["done"] == 1
    assert api["bob"].get("/api/health").json()["jobs"]["done"] == 0


def test_submit_follow_events_and_download_with_ranges(api, tmp_path):
    client = api["alice"]
    body = tiny_job((1.0, 1.5), title="Range test")
    first = client.post("/api/jobs", json=body, headers={"Idempotency-Key": "range-1"})
    assert first.status_code == 202
    job_id = first.json()["id"]
    again = client.post("/api/jobs", json=body, headers={"Idempotency-Key": "range-1"})
    assert again.status_code == 200 and again.json()["id"] == job_id
    conflict = client.post("/api/jobs", json=tiny_job((3.0,)), headers={"Idempotency-Key": "range-1"})
    assert conflict.status_code == 409 and conflict.json()["field"] == "Idempotency-Key"

    events = read_sse(client, f"/api/jobs/{job_id}/events")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "done"
    assert {"running", "progress", "scene", "step"} <= set(kinds)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    steps_done = [e["data"]["step"] for e in events if e["event"] == "step"]
    assert steps_done == ["storyboard", "narrate", "illustrate", "compose"]
    # reconnecting with Last-Event-ID resumes after that event
    resumed = read_sse(client, f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(ids[4])})
    assert [int(e["id"]) for e in resumed] == ids[5:]
    assert client.get(f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": "x"}).status_code == 400

    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "done" and job["percent"] == 100 and job["error"] is None and job["eta_s"] is None
    assert job["video"]["url"] == f"/api/jobs/{job_id}/video" and job["title"] == "Range test"
    assert [s["step"] for s in job["steps"]] == ["storyboard", "narrate", "illustrate", "compose"]

    whole = client.get(f"/api/jobs/{job_id}/video")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes" and "Range-test.mp4" in whole.headers["content-disposition"]
    saved = tmp_path / "download.mp4"
    saved.write_bytes(whole.content)
    facts = video_facts(saved)
    assert facts["duration_s"] == pytest.approx(expected_duration([1.0, 1.5]), abs=1 / 12 + 0.01)
    assert job["video"]["size_bytes"] == len(whole.content)
    part = client.get(f"/api/jobs/{job_id}/video", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    tail = client.get(f"/api/jobs/{job_id}/video", headers={"Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == whole.content[-64:]
    beyond = client.get(f"/api/jobs/{job_id}/video", headers={"Range": f"bytes={len(whole.content) + 10}-"})
    assert beyond.status_code == 416


def test_cancel_over_http_ends_the_event_stream(api):
    client = api["alice"]
    # 30 s of Draft video: still encoding when the cancel comes (cancelled, it costs no more than a short one)
    job_id = client.post("/api/jobs", json={"storyboard": storyboard([10.0] * 3), "preset": "draft",
                                            "aspect": "1:1"}).json()["id"]
    wait_for(lambda: client.get(f"/api/jobs/{job_id}").json()["step"] == "compose", timeout_s=120, interval_s=0.02)
    answer = client.post(f"/api/jobs/{job_id}/cancel")
    assert answer.status_code == 202 and answer.json()["cancel_requested"] is True
    events = read_sse(client, f"/api/jobs/{job_id}/events")
    assert events[-1]["event"] == "canceled"
    assert client.get(f"/api/jobs/{job_id}").json()["state"] == "canceled"
    assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 409
    assert client.get(f"/api/jobs/{job_id}/video").status_code == 409
    assert temp_files(api.runner.data_dir) == []


def test_event_stream_sends_an_end_journaled_between_its_query_and_its_state_check(api, monkeypatch):
    """The race CI once lost: the stream finds no new event, the job then ends (state and event in one transaction),
    and the stream's state check sees it ended; the stream must still send that last event."""
    client = api["alice"]
    job_id = client.post("/api/jobs", json=tiny_job([0.6])).json()["id"]
    api.runner.wait(job_id, timeout_s=120)
    real_events, held_back = api.runner.events, []

    def events_missing_the_end_twice(job_id_, owner=None, *, after=0, limit=1000, wait_s=0.0):
        found = real_events(job_id_, owner, after=after, limit=limit, wait_s=wait_s)
        if found and found[-1].kind == "done" and len(held_back) < 2:
            held_back.append(found[-1].seq)
            return found[:-1]  # as if read a moment before the job's end was committed
        return found

    monkeypatch.setattr(api.runner, "events", events_missing_the_end_twice)
    events = read_sse(client, f"/api/jobs/{job_id}/events")
    assert len(held_back) == 2  # the stream did read an empty batch and then found the job ended
    assert [e["event"] for e in events].count("done") == 1 and events[-1]["event"] == "done"


def test_twenty_concurrent_submissions_from_four_users(api):
    users = ["alice", "bob", "carol", "dave"]
    # every job has its own length, so each output can be matched to its request
    plans = [(user, [0.5 + 0.1 * (i * 5 + k), 0.6]) for i, user in enumerate(users) for k in range(5)]

    def submit(plan):
        user, durations = plan
        answer = api[user].post("/api/jobs", json=tiny_job(durations))
        assert answer.status_code == 202, answer.text
        return user, durations, answer.json()["id"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        submitted = list(pool.map(submit, plans))
    assert len({job_id for _, _, job_id in submitted}) == 20
    for user, durations, job_id in submitted:
        job = wait_done(api[user], job_id, timeout_s=300)
        assert job["state"] == "done", job["error"]
        video = api[user].get(f"/api/jobs/{job_id}/video")
        assert video.status_code == 200
        assert job["video"]["duration_s"] == pytest.approx(expected_duration(durations), abs=1 / 12 + 0.01)
        other = users[(users.index(user) + 1) % 4]
        assert api[other].get(f"/api/jobs/{job_id}/video").status_code == 404
        assert api.runner.get(job_id).owner == user
    for user in users:
        mine = api[user].get("/api/jobs").json()["jobs"]
        assert sorted(j["id"] for j in mine) == sorted(j for u, _, j in submitted if u == user)
    outputs = {api.runner.video_path(job_id) for _, _, job_id in submitted}
    assert len(outputs) == 20
    for path in outputs:
        video_facts(path)  # ffprobe accepts every one


def test_full_queue_answers_429_at_once(tmp_path):
    server = Api(tmp_path, start=False, max_queued=2)
    try:
        client = server["alice"]
        assert client.post("/api/jobs", json=tiny_job()).status_code == 202
        assert server["bob"].post("/api/jobs", json=tiny_job()).status_code == 202
        started = time.perf_counter()
        full = client.post("/api/jobs", json=tiny_job())
        elapsed = time.perf_counter() - started
        assert full.status_code == 429 and int(full.headers["retry-after"]) > 0
        assert "queue is full" in full.json()["detail"]
        assert elapsed < 1.0
    finally:
        server.close()


# -- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, field", [
    ({"script": "hello", "brief": "also"}, 422, "brief"),
    ({}, 422, "script"),
    ({"script": 42}, 422, "script"),
    ({"script": "x" * 20_001}, 422, "script"),
    ({"script": "hello", "preset": "nope"}, 422, "preset"),
    ({"script": "hello", "preset": "maximum"}, 422, "preset"),
    ({"script": "hello", "aspect": "4:3"}, 422, "aspect"),
    ({"script": "hello", "extra": 1}, 422, "extra"),
    ({"storyboard": [{"narration": "hi", "duration_s": -1}]}, 422, "storyboard[0].duration_s"),
    ({"storyboard": [{"narration": "hi", "duration_s": 1e308}]}, 422, "storyboard[0].duration_s"),
    ({"storyboard": [{"narration": "hi", "seed": 2**64}]}, 422, "storyboard[0].seed"),
    ({"storyboard": [{"narration": "hi", "transition": "explode"}]}, 422, "storyboard[0].transition"),
    ({"storyboard": [{"narration": "hi", "media": "../../etc/passwd"}]}, 404, "storyboard[0].media"),  # names no upload, as the runner says
    ({"storyboard": [{"narration": "a"}] * 41}, 422, "storyboard"),
    ({"script": "hello", "music": "0" * 32}, 404, "music"),
    ({"script": "hello", "providers": {"narrator": "../../bin/sh"}}, 422, "providers.narrator"),
    ({"script": "hello", "voice": "en; rm -rf /"}, 422, "voice"),
    ({"script": "bad\u0000byte"}, 422, "script"),
    ({"script": "hello", "captions": "yes"}, 422, "captions"),
    ([1, 2, 3], 422, "body"),
])
def test_malformed_requests_answer_4xx_json_naming_the_field(idle_api, body, status, field):
    answer = idle_api["alice"].post("/api/jobs", json=body)
    assert answer.status_code == status, answer.text
    data = answer.json()
    assert data["field"] == field and data["detail"]
    assert idle_api.runner.list() == []


def test_malformed_http_is_4xx(api):
    client = api["alice"]
    assert client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/api/jobs", content=b"x" * 2_000_000,
                       headers={"content-type": "application/json"}).status_code == 413
    assert client.get("/api/jobs", params={"limit": 0}).json()["field"] == "limit"
    assert client.get("/api/jobs", params={"state": "sleeping"}).json()["field"] == "state"
    assert client.post("/api/jobs", json=tiny_job(), headers={"Idempotency-Key": "a b"}).status_code == 422
    assert client.get("/api/jobs/%00").status_code == 404


# -- path traversal --------------------------------------------------------------------------------------------------
BAD_IDS = ["..", "../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
           "..%252f..%252fetc%252fpasswd", "%c0%ae%c0%ae", "／etc／passwd", "....//....//etc", "%2fetc%2fpasswd",
           "0" * 31 + "G", "A" * 32, "0" * 33, "0" * 32 + "%00", "0" * 32 + "/../../x", ".hidden", "~root"]


def raw_get(port: int, target: str, headers: dict) -> tuple[int, bytes]:
    """Send a request line exactly as given (no client-side normalising of ``..``), return (status, body)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             *[f"{k}: {v}" for k, v in headers.items()], "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall("\r\n".join(lines).encode("utf-8"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_path_traversal_on_every_route_with_an_id(api, tmp_path):
    client = api["alice"]
    job_id = client.post("/api/jobs", json=tiny_job()).json()["id"]
    assert wait_done(client, job_id)["state"] == "done"
    secret = Path("/etc/passwd").read_bytes()[:20]
    routes = ["/api/jobs/{}", "/api/jobs/{}/events", "/api/jobs/{}/video", "/api/uploads/{}"]
    for route in routes:
        for bad in BAD_IDS:
            status, body = raw_get(api.server.port, route.format(bad), basic("alice"))
            assert status in (400, 404, 405, 422), (route, bad, status)
            assert secret not in body and b"Traceback" not in body
    for bad in BAD_IDS:
        for method, route in [("POST", "/api/jobs/{}/cancel"), ("DELETE", "/api/uploads/{}")]:
            answer = client.request(method, route.format(bad))
            assert answer.status_code in (400, 404, 405, 422), (method, route, bad)
    # an id planted after a valid prefix or with encoded dots in a query never reaches a file either
    assert client.get(f"/api/jobs/{job_id}/video", params={"file": "../../../etc/passwd"}).content[:4] != secret[:4]


def test_planted_symlinks_are_never_followed(api, tmp_path):
    client = api["alice"]
    job_id = client.post("/api/jobs", json=tiny_job()).json()["id"]
    assert wait_done(client, job_id)["state"] == "done"
    job = api.runner.get(job_id)
    video = job.output
    assert client.get(f"/api/jobs/{job_id}/video").status_code == 200

    # 1. the video replaced by a link to a file outside the data folder
    video.rename(video.with_suffix(".bak"))
    video.symlink_to("/etc/passwd")
    answer = client.get(f"/api/jobs/{job_id}/video")
    assert answer.status_code == 404 and b"root:" not in answer.content
    video.unlink()
    video.with_suffix(".bak").rename(video)

    # 2. the renders folder replaced by a link to a folder holding a file of the same name
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / video.name).write_bytes(b"not yours")
    renders = video.parent
    renders.rename(renders.with_name("renders.bak"))
    renders.symlink_to(outside, target_is_directory=True)
    answer = client.get(f"/api/jobs/{job_id}/video")
    assert answer.status_code == 404 and b"not yours" not in answer.content
    renders.unlink()
    renders.with_name("renders.bak").rename(renders)
    assert client.get(f"/api/jobs/{job_id}/video").status_code == 200

    # 3. an upload replaced by a link: a job naming it fails instead of reading the link's target
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
    upload = client.post("/api/uploads", files={"file": ("logo.png", png.getvalue(), "image/png")}).json()
    stored = api.runner.uploads.path(api.runner.uploads.get("alice", upload["id"]))
    stored.unlink()
    stored.symlink_to("/etc/passwd")
    job2 = client.post("/api/jobs", json=tiny_job(watermark=upload["id"])).json()["id"]
    failed = wait_done(client, job2)
    assert failed["state"] == "failed" and "symbolic link" in failed["error"]["message"]


# -- uploads ---------------------------------------------------------------------------------------------------------
def png_bytes(size=(64, 48), noise: bool = True) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    pixels = np.random.default_rng(1).random((size[1], size[0], 3)) * 255 if noise else np.full((size[1], size[0], 3), 90)
    Image.fromarray(pixels.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_uploads_are_checked_by_content_and_stored_under_server_names(api, make_tone, make_clip):
    client = api["alice"]
    image = client.post("/api/uploads", files={"file": ("../../../../tmp/evil.png", png_bytes(), "text/plain")})
    assert image.status_code == 201, image.text
    info = image.json()
    assert info["kind"] == "image" and info["width"] == 64 and info["name"] == "evil.png"
    stored = api.runner.uploads.path(api.runner.uploads.get("alice", info["id"]))
    assert stored.name == f"{info['id']}.png" and stored.parent.parent == api.runner.data_dir / "uploads"
    assert not Path("/tmp/evil.png").exists()

    tone = client.post("/api/uploads", files={"file": ("tone.bin", make_tone("t.wav", 1.0).read_bytes())}).json()
    assert tone["kind"] == "audio" and tone["has_audio"] and tone["duration_s"] == pytest.approx(1.0, abs=0.05)
    clip = client.post("/api/uploads", files={"file": ("c.mp4", make_clip("c.mp4").read_bytes())}).json()
    assert clip["kind"] == "video" and clip["width"] == 320

    bad = {
        "text": b"hello, this is not media at all" * 10,
        "playlist": b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n",
        "concat": b"ffconcat version 1.0\nfile '/etc/passwd'\n",
        "truncated png": png_bytes()[:200],
        "svg": b"<svg xmlns='http://www.w3.org/2000/svg'><image href='file:///etc/passwd'/></svg>",
        "empty": b"",
    }
    for what, data in bad.items():
        answer = client.post("/api/uploads", files={"file": ("x.png", data)})
        assert answer.status_code == 422, (what, answer.text)
        assert answer.json()["field"] == "file"
        assert str(api.runner.data_dir) not in answer.text  # no path of the server's in the message
    huge_pixels = client.post("/api/uploads", files={"file": ("big.png", png_bytes((1200, 1000), noise=False))})
    assert huge_pixels.status_code == 422 and "megapixels" in huge_pixels.json()["detail"]
    too_big = client.post("/api/uploads", files={"file": ("big.bin", os.urandom(3_200_000))})
    assert too_big.status_code == 413
    assert list(api.runner.uploads.folder("alice").glob(".*")) == []  # no temporary file left behind

    # uploads are private, and a job may only name its owner's uploads of the right kind
    assert api["bob"].get(f"/api/uploads/{info['id']}").status_code == 404
    stolen = api["bob"].post("/api/jobs", json=tiny_job(music=tone["id"]))
    assert stolen.status_code == 404 and stolen.json()["field"] == "music"
    wrong_kind = client.post("/api/jobs", json=tiny_job(music=info["id"]))
    assert wrong_kind.status_code == 422 and wrong_kind.json()["field"] == "music"
    assert [u["id"] for u in client.get("/api/uploads").json()["uploads"]] == [clip["id"], tone["id"], info["id"]]
    assert client.delete(f"/api/uploads/{info['id']}").status_code == 204
    assert client.get(f"/api/uploads/{info['id']}").status_code == 404


def test_a_job_uses_uploaded_media_music_and_watermark(api, make_tone, make_clip):
    client = api["alice"]
    upload = lambda name, data: client.post("/api/uploads", files={"file": (name, data)}).json()["id"]  # noqa: E731
    music = upload("music.wav", make_tone("m.wav", 2.0, freq_hz=330).read_bytes())
    still = upload("still.png", png_bytes((200, 150)))
    clip = upload("clip.mp4", make_clip("clip.mp4", duration_s=1.5).read_bytes())
    body = {"storyboard": [{"narration": "A picture.", "media": still, "duration_s": 1.2},
                           {"narration": "A clip.", "media": clip, "duration_s": 1.2},
                           {"narration": "A card.", "duration_s": 1.0}],
            "preset": "tiny", "aspect": "1:1", "music": music, "music_volume": 0.3, "watermark": still}
    job = wait_done(client, client.post("/api/jobs", json=body).json()["id"])
    assert job["state"] == "done", job["error"]
    assert any("own media" in note for note in job["video"]["notes"])
    path = api.runner.video_path(job["id"], "alice")
    assert video_facts(path)["has_audio"]


# -- the server command ----------------------------------------------------------------------------------------------
def test_serve_refuses_other_hosts_without_auth(tmp_path):
    out = subprocess.run([PYTHON, "-m", "studio", "serve", "--host", "0.0.0.0", "--port", str(free_port()),
                          "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, env=python_env(),
                         cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "--auth" in out.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")


def test_users_file_errors_name_the_line(tmp_path):
    from studio.errors import StudioError

    path = tmp_path / "users.txt"
    for text, words in [("alice\n", "line 1"), ("# c\nalice:short\n", "line 2"), ("a:12345678\na:87654321\n", "twice"),
                        ("bob:sha256:xyz\n", "64 hex"), ("# nobody\n", "names no users")]:
        path.write_text(text)
        with pytest.raises(StudioError, match=words):
            Users.from_file(path)
    path.write_text("alice:" + hash_secret("tok-tok-tok") + "\n")
    users = Users.from_file(path)
    assert users.authenticate("Bearer tok-tok-tok") == "alice"
    assert users.authenticate("Basic " + base64.b64encode(b"alice:tok-tok-tok").decode()) == "alice"
    assert users.authenticate("Bearer tok-tok-to") is None and users.authenticate(None) is None


def test_importing_studio_and_its_cli_stays_light():
    code = ("import sys, studio, studio.cli; studio.cli.build_parser(); import studio.server, studio.executors; "
            "heavy = ('fastapi', 'uvicorn', 'starlette', 'ray', 'torch', 'gradio'); "
            "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}))")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    helped = subprocess.run([PYTHON, "-m", "studio", "serve", "--help"], capture_output=True, text=True,
                            env=python_env(), cwd=ROOT, timeout=60)
    assert helped.returncode == 0 and "--auth" in helped.stdout and "127.0.0.1" in helped.stdout


def test_the_cli_renders_through_the_server(tmp_path, make_image, make_tone):
    server = Api(tmp_path)
    try:
        board = tmp_path / "board.csv"
        make_image("still.png", size=(160, 120))
        board.write_text("narration,visual_prompt,duration_s,media\n"
                         "A picture of my own.,,1.0,still.png\nAnd a card.,a card,1.2,\n", "utf-8")
        music = make_tone("music.wav", 2.0)
        out = tmp_path / "cli.mp4"

        def cli(*args: str, token: str = SECRETS["alice"]) -> subprocess.CompletedProcess:
            return subprocess.run([PYTHON, "-m", "studio", "jobs", "--server", server.url, "--token", token, *args],
                                  capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=300)

        done = cli("submit", "--storyboard", str(board), "--preset", "tiny", "--aspect", "1:1", "--music", str(music),
                   "--key", "cli-1", "--wait", "--output", str(out))
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.split()[1]
        facts = video_facts(out)
        assert facts["has_audio"] and (facts["width"], facts["height"]) == (96, 96)
        assert facts["duration_s"] == pytest.approx(expected_duration([1.0, 1.2]), abs=1 / 12 + 0.01)
        job = server.runner.get(job_id, "alice")
        assert job.request["music"] and job.request["storyboard"][0]["media"]  # the local files went up as uploads
        # the same key with another request is refused; with the same request it gives the same job
        other = cli("submit", "--storyboard", str(board), "--preset", "tiny", "--aspect", "1:1", "--key", "cli-1")
        assert other.returncode == 2 and "Idempotency-Key" in other.stderr
        script = tmp_path / "script.md"
        # long enough (about 28 scenes of speech) to be still running when the cancel comes two CLI starts later
        script.write_text("# Again\n\n" + "\n\n".join(" ".join(["Words to say slowly."] * 40) for _ in range(2)),
                          "utf-8")
        first = cli("submit", str(script), "--preset", "tiny", "--key", "cli-2")
        second = cli("submit", str(script), "--preset", "tiny", "--key", "cli-2")
        assert first.returncode == second.returncode == 0
        assert first.stdout.split()[1] == second.stdout.split()[1]
        stopped = cli("cancel", first.stdout.split()[1])
        assert stopped.returncode == 0 and ("canceled" in stopped.stdout or "stopping" in stopped.stdout)
        listed = cli("list")
        assert listed.returncode == 0 and job_id in listed.stdout and "done" in listed.stdout
        assert '"state": "done"' in cli("show", job_id).stdout
        fetched = cli("fetch", job_id, "--output", str(tmp_path / "again.mp4"))
        assert fetched.returncode == 0 and (tmp_path / "again.mp4").read_bytes() == out.read_bytes()
        refused = cli("cancel", job_id)
        assert refused.returncode == 2 and "already done" in refused.stderr
        assert cli("show", job_id, token=SECRETS["bob"]).returncode == 2  # bob cannot see it
    finally:
        server.close()
    gone = subprocess.run([PYTHON, "-m", "studio", "jobs", "--server", f"http://127.0.0.1:{free_port()}", "list"],
                          capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=60)
    assert gone.returncode == 2 and "no Studio server answers" in gone.stderr


def test_a_scene_is_narrated_by_an_uploaded_recording_and_forged_ids_are_refused(api, tmp_path):
    from studio.testing import make_recording

    client = api["alice"]
    take = make_recording(tmp_path / "take.wav", "Bees dance to tell each other where the flowers are.",
                          pad_s=(1.0, 1.5))
    answer = client.post("/api/uploads", files={"file": ("my take.wav", take.read_bytes())})
    assert answer.status_code == 201 and answer.json()["kind"] == "audio"
    recording = answer.json()["id"]
    image = client.post("/api/uploads", files={"file": ("still.png", png_bytes())}).json()["id"]
    scene = {"narration": "Bees dance to tell each other where the flowers are.", "recording": recording}

    # Another user's upload, a malformed id (a path) and an image are refused as `media` ids are, before any work.
    stolen = api["bob"].post("/api/jobs", json={"storyboard": [scene], "preset": "tiny", "aspect": "1:1"})
    assert stolen.status_code == 404 and stolen.json()["field"] == "storyboard[0].recording"
    forged = client.post("/api/jobs", json={"storyboard": [{**scene, "recording": "../../uploads/alice/x.wav"}],
                                            "preset": "tiny", "aspect": "1:1"})
    assert forged.status_code == 404 and forged.json()["field"] == "storyboard[0].recording"
    picture = client.post("/api/jobs", json={"storyboard": [{**scene, "recording": image}], "preset": "tiny",
                                             "aspect": "1:1"})
    assert picture.status_code == 422 and picture.json()["field"] == "storyboard[0].recording"
    assert client.get("/api/jobs").json()["jobs"] == []

    # The owner's recording narrates its scene (with no text too: a recording needs neither text nor a duration).
    body = {"storyboard": [scene, {"narration": "", "recording": recording}, {"narration": "A card.", "duration_s": 1.0}],
            "preset": "tiny", "aspect": "1:1"}
    job = wait_done(client, client.post("/api/jobs", json=body).json()["id"])
    assert job["state"] == "done", job["error"]
    assert any(note.startswith("recordings: scene(s) 1, 2") for note in job["video"]["notes"])
    from studio.project import Project

    project = Project.load(api.runner.get(job["id"], "alice").project_dir)
    spoken = project.scenes[0].audio_duration_s
    assert project.scenes[1].audio == project.scenes[0].audio  # the same upload, processed once
    assert spoken == pytest.approx(speech_length(take) + 0.45, abs=0.1)  # trimmed: the speech and its margins
    facts = video_facts(api.runner.video_path(job["id"], "alice"))
    lead_tail = 0.1 + 0.2  # the tiny preset's timing
    assert facts["has_audio"] and facts["duration_s"] == pytest.approx(2 * (spoken + lead_tail) + 1.0 - 2 * 0.2, abs=0.2)


def speech_length(path: Path) -> float:
    """Seconds from the first to the last sound of a recording (the energy detector that trims it)."""
    from studio.media import read_audio
    from studio.voice.timing import speech_frames

    samples = read_audio(path, 24_000)[:, 0]
    mask, frame_s = speech_frames(samples, 24_000)
    loud = np.flatnonzero(mask)
    return (loud[-1] + 1 - loud[0]) * frame_s


def test_recordings_are_held_to_the_scene_and_video_limits(tmp_path):
    from studio.server import Limits
    from studio.testing import make_recording

    server = Api(tmp_path, start=False, limits=Limits(max_scene_s=4.0, max_video_s=6.0))
    try:
        client = server["alice"]
        upload = lambda path: client.post("/api/uploads", files={"file": (path.name, path.read_bytes())}).json()  # noqa: E731
        long_take = upload(make_recording(tmp_path / "long.wav", "A take that lasts too long.", pad_s=(2.0, 2.0)))
        short_take = upload(make_recording(tmp_path / "short.wav", "A short take.", pad_s=(0.8, 0.8)))
        assert long_take["duration_s"] > 4.0 and 3.0 < short_take["duration_s"] <= 4.0
        job = lambda *ids: {"storyboard": [{"recording": i} for i in ids], "preset": "tiny", "aspect": "1:1"}  # noqa: E731
        too_long = client.post("/api/jobs", json=job(long_take["id"]))
        assert too_long.status_code == 422 and too_long.json()["field"] == "storyboard[0].recording"
        assert "limit of 4 s a scene" in too_long.json()["detail"]
        together = client.post("/api/jobs", json=job(short_take["id"], short_take["id"]))
        assert together.status_code == 422 and together.json()["field"] == "storyboard[1].recording"
        assert "together" in together.json()["detail"]
        assert client.post("/api/jobs", json=job(short_take["id"])).status_code == 202
    finally:
        server.close()
