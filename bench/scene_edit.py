"""Scene-edit benchmark: re-rendering a project after editing one scene, through the CLI with ``--project``.

    python bench/scene_edit.py                 # the figures in bench/README.md (## Scene edits), a few minutes on 2 cores
    python bench/scene_edit.py --quick         # a smoke run: 4 scenes, Draft only
    python bench/scene_edit.py --json out.json

For each preset (Draft, Standard), side by side in one run, each render a fresh ``python -m studio render`` process
timed as a whole (Python's start, narration and painting included), on the offline providers (the Piper or espeak-ng
voice, cards, libx264 here):

1. cold: a storyboard of 12 scenes of about 5 s (narration-timed) into a fresh ``--project`` folder, composed segment
   by segment (the default with ``--project``); and the same storyboard into another fresh folder with
   ``--one-pass``.
2. on the first project, one edit at a time, each followed by ``render --project P``: one scene's narration (scene 6:
   narrated again, and its length changes, so every later scene moves), one scene's picture (scene 3's prompt:
   painted again), one scene's transition (into scene 9), and the caption style (every frame).
3. on the one-pass project, the same narration edit re-rendered with ``--one-pass`` (how Studio composed before).

Every output is checked: its duration lies within one frame of its timeline; the segments re-rendered are exactly those
that show the edited scene (the transition only, for a transition edit; all, for the caption style), and every frame
outside them is identical to the previous render's (an md5 per decoded frame). A failed check stops the run.
Generated files go to a temporary folder (``--keep DIR`` to keep them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks run as scripts from a checkout
    sys.path.insert(0, str(ROOT))

import studio  # noqa: E402
from studio.compose import build_timeline  # noqa: E402
from studio.compose.segments import plan_segments  # noqa: E402
from studio.media import probe  # noqa: E402
from studio.project import Project  # noqa: E402

# About 5 s a scene with the offline voices (lead and tail included): 14-15 words.
LINES = [
    "The morning light falls across the quiet valley and slowly wakes the sleeping town below.",
    "Farmers walk out to the fields while the mist still hangs low over the river banks.",
    "At the market the first stalls open, and the smell of fresh bread drifts down the street.",
    "Children run to school along the old stone bridge, calling out to friends on the way.",
    "By noon the square is full of voices, bicycles, music and the clatter of busy cafes.",
    "A storm gathers over the hills, and the wind turns the leaves silver for a moment.",
    "Rain taps on the rooftops; people hurry under awnings and wait for it to pass.",
    "When the clouds break, a rainbow stretches from the church tower to the far woods.",
    "In the afternoon the workshop hums, as the carpenter shapes a chair from walnut wood.",
    "Evening comes slowly, painting the windows gold, and the bakers start the next dough.",
    "Lanterns glow along the harbour where the fishing boats return with their nets full.",
    "At night the valley rests again, under a sky crowded with a thousand quiet stars.",
]
NEW_LINE = "Thunder rolls across the hills, and for a moment every window in the town goes dark."


def storyboard(count: int) -> list[dict]:
    # Fixed ids: both projects get the same scenes (a scene's Ken Burns move follows its id and seed).
    return [{"id": f"s{i + 1:02d}", "narration": LINES[i % len(LINES)],
             "visual_prompt": f"scene {i + 1}: " + LINES[i % len(LINES)][:40], "transition": "crossfade"}
            for i in range(count)]


def frame_hashes(path: Path) -> list[str]:
    """An md5 per decoded frame (its yuv420p planes)."""
    import av

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            digest = hashlib.md5()
            for plane in frame.planes:
                digest.update(bytes(plane))
            out.append(digest.hexdigest())
    return out


def render(project_dir: Path, output: Path, preset: str, *, storyboard_file: Path | None = None,
           one_pass: bool = False, narrator: str = "auto") -> dict:
    """One ``python -m studio render`` run; returns its wall time and what its summary printed."""
    args = [sys.executable, "-m", "studio", "render", "--preset", preset, "--project", str(project_dir),
            "--output", str(output), "--quiet", "--narrator", narrator, "--painter", "cards"]
    if storyboard_file is not None:
        args += ["--storyboard", str(storyboard_file)]
    if one_pass:
        args.append("--one-pass")
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"render failed ({proc.returncode}): {proc.stderr[-2000:]}")
    steps = dict(re.findall(r"(\w+) ([\d.]+) s", re.search(r"^steps: (.*)$", proc.stdout, re.M).group(1)))
    segments = re.search(r"^segments: (\d+) of (\d+) reused, (\d+) rendered; soundtrack (\w+)", proc.stdout, re.M)
    return {"wall_s": round(wall, 2), "steps_s": {k: float(v) for k, v in steps.items()},
            "segments_reused": int(segments.group(1)) if segments else None,
            "segments_total": int(segments.group(2)) if segments else None,
            "segments_rendered": int(segments.group(3)) if segments else None,
            "soundtrack": segments.group(4) if segments else None}


def plans_of(project_dir: Path, preset):
    timeline = build_timeline(Project.load(project_dir), preset)
    return timeline, plan_segments(timeline)


def check(output: Path, project_dir: Path, preset, previous: dict | None, expected_ids: set[str] | None,
          only_transition: tuple[str, str] | None = None) -> dict:
    """Probe the output, and compare its segments and frames with the previous render's (see the module docstring)."""
    timeline, plans = plans_of(project_dir, preset)
    info = probe(output)
    if abs(info.duration_s - timeline.duration_s) > 1 / timeline.fps + 1e-3 or not info.has_audio:
        raise RuntimeError(f"{output.name}: {info.duration_s:.3f} s, the timeline says {timeline.duration_s:.3f} s")
    hashes = frame_hashes(output)
    if len(hashes) != timeline.frame_count:
        raise RuntimeError(f"{output.name}: {len(hashes)} frames, the timeline has {timeline.frame_count}")
    state = {"plans": plans, "hashes": hashes, "video_s": round(timeline.duration_s, 2), "frames": len(hashes)}
    if previous is None:
        return state
    before = {p.key: p for p in previous["plans"]}
    redone = [p for p in plans if p.key not in before]
    if only_transition is not None:
        want = [p for p in plans if p.scene_ids == only_transition]
    elif expected_ids is None:  # every segment
        want = list(plans)
    else:
        want = [p for p in plans if set(p.scene_ids) & expected_ids]
    if [p.index for p in redone] != [p.index for p in want]:
        raise RuntimeError(f"re-rendered segments {[p.index for p in redone]}, expected {[p.index for p in want]}")
    same = 0
    for plan in plans:
        if plan.key in before:
            old = before[plan.key]
            if hashes[plan.first_frame:plan.end_frame] != previous["hashes"][old.first_frame:old.end_frame]:
                raise RuntimeError(f"segment {plan.index} was reused but its frames differ from the previous render's")
            same += plan.frames
    state.update(frames_identical=same, frames_rendered=sum(p.frames for p in redone))
    return state


