"""The studio's panel functions, called directly (no server) on projects made by the offline providers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.testing import uploaded

pytest.importorskip("gradio")

from studio import Project, StudioError  # noqa: E402
from studio.ui import app as ui_app  # noqa: E402
from studio.ui import brief, compose, endpoints, projects, storyboard, visuals, voice  # noqa: E402
from studio.ui.common import checked_session  # noqa: E402
from studio.ui.workspace import Workspace, owner_for  # noqa: E402

from .conftest import ROOT, video_facts  # noqa: E402

SCRIPT = ("# Bees\n\nBees make honey from nectar. They store it in wax cells.\n\n"
          "The hive keeps warm in winter.\n\nIn spring the queen lays eggs again.")
GUEST = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def studio(tmp_path):
    studio = ui_app.make_studio(tmp_path / "data")
    yield studio
    studio.runner.close()


@pytest.fixture
def session():
    return {"guest": GUEST, "project": None, "job": None}


def written(studio, session, source=SCRIPT, aspect="1:1", **kwargs) -> tuple[dict, dict]:
    """Write a storyboard through the Brief panel; returns (session, view)."""
    args = dict(title="", style="flat", aspect=aspect, language="en", target_s=0, voice="", writer="auto",
                mode="script", request=None, progress=None)
    args.update(kwargs)
    result = brief.write(studio, session, source, **args)
    return result["session"], result["view"]


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def audio_files(view_: dict) -> dict[str, tuple[str, str, int]]:
    """scene id -> (audio path, sha256, mtime_ns)."""
    return {s["id"]: (s["audio"], digest(s["audio"]), os.stat(s["audio"]).st_mtime_ns) for s in view_["scenes"]}


def test_write_storyboard_makes_a_project_of_the_caller(studio, session):
    new_session, shown = written(studio, session)
    assert new_session["guest"] == GUEST and new_session["project"] == shown["id"]
    assert [s["narration"] for s in shown["scenes"]] == [
        "Bees make honey from nectar. They store it in wax cells.", "The hive keeps warm in winter.",
        "In spring the queen lays eggs again."]
    assert shown["aspect"] == "1:1" and shown["style"] == "flat" and shown["title"] == "Bees"
    folder = studio.workspace.projects / shown["id"]
    assert (folder / "project.json").is_file()
    assert json.loads((folder / "owner.json").read_text())["owner"] == f"guest-{GUEST}"
    # The panel says which writer ran and why.
    assert "rules" in brief.show(shown)["notes"]
    # Another browser's session does not reach it.
    with pytest.raises(StudioError, match="no project"):
        studio.project({"guest": OTHER, "project": shown["id"]}, None)


def test_bad_brief_input_is_a_clear_error(studio, session):
    with pytest.raises(StudioError, match="empty"):
        written(studio, session, source="   ")
    with pytest.raises(StudioError, match="voice"):
        written(studio, session, voice="../../etc/passwd")
    with pytest.raises(StudioError, match="aspect"):
        written(studio, session, aspect="4:3")
    assert list(studio.workspace.projects.iterdir()) == []  # nothing half-made


def test_table_edit_then_renarrate_only_that_scene(studio, session):
    session, shown = written(studio, session)
    shown = voice.narrate_all(studio, session, "espeak", "", "draft", None, None)["view"]
    before = audio_files(shown)
    assert all(s["audio_s"] and s["audio_s"] > 0.5 for s in shown["scenes"])
    assert "espeak" in voice.show(shown)["notes"]

    frame = storyboard.table(shown)
    frame.loc[1, "narration"] = "The hive stays warm all winter long."
    shown = storyboard.apply_table(studio, session, frame, None)["view"]
    edited_id = shown["scenes"][1]["id"]
    assert shown["scenes"][1]["audio"] is None  # the edit dropped only that scene's audio
    assert shown["scenes"][0]["audio"] == before[shown["scenes"][0]["id"]][0]

    shown = voice.narrate_all(studio, session, "espeak", "", "draft", None, None)["view"]
    after = audio_files(shown)
    for scene_id, (path, sha, mtime) in before.items():
        if scene_id == edited_id:
            assert after[scene_id][0] != path and after[scene_id][1] != sha
        else:
            assert after[scene_id] == (path, sha, mtime)  # same file, same bytes, not rewritten


def test_voice_card_narrates_only_its_scene_with_edited_text(studio, session):
    session, shown = written(studio, session)
    shown = voice.narrate_all(studio, session, "espeak", "", "draft", None, None)["view"]
    before = audio_files(shown)
    target = shown["scenes"][2]["id"]
    shown = voice.narrate_scene(studio, session, target, "In spring the queen starts laying again.", "espeak", "",
                                "draft", None, None)["view"]
    after = audio_files(shown)
    assert shown["scenes"][2]["narration"] == "In spring the queen starts laying again."
    assert after[target][1] != before[target][1]
    assert all(after[k] == before[k] for k in before if k != target)
    cards = voice.cards(shown)
    assert [c["length"].endswith(" s") for c in cards] == [True, True, True]
    assert all(Path(c["audio"]).is_file() and c["audio"] != s["audio"] for c, s in zip(cards, shown["scenes"]))
    with pytest.raises(StudioError, match="narration is empty"):
        voice.narrate_scene(studio, session, target, "  ", "espeak", "", "draft", None, None)


def test_scene_operations(studio, session):
    session, shown = written(studio, session)
    ids = [s["id"] for s in shown["scenes"]]
    result = storyboard.add_scene(studio, session, 1, None)
    assert result["scene"] == 2 and len(result["view"]["scenes"]) == 4
    assert result["view"]["scenes"][1]["narration"] == "" and result["view"]["scenes"][1]["id"] not in ids
    shown = storyboard.delete_scene(studio, session, 2, None)["view"]
    assert [s["id"] for s in shown["scenes"]] == ids
    shown = storyboard.move_down(studio, session, 1, None)["view"]
    assert [s["id"] for s in shown["scenes"]] == [ids[1], ids[0], ids[2]]
    shown = storyboard.move_up(studio, session, 2, None)["view"]
    assert [s["id"] for s in shown["scenes"]] == ids
    shown = storyboard.split_scene(studio, session, 1, None)["view"]
    assert [s["narration"] for s in shown["scenes"][:2]] == ["Bees make honey from nectar.", "They store it in wax cells."]
    assert shown["scenes"][0]["id"] == ids[0] and len(shown["scenes"]) == 4
    with pytest.raises(StudioError, match="single sentence"):
        storyboard.split_scene(studio, session, 3, None)
    with pytest.raises(StudioError, match="scene number from 1 to 4"):
        storyboard.delete_scene(studio, session, 9, None)
    with pytest.raises(StudioError, match="already the first"):
        storyboard.move_up(studio, session, 1, None)
    shown = storyboard.set_title(studio, session, "Honey", None)["view"]
    assert shown["title"] == "Honey"


def test_import_export_and_media_paths_refused(studio, session, tmp_path):
    session, shown = written(studio, session)
    exported = storyboard.export_csv(studio, session, None)["download"].value["path"]
    assert Path(exported).suffix == ".csv" and "narration" in Path(exported).read_text()
    exported_json = storyboard.export_json(studio, session, None)["download"].value["path"]
    assert json.loads(Path(exported_json).read_text())["title"] == "Bees"

    csv = tmp_path / "edited.csv"
    text = Path(exported).read_text().replace("The hive keeps warm in winter.", "The hive hums all winter.")
    csv.write_text(text)
    imported = storyboard.import_storyboard(studio, session, uploaded(csv), None)["view"]
    assert imported["scenes"][1]["narration"] == "The hive hums all winter."
    assert [s["id"] for s in imported["scenes"]] == [s["id"] for s in shown["scenes"]]  # ids kept: assets kept

    # A storyboard (or a table edit) cannot point a scene at a file on the server.
    bad = tmp_path / "bad.csv"
    bad.write_text("id,narration,visual_prompt,duration_s,seed,media,transition\n,Hello there.,,,0,/etc/passwd,\n")
    with pytest.raises(StudioError, match="not a file uploaded"):
        storyboard.import_storyboard(studio, session, uploaded(bad), None)
    frame = storyboard.table(imported)
    frame.loc[0, "media"] = "../../secret.png"
    with pytest.raises(StudioError, match="not a file uploaded"):
        storyboard.apply_table(studio, session, frame, None)
    assert studio.project(session, None).scenes[0].media is None  # nothing changed


def test_visuals_gallery_repaint_and_upload(studio, session, make_image, make_tone, tmp_path):
    session, shown = written(studio, session)
    shown = visuals.paint_all(studio, session, "cards", "warm pastel", "draft", None, None)["view"]
    items = visuals.gallery(shown)
    assert len(items) == 3 and all(Path(f).is_file() for f, _ in items)
    assert items[0][1].startswith("1 · seed 0 · ")
    assert shown["style"] == "warm pastel" and "cards" in visuals.show(shown)["notes"]
    before = {s["id"]: s["visual"] for s in shown["scenes"]}

    target = shown["scenes"][1]["id"]
    result = visuals.new_seed(studio, session, target, "a glowing hive at dusk", "cards", "draft", None, None)
    shown = result["view"]
    assert shown["scenes"][1]["seed"] == result["seed"] and shown["scenes"][1]["visual_prompt"] == "a glowing hive at dusk"
    assert shown["scenes"][1]["visual"] != before[target]
    assert all(s["visual"] == before[s["id"]] for s in shown["scenes"] if s["id"] != target)

    photo = make_image("photo.png", (320, 240))
    shown = visuals.use_media(studio, session, target, uploaded(photo), "draft", None)["view"]
    scene = shown["scenes"][1]
    assert scene["media"].startswith("uploads/") and scene["media"].endswith(".png")
    assert digest(scene["visual"]) == digest(photo)
    assert visuals.scene_fields(shown, target)["media_note"].startswith("Uses your file")

    # Uploads are checked by their content (the job runner's checks), never by their names.
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(StudioError, match="not an image, audio or video this server accepts"):
        visuals.use_media(studio, session, target, uploaded(fake), "draft", None)
    playlist = tmp_path / "clip.mp4"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\n/etc/passwd\n")
    with pytest.raises(StudioError, match="playlists are not accepted"):
        visuals.use_media(studio, session, target, uploaded(playlist), "draft", None)
    with pytest.raises(StudioError, match="is a audio file|is an audio file"):
        visuals.use_media(studio, session, target, uploaded(make_tone("tone.wav", 0.5)), "draft", None)
    assert studio.project(session, None).scene(target).media == scene["media"]  # nothing changed
    shown = visuals.drop_media(studio, session, target, "cards", "draft", None, None)["view"]
    assert shown["scenes"][1]["media"] is None


def test_compose_settings_music_and_scene_preview(studio, session, make_tone):
    session, shown = written(studio, session, source="# Short\n\nThe sun rises.\n\nThe moon sets.")
    shown = compose.save_settings(studio, session, False, "boxed", 0.3, "fade", None)["view"]
    assert (shown["captions"], shown["caption_style"], shown["music_volume"]) == (False, "boxed", 0.3)
    assert {s["transition"] for s in shown["scenes"]} == {"fade"}
    assert compose.show(shown)["transition"] == "fade"
    with pytest.raises(StudioError, match="caption_style"):
        compose.save_settings(studio, session, True, "comic", 0.3, "auto", None)

    shown = compose.set_music(studio, session, uploaded(make_tone("tune.wav", 2.0)), None)["view"]
    assert shown["music"].endswith(".wav")
    assert studio.project(session, None).music.is_file()

    scene_id = shown["scenes"][1]["id"]
    result = compose.preview_scene(studio, session, scene_id, "espeak", "cards", None, None)
    facts = video_facts(Path(result["preview"]))
    assert (facts["width"], facts["height"]) == (480, 480) and facts["has_audio"]  # Draft, 1:1
    scene = result["view"]["scenes"][1]
    # The last scene's segments: the transition into it and its own frames, with its pads.
    assert abs(facts["duration_s"] - (scene["audio_s"] + 0.85)) < 0.6
    # The scene it blends with is narrated and painted too: its picture is in the transition.
    assert all(s["audio"] and s["visual"] for s in result["view"]["scenes"])
    assert "2 segments (0 reused)" in result["status"] and "a render at Draft reuses them" in result["status"]
    shown = compose.set_music(studio, session, None, None)["view"]
    assert shown["music"] is None
    assert "| **Draft** | 480x480 @ 24 fps | CPU compose: libx264 superfast (" in compose.preset_table("1:1")


def test_projects_open_duplicate_delete(studio, session):
    session, first = written(studio, session)
    session, second = written(studio, session, source="# Two\n\nOne sentence here.\n\nAnother one.")
    listed = projects.list_projects(studio, session, None)["projects"]
    assert list(listed["id"]) == [second["id"], first["id"]] and list(listed["title"]) == ["Two", "Bees"]

    opened = projects.open_project(studio, session, first["id"], None)
    assert opened["session"]["project"] == first["id"] and opened["view"]["title"] == "Bees"
    session = opened["session"]

    voice.narrate_all(studio, session, "espeak", "", "draft", None, None)
    copy = projects.duplicate_project(studio, session, first["id"], None)
    assert copy["view"]["title"] == "Bees (copy)" and copy["view"]["id"] != first["id"]
    original = Project.load(studio.workspace.projects / first["id"])
    duplicate = Project.load(studio.workspace.projects / copy["view"]["id"])
    for a, b in zip(original.scenes, duplicate.scenes):
        assert a.id == b.id and b.audio.parent == duplicate.folder / "assets" and digest(a.audio) == digest(b.audio)

    intruder = {"guest": OTHER, "project": None, "job": None}
    for action in (projects.open_project, projects.delete_project, projects.duplicate_project):
        with pytest.raises(StudioError, match="no project"):
            action(studio, intruder, first["id"], None)
    assert projects.list_projects(studio, intruder, None)["projects"].empty

    session = copy["session"]
    assert "opened it" in copy["said"] and "Bees (copy)" in copy["picked_note"]  # it says what it did
    asked = projects.ask_delete(studio, session, copy["view"]["id"], None)
    assert "Bees (copy)" in asked["confirm_note"]  # the confirmation names the project it deletes
    gone = projects.delete_project(studio, session, copy["view"]["id"], None)
    # The open project is gone: the most recently changed other one opens instead, and the panel says so.
    assert gone["session"]["project"] == first["id"] and gone["view"]["title"] == "Bees"
    assert "Deleted “Bees (copy)”" in gone["said"] and "Opened “Bees”" in gone["said"]
    assert not (studio.workspace.projects / copy["view"]["id"]).exists()
    assert len(gone["projects"]) == 2
    session = gone["session"]
    for project_id in (first["id"], second["id"]):
        gone = projects.delete_project(studio, session, project_id, None)
        session = gone.get("session", session)
    assert gone["session"]["project"] is None and gone["view"] is None and "no other project" in gone["said"]


def test_restore_after_reload(studio, session):
    assert ui_app.restore(studio, None)["view"] is None  # a first visit gets a fresh anonymous key
    assert len(ui_app.restore(studio, None)["session"]["guest"]) == 32
    session, shown = written(studio, session)
    again = ui_app.restore(studio, session)
    assert again["session"] == session and again["view"]["id"] == shown["id"]
    assert again["tabs"].selected == "brief"  # no panel kept: the first
    assert ui_app.restore(studio, session, "voice")["tabs"].selected == "voice"  # the panel it was on
    assert ui_app.restore(studio, session, "../x")["tabs"].selected == "brief"
    # A session naming someone else's project (or a deleted one) loses it instead of failing.
    stolen = ui_app.restore(studio, {"guest": OTHER, "project": shown["id"], "job": None})
    assert stolen["view"] is None and stolen["session"]["project"] is None
    assert checked_session({"guest": "short"})["guest"] != "short"
    out = ui_app.redraw(_fake_ui(), shown, None)
    assert any("Bees" in str(v) for v in out.values())


def _fake_ui():
    from types import SimpleNamespace

    def panel(*names):
        return SimpleNamespace(**{n: f"{n}" for n in names})

    return SimpleNamespace(header="header", brief=panel("notes"), storyboard=panel("table", "title", "scene", "notice"),
                           voice=panel("notes", "voice", "hint"),
                           visuals=panel("gallery", "style", "notes", "hint", "scene", "prompt", "seed", "media_note"),
                           compose=panel("scene", "preset", "estimate", "captions", "caption_style", "music_volume",
                                         "transition", "music_note", "watermark_note", "caption_font_note", "presets",
                                         "video", "download"))


def test_workspace_refuses_bad_ids_and_links(tmp_path):
    ws = Workspace(tmp_path / "data")
    for bad in ("../x", "p" + "0" * 23, "/etc", "p" + "0" * 24 + "/..", "P" + "0" * 24, "", None):
        with pytest.raises(StudioError):
            ws.folder(bad)
    owner = owner_for(None, GUEST)
    project = ws.create(Project(title="T", scenes=()), owner)
    outside = tmp_path / "outside"
    outside.mkdir()
    link = ws.projects / ("p" + "1" * 24)
    link.symlink_to(project.folder)
    with pytest.raises(StudioError, match="no project"):
        ws.load(link.name, owner)  # a planted link is not a project
    assert [p.id for p in ws.list(owner)] == [project.folder.name]
    for bad_name in ("uploads/../../x.png", "/etc/passwd", "uploads/abc.png"):
        with pytest.raises(StudioError, match="not a file uploaded"):
            ws.upload_path(project, bad_name)
    with pytest.raises(StudioError, match="characters"):
        owner_for("a/b", None)


def test_api_functions_describe_without_paths(studio):
    project = studio.workspace.create(Project.from_storyboard([{"narration": "Hello there."}], title="Hi"), "api")
    described = endpoints.describe(project)
    assert described["scenes"][0]["narrated"] is False
    assert str(studio.workspace.root) not in json.dumps(described)


def test_import_studio_does_not_import_gradio():
    code = ("import sys, studio, studio.ui; from studio import cli; cli.build_parser(); "
            "assert 'gradio' not in sys.modules, 'gradio imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "studio", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and "gradio" not in out.stderr


def _wait_job(studio, session, timeout_s=120.0) -> dict:
    """Poll like the page's timer until the job ends; returns the last poll."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        out = compose.poll(studio, session, None)
        if not out["timer"].active or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_render_job_reuses_what_the_panels_made(studio, session):
    session, shown = written(studio, session, source="# Dawn\n\nThe sun rises.\n\nBirds begin to sing.")
    voice.narrate_all(studio, session, "espeak", "", "draft", None, None)
    visuals.paint_all(studio, session, "cards", "", "draft", None, None)
    started = compose.render(studio, session, "draft", "espeak", "cards", None)
    session = started["session"]
    assert session["job"] and started["cancel"].interactive and not started["render"].interactive
    done = _wait_job(studio, session)
    assert 'data-state="done"' in done["progress"] or "data-state='done'" in done["progress"]
    # The finished video is the project's last good render now: the panel shows it, and the download is named
    # after the title.
    shown_after = compose.show(done["view"])
    video = shown_after["video"].value["path"]
    facts = video_facts(Path(video))
    assert (facts["width"], facts["height"]) == (480, 480) and facts["has_audio"]
    assert shown_after["download"].visible and shown_after["download"].value["path"] == video
    assert Path(video).name == "Dawn.mp4" and "Last good render · Draft" in shown_after["video"].label
    assert done["view"]["last"]["job"] == session["job"]
    job = studio.runner.get(session["job"], f"guest-{GUEST}")
    # Every narration and card the panels made was found in the job's cache: nothing was made twice.
    assert {scene_id: (steps["narrate"], steps["illustrate"]) for scene_id, steps in job.scenes.items()} == {
        s["id"]: ("reused", "reused") for s in shown["scenes"]}
    # The job is the caller's only: another browser naming its id sees nothing and cannot cancel it.
    stranger = {"guest": OTHER, "project": None, "job": session["job"]}
    assert compose.poll(studio, stranger, None)["session"]["job"] is None
    with pytest.raises(StudioError, match="no job"):
        compose.cancel(studio, stranger, None)


