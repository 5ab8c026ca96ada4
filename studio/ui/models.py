"""Panel 6, Models: the model catalogue (what each model is for, its size, memory and licence, whether it is on this
machine and which presets use it); download one model or every model of a preset with live progress and Cancel;
delete one; and the setting that lets a run download a missing model the first time it needs it.

Downloads run in the background (`studio.downloads.Downloads`): a click starts one and returns, a timer reads the
progress, so no web-server thread waits on a download. Who may start them is the server's rule
(`studio.downloads.download_allowed`): the user's own ``python app.py`` and a Space may; a shared server only when its
operator sets ``STUDIO_ALLOW_MODEL_DOWNLOADS=1``.
"""

from __future__ import annotations

import html
from types import SimpleNamespace

import gradio as gr

from ..errors import StudioError
from ..presets import TIERS
from .common import Studio, bind, named

HEADERS = ["model", "step", "download", "licence", "here", "presets", "why"]


def _catalog():
    from ..catalog import load_catalog

    return load_catalog()


def _status(entry) -> str:
    from ..model_store import status

    try:
        return status(entry).state
    except StudioError as exc:
        return f"unknown ({exc})"


def table():
    """The catalogue as the panel's table: one row a model, with its state on this machine."""
    import pandas as pd

    from ..catalog import gigabytes

    catalog = _catalog()
    rows = []
    for entry in catalog:
        licence = entry.licence + "".join(f" ⚠ {flag}" for flag in entry.flags)
        rows.append([entry.name, f"{entry.step} · {entry.provider}", gigabytes(entry.download_bytes), licence,
                     _status(entry), ", ".join(catalog.presets_using(entry)), entry.why])
    return pd.DataFrame(rows, columns=HEADERS)


def choices() -> list[tuple[str, str]]:
    from ..catalog import gigabytes

    return [(f"{e.name} · {e.step} · {gigabytes(e.download_bytes)}{' · ' + ', '.join(e.flags) if e.flags else ''}",
             e.name) for e in _catalog() if e.supported]


def details(name: str | None) -> str:
    """One model in full: what it is for, size, memory, licence (with its page) and why it is a default."""
    if not name:
        return ""
    from ..catalog import gigabytes

    try:
        entry = _catalog().get(name)
    except StudioError as exc:
        return html.escape(str(exc))
    flags = "".join(f" · **⚠ {flag}**" for flag in entry.flags)
    return (f"**{html.escape(entry.name)}** (`{html.escape(entry.repo)}`): {entry.step}, {entry.provider} · "
            f"download {gigabytes(entry.download_bytes)} · memory {gigabytes(entry.gpu_bytes)} on a GPU, "
            f"{gigabytes(entry.cpu_bytes)} on a CPU{'' if entry.cpu_ok else ' (GPU only)'} · "
            f"licence [{html.escape(entry.licence)}]({html.escape(entry.licence_url)}){flags} · here: "
            f"{_status(entry)}\n\n{html.escape(entry.why)}")


def progress_md(studio: Studio) -> str:
    """Every download of this server: state, bytes, speed and ETA (or the error)."""
    rows = studio.downloads.all() if studio.downloads is not None else []
    if not rows:
        return "No download yet."
    lines = []
    for row in rows:
        done, total = row["done"] / 1e6, row["total"] / 1e6
        speed = f" · {row['speed'] / 1e6:.1f} MB/s" if row["state"] == "running" and row["speed"] else ""
        eta = f" · about {int(row['eta_s']) // 60}:{int(row['eta_s']) % 60:02d} left" if row.get("eta_s") else ""
        said = html.escape(row["error"] or row["message"] or "")
        lines.append(f"- **{html.escape(row['name'])}**: {row['state']} {row['percent']:.0f}% "
                     f"({done:,.1f} of {total:,.1f} MB){speed}{eta} · {said}")
    return "\n".join(lines)


# -- functions --------------------------------------------------------------------------------------------------
def _allowed(studio: Studio) -> None:
    if not studio.allow_downloads:
        raise StudioError("downloads are off on this server; its operator can allow them with "
                          "STUDIO_ALLOW_MODEL_DOWNLOADS=1, or fetch models with `python -m studio models pull NAME`")


