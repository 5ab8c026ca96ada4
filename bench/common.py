"""Shared pieces of Studio's benchmarks (``bench/compose.py``, ``bench/encoders.py``).

* a fixed, generated test case: detailed 1080p stills, speech-like narration with word timings, a music bed, saved as
  a `studio.Project`;
* a frame renderer (numpy/OpenCV) that draws the same timeline Studio draws (Ken Burns on stills, crossfades, burned-in
  captions) as raw yuv420p, for the encoder-only bound and for encoder measurements;
* measuring a process tree: wall time, CPU time and the peak of the summed RSS, sampled every ~50 ms with psutil;
* checking a rendered file with FFmpeg's libraries, so a broken render cannot look fast.

Nothing here is part of Studio; all generated media go to a temporary folder that is never committed.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks run as scripts from a checkout
    sys.path.insert(0, str(ROOT))

from studio.media import write_wav  # noqa: E402
from studio.presets import Preset  # noqa: E402
from studio.project import Project, Scene, WordTiming  # noqa: E402

STILL_SIZE = (1920, 1080)
NARRATION_RATE = 22050  # what piper voices write
MUSIC_RATE = 44100
WORDS = ("light", "morning", "coffee", "river", "studio", "bright", "window", "quiet", "story", "garden", "paper",
         "simple", "green", "mountain", "careful", "rhythm", "harbour", "minute", "yellow", "winter", "across", "table")


# -- the test case ---------------------------------------------------------------------------------------------------
def _power_law_noise(rng: np.random.Generator, size: tuple[int, int], exponent: float) -> np.ndarray:
    """Zero-mean, unit-variance noise (H, W) whose amplitude spectrum falls as 1/f**exponent (natural images: ~1)."""
    w, h = size
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amplitude = f**-exponent
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
    noise = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(h, w)).astype(np.float32)
    return (noise - noise.mean()) / max(float(noise.std()), 1e-9)


def make_still(path: Path, seed: int, size: tuple[int, int] = STILL_SIZE) -> Path:
    """Write a detailed RGB still (PNG) with roughly a photo's statistics.

    Smooth colour regions (1/f^2 spectrum, like sky and walls), photo-like texture (1/f spectrum, like foliage or
    fabric) over part of the frame, shapes and lines with hard edges, lettering, and a little grain. Flat gradients
    would make the encoder's work (and so every timing and quality figure) unrealistically easy, white noise
    unrealistically hard.
    """
    from PIL import Image, ImageDraw, ImageFont

    from studio.fonts import font_path

    w, h = size
    rng = np.random.default_rng(seed)
    # 1. Smooth colour field: a luminance and two chroma components.
    lum, c1, c2 = (_power_law_noise(rng, size, 2.0) for _ in range(3))
    base = np.stack([lum + 0.7 * c1, lum - 0.4 * c1 + 0.5 * c2, lum - 0.8 * c2], axis=-1)
    pixels = 128.0 + 45.0 * base
    # 2. Texture over about 40 % of the frame (a smooth mask decides where), strongest in luminance.
    mask = np.clip((_power_law_noise(rng, size, 2.5) - 0.25) * 2.0, 0.0, 1.0)[..., None]
    texture = _power_law_noise(rng, size, 1.0)[..., None] * np.array([1.0, 0.9, 0.8], np.float32)
    pixels += 40.0 * mask * texture
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    # 3. Shapes and lines, as in an illustration.
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(30):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 5)), y0 + int(rng.integers(20, h // 5))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (int(rng.integers(90, 230)),)
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour, outline=(0, 0, 0, 160), width=3)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(2, 9)))
    # 4. Lettering (fine, high-contrast edges).
    font = ImageFont.truetype(str(font_path("regular")), size=max(12, h // 30))
    for _ in range(6):
        text = " ".join(rng.choice(WORDS, 3))
        draw.text((int(rng.integers(0, w - w // 4)), int(rng.integers(0, h - h // 20))), text, font=font,
                  fill=(255, 255, 255, 220))
    # 5. Grain, like a photo or a diffusion model's output.
    pixels = np.asarray(image, np.int16) + rng.normal(0.0, 2.5, (h, w, 3)).astype(np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, compress_level=1)
    return path


def make_narration(path: Path, seed: int, duration_s: float, sample_rate: int = NARRATION_RATE) -> tuple[WordTiming, ...]:
    """Write a speech-like WAV of exactly `duration_s` and return its word timings.

    Each "word" is a voiced burst (a 100-150 Hz glottal pulse train with harmonics and a syllable-rate envelope) with
    a short noise onset like a consonant; words are separated by short gaps and one longer pause, as in a sentence.
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sample_rate))
    out = np.zeros(n, np.float32)
    words: list[WordTiming] = []
    t = 0.04
    pause_after = int(rng.integers(3, 6))
    while True:
        word = str(rng.choice(WORDS))
        length_s = min(0.12 + 0.045 * len(word) + float(rng.uniform(-0.03, 0.05)), 0.5)
        if t + length_s > duration_s - 0.04:
            break
        start, count = int(t * sample_rate), int(length_s * sample_rate)
        tt = np.arange(count) / sample_rate
        f0 = float(rng.uniform(100, 150)) * (1 + 0.05 * np.sin(2 * np.pi * 3 * tt))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voiced = sum(np.sin(k * phase) / k * (1.0 if k in (2, 3, 5) else 0.5) for k in range(1, 12))
        syllables = 0.55 + 0.45 * np.sin(np.pi * np.clip(tt / length_s, 0, 1) * max(1, len(word) // 3)) ** 2
        envelope = np.minimum(1.0, np.minimum(tt / 0.02, (length_s - tt) / 0.03)).clip(0, 1) * syllables
        burst = np.zeros(count)
        onset = min(count, int(0.04 * sample_rate))
        burst[:onset] = np.diff(rng.normal(0, 1, onset + 1)) * np.linspace(1, 0, onset)
        out[start:start + count] += (0.12 * voiced * envelope + 0.1 * burst).astype(np.float32)
        words.append(WordTiming(word, round(t, 4), round(t + length_s, 4)))
        t += length_s + float(rng.uniform(0.05, 0.11))
        if len(words) == pause_after:
            t += 0.25
    if not words:  # a very short scene (the quick case): one short word
        count = max(1, int(min(duration_s, 0.12) * sample_rate))
        out[:count] = 0.2 * np.sin(2 * np.pi * 130 * np.arange(count) / sample_rate)
        words.append(WordTiming("hi", 0.0, count / sample_rate))
    write_wav(path, np.clip(out, -1, 1), sample_rate)
    return tuple(words)


def make_music(path: Path, duration_s: float = 16.0, sample_rate: int = MUSIC_RATE) -> Path:
    """Write a stereo music bed (four chords of soft harmonics and a pulse); Studio loops it to the video's length."""
    n = int(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.zeros((n, 2), np.float32)
    chords = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (196.0, 246.9, 311.1))
    bar = duration_s / len(chords)
    for i, chord in enumerate(chords):
        sel = (t >= i * bar) & (t < (i + 1) * bar)
        tt = t[sel] - i * bar
        fade = np.minimum(1, np.minimum(tt / 0.05, (bar - tt) / 0.05))
        for j, f in enumerate(chord):
            tone = (np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(4 * np.pi * f * tt)) * fade * 0.08
            out[sel, 0] += tone * (1.0 - 0.3 * j / 2)
            out[sel, 1] += tone * (0.7 + 0.3 * j / 2)
    pulse = np.exp(-((t % 0.5) / 0.04)) * np.sin(2 * np.pi * 60 * t) * 0.15
    out += pulse[:, None].astype(np.float32)
    write_wav(path, out, sample_rate)
    return path


def build_case(folder: Path, *, scenes: int, scene_s: float, preset: Preset, title: str = "Benchmark",
               still_size: tuple[int, int] = STILL_SIZE) -> Project:
    """Make the benchmark's project in `folder` and save it (``project.json``, ``assets/``).

    Each scene lasts `scene_s` with `preset`'s lead and tail silences, so its narration lasts
    ``scene_s - lead_s - tail_s`` (4.15 s for 5 s scenes with the shipped presets).
    """
    folder = Path(folder)
    assets = folder / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    speech_s = round(scene_s - preset.lead_s - preset.tail_s, 4)
    if speech_s <= 0.05:
        raise ValueError(f"scene_s={scene_s} leaves no room for narration after lead {preset.lead_s} s and tail {preset.tail_s} s")
    items = []
    for i in range(scenes):
        still = make_still(assets / f"still_{i:03d}.png", seed=1000 + i, size=still_size)
        wav = assets / f"narration_{i:03d}.wav"
        words = make_narration(wav, seed=2000 + i, duration_s=speech_s)
        items.append(Scene(id=f"s{i:03d}", narration=" ".join(w.word for w in words), visual_prompt=f"bench still {i}",
                           audio=wav, audio_duration_s=speech_s, words=words, visual=still))
    music = make_music(assets / "music.wav")
    return Project(title=title, scenes=tuple(items), music=music).save(folder)


# -- the timeline, as Studio lays it out -------------------------------------------------------------------------------
def scene_starts(project: Project, preset: Preset) -> tuple[list[float], list[float], float]:
    """(start_s of each scene, length_s of each scene, total_s): scene i+1 starts `transition_s` before scene i ends."""
    starts, lengths, t = [], [], 0.0
    for i, scene in enumerate(project.scenes):
        length = preset.lead_s + float(scene.audio_duration_s or 0.0) + preset.tail_s
        if i:
            t -= preset.transition_s
        starts.append(t)
        lengths.append(length)
        t += length
    return starts, lengths, t


def caption_chunks(project: Project, preset: Preset, max_words: int = 4) -> list[tuple[float, float, str]]:
    """Captions as (start_s, end_s, text) on the video's clock: up to `max_words` words, shown while they are spoken."""
    starts, _, _ = scene_starts(project, preset)
    chunks = []
    for scene, start in zip(project.scenes, starts):
        words = list(scene.words)
        for k in range(0, len(words), max_words):
            group = words[k:k + max_words]
            offset = start + preset.lead_s
            chunks.append((offset + group[0].start_s, offset + group[-1].end_s, " ".join(w.word for w in group)))
    return chunks


def _cover(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale and centre-crop `image` so it covers `size` exactly (once per scene, area filter)."""
    import cv2

    w, h = size
    ih, iw = image.shape[:2]
    scale = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(resized[y0:y0 + h, x0:x0 + w])


def _caption_overlay(text: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(rgb, alpha 0..1, x, y) of a caption: white bold text with a dark outline, centred near the bottom."""
    from PIL import Image, ImageDraw, ImageFont

    from studio.fonts import font_path

    w, h = size
    font = ImageFont.truetype(str(font_path("bold")), size=max(10, int(h * 0.06)))
    stroke = max(1, h // 240)
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font, stroke_width=stroke)
    tw, th = box[2] - box[0] + 4, box[3] - box[1] + 4
    layer = Image.new("RGBA", (tw, th), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((2 - box[0], 2 - box[1]), text, font=font, fill=(255, 255, 255, 255),
                               stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
    rgba = np.asarray(layer, np.float32)
    x = max(0, (w - tw) // 2)
    y = max(0, int(h * 0.88) - th)
    rgb, alpha = rgba[..., :3], rgba[..., 3:] / 255.0
    return rgb[: h - y, : w - x], alpha[: h - y, : w - x], x, y


def render_frames(project: Project, preset: Preset, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield the video's frames as RGB uint8 arrays (H, W, 3): the same timeline Studio renders.

    Ken Burns zooms each still from 1 to ``1 + ken_burns`` over its scene (alternating in and out), scene i+1 fades in
    over `transition_s`, and captions are alpha-blended near the bottom. Each still is scaled to the frame once; a frame
    costs one affine warp per visible scene.
    """
    import cv2
    from PIL import Image

    w, h = size or preset.size(project.aspect)
    starts, lengths, total_s = scene_starts(project, preset)
    n_frames = int(round(total_s * preset.fps))
    zoom = 1.0 + preset.ken_burns
    sources: dict[int, np.ndarray] = {}
    captions = caption_chunks(project, preset)
    overlays: dict[int, tuple] = {}

    def source(i: int) -> np.ndarray:
        if i not in sources:
            for old in [k for k in sources if k < i - 1]:  # keep memory flat on long videos
                del sources[old]
            with Image.open(project.scenes[i].visual) as img:
                rgb = np.asarray(img.convert("RGB"))
            sources[i] = _cover(rgb, (int(math.ceil(w * zoom)) // 2 * 2, int(math.ceil(h * zoom)) // 2 * 2))
        return sources[i]

    def scene_frame(i: int, t: float) -> np.ndarray:
        src = source(i)
        sh, sw = src.shape[:2]
        p = min(max((t - starts[i]) / lengths[i], 0.0), 1.0)
        z = 1.0 + (zoom - 1.0) * (p if i % 2 == 0 else 1.0 - p)  # window shrinks by z: zooms in
        a = w * z / sw
        m = np.array([[a, 0, w / 2 - a * sw / 2], [0, a, h / 2 - a * sh / 2]], np.float32)
        return cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    first = 0
    for f in range(n_frames):
        t = f / preset.fps
        while first + 1 < len(starts) and t >= starts[first] + lengths[first]:
            first += 1
        frame = scene_frame(first, t)
        nxt = first + 1
        if nxt < len(starts) and t >= starts[nxt]:
            mix = min(max((t - starts[nxt]) / max(preset.transition_s, 1e-6), 0.0), 1.0)
            frame = cv2.addWeighted(scene_frame(nxt, t), mix, frame, 1.0 - mix, 0.0)
        for k, (c0, c1, text) in enumerate(captions):
            if c0 <= t < c1:
                if k not in overlays:
                    overlays.clear()
                    overlays[k] = _caption_overlay(text, (w, h))
                rgb, alpha, x, y = overlays[k]
                region = frame[y:y + rgb.shape[0], x:x + rgb.shape[1]].astype(np.float32)
                frame[y:y + rgb.shape[0], x:x + rgb.shape[1]] = (region * (1 - alpha) + rgb * alpha).astype(np.uint8)
                break
        yield frame


def write_raw_yuv(frames: Iterator[np.ndarray], path: Path) -> int:
    """Write RGB frames as raw yuv420p (I420, BT.601 as OpenCV converts) to `path`; returns the frame count."""
    import cv2

    count = 0
    with open(path, "wb") as handle:
        for frame in frames:
            handle.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
            count += 1
    return count


def raw_folder(size_bytes: int) -> Path:
    """/dev/shm when `size_bytes` fits comfortably in memory (a fifth of what is available) and in /dev/shm's own free
    space, else the temp folder."""
    import tempfile

    import psutil

    shm = Path("/dev/shm")
    # A container's /dev/shm is often capped (Docker: 64 MB) whatever the free memory: its own free space counts too.
    if (shm.is_dir() and os.access(shm, os.W_OK) and size_bytes < psutil.virtual_memory().available // 5
            and size_bytes < shutil.disk_usage(shm).free * 0.9):
        return shm
    return Path(tempfile.gettempdir())


# -- measuring a process tree -----------------------------------------------------------------------------------------
@dataclass
class Measurement:
    """One timed run of a process tree."""

    wall_s: float
    cpu_s: float  # user + system of the whole tree (children reaped by the measured process included)
    peak_rss_mb: float  # peak of the summed RSS of the process and all its descendants
    returncode: int
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _tree_rss(proc, family: list) -> int:
    """Summed RSS of `proc` and the descendants in `family` (those that have exited count as 0)."""
    import psutil

    total = 0
    for member in (proc, *family):
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a process we started and all its descendants."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in [*family]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks remove temporary files and stop child processes."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def measure(start: Callable[[], subprocess.Popen], *, interval_s: float = 0.05,
            finish: Callable[[subprocess.Popen], str] | None = None) -> Measurement:
    """Start a process with `start()`, sample its tree's RSS every `interval_s` until it exits.

    Args:
        start: Returns a started `subprocess.Popen` (the clock starts just before the call).
        finish: Called after the exit; returns an error text ("" if the run succeeded). By default a non-zero exit
            code is the error.
    """
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = start()
    peak = 0
    try:
        handle = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        handle = None
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        family: list = []
        count = 0
        while not stop.is_set():
            if handle is not None:
                if count % 5 == 0:  # listing descendants scans /proc: every 5th sample keeps the sampler at ~0.5 % CPU
                    try:
                        family = handle.children(recursive=True)
                    except psutil.NoSuchProcess:
                        family = []
                peak = max(peak, _tree_rss(handle, family))
            count += 1
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        code = proc.wait()
    except BaseException:  # interrupted: do not leave the measured tree running
        kill_tree(proc)
        raise
    finally:
        wall_s = time.perf_counter() - t0
        stop.set()
        sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    error = finish(proc) if finish is not None else (f"exit code {code}" if code else "")
    return Measurement(wall_s=wall_s, cpu_s=cpu_s, peak_rss_mb=peak / 2**20, returncode=code, error=error)


def median_measurement(runs: Sequence[Measurement]) -> Measurement:
    """The median of each figure over repeated runs (the first error, if any, is kept)."""
    errors = [r.error for r in runs if r.error]
    return Measurement(
        wall_s=statistics.median(r.wall_s for r in runs),
        cpu_s=statistics.median(r.cpu_s for r in runs),
        peak_rss_mb=statistics.median(r.peak_rss_mb for r in runs),
        returncode=max(r.returncode for r in runs),
        error=errors[0] if errors else "",
    )


# -- checking outputs --------------------------------------------------------------------------------------------------
def check_video(path: Path, *, expected_s: float, size: tuple[int, int], fps: int, need_audio: bool) -> tuple[bool, str, dict]:
    """Probe a rendered MP4 and compare it with what was asked for: (ok, problem, facts).

    The duration may differ by a frame plus AAC padding (0.1 s) from the timeline's length.
    """
    from studio.errors import StudioError
    from studio.media import probe

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False, f"{path.name} was not written", {}
    try:
        info = probe(path)
    except StudioError as exc:
        return False, str(exc), {}
    facts = {"size_bytes": path.stat().st_size, "duration_s": round(info.duration_s, 3), "width": info.width,
             "height": info.height, "fps": round(info.fps, 3), "video_codec": info.video_codec,
             "audio_codec": info.audio_codec or None}
    problems = []
    if (info.width, info.height) != tuple(size):
        problems.append(f"size {info.width}x{info.height}, expected {size[0]}x{size[1]}")
    if abs(info.duration_s - expected_s) > 1.0 / fps + 0.1:
        problems.append(f"duration {info.duration_s:.2f} s, expected {expected_s:.2f} s")
    if abs(info.fps - fps) > 0.01:
        problems.append(f"{info.fps:.2f} fps, expected {fps}")
    if info.video_codec != "h264":
        problems.append(f"video codec {info.video_codec}, expected h264")
    if need_audio and not info.has_audio:
        problems.append("no audio stream")
    return not problems, "; ".join(problems), facts
