"""Render presets: the four tiers, sizes, encoder arguments (checked against ffmpeg itself), custom files, validation."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from .conftest import video_facts
from studio import StudioError, load_preset
from studio.media import run_ffmpeg
from studio.presets import ENCODER_FAMILY, ENCODER_OPTIONS, PRESETS_DIR, TIERS, available_presets

ASPECTS = ("16:9", "9:16", "1:1")
# Output heights people expect of each tier, for 16:9.
HEIGHTS = {"draft": 480, "standard": 720, "premium": 1080, "maximum": 2160}
X264_ONLY = {"-crf", "-profile:v", "-threads", "-x264-params"}
NVENC_ONLY = {"-cq", "-rc", "-multipass", "-spatial-aq", "-spatial_aq", "-tag:v"}


def flags(args: list[str]) -> set[str]:
    return {a for a in args if a.startswith("-")}


def test_the_four_tiers_load_with_sizes_for_every_aspect():
    assert set(TIERS) <= set(available_presets())
    previous_pixels = 0
    for tier in TIERS:
        preset = load_preset(tier)
        assert preset.name == tier and preset.source == PRESETS_DIR / f"{tier}.toml"
        w, h = preset.size("16:9")
        assert h == HEIGHTS[tier] and abs(w / h - 16 / 9) < 0.01
        assert preset.size("9:16") == (h, w)
        assert preset.size("1:1") == (h, h)
        for aspect in ASPECTS:
            assert all(v % 2 == 0 for v in preset.size(aspect))
        assert w * h > previous_pixels  # tiers grow
        previous_pixels = w * h
        assert "libx264" in preset.encoders and preset.transition_s <= preset.tail_s
        assert 1 <= preset.fps <= 120 and preset.providers.get("storyboard")
    assert load_preset("Draft").name == "draft"  # names are case-insensitive
    with pytest.raises(StudioError, match="`aspect`"):
        load_preset("draft").size("4:3")


@pytest.mark.parametrize("tier", TIERS)
def test_encoder_args_never_mix_encoders(tier):
    preset = load_preset(tier)
    for encoder in preset.encoder:
        if ENCODER_FAMILY[encoder] not in ("x264", "nvenc"):
            continue  # Quick Sync, AMF, VAAPI, VideoToolbox: tests/test_hw_encoders.py
        args = preset.encoder_args(encoder)
        assert args[:2] == ["-c:v", encoder]
        assert args[-2:] == ["-pix_fmt", "yuv420p"]
        options = preset.encoder[encoder]
        assert args[args.index("-preset") + 1] == str(options["preset"])
        if encoder == "libx264":
            assert not flags(args) & NVENC_ONLY
            assert args[args.index("-crf") + 1] == str(options["crf"])
        else:
            assert not flags(args) & X264_ONLY
            assert args[args.index("-cq") + 1] == str(options["cq"])
            assert re.fullmatch(r"p[1-7]", str(options["preset"]))
            assert ("-tag:v" in args) == (encoder == "hevc_nvenc")
    with pytest.raises(StudioError, match="no \\[encoder.libx265\\]"):
        preset.encoder_args("libx265")


def test_x264_args_of_every_tier_encode_a_real_clip(tmp_path):
    """ffmpeg accepts each tier's x264 arguments: a tiny clip encodes and ffprobe reads it back as H.264."""
    for tier in TIERS:
        out = tmp_path / f"{tier}.mp4"
        run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=128x72:rate=10:duration=0.5",
                    *load_preset(tier).encoder_args("libx264"), str(out)])
        facts = video_facts(out)
        assert (facts["video_codec"], facts["width"], facts["height"], facts["pix_fmt"]) == ("h264", 128, 72, "yuv420p")


def test_nvenc_args_are_options_ffmpeg_knows(tmp_path):
    """Every NVENC option a preset may set is spelled as ffmpeg spells it. Without a GPU the encoder fails to open,
    but only after ffmpeg has parsed the options, so a misspelt option ("Unrecognized option") is still caught."""
    every_option = 'preset = "p1"\ntune = "hq"\nmultipass = "qres"\nbf = 2\nspatial_aq = 1'
    custom = _custom(tmp_path, lambda t: re.sub(r'(\[encoder\.h264_nvenc\][^\n]*\n)preset = "p1"', r"\g<1>" + every_option, t))
    preset = load_preset(custom)
    assert preset.encoder["h264_nvenc"]["spatial_aq"] == 1
    for encoder in ("h264_nvenc", "hevc_nvenc"):
        args = preset.encoder_args(encoder)
        out = tmp_path / f"{encoder}.mp4"
        try:
            run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=256x144:rate=10:duration=0.3", *args, str(out)])
        except StudioError as exc:  # no working NVIDIA encoder here
            message = str(exc)
            assert "Unrecognized option" not in message and "Option not found" not in message, message
        else:  # a machine with a working NVENC: the clip must be real
            assert video_facts(out)["video_codec"] == ("h264" if encoder == "h264_nvenc" else "hevc")
    assert "-spatial-aq" in preset.encoder_args("h264_nvenc")


def _custom(tmp_path: Path, edit, base: str = "draft", name: str = "my.toml") -> Path:
    text = (PRESETS_DIR / f"{base}.toml").read_text("utf-8")
    edited = edit(text)
    assert edited != text, "the edit did not apply"
    path = tmp_path / name
    path.write_text(edited, "utf-8")
    return path


