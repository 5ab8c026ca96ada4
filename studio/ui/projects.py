"""Panel 6, Projects: the user's projects (open, duplicate, delete) and render jobs (state and output)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import gradio as gr

from ..errors import StudioError
from . import rendering
from .common import Studio, bind, checked_session, named, served, shorten, title_file, view

PROJECT_HEADERS = ["title", "scenes", "changed", "id"]
JOB_HEADERS = ["started", "title", "preset", "state", "percent", "job"]


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


def list_all(studio: Studio, session: dict, request: gr.Request = None) -> dict:
    return {**list_projects(studio, session, request), **list_jobs(studio, session, request)}


def picked_md(studio: Studio, session: dict, project_id: str | None, request: gr.Request = None) -> str:
    """The picked project as the user knows it: title, scenes, when it changed (and whether it is the open one)."""
    if not project_id:
        return "Click a project in the list to pick it."
    owner = studio.owner(session, request)
    info = next((p for p in studio.workspace.list(owner) if p.id == project_id), None)
    if info is None:
        return "That project is no longer here."
    is_open = " · *open now*" if checked_session(session).get("project") == project_id else ""
    return f"**{_md(shorten(info.title, 80))}** · {info.scenes} scenes · changed {_when(info.updated)}{is_open}"


def _md(text: str) -> str:
    import html

    return html.escape(str(text)).replace("*", "\\*").replace("_", "\\_").replace("`", "\\`")


def show_picked(studio: Studio, session: dict, project_id: str, request: gr.Request = None) -> dict:
    return {"picked_note": picked_md(studio, session, project_id, request)}


def open_project(studio: Studio, session: dict, project_id: str, request: gr.Request = None) -> dict:
    """Make `project_id` the session's project (it must be the caller's)."""
    session = checked_session(session)
    if not project_id:
        raise StudioError("pick a project in the list first")
    project = studio.workspace.load(project_id, studio.owner(session, request))
    return {"session": {**session, "project": project_id, "job": None}, "view": view(project),
            "tabs": gr.Tabs(selected="storyboard"), "tab": "storyboard", "progress": _idle()}


def _idle() -> str:
    """The Compose panel's bar when another project opens (the previous one's render is not this one's)."""
    from .compose import progress_html

    return progress_html(None)


def duplicate_project(studio: Studio, session: dict, project_id: str, request: gr.Request = None) -> dict:
    """Copy a project (its assets are shared, not made again) and open the copy, saying so."""
    session = checked_session(session)
    if not project_id:
        raise StudioError("pick a project in the list first")
    copy = studio.workspace.duplicate(project_id, studio.owner(session, request))
    shown = view(copy)
    said = f"Made a copy, “{shorten(shown['title'], 60)}”, and opened it; the original stays in the list."
    gr.Info(said, title="Duplicated")
    session = {**session, "project": shown["id"], "job": None}
    return {"session": session, "view": shown, **list_projects(studio, session, request), "picked": shown["id"],
            "picked_note": picked_md(studio, session, shown["id"], request), "said": said, "progress": _idle()}


def ask_delete(studio: Studio, session: dict, project_id: str, request: gr.Request = None) -> dict:
    """The delete confirmation, naming the project it deletes."""
    if not project_id:
        raise StudioError("pick a project in the list first")
    project = studio.workspace.load(project_id, studio.owner(session, request))
    return {"confirm": gr.Row(visible=True),
            "confirm_note": f"Delete **{_md(shorten(project.title, 80))}** ({len(project.scenes)} scenes) and all "
                            "its files (narration, pictures, renders)? This cannot be undone."}


def delete_project(studio: Studio, session: dict, project_id: str, request: gr.Request = None) -> dict:
    """Delete a project and its files, saying which; when it was the open one, the most recently changed of the
    user's other projects opens instead (none when it was the last)."""
    session = checked_session(session)
    if not project_id:
        raise StudioError("pick a project in the list first")
    owner = studio.owner(session, request)
    title = studio.workspace.load(project_id, owner).title
    studio.workspace.delete(project_id, owner)
    said = f"Deleted “{shorten(title, 60)}”."
    result = {**list_projects(studio, session, request), "picked": "", "confirm": gr.Row(visible=False)}
    if session.get("project") == project_id:
        rest = studio.workspace.list(owner)
        if rest:
            session = {**session, "project": rest[0].id, "job": None}
            said += f" Opened “{shorten(rest[0].title, 60)}”, your most recently changed project."
            result.update(session=session, view=view(studio.workspace.load(rest[0].id, owner)), progress=_idle())
        else:
            said += " You have no other project: write a new storyboard in the Brief panel."
            result.update(session={**session, "project": None, "job": None}, view=None, progress=_idle())
    gr.Info(said, title="Deleted")
    return {**result, "said": said, "picked_note": picked_md(studio, session, None, request)}


def list_jobs(studio: Studio, session: dict, request: gr.Request = None) -> dict:
    """The caller's render jobs, newest first: state and progress."""
    import pandas as pd

    rows = []
    for job in studio.runner.list(studio.owner(session, request), limit=100):
        state = rendering.status(job)
        rows.append([_when(state["created_at"]), state["title"] or "", state["preset"], state["state"],
                     f"{state['percent']:.0f}%", job.id])
    return {"jobs": pd.DataFrame(rows, columns=JOB_HEADERS)}


