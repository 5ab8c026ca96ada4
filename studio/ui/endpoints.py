"""Every step as an API endpoint with a readable name, for ``gradio_client`` (and any HTTP client)::

    from gradio_client import Client
    client = Client("http://127.0.0.1:7860/")
    project = client.predict(source="Why the sky is blue", aspect="9:16", api_name="/write_storyboard")
    client.predict(project_id=project["project_id"], api_name="/narrate")
    client.predict(project_id=project["project_id"], api_name="/illustrate")
    job = client.predict(project_id=project["project_id"], preset="draft", api_name="/render")
    client.predict(job_id=job["id"], api_name="/wait")                  # until it ends: state, percent, ...
    mp4 = client.predict(job_id=job["id"], api_name="/video")           # downloads the MP4

The endpoints call the same library verbs as the panels, with the same limits (the job runner's) checked before any
work. A caller is the signed-in user when the server runs with authentication, else (on a server without it) its own
anonymous user: each ``gradio_client.Client`` session is a user of its own, so one client never reaches another's
projects. Project ids are random and a caller reaches only its own projects.

``/wait`` is asynchronous: it holds no worker thread while it waits, and each caller may keep a few waits open at a
time (`WAITS_PER_CALLER`; `WAITS_TOTAL` for the whole server); beyond that it answers at once with a clear error.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import replace

import gradio as gr

from ..errors import StudioError
from ..project import Project
from ..visuals import illustrate as illustrate_
from ..voice import narrate as narrate_
from .brief import check_voice
from . import rendering
from .common import GPU, Studio, bind, fix, friendly, friendly_async, gpu, served, view
from .compose import job_segments, keep_render_assets
from .storyboard import check_media
from .workspace import owner_for

API_GUEST = "api"  # the owner of projects made by Python calls without a request (tests, notebooks)
WAITS_PER_CALLER = 16  # /wait calls one caller may hold open at once (none of them holds a thread)
WAITS_TOTAL = 200  # and the whole server
WAIT_POLL_S = 0.5


def caller(studio: Studio, request: gr.Request | None) -> str:
    """The signed-in user, else the local server's one user, else this API client's own anonymous user (named by a
    hash of its Gradio session, so two clients never share projects)."""
    username = getattr(request, "username", None) if request is not None else None
    username = username or studio.single_user
    if username:
        return owner_for(username, None)
    if request is None:
        return API_GUEST
    session_hash = getattr(request, "session_hash", None)
    if not session_hash:
        raise StudioError("an anonymous API call needs a session: call through gradio_client (each Client is its own "
                          "user) or sign in")
    return "api-" + hashlib.sha256(f"studio-api:{session_hash}".encode()).hexdigest()[:32]


class WaitSlots:
    """How many `/wait` calls are open, per caller and in all; taking one beyond a cap answers at once."""

    def __init__(self, per_caller: int = WAITS_PER_CALLER, total: int = WAITS_TOTAL) -> None:
        self.per_caller, self.total = per_caller, total
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, owner: str) -> None:
        with self._lock:
            if sum(self._open.values()) >= self.total:
                raise StudioError(f"the server already holds {self.total} waits open; poll /job instead, or try again "
                                  "in a moment")
            if self._open.get(owner, 0) >= self.per_caller:
                raise StudioError(f"you already have {self.per_caller} waits open, the most one caller may have; "
                                  "wait for one to end or poll /job")
            self._open[owner] = self._open.get(owner, 0) + 1

    def give(self, owner: str) -> None:
        with self._lock:
            left = self._open.get(owner, 0) - 1
            if left > 0:
                self._open[owner] = left
            else:
                self._open.pop(owner, None)


# Fields of the scene rows that /write_storyboard and /project return but a storyboard does not hold: what the steps
# made so far. /edit_storyboard takes the rows back as they came and ignores these.
READ_ONLY_FIELDS = ("number", "narrated", "audio_s", "painted")


def describe(project: Project) -> dict:
    """A project as the API returns it: ids, settings, scenes and what each has (no server paths; a scene's `media` is
    the name of a file uploaded to the project, ``uploads/...``)."""
    shown = view(project)
    scenes = [{"id": s["id"], "number": s["n"], "narration": s["narration"], "visual_prompt": s["visual_prompt"],
               "duration_s": s["duration_s"], "seed": s["seed"], "media": s["media"], "transition": s["transition"],
               "recording": s["recording"], "narrated": s["audio"] is not None, "audio_s": s["audio_s"], "painted": s["visual"] is not None}
              for s in shown["scenes"]]
    return {"project_id": shown["id"], "title": shown["title"], "aspect": shown["aspect"], "style": shown["style"],
            "language": shown["language"], "voice": shown["voice"], "captions": shown["captions"],
            "notes": shown["notes"], "scenes": scenes}


def storyboard_rows(project: Project, scenes: list[dict]) -> list[dict]:
    """The scene rows an API caller sent, as storyboard rows: the read-only fields that `describe` adds
    (`READ_ONLY_FIELDS`) are dropped, and a row that names one of the project's scenes and leaves `media` out keeps
    that scene's media. Any other unknown field is still an error (`Project.with_storyboard` names it)."""
    if not isinstance(scenes, list):
        raise StudioError(f"`scenes` must be a list of scene objects, got {type(scenes).__name__}")
    known = {s.id: s for s in project.scenes}
    rows = []
    for i, row in enumerate(scenes, start=1):
        if not isinstance(row, dict):
            raise StudioError(f"scene {i} must be an object with a `narration` field, got {type(row).__name__}")
        row = {k: v for k, v in row.items() if k not in READ_ONLY_FIELDS}
        for key in ("media", "recording"):  # a row that leaves them out keeps the scene's own picture and voice
            if key not in row and row.get("id") in known:
                row[key] = getattr(known[row["id"]], key)
        rows.append(row)
    return rows