def test_a_copied_preset_file_loads_by_path(tmp_path):
    copy = tmp_path / "mine.toml"
    shutil.copy(PRESETS_DIR / "standard.toml", copy)
    preset = load_preset(copy)
    assert preset.source == copy and preset.size("16:9") == load_preset("standard").size("16:9")
    changed = _custom(tmp_path, lambda t: _crf(t.replace("fps = 30", "fps = 25"), "crf = 30"),
                      base="standard", name="slower.toml")
    preset = load_preset(str(changed))
    assert preset.fps == 25 and preset.encoder_args("libx264")[preset.encoder_args("libx264").index("-crf") + 1] == "30"
    with pytest.raises(StudioError, match="does not exist"):
        load_preset(tmp_path / "missing.toml")


def _crf(text: str, replacement: str) -> str:
    """The preset text with its libx264 `crf = N` line replaced (whatever N the shipped preset has)."""
    edited, count = re.subn(r"(?m)^crf = \d+$", lambda _: replacement, text, count=1)
    assert count == 1, "the preset has no `crf = N` line"
    return edited


def _encoders(text: str, replacement: str) -> str:
    """The preset text with its `video.encoders` list replaced."""
    return re.sub(r"(?m)^encoders = .*$", lambda _: f"encoders = {replacement}", text, count=1)


def _drop_line(prefix: str):
    def edit(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith(prefix))
    return edit


@pytest.mark.parametrize("edit, needle", [
    (_drop_line("fps ="), "`fps` is missing"),
    (_drop_line("name ="), "`name` is missing"),
    (_drop_line("bitrate_kbps"), "`audio.bitrate_kbps` is missing"),
    (lambda t: t.replace("fps = 24", "fps = 24.5"), "`fps` must be a whole number"),
    (lambda t: t.replace("fps = 24", 'fps = "24"'), "`fps`"),
    (lambda t: t.replace('"16:9" = [854, 480]', '"16:9" = [855, 480]'), 'resolution."16:9"'),
    (lambda t: t.replace('"1:1" = [480, 480]', '"1:1" = [480]'), 'resolution."1:1"'),
    (lambda t: t.replace('"9:16" = [480, 854]', '"9:16" = [32, 854]'), 'resolution."9:16"'),
    (lambda t: _crf(t, 'crf = 28\nfoo = 1'), "[encoder.libx264] does not accept `foo`"),
    (lambda t: t.replace('cq = 30', 'cq = 30\ncrf = 20', 1), "[encoder.h264_nvenc] does not accept `crf`"),
    (lambda t: _crf(t, 'crf = 28\ncq = 20'), "[encoder.libx264] does not accept `cq`"),
    (lambda t: t.replace('preset = "superfast"', 'preset = "p4"'), "[encoder.libx264] `preset`"),
    (lambda t: _crf(t, 'crf = 60'), "`crf` must be a whole number from 0 to 51"),
    (lambda t: _crf(t, ''), "[encoder.libx264] needs `crf`"),
    (lambda t: _encoders(t, '["h264_nvenc"]'), "include libx264"),
    (lambda t: _encoders(t, '["av1_magic", "libx264"]'), "av1_magic"),
    (lambda t: _encoders(t, '["libx264", ["nested"]]'), "not supported"),
    (lambda t: t.replace('transition_s = 0.4', 'transition_s = 0.9'), "`motion.transition_s`"),
    (lambda t: t.replace('ken_burns = 0.06', 'ken_burns = 2'), "`motion.ken_burns`"),
    (lambda t: re.sub(r'(?m)^storyboard = .*$', 'storyboard = "rules"', t), "[providers]"),
    (lambda t: re.sub(r'(?m)^storyboard = .*$', 'storyboard = ["gpt-9", "rules"]', t), "unknown provider(s) ['gpt-9']"),
    (lambda t: t + '\n[providers.extra]\n', "[providers]"),
    (lambda t: t.replace('[models.diffusers-image]', '[models.dall-e]'), "[models.dall-e] is not a provider"),
    (lambda t: t.replace('steps = 1', 'steps = 1\nsteps_per_second = 4'), "does not accept `steps_per_second`"),
    (lambda t: t.replace('steps = 1', 'steps = "one"'), "`steps` must be int"),
    (lambda t: t.replace('guidance_scale = 0.0', 'guidance_scale = true'), "`guidance_scale` must be float"),
    (lambda t: t.replace('model = "sd-turbo"', 'model = ["a", "b"]'), "`model` must be str"),
    (lambda t: t.replace('fps = 24', 'fps = ='), "not valid TOML"),
])
def test_bad_presets_name_the_field(tmp_path, edit, needle):
    path = _custom(tmp_path, edit)
    with pytest.raises(StudioError) as info:
        load_preset(path)
    assert needle in str(info.value)
    assert "my.toml" in str(info.value)


def test_unknown_preset_name_lists_the_tiers():
    with pytest.raises(StudioError) as info:
        load_preset("ultra")
    message = str(info.value)
    assert "unknown preset 'ultra'" in message and all(tier in message for tier in TIERS)


def test_shipped_files_only_use_known_encoder_options():
    for tier in TIERS:
        data = tomllib.loads((PRESETS_DIR / f"{tier}.toml").read_text("utf-8"))
        for encoder, options in data["encoder"].items():
            assert set(options) <= set(ENCODER_OPTIONS[encoder])