def show_job(studio: Studio, session: dict, job_id: str, request: gr.Request = None) -> dict:
    """A job's outcome: its video and download when done, else its state and error."""
    if not job_id:
        raise StudioError("pick a job in the list first")
    owner = studio.owner(session, request)
    job = studio.runner.get(job_id, owner)
    state = rendering.status(job)
    if job.state == "done" and not job.expired:
        path = served(studio.runner.video_path(job.id, owner), owner, name=title_file(state["title"] or "video"))
        facts = state["video"] or {}
        note = (f"**done** · {facts.get('duration_s', 0):.1f} s · {facts.get('width')}x{facts.get('height')} · "
                f"{facts.get('encoder', '')} · {facts.get('size_bytes', 0) / 1e6:.2f} MB")
        return {"job_video": path, "job_download": gr.DownloadButton(value=path, visible=True), "job_note": note}
    note = f"**{state['state']}** · {state['percent']:.0f}%" + (f" · {state['error']}" if state["error"] else "")
    return {"job_video": None, "job_download": gr.DownloadButton(value=None, visible=False), "job_note": note}


def pick_job(jobs, evt: gr.SelectData) -> dict:
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    try:
        return {"picked_job": str(jobs.iloc[int(row)]["job"])}
    except (IndexError, KeyError, ValueError, AttributeError):
        return {}


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
        with gr.Column(scale=2):
            picked = gr.Textbox(label="Project (click a row)", interactive=False, visible=False, elem_id="picked-project")
            picked_note = gr.Markdown("Click a project in the list to pick it.", elem_id="picked-note")
        with gr.Column(scale=3):
            with gr.Row():
                refresh = gr.Button("Refresh", size="sm")
                open_btn = gr.Button("Open", size="sm", variant="primary", elem_id="open-project")
                duplicate = gr.Button("Duplicate", size="sm", elem_id="duplicate-project")
                delete = gr.Button("Delete…", size="sm", variant="stop", elem_id="delete-project")
    said = gr.Markdown(elem_id="projects-said", elem_classes=["studio-notes"])
    with gr.Row(visible=False, elem_id="confirm-delete") as confirm:
        confirm_note = gr.Markdown("Delete this project and all its files? This cannot be undone.")
        really = gr.Button("Yes, delete it", variant="stop", size="sm", elem_id="really-delete")
        keep = gr.Button("Keep it", size="sm")
    gr.Markdown("### Your renders")
    jobs = gr.Dataframe(pd.DataFrame([], columns=JOB_HEADERS), interactive=False, elem_id="jobs-table", max_height=320,
                        column_widths=["17%", "33%", "10%", "11%", "9%", "20%"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            picked_job = gr.Textbox(label="Job (click a row)", interactive=False, elem_id="picked-job")
            job_note = gr.Markdown()
            job_download = gr.DownloadButton("Download MP4", visible=False, elem_id="job-download")
        job_video = gr.Video(label="Render", interactive=False, scale=2, height=300, elem_id="job-video")
    return SimpleNamespace(projects=projects, picked=picked, picked_note=picked_note, said=said,
                           confirm_note=confirm_note, refresh=refresh, open=open_btn, duplicate=duplicate,
                           delete=delete, confirm=confirm, really=really, keep=keep, jobs=jobs, picked_job=picked_job,
                           job_note=job_note, job_download=job_download, job_video=job_video)


# -- wiring -----------------------------------------------------------------------------------------------------
def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.projects
    light = dict(concurrency_limit=None, api_visibility="private")
    fn, outputs = named(bind(list_all, studio), {"projects": p.projects, "jobs": p.jobs})
    p.refresh.click(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)
    ui.projects_tab.select(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)
    fn, outputs = named(pick_job, {"picked_job": p.picked_job})
    p.jobs.select(fn, inputs=[p.jobs], outputs=outputs, **light)
    fn, outputs = named(bind(show_job, studio), {"job_video": p.job_video, "job_download": p.job_download,
                                                 "job_note": p.job_note})
    p.picked_job.change(fn, inputs_kwargs=dict(session=ui.session, job_id=p.picked_job), outputs=outputs, **light)
    fn, outputs = named(pick_project, {"picked": p.picked})
    p.projects.select(fn, inputs=[p.projects], outputs=outputs, **light)
    fn, outputs = named(bind(open_project, studio), {"session": ui.session, "view": ui.view, "tabs": ui.tabs,
                                                     "tab": ui.tab, "progress": ui.compose.progress})
    p.open.click(fn, inputs_kwargs=dict(session=ui.session, project_id=p.picked), outputs=outputs, **light)
    fn, outputs = named(bind(show_picked, studio), {"picked_note": p.picked_note})
    p.picked.change(fn, inputs_kwargs=dict(session=ui.session, project_id=p.picked), outputs=outputs, **light)
    fn, outputs = named(bind(duplicate_project, studio), {"session": ui.session, "view": ui.view,
                                                          "projects": p.projects, "picked": p.picked,
                                                          "picked_note": p.picked_note, "said": p.said,
                                                          "progress": ui.compose.progress})
    p.duplicate.click(fn, inputs_kwargs=dict(session=ui.session, project_id=p.picked), outputs=outputs, **light)
    fn, outputs = named(bind(ask_delete, studio), {"confirm": p.confirm, "confirm_note": p.confirm_note})
    p.delete.click(fn, inputs_kwargs=dict(session=ui.session, project_id=p.picked), outputs=outputs, **light)
    p.keep.click(lambda: gr.Row(visible=False), None, p.confirm, **light)
    fn, outputs = named(bind(delete_project, studio), {"session": ui.session, "view": ui.view, "projects": p.projects,
                                                       "picked": p.picked, "confirm": p.confirm, "said": p.said,
                                                       "picked_note": p.picked_note, "progress": ui.compose.progress})
    p.really.click(fn, inputs_kwargs=dict(session=ui.session, project_id=p.picked), outputs=outputs, **light)
