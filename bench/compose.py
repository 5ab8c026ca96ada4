"""Composition benchmark: Studio's compositor against moviepy 2 and against the encoder alone.

    python bench/compose.py                         # 12 scenes x 5 s, Draft and Standard, once each
    python bench/compose.py --repeat 3 --json bench/results/compose.json
    python bench/compose.py --minutes 1,5 --skip-moviepy 5   # memory flatness: 12 and 60 scenes
    python bench/compose.py --quick                 # 2 scenes x 1 s: a smoke test that finishes in seconds
    python bench/compose.py --presets premium,maximum --approaches studio,bound   # 1080p30 and 4K30 (slow on 2 cores)
    python bench/compose.py --approaches studio,tensor-cpu,bound   # the GPU renderer's torch code on the CPU

It builds a fixed case in a temporary folder (distinct 1920x1080 detailed stills, speech-like narration with word
timings, a music bed), then renders it at each preset three ways, each in its own fresh process:

* ``studio``  -- ``studio.compose.compose(project, preset, output, encoder="libx264")`` (with ``device="cpu"`` where
  the compositor takes a device: the CPU renderer);
* ``tensor-cpu`` -- the same with ``device="tensor-cpu"``: the GPU renderer's torch code run on the CPU (only where
  the compositor has it; skipped with a note otherwise; not in the default set);
* ``moviepy`` -- a straightforward moviepy 2 composition of the same timeline (ImageClips with a per-frame Ken Burns
  crop/resize, ``CrossFadeIn``, TextClip captions, narration at its offsets, looped and lowered music), written with
  the tier's x264 preset and CRF, ``threads=2``;
* ``bound``   -- ffmpeg encoding the same number of frames (same size, the same kind of picture: Ken Burns, crossfades,
  captions) that were made beforehand as raw yuv420p, with the tier's exact encoder arguments and no filters. Video
  only: no audio is decoded, mixed or encoded. This is the encoder's bound: no compositor can beat it with the same
  encoder settings.

Wall time and peak memory are taken for the whole process tree (the sum of RSS over the process and its children,
sampled every 50 ms with psutil). Every output is probed (size, duration, frame rate, codec) so a broken render cannot
look fast; the script exits 1 if any output fails that check. Targets (from the issue): Studio within 1.3x of the
bound at every preset; at least 4x faster than moviepy at Draft and 3x at Standard; Studio's peak memory under 400 MB,
and flat (at most 1.25x) when the video is 5 minutes instead of 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    STILL_SIZE,
    Measurement,
    build_case,
    caption_chunks,
    check_video,
    exit_on_sigterm,
    measure,
    median_measurement,
    raw_folder,
    render_frames,
    scene_starts,
    write_raw_yuv,
)
from studio.presets import Preset, load_preset  # noqa: E402
from studio.project import Project  # noqa: E402

APPROACHES = ("studio", "moviepy", "bound")
OPTIONAL_APPROACHES = ("tensor-cpu",)  # run only when asked for
SPEEDUP_TARGETS = {"draft": 4.0, "standard": 3.0}  # moviepy wall / Studio wall, at least
BOUND_TARGET = 1.3  # Studio wall / bound wall, at most
MEMORY_TARGET_MB = 400.0
FLAT_TARGET = 1.25  # Studio's peak at 5 minutes / at 1 minute, at most


# -- the approaches, each run in a fresh process ----------------------------------------------------------------------
def compose_devices() -> bool:
    """Whether this checkout's `studio.compose.compose` takes a `device` (the GPU/tensor renderer is merged)."""
    import inspect

    from studio.compose import compose

    return "device" in inspect.signature(compose).parameters


def render_with_studio(project: Project, preset: Preset, output: Path, device: str = "cpu") -> dict:
    """Studio's compositor, on the CPU encoder so that it is compared with the bound's encoder."""
    from studio.compose import compose

    kwargs = {"device": device} if compose_devices() else {}
    result = compose(project, preset, output, encoder="libx264", **kwargs)
    return {"encoder": str(result.encoder), "duration_s": result.duration_s,
            "renderer": str(getattr(result, "renderer", "cpu"))}


def render_with_tensor_cpu(project: Project, preset: Preset, output: Path) -> dict:
    """The tensor (GPU) renderer's own torch code on the CPU, into libx264."""
    return render_with_studio(project, preset, output, device="tensor-cpu")