def test_render_reuses_the_segments_of_previews_and_earlier_renders(studio, session):
    session, shown = written(studio, session, source="# Day\n\nThe sun rises.\n\nBirds sing.\n\nNight falls.")
    ids = [s["id"] for s in shown["scenes"]]
    owner = f"guest-{GUEST}"
    preview = compose.preview_scene(studio, session, ids[1], "espeak", "cards", "draft", None, None)
    assert "3 segments (0 reused)" in preview["status"]  # the middle scene and the transitions at its ends

    session = compose.render(studio, session, "draft", "espeak", "cards", None)["session"]
    done = _wait_job(studio, session)
    job = studio.runner.get(session["job"], owner)
    assert job.state == "done" and compose.job_segments(job) == {"made": 2, "reused": 3}  # the preview's three
    assert "3 of 5 segments reused" in done["progress"]

    # Edit the last scene: the next render makes only its own segment and the transition into it.
    project = studio.project(session, None)
    studio.save(project.edit_scene(ids[2], narration="Night falls over the quiet town."), session, None)
    session = compose.render(studio, session, "draft", "espeak", "cards", None)["session"]
    _wait_job(studio, session)
    job = studio.runner.get(session["job"], owner)
    assert job.state == "done" and compose.job_segments(job) == {"made": 2, "reused": 3}
    assert {k: v["compose"] for k, v in job.scenes.items()} == {ids[0]: "reused", ids[1]: "made", ids[2]: "made"}