def _status(job) -> dict:
    """A job as the API returns it (`rendering.status`), with the video segments a finished one rendered and reused."""
    return {**rendering.status(job), "segments": job_segments(job) if job.state == "done" else None}


def _only(project: Project, scene_ids: list[str] | None) -> list[str] | None:
    if not scene_ids:
        return None
    for scene_id in scene_ids:
        project.scene(scene_id)  # raises naming the unknown id
    return list(scene_ids)


@gpu
def write_storyboard(studio: Studio, source: str, title: str = "", style: str = "", aspect: str = "16:9",
                     language: str = "en", target_s: float = 0, voice: str = "", writer: str = "auto",
                     mode: str = "auto", preset: str = "draft", request: gr.Request = None) -> dict:
    """Step 1: write a storyboard from a brief or a script into a new project.

    Args:
        source: A short brief to write about, or a script to narrate as written (one paragraph per scene).
        title: The video's title; empty: from the script or brief.
        style: A visual style for every scene.
        aspect: 16:9, 9:16 or 1:1.
        language: Narration language, e.g. en.
        target_s: Wanted length in seconds (0: as long as it needs).
        voice: Narrator voice name; empty: the narrator's default.
        writer: Storyboard writer, or auto.
        mode: auto, script or brief.
        preset: Whose writer preferences and model options `auto` follostudio.workspace.
    """
    owner = caller(studio, request)
    project = studio.write_storyboard(source, mode=mode, writer=writer, title=title or None, aspect=aspect,
                                      style=style, language=language, voice=check_voice(voice),
                                      target_s=float(target_s) or None, preset=preset)
    return describe(studio.workspace.create(project, owner))

def get_project(studio: Studio, project_id: str, request: gr.Request = None) -> dict:
    """The project: settings, scenes, what each scene has, and which providers ran and why.

    Args:
        project_id: The id returned by /write_storyboard.
    """
    return describe(studio.workspace.load(project_id, caller(studio, request)))

