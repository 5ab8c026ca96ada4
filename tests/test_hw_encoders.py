"""Hardware encoders beyond NVENC (Quick Sync, AMF, VAAPI, VideoToolbox, AV1 NVENC): each tier's tables, each family's
own options only, validation, the cheap preconditions (no ffmpeg where the hardware cannot be) and the probe order."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from studio import StudioError, load_preset
from studio.compose import encoders
from studio.compose.encoders import (
    encoder_report,
    encoder_status,
    pick_encoder,
    precondition,
    probe_encoder,
    skipped_encoders,
)
from studio.media import Ffmpeg, ffmpeg_exe
from studio.presets import ENCODER_FAMILY, ENCODER_OPTIONS, PRESETS_DIR, REQUIRED_ENCODER_OPTIONS, TIERS

HARDWARE = [e for e in ENCODER_OPTIONS if ENCODER_FAMILY[e] != "x264"]
# The ffmpeg flags each family may emit; a flag of another family in an encoder's arguments is a mix-up.
COMMON = {"-c:v", "-pix_fmt", "-tag:v"}
FAMILY_FLAGS = {
    "x264": {"-preset", "-crf", "-tune", "-profile:v", "-threads"},
    "nvenc": {"-preset", "-rc", "-cq", "-b:v", "-tune", "-multipass", "-bf", "-spatial-aq"},
    "qsv": {"-preset", "-global_quality", "-low_power"},
    "amf": {"-usage", "-quality", "-rc", "-qp_i", "-qp_p", "-qp_b", "-bf"},
    "vaapi": {"-rc_mode", "-qp", "-compression_level", "-low_power", "-vf"},
    "videotoolbox": {"-q:v", "-prio_speed", "-realtime"},
}
# Words ffmpeg uses when it does not know an option or cannot read its value (before any hardware is touched).
OPTION_ERRORS = ("Unrecognized option", "Option not found", "Error setting option", "Unable to parse",
                 "Error applying encoder options")


def flags(args: list[str]) -> set[str]:
    return {a for a in args if a.startswith("-")}


def value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


class NoFfmpeg:
    """Stands in for `studio.media.Ffmpeg` where a test proves that no ffmpeg process is started."""

    def __init__(self, args, **kwargs):
        raise AssertionError(f"ffmpeg was started: {args}")


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """Play a machine: its platform, its CPU, its render nodes (``{"renderD128": "0x8086"}``) and its libraries."""
    dri, sysfs, libs = tmp_path / "dri", tmp_path / "sys-drm", tmp_path / "libs"
    monkeypatch.setattr(encoders, "DRI_DIR", dri)
    monkeypatch.setattr(encoders, "SYS_DRM_DIR", sysfs)
    monkeypatch.setattr(encoders, "AMF_DIRS", (str(libs),))
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)

    def play(system: str = "linux", cpu: str = "x86_64", nodes: dict[str, str | None] | None = None,
             amf_runtime: bool = False) -> None:
        monkeypatch.setattr(encoders, "_system", lambda: system)
        monkeypatch.setattr(encoders, "_machine", lambda: cpu)
        shutil.rmtree(dri, ignore_errors=True)
        shutil.rmtree(sysfs, ignore_errors=True)
        for name, vendor in (nodes or {}).items():
            dri.mkdir(exist_ok=True)
            (dri / name).touch()
            if vendor is not None:
                (sysfs / name / "device").mkdir(parents=True)
                (sysfs / name / "device" / "vendor").write_text(vendor + "\n", "ascii")
        if amf_runtime:
            libs.mkdir(exist_ok=True)
            (libs / "libamfrt64.so.1").touch()

    return play


@pytest.fixture
def probes(monkeypatch):
    """Record probes instead of running ffmpeg; the encoders named in the returned set succeed."""
    calls: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    working: set[str] = set()

    def fake(encoder, args=None, input_args=()):
        calls.append((encoder, tuple(args or ()), tuple(input_args)))
        return (True, "") if encoder in working else (False, f"{encoder}: no device (a test encode failed)")

    monkeypatch.setattr(encoders, "probe_encoder", fake)
    monkeypatch.setattr(encoders, "Ffmpeg", NoFfmpeg)
    return calls, working


def _custom(tmp_path: Path, edit, base: str = "draft") -> Path:
    text = (PRESETS_DIR / f"{base}.toml").read_text("utf-8")
    edited = edit(text)
    assert edited != text, "the edit did not apply"
    path = tmp_path / "my.toml"
    path.write_text(edited, "utf-8")
    return path


def _in_table(encoder: str, old: str, new: str):
    """An edit that replaces `old` with `new` inside [encoder.<encoder>] only."""
    def edit(text: str) -> str:
        match = re.search(rf"(?ms)^\[encoder\.{encoder}\][^\n]*\n(.*?)(?=^\[|\Z)", text)
        assert match, f"no [encoder.{encoder}] table"
        body = match.group(1)
        return text[:match.start(1)] + body.replace(old, new, 1) + text[match.end(1):]
    return edit


# -- the tier files ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tier", TIERS)
def test_every_tier_has_a_table_for_every_encoder_and_tries_hardware_before_libx264(tier):
    preset = load_preset(tier)
    assert set(preset.encoder) == set(ENCODER_OPTIONS)
    order = list(preset.encoders)
    assert order[-1] == "libx264" and len(set(order)) == len(order)
    families = [ENCODER_FAMILY[e] for e in order]
    assert families[0] == "nvenc" and families.index("x264") == len(order) - 1
    # NVENC first, then the other families, each once per codec, in one order in every tier.
    others = [f for f in families if f not in ("nvenc", "x264")]
    assert others == ["qsv", "amf", "vaapi", "videotoolbox"]
    codec = "hevc" if tier == "maximum" else "h264"
    assert all(e.startswith(codec) for e in order if ENCODER_FAMILY[e] not in ("nvenc", "x264"))
    assert "av1_nvenc" not in order  # opt-in: `--encoder av1_nvenc`
    for encoder, options in preset.encoder.items():
        assert set(REQUIRED_ENCODER_OPTIONS[encoder]) <= set(options) <= set(ENCODER_OPTIONS[encoder])


def test_quality_rises_with_the_tier_in_every_family():
    """Each family's quality setting moves the same way as the tier's x264 CRF: never worse at a higher tier."""
    quality = {"libx264": "crf", "h264_nvenc": "cq", "av1_nvenc": "cq", "h264_qsv": "global_quality", "h264_amf": "qp",
               "h264_vaapi": "qp", "h264_videotoolbox": "quality"}
    presets = [load_preset(t) for t in TIERS]
    for encoder, key in quality.items():
        values = [p.encoder[encoder][key] for p in presets]
        higher_is_better = encoder == "h264_videotoolbox"
        assert values == sorted(values, reverse=not higher_is_better), (encoder, values)
        assert len(set(values)) > 1, f"{encoder}: every tier has the same quality"
    # The tiers' hardware quality sits near their x264 CRF (QP-like scales: within 6 of it).
    for preset in presets:
        crf = preset.encoder["libx264"]["crf"]
        for encoder in ("h264_nvenc", "h264_qsv", "h264_amf", "h264_vaapi"):
            assert abs(preset.encoder[encoder][quality[encoder]] - crf) <= 6, (preset.name, encoder)


# -- each encoder's own options ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("encoder", list(ENCODER_OPTIONS))
def test_encoder_args_hold_only_that_encoders_options(tier, encoder):
    preset = load_preset(tier)
    opts = preset.encoder[encoder]
    family = ENCODER_FAMILY[encoder]
    args = preset.encoder_args(encoder)
    assert args[:2] == ["-c:v", encoder]
    own = FAMILY_FLAGS[family] | COMMON
    assert flags(args) <= own, f"{encoder} got {flags(args) - own}"
    foreign = set().union(*(f for name, f in FAMILY_FLAGS.items() if name != family)) - FAMILY_FLAGS[family]
    assert not flags(args) & foreign
    # The table's values, under this family's own flags.
    if family in ("x264", "nvenc", "qsv"):
        assert value(args, "-preset") == str(opts["preset"])
    if family == "x264":
        assert value(args, "-crf") == str(opts["crf"])
    elif family == "nvenc":
        assert value(args, "-cq") == str(opts["cq"]) and value(args, "-rc") == "vbr" and value(args, "-b:v") == "0"
        assert re.fullmatch(r"p[1-7]", value(args, "-preset"))
    elif family == "qsv":
        assert value(args, "-global_quality") == str(opts["global_quality"]) and value(args, "-pix_fmt") == "nv12"
        assert opts["preset"] in ("veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
    elif family == "amf":
        assert value(args, "-rc") == "cqp" and value(args, "-quality") == opts["quality"]
        assert value(args, "-qp_i") == value(args, "-qp_p") == str(opts["qp"])
        assert ("-qp_b" in args) == (encoder == "h264_amf")  # hevc_amf has no B-frame QP
    elif family == "vaapi":
        assert value(args, "-rc_mode") == "CQP" and value(args, "-qp") == str(opts["qp"])
        assert value(args, "-vf") == "format=nv12,hwupload" and "-pix_fmt" not in args
    else:
        assert value(args, "-q:v") == str(opts["quality"])
    if family not in ("vaapi",):
        assert "-pix_fmt" in args
    assert ("-tag:v" in args) == encoder.startswith("hevc_")
    if encoder.startswith("hevc_"):
        assert value(args, "-tag:v") == "hvc1"
    # Only VAAPI needs arguments before the input: its device.
    input_args = preset.encoder_input_args(encoder)
    if family == "vaapi":
        assert input_args == ["-vaapi_device", opts.get("device", "/dev/dri/renderD128")]
    else:
        assert input_args == []


def test_a_vaapi_device_from_the_table_reaches_the_input_args(tmp_path):
    path = _custom(tmp_path, _in_table("h264_vaapi", '# device = "/dev/dri/renderD128"',
                                       'device = "/dev/dri/renderD129"'))
    preset = load_preset(path)
    assert preset.encoder_input_args("h264_vaapi") == ["-vaapi_device", "/dev/dri/renderD129"]
    assert preset.encoder_input_args("hevc_vaapi") == ["-vaapi_device", "/dev/dri/renderD128"]
    with pytest.raises(StudioError, match=r"no \[encoder.libx265\]"):
        preset.encoder_input_args("libx265")


@pytest.mark.parametrize("edit, needle", [
    (_in_table("h264_qsv", "global_quality = 30", "global_quality = 0"),
     "[encoder.h264_qsv] `global_quality` must be a whole number from 1 to 51"),
    (_in_table("h264_qsv", 'preset = "veryfast"', 'preset = "p4"'),
     "[encoder.h264_qsv] `preset` must be one of veryfast"),
    (_in_table("h264_qsv", "global_quality = 30", "cq = 30"), "[encoder.h264_qsv] does not accept `cq`"),
    (_in_table("hevc_qsv", "global_quality = 30\n", ""), "[encoder.hevc_qsv] needs `global_quality`"),
    (_in_table("h264_amf", 'quality = "speed"', 'quality = "fast"'),
     "[encoder.h264_amf] `quality` must be one of speed"),
    (_in_table("h264_amf", "qp = 30", "qp = 30\npreset = \"p5\""), "[encoder.h264_amf] does not accept `preset`"),
    (_in_table("hevc_amf", "qp = 30", "qp = 30\nbf = 2"), "[encoder.hevc_amf] does not accept `bf`"),
    (_in_table("h264_amf", "qp = 30", "qp = 52"), "[encoder.h264_amf] `qp` must be a whole number from 0 to 51"),
    (_in_table("h264_vaapi", "qp = 30", "qp = 53"), "[encoder.h264_vaapi] `qp` must be a whole number from 0 to 52"),
    (_in_table("h264_vaapi", "qp = 30", "cq = 30"), "[encoder.h264_vaapi] does not accept `cq`"),
    (_in_table("h264_vaapi", "qp = 30", "qp = 30\nlow_power = true"),
     "[encoder.h264_vaapi] `low_power` must be a whole number from 0 to 1"),
    (_in_table("h264_vaapi", '# device = "/dev/dri/renderD128"', 'device = "/dev/dri/renderD128 -y /tmp/x"'),
     "[encoder.h264_vaapi] `device` must be a DRM render node"),
    (_in_table("h264_vaapi", '# device = "/dev/dri/renderD128"', 'device = "/etc/passwd"'),
     "`device` must be a DRM render node"),
    (_in_table("h264_vaapi", "qp = 30\n", ""), "[encoder.h264_vaapi] needs `qp`"),
    (_in_table("h264_videotoolbox", "quality = 40", "quality = 101"),
     "[encoder.h264_videotoolbox] `quality` must be a whole number from 1 to 100"),
    (_in_table("h264_videotoolbox", "quality = 40", "crf = 20"), "[encoder.h264_videotoolbox] does not accept `crf`"),
    (_in_table("av1_nvenc", "cq = 40", "cq = 64"), "[encoder.av1_nvenc] `cq` must be a whole number from 0 to 63"),
    (_in_table("h264_nvenc", "cq = 30", "cq = 52"), "[encoder.h264_nvenc] `cq` must be a whole number from 0 to 51"),
    (lambda t: re.sub(r"(?m)^encoders = .*$", 'encoders = ["h264_qsv", "libx264"]', t).replace("[encoder.h264_qsv]",
     "[encoder.unused]"),
     "lists h264_qsv but there is no [encoder.h264_qsv] table"),
])
def test_bad_hardware_options_are_refused_naming_the_key(tmp_path, edit, needle):
    with pytest.raises(StudioError) as info:
        load_preset(_custom(tmp_path, edit))
    assert needle in str(info.value) and "my.toml" in str(info.value)


def test_av1_accepts_its_own_wider_quality_scale(tmp_path):
    preset = load_preset(_custom(tmp_path, _in_table("av1_nvenc", "cq = 40", "cq = 63")))
    assert value(preset.encoder_args("av1_nvenc"), "-cq") == "63"


@pytest.mark.parametrize("tier", TIERS)
def test_ffmpeg_knows_every_option_of_qsv_amf_and_nvenc(tier):
    """The real probe parses each encoder's options and values; without the hardware the encoder fails to open only
    after that, so a misspelt option or a value ffmpeg cannot read still shows ("Unrecognized option" ...)."""
    preset = load_preset(tier)
    for encoder in preset.encoder:
        if ENCODER_FAMILY[encoder] not in ("nvenc", "qsv", "amf"):
            continue
        ok, reason = probe_encoder(encoder, preset.encoder_args(encoder), preset.encoder_input_args(encoder))
        assert ok or not any(e in reason for e in OPTION_ERRORS), reason
        assert ok or reason.startswith(f"{encoder}: ")  # the cause in a line that names the encoder


def test_the_option_check_can_fail():
    ok, reason = probe_encoder("h264_amf", ["-c:v", "h264_amf", "-quality", "fastest-ever"])
    assert not ok and any(e in reason for e in OPTION_ERRORS), reason


@pytest.mark.parametrize("encoder", ["h264_vaapi", "hevc_vaapi"])
def test_vaapi_options_are_ffmpegs_own(encoder):
    """Without a VAAPI device ffmpeg stops at the device, before it reads the encoder's options: check every flag
    against ffmpeg's own help for the encoder (and the device option against its global options) instead."""
    import subprocess

    preset = load_preset("premium")
    args, input_args = preset.encoder_args(encoder), preset.encoder_input_args(encoder)
    help_text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-h", f"encoder={encoder}"], capture_output=True,
                               text=True, timeout=30).stdout
    assert "Supported pixel formats: vaapi" in help_text  # hence the hwupload
    for flag in ("-rc_mode", "-qp", "-low_power"):
        assert re.search(rf"(?m)^  {flag} ", help_text), flag
    assert re.search(r"(?m)^     CQP ", help_text)
    full = subprocess.run([ffmpeg_exe(), "-hide_banner", "-h", "full"], capture_output=True, text=True,
                          timeout=30).stdout
    assert re.search(r"(?m)^-vaapi_device ", full) and re.search(r"(?m)^  -compression_level ", full)
    assert input_args[0] == "-vaapi_device" and "-rc_mode" in args


