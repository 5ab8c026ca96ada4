"""TEMPORARY stand-in for `studio.compose.compose`, used only to exercise bench/compose.py's harness until the real
compositor lands. It is not Studio's compositor and is never reported as Studio. Delete once studio.compose exists."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import render_frames, scene_starts
from studio.media import Ffmpeg, INPUT_GUARD, read_audio, write_wav


@dataclass(frozen=True)
class RenderResult:
    path: Path
    duration_s: float
    size_bytes: int
    width: int
    height: int
    fps: int
    encoder: str
    timeline: object = None


def compose(project, preset, output, *, encoder=None, only=None, on_progress=None, cancel=None) -> RenderResult:
    w, h = preset.size(project.aspect)
    starts, _, total_s = scene_starts(project, preset)
    rate = preset.sample_rate
    mix = np.zeros((int(total_s * rate) + rate, 2), np.float32)
    for scene, start in zip(project.scenes, starts):
        voice = read_audio(scene.audio, rate, channels=2)
        i = int((start + preset.lead_s) * rate)
        mix[i:i + len(voice)] += voice[: len(mix) - i]
    if project.music is not None:
        mix += project.music_volume * read_audio(project.music, rate, channels=2, duration_s=len(mix) / rate, loop=True)[: len(mix)]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "mix.wav"
        write_wav(wav, mix, rate)
        args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(preset.fps), "-i", "pipe:0",
                *INPUT_GUARD, "-i", wav, *preset.encoder_args("libx264"), "-c:a", "aac",
                "-b:a", f"{preset.audio_bitrate_kbps}k", "-t", f"{total_s:.3f}", output]
        with Ffmpeg(args, stdin=True) as ff:
            for frame in render_frames(project, preset):
                ff.stdin.write(frame.tobytes())
    return RenderResult(Path(output), total_s, Path(output).stat().st_size, w, h, preset.fps, "libx264")