def test_edit_storyboard_takes_back_the_rows_the_api_gives(studio, session):
    session, shown = written(studio, session)
    voice.narrate_all(studio, session, "espeak", "", "draft", None, None)
    project = studio.project(session, None)
    rows = endpoints.describe(project)["scenes"]  # with number, narrated, audio_s, painted
    assert {"number", "narrated", "audio_s", "painted"} <= set(rows[0])
    rows[1]["narration"] = "The hive stays warm all winter long."
    edited = project.with_storyboard(endpoints.storyboard_rows(project, rows))
    assert [s.narration for s in edited.scenes][1] == "The hive stays warm all winter long."
    assert [s.audio is not None for s in edited.scenes] == [True, False, True]  # only the edited scene lost its audio
    with pytest.raises(StudioError, match="unknown column"):
        project.with_storyboard(endpoints.storyboard_rows(project, [{**rows[0], "colour": "red"}]))


def test_projects_panel_lists_jobs_and_shows_a_finished_one(studio, session):
    session, shown = written(studio, session, source="# Tide\n\nThe tide comes in.")
    session = compose.render(studio, session, "draft", "espeak", "cards", None)["session"]
    _wait_job(studio, session)
    jobs = projects.list_jobs(studio, session, None)["jobs"]
    assert list(jobs["job"]) == [session["job"]] and list(jobs["state"]) == ["done"]
    assert list(jobs["title"]) == ["Tide"] and list(jobs["percent"]) == ["100%"]
    result = projects.show_job(studio, session, session["job"], None)
    assert video_facts(Path(result["job_video"]))["has_audio"] and result["job_download"].visible
    assert result["job_note"].startswith("**done**")
    assert projects.list_jobs(studio, {"guest": OTHER, "project": None, "job": None}, None)["jobs"].empty
    with pytest.raises(StudioError, match="no job"):
        projects.show_job(studio, {"guest": OTHER, "project": None, "job": None}, session["job"], None)