@pytest.mark.skipif(sys.platform != "darwin", reason="VideoToolbox encoders exist only in ffmpeg builds for macOS")
@pytest.mark.parametrize("encoder", ["h264_videotoolbox", "hevc_videotoolbox"])
def test_videotoolbox_options_are_ffmpegs_own(encoder):
    preset = load_preset("standard")
    ok, reason = probe_encoder(encoder, preset.encoder_args(encoder))
    assert ok or not any(e in reason for e in OPTION_ERRORS), reason


# -- preconditions: cheap, and they say why ----------------------------------------------------------------------------
def test_without_dev_dri_the_render_node_families_are_skipped_without_ffmpeg(machine, monkeypatch):
    """On a Linux machine with no /dev/dri (like this one) Quick Sync, AMF and VAAPI are passed over with a reason and
    no ffmpeg process at all; VideoToolbox off macOS likewise."""
    machine(system="linux", nodes={})
    monkeypatch.setattr(encoders, "Ffmpeg", NoFfmpeg)
    monkeypatch.setattr("studio.media.Ffmpeg", NoFfmpeg)
    preset = load_preset("standard")
    for encoder in HARDWARE:
        family = ENCODER_FAMILY[encoder]
        if family == "nvenc":
            continue
        ok, reason = encoder_status(preset, encoder)
        assert not ok
        if family == "videotoolbox":
            assert reason == f"{encoder}: VideoToolbox is macOS only"
        else:
            assert reason == f"{encoder}: no /dev/dri render node on this machine"