def edit_storyboard(studio: Studio, project_id: str, scenes: list[dict], request: gr.Request = None) -> dict:
    """Replace the storyboard with `scenes` (dicts with narration, visual_prompt, duration_s, seed, media,
    transition; give a scene's id to keep its assets while what they depend on is unchanged). The rows that
    /project returns are taken as they are: their read-only fields (number, narrated, audio_s, painted) are
    ignored, and a row without `media` keeps its scene's.

    Args:
        project_id: The project.
        scenes: The scenes, in order.
    """
    project = studio.workspace.load(project_id, caller(studio, request))
    rows = storyboard_rows(project, scenes)
    check_media(studio, project, rows)
    return describe(studio.workspace.save(studio.check(project.with_storyboard(rows)), caller(studio, request)))

@gpu
def narrate(studio: Studio, project_id: str, scene_ids: list[str] | None = None, narrator: str = "auto",
            voice: str = "", preset: str = "draft", request: gr.Request = None) -> dict:
    """Step 2: narrate the scenes (all, or only `scene_ids`); unchanged scenes are reused.

    Args:
        project_id: The project.
        scene_ids: Scenes to narrate; empty: all.
        narrator: auto, or a narrator's name.
        voice: A voice name; empty: keep the project's.
        preset: Whose provider preferences `auto` follostudio.workspace.
    """
    project = studio.workspace.load(project_id, caller(studio, request))
    if voice:
        project = replace(project, voice=check_voice(voice))
    chosen = studio.preset(preset)
    studio.check(project, chosen)  # the server's limits, before any narration is made
    project = narrate_(project, narrator=narrator, preset=chosen, only=_only(project, scene_ids),
                       media_root=project.folder)
    return describe(studio.workspace.save(project, caller(studio, request)))

@gpu
def illustrate(studio: Studio, project_id: str, scene_ids: list[str] | None = None, painter: str = "auto",
               preset: str = "draft", request: gr.Request = None) -> dict:
    """Step 3: paint the scenes (all, or only `scene_ids`); unchanged scenes are reused.

    Args:
        project_id: The project.
        scene_ids: Scenes to paint; empty: all.
        painter: auto, or a painter's name.
        preset: Gives the frame size and whose provider preferences `auto` follostudio.workspace.
    """
    project = studio.workspace.load(project_id, caller(studio, request))
    chosen = studio.preset(preset)
    studio.check(project, chosen)
    project = illustrate_(project, painter=painter, preset=chosen, only=_only(project, scene_ids),
                          media_root=project.folder)
    return describe(studio.workspace.save(project, caller(studio, request)))

def render(studio: Studio, project_id: str, preset: str = "draft", narrator: str = "auto", painter: str = "auto",
           request: gr.Request = None) -> dict:
    """Step 4: render the project as a background job (the same queue as the HTTP API's jobs); returns the job.
    It reuses the video segments of the project's earlier renders: after an edit only the segments it changed
    are rendered (a finished job's `segments` says how many were reused).

    Args:
        project_id: The project.
        preset: draft, standard, premium or maximum.
        narrator: auto, or a narrator's name (scenes narrated before with the same one are reused).
        painter: auto, or a painter's name (scenes painted before with the same one are reused).
    """
    owner = caller(studio, request)
    project = studio.workspace.load(project_id, owner)
    keep_render_assets(studio, project, owner)
    job = rendering.submit(studio.runner, project, owner, preset=preset, narrator=narrator, painter=painter)
    studio.workspace.note_render_job(project, job.id)
    return _status(job)

def submit(studio: Studio, job: dict, idempotency_key: str = "", request: gr.Request = None) -> dict:
    """Queue a render from a job request, the same as the HTTP API's ``POST /api/jobs`` body (one schema: a
    script, a brief or a storyboard, with preset, aspect, voice, providers, captions, music ...); upload ids come
    from the HTTP API's ``/api/uploads`` of the same user. Returns the job.

    Args:
        job: The request (JSON object).
        idempotency_key: The same key with the same request returns the job it made the first time.
    """
    return rendering.status(studio.runner.submit(job, owner=caller(studio, request),
                                                 idempotency_key=idempotency_key or None))