# -- the model providers through the panels ----------------------------------------------------------------------------
STORY_JSON = json.dumps({"title": "Why the Sky Is Blue", "scenes": [
    {"narration": "Sunlight looks white, but it holds every colour.", "visual_prompt": "sunlight through a prism"},
    {"narration": "Air scatters blue light far more than red.", "visual_prompt": "blue sky over a field"}]})


def test_brief_written_and_a_scene_rewritten_by_an_llm_server(studio, session, monkeypatch):
    from .openai_server import OpenAIServer

    answers = [STORY_JSON, json.dumps({"text": "Tiny air molecules bounce blue light all over the sky."})]
    with OpenAIServer(answers=answers) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("STUDIO_LLM_MODEL", "tiny-chat")
        session, shown = written(studio, session, source="Why the sky is blue", mode="brief", writer="auto")
        assert [s["narration"] for s in shown["scenes"]][1] == "Air scatters blue light far more than red."
        assert shown["title"] == "Why the Sky Is Blue" and "openai" in brief.show(shown)["notes"]

        shown = voice.narrate_all(studio, session, "espeak", "", "draft", None, None)["view"]
        before = audio_files(shown)
        result = storyboard.rewrite(studio, session, 2, "narration", "simpler, for children", "openai", "draft", None)
        shown = result["view"]
        assert shown["scenes"][1]["narration"] == "Tiny air molecules bounce blue light all over the sky."
        assert "rewritten by openai" in result["notes"] and result["scene"] == 2
        assert shown["scenes"][1]["audio"] is None  # the rewritten scene is narrated again, and only it
        first = shown["scenes"][0]
        assert (first["audio"], digest(first["audio"])) == before[first["id"]][:2]
        assert "simpler, for children" in json.dumps(server.chats[-1])


