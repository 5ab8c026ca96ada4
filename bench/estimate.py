"""Render time estimates against real renders: `studio.estimate.estimate_render_s` before, the compose step's wall
time after.

    python bench/estimate.py                             # 4 scenes x 3 s at Draft and Standard, Maximum 1:1 for 2 s
    python bench/estimate.py --calibrate                 # also 8 x 1.5 s against 2 x 6 s at Draft: the per-scene cost
    python bench/estimate.py --presets draft --no-maximum --json bench/results/estimate.json
    python bench/estimate.py --quick                     # 2 scenes x 1 s at Draft: a smoke test

It builds the compositor benchmark's case (`bench.common.build_case`: distinct detailed 1920x1080 stills, speech-like
narration with word timings so captions are burned in, a music bed) in a temporary folder, asks for the estimate
(which measures this machine's encoder with its tiny probe, once per preset), then composes the project as the app
does -- segment by segment into the project's assets, `studio.compose.segments.compose_segments` -- and, with
``--one-pass``, in one pass too (`studio.compose.compose`), each in a fresh folder so nothing is reused. Every output is
probed. It prints estimate and measured seconds side by side, their ratio, and the compose factor this render implies
(its time less the per-scene overhead, over the bare encode time frames x pixels / encode_rate) to compare with
`studio.estimate.COMPOSE_FACTOR`. Runs in one process: the estimate is what the app would show in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import STILL_SIZE, build_case, check_video, exit_on_sigterm  # noqa: E402
from studio import estimate as est  # noqa: E402
from studio.presets import Preset, load_preset  # noqa: E402
from studio.project import Project  # noqa: E402


def compose_once(project: Project, preset: Preset, output: Path, one_pass: bool) -> tuple[float, float]:
    """Compose `project` (its assets in its own folder) and return (wall seconds, the timeline's length)."""
    from studio.compose import build_timeline, compose
    from studio.compose.segments import compose_segments

    t0 = time.perf_counter()
    if one_pass:
        result = compose(project, preset, output)
        video_s = result.timeline.duration_s
    else:
        timeline = build_timeline(project, preset)
        result = compose_segments(timeline, project.assets_dir, output).result
        video_s = timeline.duration_s
    return time.perf_counter() - t0, video_s


def bench_case(work: Path, name: str, preset: Preset, scenes: int, scene_s: float, aspect: str, one_pass: bool,
               still_size: tuple[int, int]) -> list[dict]:
    rows = []
    for mode in (("segments", "one pass") if one_pass else ("segments",)):
        folder = work / f"{name}-{preset.name}-{aspect.replace(':', 'x')}-{mode.replace(' ', '')}"
        t0 = time.perf_counter()
        project = build_case(folder, scenes=scenes, scene_s=scene_s, preset=preset, still_size=still_size)
        project = replace(project, aspect=aspect).save(folder)
        made_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        estimate = est.estimate_render_s(project, preset)
        estimate_call_s = time.perf_counter() - t0
        rate = est.encode_rate(preset, estimate.encoder)
        output = folder / "out.mp4"
        load_before = os.getloadavg()[0]
        measured_s, video_s = compose_once(project, preset, output, mode == "one pass")
        ok, problem, _ = check_video(output, expected_s=video_s, size=(estimate.width, estimate.height), fps=preset.fps,
                                     need_audio=True)
        bare_s = round(estimate.video_s * preset.fps) * estimate.width * estimate.height / rate
        row = {
            "case": name, "preset": preset.name, "aspect": aspect, "mode": mode, "scenes": scenes, "scene_s": scene_s,
            "width": estimate.width, "height": estimate.height, "fps": preset.fps, "encoder": estimate.encoder,
            "video_s": round(estimate.video_s, 3), "timeline_s": round(video_s, 3),
            "encode_rate_mpx_s": round(rate / 1e6, 2), "estimate_call_s": round(estimate_call_s, 3),
            "estimate_s": round(estimate.seconds, 2), "measured_s": round(measured_s, 2),
            "ratio": round(measured_s / estimate.seconds, 3), "bare_encode_s": round(bare_s, 3),
            "implied_factor": round((measured_s - scenes * est.SCENE_OVERHEAD_S) / bare_s, 3),
            "text": estimate.text, "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "inputs_s": round(made_s, 1), "error": "" if ok else problem,
        }
        print(f"  {name:9s} {preset.name:8s} {aspect:4s} {mode:8s} estimate {row['estimate_s']:7.2f} s  measured "
              f"{row['measured_s']:7.2f} s  measured/estimate {row['ratio']:5.2f}  implied factor "
              f"{row['implied_factor']:5.2f}  {'ok' if ok else 'FAILED: ' + problem}", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="draft,standard", help="tiers at 16:9 (default: draft,standard)")
    parser.add_argument("--scenes", type=int, default=4, help="scenes of the case (default 4)")
    parser.add_argument("--scene-s", type=float, default=3.0, help="seconds a scene (default 3)")
    parser.add_argument("--no-maximum", action="store_true", help="skip Maximum at 1:1 (one scene of 2 s)")
    parser.add_argument("--one-pass", action="store_true", help="also compose in one pass")
    parser.add_argument("--calibrate", action="store_true",
                        help="also 8 scenes x 1.5 s and 2 x 6 s at Draft (the same length): the per-scene cost")
    parser.add_argument("--quick", action="store_true", help="2 scenes x 1 s at Draft only, small stills")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    presets = [load_preset(p.strip()) for p in args.presets.split(",") if p.strip()]
    still = STILL_SIZE
    cases = [("case", p, args.scenes, args.scene_s, "16:9") for p in presets]
    if args.quick:
        cases, still = [("quick", load_preset("draft"), 2, 1.0, "16:9")], (960, 540)
    elif not args.no_maximum:
        cases.append(("4K 1:1", load_preset("maximum"), 1, 2.0, "1:1"))
    if args.calibrate and not args.quick:
        draft = load_preset("draft")
        cases += [("8x1.5s", draft, 8, 1.5, "16:9"), ("2x6s", draft, 2, 6.0, "16:9")]

    work = Path(tempfile.mkdtemp(prefix="studio-bench-estimate-"))
    rows: list[dict] = []
    try:
        print(f"[COMPOSE_FACTOR {est.COMPOSE_FACTOR}, SCENE_OVERHEAD_S {est.SCENE_OVERHEAD_S}, "
              f"load {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs]", flush=True)
        for name, preset, scenes, scene_s, aspect in cases:
            rows += bench_case(work, name, preset, scenes, scene_s, aspect, args.one_pass and not args.quick, still)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("| case | preset | frame | mode | video | estimate | measured | measured / estimate | implied factor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenes']}x{r['scene_s']:g}s | {r['preset']} | {r['width']}x{r['height']}@{r['fps']} "
              f"| {r['mode']} | {r['video_s']:.2f} s | {r['estimate_s']:.2f} s | {r['measured_s']:.2f} s "
              f"| **{r['ratio']:.2f}** | {r['implied_factor']:.2f} |")
    by_layout = {r["case"]: r for r in rows if r["case"] in ("8x1.5s", "2x6s") and r["mode"] == "segments"}
    if len(by_layout) == 2:
        many, few = by_layout["8x1.5s"], by_layout["2x6s"]
        # Same frames, 6 more scenes: the difference is what a scene costs beside its frames.
        extra = (many["measured_s"] - few["measured_s"]) / (many["scenes"] - few["scenes"])
        print(f"\nper-scene cost (8 x 1.5 s against 2 x 6 s at Draft, {many['video_s']:.2f} s and "
              f"{few['video_s']:.2f} s of video): {extra:.2f} s a scene")
    for r in rows:
        print(f"{r['preset']} {r['aspect']}: {r['text']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "compose_factor": est.COMPOSE_FACTOR,
                                         "scene_overhead_s": est.SCENE_OVERHEAD_S}, indent=1))
    failures = [r for r in rows if r["error"]]
    for r in failures:
        print(f"FAILED: {r['case']} {r['preset']} {r['mode']}: {r['error']}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