def render_with_moviepy(project: Project, preset: Preset, output: Path) -> dict:
    """The same timeline written the way a moviepy 2 user would write it."""
    import numpy as np
    from moviepy import AudioFileClip, CompositeAudioClip, CompositeVideoClip, ImageClip, TextClip, afx, vfx
    from PIL import Image

    from studio.fonts import font_path

    w, h = preset.size(project.aspect)
    starts, lengths, total_s = scene_starts(project, preset)
    layers, voices = [], []
    for i, (scene, start, length) in enumerate(zip(project.scenes, starts, lengths)):
        # A still scaled once to cover the frame, then a Ken Burns zoom: crop a shrinking (or growing) centre window
        # and resize it to the frame, every frame.
        still = ImageClip(str(scene.visual), duration=length)
        scale = max(w / still.w, h / still.h)
        still = still.resized(scale)
        still = still.cropped(x_center=still.w / 2, y_center=still.h / 2, width=w, height=h)

        def ken_burns(get_frame, t, length=length, zoom_in=(i % 2 == 0)):
            frame = get_frame(t)
            progress = t / length
            z = 1 + preset.ken_burns * (progress if zoom_in else 1 - progress)
            fh, fw = frame.shape[:2]
            cw, ch = fw / z, fh / z
            x0, y0 = (fw - cw) / 2, (fh - ch) / 2
            window = Image.fromarray(frame).resize((w, h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            return np.asarray(window)

        clip = still.transform(ken_burns).with_start(start)
        if i:
            clip = clip.with_effects([vfx.CrossFadeIn(preset.transition_s)])
        layers.append(clip)
        voices.append(AudioFileClip(str(scene.audio)).with_start(start + preset.lead_s))
    if project.captions:
        font = str(font_path("bold"))
        for c0, c1, text in caption_chunks(project, preset):
            caption = TextClip(font=font, text=text, font_size=int(h * 0.06), color="white", stroke_color="black",
                               stroke_width=max(1, h // 240))
            layers.append(caption.with_start(c0).with_duration(c1 - c0).with_position(("center", int(h * 0.88) - caption.h)))
    video = CompositeVideoClip(layers, size=(w, h), bg_color=(0, 0, 0)).with_duration(total_s)
    tracks = list(voices)
    if project.music is not None:
        music = AudioFileClip(str(project.music)).with_effects(
            [afx.AudioLoop(duration=total_s), afx.MultiplyVolume(project.music_volume)])
        tracks.insert(0, music)
    video = video.with_audio(CompositeAudioClip(tracks).with_duration(total_s))
    opts = preset.encoder["libx264"]
    params = ["-crf", str(opts["crf"])] + (["-tune", str(opts["tune"])] if "tune" in opts else [])
    video.write_videofile(str(output), fps=preset.fps, codec="libx264", preset=str(opts["preset"]), ffmpeg_params=params,
                          audio_codec="aac", audio_bitrate=f"{preset.audio_bitrate_kbps}k", audio_fps=preset.sample_rate,
                          threads=2, logger=None, temp_audiofile_path=str(output.parent))
    video.close()
    return {"encoder": "libx264", "duration_s": total_s}


WORKERS = {"studio": render_with_studio, "moviepy": render_with_moviepy, "tensor-cpu": render_with_tensor_cpu}


def run_worker(args: argparse.Namespace) -> int:
    """Child-process entry: render one approach and write a small JSON report."""
    import resource

    project = Project.load(Path(args.project))
    preset = load_preset(args.preset)
    info = WORKERS[args.worker](project, preset, Path(args.output))
    # Where the CPU went: this Python process (all its threads) and the processes it started and waited for (ffmpeg).
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    info["python_cpu_s"] = me.ru_utime + me.ru_stime
    info["children_cpu_s"] = kids.ru_utime + kids.ru_stime
    Path(args.report).write_text(json.dumps(info))
    return 0


# -- the parent: timing, checks, table --------------------------------------------------------------------------------
def time_worker(approach: str, project_dir: Path, preset: Preset, output: Path, log: Path) -> tuple[Measurement, dict]:
    """Run one approach in a fresh Python process and measure it."""
    report = output.with_suffix(".json")
    for stale in (output, report):
        stale.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", approach, "--project", str(project_dir),
           "--preset", str(preset.source or preset.name),
           "--output", str(output), "--report", str(report)]
    with open(log, "wb") as log_file:
        m = measure(lambda: subprocess.Popen(cmd, cwd=output.parent, stdout=log_file, stderr=subprocess.STDOUT))
    if m.returncode:
        tail = log.read_text("utf-8", "replace").strip().splitlines()[-6:]
        m.error = f"exit code {m.returncode}: " + " | ".join(tail)
    info = json.loads(report.read_text()) if report.is_file() else {}
    return m, info


def time_bound(raw: Path, preset: Preset, size: tuple[int, int], output: Path, encoder: str = "libx264") -> Measurement:
    """Time ffmpeg alone encoding the raw frames with the tier's exact arguments for `encoder` (video only)."""
    from studio.errors import StudioError
    from studio.media import INPUT_GUARD, Ffmpeg

    output.unlink(missing_ok=True)
    args = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{size[0]}x{size[1]}", "-r", str(preset.fps), *INPUT_GUARD,
            "-i", raw, *preset.encoder_args(encoder), "-an", output]
    holder: dict = {}

    def start() -> subprocess.Popen:
        holder["ff"] = Ffmpeg(args, what=f"the encoder bound ({encoder})")
        return holder["ff"].proc

    def finish(_proc) -> str:
        try:
            holder["ff"].wait()
        except StudioError as exc:
            return str(exc)
        return ""

    return measure(start, finish=finish)


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="draft,standard", help="comma-separated tiers (default: draft,standard)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; medians are reported when > 1")
    parser.add_argument("--minutes", default="1", help="video length(s) in minutes, comma-separated: 1 builds 12 scenes of "
                        "5 s, 5 builds 60 (default: 1)")
    parser.add_argument("--skip-moviepy", default="", metavar="MINUTES",
                        help="skip moviepy at these lengths (comma-separated minutes, or 'all'), e.g. --skip-moviepy 5")
    parser.add_argument("--approaches", default=",".join(APPROACHES),
                        help="which approaches to run: studio, moviepy, bound, tensor-cpu (default: the first three)")
    parser.add_argument("--quick", action="store_true", help="2 scenes of 1 s: a smoke test that finishes in seconds")
    parser.add_argument("--json", type=Path, help="write all figures to this JSON file")
    parser.add_argument("--keep", type=Path, help="keep the inputs and outputs in this folder instead of a temporary one")
    # Child-process mode (internal).
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    exit_on_sigterm()

    # 1. Check the arguments.
    presets = [load_preset(name.strip()) for name in args.presets.split(",") if name.strip()]
    approaches = [a.strip() for a in args.approaches.split(",") if a.strip()]
    unknown = set(approaches) - set(APPROACHES) - set(OPTIONAL_APPROACHES)
    if unknown or not approaches or not presets:
        print(f"--approaches must name some of {', '.join(APPROACHES + OPTIONAL_APPROACHES)}; --presets must name tiers",
              file=sys.stderr)
        return 2
    if "tensor-cpu" in approaches and not compose_devices():
        print("[tensor-cpu skipped: studio.compose.compose() takes no `device` in this checkout (the tensor renderer is "
              "not merged)]", flush=True)
        approaches.remove("tensor-cpu")
        if not approaches:
            return 0
    minutes = [1.0] if args.quick else [float(m) for m in args.minutes.split(",") if m.strip()]
    skip_moviepy = {"all"} if args.skip_moviepy == "all" else {float(m) for m in args.skip_moviepy.split(",") if m.strip()}
    scene_s = 1.0 if args.quick else 5.0
    studio_worker = "studio"

    work = args.keep or Path(tempfile.mkdtemp(prefix="studio-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    failures: list[str] = []
    try:
        for length_min in minutes:
            # 2. Build the case: 12 scenes a minute (5 s each), or 2 scenes of 1 s for --quick.
            scenes = 2 if args.quick else max(1, int(round(length_min * 60 / scene_s)))
            case_dir = work / f"case-{scenes}"
            t0 = time.perf_counter()
            # --quick uses quarter-size stills so that the smoke test's set-up stays short.
            project = build_case(case_dir, scenes=scenes, scene_s=scene_s, preset=presets[0],
                                 still_size=(960, 540) if args.quick else STILL_SIZE)
            print(f"[{scenes} scenes x {scene_s:g} s: inputs made in {time.perf_counter() - t0:.1f} s in {case_dir}]", flush=True)
            for preset in presets:
                size = preset.size(project.aspect)
                _, _, total_s = scene_starts(project, preset)
                n_frames = int(round(total_s * preset.fps))
                for approach in approaches:
                    if approach == "moviepy" and ("all" in skip_moviepy or length_min in skip_moviepy):
                        continue
                    out = case_dir / f"{preset.name}-{approach}.mp4"
                    raw = None
                    if approach == "bound":
                        # 3. Make the frames once (not timed): raw yuv420p in /dev/shm when it fits.
                        raw_bytes = n_frames * size[0] * size[1] * 3 // 2
                        raw = raw_folder(raw_bytes) / f"studio-bench-{os.getpid()}-{preset.name}-{scenes}.yuv"
                        t0 = time.perf_counter()
                        made = write_raw_yuv(render_frames(project, preset), raw)
                        print(f"[bound: {made} frames {size[0]}x{size[1]} ({raw_bytes / 2**30:.2f} GiB) made in "
                              f"{time.perf_counter() - t0:.1f} s at {raw.parent}]", flush=True)
                    runs, info, splits = [], {}, []
                    load_before = os.getloadavg()
                    try:
                        for _ in range(args.repeat):
                            if approach == "bound":
                                m = time_bound(raw, preset, size, out)
                            else:
                                m, info = time_worker(studio_worker if approach == "studio" else approach, case_dir, preset,
                                                      out, case_dir / f"{preset.name}-{approach}.log")
                                if "python_cpu_s" in info:
                                    splits.append((info["python_cpu_s"], info["children_cpu_s"]))
                            # 4. Check every output, so a broken render cannot look fast.
                            ok, problem, facts = check_video(out, expected_s=total_s, size=size, fps=preset.fps,
                                                             need_audio=approach != "bound")
                            if not m.error and not ok:
                                m.error = problem
                            runs.append(m)
                            print(f"  {scenes}x{scene_s:g}s {preset.name:9s} {approach:8s} {m.wall_s:7.2f} s "
                                  f"{m.peak_rss_mb:7.0f} MB {'ok' if not m.error else 'FAILED: ' + m.error}", flush=True)
                    finally:
                        if raw is not None:
                            raw.unlink(missing_ok=True)
                    best = median_measurement(runs)
                    if best.error:
                        failures.append(f"{preset.name} {approach} ({length_min:g} min): {best.error}")
                    rows.append({
                        "minutes": length_min, "case": f"{scenes}x{scene_s:g}s", "scenes": scenes, "scene_s": scene_s,
                        "preset": preset.name, "approach": approach, "load_before": load_before, "load_after": os.getloadavg(),
                        "label": approach,
                        "width": size[0], "height": size[1], "fps": preset.fps, "frames": n_frames,
                        "video_s": round(total_s, 3), "runs": [r.to_dict() for r in runs], **best.to_dict(),
                        "realtime_x": total_s / best.wall_s if best.wall_s else None,
                        "output": facts if ok else {}, "encoder": info.get("encoder", "libx264"),
                        "renderer": info.get("renderer"),
                        "python_cpu_s": statistics.median(p for p, _ in splits) if splits else None,
                        "children_cpu_s": statistics.median(c for _, c in splits) if splits else None,
                        "encoder_args": preset.encoder_args("libx264"),
                    })
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    # 5. Report: the table, the ratios and the targets.
    summary = summarise(rows)
    print_report(rows, summary, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()
                                                                       if k not in ("worker", "project", "preset", "output", "report")},
                                         "rows": rows, "summary": summary, "failures": failures}, indent=1))
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def machine() -> dict:
    import psutil

    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor()}