@pytest.mark.skipif(Path("/dev/dri").exists(), reason="this machine has /dev/dri; the check is for one without")
def test_this_machine_without_dev_dri_says_so():
    for encoder in ("h264_qsv", "h264_amf", "h264_vaapi"):
        assert precondition(encoder) == f"{encoder}: no /dev/dri render node on this machine"


def test_vendors_decide_qsv_amf_and_vaapi(machine):
    machine(nodes={"renderD128": "0x10de"})  # an NVIDIA-only Linux box (the GPU test machine)
    assert precondition("h264_qsv") == "h264_qsv: no Intel GPU on this machine (render nodes: " \
                                       f"{encoders.DRI_DIR / 'renderD128'} (NVIDIA))"
    assert "is an NVIDIA GPU, which has no VAAPI encoder" in precondition("h264_vaapi")
    assert precondition("h264_amf").startswith("h264_amf: no AMD GPU on this machine")
    assert precondition("h264_nvenc") == ""  # NVENC: the probe decides
    machine(nodes={"renderD128": "0x8086"})  # Intel
    assert precondition("h264_qsv") == precondition("hevc_vaapi") == ""
    assert "no AMD GPU" in precondition("hevc_amf")
    machine(nodes={"renderD128": "0x1002"})  # AMD with the open driver only
    assert precondition("h264_vaapi") == ""
    assert "libamfrt64.so.1" in precondition("h264_amf") and "h264_vaapi" in precondition("h264_amf")
    machine(nodes={"renderD128": "0x1002"}, amf_runtime=True)  # AMD with AMD's own driver
    assert precondition("h264_amf") == ""
    machine(nodes={"renderD128": None})  # no sysfs to ask: the probe decides
    assert precondition("h264_qsv") == precondition("h264_vaapi") == ""


