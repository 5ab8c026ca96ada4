"""Every language is drawn (issue 12, item 6): captions and title cards in Chinese, Japanese, Arabic, Hindi, Russian
and with an emoji are drawn in fallback fonts, not as empty boxes, shaped and in bidi order; OCR reads them back; a
note (and a logged warning) says when the caption font lacks glyphs and when no installed font has them; the doctor
lists which scripts the installed fonts draw.

The fonts and the OCR language data come from the set-up (`scripts/setup.sh`: fonts-lohit-deva, fonts-droid-fallback,
fonts-symbola; `--dev`: tesseract-ocr-chi-sim, -jpn, -rus, -ara, -hin); a test skips, naming the package, only where
one is missing."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from studio import Project, Scene, load_preset
from studio import fonts
from studio.compose import build_timeline, compose
from studio.compose.captions import caption_layout, text_width, wrap_words
from studio.fonts import (FallbackFont, bidi_levels, clusters, face_of, fallback_faces, font_path, paragraph_rtl,
                          script_of, visual_order)
from studio.media import write_wav
from studio.project import WordTiming
from studio.visuals.cards import CAPTION_BAND, design_card, render_card
from tests.test_compose import frame_at, ink_box, scene_of  # noqa: F401  (scene_of is a fixture)
from tests.test_fonts import installed_font, mono_font  # noqa: F401  (mono_font is a fixture)

# Small frames keep the renders quick (about a second each); captions are still 24 px tall.
SMALL = dataclasses.replace(load_preset("draft"),
                            resolution={"16:9": (640, 360), "9:16": (360, 640), "1:1": (360, 360)})
# (tesseract language, caption line, what OCR must read back, the scripts the line needs from fallback fonts)
LINES = [
    ("eng", "Hello world 🎬", "Hello world", ("emoji",)),
    ("rus", "Привет, мир", "Привет, мир", ()),
    ("chi_sim", "你好世界", "你好世界", ("Han",)),
    ("jpn", "東京タワー", "東京タワー", ("Han", "Kana")),
    ("ara", "مرحبا بالعالم", "بالعالم", ()),
    ("hin", "नमस्ते दुनिया", "दुनिया", ("Devanagari",)),
]
OCR_PACKAGES = {"eng": "tesseract-ocr-eng", "rus": "tesseract-ocr-rus", "chi_sim": "tesseract-ocr-chi-sim",
                "jpn": "tesseract-ocr-jpn", "ara": "tesseract-ocr-ara", "hin": "tesseract-ocr-hin"}


def need_scripts(*scripts: str) -> None:
    """Skip, naming the Debian package, where no installed font draws one of `scripts`."""
    for script, face, package in fonts.script_coverage():
        if script in scripts and face is None:
            pytest.skip(f"no installed font draws {script}: scripts/setup.sh installs {package}")


def need_ocr(*languages: str) -> str:
    """tesseract's path; skips, naming the Debian package, where it or a language's data is missing."""
    exe = shutil.which("tesseract")
    if exe is None:
        pytest.skip("tesseract is missing: scripts/setup.sh --dev installs tesseract-ocr")
    have = set(subprocess.run([exe, "--list-langs"], capture_output=True, text=True).stdout.split())
    for language in languages:
        if language not in have:
            pytest.skip(f"tesseract has no {language} data: scripts/setup.sh --dev installs {OCR_PACKAGES[language]}")
    return exe


def ocr(exe: str, image, language: str, path: Path) -> str:
    """OCR one line of dark text on a light ground (scaled up twice: tesseract likes letters 20-40 px tall)."""
    from PIL import Image

    image = Image.fromarray(np.asarray(image)) if not isinstance(image, Image.Image) else image
    image.resize((image.width * 2, image.height * 2), Image.LANCZOS).save(path)
    out = subprocess.run([exe, str(path), "stdout", "-l", language, "--psm", "7"], capture_output=True, text=True,
                         timeout=60)
    return out.stdout.strip()


def caption_band(path: Path, event) -> np.ndarray:
    gray = frame_at(path, (event.start_s + event.end_s) / 2).astype(int)
    return gray[int(gray.shape[0] * 0.6):]


def empty_fontconfig(folder: Path) -> Path:
    """A fontconfig configuration with no font folders: libass then has only the caption font itself (the work
    folder's copy), so whatever that font lacks comes out as boxes. The tofu reference."""
    conf = folder / "no-fonts.conf"
    conf.write_text('<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">\n'
                    f"<fontconfig><cachedir>{folder / 'fc-cache'}</cachedir></fontconfig>\n", encoding="utf-8")
    return conf


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """One render with a scene (and so a caption) per line, and the same render with libass limited to the caption
    font (boxes for everything it lacks)."""
    from PIL import Image

    need_scripts("Latin", "Cyrillic", "Arabic", "Devanagari", "Han", "Kana", "emoji")
    folder = tmp_path_factory.mktemp("multilingual")
    scenes = []
    for i, (_, line, _, _) in enumerate(LINES):
        image = folder / f"{i}.png"
        Image.new("RGB", (640, 360), (40, 60, 90)).save(image)
        audio = folder / f"{i}.wav"
        t = np.arange(22050) / 22050
        write_wav(audio, 0.2 * np.sin(2 * np.pi * 220 * t), 22050)
        words = line.split()
        step = 1.0 / len(words)
        timings = tuple(WordTiming(w, k * step, (k + 0.9) * step) for k, w in enumerate(words))
        scenes.append(Scene(id=f"s{i}", narration=line, audio=audio, audio_duration_s=1.0, words=timings, visual=image,
                            transition="cut"))
    project = Project(title="every language", scenes=tuple(scenes))
    drawn = compose(project, SMALL, folder / "drawn.mp4")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FONTCONFIG_FILE", str(empty_fontconfig(folder)))
        tofu = compose(project, SMALL, folder / "tofu.mp4")
    return drawn, tofu, folder


# -- captions ----------------------------------------------------------------------------------------------------------
def test_multilingual_captions_are_drawn_not_boxed_and_ocr_reads_them_back(renders):
    drawn, tofu, folder = renders
    exe = need_ocr(*(language for language, *_ in LINES))
    events = drawn.timeline.captions
    assert [e.text for e in events] == [line for _, line, _, _ in LINES]
    assert [e.text for e in tofu.timeline.captions] == [e.text for e in events]
    for (language, line, expected, fallback), event in zip(LINES, events):
        band, boxed = caption_band(drawn.path, event), caption_band(tofu.path, event)
        changed = (np.abs(band - boxed) > 40).mean()
        if fallback:  # the fallback fonts' glyphs, not the caption font's boxes
            assert changed > 0.003, (line, changed)
        else:  # DejaVu draws Cyrillic and Arabic itself: the same pixels either way
            assert np.abs(band - boxed).mean() < 1.0, (line, np.abs(band - boxed).mean())
        # White text: threshold it into black on white for tesseract.
        text = ocr(exe, np.where(band >= 200, 0, 255).astype(np.uint8), language, folder / f"{language}.png")
        assert expected in text, (line, text)
        if language in ("chi_sim", "jpn"):  # and the boxes really do not read as the text
            boxes = ocr(exe, np.where(boxed >= 200, 0, 255).astype(np.uint8), language, folder / f"{language}-b.png")
            assert expected[:2] not in boxes, (line, boxes)


def test_caption_widths_are_measured_with_the_fallback_fonts_libass_draws(renders):
    """Captions are wrapped by measured widths: the ink of each line is as wide as `text_width` says (each fallback
    face sized as libass sizes it), and far from the width of the caption font's boxes."""
    from PIL import ImageFont

    drawn, _, _ = renders
    layout = drawn.timeline.caption_layout
    alone = ImageFont.truetype(str(layout.font_path), layout.em_px)
    for (_, line, _, fallback), event in zip(LINES, drawn.timeline.captions):
        box = ink_box(caption_band(drawn.path, event).astype(np.uint8))
        width = box[2] - box[0]
        expected = text_width(layout, line)
        assert abs(width - expected) < 0.05 * expected + 4, (line, width, expected)
        if fallback and fallback != ("emoji",):
            wrong = alone.getlength(line)  # boxes: what measuring with the caption font alone would give
            assert abs(width - wrong) > 0.15 * expected, (line, width, wrong)


def test_a_note_names_the_scripts_from_fallback_fonts_and_never_for_latin(renders, mono_font, scene_of, caplog):
    drawn, _, _ = renders
    note = next(n for n in drawn.timeline.notes if n.startswith("captions:"))
    assert "the font DejaVu Sans has no glyphs for" in note and "drawn with the fallback fonts" in note
    for sample in ("Han (你好世界 東京)", "Kana (タワー)", "Devanagari (नमस्ते दुनिया)", "emoji (🎬)"):
        assert sample in note, note
    assert "Cyrillic" not in note and "Arabic" not in note and "empty boxes" not in note
    for face in (fonts.font_for(ch, fallback_faces("bold")) for ch in "你タन🎬"):
        assert face is not None and face.name in note, (face, note)
    # A chosen caption font that lacks glyphs the narration needs: the note names that font.
    scene = scene_of("a", speech_s=1.0, words=("東京", "and", "🎬"))
    with caplog.at_level(logging.WARNING, logger="studio.captions"):
        timeline = build_timeline(Project(title="t", scenes=(scene,), caption_font=mono_font), SMALL)
    notes = [n for n in timeline.notes if n.startswith("captions:")]
    assert len(notes) == 1 and "the font DejaVu Sans Mono has no glyphs for Han (東京), emoji (🎬);" in notes[0], notes
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == notes  # the user's choice
    # Latin narration in the bundled font: nothing to say.
    latin = scene_of("b", speech_s=1.0, words=("Hello", "world,", "ünïcödé", "Ω"))
    assert not [n for n in build_timeline(Project(title="t", scenes=(latin,)), SMALL).notes if "captions" in n]


def test_characters_no_installed_font_has_are_a_warning_that_says_what_to_install(scene_of, monkeypatch, caplog):
    # U+0378 is unassigned: no font anywhere has it.
    scene = scene_of("a", speech_s=1.0, words=("Hello", "\u0378"))
    with caplog.at_level(logging.WARNING, logger="studio.captions"):
        timeline = build_timeline(Project(title="t", scenes=(scene,)), SMALL)
    note = next(n for n in timeline.notes if "empty boxes" in n)
    assert note.startswith("captions: no installed font has glyphs for U+0378") and "apt-get install" in note
    assert any(r.levelno == logging.WARNING and r.getMessage() == note for r in caplog.records)
    # A machine without the CJK and Devanagari fonts: the note names the packages that draw them.
    monkeypatch.setattr(fonts, "fallback_faces", lambda weight="regular": ())
    scene = scene_of("b", speech_s=1.0, words=("东京", "नमस्ते"))
    notes = [n for n in build_timeline(Project(title="t", scenes=(scene,)), SMALL).notes if "empty boxes" in n]
    assert len(notes) == 1 and "Han (东京), Devanagari (नमस्ते):" in notes[0], notes
    assert "fonts-droid-fallback" in notes[0] and "fonts-lohit-deva" in notes[0]


def test_long_words_break_between_characters_never_inside_a_cluster():
    need_scripts("Devanagari", "emoji")
    layout = caption_layout("bold", (360, 640))
    word = "क्षत्रिय" * 12 + "👍🏽🇯🇵" * 6
    lines = wrap_words(layout, [word])
    assert len(lines) > 1 and "".join(lines) == word
    for line in lines:
        assert text_width(layout, line) <= layout.max_line_px
        assert not line.startswith(("्", "\u093f", "🏽")) and not line.endswith("्")  # no mark or virama torn off
    assert clusters("क्षि 👍🏽 🇯🇵e\u0301") == ["क्षि", " ", "👍🏽", " ", "🇯🇵", "e\u0301"]


# -- title cards -------------------------------------------------------------------------------------------------------
CARD_LINES = [("eng", "Hello cinema 🎬", "cinema"), ("rus", "Привет мир", "Привет мир"),
              ("chi_sim", "你好世界", "你好世界"), ("jpn", "東京タワー", "東京タワー"), ("ara", "مرحبا بالعالم", "بالعالم"),
              ("hin", "नमस्ते दुनिया", "दुनिया")]


def test_cards_draw_every_script_in_fallback_fonts_and_ocr_reads_them(tmp_path, monkeypatch):
    need_scripts("Latin", "Cyrillic", "Arabic", "Devanagari", "Han", "Kana", "emoji")
    exe = need_ocr(*(language for language, _, _ in CARD_LINES))
    size = (640, 360)
    designs = [design_card(Scene(f"s{i}", "n", line), index=i, project_seed=3) for i, (_, line, _) in
               enumerate(CARD_LINES)]
    cards = [render_card(d, size) for d in designs]
    assert designs[0].font != design_card(Scene("x", "n", "Hello cinema"), index=0, project_seed=3).font
    assert designs[1].font == font_path("bold").name  # DejaVu draws Cyrillic: no fallback in the card's identity
    for (language, line, expected), design, card in zip(CARD_LINES, designs, cards):
        x0, y0, x1, y1 = card.text_box
        assert y1 <= round(size[1] * (1 - CAPTION_BAND))
        crop = np.asarray(card.image.convert("L").crop(card.text_box))
        ink_l = np.asarray(card.ink, float) @ [0.299, 0.587, 0.114]
        dark = np.abs(crop.astype(float) - ink_l) < 60  # the letters, whatever the ink's colour
        text = ocr(exe, np.where(dark, 0, 255).astype(np.uint8), language, tmp_path / f"{language}.png")
        assert expected in text, (line, text)
    # Without fallback fonts the same cards are drawn with DejaVu's boxes: different pixels where a fallback draws.
    monkeypatch.setattr(fonts, "fallback_faces", lambda weight="regular": ())
    fonts.fallback_font.cache_clear()
    try:
        from studio.visuals import cards as cards_module

        cards_module._font.cache_clear()
        for (language, line, _), design, card in zip(CARD_LINES, designs, cards):
            boxed = render_card(design, size)
            diff = np.abs(np.asarray(card.image, float) - np.asarray(boxed.image, float)).mean()
            if language in ("rus", "ara"):
                assert diff == 0, line
            else:
                assert diff > 0.5, (line, diff)
    finally:
        monkeypatch.undo()
        fonts.fallback_font.cache_clear()
        cards_module._font.cache_clear()


def test_cards_warn_about_characters_no_installed_font_has(caplog, monkeypatch):
    from studio.visuals import cards as cards_module

    monkeypatch.setattr(fonts, "fallback_faces", lambda weight="regular": ())  # a machine without the CJK font
    cards_module._fonts_id.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="studio.cards"):
            design = design_card(Scene("s", "n", "Hello 東京"), index=0, project_seed=5)
    finally:
        cards_module._fonts_id.cache_clear()
    assert design.font == font_path("bold").name + "+no font for Han"
    warnings = [r.getMessage() for r in caplog.records if r.name == "studio.cards"]
    assert warnings and warnings[0].startswith("cards: no installed font has glyphs for Han (東京)"), warnings
    assert "fonts-droid-fallback" in warnings[0]


