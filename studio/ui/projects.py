"""Panel 6, Projects: the user's projects (open, duplicate, delete) and render jobs (state and output)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import gradio as gr

from ..errors import StudioError
from .common import Studio, bind, checked_session, named, view

PROJECT_HEADERS = ["title", "scenes", "changed", "id"]


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return dt.datetime.fromtimestamp(float(timestamp)).strftime("%Y-%m-%d %H:%M")


# -- functions --------------------------------------------------------------------------------------------------
def list_projects(studio: Studio, session: dict, request: gr.Request = None) -> dict:
    """The caller's projects, the most recently changed first."""
    import pandas as pd

    rows = [[p.title, p.scenes, _when(p.updated), p.id] for p in studio.workspace.list(studio.owner(session, request))]
    return {"projects": pd.DataFrame(rows, columns=PROJECT_HEADERS)}


def open_project(studio: Studio, session: dict, project_id: str, request: gr.Request = None) -> dict:
    """Make `project_id` the session's project (it must be the caller's)."""
    session = checked_session(session)
    if not project_id:
        raise StudioError("pick a project in the list first")
    project = studio.workspace.load(project_id, studio.owner(session, request))
    return {"session": {**session, "project": project_id, "job": None}, "view": view(project),
            "tabs": gr.Tabs(selected="storyboard")}


def duplicate_project(studio: Studio, session: dict, project_id: str, request: gr.Request = None) -> dict:
    """Copy a project (its assets are shared, not made again) and open the copy."""
    session = checked_session(session)
    if not project_id:
        raise StudioError("pick a project in the list first")
    copy = studio.workspace.duplicate(project_id, studio.owner(session, request))
    shown = view(copy)
    return {"session": {**session, "project": shown["id"], "job": None}, "view": shown,
            **list_projects(studio, session, request), "picked": shown["id"]}


def delete_project(studio: Studio, session: dict, project_id: str, request: gr.Request = None) -> dict:
    """Delete a project and its files; when it was open, the session has no project afterwards."""
    session = checked_session(session)
    if not project_id:
        raise StudioError("pick a project in the list first")
    studio.workspace.delete(project_id, studio.owner(session, request))
    result = {**list_projects(studio, session, request), "picked": "", "confirm": gr.Row(visible=False)}
    if session.get("project") == project_id:
        result.update(session={**session, "project": None, "job": None}, view=None)
    return result


def pick_project(projects, evt: gr.SelectData) -> dict:
    """Clicking a row picks its project for the buttons."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    try:
        return {"picked": str(projects.iloc[int(row)]["id"])}
    except (IndexError, KeyError, ValueError, AttributeError):
        return {}


# -- layout -----------------------------------------------------------------------------------------------------
def layout(studio: Studio) -> SimpleNamespace:
    import pandas as pd

    gr.Markdown("### Your projects")
    projects = gr.Dataframe(pd.DataFrame([], columns=PROJECT_HEADERS), interactive=False, elem_id="projects-table",
                            max_height=320, column_widths=["46%", "10%", "20%", "24%"])
    with gr.Row(equal_height=False, elem_classes=["tool-row"]):
        picked = gr.Textbox(label="Project (click a row)", interactive=False, scale=2, elem_id="picked-project")
        with gr.Column(scale=3):
            with gr.Row():
                refresh = gr.Button("Refresh", size="sm")
                open_btn = gr.Button("Open", size="sm", variant="primary", elem_id="open-project")
                duplicate = gr.Button("Duplicate", size="sm", elem_id="duplicate-project")
                delete = gr.Button("Delete…", size="sm", variant="stop", elem_id="delete-project")
    with gr.Row(visible=False) as confirm:
        gr.Markdown("Delete this project and all its files? This cannot be undone.")
        really = gr.Button("Yes, delete it", variant="stop", size="sm")
        keep = gr.Button("Keep it", size="sm")
    return SimpleNamespace(projects=projects, picked=picked, refresh=refresh, open=open_btn, duplicate=duplicate,
                           delete=delete, confirm=confirm, really=really, keep=keep)


# -- wiring -----------------------------------------------------------------------------------------------------
def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.projects
    light = dict(concurrency_limit=None, api_visibility="private")
    fn, outputs = named(bind(list_projects, studio), {"projects": p.projects})
    p.refresh.click(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)
    ui.projects_tab.select(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)
    fn, outputs = named(pick_project, {"picked": p.picked})
    p.projects.select(fn, inputs=[p.projects], outputs=outputs, **light)
    fn, outputs = named(bind(open_project, studio), {"session": ui.session, "view": ui.view, "tabs": ui.tabs})
    p.open.click(fn, inputs_kwargs=dict(session=ui.session, project_id=p.picked), outputs=outputs, **light)
    fn, outputs = named(bind(duplicate_project, studio), {"session": ui.session, "view": ui.view,
                                                          "projects": p.projects, "picked": p.picked})
    p.duplicate.click(fn, inputs_kwargs=dict(session=ui.session, project_id=p.picked), outputs=outputs, **light)
    p.delete.click(lambda: gr.Row(visible=True), None, p.confirm, **light)
    p.keep.click(lambda: gr.Row(visible=False), None, p.confirm, **light)
    fn, outputs = named(bind(delete_project, studio), {"session": ui.session, "view": ui.view, "projects": p.projects,
                                                       "picked": p.picked, "confirm": p.confirm})
    p.really.click(fn, inputs_kwargs=dict(session=ui.session, project_id=p.picked), outputs=outputs, **light)