def test_a_vaapi_device_that_is_not_there_is_named(machine, tmp_path):
    machine(nodes={"renderD128": "0x8086"})
    preset = load_preset(_custom(tmp_path, _in_table("h264_vaapi", '# device = "/dev/dri/renderD128"',
                                                     'device = "/dev/dri/renderD129"')))
    reason = precondition("h264_vaapi", preset)
    assert "renderD129 does not exist" in reason and "set `device` in [encoder.h264_vaapi]" in reason
    assert precondition("hevc_vaapi", preset) == ""  # its own table: the default node, which is there


def test_platforms_decide_videotoolbox_qsv_and_amf(machine):
    machine(system="win32")
    assert precondition("h264_qsv") == precondition("hevc_amf") == ""
    assert precondition("h264_vaapi") == "h264_vaapi: VAAPI is Linux only"
    assert precondition("h264_videotoolbox") == "h264_videotoolbox: VideoToolbox is macOS only"
    machine(system="darwin", cpu="x86_64")
    assert "needs an Apple Silicon Mac" in precondition("hevc_videotoolbox")
    assert precondition("h264_qsv") == "h264_qsv: Intel Quick Sync runs on Linux and Windows only"
    assert precondition("h264_amf") == "h264_amf: AMD AMF runs on Windows and Linux only"
    machine(system="darwin", cpu="arm64")
    assert precondition("h264_videotoolbox") == precondition("hevc_videotoolbox") == ""


