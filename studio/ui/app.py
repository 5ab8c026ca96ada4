"""The app builder: the six panels in tabs over one per-user session, the API endpoints, and how it is served.

    from studio.ui import build_app, launch
    launch()                                    # python app.py: 127.0.0.1:7860, offline defaults

Per-user state is the browser's session (`gr.BrowserState`: an anonymous key, the open project's id, the running
job's id) and a `gr.State` view of the project that every panel draws from; the project itself is on disk. Nothing
about a user lives in a module global.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from .. import providers
from ..errors import StudioError
from . import brief, compose, endpoints, models, projects, storyboard, visuals, voice
from .common import TABS, Studio, bind, checked_session, fix, named, shorten, view
from .workspace import Workspace, default_data_dir

# A full queue answers "busy" at once instead of piling up work (room for a burst of waits; heavy events are held to
# their concurrency groups anyway).
QUEUE_MAX_SIZE = 128
CACHE_MAX_AGE_S = (3600, 24 * 3600)  # remove served copies older than a day, checking every hour
# System fonts only: the page loads nothing from outside the server.
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate",
                       font=["system-ui", "Segoe UI", "Roboto", "sans-serif"],
                       font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"])
CSS = """
.studio-header h1 { margin-bottom: 0; }
.studio-header p { margin-top: 2px; color: var(--body-text-color-subdued); }
.studio-notes { font-size: 0.85em; color: var(--body-text-color-subdued); }
.studio-notes ul { margin: 0; }
.scene-card { margin-bottom: 8px; }
.scene-head p { margin: 6px 10px 0; }
.render-progress { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px; }
.render-progress .bar { height: 14px; background: var(--neutral-200); border-radius: 7px; overflow: hidden; }
.render-progress .fill { height: 100%; background: var(--color-accent); transition: width 0.6s ease; }
.render-progress.done .fill { background: #16a34a; }
.render-progress.failed .fill, .render-progress.canceled .fill,
.render-progress.interrupted .fill { background: #dc2626; }
.render-progress.refused { border-color: #dc2626; color: #b91c1c; }
.render-progress .label { margin-top: 6px; font-size: 0.9em; }
.render-progress.idle { color: var(--body-text-color-subdued); }
.preset-table table { font-size: 0.85em; }
.preset-table td:nth-child(-n+2), .preset-table th:nth-child(-n+2) { white-space: nowrap; }
#storyboard-table *, #projects-table *, #jobs-table * { font-family: var(--font); }
.scene-tools, .tool-row { align-items: end; }
.studio-notice { border-left: 4px solid var(--color-accent); padding: 4px 12px;
                 background: var(--background-fill-secondary); }
.next-panel { max-width: 240px; margin-left: auto; }
.voice-empty p { color: #b91c1c; }
.panel-progress { min-height: 72px; }
#visuals-gallery .fixed-height { max-height: none; min-height: 0; }
#visuals-gallery.portrait .thumbnail-item { aspect-ratio: 9 / 16; }
#visuals-gallery.landscape .thumbnail-item { aspect-ratio: 16 / 9; }
.scene-tools button { margin-bottom: 4px; }
"""


# The browser's saved session is encrypted in the page by Gradio with a key that Gradio sends to the page, so that key
# is no secret: it is a fixed, public name here, and nothing secret is ever sent. The session holds only a random
# anonymous key (the browser's own capability) and ids that every handler checks against the caller.
SESSION_KEY = "studio-session-v1"
# Gradio's queue runs at most this many events at once, and its synchronous handlers get a thread limiter of this size
# of their own (so they never take the HTTP API's: anyio's default 40). Every open /wait (an async event: no thread)
# holds one of these slots, so there are slots for all the waits the caps allow and as many again for other events;
# threads are made only as handlers need them (the long ones share one "gpu" slot).
GRADIO_THREADS = endpoints.WAITS_TOTAL + 40


def APP_LIMITS() -> Any:  # noqa: N802 (a constant made on use: studio.server loads lazily)
    """The limits of the app's own job runner (``python app.py``, one user on their own machine): the server's
    defaults, except that frames may be 4K, so every tier of the product (Maximum too) renders from its own UI.
    ``studio serve`` keeps its own limits (``--max-pixels``), and the panel shows a tier over them as unavailable."""
    from dataclasses import replace

    from ..server import Limits

    return replace(Limits(), max_pixels=3840 * 2160)


def make_studio(data_dir: Path | str | None = None, runner: Any = None, single_user: str | None = None,
                local: bool = True) -> Studio:
    """The app's shared parts: the job runner (a new one for `data_dir` unless given), the workspace in the same
    data folder, and the provider choices of this installation (`single_user`: see `Studio`); `local`: the studio
    runs on its user's own machine (model downloads allowed, see `studio.downloads.download_allowed`)."""
    from ..downloads import Downloads, download_allowed, first_use_enabled

    if runner is None:
        from ..server import JobRunner

        runner = JobRunner(Path(data_dir) if data_dir is not None else default_data_dir(), limits=APP_LIMITS())
    return Studio(workspace=Workspace(runner.data_dir), runner=runner, narrators=providers.names("narrator"),
                  painters=providers.names("painter"), writers=providers.names("storyboard"), single_user=single_user,
                  allow_downloads=download_allowed(local), download_first_use=first_use_enabled(),
                  downloads=Downloads())


def header(view_: dict | None) -> str:
    if not view_:
        return "# Studio\nBrief → storyboard → voice → visuals → compose. Start with a brief or a script."
    seconds = sum((s["audio_s"] or s["duration_s"] or 0) for s in view_["scenes"])
    length = f" · about {seconds:.0f} s narrated" if seconds else ""
    return (f"# Studio\n**{shorten(view_['title'], 80)}** · {len(view_['scenes'])} scenes · {view_['aspect']}{length}"
            f" · <small>project `{view_['id']}`</small>")


# -- functions --------------------------------------------------------------------------------------------------
def restore(studio: Studio, session: Any, tab: Any = None, request: gr.Request = None) -> dict:
    """On page load: the browser's session (a new anonymous key the first time), its project if it still has one,
    and the panel it was on (`tab`: kept in a browser state of its own, so a tab click never races a handler that
    changes the session)."""
    session = checked_session(session)
    shown = None
    if session.get("project"):
        try:
            shown = view(studio.project(session, request))
        except StudioError:
            session = {**session, "project": None, "job": None}  # deleted, or not this user's
    tab = tab if tab in TABS else "brief"
    return {"session": session, "view": shown, "tabs": gr.Tabs(selected=tab if shown or tab == "projects" else "brief")}


def remember_tab(tab: str) -> dict:
    """The open panel, for the browser to keep (a reload opens it again)."""
    return {"tab": tab if tab in TABS else "brief"}


def go_to(tab: str) -> dict:
    """A "Next" button: open panel `tab` (and remember it)."""
    return {**remember_tab(tab), "tabs": gr.Tabs(selected=tab)}


TAB_PANELS = (("brief", "Brief", brief), ("storyboard", "Storyboard", storyboard), ("voice", "Voice", voice),
              ("visuals", "Visuals", visuals), ("compose", "Compose", compose), ("projects", "Projects", projects),
              ("models", "Models", models))


def bind_tab(fn, tab_id: str):
    return fix(fn, tab=tab_id)


PANELS = (("brief", brief), ("storyboard", storyboard), ("voice", voice), ("visuals", visuals), ("compose", compose))


def redraw(ui: SimpleNamespace, view_: dict | None, picked: str | None, previewed: str | None = None,
           limits: Any = None) -> dict:
    """Every panel's fields from the project view (after any step, a reload or opening a project); the scene pickers
    stay on the scenes the user picked (`picked` in Visuals, `previewed` in Compose)."""
    out: dict = {ui.header: header(view_)}
    for name, module in PANELS:
        panel = getattr(ui, name)
        if module is visuals:
            shown = module.show(view_, picked)
        elif module is compose:
            shown = module.show(view_, previewed, limits)
        else:
            shown = module.show(view_)
        for key, value in shown.items():
            out[getattr(panel, key)] = value
    return out


def redraw_outputs(ui: SimpleNamespace) -> list:
    """Every component `redraw` may change."""
    names = {"brief": ["notes"], "storyboard": ["table", "title", "scene", "notice"], "voice": ["notes", "voice", "hint"],
             "visuals": ["gallery", "style", "notes", "hint", "scene", "prompt", "seed", "media_note"],
             "compose": ["scene", "preset", "estimate", "captions", "caption_style", "music_volume", "transition",
                         "music_note",
                         "watermark_note", "caption_font_note", "presets", "video", "download"]}
    return [ui.header] + [getattr(getattr(ui, panel), key) for panel, keys in names.items() for key in keys]


# -- layout and wiring ------------------------------------------------------------------------------------------
def build_app(studio: Studio | None = None, *, data_dir: Path | str | None = None, runner: Any = None) -> gr.Blocks:
    """The studio as a ``gr.Blocks`` app (not launched): seven panels, the per-user session, the API endpoints.

    Args:
        studio: The shared parts (workspace, job runner); default: `make_studio(data_dir, runner)`.
        data_dir: The data folder (default: `studio.ui.workspace.default_data_dir`).
        runner: The background job runner that renders.
    """
    studio = studio or make_studio(data_dir, runner)
    with gr.Blocks(title="Studio", delete_cache=CACHE_MAX_AGE_S) as demo:
        endpoints.register(studio)  # first, so the API's readable names are theirs (UI events are private)
        session = gr.BrowserState(None, storage_key="studio-session", secret=SESSION_KEY)
        open_tab = gr.BrowserState("brief", storage_key="studio-tab", secret=SESSION_KEY)
        project_view = gr.State(None)
        head = gr.Markdown(header(None), elem_classes=["studio-header"])
        panels, tab_of, nexts = {}, {}, {}
        with gr.Tabs(selected="brief") as tabs:
            for number, (tab_id, label, module) in enumerate(TAB_PANELS, start=1):
                with gr.Tab(f"{number} · {label}", id=tab_id, render_children=True) as tab:
                    panels[tab_id] = module.layout(studio)
                    if number < 5:  # Brief ... Visuals lead on to the next panel
                        following = TAB_PANELS[number]
                        nexts[following[0]] = gr.Button(f"Next: {following[1]} →", size="sm", variant="secondary",
                                                        elem_id=f"next-{following[0]}", elem_classes=["next-panel"])
                tab_of[tab_id] = tab
        ui = SimpleNamespace(session=session, tab=open_tab, view=project_view, tabs=tabs, header=head,
                             projects_tab=tab_of["projects"], models_tab=tab_of["models"], models=panels["models"],
                             brief=panels["brief"], storyboard=panels["storyboard"], voice=panels["voice"],
                             visuals=panels["visuals"], compose=panels["compose"], projects=panels["projects"])
        visuals_ui, compose_ui = ui.visuals, ui.compose
        for tab_id, tab in tab_of.items():
            fn, outputs = named(bind_tab(remember_tab, tab_id), {"tab": open_tab})
            tab.select(fn, outputs=outputs, concurrency_limit=None, api_visibility="private", show_progress="hidden")
        for tab_id, button in nexts.items():
            fn, outputs = named(bind_tab(go_to, tab_id), {"tab": open_tab, "tabs": tabs})
            button.click(fn, outputs=outputs, concurrency_limit=None, api_visibility="private", show_progress="hidden")
        for module in (brief, storyboard, voice, visuals, compose, projects, models):
            module.wire(studio, ui)

        outputs = redraw_outputs(ui)
        project_view.change(lambda v, picked, previewed: redraw(ui, v, picked, previewed, studio.limits),
                            inputs=[project_view, visuals_ui.scene, compose_ui.scene],
                            outputs=outputs, concurrency_limit=None, api_visibility="private", show_progress="hidden")
        fn, load_outputs = named(bind(restore, studio), {"session": session, "view": project_view, "tabs": tabs})
        poll, poll_outputs = named(bind(compose.poll, studio), compose.job_components(ui))
        # A reload finds the project again, then reattaches to its render job (the timer runs while it does).
        demo.load(fn, inputs_kwargs=dict(session=session, tab=open_tab), outputs=load_outputs, concurrency_limit=None,
                  api_visibility="private").then(poll, inputs_kwargs=dict(session=session), outputs=poll_outputs,
                                                 concurrency_limit=None, api_visibility="private")
    return demo


def warm_up() -> None:
    """In the background while the server starts: measure each tier's encoder once (the render estimates of the
    Compose panel use it, `studio.estimate.encode_rate`), so the first redraw of a project does not wait for it."""
    import threading

    def measure() -> None:
        from ..estimate import encode_rate
        from ..presets import TIERS, load_preset

        for name in TIERS:
            try:
                encode_rate(load_preset(name))
            except Exception:  # noqa: BLE001 - an estimate is measured again when asked; never stop a server for it
                pass

    threading.Thread(target=measure, name="studio-warm-up", daemon=True).start()


def launch_options(studio: Studio) -> dict:
    """What `launch` and `mount_gradio_app` share: the upload limit (the job runner's, so the page refuses what the
    runner would), no extra served folders, the look."""
    from starlette.middleware import Middleware

    from .common import ServedGuard

    return dict(max_file_size=studio.runner.uploads.limits.max_bytes, allowed_paths=[], theme=THEME, css=CSS,
                footer_links=["api"], app_kwargs={"middleware": [Middleware(ServedGuard)]})


def launch(data_dir: Path | str | None = None, *, server_name: str | None = None, server_port: int | None = None,
           **kwargs: Any):
    """Build the studio and serve it (``python app.py``): 127.0.0.1:7860 unless ``GRADIO_SERVER_NAME`` /
    ``GRADIO_SERVER_PORT`` (or the arguments) say otherwise. Renders run in this process's job runner.

    Raises:
        SystemExit: (status 2) the job runner cannot start (its data folder is in use by another server, or its
            journal is damaged); the reason is printed on one line first, as ``studio serve`` prints it.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        studio = make_studio(data_dir)
    except StudioError as exc:  # a data folder in use, a damaged journal: one line, as `studio serve` prints it
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    warm_up()
    try:
        demo = build_app(studio)
        demo.max_threads = GRADIO_THREADS  # before queue(): the queue's slots
        demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=1)
        kwargs.setdefault("max_threads", GRADIO_THREADS)
        name = server_name or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
        port = server_port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
        return demo.launch(server_name=name, server_port=port, **launch_options(studio), **kwargs)
    finally:
        if not kwargs.get("prevent_thread_lock"):
            studio.runner.close()  # running jobs stop as `interrupted` and resume at the next start


def mount(app: Any, runner: Any, users: Any = None, path: str = "/") -> Any:
    """Serve the studio inside the HTTP API's FastAPI app (``python -m studio serve``): one server, one job runner.

    Args:
        app: The app of `studio.server.create_app`.
        runner: Its job runner (the studio renders with it, so API and studio jobs share one queue).
        users: `studio.server.auth.Users` when the server has authentication: the studio then asks for the same user name
            and secret (a sign-in page), and each user sees their own projects and jobs. Without it (a loopback
            server) every browser is the API's one ``local`` user, so studio and API show the same jobs.
        path: Where the studio lives in the app.
    """
    from ..server.api import LOCAL_USER

    studio = make_studio(runner=runner, single_user=None if users is not None else LOCAL_USER, local=users is None)
    demo = build_app(studio)
    demo.max_threads = GRADIO_THREADS  # before queue(): its slots; its own limiter (the HTTP API keeps anyio's 40)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=1)
    auth = (lambda user, secret: users.check_basic(user, secret) is not None) if users is not None else None
    warm_up()
    mounted = gr.mount_gradio_app(app, demo, path=path, auth=auth, **launch_options(studio))
    # A mounted Blocks never "launches", and Gradio then skips its own check that an event's files were uploaded by
    # a user (a forged FileData could name any server path): mark it launched so the check runs, as under launch().
    demo.has_launched = True
    return mounted
