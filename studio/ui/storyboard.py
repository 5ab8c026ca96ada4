"""Panel 2, Storyboard: the scenes as an editable table; add, delete, reorder, split and rewrite scenes; import and
export CSV or JSON.

Every edit goes through `Project.with_storyboard` (or `Project.edit_scene`), so a scene keeps its narration and
visual while the fields they depend on are unchanged, and only what an edit touched is made again.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from ..errors import StudioError
from ..project import Project
from ..storyboard import rewrite_scene
from .common import GPU, Studio, accepted_upload, bind, gpu, named, notes_md, served, view

# The table's headers, in `studio.project.STORYBOARD_COLUMNS` order (CSV files keep the library's column names).
HEADERS = {"id": "id", "narration": "narration", "visual_prompt": "visual prompt", "duration_s": "duration (s)",
           "seed": "seed", "media": "media", "transition": "transition", "recording": "recording"}
DATATYPES = ["str", "str", "str", "number", "number", "str", "str", "str"]


def table(view_: dict | None):
    """The storyboard as the panel's DataFrame (empty cells for unset values)."""
    import pandas as pd

    rows = []
    for scene in (view_ or {}).get("scenes", []):
        rows.append([scene["id"], scene["narration"], scene["visual_prompt"],
                     scene["duration_s"] if scene["duration_s"] is not None else None, scene["seed"],
                     scene["media"] or "", scene["transition"] or "", scene.get("recording") or ""])
    return pd.DataFrame(rows, columns=list(HEADERS.values()))


def records(frame: Any) -> list[dict]:
    """The edited table back as storyboard records (library column names)."""
    import pandas as pd

    if frame is None:
        raise StudioError("the storyboard table is empty")
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame.get("data", []), columns=frame.get("headers")) if isinstance(frame, dict) else pd.DataFrame(frame)
    names = {v: k for k, v in HEADERS.items()}
    frame = frame.rename(columns=lambda c: names.get(str(c), str(c)))
    missing = [c for c in ("id", "narration") if c not in frame.columns]
    if missing:
        raise StudioError(f"the storyboard table needs the columns {', '.join(missing)}")
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [row for row in rows if any(v not in (None, "") for v in row.values())]  # the grid's blank new rows


def check_media(studio: Studio, project: Project, rows: list[dict]) -> None:
    """A scene's `media` and `recording` in the studio must be files uploaded to this project (Visuals and Voice
    panels), never a server path."""
    where = {"media": "image or clip in the Visuals panel", "recording": "recording in the Voice panel"}
    for i, row in enumerate(rows, start=1):
        for key, panel in where.items():
            media = row.get(key)
            if media not in (None, "") and not (isinstance(media, float) and media != media):
                try:
                    studio.workspace.upload_path(project, str(media).strip())
                except StudioError:
                    raise StudioError(f"scene {i}: `{key}` {media!r} is not a file uploaded to this project; upload "
                                      f"the scene's own {panel}") from None


def _scene_number(project: Project, number: Any) -> int:
    """A 1-based scene number from the panel, checked; returns the 0-based index."""
    try:
        n = int(number)
    except (TypeError, ValueError):
        raise StudioError(f"`scene` must be a scene number from 1 to {len(project.scenes)}, got {number!r}") from None
    if not 1 <= n <= len(project.scenes):
        raise StudioError(f"`scene` must be a scene number from 1 to {len(project.scenes)}, got {n}")
    return n - 1


def _saved(studio: Studio, project: Project, session: dict, request: gr.Request | None) -> dict:
    return {"view": view(studio.save(project, session, request))}


# -- functions --------------------------------------------------------------------------------------------------
def apply_table(studio: Studio, session: dict, frame: Any, request: gr.Request = None) -> dict:
    """Take the edited table as the storyboard (a changed narration drops only that scene's audio, and so on)."""
    project = studio.project(session, request)
    rows = records(frame)
    if not rows:
        raise StudioError("a storyboard needs at least one scene; add a row with narration")
    check_media(studio, project, rows)
    return _saved(studio, project.with_storyboard(rows), session, request)


def set_title(studio: Studio, session: dict, title: str, request: gr.Request = None) -> dict:
    project = studio.project(session, request)
    title = (title or "").strip()
    if not title:
        raise StudioError("`title` must not be empty")
    return _saved(studio, replace(project, title=title), session, request)


def add_scene(studio: Studio, session: dict, scene: Any, request: gr.Request = None) -> dict:
    """Insert an empty scene after scene number `scene` (0: at the start)."""
    project = studio.project(session, request)
    after = None if scene in (None, "", 0) else project.scenes[_scene_number(project, scene)].id
    project = project.insert_scene(after)
    return {**_saved(studio, project, session, request), "scene": 1 if after is None else _scene_number(project, scene) + 2}


def delete_scene(studio: Studio, session: dict, scene: Any, request: gr.Request = None) -> dict:
    project = studio.project(session, request)
    index = _scene_number(project, scene)
    project = project.delete_scene(project.scenes[index].id)
    return {**_saved(studio, project, session, request), "scene": min(index + 1, len(project.scenes))}