# -- selection: probe order --------------------------------------------------------------------------------------------
def test_pick_encoder_still_picks_libx264_here():
    """No NVIDIA driver and no /dev/dri here: every tier falls back to libx264, and says why for each it passed."""
    if any(encoder_status(load_preset("standard"), e)[0] for e in HARDWARE):
        pytest.skip("a hardware encoder works on this machine")
    for tier in TIERS:
        preset = load_preset(tier)
        assert pick_encoder(preset) == "libx264"
        reasons = skipped_encoders(preset)
        assert [r.split(":")[0] for r in reasons] == list(preset.encoders[:-1])


def test_a_working_qsv_is_taken_in_order_and_others_are_not_probed(machine, probes):
    calls, working = probes
    machine(nodes={"renderD128": "0x8086"})
    working.add("h264_qsv")
    assert pick_encoder(load_preset("standard")) == "h264_qsv"
    assert [c[0] for c in calls] == ["h264_nvenc", "h264_qsv"]  # NVENC first; AMF, VAAPI never tried
    working.add("hevc_qsv")
    calls.clear()
    assert pick_encoder(load_preset("maximum")) == "hevc_qsv"
    assert [c[0] for c in calls] == ["hevc_nvenc", "h264_nvenc", "hevc_qsv"]
    working.add("h264_nvenc")
    assert pick_encoder(load_preset("standard")) == "h264_nvenc"  # NVENC still wins where it works


