"""Custom caption fonts: the project field and its JSON round trip, clear errors for files that are not fonts, real
renders whose burned-in captions change with the font (measured in decoded pixels), and segment keys that follow the
font's bytes. Every font is a copy of one installed by the set-up (DejaVu, from fonts-dejavu-core)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from studio.testing import uploaded

from studio import Project, StudioError, load_preset, make_video
from studio.compose import build_timeline, compose
from studio.compose.captions import caption_layout, text_width
from studio.compose.segments import plan_segments
from studio.fonts import FONT_MAX_BYTES, FontError, font_path, inspect_font, read_font
from tests.test_compose import frame_at, ink_box, scene_of  # noqa: F401  (scene_of is a fixture)

DRAFT = load_preset("draft")


def installed_font(name: str) -> Path:
    """An installed DejaVu face beside the bundled DejaVu Sans (fonts-dejavu-core ships Sans, Sans Mono and Serif)."""
    path = font_path("regular").parent / name
    if not path.is_file():
        found = next(iter(Path("/usr/share/fonts").rglob(name)), None) if Path("/usr/share/fonts").is_dir() else None
        if found is None:
            pytest.skip(f"{name} is not installed (scripts/setup.sh installs fonts-dejavu-core)")
        path = found
    return path


@pytest.fixture
def mono_font(tmp_path) -> Path:
    """DejaVu Sans Mono, copied under a name full of characters a filter string would choke on."""
    target = tmp_path / "fonts in, here" / "my font [v2]; it's:mono.ttf"
    target.parent.mkdir()
    shutil.copyfile(installed_font("DejaVuSansMono.ttf"), target)
    return target


@pytest.fixture
def png_as_ttf(tmp_path, make_image) -> Path:
    fake = tmp_path / "fake.ttf"
    shutil.copyfile(make_image("logo.png", (32, 32), (200, 0, 0)), fake)
    return fake


def test_caption_font_is_in_the_json_round_trip(tmp_path, mono_font):
    folder = tmp_path / "proj"
    (folder / "assets").mkdir(parents=True)
    inside = folder / "assets" / "caption.ttf"
    shutil.copyfile(mono_font, inside)
    saved = Project(title="t", scenes=(), caption_font=inside).save(folder)
    data = json.loads((folder / "project.json").read_text("utf-8"))
    assert data["caption_font"] == "assets/caption.ttf"  # relative to the project folder, like music and watermark
    assert Project.load(folder).caption_font == inside == saved.caption_font
    outside = Project(title="t", scenes=(), caption_font=mono_font).save(folder)
    assert json.loads((folder / "project.json").read_text("utf-8"))["caption_font"] == str(mono_font)
    assert Project.load(folder).caption_font == mono_font == outside.caption_font
    Project(title="t", scenes=()).save(folder)
    assert json.loads((folder / "project.json").read_text("utf-8"))["caption_font"] is None
    assert Project.load(folder).caption_font is None


def test_inspect_font_reads_facts_and_refuses_what_is_not_a_font(tmp_path, mono_font, png_as_ttf):
    facts = inspect_font(mono_font)
    assert (facts.family, facts.suffix, facts.bold) == ("DejaVu Sans Mono", ".ttf", False)
    assert facts.size_bytes == mono_font.stat().st_size and len(facts.sha256) == 64
    assert 1.0 < facts.line_ratio < 1.5
    assert inspect_font(installed_font("DejaVuSans-Bold.ttf")).bold
    with pytest.raises(FontError, match="not a TrueType or OpenType"):
        inspect_font(png_as_ttf)
    with pytest.raises(FontError, match="does not exist"):
        inspect_font(tmp_path / "missing.ttf")
    with pytest.raises(FontError, match="not a file"):
        inspect_font(tmp_path)
    broken = tmp_path / "broken.ttf"  # a TrueType signature, then garbage
    broken.write_bytes(b"\x00\x01\x00\x00" + bytes(range(256)) * 8)
    with pytest.raises(FontError, match="FreeType cannot read it"):
        inspect_font(broken)
    huge = tmp_path / "huge.ttf"
    with open(huge, "wb") as handle:  # sparse: no disk used
        handle.write(mono_font.read_bytes())
        handle.truncate(FONT_MAX_BYTES + 1)
    with pytest.raises(FontError, match="MB"):
        inspect_font(huge)
    with pytest.raises(StudioError, match=r"`caption_font` .*fake\.ttf: it is not a TrueType"):
        read_font(png_as_ttf)


def test_bad_caption_fonts_fail_before_any_work_naming_the_file(tmp_path, png_as_ttf, scene_of):
    for bad, why in ((png_as_ttf, "not a TrueType or OpenType font"), (tmp_path / "gone.ttf", "does not exist")):
        with pytest.raises(StudioError, match="caption_font") as caught:
            make_video("One short line.", output=tmp_path / "v.mp4", caption_font=bad)
        assert str(bad) in str(caught.value) and why in str(caught.value)
        assert not (tmp_path / "v.mp4").exists()
        with pytest.raises(StudioError, match="caption_font"):
            build_timeline(Project(title="t", scenes=(scene_of("a"),), caption_font=bad), DRAFT)
    # Without captions the font is not needed to lay out the video.
    build_timeline(Project(title="t", scenes=(scene_of("a"),), caption_font=png_as_ttf, captions=False), DRAFT)
    # The CLI says the same, with no traceback.
    out = subprocess.run([sys.executable, "-m", "studio", "render", "--brief", "A line.", "-o", str(tmp_path / "c.mp4"),
                          "--caption-font", str(png_as_ttf), "-q"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "caption_font" in out.stderr and "fake.ttf" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_caption_font_changes_the_burned_in_pixels(scene_of, tmp_path, mono_font):
    scene = scene_of("a", speech_s=2.0, words=("illicit", "little", "lilies"), colour=(60, 110, 60))
    default = compose(Project(title="t", scenes=(scene,)), DRAFT, tmp_path / "sans.mp4")
    custom = compose(Project(title="t", scenes=(scene,), caption_font=mono_font), DRAFT, tmp_path / "mono.mp4")
    assert custom.timeline.caption_layout.family == "DejaVu Sans Mono"
    assert default.timeline.caption_layout.family == "DejaVu Sans"
    event = custom.timeline.captions[0]
    assert event.lines == default.timeline.captions[0].lines == ("illicit little lilies",)
    t = (event.start_s + event.end_s) / 2
    sans, mono = frame_at(default.path, t).astype(int), frame_at(custom.path, t).astype(int)
    h = sans.shape[0]
    band = slice(int(h * 0.6), h)
    assert (np.abs(sans - mono) > 40)[band].mean() > 0.01  # different glyphs in the caption band
    assert np.abs(sans[: int(h * 0.5)] - mono[: int(h * 0.5)]).mean() < 1.0  # the same picture above it
    # Each render's ink is as wide as the text measured with its own font (and not with the other one).
    text = event.text
    for path, frame, own, other in ((default.path, sans, default, custom), (custom.path, mono, custom, default)):
        box = ink_box(frame[band].astype(np.uint8))
        width = box[2] - box[0]
        expected = text_width(own.timeline.caption_layout, text)
        wrong = text_width(other.timeline.caption_layout, text)
        assert abs(width - expected) < 0.05 * expected + 3 < abs(width - wrong), (path.name, width, expected, wrong)


def test_libass_draws_the_private_copy_of_a_font_no_system_font_provides(scene_of, tmp_path):
    """A monospaced font renamed to a family that exists nowhere else: had libass not loaded the work folder's copy, it
    would fall back to a proportional face, far narrower on these narrow letters."""
    ttLib = pytest.importorskip("fontTools.ttLib", reason="fontTools (with matplotlib) renames the test font's family")
    font = ttLib.TTFont(str(installed_font("DejaVuSansMono.ttf")))
    for record in font["name"].names:
        if record.nameID in (1, 4, 16):
            record.string = "Studio Test Mono"
        elif record.nameID == 6:
            record.string = "StudioTestMono"
    renamed = tmp_path / "upload-name.ttf"
    font.save(str(renamed))
    assert inspect_font(renamed).family == "Studio Test Mono"
    scene = scene_of("a", speech_s=2.0, words=("illicit", "little", "lilies"), colour=(90, 60, 60))
    result = compose(Project(title="t", scenes=(scene,), caption_font=renamed), DRAFT, tmp_path / "v.mp4")
    event = result.timeline.captions[0]
    gray = frame_at(result.path, (event.start_s + event.end_s) / 2)
    box = ink_box(gray[int(gray.shape[0] * 0.6):])
    width = box[2] - box[0]
    expected = text_width(result.timeline.caption_layout, event.text)
    size = (result.timeline.width, result.timeline.height)
    for fallback in (caption_layout("bold", size), caption_layout("plain", size)):
        wrong = text_width(fallback, event.text)
        assert abs(width - expected) < 0.05 * expected + 3 < abs(width - wrong), (width, expected, wrong)


def test_segment_keys_follow_the_font_bytes_not_its_path(scene_of, tmp_path, mono_font):
    scenes = (scene_of("a", speech_s=1.0), scene_of("b", speech_s=1.0))
    copy = tmp_path / "elsewhere.ttf"
    shutil.copyfile(mono_font, copy)

    def keys(**fields) -> list[str]:
        return [p.key for p in plan_segments(build_timeline(Project(title="t", scenes=scenes, **fields), DRAFT))]

    default, mono, moved = keys(), keys(caption_font=mono_font), keys(caption_font=copy)
    assert mono == moved  # the same bytes elsewhere: the segments are reused
    assert not set(default) & set(mono)  # another font: every captioned segment is rendered again
    serif = tmp_path / "serif.ttf"
    shutil.copyfile(installed_font("DejaVuSerif.ttf"), serif)
    assert not set(keys(caption_font=serif)) & set(mono)
    assert keys(captions=False) == keys(captions=False, caption_font=mono_font)


# -- uploads and jobs over HTTP ------------------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path):
    from tests.test_api import Api

    server = Api(tmp_path, cpu_slots=2)
    yield server
    server.close()


def test_font_uploads_are_checked_by_content_and_private(api, mono_font):
    from tests.test_api import png_bytes, tiny_job

    client = api["alice"]
    answer = client.post("/api/uploads", files={"file": ("../../evil name.ttf", mono_font.read_bytes(), "image/png")})
    assert answer.status_code == 201, answer.text
    font = answer.json()
    assert (font["kind"], font["format"], font["family"], font["name"]) == ("font", "truetype", "DejaVu Sans Mono",
                                                                             "evil name.ttf")
    stored = api.runner.uploads.path(api.runner.uploads.get("alice", font["id"]))
    assert stored.name == f"{font['id']}.ttf" and stored.read_bytes() == mono_font.read_bytes()
    # Found by content whatever its name.
    unnamed = client.post("/api/uploads", files={"file": ("blob", mono_font.read_bytes())}).json()
    assert unnamed["kind"] == "font"

    bad = {
        "png named .ttf": ("logo.ttf", png_bytes()),
        "text named .otf": ("x.otf", b"not a font at all " * 20),
        "truncated font": ("cut.ttf", mono_font.read_bytes()[:2000]),
        "font signature, garbage": ("g.bin", b"OTTO" + os.urandom(4000)),
    }
    for what, (name, data) in bad.items():
        answer = client.post("/api/uploads", files={"file": (name, data)})
        assert answer.status_code == 422, (what, answer.text)
        assert answer.json()["field"] == "file" and "font" in answer.json()["detail"], (what, answer.text)
        assert str(api.runner.data_dir) not in answer.text
    assert list(api.runner.uploads.folder("alice").glob(".*")) == []  # no temporary file left behind

    # A job may name only its owner's font, and only a font.
    image = client.post("/api/uploads", files={"file": ("i.png", png_bytes())}).json()
    assert image["kind"] == "image"
    wrong = client.post("/api/jobs", json=tiny_job(caption_font=image["id"]))
    assert wrong.status_code == 422 and wrong.json()["field"] == "caption_font"
    assert api["bob"].get(f"/api/uploads/{font['id']}").status_code == 404
    stolen = api["bob"].post("/api/jobs", json=tiny_job(caption_font=font["id"]))
    assert stolen.status_code == 404 and stolen.json()["field"] == "caption_font"
    malformed = client.post("/api/jobs", json=tiny_job(caption_font="../fonts/x.ttf"))
    assert malformed.status_code in (404, 422) and malformed.json()["field"] == "caption_font"


def test_font_upload_size_limit(tmp_path, mono_font):
    from studio.server.journal import Journal, TooLarge
    from studio.server.uploads import UploadLimits, UploadStore

    store = UploadStore(Journal(tmp_path / "data"), UploadLimits(max_font_bytes=mono_font.stat().st_size - 1))
    with pytest.raises(TooLarge, match="MB") as caught:
        store.save("alice", open(mono_font, "rb"), filename="f.ttf")
    assert caught.value.field == "file"


def test_a_job_with_a_caption_font_upload_renders_with_it(api, mono_font):
    from tests.test_api import tiny_job, wait_done
    from tests.test_compose import frame_at

    client = api["alice"]
    font = client.post("/api/uploads", files={"file": ("f.ttf", mono_font.read_bytes())}).json()["id"]
    words = "illicit lilies"
    jobs = {}
    for name, fields in (("sans", {}), ("mono", {"caption_font": font})):
        body = tiny_job((1.5,), **fields) | {"storyboard": [{"id": "s1", "narration": words, "duration_s": 1.5}],
                                               "aspect": "16:9"}
        jobs[name] = wait_done(client, client.post("/api/jobs", json=body).json()["id"])
        assert jobs[name]["state"] == "done", jobs[name]["error"]
    folder = api.runner.get(jobs["mono"]["id"]).project_dir
    project = Project.load(folder)
    assert project.caption_font == api.runner.uploads.path(api.runner.uploads.get("alice", font))
    assert project.captions and Project.load(api.runner.get(jobs["sans"]["id"]).project_dir).caption_font is None
    sans, mono = (frame_at(api.runner.video_path(jobs[n]["id"], "alice"), 0.75).astype(int) for n in ("sans", "mono"))
    h = sans.shape[0]
    assert (np.abs(sans - mono) > 40)[int(h * 0.5):].mean() > 0.01  # other glyphs in the caption band
    assert np.abs(sans[: int(h * 0.3)] - mono[: int(h * 0.3)]).mean() < 2.0  # the same card above it


# -- the studio app ------------------------------------------------------------------------------------------------------
def test_the_compose_panel_stores_checks_and_clears_the_caption_font(tmp_path, mono_font, png_as_ttf, make_image):
    pytest.importorskip("gradio")
    from studio.server.projects import seed_folder
    from studio.ui import app as ui_app, compose as panel
    from tests.test_ui_handlers import GUEST, written

    studio = ui_app.make_studio(tmp_path / "data")
    try:
        session, shown = written(studio, {"guest": GUEST, "project": None, "job": None})
        assert shown["caption_font"] is None and "DejaVu Sans" in panel.show(shown)["caption_font_note"]
        shown = panel.set_caption_font(studio, session, uploaded(mono_font))["view"]
        assert shown["caption_font"] == "DejaVu Sans Mono"
        assert panel.show(shown)["caption_font_note"] == "Caption font: `DejaVu Sans Mono`"
        project = studio.project(session, None)
        assert project.caption_font.parent == project.folder / "uploads" and project.caption_font.suffix == ".ttf"
        assert project.caption_font.read_bytes() == mono_font.read_bytes()
        assert Project.load(project.folder).caption_font == project.caption_font  # kept in project.json
        # A render job's seeded folder carries the font with it.
        seeded = seed_folder(project, tmp_path / "job")
        assert seeded.caption_font.parent == tmp_path / "job" / "uploads" and seeded.caption_font.is_file()

        # What is not a font is refused, and the font already chosen stays.
        with pytest.raises(StudioError, match="not a font"):
            panel.set_caption_font(studio, session, uploaded(png_as_ttf))
        with pytest.raises(StudioError, match="the caption font must be a font file"):
            panel.set_caption_font(studio, session, uploaded(make_image("logo.png", (32, 32), (9, 9, 9))))
        assert studio.project(session, None).caption_font == project.caption_font

        shown = panel.set_caption_font(studio, session, None)["view"]  # "No custom font"
        assert shown["caption_font"] is None and studio.project(session, None).caption_font is None
    finally:
        studio.runner.close()
