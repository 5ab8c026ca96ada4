"""bench/gpu.py runs anywhere: on a CPU machine its GPU rows say "no GPU" (with the reason) and its CPU rows render and
are probed; its catalogue architectures have the published parameter counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT))

from bench.gpu import cuda_state, probe  # noqa: E402


def run_script(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/gpu.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s)


def test_quick_run_marks_gpu_rows_and_probes_cpu_renders(tmp_path):
    ready, reason = cuda_state()
    if ready:
        pytest.skip(f"CUDA is here ({reason}): this test checks the CPU machine's report")
    report = tmp_path / "gpu.json"
    proc = run_script("--quick", "--only", "models,compose,film", "--tiers", "draft,standard", "--json", str(report))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ratios and targets" in proc.stdout and "no GPU" in proc.stdout
    data = json.loads(report.read_text())
    assert data["machine"]["cuda"] is False and data["machine"]["no_gpu_reason"]
    rows = data["rows"]
    compose = {(r["tier"], r["approach"]): r for r in rows if r["section"] == "compose"}
    assert set(compose) == {(t, a) for t in ("draft", "standard") for a in ("gpu", "cpu", "bound")}
    for (tier, approach), r in compose.items():
        if approach in ("gpu", "bound"):
            # No GPU here: the row says so, with cuda_ready()'s reason, and holds no figure.
            assert r["status"] == "no GPU" and r["reason"] == reason and "wall_s" not in r, r
            continue
        assert r["status"] == "ok", r
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["encoder"] == "libx264"
        facts = r["output"]  # probed: the tier's size and frame rate, the case's length, h264 with AAC
        width, height = (int(v) for v in r["size"].split("@")[0].split("x"))
        assert (facts["width"], facts["height"]) == (width, height)
        assert facts["video_codec"] == "h264" and facts["audio_codec"] == "aac"
        assert abs(facts["duration_s"] - r["video_s"]) <= 0.2 and 1.4 <= r["video_s"] <= 1.7
        assert facts["size_bytes"] > 1000
    models = {r["case"]: r for r in rows if r["section"] == "models"}
    assert models["sdxl-turbo-512"]["status"] == "no GPU"
    assert models["llm qwen3-4b-instruct-2507"]["status"] == "no GPU"  # a tier default, buildable from its config
    assert models["kokoro-82m"]["status"] == "not built" and "ONNX" in models["kokoro-82m"]["reason"]
    film = [r for r in rows if r["section"] == "film"]
    assert [r["status"] for r in film] == ["no GPU"]
    # No GPU row means no ratio: the summary says nothing was compared rather than inventing a figure.
    assert all(set(s) == {"tier"} for s in data["summary"])


def test_probe_rejects_the_wrong_codec_and_size(tmp_path):
    from studio.media import Ffmpeg

    video = tmp_path / "v.mp4"
    Ffmpeg(["-f", "lavfi", "-i", "color=c=gray:s=320x180:r=24:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            video], what="a test clip").wait()
    ok, problem, facts = probe(video, expected_s=1.0, size=(320, 180), fps=24, codec="h264", need_audio=False)
    assert ok and problem == "" and facts["video_codec"] == "h264"
    ok, problem, _ = probe(video, expected_s=1.0, size=(320, 180), fps=24, codec="hevc", need_audio=False)
    assert not ok and "expected hevc" in problem
    ok, problem, _ = probe(video, expected_s=1.0, size=(640, 360), fps=24, codec="h264", need_audio=True)
    assert not ok and "expected 640x360" in problem and "no audio" in problem


def test_catalogue_architectures_have_the_published_sizes():
    proc = run_script("--architectures", timeout_s=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b-instruct-2507", "qwen3-8b", "SD 2.1 UNet"):
        line = next(line for line in proc.stdout.splitlines() if name in line)
        assert "same as published" in line, line