def test_vaapi_is_probed_with_its_device_and_upload(machine, probes):
    calls, working = probes
    machine(nodes={"renderD128": "0x1002"})  # AMD, open driver: QSV and AMF are passed over without a probe
    working.add("h264_vaapi")
    preset = load_preset("premium")
    assert pick_encoder(preset) == "h264_vaapi"
    assert [c[0] for c in calls] == ["h264_nvenc", "h264_vaapi"]
    _, args, input_args = calls[-1]
    assert input_args == ("-vaapi_device", "/dev/dri/renderD128")
    assert args == tuple(preset.encoder_args("h264_vaapi")) and "format=nv12,hwupload" in args
    reasons = skipped_encoders(preset)
    assert [r.split(":")[0] for r in reasons] == ["h264_nvenc", "h264_qsv", "h264_amf"]


def test_check_encoder_refuses_an_encoder_whose_hardware_is_missing(machine, probes):
    from studio.compose.encoders import check_encoder

    machine(nodes={})
    with pytest.raises(StudioError) as info:
        check_encoder(load_preset("draft"), "h264_qsv")
    assert "no /dev/dri render node" in str(info.value) and "libx264" in str(info.value)
    machine(nodes={"renderD128": "0x8086"})
    probes[1].add("h264_qsv")
    assert check_encoder(load_preset("draft"), "h264_qsv") == "h264_qsv"


def test_the_encoder_report_lists_every_encoder_with_its_reason(machine, probes):
    machine(nodes={})
    rows = encoder_report()
    assert [r[0] for r in rows] == list(ENCODER_OPTIONS)
    assert dict((e, ok) for e, ok, _ in rows)["libx264"] is True
    for encoder, ok, reason in rows:
        assert ok or reason.startswith(f"{encoder}: ")
    assert [c[0] for c in probes[0]] == ["h264_nvenc", "hevc_nvenc", "av1_nvenc"]  # the rest: no probe