def summarise(rows: list[dict]) -> list[dict]:
    """Ratios against the targets: one entry per (minutes, preset), plus memory flatness across lengths."""
    def find(minutes, preset, approach):
        return next((r for r in rows if r["minutes"] == minutes and r["preset"] == preset and r["approach"] == approach
                     and not r["error"]), None)

    out = []
    for minutes, preset in dict.fromkeys((r["minutes"], r["preset"]) for r in rows):
        studio, moviepy, bound = (find(minutes, preset, a) for a in APPROACHES)
        tensor = find(minutes, preset, "tensor-cpu")
        case = next(r["case"] for r in rows if r["minutes"] == minutes)
        entry = {"minutes": minutes, "case": case, "preset": preset}
        if studio and bound:
            entry["studio_over_bound"] = studio["wall_s"] / bound["wall_s"]
            entry["studio_over_bound_cpu"] = studio["cpu_s"] / bound["cpu_s"] if bound["cpu_s"] else None
            entry["bound_met"] = entry["studio_over_bound"] <= BOUND_TARGET
        if studio and moviepy:
            entry["moviepy_over_studio"] = moviepy["wall_s"] / studio["wall_s"]
            entry["moviepy_over_studio_cpu"] = moviepy["cpu_s"] / studio["cpu_s"] if studio["cpu_s"] else None
            if preset in SPEEDUP_TARGETS:
                entry["speedup_target"] = SPEEDUP_TARGETS[preset]
                entry["speedup_met"] = entry["moviepy_over_studio"] >= SPEEDUP_TARGETS[preset]
        if studio and tensor:
            entry["tensor_cpu_over_studio"] = tensor["wall_s"] / studio["wall_s"]
        if studio:
            entry["studio_peak_mb"] = studio["peak_rss_mb"]
            entry["memory_met"] = studio["peak_rss_mb"] < MEMORY_TARGET_MB
        out.append(entry)
    lengths = sorted({r["minutes"] for r in rows})
    if len(lengths) > 1:
        for preset in dict.fromkeys(r["preset"] for r in rows):
            short, long = find(lengths[0], preset, "studio"), find(lengths[-1], preset, "studio")
            if short and long:
                ratio = long["peak_rss_mb"] / short["peak_rss_mb"]
                out.append({"preset": preset, "flat_from_min": lengths[0], "flat_to_min": lengths[-1],
                            "peak_growth": ratio, "flat_met": ratio <= FLAT_TARGET})
    return out