def test_rewrite_offline_tidies_and_says_an_llm_is_needed_for_instructions(studio, session):
    session, shown = written(studio, session, source="# T\n\nthe the hive   hums , all day\n\nBees rest.")
    result = storyboard.rewrite(studio, session, 1, "narration", "", "rules", "draft", None)
    assert result["view"]["scenes"][0]["narration"] == "The hive hums, all day."
    with pytest.raises(StudioError, match="needs an LLM"):
        storyboard.rewrite(studio, session, 1, "narration", "shorter", "rules", "draft", None)
    with pytest.raises(StudioError, match="`field`"):
        storyboard.rewrite(studio, session, 1, "title", "", "rules", "draft", None)


def test_bark_and_diffusers_through_the_panels(studio, session, tiny_models):
    from dataclasses import replace as dc_replace

    from studio import load_preset

    tiny = dc_replace(load_preset("draft"), models=tiny_models.preset_models())
    session, shown = written(studio, session, source="# Sea\n\nWaves roll in.\n\nGulls cry above.")
    target = shown["scenes"][1]["id"]
    shown = voice.narrate_scene(studio, session, target, "Gulls cry above the waves.", "bark", "", tiny, None,
                                None)["view"]
    assert shown["scenes"][1]["audio_s"] > 0 and shown["scenes"][0]["audio"] is None
    assert "bark" in voice.show(shown)["notes"]
    shown = visuals.repaint(studio, session, target, "gulls over the sea", 7, "diffusers-image", tiny, None,
                            None)["view"]
    from PIL import Image

    with Image.open(shown["scenes"][1]["visual"]) as image:
        assert image.size == (480, 480)  # fitted to Draft's 1:1 frame
    assert "diffusers-image" in visuals.show(shown)["notes"] and shown["scenes"][0]["visual"] is None


def test_gpu_decorator_uses_spaces_when_it_is_installed(monkeypatch):
    import sys
    import types

    from studio.ui.common import gpu

    def plain(x):
        return x + 1

    assert gpu(plain) is plain  # no `spaces` package here: a no-op
    calls = []
    fake = types.ModuleType("spaces")

    def GPU(fn=None, duration=None):  # noqa: N802  (the real decorator's name)
        def wrap(func):
            def run(*args, **kwargs):
                calls.append(duration)
                return func(*args, **kwargs)
            return run
        return wrap(fn) if fn is not None else wrap

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert gpu(plain)(1) == 2 and calls == [None]
    assert gpu(duration=120)(plain)(2) == 3 and calls == [None, 120]


def test_data_folder_defaults(monkeypatch, tmp_path):
    from studio.ui import workspace

    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "here"))
    assert workspace.default_data_dir() == tmp_path / "here"
    monkeypatch.delenv("STUDIO_DATA_DIR")
    spaces_data = tmp_path / "data"
    spaces_data.mkdir()
    monkeypatch.setattr(workspace, "SPACES_DATA", spaces_data)
    assert workspace.default_data_dir() == spaces_data / "studio"  # a Space's persistent storage
    monkeypatch.setattr(workspace, "SPACES_DATA", tmp_path / "absent")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert workspace.default_data_dir() == tmp_path / "xdg" / "studio"


