"""``python -m studio``: render videos, write storyboards, list presets, check the machine."""

from __future__ import annotations

import argparse
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
    render.add_argument("--project", type=Path, help="keep the project folder here; a second run reuses its assets")
    render.add_argument("--voice", help="narrator voice (provider-specific, e.g. an espeak-ng voice or a Piper .onnx file)")
    render.add_argument("--narrator", default="auto", help="narration provider (default auto)")
    render.add_argument("--painter", default="auto", help="visuals provider (default auto)")
    render.add_argument("--music", type=Path, help="background music file, looped and ducked under the narration")
    render.add_argument("--music-volume", type=float, help="music level 0..1 when nobody speaks (default 0.15)")
    render.add_argument("--watermark", type=Path, help="a logo image drawn in a corner")
    render.add_argument("--no-captions", action="store_true", help="do not burn captions in")
    render.add_argument("--encoder", help="force a video encoder: libx264, h264_nvenc or hevc_nvenc")
    render.add_argument("--seed", type=int, help="project seed for the visuals")
    render.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    story = sub.add_parser("storyboard", help="write a storyboard (.csv or .json) to inspect and edit before rendering")
    _add_source(story, storyboard=False)
    story.add_argument("--output", "-o", type=Path, required=True, help="the storyboard file to write (.csv or .json)")
    story.add_argument("--preset", help="a preset whose storyboard writers (and their models) `auto` uses "
                                        "(default: every writer in registration order)")

    sub.add_parser("presets", help="list the render presets")
    doctor = sub.add_parser("doctor", help="list every provider of every step and whether it can run here")
    doctor.add_argument("--preset", help="check the model providers with this preset's [models] options "
                                         "(default: each provider's own defaults)")
    return parser


def _project_fields(args: argparse.Namespace) -> dict:
    fields = {}
    for name in ("title", "aspect", "style", "language", "voice", "music", "music_volume", "watermark", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    if getattr(args, "no_captions", False):
        fields["captions"] = False
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
    elif isinstance(source, tuple):
        project = _storyboard_from(source, args, fields)
    else:
        project = source

    cancel = CancelToken()
    bar = None if args.quiet else tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}")

    def on_progress(fraction: float, message: str) -> None:
        if bar is not None:
            bar.n = round(fraction * 100, 1)
            bar.set_postfix_str(message, refresh=False)
            bar.refresh()

    started = time.perf_counter()
    try:
        summary = make_video(project, preset=args.preset, output=args.output, project_dir=args.project, writer=args.writer,
                             narrator=args.narrator, painter=args.painter, media_root=media_root, encoder=args.encoder,
                             on_progress=on_progress, cancel=cancel, **fields)
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    finally:
        if bar is not None:
            bar.close()
    print(summary.describe())
    print(f"total {time.perf_counter() - started:.1f} s")
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
    try:
        from .compose.encoders import working_encoders

        print("video encoders that work here: " + ", ".join(working_encoders()))
    except ImportError:
        pass
    for kind in providers.KINDS:
        print(f"{kind}:")
        for name, ok, note in providers.availability(kind, configs):
            print(f"  {'ok ' if ok else 'no '} {name:15s} {note}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.version:
        from . import __version__

        print(f"studio {__version__}")
        return 0
    commands = {"render": cmd_render, "storyboard": cmd_storyboard, "presets": cmd_presets, "doctor": cmd_doctor}
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
