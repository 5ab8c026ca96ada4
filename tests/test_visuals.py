"""Step 3, visuals: the painter contract, the cards painter's looks, the local painter's checks, and illustrate()."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import studio
from studio import Cancelled, CancelToken, Project, Scene, StudioError, load_preset
from studio.assets import AssetStore
from studio.providers import create, names
from studio.visuals import illustrate
from studio.visuals.cards import (CAPTION_BAND, LAYOUTS, MIN_CONTRAST, card_text, contrast_ratio, design_card,
                                  relative_luminance, render_card)

try:  # tests/ as a package (tests/__init__.py) or as a plain folder on sys.path
    from .conftest import ffprobe
except ImportError:
    from conftest import ffprobe

SIZES = {"16:9": (320, 180), "9:16": (180, 320), "1:1": (240, 240)}
PROMPTS = ["coffee cherries on a shrub, tropical hillside", "a cup of coffee", "green beans in jute sacks",
           "the roaster, heat and smoke", "ocean freight at dawn", "a barista pouring milk", "volcanic soil",
           "a map of the tropics"]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def paint(painter_name: str, scene: Scene, out: Path, *, index: int = 0, size=(320, 180), style: str = "",
          project_seed: int = 0, options: dict | None = None, **extra) -> Path:
    painter, _ = create("painter", painter_name, **(options or {}))
    return painter.paint(scene, index=index, size=size, style=style, project_seed=project_seed, out=out, **extra)


# -- the contract, for every registered painter ------------------------------------------------------------------------
def _contract_cards(tmp_path, make_image, make_clip):
    scene = Scene("s1", "The sun rises over the hills.", "sunrise over the hills, warm light")
    for aspect, size in SIZES.items():
        out = paint("cards", scene, tmp_path / f"card-{aspect.replace(':', 'x')}.png", size=size)
        with Image.open(out) as image:
            image.load()
            assert image.format == "PNG" and image.size == size, aspect
        assert pixels(out).std() > 5  # a picture, not a flat colour


def _contract_local(tmp_path, make_image, make_clip):
    source = make_image("photo.png", size=(300, 200))
    out = paint("local", Scene("s1", "x", media=str(source)), tmp_path / "copy.png")
    with Image.open(out) as image:
        image.load()
        assert image.size == (300, 200)  # the source's size: fitting is the compositor's job
    assert np.array_equal(pixels(out), pixels(source))

    clip = make_clip("clip.mp4", size=(160, 120), duration_s=0.5)
    out = paint("local", Scene("s2", "x", media=str(clip)), tmp_path / "copy.mp4", index=1)
    video = [s for s in ffprobe(out)["streams"] if s["codec_type"] == "video"]
    assert video and (int(video[0]["width"]), int(video[0]["height"])) == (160, 120)
    assert float(ffprobe(out)["format"]["duration"]) == pytest.approx(0.5, abs=0.1)


def _contract_diffusers_image(tmp_path, make_image, make_clip, options):
    # On a tiny random-weight Stable Diffusion: the file is right, not the picture (the model paints noise).
    scene = Scene("s1", "The sun rises over the hills.", "sunrise over the hills, warm light", seed=2)
    for aspect, size in SIZES.items():
        out = paint("diffusers-image", scene, tmp_path / f"image-{aspect.replace(':', 'x')}.png", size=size,
                    options=options)
        with Image.open(out) as image:
            image.load()
            assert image.format == "PNG" and image.size == size and image.mode == "RGB", aspect
        assert pixels(out).std() > 5  # not a flat colour
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image-16x9.png", "image-1x1.png", "image-9x16.png"]


def _contract_diffusers_video(tmp_path, make_image, make_clip, options):
    scene = Scene("s1", "The sun rises over the hills.", "sunrise over the hills", seed=2, duration_s=2.5)
    for aspect, size in SIZES.items():
        out = paint("diffusers-video", scene, tmp_path / f"clip-{aspect.replace(':', 'x')}.mp4", size=size,
                    options=options)
        info = ffprobe(out)
        video = [s for s in info["streams"] if s["codec_type"] == "video"]
        assert len(video) == 1 and len(info["streams"]) == 1, "one video stream, no audio"
        assert video[0]["codec_name"] == "h264" and (int(video[0]["width"]), int(video[0]["height"])) == size
        assert float(info["format"]["duration"]) == pytest.approx(2.5, abs=0.13)  # looped to the scene's length
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-16x9.mp4", "clip-1x1.mp4", "clip-9x16.mp4"]


CONTRACT_CASES = {"cards": _contract_cards, "local": _contract_local, "diffusers-image": _contract_diffusers_image,
                  "diffusers-video": _contract_diffusers_video}


@pytest.mark.parametrize("name", names("painter"))
def test_painter_contract(name, tmp_path, make_image, make_clip, tiny_models):
    if name not in CONTRACT_CASES:
        pytest.fail(f"painter {name!r} is registered but has no contract case in CONTRACT_CASES")
    options = tiny_models.options(name)  # model painters run on tiny random-weight models
    painter, _ = create("painter", name, **options)
    assert painter.name == name and painter.model and isinstance(painter.suffix, str)
    case = CONTRACT_CASES[name]
    if options:
        case(tmp_path, make_image, make_clip, options)
    else:
        case(tmp_path, make_image, make_clip)


# -- cards -------------------------------------------------------------------------------------------------------------
def test_cards_scenes_differ_and_neighbours_never_share_layout_or_palette(tmp_path):
    scenes = [Scene(f"s{i}", "narration", prompt, seed=i) for i, prompt in enumerate(PROMPTS)]
    designs = [design_card(s, index=i, project_seed=7) for i, s in enumerate(scenes)]
    for a, b in zip(designs, designs[1:]):
        assert a.layout != b.layout and a.palette.id != b.palette.id
    assert len({d.layout for d in designs}) == len(LAYOUTS)  # 8 scenes use every layout
    images = [pixels(paint("cards", s, tmp_path / f"{i}.png", index=i, project_seed=7)) for i, s in enumerate(scenes)]
    diffs = [mean_diff(images[i], images[j]) for i in range(len(images)) for j in range(i + 1, len(images))]
    assert min(diffs) > 12, f"two cards look alike (mean abs difference {min(diffs):.1f})"


@pytest.mark.parametrize("style", ["", "dark moody", "flat pastel illustration", "warm", "cool", "black and white",
                                   "vivid"])
def test_cards_neighbours_differ_for_every_style(style):
    scene = Scene("s1", "narration", "the same prompt everywhere")
    designs = [design_card(scene, index=i, style=style, project_seed=3) for i in range(30)]
    for a, b in zip(designs, designs[1:]):
        assert a.layout != b.layout and a.palette.id != b.palette.id


def test_cards_deterministic_and_seeded(tmp_path):
    scene = Scene("s1", "narration", "lanterns at night, a quiet street", seed=5)
    first = pixels(paint("cards", scene, tmp_path / "a.png", index=2, project_seed=11))
    again = pixels(paint("cards", scene, tmp_path / "b.png", index=2, project_seed=11))
    assert np.array_equal(first, again)
    other_project = pixels(paint("cards", scene, tmp_path / "c.png", index=2, project_seed=12))
    assert mean_diff(first, other_project) > 8
    reseeded = dataclasses.replace(scene, seed=6)
    other_scene_seed = pixels(paint("cards", reseeded, tmp_path / "d.png", index=2, project_seed=11))
    assert not np.array_equal(first, other_scene_seed)


def test_cards_style_words_nudge_the_palette():
    scene = Scene("s1", "narration", "a harbour")
    dark = design_card(scene, index=0, style="dark", project_seed=1).palette
    pastel = design_card(scene, index=0, style="pastel", project_seed=1).palette
    mono = design_card(scene, index=0, style="monochrome", project_seed=1).palette
    assert relative_luminance(np.array(dark.background[0])) < 0.06
    assert relative_luminance(np.array(pastel.background[0])) > 0.45
    for colour in mono.background:
        assert max(colour) - min(colour) < 20  # greys, barely tinted


def test_card_text_prompt_and_narration_fallback():
    prompt = "coffee cherries on a shrub, tropical hillside, morning light, 4k, in the distance"
    assert card_text(Scene("s", "n", prompt)) == ("coffee cherries on a shrub", "tropical hillside · morning light")
    assert card_text(Scene("s", "n", "sun, hills")) == ("sun · hills", "")
    assert card_text(Scene("s", "n", "coffee beans, cup, steam, table")) == ("coffee beans · cup · steam", "table")
    # No visual prompt: the narration's four longest words (ties: the earlier word), in the narration's order.
    narration = "Coffee plants love altitude, steady rain and volcanic soil."
    assert card_text(Scene("s", narration, "")) == ("Coffee plants altitude volcanic", "")
    tricky = "It's 50% {off}: [a] \\b ; ünïcödé"
    assert card_text(Scene("s", "n", tricky + ", more")) == (tricky, "more")


@pytest.mark.parametrize("style", ["", "dark", "pastel", "mono", "vivid"])
def test_cards_type_is_drawn_readable_and_above_the_caption_band(style):
    size = (480, 270)
    band_top = round(size[1] * (1 - CAPTION_BAND))
    for index in range(len(LAYOUTS)):
        scene = Scene(f"s{index}", "narration", f"harvest number {index}, by hand")
        design = design_card(scene, index=index, style=style, project_seed=index)
        card = render_card(design, size)
        bare = render_card(dataclasses.replace(design, headline="", subline=""), size)
        other = render_card(dataclasses.replace(design, headline="something else entirely", subline=""), size)
        image, blank = np.asarray(card.image), np.asarray(bare.image)
        x0, y0, x1, y1 = card.text_box
        assert y1 <= band_top
        # The lower band is exactly the background: no type, no panel, no shadow there.
        assert np.array_equal(image[band_top:], blank[band_top:])
        # The words change the picture where they are, and other words change it again.
        assert mean_diff(image[y0:y1, x0:x1], blank[y0:y1, x0:x1]) > 10, design.layout
        assert mean_diff(image[y0:y1, x0:x1], np.asarray(other.image)[y0:y1, x0:x1]) > 8, design.layout
        # WCAG: the ink against every pixel of the backdrop behind the words (the card without its letters: panel and
        # shadow included) is at least 4.5:1, and the letters really are in that ink.
        backdrop = np.asarray(render_card(design, size, draw_glyphs=False).image)[y0:y1, x0:x1]
        ink_l = float(relative_luminance(np.array(card.ink)))
        worst = min(contrast_ratio(ink_l, float(lum)) for lum in np.unique(relative_luminance(backdrop)))
        assert worst >= MIN_CONTRAST, f"{design.layout}/{design.palette.id}: contrast {worst:.2f}"
        inked = (np.abs(image[y0:y1, x0:x1].astype(np.int16) - np.array(card.ink)).max(axis=-1) <= 2).sum()
        assert inked > 150, f"{design.layout}: hardly any pixel has the ink's colour"
        assert card.contrast >= MIN_CONTRAST


def test_cards_words_are_legible_to_ocr(tmp_path):
    exe = shutil.which("tesseract")
    assert exe, "tesseract is missing: the test set-up installs Debian's tesseract-ocr"
    scene = Scene("s1", "narration", "Roasted coffee beans")
    card = render_card(design_card(scene, index=3, project_seed=2), (854, 480))
    card.image.crop(card.text_box).save(tmp_path / "text.png")
    out = subprocess.run([exe, str(tmp_path / "text.png"), "stdout"], capture_output=True, text=True, timeout=60)
    assert "coffee" in out.stdout.lower(), out.stdout


def test_cards_tricky_text_and_extreme_lengths():
    size = (320, 180)
    for prompt in ["It's 50% {off}: [a] \\b ; ünïcödé — 東京", "x" * 200, "a " * 120, "Ω"]:
        design = design_card(Scene("s", "n", prompt), index=0, project_seed=0)
        card = render_card(design, size)
        bare = render_card(dataclasses.replace(design, headline="", subline=""), size)
        x0, y0, x1, y1 = card.text_box
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= round(size[1] * (1 - CAPTION_BAND))
        assert mean_diff(np.asarray(card.image)[y0:y1, x0:x1], np.asarray(bare.image)[y0:y1, x0:x1]) > 3
    # A scene with no words at all still gets a card (no type).
    card = render_card(design_card(Scene("s", "", ""), index=0), size)
    assert card.text_box is None and np.asarray(card.image).std() > 3


def test_cards_4k(tmp_path):
    scene = Scene("s1", "narration", "the whole journey ends in your cup, enjoy it slowly")
    started = time.process_time()
    out = paint("cards", scene, tmp_path / "big.png", index=0, size=(3840, 2160))
    cpu_s = time.process_time() - started
    with Image.open(out) as image:
        image.load()
        assert image.size == (3840, 2160)
    assert cpu_s < 4.0, f"a 4K card took {cpu_s:.1f} s of CPU (about 0.5-0.8 s expected)"


# -- local -------------------------------------------------------------------------------------------------------------
def test_local_applies_exif_orientation_and_normalises_other_formats(tmp_path, make_image):
    source = make_image("photo.png", size=(300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    with Image.open(source) as image:
        image.convert("RGB").save(tmp_path / "phone.jpg", quality=90, exif=exif)
        image.save(tmp_path / "scan.bmp")
    out = paint("local", Scene("s1", "x", media="phone.jpg"), tmp_path / "phone-asset.jpg", media_root=tmp_path)
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.size == (200, 300)
        assert image.getexif().get(0x0112, 1) == 1
    out = paint("local", Scene("s2", "x", media="scan.bmp"), tmp_path / "scan-asset.png", media_root=tmp_path)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (300, 200)
    assert np.array_equal(pixels(out), pixels(tmp_path / "scan.bmp"))
    with pytest.raises(StudioError, match=r"`out` must end in \.png"):
        paint("local", Scene("s3", "x", media="scan.bmp"), tmp_path / "wrong.bmp", media_root=tmp_path)


def test_local_follows_symlinks_and_refuses_devices(tmp_path, make_image):
    source = make_image("real.png", size=(64, 48))
    (tmp_path / "link.png").symlink_to(source)
    out = paint("local", Scene("s1", "x", media=str(tmp_path / "link.png")), tmp_path / "linked.png")
    assert np.array_equal(pixels(out), pixels(source))
    with pytest.raises(StudioError, match=r"scene 1 \(id s2\): media file /dev/null .*not a regular file"):
        paint("local", Scene("s2", "x", media="/dev/null"), tmp_path / "null.png")


# -- illustrate() ------------------------------------------------------------------------------------------------------
def three_scenes(tmp_path: Path, **fields) -> Project:
    scenes = (Scene("a1", "The sun rises.", "sunrise over hills", seed=1),
              Scene("b2", "Birds wake up.", "birds on a wire"),
              Scene("c3", "The town stirs.", "", seed=3))
    return Project("Morning", scenes, seed=9, **fields).save(tmp_path / "proj")


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".part" in p.name]


def test_illustrate_paints_reuses_and_repaints_only_the_edited_scene(tmp_path):
    project = three_scenes(tmp_path)
    before = project.to_dict()
    preset = load_preset("draft")
    store = AssetStore(project.assets_dir)
    progress = []
    done = illustrate(project, preset=preset, store=store, on_progress=lambda f, m: progress.append((f, m)))
    assert project.to_dict() == before and project.notes == ()  # the input is not changed
    assert store.made == 3 and store.reused == 0
    for scene in done.scenes:
        assert scene.visual is not None and scene.visual.parent == project.assets_dir
        with Image.open(scene.visual) as image:
            assert image.size == preset.size("16:9")
    assert [f for f, _ in progress] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert sum(n.startswith("painter: cards") for n in done.notes) == 1

    again = illustrate(done, preset=preset, store=store)
    assert (store.made, store.reused) == (3, 3)
    assert [s.visual for s in again.scenes] == [s.visual for s in done.scenes]
    assert again.notes == done.notes  # the note is added once

    edited = illustrate(done.edit_scene("b2", visual_prompt="birds in flight"), preset=preset, store=store)
    assert (store.made, store.reused) == (4, 5)
    changed = [a.visual != b.visual for a, b in zip(done.scenes, edited.scenes)]
    assert changed == [False, True, False]

    # The project's style and the frame size are part of every card's key.
    styled = illustrate(dataclasses.replace(done, style="dark"), preset=preset, store=store)
    assert all(a.visual != b.visual for a, b in zip(done.scenes, styled.scenes))
    square = illustrate(done, size=(200, 200), store=store, only=["a1"])
    assert square.scenes[0].visual != done.scenes[0].visual and square.scenes[1].visual == done.scenes[1].visual
    with Image.open(square.scenes[0].visual) as image:
        assert image.size == (200, 200)


def test_illustrate_uses_local_media(tmp_path, make_image, make_clip):
    project = three_scenes(tmp_path)
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(make_image("photo.png", size=(120, 90)), media / "photo.png")
    shutil.copy(make_clip("clip.mp4", size=(96, 64), duration_s=0.4), media / "clip.mp4")
    project = project.edit_scene("a1", media="photo.png").edit_scene("c3", media=str(media / "clip.mp4"))
    store = AssetStore(project.assets_dir)
    done = illustrate(project, preset="draft", media_root=media, store=store)
    photo, card, clip = (s.visual for s in done.scenes)
    assert photo.suffix == ".png" and photo.read_bytes() == (media / "photo.png").read_bytes()
    assert clip.suffix == ".mp4" and clip.read_bytes() == (media / "clip.mp4").read_bytes()
    with Image.open(card) as image:
        assert image.size == (854, 480)
    assert any("local painter" in note and "1, 3" in note for note in done.notes)
    illustrate(done, preset="draft", media_root=media, store=store)
    assert store.reused == 3


def _bad_media(kind: str, folder: Path, make_image) -> tuple[str, str]:
    """(media name, expected message part) for one kind of bad file."""
    if kind == "missing":
        return "photo.png", "media file photo.png does not exist"
    if kind == "random bytes":
        (folder / "noise.png").write_bytes(np.random.default_rng(0).bytes(4000))
        return "noise.png", "media file noise.png is not a readable image .*: replace it"
    if kind == "truncated png":
        data = make_image("whole.png", size=(200, 150)).read_bytes()
        (folder / "cut.png").write_bytes(data[: len(data) // 2])
        return "cut.png", "media file cut.png is not a readable image"
    if kind == "wrong suffix":
        (folder / "notes.xyz").write_text("hello")
        return "notes.xyz", r"media file notes.xyz has an unsupported file type \.xyz; use one of .*\.png"
    if kind == "folder":
        (folder / "photos").mkdir()
        return "photos", "media file photos is a folder"
    if kind == "huge image":  # a valid PNG header that claims 12000 x 12000 pixels (a decompression bomb)
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0)
        data = zlib.compress(bytes(1000))
        (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data))
        return "huge.png", r"media file huge.png is too large .*: scale it down"
    if kind == "video without frames":
        (folder / "empty.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
        return "empty.mp4", "media file empty.mp4 is not a readable video"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "random bytes", "truncated png", "wrong suffix", "folder", "huge image",
                                  "video without frames"])
def test_illustrate_bad_media_names_the_scene(kind, tmp_path, make_image):
    project = three_scenes(tmp_path)
    media = tmp_path / "media"
    media.mkdir()
    name, message = _bad_media(kind, media, make_image)
    project = project.edit_scene("b2", media=name)
    with pytest.raises(StudioError, match=rf"^scene 2 \(id b2\): {message}"):
        illustrate(project, preset="draft", media_root=media)
    assert no_temp_files(project.folder)


def test_illustrate_checks_its_arguments(tmp_path):
    project = three_scenes(tmp_path)
    with pytest.raises(StudioError, match="unknown painter 'nope'"):
        illustrate(project, preset="draft", painter="nope")
    with pytest.raises(StudioError, match="no folder"):
        illustrate(dataclasses.replace(project, folder=None), preset="draft")
    with pytest.raises(StudioError, match="`preset` or `size`"):
        illustrate(project)
    with pytest.raises(StudioError, match="`size` must be"):
        illustrate(project, size=(0, 100))
    with pytest.raises(StudioError, match="unknown scene id"):
        illustrate(project, preset="draft", only=["zz"])
    with pytest.raises(StudioError, match=r"scene 1 \(id a1\) has no `media` file"):
        illustrate(project, preset="draft", painter="local")
    assert not list(project.assets_dir.iterdir())


def test_illustrate_cancel(tmp_path):
    project = three_scenes(tmp_path)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        illustrate(project, preset="draft", cancel=token)
    assert not list(project.assets_dir.iterdir())

    # Cancelled after the first scene: that scene's card is kept, nothing half-written is left.
    token = CancelToken()
    with pytest.raises(Cancelled):
        illustrate(project, preset="draft", cancel=token, on_progress=lambda f, m: token.cancel())
    assert len(list(project.assets_dir.glob("*.png"))) == 1 and no_temp_files(project.folder)


def test_illustrate_is_the_public_verb(tmp_path):
    project = three_scenes(tmp_path, aspect="9:16")
    done = studio.illustrate(project, preset="draft")
    with Image.open(done.scenes[0].visual) as image:
        assert image.size == (480, 854)