# -- issue 12: the studio as a person uses it ----------------------------------------------------------------------
def test_errors_in_the_panels_speak_the_users_words():
    from studio.ui.common import user_words

    said = user_words("`storyboard[3]` has no narration and no duration_s: give it one or the other")
    assert said == "Scene 4 has no narration and no length: give it one or the other"
    said = user_words("scene 2 has no narration: write narration for scene 's77b341aa' or give it a visual_prompt")
    assert "s77b341aa" not in said and "visual prompt" in said and said.startswith("Scene 2")


def test_download_names_come_from_the_title_and_are_never_paths():
    from studio.ui.common import title_file

    assert title_file("How bees make honey: a lesson!") == "How-bees-make-honey-a-lesson.mp4"
    assert title_file("東京 の旅") == "東京-の旅.mp4"
    for hostile in ("../../etc/passwd", "/abs/x", "a\\b", "\x00x", "", "...."):
        name = title_file(hostile)
        assert "/" not in name and "\\" not in name and ".." not in name and name.endswith(".mp4"), name


def test_the_preview_picker_stays_on_the_picked_scene(studio, session):
    session, shown = written(studio, session)
    third = shown["scenes"][2]["id"]
    assert compose.show(shown, third)["scene"].value == third  # a redraw after Preview keeps scene 3
    assert compose.show(shown, "gone")["scene"].value == shown["scenes"][0]["id"]  # a deleted scene: the first


def test_the_preset_is_kept_with_the_project(studio, session):
    session, shown = written(studio, session)
    assert compose.show(shown)["preset"].value == "draft"
    said = compose.save_preset(studio, session, "standard", None)["estimate"]
    assert "on this machine" in said and "720x720" in said
    again = ui_app.restore(studio, session)["view"]  # a reload
    assert again["settings"]["preset"] == "standard" and compose.show(again)["preset"].value == "standard"
    with pytest.raises(StudioError, match="preset"):
        compose.save_preset(studio, session, "../maximum.toml", None)
    # A duplicate keeps it too.
    copy = projects.duplicate_project(studio, session, shown["id"], None)["view"]
    assert copy["settings"]["preset"] == "standard"


def test_every_tier_renders_from_the_app_and_a_limited_server_shows_why_not(studio, tmp_path):
    from studio.server import Limits

    # `python app.py`: 4K frames are within its runner's limits, so Maximum is offered at every aspect.
    assert studio.limits.max_pixels >= 3840 * 2160
    assert [name for _, name in compose.preset_choices(studio.limits, "16:9")] == ["draft", "standard", "premium",
                                                                                   "maximum"]
    # A server limited to 1080p frames (`studio serve`'s default) never offers it, and says why.
    limited = Limits()
    assert "maximum" not in [name for _, name in compose.preset_choices(limited, "1:1")]
    table = compose.preset_table("1:1", limited)
    assert "~~Maximum~~" in table and "over this server's limit of 2,073,600 pixels" in table
    fake_view = {"aspect": "1:1", "scenes": [{"id": "s1"}], "seconds": 4.0}
    assert "unavailable" in compose.estimate_md(fake_view, "maximum", limited)
    assert "about" in compose.estimate_md(fake_view, "maximum", studio.limits)


def test_a_blank_scene_does_not_block_narrate_all_and_render_says_which(studio, session):
    session, shown = written(studio, session, source="# Blank\n\nThe first scene.\n\nThe second scene.")
    project = studio.project(session, None)
    studio.save(project.insert_scene(project.scenes[0].id), session, None)  # a blank scene 2
    result = voice.narrate_all(studio, session, "espeak", "", "draft", None, None)
    scenes = result["view"]["scenes"]
    assert [bool(s["audio"]) for s in scenes] == [True, False, True]
    assert "Scene 2 is empty: write its narration or delete it" in result["status"]
    card = voice.cards(result["view"])[1]
    assert card["empty"] and "empty" in card["length"] and "silent" not in card["length"]
    refused = compose.render(studio, session, "draft", "espeak", "cards", None)
    assert "data-state='refused'" in refused["progress"] and "Scene 2 is empty" in refused["progress"]
    assert "storyboard[" not in refused["progress"] and "duration_s" not in refused["progress"]
    assert refused["session"]["job"] is None and refused["download"].visible is False
    assert studio.runner.list(f"guest-{GUEST}") == []  # nothing was queued


def test_make_the_video_writes_and_renders_and_the_project_takes_the_work_back(studio, session):
    started = brief.make_video(studio, session, "# Rain\n\nRain falls on the hills.\n\nRivers carry it home.", "",
                               "", "16:9", "en", 0, "", "auto", "script", "draft", "espeak", "cards", None, None)
    assert started["tabs"].selected == "compose" and started["tab"] == "compose"
    session = started["session"]
    assert session["job"] and session["project"] == started["view"]["id"]
    assert not any(s["audio"] for s in started["view"]["scenes"])  # the job narrates, not the click
    done = _wait_job(studio, session)
    assert "data-state='done'" in done["progress"]
    after = done["view"]  # the panels redraw with what the job made
    assert all(s["audio"] and s["visual"] for s in after["scenes"])
    assert all(Path(s["audio"]).parent == studio.workspace.projects / after["id"] / "assets" for s in after["scenes"])
    assert after["last"]["job"] == session["job"] and after["last"]["preset"] == "draft"
    facts = video_facts(Path(after["last"]["path"]))
    assert (facts["width"], facts["height"]) == (854, 480) and facts["has_audio"]
    # Narrating now reuses the job's narration: nothing is spoken again.
    again = voice.narrate_all(studio, session, "espeak", "", "draft", None, None)["view"]
    assert [s["audio"] for s in again["scenes"]] == [s["audio"] for s in after["scenes"]]