def move_scene(studio: Studio, session: dict, scene: Any, offset: int, request: gr.Request = None) -> dict:
    """Move scene number `scene` up (offset -1) or down (+1)."""
    project = studio.project(session, request)
    index = _scene_number(project, scene)
    project = project.move_scene(project.scenes[index].id, int(offset))
    return {**_saved(studio, project, session, request), "scene": index + int(offset) + 1}


def move_up(studio: Studio, session: dict, scene: Any, request: gr.Request = None) -> dict:
    return move_scene(studio, session, scene, -1, request)


def move_down(studio: Studio, session: dict, scene: Any, request: gr.Request = None) -> dict:
    return move_scene(studio, session, scene, 1, request)


def split_scene(studio: Studio, session: dict, scene: Any, request: gr.Request = None) -> dict:
    """Split a scene's narration in two at the sentence boundary nearest its middle (by words)."""
    project = studio.project(session, request)
    index = _scene_number(project, scene)
    project = project.split_scene(project.scenes[index].id)
    return {**_saved(studio, project, session, request), "scene": index + 1}


@gpu
def rewrite(studio: Studio, session: dict, scene: Any, field: str, instruction: str, writer: str, preset: str = "draft",
            request: gr.Request = None) -> dict:
    """Rewrite one scene's narration or visual prompt with the storyboard writer (an LLM follows `instruction`;
    the offline ``rules`` writer can only tidy the text), keeping every other scene and their assets."""
    project = studio.project(session, request)
    index = _scene_number(project, scene)
    rewritten = rewrite_scene(project, project.scenes[index].id, field=field, instruction=(instruction or "").strip(),
                              writer=writer or "auto", preset=studio.preset(preset))
    shown = _saved(studio, rewritten, session, request)["view"]
    return {"view": shown, "scene": index + 1, "notes": notes_md({**shown, "notes": shown["notes"][-1:]})}


def import_storyboard(studio: Studio, session: dict, file: str | None, request: gr.Request = None) -> dict:
    """Replace the scenes with a CSV or JSON storyboard (rows whose id matches a scene keep its assets)."""
    project = studio.project(session, request)
    if not file:
        raise StudioError("choose a .csv or .json storyboard file to import")
    path = accepted_upload(file)  # only a file uploaded through the page, never a server path
    imported = Project.read_storyboard(path)
    rows = imported.storyboard_records()
    if not rows:
        raise StudioError(f"{path.name} holds no scenes")
    check_media(studio, project, rows)
    return _saved(studio, project.with_storyboard(rows), session, request)


def export_storyboard(studio: Studio, session: dict, fmt: str, request: gr.Request = None) -> dict:
    """The storyboard as a CSV or JSON file to download."""
    project = studio.project(session, request)
    if fmt not in ("csv", "json"):
        raise StudioError(f"`fmt` must be csv or json, got {fmt!r}")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", project.title).strip("-").lower()[:60] or "storyboard"
    with tempfile.TemporaryDirectory(prefix="studio-export-") as tmp:
        path = Path(tmp) / f"{slug}.{fmt}"
        project.write_storyboard_file(path)
        return {"download": gr.File(served(path, studio.owner(session, request)), visible=True)}


def export_csv(studio: Studio, session: dict, request: gr.Request = None) -> dict:
    return export_storyboard(studio, session, "csv", request)


def export_json(studio: Studio, session: dict, request: gr.Request = None) -> dict:
    return export_storyboard(studio, session, "json", request)


OUTLINE_NOTE = "storyboard: the offline rules writer made an outline"


def notice(view_: dict | None) -> str:
    """What the user should know first about these scenes: an offline outline of a brief is the brief's own words,
    not a script, and there are three ways to a real one."""
    if not view_ or not any(n.startswith(OUTLINE_NOTE) for n in view_["notes"]):
        return ""
    return ("**These scenes are an outline made of your brief's own words, not a written script.** No storyboard "
            "writer (LLM) is connected, so Studio made one scene per key idea and invented nothing. Three ways to a "
            "real script:\n"
            "1. **Paste your script** in the Brief panel (one paragraph a scene) and write the storyboard again;\n"
            "2. **Edit the scenes here**: double-click a narration cell and type (only what you change is made again);\n"
            "3. **Connect an LLM**: an OpenAI-compatible server (Ollama, vLLM, LM Studio ...: set `OPENAI_BASE_URL` and "
            "`STUDIO_LLM_MODEL` before starting the studio) or a local model (`pip install '.[models]'`; "
            "`python -m studio doctor` lists the writers this machine can run, as does *Storyboard writers on this "
            "machine* in the Brief panel), then write it again or use *Rewrite this scene* below.")


def show(view_: dict | None) -> dict:
    if not view_:
        return {"table": table(None), "title": "", "scene": None, "notice": gr.Markdown("", visible=False)}
    said = notice(view_)
    return {"table": table(view_), "title": view_["title"], "notice": gr.Markdown(said, visible=bool(said)),
            "scene": gr.Number(maximum=max(1, len(view_["scenes"])))}