def refresh(studio: Studio, name: str | None = None) -> dict:
    """The table, the picked model's details and every download's progress (the timer calls it while one runs)."""
    running = studio.downloads is not None and studio.downloads.running()
    return {"table": table(), "details": details(name), "progress": progress_md(studio),
            "timer": gr.Timer(active=running)}


def download(studio: Studio, name: str) -> dict:
    """Start downloading one model (in the background)."""
    _allowed(studio)
    if not name:
        raise StudioError("pick a model first")
    studio.downloads.start(name)
    return {"progress": progress_md(studio), "timer": gr.Timer(active=True)}


def download_preset(studio: Studio, preset: str) -> dict:
    """Start downloading every model of a preset that is not on this machine yet."""
    _allowed(studio)
    chosen = studio.preset(preset)
    from ..model_store import status

    wanted = [e for e in _catalog().for_preset(chosen) if e.supported and status(e).state != "present"]
    if not wanted:
        return {"progress": progress_md(studio) + f"\n\nEvery model of {chosen.label} is on this machine."}
    for entry in wanted:
        studio.downloads.start(entry.name)
    return {"progress": progress_md(studio), "timer": gr.Timer(active=True)}


def cancel(studio: Studio, name: str) -> dict:
    if not name:
        raise StudioError("pick the model whose download to cancel")
    if studio.downloads is None or studio.downloads.cancel(name) is None:
        raise StudioError(f"no download of {name} is running")
    return {"progress": progress_md(studio)}


def delete(studio: Studio, name: str) -> dict:
    """Remove a model's files from this machine (the hub cache); a download in progress must be cancelled first."""
    _allowed(studio)
    if not name:
        raise StudioError("pick a model first")
    from ..catalog import gigabytes
    from ..model_store import remove

    entry = _catalog().get(name)
    state = studio.downloads.state(entry.name) if studio.downloads is not None else None
    if state and state["state"] == "running":
        raise StudioError(f"{entry.name} is downloading: cancel it first")
    freed = remove(entry)
    gr.Info(f"Deleted {entry.name}: {gigabytes(freed)} freed.", title="Models")
    return {"table": table(), "details": details(name)}


def set_first_use(studio: Studio, enabled: bool) -> dict:
    """The app's setting: a run may download a missing model the first time it needs it."""
    _allowed(studio)
    studio.download_first_use = bool(enabled)
    return {}


def show_details(name: str) -> dict:
    return {"details": details(name)}


# -- layout -----------------------------------------------------------------------------------------------------
def layout(studio: Studio) -> SimpleNamespace:
    gr.Markdown("The models that write, voice and paint with AI. Nothing is downloaded unless you ask: download a "
                "model here (or `python -m studio models pull NAME`), or let a run fetch what it needs the first "
                "time. Files go to the Hugging Face cache (`HF_HOME`); sizes are approximate. A ⚠ non-commercial "
                "model may not be used for commercial work; a ⚠ gated one needs its licence accepted on its page "
                "and `HF_TOKEN` set.", elem_classes=["studio-notes"])
    models = gr.Dataframe(table(), interactive=False, elem_id="models-table", max_height=420, wrap=True,
                          column_widths=["14%", "15%", "8%", "14%", "8%", "13%", "28%"])
    with gr.Row(equal_height=False, elem_classes=["tool-row"]):
        model = gr.Dropdown(choices(), value=None, label="Model", scale=3, elem_id="models-pick")
        download_btn = gr.Button("Download", variant="primary", size="sm", elem_id="models-download",
                                 interactive=studio.allow_downloads)
        cancel_btn = gr.Button("Cancel", variant="stop", size="sm", elem_id="models-cancel")
        delete_btn = gr.Button("Delete from this machine", size="sm", elem_id="models-delete",
                               interactive=studio.allow_downloads)
    details_md = gr.Markdown(elem_id="models-details")
    with gr.Row(equal_height=False, elem_classes=["tool-row"]):
        preset = gr.Dropdown([(name.title(), name) for name in TIERS], value="standard", label="Preset", scale=2)
        preset_btn = gr.Button("Download the preset's models", size="sm", elem_id="models-preset",
                               interactive=studio.allow_downloads)
        first_use = gr.Checkbox(bool(studio.download_first_use), label="Download a missing model the first time a "
                                "step needs it", scale=3, interactive=studio.allow_downloads, elem_id="models-first-use")
    if not studio.allow_downloads:
        gr.Markdown("Downloads are off on this server (its operator allows them with "
                    "`STUDIO_ALLOW_MODEL_DOWNLOADS=1`).", elem_classes=["studio-notes"])
    progress = gr.Markdown(progress_md(studio), elem_id="models-progress")
    timer = gr.Timer(1.0, active=False)
    return SimpleNamespace(table=models, model=model, download=download_btn, cancel=cancel_btn, delete=delete_btn,
                           details=details_md, preset=preset, preset_download=preset_btn, first_use=first_use,
                           progress=progress, timer=timer)


