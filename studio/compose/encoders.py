"""Video encoders: find the first of a preset's encoders that really works on this machine.

ffmpeg lists ``h264_nvenc``, ``h264_qsv``, ``h264_amf``, ``h264_vaapi`` ... even where the hardware or its driver is
missing, so a listing proves nothing: each candidate is probed with a tiny real encode (a tenth of a second of a black
frame, with the preset's own arguments for that encoder, input-side ones included) and the answer is cached for the
life of the process. ``libx264`` is the exception: it is built into the wheel's ffmpeg and the preset loader has
checked its options, so `pick_encoder` and `check_encoder` take it without a probe (`probe_encoder` still probes it
when asked).

Before a probe, a cheap precondition per family (`precondition`: a look at the platform and at ``/dev/dri``, no ffmpeg
process) rules out hardware that cannot be here, so a machine without it does not pay a probe per encoder at every
render, and the reason says why:

- NVENC: everywhere (the probe decides: ffmpeg loads the NVIDIA driver itself);
- Quick Sync: Windows, or Linux with a ``/dev/dri/renderD*`` node not known to be another vendor's than Intel's;
- AMF: Windows, or Linux with an AMD render node and AMD's AMF runtime (``libamfrt64.so.1``, from amdgpu-pro);
- VAAPI: Linux with the table's render node (``/dev/dri/renderD128`` unless `device` says otherwise), not NVIDIA's;
- VideoToolbox: macOS on Apple Silicon (its constant-quality mode, ``-q:v``, needs it).
"""

from __future__ import annotations

import os
import platform
import sys
import threading
from pathlib import Path

from ..errors import StudioError
from ..media import Ffmpeg
from ..presets import DEFAULT_VAAPI_DEVICE, ENCODER_FAMILY, Preset

PROBE_TIMEOUT_S = 30.0
TRUSTED = "libx264"
# Big enough for every encoder's minimum frame size (NVENC refuses tiny frames), small enough to be instant.
_PROBE_SOURCE = "color=c=black:s=256x144:r=30:d=0.1"
_cache: dict[tuple[str, tuple[str, ...], tuple[str, ...]], tuple[bool, str]] = {}
_lock = threading.Lock()

DRI_DIR = Path("/dev/dri")
SYS_DRM_DIR = Path("/sys/class/drm")
# PCI vendor ids of render nodes (``/sys/class/drm/renderD128/device/vendor``).
INTEL, AMD, NVIDIA = "0x8086", "0x1002", "0x10de"
VENDOR_NAMES = {INTEL: "Intel", AMD: "AMD", NVIDIA: "NVIDIA"}
AMF_RUNTIME = "libamfrt64.so.1"
# Where AMD's driver packages put the AMF runtime (besides $LD_LIBRARY_PATH).
AMF_DIRS = ("/opt/amdgpu-pro/lib64", "/opt/amdgpu-pro/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64", "/usr/lib")


def _system() -> str:
    """``sys.platform`` ("linux", "win32", "darwin"), behind a function so tests can play another machine."""
    return sys.platform


def _machine() -> str:
    """The CPU architecture ("x86_64", "arm64"), behind a function so tests can play another machine."""
    return platform.machine()


def render_nodes() -> list[Path]:
    """The DRM render nodes of this machine (``/dev/dri/renderD128`` ...), sorted; empty where there are none."""
    try:
        return sorted(DRI_DIR.glob("renderD*"))
    except OSError:
        return []


def node_vendor(node: Path) -> str | None:
    """A render node's PCI vendor id (``"0x8086"`` for Intel), or None where sysfs does not say."""
    try:
        return (SYS_DRM_DIR / node.name / "device" / "vendor").read_text("ascii").strip().lower()
    except (OSError, UnicodeDecodeError):
        return None


def _vendor_list(nodes: list[Path]) -> str:
    return ", ".join(f"{n} ({VENDOR_NAMES.get(node_vendor(n) or '', node_vendor(n) or 'unknown vendor')})" for n in nodes)


def _amf_runtime() -> Path | None:
    """Where AMD's AMF runtime library is, or None (a look in the usual folders; nothing is loaded)."""
    folders = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d] + list(AMF_DIRS)
    for folder in folders:
        path = Path(folder) / AMF_RUNTIME
        if path.is_file():
            return path
    return None


