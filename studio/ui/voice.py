"""Panel 3, Voice: the narrator and voice; "Narrate all" and a card per scene with its audio, its length, its text
(edit it and narrate only that scene again), and your own voice for it: record or upload a take (it is checked,
kept in the project, trimmed, loudness-matched and its words timed to the card's text), or use the narrator again."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from ..errors import StudioError
from ..voice import narrate
from .brief import check_voice
from .common import (GPU, Studio, bind, blank_message, blank_scenes, fix, gpu, named, notes_md, progress_to,
                     providers_md, served, shorten, view)

# Common names; any voice name may be typed (Piper, espeak-ng, Bark speaker presets).
VOICES = ("", "en_US-joe-medium", "en-us", "en-gb", "en-us+f3", "de", "fr", "es", "af_heart", "af_bella", "am_michael",
          "bf_emma", "bm_george", "ff_siwis", "ef_dora", "v2/en_speaker_6", "v2/en_speaker_0")


def _narrate(studio: Studio, session: dict, request: Any, project, only, narrator: str, voice: str, preset: str,
             progress: Any) -> dict:
    voice_ = check_voice(voice)
    if voice_ != project.voice:
        project = replace(project, voice=voice_)
    chosen = studio.preset(preset)
    studio.check(project, chosen)  # the server's limits, before any narration is made
    started = time.perf_counter()
    report = progress_to(progress)
    report(0.0, "starting the narrator (the first time loads its voice)")
    project = narrate(project, narrator=narrator or "auto", preset=chosen, only=only, media_root=project.folder,
                      on_progress=report)
    shown = view(studio.save(project, session, request))
    from .models import fetch_first_use

    fetching = fetch_first_use(studio, shown, "narrator", narrator)
    count = len(only) if only is not None else len(shown["scenes"])
    said = f"{count} scene{'s' if count != 1 else ''}" if only is None or count != 1 else \
        f"scene {[s['id'] for s in shown['scenes']].index(only[0]) + 1}"
    recorded = sum(1 for s in shown["scenes"] if s["recording"] and (only is None or s["id"] in only))
    own = f" ({recorded} with your own recording)" if recorded and count > 1 else \
        " with your own recording" if recorded else ""
    return {"view": shown, "notes": notes_md(shown, "narrator:", "recordings:"),
            "status": f"✓ Narrated {said}{own} in {time.perf_counter() - started:.1f} s.{fetching}"}


# -- functions --------------------------------------------------------------------------------------------------
@gpu
def narrate_all(studio: Studio, session: dict, narrator: str, voice: str, preset: str, request: gr.Request = None,
                progress=gr.Progress()) -> dict:
    """Narrate every scene (scenes whose text, voice and narrator did not change are reused, not spoken again). An
    empty scene does not stop the others: it is left out, flagged on its card and named in a warning."""
    project = studio.project(session, request)
    blank = blank_scenes(view(project))
    if blank and len(blank) == len(project.scenes):
        raise StudioError(blank_message(blank))
    only = [s.id for n, s in enumerate(project.scenes, start=1) if n not in blank] if blank else None
    out = _narrate(studio, session, request, project, only, narrator, voice, preset, progress)
    if blank:
        gr.Warning(blank_message(blank), title="Not narrated")
        out["status"] = f"{out['status']} ⚠️ {blank_message(blank)}."  # a redraw leaves the status line alone
    return out


@gpu
def narrate_scene(studio: Studio, session: dict, scene_id: str, narration: str, narrator: str, voice: str,
                  preset: str, request: gr.Request = None, progress=gr.Progress()) -> dict:
    """Take the card's (edited) text as the scene's narration and narrate only that scene."""
    project = studio.project(session, request)
    scene = project.scene(scene_id)
    text = (narration or "").strip()
    if not text and scene.duration_s is None and not scene.recording:
        raise StudioError("the narration is empty: write what the narrator says (or give the scene a duration in the "
                          "Storyboard table to keep it silent)")
    if text != scene.narration:
        project = project.edit_scene(scene_id, narration=text)
    return _narrate(studio, session, request, project, [scene_id], narrator, voice, preset, progress)


@gpu
def use_recording(studio: Studio, session: dict, scene_id: str, file: Any, narration: str, preset: str,
                  request: gr.Request = None, progress=gr.Progress()) -> dict:
    """Narrate a scene with the user's own recording (made in the browser or uploaded). The file is checked by its
    content (the job runner's upload checks) and kept in the project under a server-made name; the scene's words
    are timed to the card's (edited) text. A file that cannot be used changes nothing and is not kept."""
    from ..media import probe

    project = studio.project(session, request)
    scene = project.scene(scene_id)
    if not file:
        raise StudioError("record your narration (the microphone) or upload an audio file for this scene first")
    chosen = studio.preset(preset)
    owner = studio.owner(session, request)
    name = studio.upload(project, file, "recording", session, request)
    kept = project.folder / name
    try:
        length_s = probe(kept).duration_s
        if length_s > studio.limits.max_scene_s:
            raise StudioError(f"the recording lasts {length_s:.0f} s; this server's limit is "
                              f"{studio.limits.max_scene_s:g} s a scene: split it over several scenes")
        text = (narration or "").strip()
        edits = {"narration": text} if text != scene.narration else {}
        project = project.edit_scene(scene_id, recording=name, **edits)
        studio.check(project, chosen)
        started = time.perf_counter()
        project = narrate(project, preset=chosen, only=[scene_id], media_root=project.folder,
                          on_progress=progress_to(progress))
    except BaseException:
        kept.unlink(missing_ok=True)  # a take that cannot be used is not kept
        try:
            studio.runner.uploads.delete(owner, Path(name).stem)
        except StudioError:
            pass
        raise
    shown = view(studio.save(project, session, request))
    number = [s["id"] for s in shown["scenes"]].index(scene_id) + 1
    made = shown["scenes"][number - 1]
    return {"view": shown, "notes": notes_md(shown, "narrator:", "recordings:"),
            "status": f"✓ Scene {number} uses your recording, {made['audio_s']:.1f} s (trimmed and "
                      f"loudness-matched in {time.perf_counter() - started:.1f} s)."}


@gpu
def clear_recording(studio: Studio, session: dict, scene_id: str, narration: str, narrator: str, voice: str,
                    preset: str, request: gr.Request = None, progress=gr.Progress()) -> dict:
    """Use the narrator for a scene instead of the user's recording: the scene is narrated again from its text (a
    scene without text is left for the user to write it)."""
    project = studio.project(session, request)
    scene = project.scene(scene_id)
    text = (narration or "").strip()
    project = project.edit_scene(scene_id, recording=None, **({"narration": text} if text != scene.narration else {}))
    number = [s.id for s in project.scenes].index(scene_id) + 1
    if not text and scene.duration_s is None:
        shown = view(studio.save(project, session, request))
        return {"view": shown, "notes": notes_md(shown, "narrator:", "recordings:"),
                "status": f"Scene {number} no longer uses your recording; write its narration and press Narrate."}
    return _narrate(studio, session, request, project, [scene_id], narrator, voice, preset, progress)


def cards(view_: dict | None) -> list[dict]:
    """One card per scene: number, id, text, its audio (served copy) and length, and whether it is the user's own
    recording."""
    out = []
    for scene in (view_ or {}).get("scenes", []):
        empty = not (scene["narration"] or "").strip()
        recorded = bool(scene.get("recording"))
        if recorded and scene["audio_s"]:
            length = f"your recording, {scene['audio_s']:.1f} s" + ("" if not empty else " (no text: no captions)")
            empty = False
        elif recorded:
            length = "your recording, not prepared yet: press Narrate"
            empty = False
        elif scene["audio_s"]:
            length = f"{scene['audio_s']:.1f} s"
        elif empty and scene["duration_s"] is None:
            length = "⚠️ empty: write its narration (and press Narrate) or delete the scene in the Storyboard panel"
        elif empty:
            length = f"silent for {scene['duration_s']:g} s"
        else:
            length = "not narrated yet"
        out.append({"n": scene["n"], "id": scene["id"], "narration": scene["narration"], "audio": served(scene["audio"]),
                    "length": length, "empty": empty and scene["duration_s"] is None, "recorded": recorded,
                    "recording_label": scene.get("recording_label")})
    return out


def show(view_: dict | None) -> dict:
    if not view_:
        return {"notes": "", "voice": "", "hint": ""}
    from .models import hint

    return {"notes": notes_md(view_, "narrator:", "recordings:"), "voice": view_["voice"] or "",
            "hint": hint(view_, "narrator")}


# -- layout -----------------------------------------------------------------------------------------------------
def layout(studio: Studio) -> SimpleNamespace:
    with gr.Row(equal_height=False, elem_classes=["tool-row"]):
        narrator = gr.Dropdown(["auto", *studio.narrators], value="auto", label="Narrator", scale=2)
        voice = gr.Dropdown(list(VOICES), value="", label="Voice", allow_custom_value=True, scale=2,
                            info="empty: the narrator's default (Piper: en_US-joe-medium; espeak-ng and Kokoro: "
                                 "from the language; Bark: v2/en_speaker_6). A Kokoro voice (af_heart...) or a Bark "
                                 "preset (v2/...) makes auto pick that narrator")
        narrate_btn = gr.Button("Narrate all", variant="primary", scale=1, min_width=160, elem_id="narrate-all")
    with gr.Accordion("Narrators on this machine", open=False):
        gr.Markdown(providers_md("narrator"), elem_classes=["studio-notes"])
    status = gr.Markdown(elem_id="voice-status", elem_classes=["panel-progress"])
    notes = gr.Markdown(elem_classes=["studio-notes"])
    hint_md = gr.Markdown(elem_id="voice-hint")
    cards_area = gr.Column(elem_id="voice-cards")
    return SimpleNamespace(narrator=narrator, voice=voice, narrate=narrate_btn, status=status, notes=notes,
                           hint=hint_md, cards=cards_area)


# -- wiring -----------------------------------------------------------------------------------------------------
def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.voice
    # Long actions show their per-scene progress on the panel's status line (a dimmed button says too little).
    gpu_slot = dict(concurrency_id=GPU, concurrency_limit=1, api_visibility="private", show_progress_on=[p.status])
    fn, outputs = named(bind(narrate_all, studio), {"view": ui.view, "notes": p.notes, "status": p.status})
    p.narrate.click(fn, inputs_kwargs=dict(session=ui.session, narrator=p.narrator, voice=p.voice,
                                           preset=ui.compose.preset), outputs=outputs, **gpu_slot)

    with p.cards:
        @gr.render(inputs=[ui.view])
        def scene_cards(view_: dict | None) -> None:
            if not view_:
                gr.Markdown("Write a storyboard first (Brief panel).")
                return
            for card in cards(view_):
                with gr.Group(elem_classes=["scene-card"]):
                    with gr.Row(equal_height=True):
                        gr.Markdown(f"**Scene {card['n']}** · {card['length']}",
                                    elem_classes=["scene-head", *(["voice-empty"] if card["empty"] else [])])
                    with gr.Row(equal_height=True):
                        # A component made inside gr.render is not interactive unless it says so.
                        text = gr.Textbox(card["narration"], label="Narration", lines=2, max_lines=8, scale=3,
                                          interactive=True, key=f"voice-text-{card['id']}",
                                          elem_classes=["voice-text"])
                        gr.Audio(card["audio"], label=f"Scene {card['n']}", type="filepath", interactive=False,
                                 scale=2, key=f"voice-audio-{card['id']}-{card['audio']}",
                                 elem_classes=["voice-audio"], buttons=["download"])
                        button = gr.Button("Narrate", size="sm", scale=0, min_width=110,
                                           key=f"voice-narrate-{card['id']}", elem_classes=["voice-narrate"])
                    with gr.Row(equal_height=True, elem_classes=["voice-own"]):
                        # Your own voice: a take recorded here or an uploaded file narrates the scene as soon as
                        # it is there (the input stays empty: the card's player above plays what is used).
                        said = (f"Your voice: {shorten(card['recording_label'] or 'your recording', 40)} is used; "
                                "record or upload another take" if card["recorded"] else
                                "Your voice: record or upload this scene's narration")
                        take = gr.Audio(None, sources=["upload", "microphone"], type="filepath", interactive=True,
                                        label=said, scale=3,
                                        key=f"voice-take-{card['id']}", elem_classes=["voice-take"])
                        drop = gr.Button("Use the narrator instead", size="sm", scale=0, min_width=110,
                                         visible=card["recorded"], key=f"voice-drop-{card['id']}",
                                         elem_classes=["voice-drop"])
                    made = {"view": ui.view, "notes": p.notes, "status": p.status}
                    fn_, outputs_ = named(fix(use_recording, studio=studio, scene_id=card["id"]), made)
                    for event, name in ((take.upload, "upload"), (take.stop_recording, "record")):
                        event(fn_, inputs_kwargs=dict(session=ui.session, file=take, narration=text,
                                                      preset=ui.compose.preset), outputs=outputs_,
                              key=f"voice-take-{name}-{card['id']}", **gpu_slot)
                    fn_, outputs_ = named(fix(clear_recording, studio=studio, scene_id=card["id"]), made)
                    drop.click(fn_, inputs_kwargs=dict(session=ui.session, narration=text, narrator=p.narrator,
                                                       voice=p.voice, preset=ui.compose.preset),
                               outputs=outputs_, key=f"voice-drop-click-{card['id']}", **gpu_slot)
                    fn_, outputs_ = named(fix(narrate_scene, studio=studio, scene_id=card["id"]),
                                          {"view": ui.view, "notes": p.notes, "status": p.status})
                    # The key keeps the event the same across re-renders, so a click that races a redraw still
                    # reaches it (a redraw would otherwise replace it under the button).
                    button.click(fn_, inputs_kwargs=dict(session=ui.session, narration=text, narrator=p.narrator,
                                                         voice=p.voice, preset=ui.compose.preset),
                                 outputs=outputs_, key=f"voice-narrate-click-{card['id']}", **gpu_slot)

