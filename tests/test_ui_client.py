"""The studio's API endpoints through ``gradio_client``, against ``python app.py`` started by the test."""

from __future__ import annotations

import pytest

gradio_client = pytest.importorskip("gradio_client")

from pathlib import Path  # noqa: E402

from ._servers import running  # noqa: E402
from .conftest import video_facts  # noqa: E402

SCRIPT = "# Rain\n\nRain falls on the hills.\n\nRivers carry it to the sea."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("client") / "data"
    data.mkdir()
    with running(["app.py"], data) as url:
        yield url, data


@pytest.fixture(scope="module")
def client(server):
    client = gradio_client.Client(server[0] + "/", verbose=False)
    yield client
    client.close()


def test_api_lists_every_step_by_name(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/write_storyboard", "/project", "/edit_storyboard", "/narrate", "/illustrate", "/render", "/job",
                 "/wait", "/cancel", "/video"):
        assert name in endpoints, sorted(endpoints)
    parameters = [p["parameter_name"] for p in endpoints["/write_storyboard"]["parameters"]]
    assert parameters[:4] == ["source", "title", "style", "aspect"]
    assert not any(name.startswith("/lambda") for name in endpoints)  # UI events stay private


def test_storyboard_narrate_paint_through_the_client(client, server):
    project = client.predict(source=SCRIPT, aspect="1:1", mode="script", api_name="/write_storyboard")
    assert [s["narration"] for s in project["scenes"]] == ["Rain falls on the hills.", "Rivers carry it to the sea."]
    project_id = project["project_id"]

    narrated = client.predict(project_id=project_id, narrator="espeak", api_name="/narrate")
    assert all(s["narrated"] and s["audio_s"] > 0.5 for s in narrated["scenes"])
    assert any(note.startswith("narrator: espeak") for note in narrated["notes"])

    edited = [dict(s) for s in narrated["scenes"]]  # the rows as /narrate returned them, read-only fields and all
    edited[1]["narration"] = "Rivers carry the rain to the sea."
    changed = client.predict(project_id=project_id, scenes=edited, api_name="/edit_storyboard")
    assert [s["narrated"] for s in changed["scenes"]] == [True, False]  # only the edited scene lost its audio
    renarrated = client.predict(project_id=project_id, scene_ids=[edited[1]["id"]], narrator="espeak",
                                api_name="/narrate")
    assert all(s["narrated"] for s in renarrated["scenes"])

    painted = client.predict(project_id=project_id, painter="cards", api_name="/illustrate")
    assert all(s["painted"] for s in painted["scenes"])
    again = client.predict(project_id=project_id, api_name="/project")
    assert again["scenes"] == painted["scenes"]


def test_api_errors_are_readable(client):
    with pytest.raises(Exception, match="project_id"):
        client.predict(project_id="../../etc", api_name="/project")
    with pytest.raises(Exception, match="script is empty"):
        client.predict(source="  ", api_name="/write_storyboard")
    with pytest.raises(Exception, match="no project"):
        client.predict(project_id="p" + "0" * 24, api_name="/project")


def test_render_at_draft_through_the_client(client):
    project = client.predict(source="# Snow\n\nSnow covers the town.\n\nChildren build a snowman.", aspect="9:16",
                             mode="script", api_name="/write_storyboard")
    job = client.predict(project_id=project["project_id"], preset="draft", narrator="espeak", painter="cards",
                         api_name="/render")
    assert job["state"] in ("queued", "running")
    ended = client.predict(job_id=job["id"], timeout_s=300, api_name="/wait")
    assert ended["state"] == "done", ended
    assert ended["video"]["width"] == 480 and ended["video"]["height"] == 854
    mp4 = client.predict(job_id=job["id"], api_name="/video")
    facts = video_facts(Path(mp4))
    assert (facts["width"], facts["height"]) == (480, 854)
    assert facts["has_audio"] and facts["video_codec"] == "h264"
    assert abs(facts["duration_s"] - ended["video"]["duration_s"]) < 0.1
    assert ended["segments"] == {"made": 3, "reused": 0}  # two scenes and the transition between them
    with pytest.raises(Exception, match="already done"):
        client.predict(job_id=job["id"], api_name="/cancel")

    # Edit the second scene with the rows /project gives, narrate it, render again: only its segments are made.
    rows = client.predict(project_id=project["project_id"], api_name="/project")["scenes"]
    rows[1]["narration"] = "Children build a tall snowman."
    client.predict(project_id=project["project_id"], scenes=rows, api_name="/edit_storyboard")
    client.predict(project_id=project["project_id"], scene_ids=[rows[1]["id"]], narrator="espeak", api_name="/narrate")
    job = client.predict(project_id=project["project_id"], preset="draft", narrator="espeak", painter="cards",
                         api_name="/render")
    ended = client.predict(job_id=job["id"], timeout_s=300, api_name="/wait")
    assert ended["state"] == "done" and ended["segments"] == {"made": 2, "reused": 1}, ended


def test_uploads_over_the_limit_are_refused_by_the_server(server):
    import httpx

    url, _ = server
    # The page's upload limit is the job runner's (50 MB by default): a bigger body is refused before it is stored.
    big = b"\0" * (50_000_000 + 1024)
    answer = httpx.post(url + "/gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=60)
    assert answer.status_code == 413, answer.text[:200]