def test_uploads_are_named_as_the_user_named_them(studio, session, make_tone, make_image):
    session, shown = written(studio, session)
    tone = make_tone("Morning theme.wav", duration_s=1.0)
    shown = compose.set_music(studio, session, uploaded(tone), None)["view"]
    assert shown["music"] != "Morning theme.wav" and shown["music"].endswith(".wav")  # the server's own name
    assert compose.show(shown)["music_note"] == "Music: `Morning theme.wav`"
    logo = make_image("our <logo>.png", (64, 64))
    shown = compose.set_watermark(studio, session, uploaded(logo), None)["view"]
    assert compose.show(shown)["watermark_note"] == "Watermark: `our &lt;logo&gt;.png`"  # escaped, never markup
    photo = make_image("beach.png", (320, 240))
    target = shown["scenes"][0]["id"]
    shown = visuals.use_media(studio, session, target, uploaded(photo), "draft", None)["view"]
    assert visuals.scene_fields(shown, target)["media_note"] == "Uses your file `beach.png`."


def test_on_zerogpu_the_model_steps_run_in_gpu_calls_before_the_cpu_job(studio, session, monkeypatch):
    """On a ZeroGPU Space a job thread has no GPU: Render narrates and paints in `spaces.GPU` calls sized from the
    work (here with a model cost given to the offline providers), and the job composes, reusing all of it."""
    from studio import zerogpu

    from .test_zerogpu import FakeSpaces

    session, shown = written(studio, session, source="# Calls\n\nOne.\n\nTwo.\n\nThree.")
    fake = FakeSpaces()
    monkeypatch.setattr(zerogpu, "on_zerogpu", lambda environ=None: True)
    monkeypatch.setattr(zerogpu, "costs_for", lambda preset, narrator, painter, catalog=None, **kw: [
        zerogpu.StepCost("narrator" if narrator != "espeak" else "painter", 50.0, 20.0)])  # 2 scenes a call fit
    monkeypatch.setattr(zerogpu, "MAX_CALL_S", 150.0)
    monkeypatch.setenv("STUDIO_ZEROGPU_MAX_S", "150")
    import studio.ui.compose as compose_module

    original = compose_module.model_steps_on_zerogpu
    monkeypatch.setattr(compose_module, "model_steps_on_zerogpu",
                        lambda *a, **k: original(*a, spaces_module=fake, **k))
    started = compose.render(studio, session, "draft", "espeak", "cards", None)
    ids = [s["id"] for s in shown["scenes"]]
    assert fake.calls == [ids[:2], ids[2:], ids[:2], ids[2:]]  # narration in two calls, then the pictures in two
    assert all(0 < d <= 150 for d in fake.durations)
    done = _wait_job(studio, started["session"])
    assert "data-state='done'" in done["progress"]
    job = studio.runner.get(started["session"]["job"], f"guest-{GUEST}")
    assert {steps["narrate"] for steps in job.scenes.values()} == {"reused"}  # the GPU calls made it all
    assert {steps["illustrate"] for steps in job.scenes.values()} == {"reused"}


def test_the_models_panel_refuses_what_it_must(studio, session):
    """Model names from a request are catalogue names only (never paths); a server that does not allow downloads
    refuses every download, delete and setting change; a choice of narrator or painter is a known name."""
    from studio.downloads import Downloads
    from studio.ui import models

    from .test_downloads import FakePull

    pull = FakePull()
    pull.release.set()
    studio.downloads = Downloads(pull=pull)
    studio.allow_downloads = True
    for forged in ("../../etc/passwd", "/root/.cache/huggingface", "x" * 5000, ""):
        with pytest.raises(StudioError) as caught:
            models.download(studio, forged)
        assert len(str(caught.value)) < 600  # the name is quoted short, never echoed whole
    with pytest.raises(StudioError, match="preset"):
        models.download_preset(studio, "../draft.toml")
    assert pull.calls == []
    studio.allow_downloads = False
    for action, value in ((models.download, "sd-turbo"), (models.delete, "sd-turbo"), (models.set_first_use, True),
                          (models.download_preset, "draft")):
        with pytest.raises(StudioError, match="downloads are off on this server"):
            action(studio, value)
    assert pull.calls == [] and studio.download_first_use is False
    session, _ = written(studio, session)
    with pytest.raises(StudioError, match="narrator"):
        compose.save_choice(studio, session, narrator="../../bin/sh", request=None)


def test_with_download_on_first_use_the_app_fetches_a_missing_model_before_it_renders(studio, session, monkeypatch):
    """The app's setting on: Render starts the download of the painter auto would use (sd-turbo for Draft here) in
    the Models panel's background and says to render again when it is done; nothing is queued meanwhile."""
    from studio.downloads import Downloads

    from .test_downloads import FakePull, wait

    monkeypatch.setenv("HF_HUB_CACHE", str(studio.workspace.root / "empty-hub-cache"))
    pull = FakePull()
    pull.release.set()
    studio.downloads, studio.allow_downloads, studio.download_first_use = Downloads(pull=pull), True, True
    session, _ = written(studio, session)
    refused = compose.render(studio, session, "draft", "espeak", "auto", None)
    assert "downloading sd-turbo first" in refused["progress"].lower() and refused["session"]["job"] is None
    wait(lambda: pull.calls == ["sd-turbo"])
    assert studio.runner.list(f"guest-{GUEST}") == []
    # A painter named by the user (an offline one) needs no download: the render goes ahead.
    started = compose.render(studio, session, "draft", "espeak", "cards", None)
    assert started["session"]["job"]


