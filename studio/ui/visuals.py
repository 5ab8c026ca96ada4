"""Panel 4, Visuals: a gallery with a card per scene (its image or clip, prompt and seed); repaint one scene with a
new seed or an edited prompt, or use your own image or clip; the painter and a style applied to every scene."""

from __future__ import annotations

import html
import secrets
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import gradio as gr

from ..errors import StudioError
from ..visuals import illustrate
from .common import (GPU, Studio, bind, gpu, named, notes_md, progress_to, providers_md, scene_choices,
                     served, shorten, view)

MAX_SEED = 2**31 - 1


def _illustrate(studio: Studio, session: dict, request: Any, project, only, painter: str, preset: str,
                progress: Any) -> dict:
    chosen = studio.preset(preset)
    studio.check(project, chosen)  # the server's limits, before anything is painted
    started = time.perf_counter()
    report = progress_to(progress)
    report(0.0, "starting the painter (the first time loads its model)")
    project = illustrate(project, painter=painter or "auto", preset=chosen, only=only,
                         media_root=project.folder, on_progress=report)
    shown = view(studio.save(project, session, request))
    from .models import fetch_first_use

    fetching = fetch_first_use(studio, shown, "painter", painter)
    ids = [s["id"] for s in shown["scenes"]]
    said = f"scene {ids.index(only[0]) + 1}" if only and len(only) == 1 else f"{len(only or ids)} scenes"
    return {"view": shown, "notes": notes_md(shown, "painter:", "visuals:"),
            "status": f"✓ Painted {said} in {time.perf_counter() - started:.1f} s.{fetching}"}