def precondition(encoder: str, preset: Preset | None = None) -> str:
    """Why `encoder`'s hardware cannot be on this machine, or ``""`` when it may be (then a probe decides).

    Cheap: it looks at the platform, ``/dev/dri`` and sysfs, and never starts ffmpeg.

    Args:
        encoder: A supported encoder name (``h264_qsv`` ...).
        preset: The preset whose table for `encoder` is used (the VAAPI `device`); None for the defaults.

    Returns:
        ``""``, or a reason that names the encoder, e.g. ``"h264_vaapi: no /dev/dri render node on this machine"``.
    """
    family = ENCODER_FAMILY.get(encoder)
    system = _system()
    linux = system.startswith("linux")
    if family == "videotoolbox":
        if system != "darwin":
            return f"{encoder}: VideoToolbox is macOS only"
        machine = _machine()
        if machine != "arm64":
            return f"{encoder}: constant quality (-q:v) needs an Apple Silicon Mac; this Mac is {machine}"
        return ""
    if family == "qsv":
        if system == "win32":
            return ""
        if not linux:
            return f"{encoder}: Intel Quick Sync runs on Linux and Windows only"
        nodes = render_nodes()
        if not nodes:
            return f"{encoder}: no /dev/dri render node on this machine"
        vendors = {node_vendor(n) for n in nodes}
        if INTEL not in vendors and None not in vendors:
            return f"{encoder}: no Intel GPU on this machine (render nodes: {_vendor_list(nodes)})"
        return ""
    if family == "vaapi":
        if not linux:
            return f"{encoder}: VAAPI is Linux only"
        nodes = render_nodes()
        if not nodes:
            return f"{encoder}: no /dev/dri render node on this machine"
        table = preset.encoder.get(encoder, {}) if preset is not None else {}
        device = DRI_DIR / Path(table.get("device", DEFAULT_VAAPI_DEVICE)).name  # the loader checked its form
        if device not in nodes:
            return (f"{encoder}: {device} does not exist on this machine (render nodes: {_vendor_list(nodes)}); "
                    f"set `device` in [encoder.{encoder}] to one of them")
        if node_vendor(device) == NVIDIA:
            return f"{encoder}: {device} is an NVIDIA GPU, which has no VAAPI encoder (NVENC is the encoder there)"
        return ""
    if family == "amf":
        if system == "win32":
            return ""
        if not linux:
            return f"{encoder}: AMD AMF runs on Windows and Linux only"
        nodes = render_nodes()
        if not nodes:
            return f"{encoder}: no /dev/dri render node on this machine"
        vendors = {node_vendor(n) for n in nodes}
        if AMD not in vendors and None not in vendors:
            return f"{encoder}: no AMD GPU on this machine (render nodes: {_vendor_list(nodes)})"
        if _amf_runtime() is None:
            return (f"{encoder}: AMD's AMF runtime ({AMF_RUNTIME}, from AMD's amdgpu-pro driver) is not installed; "
                    "VAAPI (h264_vaapi) encodes on AMD GPUs with the open driver")
        return ""
    return ""  # libx264 and NVENC: the probe decides


def probe_encoder(encoder: str, args: list[str] | tuple[str, ...] | None = None,
                  input_args: list[str] | tuple[str, ...] = ()) -> tuple[bool, str]:
    """Try a tiny real encode with `encoder` (its ffmpeg output `args`, and `input_args` before the input, as
    `Preset.encoder_input_args` gives them); cached per process.

    Returns:
        ``(True, "")`` when it encoded, else ``(False, reason)`` with ffmpeg's own message.
    """
    args = tuple(args) if args else ("-c:v", encoder)
    input_args = tuple(input_args)
    key = (encoder, args, input_args)
    with _lock:
        if key in _cache:
            return _cache[key]
    ff = None
    try:
        ff = Ffmpeg([*input_args, "-f", "lavfi", "-i", _PROBE_SOURCE, *args, "-an", "-f", "null", "-"],
                    what=f"probing encoder {encoder}")
        timer = threading.Timer(PROBE_TIMEOUT_S, ff.kill)  # a wedged driver must not hang the render
        timer.start()
        try:
            ff.wait()
        finally:
            timer.cancel()
        answer = (True, "")
    except StudioError as exc:
        answer = (False, _probe_reason(encoder, ff.log_text() if ff is not None else "", str(exc)))
    with _lock:
        _cache[key] = answer
    return answer