# -- the timeline and the frame loop carry the input-side arguments ----------------------------------------------------
def _project(make_image):
    from studio.project import Project, Scene

    image = make_image("still.png", (320, 180))
    return Project(title="t", scenes=(Scene(id="a", narration="", visual_prompt="", duration_s=0.5, visual=image),))


def test_the_timeline_and_segment_keys_carry_the_vaapi_device(make_image, tmp_path):
    from studio.compose import build_timeline
    from studio.compose.segments import plan_segments

    project = _project(make_image)
    default = build_timeline(project, load_preset("draft"), encoder="h264_vaapi")
    assert default.encoder_input_args == ("-vaapi_device", "/dev/dri/renderD128")
    assert "format=nv12,hwupload" in default.encoder_args
    other = load_preset(_custom(tmp_path, _in_table("h264_vaapi", '# device = "/dev/dri/renderD128"',
                                                    'device = "/dev/dri/renderD129"')))
    moved = build_timeline(project, other, encoder="h264_vaapi")
    assert moved.encoder_input_args == ("-vaapi_device", "/dev/dri/renderD129")
    assert [p.key for p in plan_segments(default)] != [p.key for p in plan_segments(moved)]
    assert build_timeline(project, load_preset("draft"), encoder="libx264").encoder_input_args == ()


def test_the_frame_loop_puts_the_device_before_its_input(make_image, tmp_path, monkeypatch):
    from studio.compose import build_timeline, render
    from studio.progress import CancelToken

    started: list[list[str]] = []

    class Recorder:
        def __init__(self, args, **kwargs):
            started.append([str(a) for a in args])
            raise StudioError("recorded")

    timeline = build_timeline(_project(make_image), load_preset("draft"), encoder="h264_vaapi")
    monkeypatch.setattr(render, "Ffmpeg", Recorder)
    with pytest.raises(StudioError, match="recorded"):
        render.encode_video(timeline, tmp_path, cancel=CancelToken(), on_progress=lambda f, m: None)
    args = next(a for a in started if "pipe:0" in a)
    assert args[:2] == ["-vaapi_device", "/dev/dri/renderD128"]
    assert args.index("format=nv12,hwupload") > args.index("pipe:0")


@pytest.mark.skipif(not Path("/dev/dri").exists(), reason="needs a VAAPI or Quick Sync GPU (/dev/dri render node)")
def test_a_real_hardware_encoder_here_makes_a_playable_clip(tmp_path):
    """Where a render node exists, whichever of Quick Sync and VAAPI works encodes a real clip that ffprobe reads."""
    from .conftest import video_facts

    preset = load_preset("draft")
    tried = []
    for encoder in ("h264_qsv", "h264_vaapi"):
        ok, reason = encoder_status(preset, encoder)
        tried.append(reason)
        if not ok:
            continue
        out = tmp_path / f"{encoder}.mp4"
        ff = Ffmpeg([*preset.encoder_input_args(encoder), "-f", "lavfi", "-i",
                     "testsrc2=size=256x144:rate=10:duration=0.5", *preset.encoder_args(encoder), str(out)],
                    what=encoder)
        ff.wait()
        assert video_facts(out)["video_codec"] == "h264"
        return
    pytest.skip("no working Quick Sync or VAAPI encoder: " + "; ".join(tried))


def test_the_cpu_fallback_drops_the_vaapi_device(make_image):
    """After a hardware failure the render goes again with libx264: no `-vaapi_device` may be left before its input
    (ffmpeg would fail at the same missing device before encoding anything)."""
    from studio.compose import build_timeline
    from studio.compose.gpu import fallback_timeline

    preset = load_preset("draft")
    timeline = build_timeline(_project(make_image), preset, encoder="h264_vaapi")
    fallback = fallback_timeline(timeline, preset)
    assert fallback.encoder == "libx264" and fallback.encoder_input_args == ()
    assert "format=nv12,hwupload" not in fallback.encoder_args
