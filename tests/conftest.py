"""Shared test set-up: offline model hubs, ffprobe checks, small generated media."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Measured step times (studio.history) of the test runs go to a file of their own, not the user's cache.
os.environ.setdefault("STUDIO_HISTORY_FILE", os.path.join(tempfile.mkdtemp(prefix="studio-history-"), "timings.json"))

ROOT = Path(__file__).resolve().parent.parent


def ffprobe(path: Path) -> dict:
    """ffprobe's JSON description of a media file (streams and format); fails the test if ffprobe rejects it."""
    exe = shutil.which("ffprobe")
    assert exe, "ffprobe is missing: the test set-up installs Debian's ffmpeg package for it"
    out = subprocess.run([exe, "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"ffprobe rejected {path}: {out.stderr}"
    return json.loads(out.stdout)


def video_facts(path: Path) -> dict:
    """width, height, fps, duration_s, frames, has_audio, codecs of an MP4, as ffprobe reports them."""
    info = ffprobe(path)
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert video, f"{path} has no video stream"
    v = video[0]
    num, den = (int(x) for x in v["avg_frame_rate"].split("/"))
    return {
        "width": int(v["width"]),
        "height": int(v["height"]),
        "fps": num / den if den else 0.0,
        "duration_s": float(info["format"]["duration"]),
        "video_duration_s": float(v.get("duration", info["format"]["duration"])),
        "frames": int(v.get("nb_frames", 0)),
        "video_codec": v["codec_name"],
        "pix_fmt": v.get("pix_fmt"),
        "has_audio": bool(audio),
        "audio_codec": audio[0]["codec_name"] if audio else None,
    }


@pytest.fixture
def make_image(tmp_path):
    """Write a PNG (gradient + shapes) of a given size; returns its path."""
    from PIL import Image, ImageDraw

    def make(name: str = "image.png", size: tuple[int, int] = (640, 360), colour: tuple[int, int, int] = (40, 90, 160)) -> Path:
        w, h = size
        x = np.linspace(0, 1, w)[None, :, None]
        y = np.linspace(0, 1, h)[:, None, None]
        base = np.array(colour, dtype=np.float32)[None, None, :]
        pixels = np.clip(base * (0.5 + 0.5 * x) + 80 * y, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        ImageDraw.Draw(image).ellipse([w * 0.3, h * 0.3, w * 0.6, h * 0.7], fill=(240, 200, 60))
        path = tmp_path / name
        image.save(path)
        return path

    return make


@pytest.fixture
def make_tone(tmp_path):
    """Write a WAV of a tone with a given length; returns its path."""
    from studio.media import write_wav

    def make(name: str = "tone.wav", duration_s: float = 1.0, freq_hz: float = 220.0, sample_rate: int = 22050) -> Path:
        t = np.arange(int(duration_s * sample_rate)) / sample_rate
        path = tmp_path / name
        write_wav(path, 0.3 * np.sin(2 * np.pi * freq_hz * t), sample_rate)
        return path

    return make


@pytest.fixture
def make_clip(tmp_path):
    """Write a short H.264 MP4 test clip (ffmpeg's testsrc2) of a given size and length; returns its path."""
    from studio.media import run_ffmpeg

    def make(name: str = "clip.mp4", size: tuple[int, int] = (320, 240), duration_s: float = 1.0, fps: int = 25) -> Path:
        path = tmp_path / name
        run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}:duration={duration_s}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path])
        return path

    return make


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight models (`studio.testing.TinyModels`), each built on first use, once per test session, and
    the options that build each model provider on them (``tiny_models.options("bark")``)."""
    from studio import testing

    testing.use_one_thread()
    return testing.TinyModels(tmp_path_factory.mktemp("tiny-models"))


def caption_ink(layout, events, work: Path) -> list[tuple[int, int, int, int]]:
    """Each caption event drawn by libass through the overlay code a render blends in: the box of its ink (outline,
    shadow and box included) in frame pixels, (x0, x1, y0, y1)."""
    from studio.compose.captions import CaptionOverlays

    work.mkdir(parents=True, exist_ok=True)
    overlays = CaptionOverlays(layout, events, 25, work)
    overlays.wait_drawn()
    boxes = []
    try:
        for i in range(len(events)):
            x, y, (_, keep), _, _ = overlays._load(i)
            ys, xs = np.nonzero(keep < 255)
            boxes.append((int(x + xs.min()), int(x + xs.max()), int(y + ys.min()), int(y + ys.max())))
    finally:
        overlays.close()
    return boxes