def _components(image) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x, y, w, h) of the connected blobs of ink (dark on white), left to right."""
    import cv2

    ink = (np.asarray(image) < 128).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    return sorted((int(s[0]), int(s[1]), int(s[2]), int(s[3])) for s in stats[1:count] if s[4] > 3)


def _drawn(font: FallbackFont, text: str):
    from PIL import Image, ImageDraw

    width = int(font.getlength(text)) + 40
    image = Image.new("L", (width, 120), 255)
    font.draw_text(ImageDraw.Draw(image), (20, 20), text, 0)
    return image


def test_arabic_is_joined_right_to_left_and_devanagari_conjuncts_are_shaped():
    need_scripts("Arabic", "Devanagari")
    if not fonts.raqm_available():
        pytest.skip("Pillow has no raqm here: scripts/setup.sh installs libfribidi0, which Pillow's raqm needs")
    font = FallbackFont(font_path("bold"), 48, "bold")
    # Joined: "بيت" (beh, yeh, teh) is one connected word when shaped; isolated letters are three shapes apart.
    joined = _components(_drawn(font, "بيت"))
    letters = sum(len([b for b in _components(_drawn(font, ch)) if b[3] > 8]) for ch in "بيت")
    big = [b for b in joined if b[3] > 8]  # the dots are small blobs
    assert len(big) == 1 < letters == 3, (joined, letters)
    # Right to left: in "ا ب" (alef, space, beh) the tall alef is the rightmost shape.
    shapes = [b for b in _components(_drawn(font, "ا ب")) if b[2] * b[3] > 20]
    tallest = max(shapes, key=lambda b: b[3])
    assert tallest == shapes[-1], shapes
    # The same inside a left-to-right line: the Arabic run is still drawn right to left, after the Latin word.
    mixed = [b for b in _components(_drawn(font, "Go ا ب")) if b[2] * b[3] > 20]
    assert max(mixed[2:], key=lambda b: b[3]) == mixed[-1], mixed
    # Devanagari: क्ष is one conjunct glyph, narrower than क + virama + ष side by side; ि is drawn before क.
    deva = FallbackFont(font_path("bold"), 48, "bold")
    apart = sum(deva.getlength(ch) for ch in "क्ष")
    assert deva.getlength("क्ष") < 0.8 * apart
    # The i sign (its loop rises above the headline) is drawn before the consonant it follows: the left quarter of
    # "कि" reaches far higher than any part of "क" (unshaped, the left quarter would be the plain क).
    ki, ka = np.asarray(_drawn(deva, "कि")) < 128, np.asarray(_drawn(deva, "क")) < 128
    xs = np.nonzero(ki.any(axis=0))[0]
    left_top = np.nonzero(ki[:, xs[0]:xs[0] + (xs[-1] - xs[0]) // 4].any(axis=1))[0][0]
    assert left_top < np.nonzero(ka.any(axis=1))[0][0] - 5


def test_bidi_levels_and_run_order():
    assert paragraph_rtl("مرحبا Hello") and not paragraph_rtl("Hello مرحبا") and not paragraph_rtl("123")
    assert bidi_levels("ab אב") == [0, 0, 0, 1, 1]
    assert bidi_levels("אב 12 ab") == [1, 1, 1, 2, 2, 1, 2, 2]
    assert bidi_levels("مرحبا 2024") == [1] * 6 + [2] * 4  # Arabic-context digits stay left to right
    need_scripts("Arabic", "Han")
    font = FallbackFont(font_path("bold"), 30, "bold")
    runs = font.runs("مرحبا Tokyo 東京!")
    assert [r.text for r in visual_order(runs)] == ["!", "Tokyo ", "東京", "مرحبا "]
    assert {r.face.family for r in runs if r.text == "東京"} != {"DejaVu Sans"}


def test_script_names_and_face_reading():
    assert [script_of(ch) for ch in "aЖΩب东タ한🎬1 "] == ["Latin", "Cyrillic", "Greek", "Arabic", "Han", "Kana",
                                                        "Hangul", "emoji", "common", "common"]
    face = face_of(installed_font("DejaVuSansMono.ttf"))
    assert face.family == "DejaVu Sans Mono" and face.has("A") and face.has("Ж") and not face.has("東")
    assert face.outline and 1.0 < face.line_ratio < 1.4
    ttLib = pytest.importorskip("fontTools.ttLib", reason="fontTools (with matplotlib) checks the character maps")
    for face in fallback_faces("regular")[:6]:
        theirs = ttLib.TTFont(str(face.path), fontNumber=face.index, lazy=True).getBestCmap()
        mine = {cp for s, e in zip(face.starts, face.ends) for cp in range(s, e + 1)}
        assert mine == {cp for cp, glyph in theirs.items() if glyph != ".notdef"}, face


def test_doctor_lists_which_scripts_the_installed_fonts_draw(capsys):
    from studio.cli import main

    main(["doctor"])
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(("  ok  ", "  no  "))
             and line.split()[1] in fonts.SCRIPTS}
    assert set(lines) == set(fonts.SCRIPTS)
    for script, face, package in fonts.script_coverage():
        if face is None:
            assert lines[script].startswith("  no") and package in lines[script]
        else:
            assert lines[script].startswith("  ok") and face.name in lines[script]
    assert "captions: libass falls back through fontconfig" in out
    assert "text shaping:" in out


# -- scripts without spaces and right-to-left scripts (issue 14) -------------------------------------------------------
def test_split_words_cuts_chinese_and_japanese_into_caption_sized_words():
    from studio.voice.timing import boundary_strength, split_words

    zh = "东京是日本的首都。它很大，人很多！"
    words = split_words(zh)
    assert "".join(words) == zh and len(words) >= 5
    assert all(1 <= len(w.rstrip("。，！")) <= 4 for w in words), words
    assert [boundary_strength(w) for w in words].count(2) == 2 and boundary_strength(words[-1]) == 2
    assert split_words("東京タワーは高いです。") == ["東京", "タワーは", "高いです。"]  # particles stay with their word
    assert split_words("「こんにちは」と言った。")[0] == "「こんにちは」"  # brackets stay with what they hold
    assert split_words("Tokyo 東京 and 2021年") == ["Tokyo", "東京", "and", "2021", "年"]
    assert split_words("Hello, world — again") == ["Hello,", "world —", "again"]  # spaced scripts as before
    from studio.voice.timing import join_words

    assert join_words(split_words(zh)) == zh and join_words(split_words("Tokyo 東京 and")) == "Tokyo 東京 and"


def test_sentences_split_at_cjk_arabic_and_hebrew_ends_and_through_direction_marks():
    from studio.storyboard.text import count_words, split_sentences
    from studio.voice.timing import boundary_strength

    assert split_sentences("东京是日本的首都。它很大！人很多？是的") == ["东京是日本的首都。", "它很大！", "人很多？", "是的"]
    # Arabic question mark; a full stop followed by a right-to-left mark (RLM) still ends the sentence.
    assert split_sentences("مرحبا بكم؟ هذا هو العالم.\u200f التالي هنا. שלום עולם. מה שלומך?") == [
        "مرحبا بكم؟", "هذا هو العالم.\u200f", "التالي هنا.", "שלום עולם.", "מה שלומך?"]
    assert split_sentences("नमस्ते दुनिया। यह अच्छा है।") == ["नमस्ते दुनिया।", "यह अच्छा है।"]
    assert boundary_strength("العالم؟\u200f") == 2 and boundary_strength("العالم،") == 1
    # Chinese is sized for scenes by characters (a word per two), not as one giant word per sentence.
    assert count_words("东京是日本的首都。") == 4 and count_words("Hello world") == 2


def test_cjk_captions_break_between_characters_and_join_without_spaces():
    from studio.compose.captions import TimedWord, group_words, join_words
    from studio.voice.timing import split_words

    need_scripts("Han", "Kana")
    layout = caption_layout("bold", (360, 640))
    text = "东京是日本的首都。它很大，人很多！东京塔很高。"
    lines = wrap_words(layout, split_words(text))
    assert len(lines) == 2 and "".join(lines) == text and not any(" " in line for line in lines)
    assert all(text_width(layout, line) <= layout.max_line_px for line in lines)
    assert join_words(["東京", "タワーは", "高い"]) == "東京タワーは高い" and join_words(["Tokyo", "東京"]) == "Tokyo東京"
    assert join_words(["Hello", "world"]) == "Hello world"
    # Timed words group into captions whose lines hold no added space, each ending at a sentence end.
    words = [TimedWord(w, k * 0.4, k * 0.4 + 0.35) for k, w in enumerate(split_words(text * 2))]
    events = group_words(layout, words, window_end_s=len(words) * 0.4 + 1)
    assert "".join(e.text for e in events) == text * 2 and not any(" " in e.text for e in events)
    # Arabic keeps its words in logical (reading) order on each line; libass lays the line out right to left.
    arabic = "مرحبا بكم في هذا العالم الجميل الذي نعيش فيه اليوم"
    lines = wrap_words(layout, arabic.split())
    assert len(lines) >= 2 and " ".join(lines) == arabic


def test_cjk_and_arabic_captions_render_as_written_ocr_reads_them_back(tmp_path):
    """Two-line captions: Chinese broken between characters without spaces, Arabic in reading order (libass does
    the bidi); OCR of each rendered line reads the line's text back."""
    from PIL import Image

    from studio.voice.timing import split_words

    need_scripts("Han", "Arabic")
    exe = need_ocr("chi_sim", "ara")
    texts = [("chi_sim", "东京是日本的首都，也是世界上人口最多的大城市之一，每年都有很多人来这里旅游。"),
             ("ara", "مرحبا بكم في هذا العالم الجميل مرحبا بالعالم الكبير كل يوم")]
    scenes = []
    for i, (_, text) in enumerate(texts):
        image = tmp_path / f"{i}.png"
        Image.new("RGB", (640, 360), (40, 60, 90)).save(image)
        audio = tmp_path / f"{i}.wav"
        write_wav(audio, np.zeros(44100, np.float32), 22050)
        words = split_words(text)
        step = 1.8 / len(words)
        timings = tuple(WordTiming(w, k * step, (k + 0.9) * step) for k, w in enumerate(words))
        scenes.append(Scene(id=f"s{i}", narration=text, audio=audio, audio_duration_s=2.0, words=timings,
                            visual=image, transition="cut"))
    result = compose(Project(title="wrap", scenes=tuple(scenes)), SMALL, tmp_path / "wrap.mp4")
    for (language, text), scene in zip(texts, scenes):
        events = [e for e in result.timeline.captions if e.scene_id == scene.id]
        assert "".join(e.text for e in events).replace(" ", "") == text.replace(" ", "")
        event = max(events, key=lambda e: len(e.lines))
        assert len(event.lines) == 2, event
        if language == "chi_sim":
            assert not any(" " in line for line in event.lines)
        band = caption_band(result.path, event)
        ink = np.nonzero((band >= 200).any(axis=1))[0]
        middle = (ink[0] + ink[-1]) // 2  # the two lines, top and bottom, OCR'd one at a time
        for line, rows in zip(event.lines, (band[:middle], band[middle:])):
            text_ink = np.pad(np.where(rows >= 200, 0, 255).astype(np.uint8), 16, constant_values=255)
            read = ocr(exe, text_ink, language, tmp_path / f"{language}.png")
            if language == "chi_sim":
                read = read.replace(" ", "")
                assert sum(ch in read for ch in line) >= 0.7 * len(line), (line, read)
            else:  # tesseract gives Arabic in reading order: the line's words come back in the order written
                found = [w for w in line.split() if w in read.split()]
                assert len(found) >= 2 and sorted(found, key=read.split().index) == found, (line, read)
