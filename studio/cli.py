"""``python -m studio``: render videos, write storyboards, list presets, check the machine."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from .errors import Cancelled, StudioError
from .project import ASPECTS

EPILOG = """examples:
  python -m studio render examples/coffee.md --preset draft --output coffee.mp4
  python -m studio render --brief "Why the sky is blue" --aspect 9:16 --preset standard --output sky.mp4
  python -m studio storyboard examples/coffee.md --output coffee.csv
  python -m studio render --storyboard coffee.csv --preset premium --output coffee.mp4
  python -m studio render examples/coffee.md --project projects/coffee --output coffee.mp4   # keeps and reuses assets
  python -m studio render --project projects/coffee --output coffee.mp4   # again after an edit: only what changed
"""


def _add_source(parser: argparse.ArgumentParser, storyboard: bool) -> None:
    parser.add_argument("script", nargs="?", type=Path, help="a script file (.md or .txt) to narrate as written")
    parser.add_argument("--brief", help="a short request to write about, e.g. \"Why the sky is blue\"")
    if storyboard:
        parser.add_argument("--storyboard", type=Path, help="a storyboard to render (.csv or .json, e.g. from `studio storyboard`)")
    parser.add_argument("--writer", default="auto", help="storyboard writer (default: auto)")
    parser.add_argument("--title", help="the video's title (default: from the script)")
    parser.add_argument("--aspect", choices=ASPECTS, help="aspect ratio (default 16:9)")
    parser.add_argument("--style", help="a style for every scene's visuals, e.g. \"warm pastel\"")
    parser.add_argument("--language", help="narration language (default en)")


# The names are checked when the command runs (`studio.compose.captions.STYLES`; the server checks its own), so that
# building the parser does not import the compose step.
CAPTION_STYLE_HELP = ("captions: bold (default), boxed, plain, karaoke (the spoken word highlighted) or words (one to "
                      "three large words at a time, the shorts look)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio", description="Studio: turn a script or a brief into a narrated video.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step decides")
    sub = parser.add_subparsers(dest="command")

    render = sub.add_parser("render", help="make an MP4 from a script, a brief, a storyboard or a project folder",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source(render, storyboard=True)
    render.add_argument("--preset", default="draft", help="draft, standard, premium, maximum, or a preset .toml file (default draft)")
    render.add_argument("--output", "-o", type=Path, required=True, help="the MP4 to write")
    render.add_argument("--project", type=Path, help="keep the project folder here; a second run reuses its assets, "
                                                     "video segments included (only what an edit changed is rendered)")
    render.add_argument("--one-pass", action="store_true", help="compose in one pass even with --project (no video "
                                                                "segments are kept or reused)")
    render.add_argument("--voice", help="narrator voice (provider-specific, e.g. an espeak-ng voice or a Piper .onnx file)")
    render.add_argument("--narrator", default="auto", help="narration provider (default auto)")
    render.add_argument("--painter", default="auto", help="visuals provider (default auto)")
    render.add_argument("--music", type=Path, help="background music file, looped and ducked under the narration")
    render.add_argument("--music-volume", type=float, help="music level 0..1 when nobody speaks (default 0.15)")
    render.add_argument("--watermark", type=Path, help="a logo image drawn in a corner")
    render.add_argument("--caption-font", type=Path, help="a TrueType/OpenType font file for the captions")
    render.add_argument("--no-captions", action="store_true", help="do not burn captions in")
    render.add_argument("--caption-style", help=CAPTION_STYLE_HELP)
    render.add_argument("--encoder", help="force a video encoder: any with a table in the preset (libx264, h264_nvenc, "
                                                "hevc_nvenc, av1_nvenc, h264_qsv, h264_amf, h264_vaapi, "
                                                "h264_videotoolbox, their hevc_ forms)")
    render.add_argument("--device", choices=("auto", "cuda", "cpu", "tensor-cpu"),
                        help="where composition makes the frames (default: the preset's [compose] device, auto: the "
                             "GPU when CUDA and NVENC both work here)")
    render.add_argument("--seed", type=int, help="project seed for the visuals")
    render.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    render.add_argument("--download", action="store_true", help="download a missing model that auto would use (a "
                                                                "catalogue model: `python -m studio models list`) "
                                                                "before the step that needs it")
    render.add_argument("--dry-run", action="store_true", help="say which provider would run each step, how long "
                                                               "each should take here and the memory it needs; "
                                                               "render nothing")

    story = sub.add_parser("storyboard", help="write a storyboard (.csv or .json) to inspect and edit before rendering")
    _add_source(story, storyboard=False)
    story.add_argument("--output", "-o", type=Path, required=True, help="the storyboard file to write (.csv or .json)")
    story.add_argument("--preset", help="a preset whose storyboard writers (and their models) `auto` uses "
                                        "(default: every writer in registration order)")

    sub.add_parser("presets", help="list the render presets")
    doctor = sub.add_parser("doctor", help="list every provider of every step and whether it can run here")
    doctor.add_argument("--preset", help="check the model providers with this preset's [models] options "
                                         "(default: each provider's own defaults)")
    _add_models(sub)
    _add_serve(sub)
    _add_jobs(sub)
    return parser


def _add_models(sub) -> None:
    models = sub.add_parser("models", help="the model catalogue: list, pull and remove models (in the hub cache)",
                            description="The models Studio knows (studio/models.toml): sizes, licences, whether they "
                                        "are on this machine, and fetching or removing them (the Hugging Face hub "
                                        "cache, HF_HUB_CACHE). A stopped pull continues where it stopped.")
    actions = models.add_subparsers(dest="models_command")
    listing = actions.add_parser("list", help="every catalogued model: step, size, licence, here or not, presets")
    listing.add_argument("--preset", help="only the models this preset names")
    listing.add_argument("--json", action="store_true", help="print JSON")
    pull = actions.add_parser("pull", help="fetch a model (or every model of a preset) into the hub cache")
    pull.add_argument("name", nargs="?", help="a catalogue name (see `models list`) or its hub id")
    pull.add_argument("--preset", help="fetch every model this preset names")
    pull.add_argument("--yes", "-y", action="store_true", help="do not ask before downloads of more than 1 GB")
    remove = actions.add_parser("remove", help="delete a model from the hub cache")
    remove.add_argument("name", help="a catalogue name or its hub id")


def _add_jobs(sub) -> None:
    jobs = sub.add_parser("jobs", help="submit, follow, cancel and fetch render jobs on a running `studio serve`",
                          description="Render through a Studio server's job queue: the job survives this command "
                                      "ending, the server restarting, or the connection dropping.")
    jobs.add_argument("--server", help="the server (default $STUDIO_SERVER or http://127.0.0.1:8000)")
    jobs.add_argument("--token", help="a bearer token from the server's --auth file (default $STUDIO_TOKEN)")
    actions = jobs.add_subparsers(dest="jobs_command")
    submit = actions.add_parser("submit", help="queue a render (then --wait for it, or come back with `jobs fetch`)")
    _add_source(submit, storyboard=True)
    submit.add_argument("--preset", default="draft", help="a preset the server offers (default draft)")
    submit.add_argument("--voice", help="narrator voice name")
    submit.add_argument("--narrator", help="narration provider (default auto)")
    submit.add_argument("--painter", help="visuals provider (default auto)")
    submit.add_argument("--music", type=Path, help="background music file (uploaded)")
    submit.add_argument("--watermark", type=Path, help="a logo image (uploaded)")
    submit.add_argument("--caption-font", type=Path, help="a TrueType/OpenType font file for the captions (uploaded)")
    submit.add_argument("--no-captions", action="store_true", help="do not burn captions in")
    submit.add_argument("--caption-style", help=CAPTION_STYLE_HELP)
    submit.add_argument("--key", help="an idempotency key: submitting again with the same key gives the same job")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end (and save it with --output)")
    submit.add_argument("--output", "-o", type=Path, help="with --wait: where to save the MP4")
    listing = actions.add_parser("list", help="your jobs, newest first")
    listing.add_argument("--state", help="only jobs in this state")
    for name, text in (("show", "a job's state, progress and error"), ("cancel", "cancel a job")):
        actions.add_parser(name, help=text).add_argument("job_id")
    fetch = actions.add_parser("fetch", help="wait for a job (showing progress) and save its MP4")
    fetch.add_argument("job_id")
    fetch.add_argument("--output", "-o", type=Path, required=True, help="where to save the MP4")


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API: render jobs in the background (127.0.0.1:8000)",
                           description="Serve the HTTP API (OpenAPI at /docs): jobs are journaled in the data folder "
                                       "and survive restarts; an interrupted job resumes from the assets it made.")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --auth)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--data-dir", type=Path, help="jobs, uploads and renders (default $STUDIO_DATA_DIR, else "
                                                     "$XDG_DATA_HOME/studio or ~/.local/share/studio)")
    serve.add_argument("--auth", type=Path, help="users file, one `user:secret` per line (HTTP basic or bearer token); "
                                                 "each user sees only their own jobs")
    serve.add_argument("--cpu-jobs", type=int, default=1, help="jobs with offline providers that run at once (default 1)")
    serve.add_argument("--gpu-jobs", type=int, default=1, help="jobs with GPU models that run at once (default 1)")
    serve.add_argument("--max-queued", type=int, default=100, help="jobs that may wait (default 100); more answer 429")
    serve.add_argument("--max-queued-per-user", type=int, default=20, help="jobs one user may have waiting (default 20)")
    serve.add_argument("--preset-file", type=Path, action="append", default=[],
                       help="offer another preset (a .toml file) besides the tiers, by its name (repeatable)")
    serve.add_argument("--max-pixels", type=int, help="largest frame (width x height) a job may ask for "
                                                      "(default 1920x1080 = 2073600)")
    serve.add_argument("--executor", default="local", help="where scene work runs: local (default), ray (a local Ray), "
                                                           "ray:auto or ray://HOST:10001 (a cluster); ?cpu=N&gpu=N")
    serve.add_argument("--one-pass", action="store_true", help="compose each video in one pass (a little faster on one "
                                                               "machine; a resumed job then encodes the whole video again)")
    serve.add_argument("--keep-days", type=float, default=7.0, help="remove finished renders after this many days (default 7)")
    serve.add_argument("--forget-days", type=float, default=30.0,
                       help="remove a finished job from the journal this many days after it ended, once its files are "
                            "gone (default 30)")
    serve.add_argument("--max-disk-gb", type=float, help="remove the oldest finished renders beyond this total")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-ui", action="store_true", help="serve only the HTTP API, not the studio app at /")
    serve.add_argument("--check", action="store_true",
                       help="check the data folder instead of serving: SQLite's integrity check of the journal and its "
                            "backup, and the job and upload folders it does not know; exits 1 on damage (safe while "
                            "a server runs)")
    serve.add_argument("--recover", action="store_true",
                       help="rebuild a damaged, emptied or lost journal instead of serving: a damaged one is kept aside "
                            "as studio.db.damaged-<time>, the backup (studio.db.bak) is restored and every job and "
                            "upload folder gets its row back; stop the server first")


def _project_fields(args: argparse.Namespace) -> dict:
    fields = {}
    for name in ("title", "aspect", "style", "language", "voice", "music", "music_volume", "watermark", "caption_font",
                 "seed"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    if getattr(args, "no_captions", False):
        fields["captions"] = False
    style = getattr(args, "caption_style", None)
    if style is not None:
        from .compose.captions import STYLES

        if style not in STYLES:
            raise StudioError(f"--caption-style must be one of {', '.join(STYLES)}, got {style!r}")
        fields["caption_style"] = style
    return fields


def _load_source(args: argparse.Namespace, *, allow_none: bool):
    """The project (or text) named by exactly one of SCRIPT, --brief, --storyboard; None if none given and allowed."""
    from .project import Project
    from .storyboard import read_script

    given = [n for n in ("script", "brief", "storyboard") if getattr(args, n, None) is not None]
    if len(given) > 1:
        raise StudioError(f"give one source, not {' and '.join(given)}: a SCRIPT file, --brief TEXT or --storyboard FILE")
    if not given:
        if allow_none:
            return None, None
        raise StudioError("nothing to work from: give a SCRIPT file, --brief \"...\" or --storyboard FILE")
    if args.script is not None:
        return ("script", read_script(args.script)), args.script.resolve().parent
    if args.brief is not None:
        if not args.brief.strip():
            raise StudioError("--brief is empty: describe the video you want, e.g. --brief \"Why the sky is blue\"")
        return ("brief", args.brief), Path.cwd()
    return Project.read_storyboard(args.storyboard), args.storyboard.resolve().parent


def _storyboard_from(source, args: argparse.Namespace, fields: dict):
    from .storyboard import write_storyboard

    mode, text = source
    story = {k: fields.pop(k) for k in ("title", "aspect", "style", "language", "voice", "seed") if k in fields}
    # The preset orders `auto` and gives the writers their models (e.g. the tier's LLM size).
    return write_storyboard(text, mode=mode, writer=args.writer, preset=getattr(args, "preset", None), **story)


def cmd_render(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .pipeline import make_video
    from .progress import CancelToken
    from .project import PROJECT_FILE, Project

    from .media import check_output_path

    check_output_path(args.output)  # fail before any work, not after
    fields = _project_fields(args)
    source, media_root = _load_source(args, allow_none=args.project is not None)
    if source is None:
        if not (args.project / PROJECT_FILE).is_file():
            raise StudioError(f"{args.project} holds no project yet: give a SCRIPT, --brief or --storyboard to start one")
        project = Project.load(args.project)
        media_root = args.project
    elif isinstance(source, tuple) and args.dry_run:
        project = source  # the writer does not run for a dry run
    elif isinstance(source, tuple):
        project = _storyboard_from(source, args, fields)
    else:
        project = source
    if args.dry_run:
        return _dry_run(project, args, fields)

    cancel = CancelToken()
    bar = None if args.quiet else tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}")

    def on_update(progress) -> None:  # a studio.progress.Progress: the step and scene are fields, not parsed text
        if bar is not None:
            bar.n = round(progress.fraction * 100, 1)
            if progress.step is not None:
                bar.set_description_str(f"{progress.step_number}/4 {progress.step}", refresh=False)
            bar.set_postfix_str(progress.message, refresh=False)
            bar.refresh()

    started = time.perf_counter()
    try:
        summary = make_video(project, preset=args.preset, output=args.output, project_dir=args.project, writer=args.writer,
                             narrator=args.narrator, painter=args.painter, media_root=media_root, encoder=args.encoder, device=args.device,
                             segments=False if args.one_pass else None, download=True if args.download else None,
                             on_update=on_update, cancel=cancel, **fields)
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    finally:
        if bar is not None:
            bar.close()
    print(summary.describe())
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


def _dry_run(project, args: argparse.Namespace, fields: dict) -> int:
    """`render --dry-run`: the plan of a render on this machine, step by step, and nothing made."""
    from dataclasses import replace

    from .estimate import duration_words, estimate_steps
    from .presets import load_preset
    from .storyboard import write_storyboard

    preset = load_preset(args.preset)
    writer = None
    if isinstance(project, tuple):  # text: the scenes are counted from the offline writer's cut (no model runs)
        mode, text = project
        writer = getattr(args, "writer", None) or "auto"
        story = {k: fields.pop(k) for k in ("title", "aspect", "style", "language", "voice", "seed") if k in fields}
        project = write_storyboard(text, mode=mode, writer="rules", **story)
    if fields.get("aspect"):
        project = replace(project, aspect=fields["aspect"])
    steps = estimate_steps(project, preset, narrator=args.narrator, painter=args.painter, writer=writer)
    width, height = preset.size(project.aspect)
    print(f"{len(project.scenes)} scenes, {project.aspect}, {preset.label} ({width}x{height} at {preset.fps} fps): "
          f"about {duration_words(sum(s.seconds for s in steps)).removeprefix('about ')} on this machine")
    for step in steps:
        print(f"  {step.text}")
    return 0


def cmd_storyboard(args: argparse.Namespace) -> int:
    fields = _project_fields(args)
    source, _ = _load_source(args, allow_none=False)
    out = Path(args.output)
    if out.suffix.lower() not in (".csv", ".json"):
        raise StudioError(f"--output {out} must end in .csv or .json")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise StudioError(f"output folder {out.parent} does not exist; create it first")
    project = _storyboard_from(source, args, fields)
    project.write_storyboard_file(out)
    table = project.to_dataframe()[["narration", "visual_prompt"]]
    print(f"{project.title!r}: {len(project.scenes)} scenes -> {out}")
    for i, row in enumerate(table.itertuples(index=False), 1):
        narration = row.narration if len(row.narration) < 70 else row.narration[:67] + "..."
        print(f"{i:3d}. {narration}\n     [{row.visual_prompt}]")
    for note in project.notes:
        print(f"  {note}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .presets import available_presets, load_preset

    for name in available_presets():
        p = load_preset(name)
        sizes = ", ".join(f"{a} {w}x{h}" for a, (w, h) in p.resolution.items())
        print(f"{p.name:9s} {p.fps} fps  {sizes}\n          {p.summary}\n          encoders: {' > '.join(p.encoders)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import devices, providers
    from .media import ffmpeg_exe

    configs = None
    if getattr(args, "preset", None):
        from .presets import load_preset

        preset = load_preset(args.preset)
        configs = preset.models
        print(f"preset: {preset.name} ({preset.source})")
    print(f"device: {devices.describe()}")
    print(f"ffmpeg: {ffmpeg_exe()}")
    _doctor_fonts()
    try:
        from .compose.encoders import encoder_report

        report = encoder_report(preset if getattr(args, "preset", None) else None)
        print("video encoders that work here: " + ", ".join(e for e, ok, _ in report if ok))
        for encoder, ok, reason in report:
            if not ok:  # the reason starts with the encoder's name; its first line is the cause
                cause = (reason.removeprefix(f"{encoder}: ").splitlines() or [""])[0]
                print(f"  no  {encoder:18s} {cause[:140]}")
    except ImportError:
        pass
    for kind in providers.KINDS:
        print(f"{kind}:")
        for name, ok, note in providers.availability(kind, configs):
            print(f"  {'ok ' if ok else 'no '} {name:15s} {note}")
    if getattr(args, "preset", None):
        from . import model_store
        from .catalog import load_catalog

        print("models of this preset (`python -m studio models pull NAME` fetches one):")
        for entry in load_catalog().for_preset(preset):
            print(f"  {entry.describe():50s} {model_store.status(entry).describe()}")
    return 0


def _doctor_fonts() -> None:
    """Which scripts the installed fonts draw, and whether the captions' libass can fall back to them."""
    import subprocess

    from .fonts import describe_scripts
    from .media import ffmpeg_exe

    for line in describe_scripts():
        print(line)
    try:
        version = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "--enable-libass" not in version:
        print("captions: this ffmpeg has no libass: captions cannot be burned in")
    elif "--enable-fontconfig" not in version:
        print("captions: this ffmpeg's libass has no fontconfig: characters the caption font lacks are drawn as boxes")
    else:
        print("captions: libass falls back through fontconfig to the fonts above")