def show(view_: dict | None) -> dict:
    return {}


# -- wiring -----------------------------------------------------------------------------------------------------
def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.models
    light = dict(concurrency_limit=None, api_visibility="private")
    fn, outputs = named(bind(refresh, studio), {"table": p.table, "details": p.details, "progress": p.progress,
                                                "timer": p.timer})
    p.timer.tick(fn, inputs=[p.model], outputs=outputs, show_progress="hidden", **light)
    ui.models_tab.select(fn, inputs=[p.model], outputs=outputs, show_progress="hidden", **light)
    fn, outputs = named(show_details, {"details": p.details})
    p.model.input(fn, inputs=[p.model], outputs=outputs, **light)
    fn, outputs = named(bind(download, studio), {"progress": p.progress, "timer": p.timer})
    p.download.click(fn, inputs=[p.model], outputs=outputs, **light)
    fn, outputs = named(bind(download_preset, studio), {"progress": p.progress, "timer": p.timer})
    p.preset_download.click(fn, inputs=[p.preset], outputs=outputs, **light)
    fn, outputs = named(bind(cancel, studio), {"progress": p.progress})
    p.cancel.click(fn, inputs=[p.model], outputs=outputs, **light)
    fn, outputs = named(bind(delete, studio), {"table": p.table, "details": p.details})
    p.delete.click(fn, inputs=[p.model], outputs=outputs, **light)
    fn, outputs = named(bind(set_first_use, studio), {})
    p.first_use.input(fn, inputs=[p.first_use], outputs=outputs, **light)


# -- what the step panels say about models that are not here --------------------------------------------------------
STEP_OF = {"storyboard": "write the storyboard", "narrator": "narrate these scenes", "painter": "paint these scenes"}


def wanted(view_: dict | None, kind: str, asked: str | None = None) -> list:
    """The catalogue models `auto` would use for step `kind` of this project if their weights were here."""
    if not view_:
        return []
    from ..downloads import wanted_for_run
    from ..presets import load_preset

    settings = view_.get("settings") or {}
    try:
        preset = load_preset(settings.get("preset") or "draft")
        chosen = {"narrator": None, "painter": None, "writer": None}
        key = {"storyboard": "writer", "narrator": "narrator", "painter": "painter"}[kind]
        chosen[key] = asked or settings.get(key) or "auto"
        return wanted_for_run(preset, **chosen)
    except (StudioError, OSError, ImportError):
        return []


def hint(view_: dict | None, kind: str) -> str:
    """"SDXL-Lightning would paint these scenes: download 6.9 GB in the Models panel", or "" when nothing is missing."""
    from ..catalog import gigabytes

    missing = wanted(view_, kind)
    if not missing:
        return ""
    entry = missing[0]
    flags = f" ({', '.join(entry.flags)})" if entry.flags else ""
    return (f"⬇ **{html.escape(entry.name)}** would {STEP_OF[kind]}{flags}: download "
            f"{gigabytes(entry.download_bytes)} in the **7 · Models** panel (or `python -m studio models pull "
            f"{html.escape(entry.name)}`); until then `auto` uses what is here.")


def fetch_first_use(studio: Studio, view_: dict | None, kind: str, asked: str | None = None) -> str:
    """Download on first use, from a panel: when the setting is on, start the missing model's download in the
    background (the panel goes on with what is here) and say so; "" when there is nothing to do."""
    if not (studio.download_first_use and studio.allow_downloads and studio.downloads is not None):
        return ""
    missing = wanted(view_, kind, asked)
    for entry in missing:
        studio.downloads.start(entry.name)
    names = ", ".join(e.name for e in missing)
    return (f" ⬇ Downloading {names} in the background (7 · Models panel); this run used what is here: run it "
            "again when the download is done.") if missing else ""
