"""Panel 5, Compose: the preset (what each tier means here), captions and their font, music, transitions, watermark; "Preview
scene" renders one scene's video segments at the chosen preset (exactly the segments the render reuses); "Render"
starts a background job with a live progress bar and a working Cancel, then shows the video, a download button and
how many segments it reused.

Segments travel both ways between the studio's project and its render jobs: a job's folder is seeded with the
project's assets (`studio.ui.rendering`), so the job finds every segment a preview or an earlier render made; and
before the next preview or render the project takes back the assets its finished jobs made (`keep_render_assets`),
so an edit re-renders only the segments it changed.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..compose import STYLES, TRANSITIONS
from ..compose import segments
from ..errors import StudioError
from ..presets import TIERS, available_presets, load_preset
from ..visuals import illustrate
from ..voice import narrate
from . import rendering
from .common import (GPU, Studio, bind, blank_message, blank_scenes, checked_session, gpu, named, progress_to,
                     scene_choices, served, title_file, user_words, view)


def unavailable(limits, aspect: str = "16:9") -> dict[str, str]:
    """The tiers this server cannot render at `aspect`, each with the reason (its frame is over the pixel limit)."""
    out = {}
    for name in available_presets():
        width, height = load_preset(name).size(aspect)
        if limits is not None and width * height > limits.max_pixels:
            out[name] = (f"{width}x{height} is over this server's limit of {limits.max_pixels:,} pixels a frame "
                         "(its operator sets it: `studio serve --max-pixels`)")
    return out


def preset_table(aspect: str = "16:9", limits=None) -> str:
    """What each tier means on this machine: resolution for the aspect, fps, the encoder it would use, GPU or CPU;
    a tier this server cannot render says why instead of being offered."""
    from ..compose.encoders import pick_encoder

    refused = unavailable(limits, aspect)
    from ..compose.gpu import resolve_device

    rows = ["| preset | video | composition on this machine | for |", "|---|---|---|---|"]
    for name in available_presets():
        preset = load_preset(name)
        width, height = preset.size(aspect)
        if name in refused:
            rows.append(f"| ~~{html.escape(preset.label)}~~ | {width}x{height} @ {preset.fps} fps | unavailable here "
                        f"| {html.escape(refused[name], quote=False)} |")
            continue
        encoder = pick_encoder(preset)  # NVENC only when a real test encode works (probed once per process)
        try:  # "GPU compose: NVIDIA H200, hevc_nvenc p6" / "CPU compose: libx264 veryfast"
            _, where, why = resolve_device(preset, encoder)
        except StudioError as exc:  # a preset that demands CUDA on a machine without it
            where, why = f"unavailable here: {exc}", None
        if why:
            where += f" ({why.removeprefix('CPU compose: ')})"
        rows.append(f"| **{html.escape(preset.label)}** | {width}x{height} @ {preset.fps} fps | "
                    f"{html.escape(where, quote=False)} | {html.escape(preset.summary)} |")
    return "\n".join(rows)


def preset_choices(limits=None, aspect: str = "16:9") -> list[tuple[str, str]]:
    """The tiers this server renders at `aspect` (label, name): a tier over its limits is never offered."""
    refused = unavailable(limits, aspect)
    return [(load_preset(name).label, name) for name in available_presets() if name in TIERS and name not in refused]


def estimate_md(view_: dict | None, preset: str, limits=None) -> str:
    """How long a render at `preset` should take on this machine, step by step, before it starts (or why the tier
    is not here): the providers `auto` would choose, seconds for what is still to make, memory, and where each
    figure comes from (this machine's earlier runs, the model catalogue, a test encode)."""
    if not view_ or not view_["scenes"]:
        return ""
    refused = unavailable(limits, view_["aspect"])
    if preset in refused:
        return f"⛔ {load_preset(preset).label} is unavailable here: {html.escape(refused[preset], quote=False)}."
    try:
        from ..estimate import estimate_render_s, estimate_steps
        from ..project import Project

        chosen = load_preset(preset)
        composed = estimate_render_s(view_["seconds"], chosen, view_["aspect"], scenes=len(view_["scenes"]))
        settings = view_.get("settings") or {}
        steps = estimate_steps(Project.load(Path(view_["folder"])), chosen, narrator=settings.get("narrator", "auto"),
                               painter=settings.get("painter", "auto")) if view_.get("folder") else []
    except (StudioError, OSError, ImportError) as exc:  # no estimate is no reason to stop a render
        return f"(no time estimate: {html.escape(str(exc))[:200]})"
    total = sum(s.seconds for s in steps[:-1]) + composed.seconds
    from ..estimate import duration_words

    lines = [f"⏱ **{duration_words(total)}** on this machine for this render:"]
    lines += [f"- {html.escape(s.text)}" for s in steps[:-1] if s.seconds > 0]
    lines.append(f"- compose: {composed.resolution_name} {composed.width}x{composed.height} at {composed.fps} fps, "
                 f"{html.escape(composed.encoder)} ({composed.device}), {composed.duration_text} [test encode]")
    from .models import hint

    lines += [said for said in (hint(view_, "narrator"), hint(view_, "painter")) if said]
    return "\n".join(lines)


# -- functions --------------------------------------------------------------------------------------------------
def save_preset(studio: Studio, session: dict, preset: str, request: gr.Request = None) -> dict:
    """Keep the chosen preset with the project (a reload, and the next render, use it) and say how long it takes."""
    project = studio.project(session, request)
    studio.preset(preset)  # a tier name of this server, or an error
    studio.workspace.save_settings(project, preset=preset)
    return {"estimate": estimate_md(view(project), preset, studio.limits)}


def save_choice(studio: Studio, session: dict, narrator: str | None = None, painter: str | None = None,
                request: gr.Request = None) -> dict:
    """Keep the narrator or painter chosen in the Voice or Visuals panel with the project."""
    project = studio.project(session, request)
    for name, value, known in (("narrator", narrator, studio.narrators), ("painter", painter, studio.painters)):
        if value is not None and value != "auto" and value not in known:
            raise StudioError(f"`{name}` must be auto or one of {', '.join(known)}, got {str(value)[:40]!r}")
    studio.workspace.save_settings(project, narrator=narrator, painter=painter)
    return {}


def save_settings(studio: Studio, session: dict, captions: bool, caption_style: str, music_volume: float,
                  transition: str, request: gr.Request = None) -> dict:
    """Keep the panel's settings on the project (a reload shows them again; a render uses them)."""
    project = studio.project(session, request)
    if caption_style not in STYLES:
        raise StudioError(f"`caption_style` must be one of {', '.join(STYLES)}, got {caption_style!r}")
    if transition not in ("auto", "keep", *TRANSITIONS):
        raise StudioError(f"`transition` must be auto, keep or one of {', '.join(TRANSITIONS)}, got {transition!r}")
    project = replace(project, captions=bool(captions), caption_style=caption_style, music_volume=float(music_volume))
    if transition != "keep":  # "keep": each scene's own choice from the Storyboard table
        value = None if transition == "auto" else transition
        project = project.with_scenes([replace(s, transition=value) for s in project.scenes])
    return {"view": view(studio.save(project, session, request))}


def set_music(studio: Studio, session: dict, file: str | None = None, request: gr.Request = None) -> dict:
    """Background music (checked by its content, looped and ducked under the narration); empty removes it."""
    project = studio.project(session, request)
    music = studio.workspace.upload_path(project, studio.upload(project, file, "music", session, request)) if file else None
    return {"view": view(studio.save(replace(project, music=music), session, request))}


def set_watermark(studio: Studio, session: dict, file: str | None = None, request: gr.Request = None) -> dict:
    """A logo drawn in a corner of every frame (checked by its content); empty removes it."""
    project = studio.project(session, request)
    mark = (studio.workspace.upload_path(project, studio.upload(project, file, "watermark", session, request))
            if file else None)
    return {"view": view(studio.save(replace(project, watermark=mark), session, request))}


def set_caption_font(studio: Studio, session: dict, file: str | None = None, request: gr.Request = None) -> dict:
    """A TrueType or OpenType font for the captions (checked by its content); empty goes back to DejaVu Sans."""
    project = studio.project(session, request)
    font = (studio.workspace.upload_path(project, studio.upload(project, file, "caption_font", session, request))
            if file else None)
    return {"view": view(studio.save(replace(project, caption_font=font), session, request))}


def keep_render_assets(studio: Studio, project, owner: str) -> int:
    """Take back into `project` what its finished render jobs made in their own folders: the assets (video segments
    above all) and, for scenes the project had not narrated or painted yet (the one-click path), the narration and
    visual the job made for exactly the same text, prompt and seed; the newest finished video becomes the project's
    last good render. Returns how many files were linked. Jobs still running are kept for later; others are
    forgotten."""
    if studio.runner is None:
        return 0
    pending, taken, done = [], 0, []
    for job_id in studio.workspace.render_jobs(project):
        try:
            job = studio.runner.get(job_id, owner)
        except StudioError:  # removed from the journal, or not this user's
            continue
        if not job.terminal:
            pending.append(job_id)
            continue
        taken += segments.adopt_assets(job.project_dir / "assets", project.assets_dir)
        if job.state == "done":
            done.append(job)
    studio.workspace.set_render_jobs(project, pending)
    changed = project
    for job in sorted(done, key=lambda j: j.finished_at or 0):
        changed = _take_back_scenes(changed, job.project_dir)
        _keep_last_render(studio, changed, job, owner)
    if changed != project:
        studio.workspace.save(changed, owner)
    return taken


def _take_back_scenes(project, job_folder: Path):
    """`project` with the narration and visuals a finished job made for its scenes that had none (same scene id,
    same text, voice, prompt, seed and media), pointing at the copies already in the project's assets."""
    from ..project import Project

    try:
        made = Project.load(job_folder)
    except (StudioError, OSError):
        return project
    if (made.voice, made.language, made.style) != (project.voice, project.language, project.style):
        return project
    theirs = {s.id: s for s in made.scenes}
    assets = Path(project.assets_dir)
    scenes = []
    for scene in project.scenes:
        other = theirs.get(scene.id)
        if other is not None and scene.audio is None and other.audio is not None and other.narration == scene.narration \
                and (assets / Path(other.audio).name).is_file():
            scene = replace(scene, audio=assets / Path(other.audio).name, audio_duration_s=other.audio_duration_s,
                            words=other.words)
        if other is not None and scene.visual is None and other.visual is not None and not scene.media \
                and (other.visual_prompt, other.seed) == (scene.visual_prompt, scene.seed) \
                and (assets / Path(other.visual).name).is_file():
            scene = replace(scene, visual=assets / Path(other.visual).name)
        scenes.append(scene)
    return project.with_scenes(scenes) if tuple(scenes) != tuple(project.scenes) else project


def _keep_last_render(studio: Studio, project, job, owner: str) -> None:
    """Make a finished job's video the project's last good render, unless a newer one is kept already."""
    kept = studio.workspace.last_render(project)
    if kept and float(kept[1].get("finished_at") or 0) >= float(job.finished_at or 0):
        return
    try:
        video = studio.runner.video_path(job.id, owner)
    except StudioError:  # expired
        return
    if video is None or not Path(video).is_file():
        return
    facts = dict(job.result or {})
    studio.workspace.keep_render(project, video, {
        "job": job.id, "preset": job.preset, "finished_at": job.finished_at, "title": project.title,
        **{k: facts.get(k) for k in ("duration_s", "width", "height", "fps", "encoder", "size_bytes")}})


def job_segments(job) -> dict | None:
    """How many video segments a finished job rendered and reused (its compose step), or None."""
    step = next((s for s in (job.steps or []) if s.get("step") == "compose"), None)
    if step is None:
        return None
    return {"made": int(step.get("made", 0)), "reused": int(step.get("reused", 0))}


@gpu
def preview_scene(studio: Studio, session: dict, scene_id: str, narrator: str, painter: str, preset: str = "draft",
                  request: gr.Request = None, progress=gr.Progress()) -> dict:
    """Render one scene's video segments (its own frames and the transitions at its ends) at the chosen preset into
    the project, where the render job reuses them: the scene and the neighbours it blends with are narrated and
    painted first if needed (with the panels' choices, so nothing they made is replaced)."""
    project = studio.project(session, request)
    if not scene_id:
        raise StudioError("pick the scene to preview")
    project.scene(scene_id)  # raises if unknown
    chosen = studio.preset(preset)
    studio.check(project, chosen)
    keep_render_assets(studio, project, studio.owner(session, request))
    report = progress_to(progress)

    def prepare(project, ids: list[str]):
        project = narrate(project, narrator=narrator or "auto", preset=chosen, only=ids, media_root=project.folder,
                          on_progress=lambda f, m: report(0.3 * f, m))
        project = illustrate(project, painter=painter or "auto", preset=chosen, only=ids, media_root=project.folder,
                             on_progress=lambda f, m: report(0.3 + 0.1 * f, m))
        return studio.save(project, session, request)

    started = time.perf_counter()
    out = project.renders_dir / f"preview-{scene_id}.mp4"
    result = segments.preview_scene(project, chosen, scene_id, out, prepare=prepare,
                                    on_progress=lambda f, m: report(0.4 + 0.6 * f, m))
    seconds = time.perf_counter() - started
    project = studio.project(session, request)
    number = [s.id for s in project.scenes].index(scene_id) + 1
    count = len(result.parts)
    return {"preview": served(result.path), "view": view(project),
            "status": f"Scene {number}: {result.duration_s:.1f} s at {result.width}x{result.height} ({chosen.label}), "
                      f"{count} segment{'s' if count != 1 else ''} ({result.reused} reused), made in {seconds:.1f} s "
                      f"with {result.encoder}; a render at {chosen.label} reuses them."}


def render(studio: Studio, session: dict, preset: str, narrator: str, painter: str, request: gr.Request = None) -> dict:
    """Start a background render job of the project (the UI stays free; a reload finds the job again); it reuses the
    segments of the project's previews and earlier renders. A render the server refuses says why on the panel's bar
    (the last good video stays, its download does not)."""
    session = checked_session(session)
    project = studio.project(session, request)
    owner = studio.owner(session, request)
    keep_render_assets(studio, project, owner)
    project = studio.project(session, request)
    try:
        blank = blank_scenes(view(project))
        if blank:
            raise StudioError(blank_message(blank))
        waiting = _first_use_downloads(studio, view(project), narrator, painter)
        if waiting:
            raise StudioError(waiting)
        if model_steps_on_zerogpu(project, studio.preset(preset or "draft"), narrator or "auto", painter or "auto"):
            project = studio.project(session, request)  # narrated and painted in GPU calls: the job only composes
        job = rendering.submit(studio.runner, project, owner, preset=preset or "draft",
                               narrator=narrator or "auto", painter=painter or "auto")
    except StudioError as exc:
        message = user_words(str(exc))
        gr.Warning(message, title="Not rendered")
        return {"progress": progress_html({"state": "refused", "percent": 0, "error": message}),
                "timer": gr.Timer(active=False), "render": gr.Button(interactive=True),
                "cancel": gr.Button(interactive=False), "video": last_fields(view(project))["video"],
                "download": gr.DownloadButton(visible=False), "session": {**session, "job": None}}
    studio.workspace.note_render_job(project, job.id)
    studio.workspace.save_settings(project, preset=preset or "draft")
    return {**_job_fields(studio, job, owner, project), "session": {**session, "job": job.id}}


def model_steps_on_zerogpu(project, preset, narrator: str, painter: str, *, spaces_module=None,
                           environ=None) -> bool:
    """On a ZeroGPU Space, run the model steps of a render (narration, painting) in GPU calls sized from the work
    (`studio.zerogpu`), before the render job, which then composes on the CPU and reuses all they made (a job thread
    has no GPU there). Each call works on a few scenes from the project's folder and writes their files and the
    project back, so nothing has to come back through the call. Returns whether any call ran."""
    import os

    from .. import providers
    from ..zerogpu import costs_for, on_zerogpu, run_in_gpu_calls

    if not on_zerogpu(os.environ if environ is None else environ):
        return False
    ran = False
    folder = str(project.folder)
    for kind, asked in (("narrator", narrator), ("painter", painter)):
        name = providers.choose(kind, asked, prefer=preset.providers.get(kind), configs=preset.models).name
        costs = costs_for(preset, name if kind == "narrator" else "espeak", name if kind == "painter" else "cards")
        todo = [s.id for s in project.scenes if (s.audio is None and s.narration.strip() if kind == "narrator"
                                                 else s.visual is None and not s.media)]
        if not todo or not any(c.needs_gpu for c in costs):
            continue
        run_in_gpu_calls(functools.partial(_model_step, folder, kind, name, preset.name), todo, costs,
                         spaces_module=spaces_module)
        ran = True
    return ran


def _model_step(folder: str, kind: str, provider: str, preset_name: str, chunk: list[str]) -> int:
    """One GPU call's work: narrate or paint the scenes of `chunk` with `provider`, saving them in the project."""
    from ..presets import load_preset
    from ..project import Project

    project = Project.load(Path(folder))
    chosen = load_preset(preset_name)
    if kind == "narrator":
        project = narrate(project, narrator=provider, preset=chosen, only=chunk, media_root=project.folder)
    else:
        project = illustrate(project, painter=provider, preset=chosen, only=chunk, media_root=project.folder)
    project.save()
    return len(chunk)


def _first_use_downloads(studio: Studio, view_: dict, narrator: str, painter: str) -> str:
    """With download on first use on, a render waits for the models it would use: their downloads start in the
    background (the Models panel shows them) and the render is asked for again when they are done."""
    if not (studio.download_first_use and studio.allow_downloads and studio.downloads is not None):
        return ""
    from .models import wanted

    missing = wanted(view_, "narrator", narrator) + wanted(view_, "painter", painter)
    for entry in missing:
        studio.downloads.start(entry.name)
    if not missing:
        return ""
    return (f"downloading {', '.join(e.name for e in missing)} first (the 7 · Models panel shows the progress): "
            "render again when it is done, or turn off downloads on first use there to render now with what is here")


def poll(studio: Studio, session: dict, request: gr.Request = None) -> dict:
    """The session's render job as it is now (the timer calls this while a job runs; a page load reattaches). When
    it has finished, the project takes back what it made (the panels redraw) and keeps its video."""
    session = checked_session(session)
    if not session.get("job"):
        return {"timer": gr.Timer(active=False)}
    owner = studio.owner(session, request)
    try:
        job = studio.runner.get(session["job"], owner)
    except StudioError:  # removed by the retention policy, or another user's id
        return {"timer": gr.Timer(active=False), "session": {**session, "job": None}, "progress": progress_html(None)}
    project = _session_project(studio, session, request)
    out = _job_fields(studio, job, owner, project)
    if job.terminal and project is not None and job.id in studio.workspace.render_jobs(project):
        keep_render_assets(studio, project, owner)
        project = studio.project(session, request)
        out = {**_job_fields(studio, job, owner, project), "view": view(project)}
    return out


def _session_project(studio: Studio, session: dict, request):
    try:
        return studio.project(session, request)
    except StudioError:
        return None


def cancel(studio: Studio, session: dict, request: gr.Request = None) -> dict:
    """Cancel the session's running render: the job stops its work (ffmpeg included) and ends ``canceled``; the
    project's last good video stays."""
    session = checked_session(session)
    if not session.get("job"):
        raise StudioError("no render is running")
    owner = studio.owner(session, request)
    job = studio.runner.get(session["job"], owner)
    if not job.terminal:
        job = studio.runner.cancel(job.id, owner)
    return _job_fields(studio, job, owner, _session_project(studio, session, request))


def _job_fields(studio: Studio, job, owner: str, project=None) -> dict:
    """Progress bar, buttons and timer of a render job. The video and its download are the project's last good
    render (`show`): a finished job's video becomes it when the project takes the job's work back (`poll`), and a
    new or cancelled render never clears it."""
    state = {**rendering.status(job), "segments": job_segments(job) if job.state == "done" else None}
    return {"progress": progress_html(state), "timer": gr.Timer(active=not job.terminal),
            "render": gr.Button(interactive=job.terminal), "cancel": gr.Button(interactive=not job.terminal)}


def last_fields(view_: dict | None, download: bool = True) -> dict:
    """The video player and download showing the project's last good render, named after its title."""
    last = (view_ or {}).get("last")
    if not last:
        return {"video": gr.Video(value=None, label="Video"),
                "download": gr.DownloadButton("Download MP4", value=None, visible=False)}
    name = title_file(view_["title"])
    path = served(last["path"], name=name)
    label = f"Last good render · {_preset_label(last.get('preset'))} · {_when(last.get('finished_at'))}"
    return {"video": gr.Video(value=path, label=label),
            "download": gr.DownloadButton(f"Download {name}", value=path, visible=download)}


def _preset_label(name: str | None) -> str:
    try:
        return load_preset(name).label if name in TIERS else str(name or "")
    except StudioError:
        return str(name or "")


def _when(timestamp) -> str:
    return dt.datetime.fromtimestamp(float(timestamp)).strftime("%H:%M, %d %b") if timestamp else ""


def show(view_: dict | None, picked: str | None = None, limits=None) -> dict:
    """The panel's fields from the project: its settings and preset (kept with it), the scene picker (staying on the
    scene the user picked), what each tier means here and how long the chosen one takes."""
    if not view_:
        return {"scene": gr.Dropdown(choices=[], value=None), **last_fields(None)}
    transitions = {s["transition"] for s in view_["scenes"]}
    transition = "keep" if len(transitions) > 1 else ((transitions.pop() or "auto") if transitions else "auto")
    ids = [s["id"] for s in view_["scenes"]]
    picked = picked if picked in ids else (ids[0] if ids else None)
    choices = preset_choices(limits, view_["aspect"])
    names = [name for _, name in choices]
    preset = view_.get("settings", {}).get("preset")
    preset = preset if preset in names else (names[0] if names else "draft")
    return {
        "scene": gr.Dropdown(choices=scene_choices(view_), value=picked),
        "preset": gr.Radio(choices=choices, value=preset),
        "estimate": estimate_md(view_, preset, limits),
        "captions": view_["captions"], "caption_style": view_["caption_style"],
        "music_volume": view_["music_volume"], "transition": transition,
        "music_note": f"Music: `{_label(view_['music_label'])}`" if view_["music"] else "No music.",
        "watermark_note": f"Watermark: `{_label(view_['watermark_label'])}`" if view_["watermark"] else "No watermark.",
        "caption_font_note": (f"Caption font: `{_label(view_['caption_font'])}`" if view_.get("caption_font")
                              else "Caption font: DejaVu Sans (bundled)."),
        "presets": preset_table(view_["aspect"], limits),
        **last_fields(view_),
    }


def _label(text: str | None) -> str:
    return html.escape(str(text or "").replace("`", ""))


# What the caption styles look like, for the style choice (the value is the style's name).
STYLE_LABELS = {"bold": "bold (outlined lines)", "boxed": "boxed (lines on a dark box)", "plain": "plain",
                "karaoke": "karaoke (the spoken word lit)", "words": "words (1-3 big words at a time: shorts)"}


# -- layout -----------------------------------------------------------------------------------------------------
def layout(studio: Studio) -> SimpleNamespace:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            preset = gr.Radio(preset_choices(studio.limits), value="draft", label="Preset", elem_id="preset")
            estimate = gr.Markdown(elem_id="render-estimate")
            presets = gr.Markdown(preset_table(limits=studio.limits), elem_classes=["preset-table"])
        with gr.Column(scale=2):
            with gr.Row():
                captions = gr.Checkbox(True, label="Burn captions in")
                caption_style = gr.Dropdown([(STYLE_LABELS.get(name, name), name) for name in STYLES], value="bold",
                                            label="Caption style")
            with gr.Row(equal_height=True):
                caption_font = gr.UploadButton("Caption font…", file_types=[".ttf", ".otf"], size="sm")
                no_caption_font = gr.Button("No custom font", size="sm")
            caption_font_note = gr.Markdown("Caption font: DejaVu Sans (bundled).")
            transition = gr.Dropdown([("auto (per scene)", "auto"), ("as set in the table", "keep"),
                                      *[(t, t) for t in TRANSITIONS]], value="auto", label="Transitions")
            with gr.Row(equal_height=True):
                music = gr.UploadButton("Music…", file_types=["audio"], size="sm")
                no_music = gr.Button("No music", size="sm")
            music_volume = gr.Slider(0, 1, value=0.15, step=0.01, label="Music volume (when nobody speaks)")
            music_note = gr.Markdown("No music.")
            with gr.Row(equal_height=True):
                watermark = gr.UploadButton("Watermark…", file_types=[".png", ".jpg", ".jpeg", ".webp"], size="sm")
                no_watermark = gr.Button("No watermark", size="sm")
            watermark_note = gr.Markdown("No watermark.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            gr.Markdown("### Render")
            with gr.Row():
                render_btn = gr.Button("Render", variant="primary", elem_id="render")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel", interactive=False)
            progress_bar = gr.HTML(progress_html(None), elem_id="render-progress")
            video = gr.Video(label="Video", interactive=False, elem_id="render-video", height=260)
            download = gr.DownloadButton("Download MP4", visible=False, elem_id="download")
        with gr.Column(scale=1):
            gr.Markdown("### Preview one scene")
            gr.Markdown("At the chosen preset: the segments it makes are the ones Render reuses.",
                        elem_classes=["hint"])
            scene = gr.Dropdown([], label="Scene", elem_id="preview-scene")
            preview_btn = gr.Button("Preview scene", elem_id="preview")
            preview = gr.Video(label="Preview", interactive=False, elem_id="preview-video", height=260)
            status = gr.Markdown()
    timer = gr.Timer(1.0, active=False)
    return SimpleNamespace(preset=preset, estimate=estimate, presets=presets, captions=captions, caption_style=caption_style,
                           caption_font=caption_font, no_caption_font=no_caption_font,
                           caption_font_note=caption_font_note,
                           transition=transition, music=music, no_music=no_music, music_volume=music_volume,
                           music_note=music_note, watermark=watermark, no_watermark=no_watermark,
                           watermark_note=watermark_note, scene=scene, preview_button=preview_btn, preview=preview,
                           status=status, render=render_btn, cancel=cancel_btn, progress=progress_bar, video=video,
                           download=download, timer=timer)


def progress_html(job: dict | None) -> str:
    """The render's progress bar: state, step, scene, percent and ETA (plain HTML, text escaped)."""
    if not job:
        return "<div class='render-progress idle'>No render yet.</div>"
    if job.get("state") == "refused":  # never started: the reason, and no bar of an earlier render
        return (f"<div class='render-progress refused' data-state='refused'><div class='label'><b>Not rendered</b>: "
                f"{html.escape(str(job.get('error') or ''))}</div></div>")
    percent = max(0.0, min(100.0, float(job.get("percent") or 0.0)))
    state = html.escape(str(job.get("state", "")))
    parts = [html.escape(str(job[k])) for k in ("step", "scene") if job.get(k)]
    eta = job.get("eta_s")
    if eta is not None and state == "running":
        parts.append(f"about {int(eta) // 60}:{int(eta) % 60:02d} left")
    video = job.get("video")
    if video and state == "done":
        parts.append(f"{video.get('duration_s', 0):.1f} s · {video.get('width')}x{video.get('height')} · "
                     f"{html.escape(str(video.get('compose') or video.get('encoder', '')))} · "
                     f"{video.get('size_bytes', 0) / 1e6:.2f} MB")
    made = job.get("segments")
    if made and state == "done":
        parts.append(f"{made['reused']} of {made['made'] + made['reused']} segments reused")
    if job.get("error"):
        parts.append(html.escape(str(job["error"])))
    detail = " · ".join(parts)
    return (f"<div class='render-progress {state}' data-state='{state}' data-percent='{percent:.0f}'>"
            f"<div class='bar'><div class='fill' style='width:{percent:.1f}%'></div></div>"
            f"<div class='label'><b>{state}</b> {percent:.0f}%{' · ' + detail if detail else ''}</div></div>")


# -- wiring -----------------------------------------------------------------------------------------------------
def job_components(ui: SimpleNamespace) -> dict:
    """What a render job's handlers (render, poll, cancel) change."""
    p = ui.compose
    return {"progress": p.progress, "timer": p.timer, "render": p.render, "cancel": p.cancel, "video": p.video,
            "download": p.download, "session": ui.session, "view": ui.view}


def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.compose
    light = dict(concurrency_limit=None, api_visibility="private")
    fn, outputs = named(bind(save_settings, studio), {"view": ui.view})
    settings = dict(session=ui.session, captions=p.captions, caption_style=p.caption_style,
                    music_volume=p.music_volume, transition=p.transition)
    for component in (p.captions, p.caption_style, p.transition):
        component.input(fn, inputs_kwargs=settings, outputs=outputs, **light)
    p.music_volume.release(fn, inputs_kwargs=settings, outputs=outputs, **light)
    fn, outputs = named(bind(set_caption_font, studio), {"view": ui.view})
    p.caption_font.upload(fn, inputs_kwargs=dict(session=ui.session, file=p.caption_font), outputs=outputs, **light)
    p.no_caption_font.click(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)
    fn, outputs = named(bind(set_music, studio), {"view": ui.view})
    p.music.upload(fn, inputs_kwargs=dict(session=ui.session, file=p.music), outputs=outputs, **light)
    p.no_music.click(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)
    fn, outputs = named(bind(set_watermark, studio), {"view": ui.view})
    p.watermark.upload(fn, inputs_kwargs=dict(session=ui.session, file=p.watermark), outputs=outputs, **light)
    p.no_watermark.click(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)
    fn, outputs = named(bind(save_preset, studio), {"estimate": p.estimate})
    p.preset.input(fn, inputs_kwargs=dict(session=ui.session, preset=p.preset), outputs=outputs, **light)
    fn, outputs = named(bind(save_choice, studio), {})
    ui.voice.narrator.input(fn, inputs_kwargs=dict(session=ui.session, narrator=ui.voice.narrator), outputs=outputs,
                            **light)
    ui.visuals.painter.input(fn, inputs_kwargs=dict(session=ui.session, painter=ui.visuals.painter), outputs=outputs,
                             **light)
    job_outputs = job_components(ui)
    fn, outputs = named(bind(render, studio), job_outputs)
    p.render.click(fn, inputs_kwargs=dict(session=ui.session, preset=p.preset, narrator=ui.voice.narrator,
                                          painter=ui.visuals.painter), outputs=outputs, **light)
    fn, outputs = named(bind(poll, studio), job_outputs)
    p.timer.tick(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, show_progress="hidden", **light)
    fn, outputs = named(bind(cancel, studio), job_outputs)
    p.cancel.click(fn, inputs_kwargs=dict(session=ui.session), outputs=outputs, **light)
    fn, outputs = named(bind(preview_scene, studio), {"preview": p.preview, "view": ui.view, "status": p.status})
    p.preview_button.click(fn, inputs_kwargs=dict(session=ui.session, scene_id=p.scene, narrator=ui.voice.narrator,
                                                  painter=ui.visuals.painter, preset=p.preset), outputs=outputs,
                           concurrency_id=GPU, concurrency_limit=1, api_visibility="private")
