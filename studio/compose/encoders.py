"""Video encoders: find the first of a preset's encoders that really works on this machine.

ffmpeg lists ``h264_nvenc`` and ``hevc_nvenc`` even where there is no NVIDIA GPU or driver, so a listing proves
nothing: each candidate is probed with a tiny real encode (a tenth of a second of a black frame, with the preset's own
arguments for that encoder) and the answer is cached for the life of the process. ``libx264`` is the exception: it is
built into the wheel's ffmpeg and the preset loader has checked its options, so `pick_encoder` and `check_encoder`
take it without a probe (`probe_encoder` still probes it when asked).
"""

from __future__ import annotations

import threading

from ..errors import StudioError
from ..media import Ffmpeg
from ..presets import Preset

PROBE_TIMEOUT_S = 30.0
TRUSTED = "libx264"
# Big enough for every encoder's minimum frame size (NVENC refuses tiny frames), small enough to be instant.
_PROBE_SOURCE = "color=c=black:s=256x144:r=30:d=0.1"
_cache: dict[tuple[str, tuple[str, ...]], tuple[bool, str]] = {}
_lock = threading.Lock()


def probe_encoder(encoder: str, args: list[str] | tuple[str, ...] | None = None) -> tuple[bool, str]:
    """Try a tiny real encode with `encoder` (and its ffmpeg output `args`); cached per process.

    Returns:
        ``(True, "")`` when it encoded, else ``(False, reason)`` with ffmpeg's own message.
    """
    args = tuple(args) if args else ("-c:v", encoder)
    key = (encoder, args)
    with _lock:
        if key in _cache:
            return _cache[key]
    try:
        ff = Ffmpeg(["-f", "lavfi", "-i", _PROBE_SOURCE, *args, "-an", "-f", "null", "-"],
                    what=f"probing encoder {encoder}")
        timer = threading.Timer(PROBE_TIMEOUT_S, ff.kill)  # a wedged driver must not hang the render
        timer.start()
        try:
            ff.wait()
        finally:
            timer.cancel()
        answer = (True, "")
    except StudioError as exc:
        answer = (False, str(exc))
    with _lock:
        _cache[key] = answer
    return answer


def encoder_works(preset: Preset, encoder: str) -> bool:
    """Whether `encoder` encodes here with `preset`'s arguments for it (probed once per process)."""
    return probe_encoder(encoder, preset.encoder_args(encoder))[0]


def pick_encoder(preset: Preset) -> str:
    """The first of ``preset.encoders`` that really works on this machine.

    Raises:
        StudioError: none works (cannot happen with a working ffmpeg: presets must list libx264).
    """
    reasons = []
    for encoder in preset.encoders:
        if encoder == TRUSTED:
            return encoder
        ok, reason = probe_encoder(encoder, preset.encoder_args(encoder))
        if ok:
            return encoder
        reasons.append(f"{encoder}: {reason}")
    raise StudioError(f"none of preset {preset.name!r}'s encoders works here ({'; '.join(reasons)}); "
                      "check that the imageio-ffmpeg wheel is installed intact")


def check_encoder(preset: Preset, encoder: str) -> str:
    """`encoder` if the caller asked for it and it works here, else a StudioError that says why."""
    if encoder not in preset.encoder:
        raise StudioError(f"`encoder` {encoder!r} is not configured in preset {preset.name!r}; "
                          f"choose one of {', '.join(preset.encoder)}")
    ok, reason = (True, "") if encoder == TRUSTED else probe_encoder(encoder, preset.encoder_args(encoder))
    if not ok:
        raise StudioError(f"`encoder` {encoder!r} does not work on this machine ({reason}); "
                          f"leave `encoder` unset to use the first that works ({pick_encoder(preset)})")
    return encoder


def working_encoders() -> list[str]:
    """Every video encoder Studio supports that really encodes on this machine (probed, cached per process)."""
    from ..presets import ENCODER_OPTIONS

    return [encoder for encoder in ENCODER_OPTIONS if probe_encoder(encoder)[0]]
