"""``python -m studio serve``: the studio and the HTTP API from one FastAPI server and one job runner."""

from __future__ import annotations

import httpx
import pytest

gradio_client = pytest.importorskip("gradio_client")

from ._servers import running  # noqa: E402

STORY = "# Leaves\n\nLeaves turn red in autumn."


def test_one_server_serves_studio_and_api(tmp_path):
    data = tmp_path / "data"
    with running(["-m", "studio", "serve", "--port", "{port}", "--data-dir", str(data)], data,
                 ready_path="/api/health") as url:
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        assert httpx.get(url + "/api/health", timeout=10).json()["status"] == "ok"

        client = gradio_client.Client(url + "/", verbose=False)
        project = client.predict(source=STORY, aspect="1:1", mode="script", api_name="/write_storyboard")
        job = client.predict(project_id=project["project_id"], narrator="espeak", painter="cards", api_name="/render")
        assert client.predict(job_id=job["id"], timeout_s=300, api_name="/wait")["state"] == "done"

        # The studio's job is in the HTTP API's list (a local server has one user), with its video and ranges.
        listed = httpx.get(url + "/api/jobs", timeout=10).json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]] and listed[0]["state"] == "done"
        part = httpx.get(url + f"/api/jobs/{job['id']}/video", headers={"Range": "bytes=0-99"}, timeout=10)
        assert part.status_code == 206 and len(part.content) == 100 and part.content[4:8] == b"ftyp"
        client.close()  # its heartbeat stream would hold the server's graceful shutdown


def test_signed_in_users_see_only_their_own(tmp_path):
    data = tmp_path / "data"
    users = tmp_path / "users.txt"
    users.write_text("alice:alice-secret-1\nbob:bob-secret-22\n")
    users.chmod(0o600)
    with running(["-m", "studio", "serve", "--port", "{port}", "--data-dir", str(data), "--auth", str(users)], data,
                 ready_path="/api/health") as url:
        assert httpx.get(url + "/api/jobs", timeout=10).status_code == 401
        alice = gradio_client.Client(url + "/", auth=("alice", "alice-secret-1"), verbose=False)
        bob = gradio_client.Client(url + "/", auth=("bob", "bob-secret-22"), verbose=False)
        with pytest.raises(Exception):
            gradio_client.Client(url + "/", auth=("alice", "wrong-secret"), verbose=False)

        project = alice.predict(source=STORY, mode="script", api_name="/write_storyboard")
        with pytest.raises(Exception, match="no project"):
            bob.predict(project_id=project["project_id"], api_name="/project")
        job = alice.predict(project_id=project["project_id"], narrator="espeak", painter="cards", api_name="/render")
        with pytest.raises(Exception, match="no job"):
            bob.predict(job_id=job["id"], api_name="/job")
        # Alice's studio job is Alice's in the HTTP API too, and only hers.
        assert [j["id"] for j in httpx.get(url + "/api/jobs", auth=("alice", "alice-secret-1")).json()["jobs"]] == [job["id"]]
        assert httpx.get(url + "/api/jobs", auth=("bob", "bob-secret-22")).json()["jobs"] == []
        assert alice.predict(job_id=job["id"], timeout_s=300, api_name="/wait")["state"] == "done"
        alice.close()
        bob.close()
