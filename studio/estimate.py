"""How long a render will take on this machine, said before it starts ("about 3 min on this machine").

The encoder's speed is measured, not assumed: `encode_rate` times a tiny real encode (about a second of video at
640x360 and the preset's frame rate, through the preset's own encoder and options, to a null output) and caches the
answer for the life of the process. `estimate_render_s` turns that into the seconds a render takes::

    render_s = frames * width * height / encode_rate * COMPOSE_FACTOR + scenes * SCENE_OVERHEAD_S

`COMPOSE_FACTOR` covers what a render does besides the bare encode of the probe (Python making every frame: Ken
Burns warps, transitions, captions; the soundtrack; the joins) and `SCENE_OVERHEAD_S` what each scene costs whatever
its length (a still loaded and pre-scaled, its segments' ffmpeg processes started). Both were measured with
``bench/estimate.py`` (figures in bench/README.md). Since the factor multiplies a rate measured on this machine, it
carries over to a faster or slower CPU: frame making and encoding both run on the same cores.

The estimate is of the compose step (frames, encoding, soundtrack), the part whose time grows with resolution; the
narration and the pictures are made before it and depend on the providers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import StudioError
from .media import Ffmpeg

if TYPE_CHECKING:
    from .presets import Preset
    from .project import Project

# The probe: a second of testsrc2 (moving colour bars, a gradient, a counter) with a little temporal grain at
# 640x360, big enough for every encoder's minimum frame size and a tenth to a fifth of a second even with Maximum's
# x264 settings. Of the sources tried (plain testsrc2 for 1 and 2 s, at 640x360 and 1280x720, with grain 3 and 6),
# grain 3 gave the most constant ratio of measured render time to predicted encode time across Draft, Standard and
# Maximum (within 1.35x, against 1.5x for plain testsrc2; stronger grain makes slow x264 presets far slower than
# Studio's frames ever are).
PROBE_SIZE = (640, 360)
PROBE_SECONDS = 1.0
PROBE_NOISE = 3
PROBE_TIMEOUT_S = 30.0

# Render (compose) time over the probe's prediction of the bare encode, frames * width * height / encode_rate, after
# the per-scene overhead. Measured with bench/estimate.py --calibrate on the 2-core development machine with libx264,
# composing segment by segment as the app does (figures in bench/README.md): 0.74-0.81 at Draft, 0.61-0.68 at
# Standard, 0.67-0.91 for Maximum at 1:1 over two runs. It folds two things together: the compositing beside the
# encode (Python making every frame -- Ken Burns warps, transitions, captions -- and the soundtrack: 1.5-2.3x the
# bare encode, bench/compose.py) and Studio's frames being easier to encode than the probe's grainy test pattern. Taken near the top of that range, since
# a render that ends early disappoints nobody; one-pass renders take 10-40 % less.
COMPOSE_FACTOR = 0.85
# Seconds each scene costs besides its frames (its still loaded and pre-scaled, its segments' ffmpeg processes
# started and joined): 8 scenes of 1.5 s against 2 of 6 s at Draft, nearly the same frames: 0.24 s and 0.32 s a scene
# in two runs of bench/estimate.py --calibrate.
SCENE_OVERHEAD_S = 0.25
# Scenes assumed per second of video when only a length is given (`studio.server.limits.SECONDS_PER_SCENE`).
SECONDS_PER_SCENE = 8.0

_rates: dict[tuple, float] = {}
_locks: dict[tuple, threading.Lock] = {}
_lock = threading.Lock()


def probe_source(fps: int) -> str:
    """The lavfi source `encode_rate` encodes: `PROBE_SECONDS` of testsrc2 with a little grain at `PROBE_SIZE`."""
    w, h = PROBE_SIZE
    return f"testsrc2=s={w}x{h}:r={fps}:d={PROBE_SECONDS:g},noise=alls={PROBE_NOISE}:allf=t,format=yuv420p"


def _time_encode(args: list[str], what: str) -> float:
    """Run ffmpeg with `args` to completion and return its wall time in seconds (a wedged encoder is killed)."""
    started = time.perf_counter()
    ff = Ffmpeg(args, what=what)
    timer = threading.Timer(PROBE_TIMEOUT_S, ff.kill)
    timer.start()
    try:
        ff.wait()
    finally:
        timer.cancel()
    return time.perf_counter() - started


def encode_rate(preset: "Preset", encoder: str | None = None) -> float:
    """Pixels a second this machine's ffmpeg encodes with `preset`'s `encoder` and its options, measured.

    A tiny real encode (`probe_source`: about a second at 640x360 and the preset's fps, to a null output) is timed
    once per process per (encoder, options, fps); later calls, from any thread, return the cached figure. Concurrent
    first calls for the same key measure once (the others wait for it).

    Args:
        preset: The render tier.
        encoder: One of the preset's encoders; None for the one a render would use (`pick_encoder`).

    Raises:
        StudioError: the encoder does not work here (ffmpeg's message).
    """
    from .compose.encoders import pick_encoder

    encoder = encoder or pick_encoder(preset)
    args = tuple(preset.encoder_args(encoder))
    key = (encoder, args, tuple(preset.encoder_input_args(encoder)), preset.fps)
    with _lock:
        if key in _rates:
            return _rates[key]
        key_lock = _locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            if key in _rates:
                return _rates[key]
        w, h = PROBE_SIZE
        frames = round(PROBE_SECONDS * preset.fps)
        seconds = _time_encode([*preset.encoder_input_args(encoder), "-f", "lavfi", "-i", probe_source(preset.fps),
                                "-frames:v", str(frames), *args, "-an", "-f", "null", "-"],
                               what=f"measuring encoder {encoder}")
        rate = frames * w * h / max(seconds, 1e-3)
        with _lock:
            _rates[key] = rate
        return rate


@dataclass(frozen=True)
class Estimate:
    """How long a render takes here, and of what.

    Attributes:
        seconds: Estimated render (compose) time in seconds.
        video_s: The video's length in seconds.
        width, height, fps: The frame the preset renders at the aspect ratio.
        encoder: The encoder the estimate measured (the one a render uses).
        scenes: Scenes counted for the per-scene overhead.
    """

    seconds: float
    video_s: float
    width: int
    height: int
    fps: int
    encoder: str
    scenes: int = 1

    @property
    def resolution_name(self) -> str:
        """``4K``, ``1080p``, ``720p`` ...: by the frame's short side (2160 and up is 4K)."""
        short = min(self.width, self.height)
        return "4K" if short >= 2160 else f"{short}p"

    @property
    def device(self) -> str:
        from .presets import is_hardware_encoder

        return "GPU" if is_hardware_encoder(self.encoder) else "CPU"

    @property
    def duration_text(self) -> str:
        """The estimate in words: ``about 40 s``, ``about 3 min``, ``about 1 h 20 min``."""
        return duration_words(self.seconds)

    @property
    def text(self) -> str:
        """E.g. ``about 3 min on this machine (4K 2160x2160 at 30 fps, libx264, CPU)``."""
        return (f"{self.duration_text} on this machine ({self.resolution_name} {self.width}x{self.height} at "
                f"{self.fps} fps, {self.encoder}, {self.device})")


def duration_words(seconds: float) -> str:
    """Seconds as a rounded estimate: under 45 s to 5 s (at least 5 s), then whole minutes, then hours and minutes."""
    if not math.isfinite(seconds) or seconds < 0:
        raise StudioError(f"a duration must be a finite number of seconds, got {seconds!r}")
    if seconds < 45:
        return f"about {max(5, 5 * round(seconds / 5))} s"
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"


def video_frames(project: "Project", preset: "Preset") -> int:
    """Frames the project's video will have at `preset`, by the timeline's rule (`studio.compose.timeline`): each
    scene lasts its `duration_s`, else lead + narration + tail, where the narration is its measured
    `audio_duration_s` or, before narration, `speech_s` of its text; consecutive scenes overlap by the transition."""
    from .compose.timeline import choose_transition
    from .server.limits import speech_s

    fps = preset.fps
    frames: list[int] = []
    overlap = 0
    for number, scene in enumerate(project.scenes, start=1):
        if scene.duration_s is not None:
            length = float(scene.duration_s)
        else:
            spoken = scene.audio_duration_s if scene.audio_duration_s else speech_s(scene.narration)
            length = preset.lead_s + float(spoken) + preset.tail_s
        frames.append(max(1, round(length * fps)))
        if len(frames) > 1 and choose_transition(scene, number) != "cut":
            overlap += min(round(preset.transition_s * fps), frames[-2] // 2, frames[-1] // 2)
    return max(1, sum(frames) - overlap)


def estimate_render_s(project_or_seconds: "Project | float", preset: "Preset | str", aspect: str | None = None, *,
                      scenes: int | None = None, encoder: str | None = None) -> Estimate:
    """How long composing a video takes on this machine with `preset`, before anything is rendered.

    Args:
        project_or_seconds: A `Project` (its scenes' lengths are used, see `video_frames`) or the video's length in
            seconds.
        preset: A `Preset` or a tier name.
        aspect: ``16:9``, ``9:16`` or ``1:1``; default the project's, or 16:9 for a length.
        scenes: Scenes to count for the per-scene overhead; default the project's, or one per `SECONDS_PER_SCENE`.
        encoder: The encoder to estimate; default the one a render would use.

    Returns:
        An `Estimate`; its `text` reads e.g. "about 3 min on this machine (4K 2160x2160 at 30 fps, libx264, CPU)".

    Raises:
        StudioError: a length that is not a positive finite number, a bad aspect, an encoder that does not work.
    """
    from .presets import load_preset
    from .project import Project

    if not hasattr(preset, "encoder_args"):
        preset = load_preset(preset)
    if isinstance(project_or_seconds, Project):
        aspect = aspect or project_or_seconds.aspect
        frames = video_frames(project_or_seconds, preset)
        video_s = frames / preset.fps
        count = len(project_or_seconds.scenes) if scenes is None else scenes
    else:
        try:
            video_s = float(project_or_seconds)
        except (TypeError, ValueError):
            raise StudioError(f"estimate a Project or a length in seconds, got {project_or_seconds!r}") from None
        if not (math.isfinite(video_s) and video_s > 0):
            raise StudioError(f"a video's length must be a positive number of seconds, got {project_or_seconds!r}")
        frames = max(1, round(video_s * preset.fps))
        count = max(1, math.ceil(video_s / SECONDS_PER_SCENE)) if scenes is None else scenes
    if count < 0:
        raise StudioError(f"`scenes` must not be negative, got {count}")
    width, height = preset.size(aspect or "16:9")
    from .compose.encoders import pick_encoder

    encoder = encoder or pick_encoder(preset)
    rate = encode_rate(preset, encoder)
    seconds = frames * width * height / rate * COMPOSE_FACTOR + count * SCENE_OVERHEAD_S
    return Estimate(seconds=seconds, video_s=video_s, width=width, height=height, fps=preset.fps, encoder=encoder,
                    scenes=count)



# -- every step, before a run: who would run it, how long, how much memory -------------------------------------------
# Seconds per scene (and the memory loaded) of each provider when neither the model catalogue nor this machine's
# history has a figure: conservative round numbers from runs of the offline providers on a 2-core CPU and the model
# providers' typical figures on a recent NVIDIA GPU (Bark small/full ~5-10 s a sentence; an SDXL-class image ~3 s;
# a 16-frame AnimateDiff clip ~40 s), and 5-20x that on a CPU.
FALLBACK_S = {  # provider -> (per scene on a GPU, per scene on a CPU)
    "rules": (0.01, 0.01), "openai": (3.0, 3.0), "transformers": (4.0, 40.0),
    "piper": (0.3, 0.6), "espeak": (0.1, 0.2), "bark": (8.0, 90.0), "kokoro": (0.5, 6.0),
    "cards": (0.15, 0.15), "local": (0.3, 0.3), "diffusers-image": (3.0, 45.0), "diffusers-video": (40.0, 900.0),
}
STEP_KINDS = (("storyboard", "storyboard"), ("narrate", "narrator"), ("illustrate", "painter"))


@dataclass(frozen=True)
class StepEstimate:
    """One step of a run as estimated before it starts.

    Attributes:
        step: ``narrate``, ``illustrate`` or ``compose`` (``storyboard`` when the run writes one).
        provider: Who would run it (``auto`` resolved as a render would), or the encoder for ``compose``.
        seconds: Estimated seconds for the scenes still to make.
        memory_bytes: Memory its model needs loaded (0 for offline providers; None when unknown).
        source: Where the figure comes from: ``measured here`` (earlier runs, `studio.history`), ``catalogue``,
            ``typical`` (a built-in round number) or ``test encode`` (compose).
        model: The model it would load, if any.
    """

    step: str
    provider: str
    seconds: float
    memory_bytes: int | None = 0
    source: str = "typical"
    model: str | None = None

    @property
    def text(self) -> str:
        memory = f", {self.memory_bytes / 2**30:.1f} GiB loaded" if self.memory_bytes else ""
        model = f" ({self.model})" if self.model else ""
        return f"{self.step}: {self.provider}{model}, {duration_words(self.seconds)}{memory} [{self.source}]"


def _catalogue_entry(provider: str, model: str | None) -> object | None:
    """The model catalogue's entry for a provider's model (`studio.catalog`), when there is one."""
    if not model:
        return None
    try:
        from .catalog import load_catalog  # the model catalogue, when this installation has it

        return load_catalog().get(model)
    except Exception:  # noqa: BLE001 - no catalogue, or no entry: estimate from the built-in figures
        return None


def _per_scene(step: str, provider: str, model: str | None, device: str) -> tuple[float, int | None, str]:
    from . import history

    entry = _catalogue_entry(provider, model)
    memory = None
    if entry is not None:
        memory = getattr(entry, "gpu_bytes" if device == "gpu" else "cpu_bytes", None)
    measured = history.per_scene_s(step, provider, model, device)
    if measured is not None:
        return measured, memory, "measured here"
    if entry is not None:
        value = getattr(entry, "gpu_s_per_scene" if device == "gpu" else "cpu_s_per_scene", None)
        if isinstance(value, (int, float)):
            return float(value), memory, "catalogue"
    gpu_s, cpu_s = FALLBACK_S.get(provider, (5.0, 60.0))
    return (gpu_s if device == "gpu" else cpu_s), (memory if memory is not None else (0 if provider in (
        "rules", "openai", "piper", "espeak", "cards", "local") else None)), "typical"


def estimate_steps(project: "Project", preset: "Preset | str", *, narrator: str = "auto", painter: str = "auto",
                   writer: str | None = None, device: str | None = None) -> list[StepEstimate]:
    """Each step of rendering `project` with `preset` on this machine, before anything runs: the provider `auto`
    would choose (checks only: no model is loaded), the seconds for the scenes it still has to make, and the memory
    its model needs. Figures: this machine's earlier runs (`studio.history`), else the model catalogue's, else
    typical ones; the compose step is `estimate_render_s` (a real test encode).

    Args:
        project: The project (scenes already narrated or painted cost nothing).
        preset: A `Preset` or a tier name.
        narrator, painter: The providers asked for (``auto`` is resolved by the preset's preferences).
        writer: Also estimate writing the storyboard with this writer (a render from text); None: it is written.
        device: ``gpu`` or ``cpu``; default: ``gpu`` when an NVIDIA GPU is seen here.
    """
    from . import providers
    from .devices import gpus
    from .errors import ProviderUnavailable
    from .presets import load_preset

    if not hasattr(preset, "encoder_args"):
        preset = load_preset(preset)
    device = device or ("gpu" if gpus() else "cpu")
    todo = {"storyboard": 1 if writer else 0,
            "narrate": sum(1 for s in project.scenes if s.audio is None and s.narration.strip()),
            "illustrate": sum(1 for s in project.scenes if s.visual is None)}
    asked = {"storyboard": writer or "auto", "narrate": narrator, "illustrate": painter}
    out = []
    for step, kind in STEP_KINDS:
        if step == "storyboard" and not writer:
            continue
        try:
            choice = providers.choose(kind, asked[step] or "auto", prefer=preset.providers.get(kind),
                                      configs=preset.models)
            name = choice.name
        except ProviderUnavailable as exc:
            raise StudioError(f"{step}: {exc}") from None
        model = (preset.models.get(name) or {}).get("model")
        per_scene, memory, source = _per_scene(step, name, model, device)
        out.append(StepEstimate(step, name, per_scene * todo[step], memory, source, model))
    composed = estimate_render_s(project, preset)
    out.append(StepEstimate("compose", composed.encoder, composed.seconds, 0, "test encode"))
    return out