# ffmpeg's follow-on lines after an encoder fails to open; the cause is the line before them.
_FOLLOW_ON = ("Error while opening encoder", "Terminating thread", "Task finished", "Nothing was written",
              "Error sending frames", "Could not open encoder", "Conversion failed", "Error initializing output")


def _probe_reason(encoder: str, log: str, fallback: str) -> str:
    """A failed probe's cause in one line, e.g. "h264_nvenc: Cannot load libcuda.so.1 (a test encode failed)"."""
    causes = []
    for line in log.splitlines():
        text = line.strip()
        if not text or any(marker in text for marker in _FOLLOW_ON):
            continue
        while text.startswith("[") and "] " in text:  # "[h264_nvenc @ 0x55...] Cannot load ..." -> "Cannot load ..."
            text = text.split("] ", 1)[1]
        if text not in causes:
            causes.append(text)
    if not causes:
        return fallback
    return f"{encoder}: {'; '.join(causes[:2])} (a test encode failed)"


def encoder_status(preset: Preset, encoder: str) -> tuple[bool, str]:
    """Whether `encoder` encodes here with `preset`'s arguments for it, and if not why: the precondition's reason
    (no ffmpeg run), else the probe's (once per process). libx264 is taken without a probe."""
    if encoder == TRUSTED:
        return True, ""
    reason = precondition(encoder, preset)
    if reason:
        return False, reason
    input_args = preset.encoder_input_args(encoder)
    # Input-side arguments only where there are any (VAAPI), so a probe(encoder, args) stand-in keeps working.
    ok, why = (probe_encoder(encoder, preset.encoder_args(encoder), input_args=input_args) if input_args
               else probe_encoder(encoder, preset.encoder_args(encoder)))
    return ok, why


def encoder_works(preset: Preset, encoder: str) -> bool:
    """Whether `encoder` encodes here with `preset`'s arguments for it (probed once per process)."""
    return encoder_status(preset, encoder)[0]


def pick_encoder(preset: Preset) -> str:
    """The first of ``preset.encoders`` that really works on this machine.

    Raises:
        StudioError: none works (cannot happen with a working ffmpeg: presets must list libx264).
    """
    reasons = []
    for encoder in preset.encoders:
        ok, reason = encoder_status(preset, encoder)
        if ok:
            return encoder
        reasons.append(reason)
    raise StudioError(f"none of preset {preset.name!r}'s encoders works here ({'; '.join(reasons)}); "
                      "check that the imageio-ffmpeg wheel is installed intact")


def skipped_encoders(preset: Preset) -> list[str]:
    """Why each of ``preset.encoders`` before the one `pick_encoder` takes was passed over (for a run summary)."""
    reasons = []
    for encoder in preset.encoders:
        ok, reason = encoder_status(preset, encoder)
        if ok:
            break
        reasons.append(reason)
    return reasons


def check_encoder(preset: Preset, encoder: str) -> str:
    """`encoder` if the caller asked for it and it works here, else a StudioError that says why."""
    if encoder not in preset.encoder:
        raise StudioError(f"`encoder` {encoder!r} is not configured in preset {preset.name!r}; "
                          f"choose one of {', '.join(preset.encoder)}")
    ok, reason = encoder_status(preset, encoder)
    if not ok:
        raise StudioError(f"`encoder` {encoder!r} does not work on this machine ({reason}); "
                          f"leave `encoder` unset to use the first that works ({pick_encoder(preset)})")
    return encoder


def encoder_report(preset: Preset | None = None) -> list[tuple[str, bool, str]]:
    """Every video encoder Studio supports, whether it really encodes here, and if not why (for `studio doctor`).

    Args:
        preset: Whose encoder tables to probe with; None for the Standard tier (which has a table for each).
    """
    from ..presets import ENCODER_OPTIONS, load_preset

    preset = preset or load_preset("standard")
    rows = []
    for encoder in ENCODER_OPTIONS:
        if encoder in preset.encoder:
            ok, reason = encoder_status(preset, encoder)
        else:
            reason = precondition(encoder)
            ok, why = (False, "") if reason else probe_encoder(encoder)
            reason = reason or why
        rows.append((encoder, ok, reason))
    return rows


def working_encoders(preset: Preset | None = None) -> list[str]:
    """Every video encoder Studio supports that really encodes on this machine (probed, cached per process)."""
    return [encoder for encoder, ok, _ in encoder_report(preset) if ok]