def cmd_models(args: argparse.Namespace) -> int:
    from . import model_store
    from .catalog import gigabytes, load_catalog
    from .presets import available_presets, load_preset

    catalog = load_catalog()
    if args.models_command is None:
        raise StudioError("say what to do: `models list`, `models pull NAME` or `models remove NAME`")
    if args.models_command == "list":
        used: dict[str, list[str]] = {}
        for name in available_presets():
            for entry in catalog.for_preset(load_preset(name)):
                used.setdefault(entry.name, []).append(name)
        entries = catalog.for_preset(load_preset(args.preset)) if args.preset else list(catalog)
        rows = []
        for entry in entries:
            here = model_store.status(entry)
            rows.append({"name": entry.name, "step": entry.step, "provider": entry.provider, "repo": entry.repo,
                         "download_bytes": entry.download_bytes, "licence": entry.licence, "flags": list(entry.flags),
                         "commercial": entry.commercial, "gated": entry.gated, "status": here.state,
                         "bytes_here": here.bytes_here, "presets": used.get(entry.name, []), "why": entry.why})
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'name':24s} {'step':10s} {'size':>8s}  {'licence':44s} {'here':24s} presets")
        for row in rows:
            licence = row["licence"] + "".join(f" ({flag})" for flag in row["flags"])
            here = model_store.status(catalog.get(row["name"])).describe()
            print(f"{row['name']:24s} {row['step']:10s} {gigabytes(row['download_bytes']):>8s}  {licence:44s} "
                  f"{here:24s} {', '.join(row['presets']) or '-'}")
        print(f"hub cache: {model_store.hub_cache()}; sizes are approximate; fetch one with "
              "`python -m studio models pull NAME`")
        return 0
    if args.models_command == "remove":
        entry = catalog.get(args.name)
        freed = model_store.remove(entry)
        print(f"{entry.name}: removed, {gigabytes(freed)} freed" if freed else f"{entry.name}: not on this machine")
        return 0
    if (args.name is None) == (args.preset is None):
        raise StudioError("give a model NAME or --preset PRESET (one of them) to pull")
    if args.preset:
        entries = [e for e in catalog.for_preset(load_preset(args.preset)) if e.supported]
    else:
        entries = [catalog.get(args.name)]
    for entry in entries:
        plan = model_store.plan_pull(entry)
        if plan.remaining_bytes == 0 and model_store.status(entry).state == "present":
            print(f"{entry.name}: already here ({gigabytes(plan.total_bytes)})")
            continue
        notice = f"{entry.name} ({entry.repo}): {gigabytes(plan.remaining_bytes)} to fetch, licence {entry.licence}" \
                 + "".join(f", {flag}" for flag in entry.flags)
        if plan.remaining_bytes > model_store.CONFIRM_BYTES and not args.yes:
            if not sys.stdin.isatty():
                raise StudioError(f"{notice}: confirm the download with --yes")
            answer = input(f"{notice}. Download? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print(f"{entry.name}: not downloaded")
                continue
        else:
            print(notice)
        folder = model_store.pull(entry, on_progress=_ByteBar(entry.name), yes=True)
        print(f"{entry.name}: ready in {folder}")
    return 0


class _ByteBar:
    """A one-line download bar on stderr: bytes, speed and time left."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = time.monotonic()
        self.first: int | None = None
        self.shown = 0.0

    def __call__(self, done: int, total: int, message: str) -> None:
        from .catalog import gigabytes

        now = time.monotonic()
        if self.first is None:
            self.first = done
        if now - self.shown < 0.2 and done < total:
            return
        self.shown = now
        speed = (done - self.first) / max(now - self.start, 1e-6)
        left = (total - done) / speed if speed > 0 else None
        eta = f"{int(left // 60)}m{int(left % 60):02d}s" if left is not None else "--"
        percent = 100.0 * done / total if total else 100.0
        end = "\n" if done >= total else ""
        print(f"\r  {self.name}: {gigabytes(done)} of {gigabytes(total)} {percent:5.1f}%  {speed / 1e6:6.1f} MB/s  "
              f"ETA {eta}   ", end=end, file=sys.stderr, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .server.auth import Users, is_loopback
    from .executors import create_executor
    from .server import JobRunner, Limits, Retention

    # 0. Maintenance of the data folder instead of serving.
    if args.check or args.recover:
        from .server.journal import default_data_dir
        from .server.recovery import check_data_folder, recover_data_folder

        if args.check and args.recover:
            raise StudioError("give --check or --recover, not both (check first, then recover if it finds damage)")
        data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
        if args.check:
            ok, lines = check_data_folder(data_dir)
            print("\n".join(lines))
            return 0 if ok else 1
        print("\n".join(recover_data_folder(data_dir)))
        return 0

    # 1. Check the settings before binding anything.
    if args.auth is None and not is_loopback(args.host):
        raise StudioError(f"--host {args.host} would serve other machines without authentication: give --auth FILE "
                          "(one `user:secret` per line), or bind 127.0.0.1")
    if not 0 < args.port < 65536:
        raise StudioError(f"--port must be between 1 and 65535, got {args.port}")
    if args.keep_days <= 0:
        raise StudioError(f"--keep-days must be more than 0, got {args.keep_days}")
    if args.forget_days < 0:
        raise StudioError(f"--forget-days must be 0 or more, got {args.forget_days}")
    users = Users.from_file(args.auth) if args.auth is not None else None
    limits = Limits() if args.max_pixels is None else replace(Limits(), max_pixels=args.max_pixels)
    retention = Retention(max_age_s=args.keep_days * 86400.0, forget_after_s=args.forget_days * 86400.0,
                          max_total_bytes=None if args.max_disk_gb is None else int(args.max_disk_gb * 1e9))

    # 2. The runner (it resumes interrupted jobs at once), the app, the server.
    import uvicorn

    from .server.api import create_app

    runner = JobRunner(args.data_dir, executor=create_executor(args.executor), cpu_slots=args.cpu_jobs,
                       gpu_slots=args.gpu_jobs, max_queued=args.max_queued, max_queued_per_owner=args.max_queued_per_user,
                       limits=limits, retention=retention, presets=args.preset_file, segments=not args.one_pass)
    app = create_app(runner, auth=users, close_runner=True)
    if not args.no_ui:  # the studio app at /, rendering with the same runner
        from .ui.app import mount

        app = mount(app, runner, users)
    print(f"Studio API on http://{args.host}:{args.port}  (docs at /docs; data in {runner.data_dir}; "
          f"{'auth: ' + str(len(users.secrets)) + ' users' if users else 'no auth: this machine only'})", flush=True)
    for line in runner.rebuilt.lines() if runner.rebuilt.changed else ():
        print(f"journal: {line}", flush=True)
    if runner.recovered:
        print(f"resuming {len(runner.recovered)} interrupted job(s)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0


def _job_request(args: argparse.Namespace, client) -> dict:
    """A job request from `jobs submit`'s options; local media files and recordings are uploaded and named by their
    upload ids."""
    source, media_root = _load_source(args, allow_none=False)
    request: dict = {"preset": args.preset}
    if isinstance(source, tuple):
        request[source[0]] = source[1]
    else:
        scenes = []
        uploaded: dict[Path, str] = {}
        for record in source.storyboard_records():
            scene = {k: v for k, v in record.items() if v is not None and k != "id"}
            for key in ("media", "recording"):  # a scene's own picture and its own voice go up as uploads
                if scene.get(key):
                    path = (media_root / scene[key]).resolve()
                    uploaded.setdefault(path, client.upload(path))
                    scene[key] = uploaded[path]
            scenes.append(scene)
        request["storyboard"] = scenes
        request.setdefault("title", source.title)
    for name in ("title", "aspect", "style", "language", "voice"):
        if getattr(args, name, None) is not None:
            request[name] = getattr(args, name)
    providers = {k: getattr(args, k) for k in ("writer", "narrator", "painter") if getattr(args, k, None) not in (None, "auto")}
    if providers:
        request["providers"] = providers
    if args.no_captions:
        request["captions"] = False
    if args.caption_style is not None:
        request["caption_style"] = args.caption_style
    for name in ("music", "watermark", "caption_font"):
        if getattr(args, name) is not None:
            request[name] = client.upload(getattr(args, name))
    return request


def _follow(client, job_id: str, output: Path | None, quiet: bool = False) -> int:
    """Show a job's progress until it ends; save the video at `output` if it is done."""
    from tqdm import tqdm

    bar = None if quiet else tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}] {postfix}")
    last = "queued"
    try:
        for event in client.events(job_id):
            data, last = event["data"], event["event"]
            if bar is not None and "percent" in data:
                bar.n = round(data["percent"], 1)
                bar.set_postfix_str(f"{data.get('step') or ''} {data.get('message') or ''}"[:60], refresh=False)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    job = client.get(job_id)
    if job["state"] != "done":
        print(f"job {job_id} {job['state']}" + (f": {job['error']['message']}" if job.get("error") else ""),
              file=sys.stderr)
        return 1 if job["state"] == "failed" else 130
    video = job["video"]
    print(f"job {job_id} done: {video['duration_s']:.1f} s, {video['width']}x{video['height']}@{video['fps']}, "
          f"{video['size_bytes'] / 1e6:.2f} MB")
    if output is not None:
        print(client.download(job_id, output))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from .client import Client

    if args.jobs_command is None:
        raise StudioError("say what to do: `jobs submit`, `jobs list`, `jobs show ID`, `jobs cancel ID` or `jobs fetch ID`")
    with Client(args.server, token=args.token) as client:
        if args.jobs_command == "submit":
            if args.output is not None and not args.wait:
                raise StudioError("--output needs --wait (or save the video later with `jobs fetch ID --output FILE`)")
            if args.output is not None:
                from .media import check_output_path

                check_output_path(args.output)
            job = client.submit(_job_request(args, client), idempotency_key=args.key)
            print(f"job {job['id']} {job['state']}")
            return _follow(client, job["id"], args.output) if args.wait else 0
        if args.jobs_command == "list":
            for job in client.list(state=args.state):
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(job["created_at"]))
                print(f"{job['id']}  {when}  {job['state']:11s} {job['percent']:5.1f}%  {job['preset']:8s} "
                      f"{job.get('title') or job['source']}")
            return 0
        if args.jobs_command == "show":
            print(json.dumps(client.get(args.job_id), indent=2))
            return 0
        if args.jobs_command == "cancel":
            job = client.cancel(args.job_id)
            print(f"job {job['id']} {job['state']}{' (stopping)' if job['state'] == 'running' else ''}")
            return 0
        from .media import check_output_path

        check_output_path(args.output)
        return _follow(client, args.job_id, args.output)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.version:
        from . import __version__

        print(f"studio {__version__}")
        return 0
    commands = {"render": cmd_render, "storyboard": cmd_storyboard, "presets": cmd_presets, "doctor": cmd_doctor,
                "models": cmd_models, "serve": cmd_serve, "jobs": cmd_jobs}
    if args.command not in commands:
        parser.print_help()
        return 2
    try:
        return commands[args.command](args)
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