def bench_preset(work: Path, name: str, count: int, narrator: str) -> list[dict]:
    preset = studio.load_preset(name)
    story = work / f"{name}-story.json"
    story.write_text(json.dumps(storyboard(count)), "utf-8")
    seg_dir, one_dir = work / f"{name}-segments", work / f"{name}-one-pass"
    rows = []

    def row(case: str, mode: str, result: dict, state: dict | None = None) -> None:
        entry = {"preset": name, "case": case, "compose": mode, **result}
        if state is not None:
            entry.update({k: state[k] for k in ("video_s", "frames", "frames_identical", "frames_rendered") if k in state})
        rows.append(entry)
        steps = ", ".join(f"{k} {v:.1f}" for k, v in result["steps_s"].items() if k != "storyboard")
        segs = (f"; segments {result['segments_rendered']} rendered, {result['segments_reused']} reused"
                if result["segments_total"] is not None else "")
        print(f"   {name:8s} {case:22s} {mode:9s} {result['wall_s']:6.2f} s  ({steps}{segs})", flush=True)

    # 1. Cold, both ways.
    cold = render(seg_dir, work / f"{name}-cold.mp4", name, storyboard_file=story, narrator=narrator)
    state = check(work / f"{name}-cold.mp4", seg_dir, preset, None, None)
    row("cold", "segments", cold, state)
    cold_one = render(one_dir, work / f"{name}-cold-one.mp4", name, storyboard_file=story, one_pass=True,
                      narrator=narrator)
    row("cold", "one pass", cold_one, check(work / f"{name}-cold-one.mp4", one_dir, preset, None, None))

    # 2. Edits of the segment project, each rendered again.
    project = Project.load(seg_dir)
    ids = [s.id for s in project.scenes]
    at = {"narration": min(5, count - 1), "picture": min(2, count - 1), "transition": min(8, count - 1)}
    edits = [
        ("narration", lambda p: p.edit_scene(ids[at["narration"]], narration=NEW_LINE), {ids[at["narration"]]}, None),
        ("picture", lambda p: p.edit_scene(ids[at["picture"]], visual_prompt="a lighthouse in a storm"),
         {ids[at["picture"]]}, None),
        ("transition", lambda p: p.edit_scene(ids[at["transition"]], transition="wipe"), None,
         (ids[at["transition"] - 1], ids[at["transition"]])),
        ("caption style", lambda p: replace(p, caption_style="boxed"), None, None),
    ]
    for case, edit, expected, transition in edits:
        edit(Project.load(seg_dir)).save()
        out = work / f"{name}-{case.replace(' ', '-')}.mp4"
        result = render(seg_dir, out, name, narrator=narrator)
        state = check(out, seg_dir, preset, state, expected, transition)
        result["of_cold"] = round(result["wall_s"] / cold["wall_s"], 3)
        row(f"edit {case}", "segments", result, state)

    # 3. The same narration edit, one pass.
    Project.load(one_dir).edit_scene(ids[at["narration"]], narration=NEW_LINE).save()
    result = render(one_dir, work / f"{name}-narration-one.mp4", name, one_pass=True, narrator=narrator)
    result["of_cold"] = round(result["wall_s"] / cold_one["wall_s"], 3)
    row("edit narration", "one pass", result, check(work / f"{name}-narration-one.mp4", one_dir, preset, None, None))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 scenes at Draft")
    parser.add_argument("--presets", help="comma-separated tiers (default draft,standard; quick: draft)")
    parser.add_argument("--scenes", type=int, help="scenes in the storyboard (default 12; quick 4)")
    parser.add_argument("--narrator", default="auto", help="narrator for every render (default auto: Piper if present)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", type=Path, help="keep the projects and videos in this folder")
    args = parser.parse_args(argv)
    presets = (args.presets or ("draft" if args.quick else "draft,standard")).split(",")
    count = args.scenes or (4 if args.quick else 12)
    command = "python bench/scene_edit.py" + " ".join([""] + (argv if argv is not None else sys.argv[1:]))
    report: dict = {"command": command, "cpus": os.cpu_count(), "load_average_before": os.getloadavg(), "rows": []}
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")
    print(f"{count} scenes; every render is a fresh `python -m studio render --project P` (wall time, start-up included)")
    with tempfile.TemporaryDirectory(prefix="studio-bench-edit-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in presets:
            report["rows"] += bench_preset(work, name, count, args.narrator)
    report["load_average_after"] = os.getloadavg()

    print("\n| preset | case | compose | wall s | of cold | segments rendered / reused | frames identical to the "
          "previous render |")
    print("|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        segs = f"{r['segments_rendered']} / {r['segments_reused']}" if r["segments_total"] is not None else "-"
        same = f"{r['frames_identical']} of {r['frames']}" if "frames_identical" in r else "-"
        ratio = f"{r['of_cold']:.0%}" if "of_cold" in r else "-"
        print(f"| {r['preset']} | {r['case']} | {r['compose']} | {r['wall_s']:.2f} | {ratio} | {segs} | {same} |")
    goal = [r for r in report["rows"] if r["preset"] == "standard" and r["compose"] == "segments"
            and r["case"] in ("edit narration", "edit picture")]
    if goal:
        met = all(r["of_cold"] <= 0.25 for r in goal)
        shown = ", ".join(f"{r['case']} {r['of_cold']:.0%}" for r in goal)
        print(f"\nGoal (Standard, a narration or picture edit within 25 % of the cold render): "
              f"{'met' if met else 'NOT met'} ({shown})")
        report["goal_met"] = met
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
