"""The Gradio face as an entrance: no server file through a forged event, presets by name only, one identity per
anonymous client, served copies only to their owner, waits that hold no thread, and the job runner's limits.

The forged events are sent the way a browser sends any event (Gradio's queue: ``/gradio_api/queue/join`` and its
event stream), so they reach the handlers exactly as a hostile page would make them, under ``python app.py`` and
under ``python -m studio serve`` (where Gradio is mounted into FastAPI).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest

gradio_client = pytest.importorskip("gradio_client")

from studio.errors import StudioError  # noqa: E402
from studio.project import Project, Scene  # noqa: E402

from ._servers import running  # noqa: E402

STORY = "# Leaves\n\nLeaves turn red in autumn. They fall in the wind."


# -- a browser's side of Gradio's queue ------------------------------------------------------------------------------
def call_event(http: httpx.Client, url: str, fn_index: int, data: list, *, timeout_s: float = 60.0) -> dict:
    """Send one event as the page does and return Gradio's ``process_completed`` message."""
    session_hash = secrets.token_hex(8)
    joined = http.post(f"{url}/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "event_data": None,
                                                              "session_hash": session_hash, "trigger_id": None},
                       timeout=10)
    assert joined.status_code == 200, joined.text
    event_id = joined.json()["event_id"]
    deadline = time.monotonic() + timeout_s
    with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session_hash},
                     timeout=timeout_s) as stream:
        for line in stream.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                return message
    raise AssertionError(f"event {fn_index} did not complete within {timeout_s} s")


def upload_events(http: httpx.Client, url: str) -> list[dict]:
    """Every event of the page that takes a file (its ``upload`` triggers), with its inputs' component types."""
    config = http.get(f"{url}/config", timeout=10).json()
    components = {c["id"]: c for c in config["components"]}
    events = []
    for dep in config["dependencies"]:
        if any(trigger == "upload" for _, trigger in dep["targets"]):
            events.append({"fn_index": dep["id"], "label": components[dep["targets"][0][0]]["props"].get("label"),
                           "inputs": [components[i]["type"] for i in dep["inputs"]]})
    return events


def forged(path: Path) -> dict:
    """A FileData naming a file on the server, as a hostile page would send it."""
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def secret_files(folder: Path, make_image, make_tone) -> dict[str, Path]:
    """A valid file of each kind outside Gradio's upload folder (the forged events point at them)."""
    folder.mkdir(parents=True, exist_ok=True)
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    csv = folder / "private.csv"
    csv.write_text("id,narration\n,A private line nobody uploaded.\n")
    return {"Import CSV or JSON": csv, "Use my own image or clip": make_image("private.png", (64, 48)),
            "Caption font…": font, "Music…": make_tone("private.wav", 1.0), "Watermark…": make_image("mark.png", (32, 32))}


def check_forged_uploads_refused(url: str, data: Path, owner: str, session: dict, files: dict[str, Path]) -> None:
    from studio.ui.workspace import Workspace

    ws = Workspace(data)
    with httpx.Client() as http:
        events = upload_events(http, url)
        assert sorted(e["label"] for e in events) == sorted(files), events  # every file-taking event is tried
        project = ws.load(session["project"], owner)
        for event in events:
            values = []
            for kind in event["inputs"]:
                values.append({"browserstate": session, "dropdown": project.scenes[0].id, "radio": "draft"}.get(
                    kind, forged(files[event["label"]])))
            answer = call_event(http, url, event["fn_index"], values)
            assert answer.get("success") is False, (event["label"], answer)
    after = ws.load(session["project"], owner)
    assert after.watermark is None and after.music is None and after.caption_font is None
    assert [s.media for s in after.scenes] == [None] * len(after.scenes)
    assert [s.narration for s in after.scenes] == [s.narration for s in project.scenes]  # the CSV was not imported
    uploads = list((Path(after.folder) / "uploads").glob("*")) if (Path(after.folder) / "uploads").exists() else []
    assert uploads == []  # nothing was copied into the project
    assert not list((data / "uploads").rglob("*.*")) if (data / "uploads").exists() else True


def seeded_project(data: Path, owner: str) -> dict:
    """A project of `owner` made on disk (as the Brief panel would), and a browser session that has it open."""
    from studio.ui.workspace import Workspace

    project = Project(title="Leaves", scenes=(Scene(id="s1", narration="Leaves turn red.", visual_prompt="leaves"),
                                              Scene(id="s2", narration="They fall.", visual_prompt="wind")))
    made = Workspace(data).create(project, owner)
    guest = owner.removeprefix("guest-") if owner.startswith("guest-") else secrets.token_hex(16)
    return {"guest": guest, "project": Path(made.folder).name, "job": None}


