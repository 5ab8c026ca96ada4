"""The soundtrack meets the platforms: measured on the finished MP4 (ffmpeg's ebur128 on the encoded AAC), every
tier's audio is at its loudness target within 0.5 LU with the true peak at most -1 dBTP, in stereo, and the music
does not swell in the short gaps between narrations. Renders are a few seconds long at a tiny frame size (each tier's
own fps, audio settings and x264 settings), so even Maximum is quick."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from studio import Project, Scene, load_preset
from studio.compose import compose
from studio.media import ffmpeg_exe, read_audio, write_wav
from tests.conftest import ffprobe

TIERS = ("draft", "standard", "premium", "maximum")
RATE = 48000
VOICE_HZ, MUSIC_HZ = 220.0, 880.0


def tiny(tier: str):
    """The tier with tiny frames (every aspect) and x264 only: its audio (bitrate, sample rate, loudness) and fps
    unchanged."""
    preset = load_preset(tier)
    return replace(preset, resolution={"16:9": (160, 90), "9:16": (90, 160), "1:1": (96, 96)}, encoders=("libx264",))


def write(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    write_wav(path, samples, rate)
    return path


def fades(n: int, rate: int, fade_s: float = 0.01) -> np.ndarray:
    k = max(1, int(fade_s * rate))
    ramp = np.minimum(1.0, np.minimum(np.arange(n) + 1, n - np.arange(n)) / k)
    return ramp


def speechy(path: Path, duration_s: float, seed: int) -> Path:
    """A voice-like narration with a high crest factor (syllable bursts of a 130 Hz buzz and sharp consonant clicks),
    so that bringing it to -14 LUFS makes the true-peak limiter work."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * RATE)
    t = np.arange(n) / RATE
    buzz = sum(np.sin(2 * np.pi * 130 * k * t) / k for k in range(1, 9))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    out = 0.08 * buzz * syllables
    for at in rng.uniform(0.05, duration_s - 0.05, 6):
        i = int(at * RATE)
        out[i:i + 200] += rng.normal(0, 0.5, 200) * np.linspace(1, 0, 200)  # consonants: peaks far above the level
    return write(path, np.clip(out * fades(n, RATE), -1, 1))


def tone(path: Path, duration_s: float, freq_hz: float, amplitude: float, stereo: bool = False) -> Path:
    n = int(duration_s * RATE)
    t = np.arange(n) / RATE
    s = amplitude * np.sin(2 * np.pi * freq_hz * t) * fades(n, RATE)
    return write(path, np.stack([s, s * 0.8], axis=1) if stereo else s)


def loudness(path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) of a file's audio, with ffmpeg's ebur128."""
    log = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-vn", "-af", "ebur128=peak=true",
                          "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    summary = log[log.rindex("Summary:"):]
    integrated = float(re.search(r"I:\s*(-?[\d.]+|-inf)\s*LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s*(-?[\d.]+|-inf)\s*dBFS", summary).group(1))
    return integrated, peak


def project_of(tmp_path: Path, make_image, voices: list[Path], music: Path | None,
               last_s: float | None = None, aspect: str = "16:9") -> Project:
    scenes = tuple(Scene(id=f"s{i}", narration="", audio=voice, audio_duration_s=len(read_audio(voice, RATE)) / RATE,
                         visual=make_image(f"s{i}.png", (160, 90)), duration_s=last_s if i == len(voices) - 1 else None)
                   for i, voice in enumerate(voices))
    return Project(title="t", scenes=scenes, music=music, music_volume=0.3, captions=False, aspect=aspect)


@pytest.mark.parametrize("aspect", ["16:9", "9:16", "1:1"])
@pytest.mark.parametrize("with_music", [False, True], ids=["voice", "music"])
@pytest.mark.parametrize("tier", TIERS)
def test_every_tier_meets_its_loudness_target_and_true_peak_in_stereo(tier, with_music, aspect, make_image, tmp_path):
    preset = tiny(tier)
    voices = [speechy(tmp_path / f"v{i}.wav", 1.2, seed=i) for i in range(2)]
    music = tone(tmp_path / "music.wav", 1.0, MUSIC_HZ, 0.3, stereo=True) if with_music else None
    result = compose(project_of(tmp_path, make_image, voices, music, aspect=aspect), preset, tmp_path / "v.mp4")
    width, height = preset.resolution[aspect]
    video = next(s for s in ffprobe(result.path)["streams"] if s["codec_type"] == "video")
    assert (int(video["width"]), int(video["height"])) == (width, height)
    integrated, peak = loudness(result.path)
    assert abs(integrated - preset.loudness_lufs) <= 0.5, (integrated, preset.loudness_lufs)
    assert peak <= -1.0, peak
    audio = next(s for s in ffprobe(result.path)["streams"] if s["codec_type"] == "audio")
    assert audio["codec_name"] == "aac" and int(audio["channels"]) == 2
    assert int(audio["sample_rate"]) == preset.sample_rate
    left, right = read_audio(result.path, preset.sample_rate, channels=2).T
    if not with_music:  # the narration is centred: the same in both channels
        assert np.abs(left - right).max() < 0.05 * np.abs(left).max()


def _level_db(samples: np.ndarray, freq_hz: float) -> float:
    """Level (dB) of one frequency in a stretch of mono samples (a single DFT bin, Hann window)."""
    window = np.hanning(len(samples))
    t = np.arange(len(samples)) / RATE
    amplitude = abs(np.sum(samples * window * np.exp(-2j * np.pi * freq_hz * t))) / np.sum(window) * 2
    return 20 * np.log10(max(amplitude, 1e-9))


def test_the_music_stays_ducked_through_short_gaps_between_narrations(make_image, tmp_path):
    """Three narrations of a steady 220 Hz tone (no pauses inside them), a steady 880 Hz music tone: the music's level,
    in 50 ms windows, must not rise more than 1 dB above its level under the narration in the gaps between them
    (under 1 s: the preset's tail after one scene plus the lead before the next)."""
    preset = tiny("draft")
    voices = [tone(tmp_path / f"v{i}.wav", 1.0, VOICE_HZ, 0.3) for i in range(3)]
    music = tone(tmp_path / "music.wav", 2.0, MUSIC_HZ, 0.3, stereo=True)
    result = compose(project_of(tmp_path, make_image, voices, music, last_s=2.5), preset, tmp_path / "v.mp4")
    windows = [(v.offset_s, v.offset_s + v.duration_s) for v in result.timeline.narration]
    gaps = [(b, a) for (_, b), (a, _) in zip(windows, windows[1:])]
    assert gaps and all(0 < a - b < 1.0 for b, a in gaps), gaps  # the case this test is about
    audio = read_audio(result.path, RATE)[:, 0]
    step = int(0.05 * RATE)

    def levels(start_s: float, end_s: float) -> list[float]:
        return [_level_db(audio[i:i + step], MUSIC_HZ) for i in range(int(start_s * RATE), int(end_s * RATE) - step, step)]

    a, b = windows[0]
    ducked = float(np.median(levels(a + 0.3, b - 0.1)))
    assert ducked > -60  # the music plays under the narration
    for start, end in gaps:
        worst = max(levels(start - 0.1, end + 0.1))
        assert worst - ducked <= 1.0, (start, end, worst, ducked)
    # After the last narration the music comes back up (the duck is released, not stuck).
    assert max(levels(windows[-1][1] + 0.5, result.timeline.duration_s - 0.05)) - ducked > 6
