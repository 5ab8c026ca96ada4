"""The GPU compositor (`studio.compose.gpu`): its tensor code on the CPU against the CPU renderer, frame by frame;
where it runs (`resolve_device`); the fallback to the CPU when the GPU fails mid-render. CUDA tests skip without a GPU."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from studio import Project, StudioError, load_preset
from studio.compose import build_timeline, compose
from studio.compose import gpu
from studio.compose.captions import CaptionOverlays
from studio.compose.render import FrameMaker, Planes
from studio.progress import CancelToken
from tests.conftest import video_facts

torch = pytest.importorskip("torch")
CUDA, CUDA_WHY = gpu.cuda_ready()
needs_cuda = pytest.mark.skipif(not CUDA, reason=f"needs a CUDA GPU: {CUDA_WHY}")
MIN_PSNR_DB = 40.0


@pytest.fixture
def scene_of(make_image, make_tone):
    from studio import Scene, WordTiming

    def make(sid: str, *, speech_s: float = 0.8, words=("Hello", "world"), colour=(40, 90, 160), **fields) -> Scene:
        audio = make_tone(f"{sid}.wav", duration_s=speech_s)
        step = speech_s / len(words)
        timings = tuple(WordTiming(w, i * step, (i + 0.9) * step) for i, w in enumerate(words))
        fields.setdefault("visual", make_image(f"{sid}.png", (640, 360), colour))
        return Scene(id=sid, narration=" ".join(words), audio=audio, audio_duration_s=speech_s, words=timings,
                     **fields)

    return make


@pytest.fixture
def busy_project(scene_of, make_clip, tmp_path):
    """Stills with several moves, a clip, every transition, captions and a watermark."""
    from PIL import Image

    logo = np.zeros((60, 120, 4), np.uint8)
    logo[10:50, 10:110] = (255, 0, 255, 200)
    logo[20:40, 20:100, 3] = 90  # partly transparent inside: a real alpha blend
    mark = tmp_path / "logo.png"
    Image.fromarray(logo).save(mark)
    clip = make_clip("clip.mp4", (320, 240), 1.0)
    scenes = (
        scene_of("a", colour=(200, 60, 40), words=("First", "scene", "moves")),
        scene_of("b", colour=(40, 160, 90), transition="crossfade", words=("A", "crossfade")),
        scene_of("c", visual=clip, transition="fade", words=("A", "clip", "fades", "in")),
        scene_of("d", colour=(90, 60, 200), transition="wipe", words=("Wiped",)),
        scene_of("e", colour=(220, 200, 40), transition="slide", words=("Slid", "in")),
        scene_of("f", colour=(30, 30, 30), transition="cut", words=("Cut",)),
    )
    return Project(title="busy", scenes=scenes, captions=True, watermark=mark)


def frames_of(maker_cls, timeline, work: Path, **kwargs) -> list[np.ndarray]:
    work.mkdir()
    captions = CaptionOverlays(timeline.caption_layout, timeline.captions, timeline.fps, work) if timeline.captions else None
    maker = maker_cls(timeline, captions, CancelToken(), **kwargs)
    out = maker.host_planes()
    frames = []
    try:
        for k in range(timeline.frame_count):
            maker.make(k, out)
            if out.ready is not None:
                out.ready()
            frames.append(out.buf.copy())
    finally:
        maker.close()
    return frames


def psnr_per_frame(a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
    assert len(a) == len(b)
    return [gpu.frames_match_psnr(x, y) for x, y in zip(a, b)]


def test_tensor_renderer_matches_cpu_renderer_frame_by_frame(busy_project, tmp_path):
    timeline = build_timeline(busy_project, load_preset("draft"), encoder="libx264", device="cpu")
    kinds = {s.transition.kind for s in timeline.segments}
    assert {"crossfade", "fade", "wipe", "slide", "cut"} <= kinds and timeline.captions and timeline.watermark
    cpu_frames = frames_of(FrameMaker, timeline, tmp_path / "cpu")
    tensor_frames = frames_of(gpu.TensorFrameMaker, timeline, tmp_path / "tensor", device="cpu")
    assert len(cpu_frames) == len(tensor_frames) == timeline.frame_count
    scores = psnr_per_frame(cpu_frames, tensor_frames)
    worst = min(scores)
    print(f"tensor vs numpy: {len(scores)} frames, PSNR min {worst:.1f} dB, median {sorted(scores)[len(scores) // 2]:.1f} dB")
    assert worst >= MIN_PSNR_DB, f"frame {scores.index(worst)}: {worst:.1f} dB"
    # Not a vacuous match: the pictures move (Ken Burns), change at transitions, and carry captions and the logo.
    w, h = timeline.size
    luma = [f[:w * h].reshape(h, w).astype(int) for f in tensor_frames]
    assert np.abs(luma[0] - luma[10]).mean() > 0.2  # the first still moves
    assert np.abs(luma[0] - luma[-1]).mean() > 10  # another scene at the end
    # Transition timing: the frame where scene b starts showing is the same in both (scores would catch a shift,
    # and so does this, directly).
    diffs_cpu = [np.abs(cpu_frames[k + 1][:w * h].astype(int) - cpu_frames[k][:w * h]).mean() for k in range(len(luma) - 1)]
    diffs_gpu = [np.abs(tensor_frames[k + 1][:w * h].astype(int) - tensor_frames[k][:w * h]).mean() for k in range(len(luma) - 1)]
    assert int(np.argmax(diffs_cpu)) == int(np.argmax(diffs_gpu))


def test_compose_on_tensor_cpu_makes_a_checked_mp4(busy_project, tmp_path):
    result = compose(busy_project, "draft", tmp_path / "t.mp4", encoder="libx264", device="tensor-cpu")
    facts = video_facts(result.path)
    assert (facts["width"], facts["height"]) == result.timeline.size
    assert abs(facts["duration_s"] - result.timeline.duration_s) <= 1 / result.timeline.fps + 1e-3
    assert facts["has_audio"]
    assert result.renderer.startswith("tensor compose on the CPU: libx264")
    assert result.notes == ()


def test_a_gpu_failure_mid_render_falls_back_to_the_cpu(busy_project, tmp_path, monkeypatch):
    made = []
    original = gpu.TensorFrameMaker.make

    def failing(self, k, out):
        if k == 7:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        made.append(k)
        original(self, k, out)

    monkeypatch.setattr(gpu.TensorFrameMaker, "make", failing)
    out = tmp_path / "fallback.mp4"
    result = compose(busy_project, "draft", out, encoder="libx264", device="tensor-cpu")
    assert made == list(range(7))  # the tensor renderer really ran, then failed
    facts = video_facts(out)
    assert abs(facts["duration_s"] - result.timeline.duration_s) <= 1 / result.timeline.fps + 1e-3
    assert facts["has_audio"] and (facts["width"], facts["height"]) == result.timeline.size
    assert result.timeline.compose_device == "cpu" and "after a GPU failure" in result.renderer
    assert len(result.notes) == 1 and "OutOfMemoryError" in result.notes[0] and "on the CPU with libx264" in result.notes[0]
    assert not list(tmp_path.glob(".fallback*"))  # no work folder or part file left


def test_a_failing_hardware_encoder_falls_back_to_libx264(scene_of, tmp_path, monkeypatch):
    """A hardware encoder that fails mid-render (an NVENC session limit): again on the CPU with libx264."""
    from studio.compose import render

    preset = load_preset("draft")
    calls = []
    original = render.encode_video

    def encode(timeline, work, **kwargs):
        calls.append(timeline.encoder)
        if timeline.encoder == "h264_nvenc":
            raise StudioError("encoding the video failed: OpenEncodeSessionEx failed: incompatible client key (21)")
        return original(timeline, work, **kwargs)

    monkeypatch.setattr(render, "encode_video", encode)
    monkeypatch.setattr(render, "check_encoder", lambda preset, encoder: encoder)  # "it probed fine"
    project = Project(title="t", scenes=(scene_of("a"),), captions=True)
    result = compose(project, preset, tmp_path / "hw.mp4", encoder="h264_nvenc", device="cpu")
    assert calls == ["h264_nvenc", "libx264"]
    assert result.encoder == "libx264" and video_facts(result.path)["video_codec"] == "h264"
    assert "OpenEncodeSessionEx" in result.notes[0]


def test_an_input_error_is_not_retried_as_a_gpu_failure(scene_of, tmp_path, monkeypatch):
    """The CPU renderer with libx264 has no GPU to blame: its errors are raised as they are, once."""
    from studio.compose import render

    calls = []

    def encode(timeline, work, **kwargs):
        calls.append(timeline.compose_device)
        raise StudioError("decoding the clip of scene 1 failed")

    monkeypatch.setattr(render, "encode_video", encode)
    with pytest.raises(StudioError, match="decoding the clip"):
        compose(Project(title="t", scenes=(scene_of("a"),)), "draft", tmp_path / "x.mp4", encoder="libx264",
                device="cpu")
    assert calls == ["cpu"]


def test_segments_fall_back_per_segment_keeping_the_encoder(busy_project, tmp_path, monkeypatch):
    from studio.compose.segments import compose_segments

    tried = []

    def failing(self, k, out):
        tried.append(k)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu.TensorFrameMaker, "make", failing)
    timeline = build_timeline(busy_project, load_preset("draft"), encoder="libx264", device="tensor-cpu")
    render = compose_segments(timeline, tmp_path / "assets", tmp_path / "seg.mp4")
    facts = video_facts(render.result.path)
    assert abs(facts["duration_s"] - timeline.duration_s) <= 1 / timeline.fps + 1e-3 and facts["has_audio"]
    assert len(render.parts) > 3 and len(tried) == len(render.parts)  # every segment tried the tensor renderer


# -- where composition runs -------------------------------------------------------------------------------------------
def test_auto_stays_on_the_cpu_here_and_says_why(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_ready", lambda: (False, "torch is a CPU build (2.13.0+cpu)"))
    preset = load_preset("premium")
    device, label, why = gpu.resolve_device(preset, "libx264")
    assert device == "cpu" and label == "CPU compose: libx264 veryfast" and "CPU build" in why
    with pytest.raises(StudioError, match="compose device `cuda` cannot run here: torch is a CPU build"):
        gpu.resolve_device(preset, "libx264", "cuda")
    assert gpu.resolve_device(preset, "libx264", "cpu")[0] == "cpu"
    assert gpu.resolve_device(preset, "libx264", "tensor-cpu")[0] == "tensor-cpu"
    with pytest.raises(StudioError, match="must be one of"):
        gpu.resolve_device(preset, "libx264", "gpu")


def test_auto_takes_the_gpu_only_with_cuda_and_nvenc(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_ready", lambda: (True, "NVIDIA H200"))
    maximum = load_preset("maximum")
    opts = maximum.encoder["hevc_nvenc"]
    assert gpu.resolve_device(maximum, "hevc_nvenc") == ("cuda", f"GPU compose: NVIDIA H200, hevc_nvenc {opts['preset']}", None)
    device, _, why = gpu.resolve_device(maximum, "libx264")  # CUDA but no working NVENC
    assert device == "cpu" and "NVIDIA H200 is here but no NVENC encoder of the preset works" in why
    assert gpu.resolve_device(maximum, "libx264", "cuda")[0] == "cuda"  # asked for: the GPU feeds libx264


def test_the_timeline_carries_the_choice(busy_project):
    timeline = build_timeline(busy_project, load_preset("draft"), encoder="libx264")
    assert timeline.compose_device in ("cpu", "cuda")
    assert timeline.compose_label.startswith(("CPU compose: libx264", "GPU compose:"))


def test_preset_refuses_an_unknown_compose_device(tmp_path):
    source = (Path(load_preset("draft").source)).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(source.replace('device = "auto"', 'device = "gpu"'))
    with pytest.raises(StudioError, match=r"`compose.device` must be one of auto, cuda, cpu, tensor-cpu, got 'gpu'"):
        load_preset(bad)


# -- on a CUDA machine ------------------------------------------------------------------------------------------------
@needs_cuda
def test_cuda_renderer_matches_cpu_renderer(busy_project, tmp_path):
    timeline = build_timeline(busy_project, load_preset("draft"), encoder="libx264", device="cpu")
    cpu_frames = frames_of(FrameMaker, timeline, tmp_path / "cpu")
    cuda_frames = frames_of(gpu.TensorFrameMaker, timeline, tmp_path / "cuda", device="cuda")
    assert min(psnr_per_frame(cpu_frames, cuda_frames)) >= MIN_PSNR_DB


@needs_cuda
def test_cuda_compose_with_nvenc(busy_project, tmp_path):
    from studio.compose.encoders import probe_encoder

    preset = load_preset("premium")
    ok, why = probe_encoder("h264_nvenc", preset.encoder_args("h264_nvenc"))
    if not ok:
        pytest.skip(f"NVENC does not encode here: {why}")
    result = compose(busy_project, preset, tmp_path / "gpu.mp4", device="auto")
    assert result.timeline.compose_device == "cuda" and result.renderer.startswith("GPU compose:")
    facts = video_facts(result.path)
    assert (facts["width"], facts["height"]) == (1920, 1080) and facts["has_audio"]


# -- through the pipeline -----------------------------------------------------------------------------------------------
SCRIPT = "The tide comes in twice a day. The moon pulls the sea toward it."


def test_the_run_summary_says_where_it_composed(tmp_path):
    from studio.pipeline import make_video

    summary = make_video(SCRIPT, preset="draft", output=tmp_path / "a.mp4", project_dir=tmp_path / "p",
                         device="tensor-cpu")
    assert summary.segmented and summary.compose.startswith("tensor compose on the CPU: libx264")
    assert summary.compose in summary.describe()
    assert video_facts(summary.output)["has_audio"]


def test_a_hardware_encoder_failing_on_segments_renders_them_all_again_with_libx264(tmp_path, monkeypatch):
    """Segments are joined by stream copy, so a failing hardware encoder is replaced for every segment."""
    from studio.compose import encoders, render
    from studio.pipeline import make_video

    real_probe = encoders.probe_encoder
    monkeypatch.setattr(encoders, "probe_encoder",
                        lambda enc, args=None: (True, "") if enc == "h264_nvenc" else real_probe(enc, args))
    original = render.encode_video
    used = []

    def encode(timeline, work, **kwargs):
        used.append(timeline.encoder)
        if timeline.encoder == "h264_nvenc":
            raise StudioError("encoding the video failed: OpenEncodeSessionEx failed: out of memory (10)")
        return original(timeline, work, **kwargs)

    monkeypatch.setattr(render, "encode_video", encode)
    summary = make_video(SCRIPT, preset="draft", output=tmp_path / "b.mp4", project_dir=tmp_path / "p",
                         encoder="h264_nvenc", device="cpu")
    first_x264 = used.index("libx264")
    assert set(used[:first_x264]) == {"h264_nvenc"} and set(used[first_x264:]) == {"libx264"} and len(used) > 2
    assert summary.encoder == "libx264" and video_facts(summary.output)["video_codec"] == "h264"
    assert any("h264_nvenc failed" in n and "libx264" in n for n in summary.project.notes)