# -- 1. forged FileData --------------------------------------------------------------------------------------------
def test_forged_file_events_are_refused_under_app_py(tmp_path, make_image, make_tone):
    data = tmp_path / "data"
    data.mkdir()
    guest = secrets.token_hex(16)
    session = seeded_project(data, f"guest-{guest}")
    files = secret_files(tmp_path / "elsewhere", make_image, make_tone)
    with running(["app.py"], data) as url:
        check_forged_uploads_refused(url, data, f"guest-{guest}", session, files)


def test_forged_file_events_are_refused_under_serve(tmp_path, make_image, make_tone):
    """Mounted into FastAPI, Gradio skips its own check; the studio refuses the file itself."""
    data = tmp_path / "data"
    data.mkdir()
    session = seeded_project(data, "local")  # a loopback server without sign-in: every browser is `local`
    files = secret_files(tmp_path / "elsewhere", make_image, make_tone)
    with running(["-m", "studio", "serve", "--port", "{port}", "--data-dir", str(data)], data,
                 ready_path="/api/health") as url:
        check_forged_uploads_refused(url, data, "local", session, files)


def test_accepted_upload_takes_only_gradio_uploads(tmp_path, make_image):
    from studio.testing import uploaded
    from studio.ui.common import SERVED_DIR, accepted_upload, served, upload_folder

    photo = make_image("p.png", (16, 16))
    assert accepted_upload(uploaded(photo)).read_bytes() == photo.read_bytes()
    assert accepted_upload({"path": uploaded(photo)}).is_file()  # a FileData as JSON
    for bad in (str(photo), "/etc/passwd", str(upload_folder()), str(upload_folder() / ".." / "x"), "", None):
        with pytest.raises(StudioError, match="upload"):
            accepted_upload(bad)
    # A link inside the upload folder to a file outside it is refused too.
    link = Path(uploaded(photo)).with_name("link.png")
    link.symlink_to("/etc/passwd")
    with pytest.raises(StudioError, match="did not come through"):
        accepted_upload(str(link))
    # So is a copy the studio served to some page (another user's video, say).
    copy = served(photo, "alice")
    assert Path(copy).is_relative_to(upload_folder() / SERVED_DIR)
    with pytest.raises(StudioError, match="did not come through"):
        accepted_upload(copy)


# -- 2. presets by name -----------------------------------------------------------------------------------------------
def test_preset_never_opens_a_path(tmp_path):
    from studio.server import JobRunner
    from studio.ui.app import make_studio

    secret = tmp_path / "secret.toml"
    secret.write_text('name = "draft"\nlabel = "TOPSECRET-LABEL-123"\n[broken\n')
    runner = JobRunner(tmp_path / "data", start=False)
    studio = make_studio(runner=runner)
    try:
        for value in ("/etc/passwd", str(secret), "../presets/draft.toml", "draft.toml", 7):
            with pytest.raises(StudioError) as caught:
                studio.preset(value)
            message = str(caught.value)
            assert message.startswith("`preset` must be one of draft") and "TOPSECRET" not in message
            assert "TOML" not in message and "root:" not in message
        assert studio.preset("standard").name == "standard"
    finally:
        runner.close()


