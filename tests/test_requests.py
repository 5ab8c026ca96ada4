"""One request schema: the HTTP API, the job runner and the studio app accept the same request and refuse a bad one
with the same field-named error (`studio.server.requests`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.compose.captions import STYLES
from studio.server import JobRunner, NotFound, RequestError

from .jobs_support import write_tiny_preset

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@pytest.fixture
def faces(tmp_path):
    """The three faces over one runner: the HTTP API (a TestClient), the runner itself, the studio app's endpoint."""
    import gradio as gr
    from fastapi.testclient import TestClient

    from studio.server import create_app
    from studio.ui import endpoints
    from studio.ui.app import make_studio

    runner = JobRunner(tmp_path / "data", start=False, presets=[write_tiny_preset(tmp_path)])
    studio = make_studio(runner=runner, single_user="local")  # a loopback server: the API's `local` user
    with gr.Blocks() as demo:
        endpoints.register(studio)
    app_submit = next(fn.fn for fn in demo.fns.values() if fn.api_name == "submit")
    with TestClient(create_app(runner)) as http:
        yield http, runner, app_submit
    runner.close()


def full_request(http, make_image, make_tone) -> dict:
    """A request with every optional field, a Bark voice and a storyboard with media (uploads made over HTTP)."""
    def upload(path: Path) -> str:
        with open(path, "rb") as handle:
            answer = http.post("/api/uploads", files={"file": (path.name, handle)})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    return {
        "storyboard": [
            {"id": "first", "narration": "Hello there, hills.", "visual_prompt": "green hills", "duration_s": 2.5,
             "seed": 3, "media": upload(make_image("hill.png", (64, 48))), "transition": "fade"},
            {"narration": "And goodbye."},
        ],
        "preset": "tiny", "aspect": "9:16", "title": "Hills", "style": "ink wash", "language": "en",
        "voice": "v2/en_speaker_6", "seed": 5, "providers": {"writer": "rules", "narrator": "bark", "painter": "cards"},
        "captions": True, "caption_style": sorted(STYLES)[0], "music": upload(make_tone("tune.wav", 1.0)),
        "music_volume": 0.3, "watermark": upload(make_image("logo.png", (16, 16))), "caption_font": upload(FONT),
    }


def test_the_same_request_is_accepted_by_every_face(faces, make_image, make_tone):
    http, runner, app_submit = faces
    request = full_request(http, make_image, make_tone)

    over_http = http.post("/api/jobs", json=request)
    assert over_http.status_code == 202, over_http.text
    direct = runner.submit(request, owner="local")
    from_app = app_submit(job=request)
    jobs = [runner.get(over_http.json()["id"]), direct, runner.get(from_app["id"])]
    assert [j.state for j in jobs] == ["queued"] * 3
    # All three hold the very same checked request.
    assert jobs[0].request == jobs[1].request == jobs[2].request
    assert jobs[0].request["voice"] == "v2/en_speaker_6" and jobs[0].request["providers"]["narrator"] == "bark"


@pytest.mark.parametrize("change, field", [
    ({"voice": "a/b/c"}, "voice"),
    ({"voice": "../voice.onnx"}, "voice"),
    ({"colour": "red"}, "colour"),
    ({"aspect": "4:3"}, "aspect"),
    ({"seed": True}, "seed"),
    ({"music_volume": 2}, "music_volume"),
    ({"providers": {"narrator": "nope"}}, "providers.narrator"),
    ({"storyboard": [{"narration": "x", "duration_s": 500}]}, "storyboard[0].duration_s"),
    ({"storyboard": [{"narration": "x", "colour": 1}]}, "storyboard[0].colour"),
    ({"storyboard": [{"narration": ""}]}, "storyboard[0].narration"),
    ({"storyboard": [{"narration": "x", "media": "../../etc/passwd"}]}, "storyboard[0].media"),
    ({"script": "also"}, "storyboard"),  # "give exactly one of ...": names the second
    ({"preset": "maximum"}, "preset"),
    ({"title": "bad \x00 byte"}, "title"),
])
def test_a_bad_request_gets_the_same_field_named_error_from_every_face(faces, make_image, make_tone, change, field):
    import gradio as gr

    http, runner, app_submit = faces
    request = {**full_request(http, make_image, make_tone), **change}

    answer = http.post("/api/jobs", json=request)
    assert answer.status_code in (404, 422), answer.text
    assert answer.json()["field"] == field
    with pytest.raises((RequestError, NotFound)) as direct:
        runner.submit(request, owner="local")
    assert direct.value.field == field
    with pytest.raises(gr.Error) as from_app:
        app_submit(job=request)
    assert answer.json()["detail"] == str(direct.value) == from_app.value.message
    assert (answer.status_code == 404) == isinstance(direct.value, NotFound)
    assert runner.list() == []  # nothing was queued by any face
