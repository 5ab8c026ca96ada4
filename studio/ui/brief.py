"""Panel 1, Brief: a brief or a pasted script, the project's look and language, the storyboard writer; "Write
storyboard" makes a new project (the previous one stays in Projects); "Make the video" does it all in one click: it
writes the storyboard and renders it with the current choices (narration, visuals and the video in one job with one
progress bar, on the Compose panel), and every panel stays open for changes afterwards."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..errors import StudioError
from ..project import ASPECTS
from ..storyboard import MODES
from . import compose
from .common import (GPU, Studio, bind, checked_session, gpu, named, notes_md, progress_to, providers_md,
                     view)

EXAMPLES_DIR = Path(__file__).resolve().parent.parent.parent / "examples"
EXAMPLE_BRIEFS = (
    ("Why the sky is blue, for curious ten-year-olds", "", "soft watercolour, bright daylight", "16:9"),
    ("How honeybees turn nectar into honey", "", "macro photography, warm amber light", "9:16"),
    ("A one-minute welcome to our neighbourhood bakery", "Welcome to Crumb & Co", "cosy film look, morning light", "1:1"),
)
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "ja", "zh")
# A voice in the studio is a name (a Piper or espeak-ng voice, a Bark speaker), never a file path.
VOICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,47}(/[A-Za-z0-9][A-Za-z0-9_+-]{0,47})?$")


def check_voice(voice: str | None) -> str | None:
    """`voice` stripped, None when empty; a name only (paths are refused, so no user path reaches the disk)."""
    voice = (voice or "").strip()
    if not voice:
        return None
    if not VOICE_RE.match(voice):
        raise StudioError(f"`voice` must be a voice name such as 'en_US-joe-medium', 'en-us' or 'en-us+f3', got {voice!r}")
    return voice


def example_rows() -> list[list[str]]:
    """Example briefs and the example scripts shipped in ``examples/`` (source, title, style, aspect)."""
    rows = [list(row) for row in EXAMPLE_BRIEFS]
    for path in sorted(EXAMPLES_DIR.glob("*.md")) + sorted(EXAMPLES_DIR.glob("*.txt")):
        rows.append([path.read_text("utf-8"), "", "clean flat illustration", "16:9"])
    return rows


# -- functions --------------------------------------------------------------------------------------------------
@gpu
def write(studio: Studio, session: dict, source: str, title: str, style: str, aspect: str, language: str,
          target_s: float | None, voice: str, writer: str, mode: str, preset: str = "draft",
          request: gr.Request = None, progress=gr.Progress()) -> dict:
    """Write a storyboard from the brief or script into a new project and make it the session's project."""
    session = checked_session(session)
    owner = studio.owner(session, request)
    target = float(target_s) if target_s else None  # 0 or empty: as long as the script or brief needs
    project = studio.write_storyboard(source or "", mode=mode or "auto", writer=writer or "auto", title=title or None,
                                      aspect=aspect or "16:9", style=(style or "").strip(),
                                      language=(language or "en").strip(), voice=check_voice(voice), target_s=target,
                                      preset=preset, on_progress=progress_to(progress))
    project = studio.workspace.create(project, owner)
    studio.workspace.save_settings(project, preset=preset or "draft")
    shown = view(project)
    return {
        "session": {**session, "project": shown["id"], "job": None},
        "tab": "storyboard",
        "view": shown,
        "notes": notes_md(shown, "storyboard:"),
        "tabs": gr.Tabs(selected="storyboard"),
        "progress": compose.progress_html(None),  # the bar of the previous project's render is not this one's
    }


@gpu
def make_video(studio: Studio, session: dict, source: str, title: str, style: str, aspect: str, language: str,
               target_s: float | None, voice: str, writer: str, mode: str, preset: str = "draft",
               narrator: str = "auto", painter: str = "auto", request: gr.Request = None,
               progress=gr.Progress()) -> dict:
    """One click: write the storyboard (a new project), then render it with the current choices (preset, narrator,
    painter) as one background job that narrates, paints and composes; the Compose panel shows its one progress
    bar, and the project takes back the narration and visuals when it is done."""
    written = write(studio, session, source, title, style, aspect, language, target_s, voice, writer, mode, preset,
                    request, progress)
    started = compose.render(studio, written["session"], preset, narrator, painter, request)
    return {**written, **started, "tab": "compose", "tabs": gr.Tabs(selected="compose")}


