"""The benchmarks run end to end: bench/compose.py --quick and bench/encoders.py --quick, plus encoders.py's rules."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT))

from bench.encoders import RULES, Result, choose  # noqa: E402


def run_script(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)


def test_compose_bench_quick_renders_all_three_ways_and_reports(tmp_path):
    report = tmp_path / "compose.json"
    proc = run_script("bench/compose.py", "--quick", "--json", str(report))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # The table: a header and one row per preset and approach, then the ratios against the targets.
    assert "approach" in out and "wall_s" in out and "peak_MB" in out
    assert "studio/bound" in out and "moviepy/studio" in out and "Ratios and targets" in out
    assert "STAND-IN" not in out  # the real compositor, never the harness's stand-in

    data = json.loads(report.read_text())
    rows = data["rows"]
    assert {(r["preset"], r["approach"]) for r in rows} == {
        (p, a) for p in ("draft", "standard") for a in ("studio", "moviepy", "bound")}
    for r in rows:
        assert r["error"] == "", r
        assert r["wall_s"] > 0 and r["cpu_s"] > 0
        assert r["peak_rss_mb"] > 5  # a process tree was really sampled
        facts = r["output"]
        # every output was probed: the right size, frame rate and length (2 scenes of 1 s, one crossfade)
        assert (facts["width"], facts["height"]) == (r["width"], r["height"])
        assert abs(facts["fps"] - r["fps"]) < 0.01
        assert abs(facts["duration_s"] - r["video_s"]) <= 1 / r["fps"] + 0.1
        assert 1.4 <= r["video_s"] <= 1.7
        assert facts["size_bytes"] > 1000
        assert (facts["audio_codec"] == "aac") == (r["approach"] != "bound")  # the bound is video only
    for entry in data["summary"]:
        assert entry["studio_over_bound"] > 0 and entry["moviepy_over_studio"] > 0
        assert isinstance(entry["bound_met"], bool)


def test_scene_edit_bench_quick_re_renders_only_what_each_edit_touches(tmp_path):
    report = tmp_path / "scene_edit.json"
    proc = run_script("bench/scene_edit.py", "--quick", "--narrator", "espeak", "--json", str(report), timeout_s=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| preset | case |" in proc.stdout
    rows = {(r["case"], r["compose"]): r for r in json.loads(report.read_text())["rows"]}
    assert set(rows) == {("cold", "segments"), ("cold", "one pass"), ("edit narration", "segments"),
                         ("edit picture", "segments"), ("edit transition", "segments"),
                         ("edit caption style", "segments"), ("edit narration", "one pass")}
    # 4 scenes: 4 scenes' own segments and 3 transitions; the bench itself checked which ones were rendered again and
    # that every other frame is the previous render's
    assert rows[("cold", "segments")]["segments_rendered"] == 7
    assert rows[("edit transition", "segments")]["segments_rendered"] == 1
    assert rows[("edit picture", "segments")]["segments_rendered"] == 3
    assert rows[("edit caption style", "segments")]["segments_reused"] == 0
    picture = rows[("edit picture", "segments")]
    assert picture["frames_identical"] + picture["frames_rendered"] == picture["frames"]


def test_encoders_bench_quick_measures_quality_and_recommends(tmp_path):
    report = tmp_path / "encoders.json"
    proc = run_script("bench/encoders.py", "--quick", "--json", str(report))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Recommendation for draft" in proc.stdout
    tier = json.loads(report.read_text())["tiers"]["draft"]
    results = tier["results"]
    assert len(results) == 4
    frames = {r["frames"] for r in results}
    assert len(frames) == 1 and 24 <= frames.pop() <= 48  # every setting encoded the same short (1-2 s at 24 fps) clip
    for r in results:
        assert 0.5 < r["ssim"] <= 1.0 and 20 < r["psnr_db"] < 99 and r["size_bytes"] > 0
    by = {(r["preset"], r["crf"]): r for r in results}
    # A higher CRF means a smaller file and lower quality at the same preset.
    for preset in ("ultrafast", "veryfast"):
        assert by[(preset, 30)]["size_bytes"] < by[(preset, 23)]["size_bytes"]
        assert by[(preset, 30)]["ssim"] < by[(preset, 23)]["ssim"]
        assert by[(preset, 30)]["psnr_db"] < by[(preset, 23)]["psnr_db"]


def _result(preset: str, crf: int, cpu_s: float, size_kb: int, ssim: float) -> Result:
    return Result("t", preset, crf, cpu_s / 2, cpu_s, size_kb * 1000, size_kb * 8 / 4, ssim, ssim - 0.01, 40.0, 96)


def test_rules_pick_by_measurement():
    results = [
        _result("ultrafast", 28, 1.0, 2000, 0.960),  # fastest, but 5x the smallest file
        _result("superfast", 30, 1.2, 450, 0.955),
        _result("veryfast", 30, 1.5, 400, 0.952),
        _result("veryfast", 34, 1.3, 250, 0.940),  # below every floor
        _result("medium", 24, 5.0, 420, 0.982),
        _result("faster", 22, 2.0, 700, 0.981),
    ]
    draft, _ = choose(results, RULES["draft"])
    assert (draft.preset, draft.crf) == ("superfast", 30)  # fastest passing with a file <= 3x the smallest
    standard, _ = choose(results, RULES["standard"])
    assert standard.ssim >= RULES["standard"].min_ssim
    assert (standard.preset, standard.crf) == ("faster", 22)  # 2.0 s x 700 kB beats 5.0 s x 420 kB
    premium, _ = choose(results, RULES["premium"])
    assert (premium.preset, premium.crf) == ("medium", 24)  # the smaller file, at 2.5x (<= 3x) the fastest's time
    slower = [r if r.preset != "medium" else _result("medium", 24, 7.0, 420, 0.982) for r in results]
    premium, _ = choose(slower, RULES["premium"])
    assert (premium.preset, premium.crf) == ("faster", 22)  # medium now takes 3.5x: not worth its 40 % saving
    none, why = choose([_result("ultrafast", 40, 1.0, 100, 0.90)], RULES["maximum"])
    assert none is None and "no setting reached" in why


def test_models_bench_tiny_runs_every_case_through_the_providers(tmp_path):
    report = tmp_path / "models.json"
    proc = run_script("bench/models.py", "--tiny", "--repeat", "1", "--json", str(report), timeout_s=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["machine"]["tiny"] is True and data["machine"]["device"] == "cpu"
    rows = {r["case"]: r for r in data["rows"]}
    assert set(rows) == {"tiny-sd-64", "tiny-sd-128", "tiny-bark", "tiny-animatediff"}
    for row in rows.values():
        assert row["seconds"] > 0 and len(row["times"]) == 1
    assert rows["tiny-sd-64"]["output"]["size"] == [64, 64] and rows["tiny-sd-128"]["output"]["size"] == [128, 128]
    bark = rows["tiny-bark"]
    assert bark["output"]["audio_s"] > 1 and bark["value"] == bark["output"]["audio_s"] / bark["seconds"]
    clip = rows["tiny-animatediff"]["output"]
    assert clip["size"] == [64, 64] and abs(clip["duration_s"] - 4.0) < 0.2  # looped to the scene's 4 s
    assert "tiny-bark" in proc.stdout and "audio s per s" in proc.stdout


def test_models_bench_builds_the_real_architectures():
    proc = run_script("bench/models.py", "--architectures", timeout_s=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SDXL UNet" in proc.stdout and "2567.46 M  (published 2567.46 M: same)" in proc.stdout
    assert "DIFFERENT" not in proc.stdout and "AnimateDiff motion adapter" in proc.stdout


def test_caption_sync_bench_quick_compares_the_estimate_and_the_aligner_with_espeak_ngs_own_onsets(tmp_path):
    import importlib.util
    import shutil

    if shutil.which("espeak-ng") is None or importlib.util.find_spec("pocketsphinx") is None:
        import pytest

        pytest.skip("needs espeak-ng and pocketsphinx (scripts/setup.sh installs both)")
    report = tmp_path / "caption_sync.json"
    proc = run_script("bench/caption_sync.py", "--quick", "--json", str(report))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| voice | source | onsets of |" in proc.stdout
    data = json.loads(report.read_text())
    assert data["aligner"].startswith("pocketsphinx-") and data["scenes"] == 2
    rows = {(r["voice"], r["source"], r["what"]): r for r in data["rows"]}
    assert set(rows) == {("espeak", s, w) for s in ("estimate", "aligned") for w in ("words", "captions")}
    for row in rows.values():
        assert row["n"] > 0 and row["unaligned_scenes"] == 0 and row["audio_s"] > 5
        assert 0 <= row["median_ms"] <= row["p95_ms"] <= row["max_ms"]
    # every word but those espeak-ng reports no event for is compared; the aligner is closer to espeak-ng's own onsets
    assert rows[("espeak", "aligned", "words")]["n"] >= 40
    assert rows[("espeak", "aligned", "words")]["median_ms"] < rows[("espeak", "estimate", "words")]["median_ms"]
    assert rows[("espeak", "aligned", "words")]["p95_ms"] < rows[("espeak", "estimate", "words")]["p95_ms"]
