"""Render presets: one TOML file per tier (``presets/draft.toml`` ...), validated on load.

A preset says how big and smooth the video is (resolution per aspect ratio, fps), how it is encoded (a table per
encoder: ``[encoder.libx264]``, ``[encoder.h264_nvenc]``, ``[encoder.h264_qsv]`` ... (see `ENCODER_OPTIONS`), tried in
the order of ``video.encoders``; the first that really works on this machine is used), the audio, the motion and which providers
each step prefers. Copy a file, change it and pass its path: ``--preset ./my.toml``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StudioError
from .project import ASPECTS

PRESETS_DIR = Path(__file__).resolve().parent / "presets"  # package data: found wherever Studio is installed
TIERS = ("draft", "standard", "premium", "maximum")

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
NVENC_PRESETS = tuple(f"p{i}" for i in range(1, 8))
QSV_PRESETS = ("veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
AMF_QUALITY = ("speed", "balanced", "quality")
# A VAAPI device is a DRM render node; the path goes into ffmpeg's argument list, so only this shape is accepted.
VAAPI_DEVICE = re.compile(r"/dev/dri/renderD[0-9]{1,4}")
DEFAULT_VAAPI_DEVICE = "/dev/dri/renderD128"
# Where composition may run (`Preset.compose_device`, the tier files' [compose] table).
COMPOSE_DEVICES = ("auto", "cuda", "cpu", "tensor-cpu")

# The options each encoder accepts, and a check for each: a tuple of allowed values, an inclusive (low, high) range of
# whole numbers, or a pattern a string must match. Options of one encoder are never passed to another; each family's
# own mapping to ffmpeg flags is in `Preset.encoder_args`.
_NVENC = {"preset": NVENC_PRESETS, "cq": (0, 51), "tune": ("hq", "ll", "ull"), "multipass": ("disabled", "qres", "fullres"),
          "bf": (0, 4), "spatial_aq": (0, 1)}
_QSV = {"preset": QSV_PRESETS, "global_quality": (1, 51), "low_power": (0, 1)}
_AMF = {"quality": AMF_QUALITY, "qp": (0, 51), "usage": ("transcoding", "high_quality")}
_VAAPI = {"qp": (0, 52), "compression_level": (1, 7), "low_power": (0, 1), "device": VAAPI_DEVICE}
_VIDEOTOOLBOX = {"quality": (1, 100), "prio_speed": (0, 1), "realtime": (0, 1)}
ENCODER_OPTIONS: dict[str, dict[str, Any]] = {
    "libx264": {
        "preset": X264_PRESETS,
        "crf": (0, 51),
        "tune": ("film", "animation", "grain", "stillimage", "fastdecode", "zerolatency"),
        "profile": ("baseline", "main", "high"),
        "threads": (0, 64),
    },
    "h264_nvenc": dict(_NVENC),
    "hevc_nvenc": dict(_NVENC),
    "av1_nvenc": {**_NVENC, "cq": (0, 63)},  # AV1's quality scale runs to 63
    "h264_qsv": dict(_QSV),
    "hevc_qsv": dict(_QSV),
    "h264_amf": {**_AMF, "bf": (0, 3)},
    "hevc_amf": dict(_AMF),
    "h264_vaapi": dict(_VAAPI),
    "hevc_vaapi": dict(_VAAPI),
    "h264_videotoolbox": dict(_VIDEOTOOLBOX),
    "hevc_videotoolbox": dict(_VIDEOTOOLBOX),
}
# The family of each encoder: which mapping `encoder_args` uses, which precondition `studio.compose.encoders` checks.
ENCODER_FAMILY = {"libx264": "x264", "h264_nvenc": "nvenc", "hevc_nvenc": "nvenc", "av1_nvenc": "nvenc",
                  "h264_qsv": "qsv", "hevc_qsv": "qsv", "h264_amf": "amf", "hevc_amf": "amf",
                  "h264_vaapi": "vaapi", "hevc_vaapi": "vaapi",
                  "h264_videotoolbox": "videotoolbox", "hevc_videotoolbox": "videotoolbox"}
# Where each family encodes, for run summaries and the Compose panel ("GPU (Intel Quick Sync)").
FAMILY_LABEL = {"x264": "CPU", "nvenc": "GPU (NVENC)", "qsv": "GPU (Intel Quick Sync)", "amf": "GPU (AMD AMF)",
                "vaapi": "GPU (VAAPI)", "videotoolbox": "GPU (VideoToolbox)"}
# ffmpeg's spelling of NVENC options whose TOML key differs (`-spatial_aq` is rejected: "Unrecognized option").
_NVENC_FLAGS = {"spatial_aq": "-spatial-aq"}
_REQUIRED_BY_FAMILY = {"x264": ("preset", "crf"), "nvenc": ("preset", "cq"), "qsv": ("preset", "global_quality"),
                       "amf": ("quality", "qp"), "vaapi": ("qp",), "videotoolbox": ("quality",)}
REQUIRED_ENCODER_OPTIONS = {enc: _REQUIRED_BY_FAMILY[family] for enc, family in ENCODER_FAMILY.items()}


def encoder_label(encoder: str) -> str:
    """Where `encoder` encodes, in words: "CPU", "GPU (NVENC)", "GPU (Intel Quick Sync)" ..."""
    return FAMILY_LABEL[ENCODER_FAMILY.get(encoder, "x264")]


def is_hardware_encoder(encoder: str) -> bool:
    """Whether `encoder` runs on a GPU or media engine (every supported encoder but libx264)."""
    return ENCODER_FAMILY.get(encoder, "x264") != "x264"


@dataclass(frozen=True)
class Preset:
    """A render tier, as read from its TOML file (see ``presets/standard.toml`` for every field, commented)."""

    name: str
    label: str
    summary: str
    fps: int
    resolution: dict[str, tuple[int, int]]
    encoders: tuple[str, ...]
    encoder: dict[str, dict[str, Any]]
    audio_bitrate_kbps: int
    sample_rate: int
    loudness_lufs: float
    ken_burns: float
    transition_s: float
    lead_s: float
    tail_s: float
    providers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    # Where composition makes the frames: "auto", "cuda", "cpu" or "tensor-cpu" (see `studio.compose.gpu`).
    compose_device: str = "auto"
    # True when the preset knowingly uses models whose licence is non-commercial (see studio/models.toml).
    non_commercial_ok: bool = False

    def size(self, aspect: str) -> tuple[int, int]:
        """(width, height) for an aspect ratio."""
        if aspect not in self.resolution:
            raise StudioError(f"`aspect` must be one of {', '.join(self.resolution)}, got {aspect!r}")
        return self.resolution[aspect]

    def encoder_args(self, encoder: str) -> list[str]:
        """ffmpeg output arguments for `encoder` with this preset's options for it (video only).

        Each family maps its own options to its own flags, never another's: x264 ``-preset``/``-crf``; NVENC
        ``-preset p1..p7 -rc vbr -cq``; Quick Sync ``-preset veryfast..veryslow -global_quality`` (ICQ); AMF
        ``-quality -rc cqp -qp_i/-qp_p``; VAAPI ``-rc_mode CQP -qp`` on frames uploaded by ``-vf format=nv12,hwupload``
        (the device is an input-side argument: `encoder_input_args`); VideoToolbox ``-q:v``. HEVC gets
        ``-tag:v hvc1`` so QuickTime and browsers recognise it in MP4.

        Raises:
            StudioError: the preset has no table for `encoder`.
        """
        if encoder not in self.encoder:
            raise StudioError(f"preset {self.name!r} has no [encoder.{encoder}] table")
        opts = self.encoder[encoder]
        family = ENCODER_FAMILY[encoder]
        args = ["-c:v", encoder]
        pix_fmt = "yuv420p"
        if family == "x264":
            args += ["-preset", str(opts["preset"]), "-crf", str(opts["crf"])]
            for key in ("tune", "profile", "threads"):
                if key in opts:
                    args += [f"-{key}" if key != "profile" else "-profile:v", str(opts[key])]
        elif family == "nvenc":  # constant-quality VBR; `-cq` needs `-rc vbr` and a zero bitrate target
            args += ["-preset", str(opts["preset"]), "-rc", "vbr", "-cq", str(opts["cq"]), "-b:v", "0"]
            for key in ("tune", "multipass", "bf", "spatial_aq"):
                if key in opts:
                    args += [_NVENC_FLAGS.get(key, f"-{key}"), str(opts[key])]
        elif family == "qsv":  # `-global_quality` without a bitrate selects ICQ (intelligent constant quality)
            args += ["-preset", str(opts["preset"]), "-global_quality", str(opts["global_quality"])]
            if "low_power" in opts:
                args += ["-low_power", str(opts["low_power"])]
            pix_fmt = "nv12"  # the QSV encoders take nv12 (or QSV surfaces), not yuv420p
        elif family == "amf":  # constant QP for I and P (and B) frames; `-quality` is the speed/quality trade-off
            if "usage" in opts:
                args += ["-usage", str(opts["usage"])]
            qp = str(opts["qp"])
            args += ["-quality", str(opts["quality"]), "-rc", "cqp", "-qp_i", qp, "-qp_p", qp]
            if encoder == "h264_amf":
                args += ["-qp_b", qp]
                if "bf" in opts:
                    args += ["-bf", str(opts["bf"])]
        elif family == "vaapi":  # frames are uploaded to the device (see `encoder_input_args`) and encoded there
            args += ["-rc_mode", "CQP", "-qp", str(opts["qp"])]
            for key in ("compression_level", "low_power"):
                if key in opts:
                    args += [f"-{key}", str(opts[key])]
            args += ["-vf", "format=nv12,hwupload"]
            pix_fmt = None  # the encoder's input is VAAPI surfaces: hwupload sets the format
        else:  # VideoToolbox: constant quality 1..100 (higher is better), Apple Silicon only
            args += ["-q:v", str(opts["quality"])]
            for key in ("prio_speed", "realtime"):
                if key in opts:
                    args += [f"-{key}", str(opts[key])]
        if encoder.startswith("hevc_"):
            args += ["-tag:v", "hvc1"]  # so QuickTime and browsers recognise HEVC in MP4
        if pix_fmt is not None:
            args += ["-pix_fmt", pix_fmt]
        return args

    def encoder_input_args(self, encoder: str) -> list[str]:
        """ffmpeg arguments `encoder` needs before the first input (global or input side): for VAAPI the device
        (``-vaapi_device /dev/dri/renderD128``, or the table's `device`); empty for every other encoder.

        Raises:
            StudioError: the preset has no table for `encoder`.
        """
        if encoder not in self.encoder:
            raise StudioError(f"preset {self.name!r} has no [encoder.{encoder}] table")
        if ENCODER_FAMILY[encoder] == "vaapi":
            return ["-vaapi_device", str(self.encoder[encoder].get("device", DEFAULT_VAAPI_DEVICE))]
        return []


def available_presets() -> list[str]:
    """Names of the presets shipped in ``presets/``, tiers first, from fastest to best."""
    names = {p.stem for p in PRESETS_DIR.glob("*.toml")}
    return [t for t in TIERS if t in names] + sorted(names - set(TIERS))


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a preset by tier name (``draft``, ``standard``, ``premium``, ``maximum``) or from a TOML file's path.

    Raises:
        StudioError: unknown name, missing file, or a field that is missing or out of range (named in the message).
    """
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise StudioError(f"preset file {path} does not exist")
    else:
        path = PRESETS_DIR / f"{text.lower()}.toml"
        if not path.is_file():
            raise StudioError(f"unknown preset {text!r}; choose one of {', '.join(available_presets())}, or pass a .toml file's path")
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudioError(f"preset {path} is not valid TOML: {exc}") from exc
    return _parse(data, path)


def _parse(data: dict, path: Path) -> Preset:
    where = f"preset {path.name}"

    def get(table: dict, key: str, kind: type | tuple, context: str) -> Any:
        if key not in table:
            raise StudioError(f"{where}: `{context}{key}` is missing")
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise StudioError(f"{where}: `{context}{key}` must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def number(table: dict, key: str, lo: float, hi: float, context: str, default: float | None = None) -> float:
        if key not in table and default is not None:
            return default
        value = get(table, key, (int, float), context)
        if not lo <= value <= hi:
            raise StudioError(f"{where}: `{context}{key}` must be between {lo} and {hi}, got {value}")
        return float(value)

    name = get(data, "name", str, "")
    fps = int(number(data, "fps", 1, 120, ""))
    if fps != data["fps"]:
        raise StudioError(f"{where}: `fps` must be a whole number, got {data['fps']}")

    res_table = get(data, "resolution", dict, "")
    resolution = {}
    for aspect in ASPECTS:
        size = res_table.get(aspect)
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
            raise StudioError(f"{where}: `resolution.\"{aspect}\"` must be [width, height], got {size!r}")
        w, h = size
        if not (64 <= w <= 7680 and 64 <= h <= 7680) or w % 2 or h % 2:
            raise StudioError(f"{where}: `resolution.\"{aspect}\"` must be even numbers between 64 and 7680, got {w}x{h}")
        resolution[aspect] = (w, h)

    video = get(data, "video", dict, "")
    encoders = tuple(get(video, "encoders", list, "video."))
    enc_tables = get(data, "encoder", dict, "")
    if not encoders or "libx264" not in encoders:
        raise StudioError(f"{where}: `video.encoders` must list encoders to try in order and include libx264 (works everywhere)")
    encoder_opts: dict[str, dict[str, Any]] = {}
    for enc in encoders:
        if not isinstance(enc, str) or enc not in ENCODER_OPTIONS:
            raise StudioError(f"{where}: encoder {enc!r} is not supported; supported: {', '.join(ENCODER_OPTIONS)}")
        if not isinstance(enc_tables.get(enc), dict):
            raise StudioError(f"{where}: `video.encoders` lists {enc} but there is no [encoder.{enc}] table")
    for enc, opts in enc_tables.items():
        if enc not in ENCODER_OPTIONS or not isinstance(opts, dict):
            raise StudioError(f"{where}: [encoder.{enc}] is not a supported encoder table; supported: {', '.join(ENCODER_OPTIONS)}")
        for key, value in opts.items():
            rule = ENCODER_OPTIONS[enc].get(key)
            if rule is None:
                raise StudioError(f"{where}: [encoder.{enc}] does not accept `{key}`; it accepts {', '.join(ENCODER_OPTIONS[enc])}")
            if isinstance(rule, re.Pattern):
                if not isinstance(value, str) or not rule.fullmatch(value):
                    raise StudioError(f"{where}: [encoder.{enc}] `{key}` must be a DRM render node such as "
                                      f"\"{DEFAULT_VAAPI_DEVICE}\", got {value!r}")
            elif isinstance(rule, tuple) and len(rule) == 2 and all(isinstance(r, int) for r in rule):
                if not isinstance(value, int) or isinstance(value, bool) or not rule[0] <= value <= rule[1]:
                    raise StudioError(f"{where}: [encoder.{enc}] `{key}` must be a whole number from {rule[0]} to {rule[1]}, got {value!r}")
            elif isinstance(value, bool) or value not in rule:
                raise StudioError(f"{where}: [encoder.{enc}] `{key}` must be one of {', '.join(rule)}, got {value!r}")
        for key in REQUIRED_ENCODER_OPTIONS[enc]:
            if key not in opts:
                raise StudioError(f"{where}: [encoder.{enc}] needs `{key}`")
        encoder_opts[enc] = dict(opts)

    audio = get(data, "audio", dict, "")
    motion = data.get("motion", {})
    timing = data.get("timing", {})
    providers = data.get("providers", {})
    if not isinstance(providers, dict) or not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in providers.values()):
        raise StudioError(f"{where}: [providers] must map a step to a list of provider names, e.g. narrator = [\"piper\", \"espeak\"]")
    _check_providers(providers, where)
    models = _check_models(data.get("models", {}), where)
    non_commercial_ok = data.get("non_commercial_ok", False)
    if not isinstance(non_commercial_ok, bool):
        raise StudioError(f"{where}: `non_commercial_ok` must be true or false, got {non_commercial_ok!r}")
    compose_table = data.get("compose", {})
    if not isinstance(compose_table, dict) or set(compose_table) - {"device"}:
        raise StudioError(f"{where}: [compose] accepts only `device` (one of {', '.join(COMPOSE_DEVICES)})")
    compose_device = compose_table.get("device", "auto")
    if compose_device not in COMPOSE_DEVICES:
        raise StudioError(f"{where}: `compose.device` must be one of {', '.join(COMPOSE_DEVICES)}, got {compose_device!r}")
    transition_s = number(motion, "transition_s", 0.0, 3.0, "motion.", 0.5)
    tail_s = number(timing, "tail_s", 0.0, 5.0, "timing.", 0.6)
    if transition_s > tail_s:
        raise StudioError(f"{where}: `motion.transition_s` ({transition_s}) must not exceed `timing.tail_s` ({tail_s}), "
                          "or the next scene would talk over the end of this one")
    preset = Preset(
        name=name,
        label=str(data.get("label", name.title())),
        summary=str(data.get("summary", "")),
        fps=fps,
        resolution=resolution,
        encoders=encoders,
        encoder=encoder_opts,
        audio_bitrate_kbps=int(number(audio, "bitrate_kbps", 32, 512, "audio.")),
        sample_rate=int(number(audio, "sample_rate", 8000, 96000, "audio.", 48000)),
        loudness_lufs=number(audio, "loudness_lufs", -40, -5, "audio.", -16),
        ken_burns=number(motion, "ken_burns", 0.0, 0.5, "motion.", 0.08),
        transition_s=transition_s,
        lead_s=number(timing, "lead_s", 0.0, 5.0, "timing.", 0.25),
        tail_s=tail_s,
        providers={k: tuple(v) for k, v in providers.items()},
        models=models,
        source=path,
        compose_device=compose_device,
        non_commercial_ok=non_commercial_ok,
    )
    _warn_licences(preset)
    return preset


def _warn_licences(preset: Preset) -> None:
    """Log (once per load) the non-commercial models a preset uses without saying so (the shipped presets' test fails
    on them)."""
    import logging

    from .catalog import licence_problems

    for problem in licence_problems(preset):
        logging.getLogger("studio").warning("%s: check the licence before commercial use", problem)


def _check_providers(providers: dict, where: str) -> None:
    """Every step named in [providers] exists, and so does every provider in its list."""
    from . import providers as registry

    for step, names in providers.items():
        if step not in registry.KINDS:
            raise StudioError(f"{where}: [providers] has an unknown step `{step}`; steps: {', '.join(registry.KINDS)}")
        known = registry.names(step)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise StudioError(f"{where}: [providers] `{step}` names unknown provider(s) {unknown}; known: {', '.join(known)}")


def _check_models(models: Any, where: str) -> dict[str, dict[str, Any]]:
    """[models.<provider>] tables: options for a provider's factory (model ids, steps, voice ...), checked against the
    factory's own parameters and their types, so a typo fails on load and not in the middle of a render."""
    import inspect
    import typing

    from . import providers as registry

    if not isinstance(models, dict):
        raise StudioError(f"{where}: [models] must hold one table per provider, e.g. [models.bark] model = \"suno/bark\"")
    checked: dict[str, dict[str, Any]] = {}
    owners = {name: kind for kind in registry.KINDS for name in registry.names(kind)}
    for provider, options in models.items():
        if provider not in owners:
            raise StudioError(f"{where}: [models.{provider}] is not a provider; providers: {', '.join(sorted(owners))}")
        if not isinstance(options, dict):
            raise StudioError(f"{where}: [models.{provider}] must be a table of options, e.g. model = \"org/name\"")
        factory = registry.registration(owners[provider], provider).factory
        params = {n: p for n, p in inspect.signature(factory).parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        try:
            hints = typing.get_type_hints(factory)
        except Exception:  # an annotation that cannot be evaluated: check names only
            hints = {}
        for key, value in options.items():
            if key not in params:
                raise StudioError(f"{where}: [models.{provider}] does not accept `{key}`; it accepts "
                                  f"{', '.join(params) or 'no options'}")
            hint = hints.get(key)
            if hint is not None and not _matches(value, hint):
                raise StudioError(f"{where}: [models.{provider}] `{key}` must be {_type_name(hint)}, got {value!r}")
        checked[provider] = {key: _resolve(value, provider, key, where) for key, value in options.items()}
    return checked


def _resolve(value: Any, provider: str, key: str, where: str) -> Any:
    """A catalogue model's short name (``model = "qwen3-0.6b"``) becomes its hub id; other values pass unchanged."""
    from .catalog import OPTIONS, resolve_option

    if key in OPTIONS and isinstance(value, str):
        return resolve_option(value, provider=provider, option=key, where=f"{where}: [models.{provider}]")
    return value


def _matches(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a parameter's type hint (int is accepted for float; arrays for lists and tuples)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin is tuple and args and len(args) != len(value) and Ellipsis not in typing.get_args(hint):
            return False
        return not args or all(_matches(v, args[0] if len(args) == 1 or origin is not tuple else args[i])
                               for i, v in enumerate(value))
    return isinstance(hint, type) and isinstance(value, hint)


def _type_name(hint: Any) -> str:
    import typing

    args = typing.get_args(hint)
    if args and typing.get_origin(hint) not in (list, tuple):
        return " or ".join(_type_name(a) for a in args)
    return "none" if hint is type(None) else getattr(hint, "__name__", str(hint))