def test_preset_path_over_the_gradio_api(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    secret = tmp_path / "secret.toml"
    secret.write_text('label = "TOPSECRET-LABEL-123"\n')
    with running(["app.py"], data) as url:
        client = gradio_client.Client(url + "/", verbose=False)
        project = client.predict(source=STORY, mode="script", api_name="/write_storyboard")
        for value in ("/etc/passwd", str(secret)):
            with pytest.raises(Exception) as caught:
                client.predict(project_id=project["project_id"], preset=value, api_name="/narrate")
            assert "must be one of" in str(caught.value) and "TOPSECRET" not in str(caught.value)
            assert "TOML" not in str(caught.value)
        client.close()


# -- 3. identities, secrets, served copies ----------------------------------------------------------------------------
def test_anonymous_api_clients_are_separate_users(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with running(["app.py"], data) as url:
        first = gradio_client.Client(url + "/", verbose=False)
        second = gradio_client.Client(url + "/", verbose=False)
        project = first.predict(source=STORY, mode="script", api_name="/write_storyboard")
        assert first.predict(project_id=project["project_id"], api_name="/project")["title"] == "Leaves"
        with pytest.raises(Exception, match="no project"):
            second.predict(project_id=project["project_id"], api_name="/project")
        with pytest.raises(Exception, match="no project"):
            second.predict(project_id=project["project_id"], scenes=[{"narration": "Mine now."}],
                           api_name="/edit_storyboard")
        assert first.predict(project_id=project["project_id"], api_name="/project")["scenes"][0]["narration"] != "Mine now."
        # The page's configuration holds no secret of the server: every browser state (the session, the open panel)
        # has the public, fixed key.
        from studio.ui.app import SESSION_KEY

        config = httpx.get(url + "/config", timeout=10).json()
        states = [c for c in config["components"] if c["type"] == "browserstate"]
        assert states and {c["props"]["secret"] for c in states} == {SESSION_KEY}
        assert not (data / "ui-secret").exists()
        first.close()
        second.close()


def _login(url: str, user: str, secret: str) -> httpx.Client:
    http = httpx.Client(base_url=url)
    answer = http.post("/login", data={"username": user, "password": secret}, timeout=10)
    assert answer.status_code == 200, answer.text
    return http


def test_served_copies_go_only_to_their_owner(tmp_path):
    """A signed-in user cannot fetch another user's served file by its URL (it answers 404)."""
    data = tmp_path / "data"
    data.mkdir()
    users = tmp_path / "users.txt"
    users.write_text("alice:alice-secret-1\nbob:bob-secret-22\n")
    users.chmod(0o600)
    with running(["-m", "studio", "serve", "--port", "{port}", "--data-dir", str(data), "--auth", str(users)], data,
                 ready_path="/api/health") as url:
        alice = gradio_client.Client(url + "/", auth=("alice", "alice-secret-1"), verbose=False)
        project = alice.predict(source=STORY, mode="script", api_name="/write_storyboard")
        job = alice.predict(project_id=project["project_id"], narrator="espeak", painter="cards", api_name="/render")
        assert alice.predict(job_id=job["id"], timeout_s=300, api_name="/wait")["state"] == "done"
        alice.close()

        alice_http, bob_http = _login(url, "alice", "alice-secret-1"), _login(url, "bob", "bob-secret-22")
        config = alice_http.get("/config", timeout=10).json()
        video_event = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "video")
        answer = call_event(alice_http, url, video_event, [job["id"]])
        assert answer["success"], answer
        file_url = answer["output"]["data"][0]["url"]
        assert "studio-served" in file_url and "alice" not in file_url  # no user name in any URL
        mine = alice_http.get(file_url, timeout=10)
        assert mine.status_code == 200 and mine.content[4:8] == b"ftyp"
        assert bob_http.get(file_url, timeout=10).status_code == 404
        assert httpx.get(file_url, timeout=10).status_code in (401, 403, 404)  # not signed in at all
        alice_http.close()
        bob_http.close()


# -- 4. long waits hold no thread ---------------------------------------------------------------------------------
def test_many_waits_do_not_starve_the_server(tmp_path):
    """60 open /wait calls (more than the 40 threads a server shares, and than the studio's own 32) while the HTTP API
    and the studio's other events still answer at once."""
    data = tmp_path / "data"
    data.mkdir()
    script = " ".join(f"Sentence number {i} of a long enough script goes here." for i in range(60))
    with running(["-m", "studio", "serve", "--port", "{port}", "--data-dir", str(data)], data,
                 ready_path="/api/health") as url:
        # A long job and one queued behind it: waits on the queued one stay open for the whole test.
        running_job = httpx.post(url + "/api/jobs", json={"script": script, "providers": {"narrator": "espeak",
                                                                                          "painter": "cards"}},
                                 timeout=10).json()
        queued = httpx.post(url + "/api/jobs", json={"script": STORY}, timeout=10).json()
        config = httpx.get(url + "/config", timeout=10).json()
        job_event = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "job")

        config = httpx.get(url + "/config", timeout=10).json()
        wait_event = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "wait")

        async def scenario() -> tuple[list[float], int]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                # Each wait joins Gradio's queue and holds its event stream open, as gradio_client's /wait does.
                waits = []
                for _ in range(60):
                    session_hash = secrets.token_hex(8)
                    joined = await http.post("/gradio_api/queue/join", json={
                        "data": [queued["id"], 120], "fn_index": wait_event, "event_data": None,
                        "session_hash": session_hash, "trigger_id": None})
                    assert joined.status_code == 200, joined.text
                    waits.append(asyncio.ensure_future(_drain(http, session_hash)))
                await asyncio.sleep(3.0)  # every wait is now open on the server
                assert not any(w.done() for w in waits), "a wait ended early"
                latencies = []
                for _ in range(5):
                    started = time.perf_counter()
                    assert (await http.get("/api/health")).status_code == 200
                    assert (await http.get("/api/jobs")).status_code == 200
                    latencies.append(time.perf_counter() - started)
                # The studio's own events still run too (a wait that held a queue slot or thread would starve them).
                with httpx.Client() as sync_http:
                    started = time.perf_counter()
                    answer = await asyncio.to_thread(call_event, sync_http, url, job_event, [queued["id"]],
                                                     timeout_s=20)
                    latencies.append(time.perf_counter() - started)
                assert answer["success"], answer
                for wait in waits:
                    wait.cancel()
                return latencies, len(waits)

        latencies, opened = asyncio.run(scenario())
        assert opened == 60
        # Starved, each would wait (past the client's 30 s timeout) for one of the threads the waits hold for two
        # minutes; free, they answer in milliseconds (the bound leaves room for a loaded machine's first request).
        assert sorted(latencies)[len(latencies) // 2] < 1.0 and max(latencies) < 15.0, latencies
        for job in (queued, running_job):
            httpx.post(url + f"/api/jobs/{job['id']}/cancel", timeout=10)


async def _drain(http: httpx.AsyncClient, session_hash: str) -> None:
    async with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash},
                           timeout=None) as stream:
        async for _ in stream.aiter_lines():
            pass


