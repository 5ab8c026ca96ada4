"""The data model: Project / Scene round-trips (JSON, CSV, DataFrame, JSON storyboard), edits, bad rows, atomic save."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from studio import Project, Scene, StudioError, WordTiming
from studio.project import PROJECT_FILE, STORYBOARD_COLUMNS

NARRATION_2 = 'Commas, "quotes", 50% {braces} [brackets] \\ back\nand a new line; done: ok.'


def make_project(folder: Path | None = None) -> Project:
    """A project with assets inside its folder (audio, visual), one user media file and one outside path."""
    assets = (folder or Path("/nowhere")) / "assets"
    scenes = (
        Scene(id="intro", narration="Hello there.", visual_prompt="sunrise, hills", duration_s=None, seed=3,
              audio=assets / "a1.wav", audio_duration_s=1.25,
              words=(WordTiming("Hello", 0.0, 0.4), WordTiming("there.", 0.45, 1.1)), visual=assets / "v1.png"),
        Scene(id="s-two_2", narration=NARRATION_2, visual_prompt="quotes, braces", duration_s=4.5, seed=0,
              media="clips/my clip.mp4", transition="wipe", audio=assets / "a2.wav", audio_duration_s=3.0,
              words=(WordTiming("Commas,", 0.0, 0.5),), visual=Path("/elsewhere/outside.png")),
        Scene(id="s3", narration="The end.", visual_prompt="", seed=9),
    )
    return Project(title="Round Trip", scenes=scenes, brief="a brief", style="flat pastel", aspect="9:16",
                   language="en-GB", voice="joe", music=None, music_volume=0.2, captions=False, caption_style="boxed",
                   seed=42, notes=("storyboard: rules: test",))


# -- JSON ------------------------------------------------------------------------------------------------------------

def test_project_json_round_trip_with_relative_asset_paths(tmp_path):
    folder = tmp_path / "proj"
    project = make_project(folder)
    saved = project.save(folder)
    assert saved.folder == folder and (folder / "assets").is_dir() and (folder / "renders").is_dir()

    data = json.loads((folder / PROJECT_FILE).read_text("utf-8"))
    first, second = data["scenes"][0], data["scenes"][1]
    assert first["audio"] == "assets/a1.wav" and first["visual"] == "assets/v1.png"  # relative inside the folder
    assert second["visual"] == "/elsewhere/outside.png"  # outside stays absolute
    assert second["narration"] == NARRATION_2
    assert first["words"] == [["Hello", 0.0, 0.4], ["there.", 0.45, 1.1]]

    loaded = Project.load(folder)
    assert loaded == project  # every compared field, scenes included
    assert loaded.folder == folder and loaded.notes == project.notes
    assert loaded.scenes[0].audio == folder / "assets" / "a1.wav"
    assert loaded.scenes[1].media == "clips/my clip.mp4" and loaded.scenes[1].transition == "wipe"
    assert loaded.scenes[0].words[1] == WordTiming("there.", 0.45, 1.1)

    # The folder can move: paths follow it.
    moved = tmp_path / "moved"
    folder.rename(moved)
    again = Project.load(moved)
    assert again.scenes[0].visual == moved / "assets" / "v1.png"
    assert [s.id for s in again.scenes] == ["intro", "s-two_2", "s3"]


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(StudioError, match="not a Studio project"):
        Project.load(tmp_path)
    (tmp_path / PROJECT_FILE).write_text("{not json", "utf-8")
    with pytest.raises(StudioError, match="not valid JSON"):
        Project.load(tmp_path)
    (tmp_path / PROJECT_FILE).write_text(json.dumps({"format": 99, "title": "x", "scenes": []}), "utf-8")
    with pytest.raises(StudioError, match="format 99"):
        Project.load(tmp_path)
    (tmp_path / PROJECT_FILE).write_text(json.dumps({"title": "x", "scenes": [{"narration": "a", "duration_s": "long"}]}))
    with pytest.raises(StudioError, match="duration_s"):
        Project.load(tmp_path)


def test_save_without_folder_and_bad_project_fields():
    with pytest.raises(StudioError, match="`folder` is required"):
        make_project().save()
    with pytest.raises(StudioError, match="`aspect`"):
        replace(make_project(), aspect="4:3")
    with pytest.raises(StudioError, match="`music_volume`"):
        replace(make_project(), music_volume=1.5)
    with pytest.raises(StudioError, match="no folder yet"):
        _ = make_project().assets_dir


# -- atomic save -------------------------------------------------------------------------------------------------------

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in (PROJECT_FILE, "assets", "renders"))


def test_save_is_atomic_when_serialisation_fails(tmp_path, monkeypatch):
    folder = tmp_path / "p"
    make_project(folder).save(folder)
    before = (folder / PROJECT_FILE).read_bytes()
    edited = make_project(folder).edit_scene("s3", narration="Changed.")

    def broken(self):
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(Project, "to_json", broken)
    with pytest.raises(RuntimeError):
        edited.save(folder)
    assert (folder / PROJECT_FILE).read_bytes() == before
    assert _leftovers(folder) == []


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    import studio.assets

    folder = tmp_path / "p"
    make_project(folder).save(folder)
    before = (folder / PROJECT_FILE).read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(studio.assets.os, "fsync", full_disk)
    with pytest.raises(OSError):
        make_project(folder).edit_scene("s3", narration="Changed.").save(folder)
    assert (folder / PROJECT_FILE).read_bytes() == before  # the old file is whole
    assert _leftovers(folder) == []  # the temporary file is gone
    monkeypatch.undo()
    saved = make_project(folder).edit_scene("s3", narration="Changed.").save(folder)
    assert Project.load(folder).scene("s3").narration == "Changed." and _leftovers(folder) == []
    assert saved.scene("s3").narration == "Changed."


# -- storyboard tables -----------------------------------------------------------------------------------------------

def storyboard(project: Project) -> list[tuple]:
    return [(s.id, s.narration, s.visual_prompt, s.duration_s, s.seed, s.media, s.transition) for s in project.scenes]


def test_csv_round_trip(tmp_path):
    project = make_project(tmp_path)
    path = tmp_path / "board.csv"
    project.to_csv(path)
    header = path.read_text("utf-8").splitlines()[0]
    assert header == ",".join(STORYBOARD_COLUMNS)
    back = Project.read_storyboard(path)
    assert storyboard(back) == storyboard(project)
    assert back.title == "Board"  # from the file name
    assert all(s.audio is None and s.visual is None for s in back.scenes)  # a CSV holds no assets
    assert Project.read_storyboard(path, title="Mine", aspect="1:1").aspect == "1:1"


def test_csv_with_only_some_columns_and_blank_cells(tmp_path):
    path = tmp_path / "mini.csv"
    # As spreadsheets save it: a byte-order mark, and only the columns the user cared about.
    path.write_bytes('\ufeffnarration,duration_s,seed\n"One, two.",,\nThree.,2.5,7\n'.encode("utf-8"))
    project = Project.read_storyboard(path)
    assert [(s.narration, s.duration_s, s.seed) for s in project.scenes] == [("One, two.", None, 0), ("Three.", 2.5, 7)]
    assert len({s.id for s in project.scenes}) == 2  # ids are made for rows without one


def test_dataframe_round_trip_keeps_assets():
    project = make_project(Path("/p"))
    frame = project.to_dataframe()
    assert list(frame.columns) == list(STORYBOARD_COLUMNS) and len(frame) == 3
    back = project.with_storyboard(frame)
    assert back == project  # same scenes, assets included


def test_editing_one_row_drops_only_that_scenes_dependent_assets():
    project = make_project(Path("/p"))
    frame = project.to_dataframe()
    frame.loc[frame["id"] == "intro", "narration"] = "Hello again."
    edited = project.with_storyboard(frame)
    intro = edited.scene("intro")
    assert intro.narration == "Hello again."
    assert intro.audio is None and intro.words == () and intro.audio_duration_s is None  # narration changed
    assert intro.visual == project.scene("intro").visual  # the picture does not depend on the narration
    assert edited.scene("s-two_2") == project.scene("s-two_2") and edited.scene("s3") == project.scene("s3")

    frame = project.to_dataframe()
    frame.loc[frame["id"] == "s-two_2", "visual_prompt"] = "a new picture"
    edited = project.with_storyboard(frame)
    two = edited.scene("s-two_2")
    assert two.visual is None and two.audio == project.scene("s-two_2").audio  # only the picture goes
    assert edited.scene("intro") == project.scene("intro")

    frame = project.to_dataframe()
    frame.loc[frame["id"] == "s3", "seed"] = 10
    assert project.with_storyboard(frame).scene("s3").seed == 10


def test_reorder_add_and_delete_rows():
    project = make_project(Path("/p"))
    frame = project.to_dataframe().iloc[[2, 0]].reset_index(drop=True)
    extra = pd.DataFrame([{"id": "", "narration": "A new scene.", "visual_prompt": "new", "duration_s": None, "seed": 1,
                           "media": None, "transition": None}])
    edited = project.with_storyboard(pd.concat([frame, extra], ignore_index=True))
    assert [s.id for s in edited.scenes][:2] == ["s3", "intro"]
    assert edited.scene("intro") == project.scene("intro")  # moved, not changed: assets kept
    new = edited.scenes[2]
    assert new.narration == "A new scene." and new.id not in {"s3", "intro", "s-two_2"} and new.seed == 1
    with pytest.raises(StudioError):
        edited.scene("s-two_2")  # deleted


def test_json_storyboard_round_trip(tmp_path):
    project = make_project(tmp_path)
    path = tmp_path / "board.json"
    project.write_storyboard_file(path)
    data = json.loads(path.read_text("utf-8"))
    assert all(s["audio"] is None and s["visual"] is None and s["words"] == [] for s in data["scenes"])
    back = Project.read_storyboard(path)
    assert storyboard(back) == storyboard(project)
    assert (back.title, back.aspect, back.style, back.voice) == ("Round Trip", "9:16", "flat pastel", "joe")

    listing = tmp_path / "list.json"
    listing.write_text(json.dumps(project.storyboard_records()), "utf-8")
    assert storyboard(Project.read_storyboard(listing)) == storyboard(project)
    csv_copy = tmp_path / "copy.csv"
    back.write_storyboard_file(csv_copy)
    assert storyboard(Project.read_storyboard(csv_copy)) == storyboard(project)


@pytest.mark.parametrize("row, needle", [
    ({"narration": "x", "duration_s": "long"}, "`duration_s` must be a number"),
    ({"narration": "x", "duration_s": 0.05}, "between 0.2 and 600"),
    ({"narration": "x", "duration_s": 601}, "between 0.2 and 600"),
    ({"narration": "x", "seed": "lucky"}, "`seed` must be a whole number"),
    ({"narration": "x", "colour": "red"}, "unknown column"),
    ({"narration": "x", "id": "bad id!"}, "id 'bad id!'"),
    ({"narration": "x", "id": "a" * 41}, "1-40 letters"),
])
def test_bad_rows_raise_studio_error_naming_the_row(row, needle):
    rows = [{"narration": "fine"}, row]
    with pytest.raises(StudioError) as info:
        Project.from_storyboard(rows)
    assert needle in str(info.value)
    assert "2" in str(info.value)  # the second row is named


def test_duplicate_ids_and_bad_tables():
    with pytest.raises(StudioError, match="unique.*dup"):
        Project.from_storyboard([{"id": "dup", "narration": "a"}, {"id": "dup", "narration": "b"}])
    with pytest.raises(StudioError, match="row 1"):
        Project.from_storyboard(["just a string"])
    with pytest.raises(StudioError, match="DataFrame or a list"):
        Project.from_storyboard("narration")
    with pytest.raises(StudioError, match="cannot edit"):
        make_project().scenes[0].edited(audio=Path("x.wav"))


def test_read_storyboard_file_errors(tmp_path):
    with pytest.raises(StudioError, match="does not exist"):
        Project.read_storyboard(tmp_path / "none.csv")
    odd = tmp_path / "board.xlsx"
    odd.write_bytes(b"PK")
    with pytest.raises(StudioError, match=r"\.csv or \.json"):
        Project.read_storyboard(odd)
    no_narration = tmp_path / "cols.csv"
    no_narration.write_text("id,text\na,b\n", "utf-8")
    with pytest.raises(StudioError, match="no `narration` column"):
        Project.read_storyboard(no_narration)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{", "utf-8")
    with pytest.raises(StudioError, match="not valid JSON"):
        Project.read_storyboard(bad_json)
    empty = tmp_path / "empty.csv"
    empty.write_text("", "utf-8")
    with pytest.raises(StudioError, match="empty.csv"):
        Project.read_storyboard(empty)


def test_scene_editing_methods_return_new_projects():
    """insert, delete, move and split keep every other scene (and its id, so its assets) as it was."""
    from studio.errors import StudioError

    scenes = (Scene(id="a", narration="One. Two words here. Three more words now.", visual_prompt="sea", seed=4,
                    duration_s=9.0),
              Scene(id="b", narration="Bee.", visual_prompt="hive"),
              Scene(id="c", narration="Sea.", visual_prompt="wave"))
    project = Project(title="T", scenes=scenes)

    inserted = project.insert_scene("a")
    assert [s.id for s in inserted.scenes][0::2] == ["a", "b"] and len(inserted.scenes) == 4
    assert inserted.scenes[1].narration == "" and project.scenes == scenes  # the original is untouched
    assert project.insert_scene(None).scenes[1:] == scenes
    with pytest.raises(StudioError, match="no scene 'zz'"):
        project.insert_scene("zz")

    assert [s.id for s in project.delete_scene("b").scenes] == ["a", "c"]
    with pytest.raises(StudioError, match="at least one scene"):
        Project(title="T", scenes=scenes[:1]).delete_scene("a")

    assert [s.id for s in project.move_scene("c", -1).scenes] == ["a", "c", "b"]
    assert [s.id for s in project.move_scene("a", 1).scenes] == ["b", "a", "c"]
    with pytest.raises(StudioError, match="already the first"):
        project.move_scene("a", -1)

    split = project.split_scene("a")
    first, second = split.scenes[:2]
    assert first.id == "a" and second.id not in {"a", "b", "c"} and split.scenes[2:] == scenes[1:]
    assert f"{first.narration} {second.narration}" == scenes[0].narration
    assert first.duration_s + second.duration_s == pytest.approx(9.0) and second.seed == 5
    with pytest.raises(StudioError, match="single sentence"):
        project.split_scene("b")


def test_atomic_writes_give_files_the_usual_mode_not_mkstemps_0600(tmp_path):
    """A finished video or asset is written through a temporary file (mkstemp makes it 0600); once renamed it has the
    mode any file this process creates gets (0666 less the umask), so others the umask allows can read it."""
    import os
    import stat

    from studio.assets import atomic_path, atomic_write_bytes

    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    with atomic_path(tmp_path / "kept.bin") as tmp:  # a mode the caller chose on purpose stays
        tmp.write_bytes(b"x")
        os.chmod(tmp, 0o640)
    assert stat.S_IMODE((tmp_path / "kept.bin").stat().st_mode) == 0o640
