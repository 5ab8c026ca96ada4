"""Choose each tier's x264 settings by measurement: encode time, file size and quality (SSIM, PSNR) per preset and CRF.

    python bench/encoders.py                          # all four tiers, the full grid (about 15-20 min on 2 cores)
    python bench/encoders.py --tiers draft,standard --json bench/results/encoders.json
    python bench/encoders.py --tiers maximum --seconds 2 --crfs 16,18,20
    python bench/encoders.py --quick                  # a tiny grid at 320x180: a smoke test that finishes in seconds

For each tier it renders representative footage at the tier's resolution and frame rate: two detailed stills (as
large as the frame, at least 1920x1080) with Ken Burns, a crossfade and burned-in captions, made with the same frame
renderer as the encoder bound in bench/compose.py, stored as raw yuv420p. Then each (x264 preset, CRF) pair encodes
that file alone (``ffmpeg -f rawvideo ... -c:v libx264 -preset P -crf C``), and ffmpeg's ``ssim`` and ``psnr`` filters
compare the decoded result with the raw source frame by frame.

Each tier's rule (`RULES`) picks a setting from the measurements, not by habit:

* draft    -- speed first: the fastest setting whose SSIM reaches the floor (0.95) among those whose file is at most 3x
  the smallest such file (ultrafast's files are several times larger; a smaller file breaks near-ties within 5 %);
* standard -- balanced: the least encode time x file size among settings reaching the floor (0.97);
* premium  -- quality first: a higher floor (0.98), then the smallest file among settings that reach it and encode
  within 3x the time of the fastest one that does (so a small saving never costs a much slower preset);
* maximum  -- archive: the same floor (at 4K this footage's SSIM tops out near 0.985, so a higher floor would pick a
  knife edge), then the smallest file within 5x the time of the fastest passing setting.

Time is the encoder's CPU time (user + system, the fastest of ``--repeat`` runs, default 3); wall time is shown too.
The rules use CPU time because this machine's 2 cores are shared with other work: wall time there swings with the
load, CPU time barely does, and on an idle machine x264's wall time is its CPU time over the cores it keeps busy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (STILL_SIZE, build_case, exit_on_sigterm, measure, raw_folder, render_frames,  # noqa: E402
                          write_raw_yuv)
from studio.errors import StudioError  # noqa: E402
from studio.media import INPUT_GUARD, Ffmpeg, run_ffmpeg_output  # noqa: E402
from studio.presets import load_preset  # noqa: E402

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
TIERS = ("draft", "standard", "premium", "maximum")
# CRFs tried per tier: around where each tier's quality floor is reached, a step or two either side.
CRFS = {"draft": (26, 28, 30, 32, 34), "standard": (20, 22, 24, 26, 28), "premium": (16, 18, 20, 22, 24),
        "maximum": (16, 18, 20, 22)}
CLIP_S = {"draft": 8.0, "standard": 6.0, "premium": 4.0, "maximum": 2.0}  # 4K encodes are slow on 2 cores: shorter


@dataclass(frozen=True)
class Rule:
    """How a tier trades quality, size and time."""

    min_ssim: float  # the quality floor (SSIM "All" averaged over frames, against the raw source)
    objective: str  # "time", "time*size" or "size": what is minimised among settings that reach the floor
    max_size_x: float | None  # only settings whose file is at most this times the smallest passing file
    max_time_x: float | None  # only settings that encode within this times the fastest passing setting
    describe: str


RULES = {
    "draft": Rule(0.95, "time", 3.0, None, "speed first: the least CPU time with SSIM >= 0.95 and a file <= 3x the smallest such"),
    "standard": Rule(0.97, "time*size", None, None, "balanced: the least CPU time x size with SSIM >= 0.97"),
    "premium": Rule(0.98, "size", None, 3.0, "quality first: SSIM >= 0.98, then the smallest file within 3x the least such CPU time"),
    # At 4K the footage's SSIM tops out near 0.985 (CRF 16 with every preset), so a 0.985 floor picks a knife edge;
    # Maximum keeps Premium's floor and buys its smaller files with more encoder time.
    "maximum": Rule(0.98, "size", None, 5.0, "archive: SSIM >= 0.98, then the smallest file within 5x the least such CPU time"),
}


@dataclass
class Result:
    tier: str
    preset: str
    crf: int
    encode_s: float  # wall time
    cpu_s: float  # user + system time of the encoder: what the rules compare
    size_bytes: int
    kbps: float
    ssim: float
    ssim_min: float
    psnr_db: float
    frames: int

    def to_dict(self) -> dict:
        return asdict(self)


# -- measuring ----------------------------------------------------------------------------------------------------------
def encode(raw: Path, size: tuple[int, int], fps: int, preset: str, crf: int, out: Path) -> tuple[float, float]:
    """Encode the raw clip with libx264 alone; returns (wall seconds, CPU seconds)."""
    args = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{size[0]}x{size[1]}", "-r", str(fps), *INPUT_GUARD, "-i", raw,
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", "-an", out]
    holder: dict = {}

    def start():
        holder["ff"] = Ffmpeg(args, what=f"x264 {preset} crf {crf}")
        return holder["ff"].proc

    def finish(_proc) -> str:
        try:
            holder["ff"].wait()
        except StudioError as exc:
            return str(exc)
        return ""

    m = measure(start, finish=finish)
    if m.error:
        raise StudioError(m.error)
    return m.wall_s, m.cpu_s


_SSIM = re.compile(r"n:(\d+) Y:[\d.]+ U:[\d.]+ V:[\d.]+ All:([\d.]+)")
_PSNR = re.compile(r"n:(\d+) mse_avg:([\d.]+)")


def compare(encoded: Path, raw: Path, size: tuple[int, int], fps: int) -> tuple[float, float, float, int]:
    """(mean SSIM, worst frame's SSIM, PSNR in dB of the mean MSE, frames) of `encoded` against the raw source."""
    # The filter graph holds only constants; both filters write their per-frame lines to ffmpeg's stdout ("-").
    graph = "[0:v]split=2[a][b];[1:v]split=2[c][d];[a][c]ssim=stats_file=-;[b][d]psnr=stats_file=-"
    text = run_ffmpeg_output([*INPUT_GUARD, "-i", encoded, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s",
                              f"{size[0]}x{size[1]}", "-r", str(fps), *INPUT_GUARD, "-i", raw, "-lavfi", graph,
                              "-f", "null", "-"], what="ssim/psnr").decode("utf-8", "replace")
    ssim = [float(v) for _, v in _SSIM.findall(text)]
    mse = [float(v) for _, v in _PSNR.findall(text)]
    if not ssim or len(ssim) != len(mse):
        raise StudioError(f"could not read ssim/psnr statistics for {encoded.name} ({len(ssim)} ssim, {len(mse)} psnr lines)")
    mean_mse = statistics.fmean(mse)
    psnr = 99.0 if mean_mse == 0 else 10 * math.log10(255.0**2 / mean_mse)
    return statistics.fmean(ssim), min(ssim), psnr, len(ssim)


def make_footage(tier: str, folder: Path, seconds: float, size_override: tuple[int, int] | None = None) -> tuple[Path, tuple[int, int], int, int]:
    """Render the tier's representative clip as raw yuv420p: (path, size, fps, frames)."""
    preset = load_preset(tier)
    size = size_override or preset.size("16:9")
    scene_s = (seconds + preset.transition_s) / 2  # two scenes overlapping by one crossfade
    scene_s = max(scene_s, preset.lead_s + preset.tail_s + 0.1)
    still = (max(STILL_SIZE[0], size[0]), max(STILL_SIZE[1], size[1]))
    project = build_case(folder / f"case-{tier}", scenes=2, scene_s=scene_s, preset=preset, still_size=still)
    raw_bytes = int(seconds * preset.fps * size[0] * size[1] * 1.5)
    raw = raw_folder(raw_bytes) / f"studio-encoders-{os.getpid()}-{tier}.yuv"
    frames = write_raw_yuv(render_frames(project, preset, size), raw)
    return raw, size, preset.fps, frames


def measure_tier(tier: str, presets: list[str], crfs: list[int], seconds: float, work: Path, repeat: int,
                 size_override: tuple[int, int] | None = None) -> list[Result]:
    """Every (preset, CRF) pair on the tier's footage."""
    t0 = time.perf_counter()
    raw, size, fps, frames = make_footage(tier, work, seconds, size_override)
    print(f"[{tier}: {frames} frames {size[0]}x{size[1]}@{fps} made in {time.perf_counter() - t0:.1f} s]", flush=True)
    results = []
    try:
        for preset in presets:
            for crf in crfs:
                out = work / f"{tier}-{preset}-{crf}.mp4"
                times = [encode(raw, size, fps, preset, crf, out) for _ in range(repeat)]  # the fastest is kept
                ssim, ssim_min, psnr, n = compare(out, raw, size, fps)
                if n != frames:
                    raise StudioError(f"{out.name} has {n} frames, the source {frames}")
                size_bytes = out.stat().st_size
                results.append(Result(tier, preset, crf, min(t[0] for t in times), min(t[1] for t in times), size_bytes,
                                      size_bytes * 8 / 1000 / (frames / fps), ssim, ssim_min, psnr, frames))
                r = results[-1]
                print(f"  {tier:8s} {preset:9s} crf {crf:2d}: {r.encode_s:6.2f} s wall {r.cpu_s:6.2f} s CPU  {r.kbps:8.0f} kb/s  "
                      f"SSIM {r.ssim:.4f} (min {r.ssim_min:.4f})  PSNR {r.psnr_db:.2f} dB", flush=True)
                out.unlink()
    finally:
        raw.unlink(missing_ok=True)
    return results


# -- choosing -----------------------------------------------------------------------------------------------------------
def choose(results: list[Result], rule: Rule) -> tuple[Result | None, str]:
    """Apply a tier's rule to its measurements: (chosen result or None, why)."""
    passing = [r for r in results if r.ssim >= rule.min_ssim]
    if not passing:
        best = max(results, key=lambda r: r.ssim)
        return None, f"no setting reached SSIM {rule.min_ssim} (best {best.ssim:.4f}: {best.preset} crf {best.crf}); try lower CRFs"
    fastest = min(r.cpu_s for r in passing)
    smallest = min(r.size_bytes for r in passing)
    allowed = [r for r in passing if (rule.max_size_x is None or r.size_bytes <= rule.max_size_x * smallest)
               and (rule.max_time_x is None or r.cpu_s <= rule.max_time_x * fastest)]
    if rule.objective == "time":
        quickest = min(r.cpu_s for r in allowed)
        near = [r for r in allowed if r.cpu_s <= quickest * 1.05]
        pick = min(near, key=lambda r: (r.size_bytes, r.cpu_s))
    elif rule.objective == "time*size":
        pick = min(allowed, key=lambda r: (r.cpu_s / fastest) * (r.size_bytes / smallest))
    elif rule.objective == "size":
        pick = min(allowed, key=lambda r: (r.size_bytes, r.cpu_s))
    else:  # pragma: no cover - RULES are data in this file
        raise ValueError(rule.objective)
    why = (f"{len(passing)}/{len(results)} settings reach SSIM {rule.min_ssim}; {pick.preset} crf {pick.crf} takes "
           f"{pick.cpu_s:.2f} s CPU ({pick.cpu_s / fastest:.2f}x the fastest such), {pick.kbps:.0f} kb/s "
           f"({pick.size_bytes / smallest:.2f}x the smallest such), SSIM {pick.ssim:.4f}, PSNR {pick.psnr_db:.2f} dB")
    return pick, why


def print_table(tier: str, results: list[Result], pick: Result | None) -> None:
    head = ("preset", "crf", "wall_s", "cpu_s", "fps_enc", "kb/s", "SSIM", "SSIM_min", "PSNR_dB", "")
    rows = [head]
    for r in results:
        rows.append((r.preset, str(r.crf), f"{r.encode_s:.2f}", f"{r.cpu_s:.2f}", f"{r.frames / r.encode_s:.1f}", f"{r.kbps:.0f}",
                     f"{r.ssim:.4f}", f"{r.ssim_min:.4f}", f"{r.psnr_db:.2f}", "<- chosen" if r is pick else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiers", default=",".join(TIERS), help="comma-separated tiers (default: all four)")
    parser.add_argument("--presets", default=",".join(X264_PRESETS), help="x264 presets to try (default: ultrafast..medium)")
    parser.add_argument("--crfs", help="CRFs to try at every tier (default: a per-tier grid, see CRFS)")
    parser.add_argument("--seconds", type=float, help="clip length (default: 4 s, 2 s at maximum)")
    parser.add_argument("--repeat", type=int, default=3, help="encodes per setting; the fastest time is used (default 3)")
    parser.add_argument("--quick", action="store_true", help="draft rules on a 1 s 320x180 clip, 2 presets x 2 CRFs")
    parser.add_argument("--json", type=Path, help="write every measurement and the choices to this JSON file")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    bad = [t for t in tiers if t not in TIERS] + [p for p in presets if p not in X264_PRESETS + ("slow", "slower", "veryslow")]
    if bad or args.repeat < 1:
        parser.error(f"unknown tier(s) or preset(s): {bad}; tiers: {TIERS}; presets: {X264_PRESETS}")
    size_override = None
    if args.quick:
        tiers, presets, size_override, args.repeat = ["draft"], ["ultrafast", "veryfast"], (320, 180), 1

    work = Path(tempfile.mkdtemp(prefix="studio-encoders-"))
    report = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()}, "repeat": args.repeat, "tiers": {}}
    print(f"x264 settings benchmark on {os.cpu_count()} CPU cores; load average before: "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    try:
        for tier in tiers:
            crfs = [int(c) for c in args.crfs.split(",")] if args.crfs else list(CRFS[tier])
            if args.quick:
                crfs = [23, 30]
            seconds = args.seconds or (1.0 if args.quick else CLIP_S[tier])
            results = measure_tier(tier, presets, crfs, seconds, work, args.repeat, size_override)
            pick, why = choose(results, RULES[tier])
            current = load_preset(tier).encoder["libx264"]
            print()
            print(f"== {tier}: {results[0].frames} frames; rule: {RULES[tier].describe}")
            print_table(tier, results, pick)
            print(f"Recommendation for {tier}: " + (f"preset = \"{pick.preset}\", crf = {pick.crf}" if pick else "none")
                  + f"  ({why}); studio/presets/{tier}.toml has preset = \"{current['preset']}\", crf = {current['crf']}")
            print()
            report["tiers"][tier] = {"rule": asdict(RULES[tier]), "results": [r.to_dict() for r in results],
                                     "chosen": pick.to_dict() if pick else None, "why": why, "current": current}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