def job(studio: Studio, job_id: str, request: gr.Request = None) -> dict:
    """A render job now: state, percent, step, scene, ETA, error, and the video's facts when done.

    Args:
        job_id: The id returned by /render.
    """
    return _status(studio.runner.get(job_id, caller(studio, request)))

async def wait(studio: Studio, slots: WaitSlots, job_id: str, timeout_s: float = 600,
               request: gr.Request = None) -> dict:
    """Wait until the job ends (or `timeout_s` passes) and return it.

    Args:
        job_id: The job.
        timeout_s: Longest wait, in seconds (at most 3600).
    """
    try:
        timeout = min(max(float(timeout_s), 0.0), 3600.0)
    except (TypeError, ValueError):
        raise StudioError(f"`timeout_s` must be a number of seconds, got {timeout_s!r}") from None
    owner = caller(studio, request)
    job = studio.runner.get(job_id, owner)  # raises for an unknown id (or another user's) before a slot is taken
    slots.take(owner)
    try:
        deadline = time.monotonic() + timeout
        while not job.terminal and time.monotonic() < deadline:
            # No thread is held while waiting: the event loop sleeps, and each look is one quick journal read.
            await asyncio.sleep(min(WAIT_POLL_S, max(deadline - time.monotonic(), 0.0)))
            job = studio.runner.get(job_id, owner)
    finally:
        slots.give(owner)
    return _status(job)

def cancel(studio: Studio, job_id: str, request: gr.Request = None) -> dict:
    """Cancel a waiting or running job; it ends `canceled` moments later.

    Args:
        job_id: The job.
    """
    return _status(studio.runner.cancel(job_id, caller(studio, request)))

def video(studio: Studio, job_id: str, request: gr.Request = None) -> str:
    """The finished MP4 of a job."""
    owner = caller(studio, request)
    return served(studio.runner.video_path(job_id, owner), owner)


def register(studio: Studio) -> None:
    """Add the API endpoints to the Blocks being built (each a function of this module, with `studio` filled in)."""
    # A local server without sign-in has one user (every browser and client is it): the overall cap is its cap.
    slots = WaitSlots(per_caller=WAITS_TOTAL if studio.single_user else WAITS_PER_CALLER)
    light, heavy = dict(concurrency_limit=None), dict(concurrency_id=GPU, concurrency_limit=1)
    gr.api(friendly(bind(write_storyboard, studio)), api_name="write_storyboard", **heavy)
    gr.api(friendly(bind(get_project, studio)), api_name="project", **light)
    gr.api(friendly(bind(edit_storyboard, studio)), api_name="edit_storyboard", **light)
    gr.api(friendly(bind(narrate, studio)), api_name="narrate", **heavy)
    gr.api(friendly(bind(illustrate, studio)), api_name="illustrate", **heavy)
    gr.api(friendly(bind(render, studio)), api_name="render", **light)
    gr.api(friendly(bind(submit, studio)), api_name="submit", **light)
    gr.api(friendly(bind(job, studio)), api_name="job", **light)
    # A wait runs on the event loop (no thread) in a concurrency group of its own; the queue has slots enough for
    # every wait the caps allow plus the other events (`studio.ui.app.GRADIO_THREADS`), so open waits never stall them.
    gr.api(friendly_async(fix(wait, studio=studio, slots=slots)), api_name="wait", concurrency_id="wait",
           concurrency_limit=WAITS_TOTAL)
    gr.api(friendly(bind(cancel, studio)), api_name="cancel", **light)
    # A file answer needs a file component (gr.api returns JSON only): a hidden one, reached only through the API.
    with gr.Column(visible=False):
        job_id = gr.Textbox(label="job_id")
        mp4 = gr.File(label="video")
        fetch = gr.Button()
    fetch.click(friendly(bind(video, studio)), inputs=[job_id], outputs=[mp4], api_name="video", **light)


__all__ = ["register", "describe", "storyboard_rows", "caller", "StudioError"]