# -- layout -----------------------------------------------------------------------------------------------------
def layout(studio: Studio) -> SimpleNamespace:
    notice_md = gr.Markdown(elem_id="outline-notice", elem_classes=["studio-notice"], visible=False)
    title = gr.Textbox(label="Title", elem_id="project-title")
    frame = gr.Dataframe(table(None), headers=list(HEADERS.values()), datatype=DATATYPES, interactive=True,
                         wrap=True, static_columns=[0, 5, 7],
                         column_widths=["100px", "370px", "290px", "100px", "70px", "90px", "110px", "90px"],
                         show_row_numbers=True, label="Scenes: edit a cell, then press Enter or click elsewhere",
                         elem_id="storyboard-table", max_height=560)
    with gr.Row(equal_height=False, elem_classes=["scene-tools"]):
        scene = gr.Number(value=1, minimum=0, precision=0, label="Scene", info="click a row to pick it", min_width=170,
                          scale=1, elem_id="scene-number")
        add = gr.Button("Add after", size="sm", elem_id="add-scene", scale=1)
        up = gr.Button("Move up", size="sm", elem_id="move-up", scale=1)
        down = gr.Button("Move down", size="sm", elem_id="move-down", scale=1)
        split = gr.Button("Split in two", size="sm", elem_id="split-scene", scale=1)
        delete = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-scene", scale=1)
    with gr.Accordion("Rewrite this scene with the LLM", open=False):
        with gr.Row():
            field = gr.Radio([("narration", "narration"), ("visual prompt", "visual_prompt")], value="narration",
                             label="Rewrite")
            writer = gr.Dropdown(["auto", *studio.writers], value="auto", label="Writer",
                                 info="an LLM follows the instruction; rules (offline) only tidies the text")
        instruction = gr.Textbox(label="How", placeholder="e.g. shorter and friendlier; mention the bees by name")
        rewrite_btn = gr.Button("Rewrite scene", elem_id="rewrite-scene")
    with gr.Row():
        import_file = gr.UploadButton("Import CSV or JSON", file_types=[".csv", ".json"], size="sm")
        export_csv = gr.Button("Export CSV", size="sm")
        export_json = gr.Button("Export JSON", size="sm")
    download = gr.File(label="Exported storyboard", visible=False, interactive=False, elem_id="export-file")
    notes = gr.Markdown(elem_classes=["studio-notes"])
    return SimpleNamespace(notice=notice_md, title=title, table=frame, scene=scene, add=add, delete=delete, up=up, down=down, split=split,
                           field=field, writer=writer, instruction=instruction, rewrite=rewrite_btn,
                           import_file=import_file, export_csv=export_csv, export_json=export_json, download=download,
                           notes=notes)


# -- wiring -----------------------------------------------------------------------------------------------------
def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.storyboard
    light = dict(concurrency_limit=None, api_visibility="private")
    edits = {"view": ui.view, "scene": p.scene}

    fn, outputs = named(bind(apply_table, studio), {"view": ui.view})
    p.table.input(fn, inputs_kwargs=dict(session=ui.session, frame=p.table), outputs=outputs, show_progress="hidden", **light)
    fn, outputs = named(bind(set_title, studio), {"view": ui.view})
    p.title.submit(fn, inputs_kwargs=dict(session=ui.session, title=p.title), outputs=outputs, **light)
    p.title.blur(fn, inputs_kwargs=dict(session=ui.session, title=p.title), outputs=outputs, **light)
    # The scene tools' refusals (split a one-sentence scene, move the first one up) are warnings, so the Scene
    # number stays in sight to be changed.
    for button, handler in ((p.add, add_scene), (p.delete, delete_scene), (p.split, split_scene)):
        fn, outputs = named(bind(handler, studio), edits, soft=True)
        button.click(fn, inputs_kwargs=dict(session=ui.session, scene=p.scene), outputs=outputs, **light)
    for button, handler in ((p.up, move_up), (p.down, move_down)):
        fn, outputs = named(bind(handler, studio), edits, soft=True)
        button.click(fn, inputs_kwargs=dict(session=ui.session, scene=p.scene), outputs=outputs, **light)
    fn, outputs = named(bind(rewrite, studio), {**edits, "notes": p.notes})
    p.rewrite.click(fn, inputs_kwargs=dict(session=ui.session, scene=p.scene, field=p.field, instruction=p.instruction,
                                           writer=p.writer, preset=ui.compose.preset), outputs=outputs,
                    concurrency_id=GPU, concurrency_limit=1, api_visibility="private")
    fn, outputs = named(bind(import_storyboard, studio), {"view": ui.view})
    p.import_file.upload(fn, inputs_kwargs=dict(session=ui.session, file=p.import_file), outputs=outputs, **light)
    for button, handler in ((p.export_csv, export_csv), (p.export_json, export_json)):
        fn, outputs = named(bind(handler, studio), {"download": p.download})
        button.click(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)

    def pick(evt: gr.SelectData) -> int:
        return int(evt.index[0]) + 1  # clicking a row makes it the scene the buttons act on

    p.table.select(pick, None, p.scene, **light)