def test_a_voice_card_takes_your_recording_and_gives_the_scene_back_to_the_narrator(studio, session, tmp_path,
                                                                                    make_image):
    from studio.testing import make_recording

    session, shown = written(studio, session)
    target = shown["scenes"][1]["id"]
    text = "The hive keeps warm in winter."
    take = make_recording(tmp_path / "my take.wav", text, rate_wpm=100)
    out = voice.use_recording(studio, session, target, uploaded(take), text, "draft", None, None)
    scene = out["view"]["scenes"][1]
    assert scene["recording"].startswith("uploads/") and scene["recording_label"] == "my take.wav"
    assert (Path(out["view"]["folder"]) / scene["recording"]).is_file()  # kept in the project, under its own name
    assert out["status"].startswith("✓ Scene 2 uses your recording, ") and f"{scene['audio_s']:.1f} s" in out["status"]
    card = voice.cards(out["view"])[1]
    assert card["recorded"] and card["length"] == f"your recording, {scene['audio_s']:.1f} s"
    assert scene["audio_s"] > 2.0 and Path(card["audio"]).is_file()
    assert [s["audio"] for s in out["view"]["scenes"]][::2] == [None, None]  # only that scene was made
    recorded = scene["audio"]

    # Narrate all: the recorded scene is kept as it is, the others are spoken, the status line counts it.
    everything = voice.narrate_all(studio, session, "espeak", "", "draft", None, None)
    assert "(1 with your own recording)" in everything["status"]
    assert everything["view"]["scenes"][1]["audio"] == recorded
    assert all(s["audio"] for s in everything["view"]["scenes"])

    # A file that did not come through the upload route, a picture and a non-audio file are refused; nothing changes.
    with pytest.raises(StudioError, match="upload button"):
        voice.use_recording(studio, session, target, str(take), text, "draft", None, None)
    with pytest.raises(StudioError, match="audio file"):
        voice.use_recording(studio, session, target, uploaded(make_image("x.png")), text, "draft", None, None)
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio at all\n" * 40)
    with pytest.raises(StudioError):
        voice.use_recording(studio, session, target, uploaded(fake), text, "draft", None, None)
    with pytest.raises(StudioError, match="no project"):  # another browser reaches none of it
        voice.use_recording(studio, {"guest": OTHER, "project": session["project"]}, target, uploaded(take), text,
                            "draft", None, None)
    project = studio.project(session, None)
    assert project.scene(target).recording == scene["recording"] and str(project.scene(target).audio) == recorded
    assert sorted(p.name for p in (project.folder / "uploads").glob("*.wav")) == [Path(scene["recording"]).name]

    # "Use the narrator instead": the narrator speaks the scene's text again.
    back = voice.clear_recording(studio, session, target, text, "espeak", "", "draft", None, None)
    again = back["view"]["scenes"][1]
    assert again["recording"] is None and again["audio"] and again["audio"] != recorded
    assert not voice.cards(back["view"])[1]["recorded"] and back["status"].startswith("✓ Narrated scene 2")


def test_the_app_renders_a_scene_narrated_only_by_a_recording(studio, session, tmp_path):
    """A recorded scene without text renders through the job runner: the job's seeded project keeps the recording
    (its own copy, not the upload's id), and the job processes it when the project's assets lack it."""
    from studio.project import Project
    from studio.testing import make_recording

    session, shown = written(studio, session, source="# Dawn\n\nThe sun rises.\n\nBirds begin to sing.")
    target = shown["scenes"][1]["id"]
    take = make_recording(tmp_path / "birds.wav", "Listen: the birds begin to sing.", rate_wpm=110)
    shown = voice.use_recording(studio, session, target, uploaded(take), "", "draft", None, None)["view"]
    recorded = shown["scenes"][1]
    assert recorded["narration"] == "" and recorded["audio_s"] > 2.0
    assert voice.cards(shown)[1]["length"] == f"your recording, {recorded['audio_s']:.1f} s (no text: no captions)"
    for made in Path(shown["folder"], "assets").glob(f"{Path(recorded['audio']).stem}*"):
        made.unlink()  # the job must make it again from the recording itself
    started = compose.render(studio, session, "draft", "espeak", "cards", None)
    done = _wait_job(studio, started["session"])
    assert "done" in done["progress"], done["progress"]
    job = studio.runner.get(started["session"]["job"], f"guest-{GUEST}")
    assert job.scenes[target]["narrate"] == "made"
    rendered = Project.load(job.project_dir)
    assert rendered.scene(target).audio_duration_s == pytest.approx(recorded["audio_s"], abs=0.01)
    facts = video_facts(Path(compose.show(done["view"])["video"].value["path"]))
    assert facts["has_audio"] and facts["duration_s"] > recorded["audio_s"] + 1.0


def test_a_recording_is_only_ever_a_file_uploaded_to_the_project(studio, session, tmp_path):
    session, shown = written(studio, session)
    bad = tmp_path / "bad.csv"
    bad.write_text("narration,recording\nHello there.,/etc/passwd\n")
    with pytest.raises(StudioError, match="not a file uploaded"):
        storyboard.import_storyboard(studio, session, uploaded(bad), None)
    frame = storyboard.table(shown)
    assert list(frame.columns)[-1] == "recording"
    frame.loc[1, "recording"] = "../../../some/take.wav"
    with pytest.raises(StudioError, match="recording in the Voice panel"):
        storyboard.apply_table(studio, session, frame, None)
    project = studio.project(session, None)
    rows = endpoints.describe(project)["scenes"]
    with pytest.raises(StudioError, match="not a file uploaded"):  # what the API's /edit_storyboard checks
        storyboard.check_media(studio, project, endpoints.storyboard_rows(project, [{**rows[0], "recording": "/etc/passwd"}]))
    assert all(s.recording is None for s in studio.project(session, None).scenes)  # nothing changed
    # A row the API gives back without `recording` keeps the scene's own.
    kept = project.edit_scene(rows[0]["id"], recording="uploads/" + "a" * 32 + ".wav")
    back = endpoints.storyboard_rows(kept, [{k: v for k, v in rows[0].items() if k != "recording"}])
    assert back[0]["recording"] == "uploads/" + "a" * 32 + ".wav"