def _seed(seed: Any) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise StudioError(f"`seed` must be a whole number, got {seed!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise StudioError(f"`seed` must be between 0 and {MAX_SEED}, got {value}")
    return value


# -- functions --------------------------------------------------------------------------------------------------
@gpu
def paint_all(studio: Studio, session: dict, painter: str, style: str, preset: str, request: gr.Request = None,
              progress=gr.Progress()) -> dict:
    """Paint every scene with the painter and the project-wide style (unchanged scenes are reused)."""
    project = studio.project(session, request)
    style = (style or "").strip()
    if style != project.style:
        project = replace(project, style=style)
    return _illustrate(studio, session, request, project, None, painter, preset, progress)


@gpu
def repaint(studio: Studio, session: dict, scene_id: str, prompt: str, seed: Any, painter: str, preset: str,
            request: gr.Request = None, progress=gr.Progress()) -> dict:
    """Paint one scene again with its (edited) prompt and seed."""
    project = studio.project(session, request)
    if not scene_id:
        raise StudioError("pick a scene in the gallery first")
    project = project.edit_scene(scene_id, visual_prompt=(prompt or "").strip(), seed=_seed(seed))
    return _illustrate(studio, session, request, project, [scene_id], painter, preset, progress)


@gpu
def new_seed(studio: Studio, session: dict, scene_id: str, prompt: str, painter: str, preset: str,
             request: gr.Request = None, progress=gr.Progress()) -> dict:
    """Paint one scene again with a fresh random seed."""
    seed = secrets.randbelow(MAX_SEED)
    return {**repaint(studio, session, scene_id, prompt, seed, painter, preset, request, progress), "seed": seed}


def use_media(studio: Studio, session: dict, scene_id: str, file: str | None, preset: str,
              request: gr.Request = None) -> dict:
    """Show the user's own image or clip in a scene (checked by its content, stored under a server-made name)."""
    project = studio.project(session, request)
    if not scene_id:
        raise StudioError("pick a scene in the gallery first")
    if not file:
        raise StudioError("choose an image or a video clip to upload")
    name = studio.upload(project, file, "media", session, request)
    project = project.edit_scene(scene_id, media=name)
    return _illustrate(studio, session, request, project, [scene_id], "auto", preset, None)


@gpu
def drop_media(studio: Studio, session: dict, scene_id: str, painter: str, preset: str, request: gr.Request = None,
               progress=gr.Progress()) -> dict:
    """Stop using the uploaded file in a scene: the painter paints it again."""
    project = studio.project(session, request)
    if not scene_id:
        raise StudioError("pick a scene in the gallery first")
    project = project.edit_scene(scene_id, media=None)
    return _illustrate(studio, session, request, project, [scene_id], painter, preset, progress)


def gallery(view_: dict | None) -> list[tuple[str, str]]:
    """The gallery's items: (served image or clip, caption "3 · seed 7 · prompt"), scenes without a visual left out."""
    items = []
    for scene in (view_ or {}).get("scenes", []):
        file = served(scene["visual"])
        if file:
            what = f"your file {shorten(scene['media_label'] or '', 30)}" if scene["media"] else f"seed {scene['seed']}"
            items.append((file, f"{scene['n']} · {what} · {shorten(scene['visual_prompt'] or scene['narration'], 70)}"))
    return items


def select(view_: dict | None, evt: gr.SelectData) -> dict:
    """Clicking a card picks its scene for the editor below the gallery."""
    painted = [s for s in (view_ or {}).get("scenes", []) if s["visual"]]
    if not painted or evt.index is None or evt.index >= len(painted):
        return {}
    return scene_fields(view_, painted[evt.index]["id"])


def scene_fields(view_: dict | None, scene_id: str | None) -> dict:
    for scene in (view_ or {}).get("scenes", []):
        if scene["id"] == scene_id:
            return {"scene": scene["id"], "prompt": scene["visual_prompt"], "seed": scene["seed"],
                    "media_note": (f"Uses your file `{html.escape((scene['media_label'] or '').replace('`', ''))}`."
                                   if scene["media"] else "")}
    return {"scene": None, "prompt": "", "seed": 0, "media_note": ""}


def show(view_: dict | None, picked: str | None = None) -> dict:
    if not view_:
        return {"gallery": [], "style": "", "notes": "", "hint": "", "scene": gr.Dropdown(choices=[], value=None)}
    from .models import hint
    ids = [s["id"] for s in view_["scenes"]]
    picked = picked if picked in ids else (ids[0] if ids else None)
    portrait = view_["aspect"] == "9:16"  # tall cards: more of them a row, each as tall as it is drawn
    return {"gallery": gr.Gallery(gallery(view_), columns=6 if portrait else 4,
                                  elem_classes=["scene-gallery", {"9:16": "portrait", "16:9": "landscape"}.get(
                                      view_["aspect"], "square")]),
            "style": view_["style"], "hint": hint(view_, "painter"), "notes": notes_md(view_, "painter:", "visuals:"),
            **scene_fields(view_, picked), "scene": gr.Dropdown(choices=scene_choices(view_), value=picked)}


# -- layout -----------------------------------------------------------------------------------------------------
def layout(studio: Studio) -> SimpleNamespace:
    with gr.Row(equal_height=False, elem_classes=["tool-row"]):
        painter = gr.Dropdown(["auto", *[p for p in studio.painters if p != "local"]], value="auto", label="Painter",
                              scale=2)
        style = gr.Textbox(label="Style for every scene", placeholder="e.g. flat pastel illustration", scale=3)
        paint_btn = gr.Button("Paint all", variant="primary", scale=1, min_width=140, elem_id="paint-all")
    with gr.Accordion("Painters on this machine", open=False):
        gr.Markdown(providers_md("painter"), elem_classes=["studio-notes"])
    status = gr.Markdown(elem_id="visuals-status", elem_classes=["panel-progress"])
    notes = gr.Markdown(elem_classes=["studio-notes"])
    hint_md = gr.Markdown(elem_id="visuals-hint")
    shown = gr.Gallery(label="Scenes", columns=4, height="auto", object_fit="contain", allow_preview=False,
                       elem_id="visuals-gallery", buttons=["download"])
    with gr.Group():
        with gr.Row(equal_height=True):
            scene = gr.Dropdown([], label="Scene", scale=2, elem_id="visual-scene")
            seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", scale=1)
        prompt = gr.Textbox(label="Visual prompt", lines=2)
        with gr.Row():
            repaint_btn = gr.Button("Repaint with this prompt and seed", size="sm", elem_id="repaint")
            seed_btn = gr.Button("New seed", size="sm", elem_id="new-seed")
            upload = gr.UploadButton("Use my own image or clip", file_types=["image", "video"], size="sm",
                                     elem_id="upload-media")
            drop = gr.Button("Stop using my file", size="sm")
        media_note = gr.Markdown()
    return SimpleNamespace(painter=painter, style=style, paint=paint_btn, status=status, notes=notes, hint=hint_md, gallery=shown, scene=scene,
                           seed=seed, prompt=prompt, repaint=repaint_btn, new_seed=seed_btn, upload=upload, drop=drop,
                           media_note=media_note)


# -- wiring -----------------------------------------------------------------------------------------------------
def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.visuals
    # Long actions show their per-scene progress on the panel's status line.
    gpu_slot = dict(concurrency_id=GPU, concurrency_limit=1, api_visibility="private", show_progress_on=[p.status])
    made = {"view": ui.view, "notes": p.notes, "status": p.status}
    fn, outputs = named(bind(paint_all, studio), made)
    p.paint.click(fn, inputs_kwargs=dict(session=ui.session, painter=p.painter, style=p.style, preset=ui.compose.preset),
                  outputs=outputs, **gpu_slot)
    fn, outputs = named(bind(repaint, studio), made)
    p.repaint.click(fn, inputs_kwargs=dict(session=ui.session, scene_id=p.scene, prompt=p.prompt, seed=p.seed,
                                           painter=p.painter, preset=ui.compose.preset), outputs=outputs, **gpu_slot)
    fn, outputs = named(bind(new_seed, studio), {**made, "seed": p.seed})
    p.new_seed.click(fn, inputs_kwargs=dict(session=ui.session, scene_id=p.scene, prompt=p.prompt, painter=p.painter,
                                            preset=ui.compose.preset), outputs=outputs, **gpu_slot)
    fn, outputs = named(bind(use_media, studio), made)
    p.upload.upload(fn, inputs_kwargs=dict(session=ui.session, scene_id=p.scene, file=p.upload, preset=ui.compose.preset),
                    outputs=outputs, **gpu_slot)
    fn, outputs = named(bind(drop_media, studio), made)
    p.drop.click(fn, inputs_kwargs=dict(session=ui.session, scene_id=p.scene, painter=p.painter,
                                        preset=ui.compose.preset), outputs=outputs, **gpu_slot)
    fields = {"scene": p.scene, "prompt": p.prompt, "seed": p.seed, "media_note": p.media_note}
    fn, outputs = named(select, fields)
    p.gallery.select(fn, inputs=[ui.view], outputs=outputs, concurrency_limit=None, api_visibility="private")
    fn, outputs = named(scene_fields, fields)
    p.scene.input(fn, inputs=[ui.view, p.scene], outputs=outputs, concurrency_limit=None, api_visibility="private")