def show(view_: dict | None) -> dict:
    """The panel's fields from the current project (after a reload or opening another project)."""
    if not view_:
        return {"notes": ""}
    return {"notes": notes_md(view_, "storyboard:")}


# -- layout -----------------------------------------------------------------------------------------------------
def layout(studio: Studio) -> SimpleNamespace:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            source = gr.Textbox(label="Brief or script", lines=10, max_lines=30, elem_id="brief-source",
                                placeholder="A short brief (\"Why the sky is blue, for kids\") or a whole script "
                                            "to narrate as written: one paragraph per scene.")
            mode = gr.Radio(list(MODES), value="auto", label="Read it as",
                            info="auto: a short paragraph is a brief to write about, anything longer a script")
        with gr.Column(scale=2):
            title = gr.Textbox(label="Title", placeholder="from the script or brief")
            style = gr.Textbox(label="Style", placeholder="e.g. flat pastel illustration",
                               info="applied to every scene's visuals", elem_id="brief-style")
            aspect = gr.Radio(list(ASPECTS), value="16:9", label="Aspect ratio")
            with gr.Row():
                language = gr.Dropdown(list(LANGUAGES), value="en", label="Language", allow_custom_value=True)
                target_s = gr.Number(value=0, minimum=0, maximum=3600, label="Target length (s)",
                                     info="0: as long as it needs")
            with gr.Row():
                voice = gr.Dropdown(["", "en_US-joe-medium", "en-us", "en-gb", "en-us+f3"], value="",
                                    label="Voice", allow_custom_value=True, info="empty: the narrator's default")
                writer = gr.Dropdown(["auto", *studio.writers], value="auto", label="Storyboard writer")
    with gr.Accordion("Storyboard writers on this machine", open=False):
        gr.Markdown(providers_md("storyboard"), elem_classes=["studio-notes"])
    with gr.Row():
        write_btn = gr.Button("Write storyboard", variant="primary", elem_id="write-storyboard", scale=2)
        make_btn = gr.Button("Make the video ▶", variant="secondary", elem_id="make-video", scale=1)
    gr.Markdown("**Write storyboard** to check and change each step (scenes, voice, visuals) before rendering; "
                "**Make the video** writes, narrates, paints and renders with the current choices in one go.",
                elem_classes=["hint"])
    notes = gr.Markdown(elem_classes=["studio-notes"])
    gr.Examples(example_rows(), inputs=[source, title, style, aspect], label="Examples: briefs and scripts",
                example_labels=[row[0] if len(row[0]) < 60 else f"Script: {row[0].splitlines()[0].lstrip('# ')}"
                                for row in example_rows()])
    return SimpleNamespace(source=source, mode=mode, title=title, style=style, aspect=aspect, language=language,
                           target_s=target_s, voice=voice, writer=writer, write=write_btn, make=make_btn, notes=notes)


# -- wiring -----------------------------------------------------------------------------------------------------
def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.brief
    fn, outputs = named(bind(write, studio), {"session": ui.session, "view": ui.view, "notes": p.notes, "tabs": ui.tabs,
                                             "tab": ui.tab, "progress": ui.compose.progress})
    p.write.click(fn, inputs_kwargs=dict(session=ui.session, source=p.source, title=p.title, style=p.style,
                                         aspect=p.aspect, language=p.language, target_s=p.target_s, voice=p.voice,
                                         writer=p.writer, mode=p.mode, preset=ui.compose.preset),
                  outputs=outputs, concurrency_id=GPU, concurrency_limit=1, api_visibility="private")
    fn, outputs = named(bind(make_video, studio), {**compose.job_components(ui), "notes": p.notes, "tabs": ui.tabs,
                                                  "tab": ui.tab})
    p.make.click(fn, inputs_kwargs=dict(session=ui.session, source=p.source, title=p.title, style=p.style,
                                        aspect=p.aspect, language=p.language, target_s=p.target_s, voice=p.voice,
                                        writer=p.writer, mode=p.mode, preset=ui.compose.preset,
                                        narrator=ui.voice.narrator, painter=ui.visuals.painter),
                 outputs=outputs, concurrency_id=GPU, concurrency_limit=1, api_visibility="private")