def test_wait_caps_per_caller():
    from studio.ui.endpoints import WaitSlots

    slots = WaitSlots(per_caller=2, total=3)
    slots.take("a")
    slots.take("a")
    with pytest.raises(StudioError, match="2 waits open"):
        slots.take("a")
    slots.take("b")
    with pytest.raises(StudioError, match="3 waits open"):
        slots.take("c")
    slots.give("a")
    slots.take("c")


# -- 5. one set of limits -------------------------------------------------------------------------------------------
@pytest.fixture
def limited(tmp_path):
    import gradio as gr

    from studio.server import JobRunner, Limits
    from studio.ui import endpoints
    from studio.ui.app import make_studio

    runner = JobRunner(tmp_path / "data", limits=Limits(max_scenes=5, max_narration_chars=300), start=False)
    studio = make_studio(runner=runner)
    api = {}
    with gr.Blocks() as demo:
        endpoints.register(studio)
    for fn in demo.fns.values():
        api[fn.api_name] = fn.fn
    yield studio, api
    runner.close()


def _script(scenes: int) -> str:
    return "\n\n".join(f"Paragraph {i} is about the sea." for i in range(scenes))


def test_the_gradio_face_applies_the_runners_limits(limited):
    from studio.ui import brief

    studio, api = limited
    with pytest.raises(gr_error(), match="splits into 8 scenes; this server's limit is 5"):
        api["write_storyboard"](source=_script(8), mode="script")
    with pytest.raises(gr_error(), match="20,000"):
        api["write_storyboard"](source="word " * 5000, mode="script")
    assert list(studio.workspace.projects.iterdir()) == []  # nothing was made
    # The Brief panel: the same limit, the same words.
    session = {"guest": "a" * 32, "project": None, "job": None}
    with pytest.raises(StudioError, match="splits into 8 scenes"):
        brief.write(studio, session, _script(8), "", "", "16:9", "en", None, "", "rules", "script", "draft", None, None)

    project = api["write_storyboard"](source=_script(3), mode="script")
    many = [{"narration": f"Scene {i}."} for i in range(6)]
    with pytest.raises(gr_error(), match="6 scenes; this server's limit is 5"):
        api["edit_storyboard"](project_id=project["project_id"], scenes=many)
    with pytest.raises(gr_error(), match="scene 1's narration has 301 characters"):
        api["edit_storyboard"](project_id=project["project_id"], scenes=[{"narration": "x" * 301}])
    assert len(api["project"](project_id=project["project_id"])["scenes"]) == 3  # unchanged


def test_narrate_refuses_an_oversized_project_before_any_work(limited):
    studio, api = limited
    # A project over the limits (made before the limits, or by hand) is refused before one scene is spoken.
    scenes = tuple(Scene(id=f"s{i}", narration=f"Scene {i}.", visual_prompt="x") for i in range(9))
    project = studio.workspace.create(Project(title="Big", scenes=scenes), "api")
    project_id = Path(project.folder).name
    for name in ("narrate", "illustrate"):
        with pytest.raises(gr_error(), match="9 scenes; this server's limit is 5"):
            api[name](project_id=project_id)
    assert all(s.audio is None and s.visual is None for s in studio.workspace.load(project_id, "api").scenes)
    assert not (Path(project.folder) / "assets").exists() or not any((Path(project.folder) / "assets").iterdir())


def test_a_script_of_too_many_scenes_is_refused_at_submission(tmp_path):
    from studio.server import JobRunner, RequestError

    runner = JobRunner(tmp_path / "data", start=False)
    try:
        with pytest.raises(RequestError, match="splits into 300 scenes; this server's limit is 40") as caught:
            runner.submit({"script": _script(300)})
        assert caught.value.field == "script"
        assert runner.list("local") == []
    finally:
        runner.close()


def gr_error():
    import gradio as gr

    return gr.Error