def print_report(rows: list[dict], summary: list[dict], args: argparse.Namespace) -> None:
    info = machine()
    print()
    print(f"Composition benchmark on {info['cpus']} CPU cores, {info['memory_gib']} GiB, no GPU used (libx264); "
          f"{'median of ' + str(args.repeat) + ' runs' if args.repeat > 1 else 'one run each'}; load average "
          f"{min(r['load_before'][0] for r in rows):.1f}-{max(r['load_after'][0] for r in rows):.1f} during the runs")
    head = ("case", "preset", "approach", "size", "video_s", "wall_s", "x_realtime", "cpu_s", "peak_MB", "out_MB", "out_s",
            "load", "check")
    table = [head]
    for r in rows:
        out = r["output"]
        table.append((f"{r['scenes']}x{r['scene_s']:g}s", r["preset"], r["label"], f"{r['width']}x{r['height']}@{r['fps']}",
                      fmt(r["video_s"], 1), fmt(r["wall_s"]), fmt(r["realtime_x"], 1), fmt(r["cpu_s"], 1),
                      fmt(r["peak_rss_mb"], 0), fmt(out["size_bytes"] / 2**20 if out else None, 1),
                      fmt(out.get("duration_s") if out else None, 2), fmt(r["load_before"][0], 1),
                      "ok" if not r["error"] else "FAILED"))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        print("  ".join(str(c).ljust(widths[i]) if i < 3 else str(c).rjust(widths[i]) for i, c in enumerate(row)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print("(bound = ffmpeg alone encoding pre-made raw frames with the same x264 arguments: video only, no audio; "
          "load = 1-minute load average when the row started: above ~0.5 other work shared the cores)")
    print()
    split = [r for r in rows if r.get("python_cpu_s") is not None]
    if split:
        print("Where the CPU went (median): " + "; ".join(
            f"{r['case']} {r['preset']} {r['label']}: Python {r['python_cpu_s']:.1f} s + ffmpeg {r['children_cpu_s']:.1f} s"
            for r in split))
        print()
    print("Ratios and targets:")
    for s in summary:
        if "peak_growth" in s:
            print(f"  {s['preset']:9s} Studio peak memory {s['flat_to_min']:g} min / {s['flat_from_min']:g} min = "
                  f"{s['peak_growth']:.2f} (target <= {FLAT_TARGET}): {'met' if s['flat_met'] else 'NOT MET'}")
            continue
        where = f"  {s['case']:7s} {s['preset']:9s}"
        if "studio_over_bound" in s:
            print(f"{where} studio/bound   = {s['studio_over_bound']:.2f}x wall, {fmt(s['studio_over_bound_cpu'])}x CPU "
                  f"(target <= {BOUND_TARGET} wall): {'met' if s['bound_met'] else 'NOT MET'}")
        if "moviepy_over_studio" in s:
            target = (f" (target >= {s['speedup_target']:g} wall): {'met' if s['speedup_met'] else 'NOT MET'}"
                      if "speedup_target" in s else " (no target at this tier)")
            print(f"{where} moviepy/studio = {s['moviepy_over_studio']:.2f}x wall, {fmt(s['moviepy_over_studio_cpu'])}x CPU{target}")
        if "tensor_cpu_over_studio" in s:
            print(f"{where} tensor-cpu/studio = {s['tensor_cpu_over_studio']:.2f}x wall (no target: a check of the GPU "
                  "renderer's code, not a way to render)")
        if "studio_peak_mb" in s:
            print(f"{where} studio peak    = {s['studio_peak_mb']:.0f} MB (target < {MEMORY_TARGET_MB:g} MB): "
                  f"{'met' if s['memory_met'] else 'NOT MET'}")


if __name__ == "__main__":
    sys.exit(main())
