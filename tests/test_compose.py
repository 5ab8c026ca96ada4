"""Composition (step 4): the timeline's rules, captions and their escaping, and real renders checked with ffprobe,
decoded pixels and decoded audio. Every input is generated (fixtures from conftest)."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from studio import CancelToken, Cancelled, Project, Scene, StudioError, WordTiming, load_preset
from studio.compose import TRANSITIONS, build_timeline, compose, pick_encoder
from studio.compose.captions import (MAX_LINES, TimedWord, WORD_JOINER, ass_document, caption_layout, escape_ass_text,
                                     group_words, text_width)
from studio.compose.encoders import encoder_works, probe_encoder
from studio.compose.timeline import FULL, choose_transition
from studio.media import ffmpeg_exe, read_audio, run_ffmpeg_output
from tests.conftest import caption_ink, ffprobe, video_facts

DRAFT = load_preset("draft")
SPECIAL = "' : , ; [ ] \\ % { }"


# -- helpers -----------------------------------------------------------------------------------------------------------
@pytest.fixture
def scene_of(make_image, make_tone):
    """Make a narrated scene: an image, a tone of `speech_s` and word timings spread over it."""

    def make(sid: str, *, speech_s: float = 0.6, words: tuple[str, ...] = ("Hello", "world"), colour=(40, 90, 160),
             image_size=(640, 360), **fields) -> Scene:
        audio = make_tone(f"{sid}.wav", duration_s=speech_s, freq_hz=220.0)
        step = speech_s / max(1, len(words))
        timings = tuple(WordTiming(w, i * step, (i + 0.9) * step) for i, w in enumerate(words))
        return Scene(id=sid, narration=" ".join(words), audio=audio, audio_duration_s=speech_s, words=timings,
                     visual=make_image(f"{sid}.png", image_size, colour), **fields)

    return make


def frame_at(path: Path, time_s: float, pix_fmt: str = "gray") -> np.ndarray:
    """The decoded frame shown at `time_s` (gray: the Y plane as H x W; rgb24: H x W x 3)."""
    facts = video_facts(path)
    data = run_ffmpeg_output(["-ss", f"{time_s:.3f}", "-i", path, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", pix_fmt,
                              "pipe:1"])
    channels = 3 if pix_fmt == "rgb24" else 1
    frame = np.frombuffer(data, np.uint8).reshape(facts["height"], facts["width"], channels)
    return frame[:, :, 0] if channels == 1 else frame


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types, in file order."""
    boxes, data = [], Path(path).read_bytes()
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        boxes.append(kind)
        if size < 8:
            break
        at += size
    return boxes


def ink_box(gray: np.ndarray, threshold: int = 215) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the near-white pixels (caption text) in a region, or None."""
    ys, xs = np.nonzero(gray >= threshold)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def ffmpeg_children() -> list[int]:
    """Pids of ffmpeg processes that are children (at any depth) of this test process."""
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "ffmpeg" in " ".join(p.cmdline())]


# -- the timeline ------------------------------------------------------------------------------------------------------
def test_timing_rule_starts_overlaps_total_and_narration(scene_of):
    scenes = [scene_of("a", speech_s=1.0, transition="crossfade"), scene_of("b", speech_s=2.0, transition="fade"),
              scene_of("c", speech_s=1.5, transition="cut"), scene_of("d", speech_s=0.5, duration_s=3.0, transition="wipe")]
    tl = build_timeline(Project(title="t", scenes=tuple(scenes)), DRAFT, encoder="libx264")
    lead, tail, t, fps = DRAFT.lead_s, DRAFT.tail_s, DRAFT.transition_s, DRAFT.fps
    # Lengths and transitions in whole frames, so every scene starts on a frame.
    lengths = [round((lead + 1.0 + tail) * fps) / fps, round((lead + 2.0 + tail) * fps) / fps,
               round((lead + 1.5 + tail) * fps) / fps, 3.0]
    overlaps = [0.0, round(t * fps) / fps, 0.0, round(t * fps) / fps]  # the first scene and the cut: no overlap
    starts = [0.0]
    for i in range(1, 4):
        starts.append(starts[-1] + lengths[i - 1] - overlaps[i])
    assert all(abs(length - want) <= 0.5 / fps for length, want in zip(lengths, [lead + 1.0 + tail, lead + 2.0 + tail,
                                                                                lead + 1.5 + tail, 3.0]))
    assert all(s * fps == pytest.approx(round(s * fps)) for s in starts)
    assert [s.start_s for s in tl.segments] == pytest.approx(starts)
    assert [s.duration_s for s in tl.segments] == pytest.approx(lengths)
    assert [s.transition.kind for s in tl.segments] == ["cut", "fade", "cut", "wipe"]
    assert [s.transition.duration_s for s in tl.segments] == pytest.approx(overlaps)
    assert tl.duration_s == pytest.approx(starts[-1] + lengths[-1])
    assert tl.frame_count == round(tl.duration_s * DRAFT.fps)
    # Narration plays lead_s into its scene, never overlapping the next narration.
    assert [n.offset_s for n in tl.narration] == pytest.approx([s + lead for s in starts])
    ends = [n.offset_s + n.duration_s for n in tl.narration]
    assert all(end <= nxt.offset_s for end, nxt in zip(ends, tl.narration[1:]))
    assert [n.duration_s for n in tl.narration] == pytest.approx([1.0, 2.0, 1.5, 0.5])
    assert (tl.width, tl.height, tl.fps) == (854, 480, 24)
    rows = tl.to_rows()
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"] and rows[1]["transition"] == "fade"


def test_transition_is_capped_to_fit_short_scenes(scene_of):
    scenes = [scene_of("a", duration_s=0.5, transition="crossfade"), scene_of("b", duration_s=0.6, transition="crossfade")]
    tl = build_timeline(Project(title="t", scenes=tuple(scenes)), DRAFT, encoder="libx264")
    assert tl.segments[1].transition.duration_s == pytest.approx(0.25)  # half of the shorter scene, not 0.4
    assert tl.duration_s == pytest.approx(0.5 + 0.6 - 0.25, abs=1 / DRAFT.fps)  # lengths are whole frames


def test_only_lays_out_the_chosen_scenes_back_to_back(scene_of):
    scenes = [scene_of(s, speech_s=1.0, transition="crossfade") for s in ("a", "b", "c")]
    project = Project(title="t", scenes=tuple(scenes))
    tl = build_timeline(project, DRAFT, only=["c", "a"], encoder="libx264")
    assert [s.scene_id for s in tl.segments] == ["a", "c"]  # project order
    assert [s.scene_number for s in tl.segments] == [1, 3]
    assert tl.segments[0].start_s == 0 and tl.segments[0].transition.kind == "cut"
    length = DRAFT.lead_s + 1.0 + DRAFT.tail_s
    assert tl.duration_s == pytest.approx(2 * length - DRAFT.transition_s, abs=1.5 / DRAFT.fps)  # whole frames
    with pytest.raises(StudioError, match="unknown scene id"):
        build_timeline(project, DRAFT, only=["zz"], encoder="libx264")


def test_fixed_duration_trims_narration_with_a_fade_and_a_note(scene_of):
    scene = scene_of("a", speech_s=2.0, duration_s=1.2, words=("one", "two", "three", "four"))
    tl = build_timeline(Project(title="t", scenes=(scene,)), DRAFT, encoder="libx264")
    voice = tl.narration[0]
    assert voice.duration_s == pytest.approx(1.2 - DRAFT.lead_s, abs=0.5 / DRAFT.fps)  # the scene is whole frames
    assert voice.source_duration_s == pytest.approx(2.0) and voice.fade_out_s > 0
    assert any("trimmed" in note and "scene 1 (id a)" in note for note in tl.notes)
    # Captions only for words that are heard, and none past the scene.
    spoken = " ".join(c.text for c in tl.captions).split()
    assert spoken == ["one", "two"]
    assert all(c.end_s <= tl.duration_s + 1e-9 for c in tl.captions)


def test_ken_burns_rectangles_stay_inside_and_move_smoothly(scene_of):
    preset = load_preset("standard")
    scenes = [scene_of(f"s{i}", speech_s=1.5) for i in range(24)]
    tl = build_timeline(Project(title="t", scenes=tuple(scenes)), preset, encoder="libx264")
    motions = {seg.motion for seg in tl.segments}
    assert len(motions) >= 3, motions  # the moves vary from scene to scene
    for seg in tl.segments:
        frames = max(2, round(seg.duration_s * preset.fps))
        rects = [seg.rect_at(k / (frames - 1)) for k in range(frames)]
        for r in rects:
            assert r.inside_unit(), (seg.scene_id, r)
            assert r.w == pytest.approx(r.h)  # keeps the frame's aspect ratio: no stretching
        assert min(r.w for r in rects) == pytest.approx(1 / (1 + preset.ken_burns))
        # Per-frame motion of each edge, in output pixels: small, and always in the same direction (no jitter).
        for get, size in ((lambda r: r.x, preset.size("16:9")[0]), (lambda r: r.x + r.w, preset.size("16:9")[0]),
                          (lambda r: r.y, preset.size("16:9")[1]), (lambda r: r.y + r.h, preset.size("16:9")[1])):
            steps = np.diff([get(r) * size for r in rects])
            assert np.abs(steps).max() < 2.0, (seg.scene_id, seg.motion, np.abs(steps).max())
            assert (steps >= -1e-9).all() or (steps <= 1e-9).all(), (seg.scene_id, seg.motion)
    still = build_timeline(Project(title="t", scenes=tuple(scenes[:2])), replace(preset, ken_burns=0.0), encoder="libx264")
    assert all(seg.ken_burns == (FULL, FULL) for seg in still.segments)


def test_transitions_are_deterministic_and_mostly_crossfades(scene_of):
    base = scene_of("x")
    auto = [choose_transition(replace(base, id=f"scene-{i}")) for i in range(300)]
    assert auto == [choose_transition(replace(base, id=f"scene-{i}")) for i in range(300)]
    share = auto.count("crossfade") / len(auto)
    assert 0.55 < share < 0.85, share
    assert set(auto) == set(TRANSITIONS) - {"cut"}  # the others appear too
    assert choose_transition(replace(base, transition="Slide")) == "slide"
    with pytest.raises(StudioError, match="transition"):
        choose_transition(replace(base, transition="spin"))


# -- captions ----------------------------------------------------------------------------------------------------------
def test_caption_groups_fit_two_lines_measured_with_the_font_and_never_overlap():
    from PIL import ImageFont

    text = ("Captions wrap under the frame width using the font's real metrics, so a long narration is split into "
            "readable groups of at most two lines. A sentence ends a caption. Extraordinarily-long-compound-words-like-"
            "this-one-are-split-rather-than-overflowing the frame. Short ones stay.")
    words = text.split()
    timed = [TimedWord(w, 0.3 * i, 0.3 * i + 0.25) for i, w in enumerate(words)]
    timed[12] = TimedWord(words[12], timed[12].start_s + 1.0, timed[12].end_s + 1.0)  # a pause
    for i in range(13, len(timed)):
        timed[i] = TimedWord(words[i], timed[i].start_s + 1.0, timed[i].end_s + 1.0)
    for size in ((854, 480), (480, 854), (480, 480)):
        layout = caption_layout("bold", size)
        events = group_words(layout, timed, window_end_s=100.0)
        font = ImageFont.truetype(str(layout.font_path), layout.em_px)
        assert all(1 <= len(e.lines) <= MAX_LINES for e in events)
        for e in events:
            for line in e.lines:
                width = font.getlength(line)
                assert width <= layout.max_line_px and width + 2 * layout.outline_px < size[0], (line, width)
        assert all(a.end_s <= b.start_s for a, b in zip(events, events[1:]))
        assert all(e.end_s > e.start_s for e in events)
        # Every word once, in order (the long word may be split over lines).
        assert "".join("".join(e.lines) for e in events).replace(" ", "") == "".join(words)
        # Timed from the words: each caption starts when its first word is heard (a split word shares its time).
        starts = {w.start_s for w in timed}
        assert all(e.start_s in starts or any(w.start_s < e.start_s < w.end_s for w in timed) for e in events)
        assert sum(e.start_s in starts for e in events) >= len(events) - 2
        # A sentence end and the pause both start a new caption.
        assert any(e.lines[-1].endswith("caption.") for e in events)
        assert any(e.lines[0].startswith(words[12]) for e in events)
    assert caption_layout("bold", (480, 854)).max_line_px < caption_layout("bold", (854, 480)).max_line_px
    with pytest.raises(StudioError, match="caption_style"):
        caption_layout("neon", (854, 480))


def test_caption_groups_leave_no_orphan_tail_and_keep_words_in_order_with_their_times():
    vocabulary = ("the", "river", "carried", "our", "small", "boat", "quietly", "past", "sleeping", "houses", "and",
                  "away")
    for size in ((854, 480), (480, 854), (480, 480)):
        layout = caption_layout("bold", size)
        for count in range(3, 40):
            words = [vocabulary[(i * 5) % len(vocabulary)] for i in range(count)]
            words[-1] += "."
            timed = [TimedWord(w, 0.3 * i, 0.3 * i + 0.25) for i, w in enumerate(words)]
            events = group_words(layout, timed, window_end_s=100.0)
            assert all(len(e.text.split()) > 2 for e in events), (size, count, [e.lines for e in events])
            assert all(1 <= len(e.lines) <= MAX_LINES for e in events)
            assert " ".join(e.text for e in events).split() == words  # every word once, in order
            firsts = [timed[sum(len(x.text.split()) for x in events[:i])] for i in range(len(events))]
            assert [e.start_s for e in events] == [w.start_s for w in firsts]  # shown when its first word is heard
            assert all(a.end_s <= b.start_s for a, b in zip(events, events[1:]))
            for e in events:  # two lines are balanced: neither is much wider than needed
                if len(e.lines) == 2:
                    widths = [text_width(layout, line) for line in e.lines]
                    assert min(widths) > 0.3 * max(widths), e.lines
        # A narration of one or two words stays one caption.
        assert [e.text for e in group_words(layout, [TimedWord("Hi", 0, 0.2), TimedWord("there.", 0.3, 0.5)],
                                            window_end_s=9.0)] == ["Hi there."]


@pytest.mark.parametrize("style", ["bold", "boxed"])
def test_caption_ink_stays_in_the_safe_areas(style, tmp_path):
    """Captions drawn by libass (the overlay code a render blends in): all ink, outline, shadow and box included,
    within the title-safe 5 % of every edge; in 9:16 above the bottom 20 % and out of the right 12 % the apps cover."""
    words = "WOMBAT WAVES MAKE WIDE WAKES WHILE WALRUSES WATCH".split() * 3
    for size in ((854, 480), (480, 854), (480, 480), (720, 1280)):
        layout = caption_layout(style, size)
        width, height = size
        timed = [TimedWord(w, 0.3 * i, 0.3 * i + 0.25) for i, w in enumerate(words)]
        events = [e for e in group_words(layout, timed, window_end_s=100.0) if len(e.lines) == 2]
        assert events
        boxes = caption_ink(layout, events, tmp_path / f"{style}-{width}x{height}")
        for event, (x0, x1, y0, y1) in zip(events, boxes):
            assert x0 >= 0.05 * width and x1 < 0.95 * width and y0 >= 0.05 * height, (size, x0, x1, y0)
            if height > width:
                assert y1 < 0.80 * height and x1 < 0.88 * width, (size, event.lines, x1, y1)
                # Centred in the width left of the buttons: the ink sits left of the frame's centre.
                assert (x0 + x1) / 2 < width / 2 - 0.02 * width
            else:
                assert y1 < 0.95 * height, (size, y1)


def test_ass_escaping_keeps_user_text_literal():
    assert escape_ass_text(SPECIAL) == "' : , ; [ ] \\" + WORD_JOINER + " % \\{ \\}"
    assert escape_ass_text("a\\Nb") == "a\\" + WORD_JOINER + "Nb"
    assert escape_ass_text("{\\b1}X") == "\\{\\" + WORD_JOINER + "b1\\}X"
    assert escape_ass_text("line\none\r\ntwo\tthree\x00") == "line one two three"
    for text in (SPECIAL, "a\\Nb \\n \\h", "{\\b1}X", "}{", "\\{\\}", "\\\\N"):
        out = escape_ass_text(text)
        for i, ch in enumerate(out):  # no override block can open and no backslash escape can form
            if ch in "{}":
                assert i > 0 and out[i - 1] == "\\", (text, out)
            if ch == "\\":
                assert out[i + 1] in (WORD_JOINER, "{", "}"), (text, out)
        assert "\n" not in out and "\r" not in out


def test_ass_document_is_well_formed():
    layout = caption_layout("boxed", (1280, 720))
    from studio.compose.captions import CaptionEvent

    doc = ass_document(layout, [CaptionEvent(1.234, 2.5, ("top {x}", "bottom\\N")), CaptionEvent(2.5, 3.0, ("x",))])
    assert "PlayResX: 1280\nPlayResY: 720" in doc
    style = next(line for line in doc.splitlines() if line.startswith("Style:"))
    assert len(style.split(",")) == 23 and ",3," in style  # 23 fields; BorderStyle 3 draws the box
    events = [line for line in doc.splitlines() if line.startswith("Dialogue:")]
    assert events[0].startswith("Dialogue: 0,0:00:01.23,0:00:02.50,Caption,,0,0,0,,"
                                "top \\{x\\}\\Nbottom\\" + WORD_JOINER + "N")
    assert events[1].startswith("Dialogue: 0,0:00:02.50,0:00:03.00,")


# -- encoders ----------------------------------------------------------------------------------------------------------
def test_pick_encoder_probes_with_a_real_encode():
    preset = load_preset("premium")
    chosen = pick_encoder(preset)
    assert chosen in preset.encoders
    nvenc_works = probe_encoder("h264_nvenc", preset.encoder_args("h264_nvenc"))[0]
    other_hardware = any(encoder_works(preset, e) for e in preset.encoders if e not in ("libx264", "h264_nvenc"))
    if not nvenc_works and not other_hardware:  # listed by ffmpeg, but no GPU here: the probe must notice
        assert chosen == "libx264"
        with pytest.raises(StudioError, match="does not work"):
            compose(Project(title="t", scenes=()), preset, Path("/tmp/unused.mp4"), encoder="h264_nvenc")
    assert probe_encoder("libx264", preset.encoder_args("libx264")) == (True, "")
    with pytest.raises(StudioError, match="not configured"):
        compose(Project(title="t", scenes=()), preset, Path("/tmp/unused.mp4"), encoder="libvpx")


# -- bad input ---------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_studio_errors_that_say_what_to_do(scene_of, tmp_path):
    good = scene_of("a")
    out = tmp_path / "out.mp4"
    no_visual = Project(title="t", scenes=(good, replace(scene_of("b"), visual=None)))
    with pytest.raises(StudioError, match=r"scene 2 \(id b\) has no visual: run illustrate first"):
        compose(no_visual, "draft", out)
    silent = Project(title="t", scenes=(replace(good, audio=None, audio_duration_s=None),))
    with pytest.raises(StudioError, match="neither narration audio nor a duration"):
        compose(silent, "draft", out)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(StudioError, match=r"scene 1 \(id a\).*cannot read image"):
        compose(Project(title="t", scenes=(replace(good, visual=corrupt),)), "draft", out)
    with pytest.raises(StudioError, match="output folder .* does not exist"):
        compose(Project(title="t", scenes=(good,)), "draft", tmp_path / "missing" / "out.mp4")
    with pytest.raises(StudioError, match=r"scene 1 \(id a\): `transition` must be one of"):
        compose(Project(title="t", scenes=(replace(good, transition="spin"),)), "draft", out)
    missing_audio = replace(good, audio=tmp_path / "gone.wav")
    with pytest.raises(StudioError, match="narration .* does not exist"):
        compose(Project(title="t", scenes=(missing_audio,)), "draft", out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# -- renders -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aspect", ["16:9", "9:16", "1:1"])
@pytest.mark.parametrize("tier", ["draft", "standard", "premium", "maximum"])
def test_render_every_preset_and_aspect(tier, aspect, scene_of, tmp_path):
    preset = load_preset(tier)
    # Keep the big tiers short: 4K x264 is slow on two cores.
    length = {"draft": None, "standard": None, "premium": 0.8, "maximum": 0.4}[tier]
    scene = scene_of("a", speech_s=0.15, words=("Hi",), image_size=(500, 500) if aspect == "1:1" else (640, 360),
                     duration_s=length)
    project = Project(title="t", aspect=aspect, scenes=(scene,))
    result = compose(project, preset, tmp_path / "v.mp4")
    facts = video_facts(result.path)
    width, height = preset.size(aspect)
    assert (facts["width"], facts["height"]) == (width, height) == (result.width, result.height)
    assert facts["fps"] == pytest.approx(preset.fps)
    assert abs(facts["duration_s"] - result.timeline.duration_s) <= 1 / preset.fps
    assert facts["frames"] == result.timeline.frame_count
    assert facts["video_codec"] == "h264" and facts["pix_fmt"] == "yuv420p" and result.encoder == "libx264"
    assert facts["has_audio"] and facts["audio_codec"] == "aac"
    audio = next(s for s in ffprobe(result.path)["streams"] if s["codec_type"] == "audio")
    assert int(audio["sample_rate"]) == preset.sample_rate
    boxes = top_level_boxes(result.path)
    assert boxes.index("moov") < boxes.index("mdat")  # faststart: playable while downloading
    assert result.size_bytes == result.path.stat().st_size
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_captions_are_burned_in_and_readable(scene_of, tmp_path):
    scene = scene_of("a", speech_s=2.0, words=("HELLO", "WORLD"), colour=(60, 110, 60))
    with_captions = compose(Project(title="t", scenes=(scene,)), "draft", tmp_path / "on.mp4")
    without = compose(Project(title="t", scenes=(scene,), captions=False), "draft", tmp_path / "off.mp4")
    event = with_captions.timeline.captions[0]
    assert event.lines == ("HELLO WORLD",) and without.timeline.captions == ()
    t = (event.start_s + event.end_s) / 2
    on, off = frame_at(with_captions.path, t).astype(int), frame_at(without.path, t).astype(int)
    h = on.shape[0]
    band = slice(int(h * 0.70), h)  # where bottom captions sit
    changed = np.abs(on - off) > 40
    assert changed[band].mean() > 0.02  # text and outline
    assert changed[: int(h * 0.6)].mean() < 0.001  # the rest: the same picture
    assert np.abs(on[: int(h * 0.6)] - off[: int(h * 0.6)]).mean() < 1.5
    # OCR the caption band: white text, so threshold it into black-on-white for tesseract.
    from PIL import Image

    text_mask = np.where(on[band] >= 200, 0, 255).astype(np.uint8)
    png = tmp_path / "band.png"
    Image.fromarray(text_mask).resize((text_mask.shape[1] * 2, text_mask.shape[0] * 2)).save(png)
    ocr = subprocess.run(["tesseract", str(png), "stdout", "--psm", "7"], capture_output=True, text=True)
    assert "HELLO WORLD" in ocr.stdout.upper().replace("0", "O"), ocr.stdout


def test_special_caption_text_is_drawn_literally(scene_of, tmp_path):
    texts = ["X", "{\\b1}X", "a\\Nb", SPECIAL, "one\ntwo"]
    words = []
    for i, text in enumerate(texts):  # one caption each: a long pause between them
        words.append(WordTiming(text, 1.2 * i, 1.2 * i + 0.5))
    audio_s = 1.2 * len(texts)
    scene = replace(scene_of("a", speech_s=audio_s), words=tuple(words), narration="")
    result = compose(Project(title="t", scenes=(scene,)), "draft", tmp_path / "v.mp4")
    events = result.timeline.captions
    assert [e.text for e in events] == ["X", "{\\b1}X", "a\\Nb", SPECIAL, "one two"]
    layout = result.timeline.caption_layout
    boxes = {}
    for event in events:
        gray = frame_at(result.path, (event.start_s + event.end_s) / 2)
        band = gray[int(gray.shape[0] * 0.6):]
        boxes[event.text] = ink_box(band)
        assert boxes[event.text] is not None, event.text
    width = {k: b[2] - b[0] for k, b in boxes.items()}
    height = {k: b[3] - b[1] for k, b in boxes.items()}
    assert width["{\\b1}X"] > 3 * width["X"]  # the override was not applied: its characters are drawn
    assert height["a\\Nb"] < 1.5 * height["X"]  # \N did not break the line
    for text in ("{\\b1}X", "a\\Nb", SPECIAL, "one two"):  # the ink is as wide as the literal text in this font
        expected = text_width(layout, text)
        assert abs(width[text] - expected) < 0.12 * expected + 4, (text, width[text], expected)


def test_clip_shorter_than_its_scene_loops(make_clip, make_tone, tmp_path):
    clip = make_clip("clip.mp4", size=(320, 240), duration_s=0.5, fps=24)
    audio = make_tone("a.wav", duration_s=0.3)
    scene = Scene(id="c", narration="", audio=audio, audio_duration_s=0.3, visual=clip, duration_s=1.6)
    result = compose(Project(title="t", scenes=(scene,), captions=False), "draft", tmp_path / "v.mp4")
    assert result.timeline.segments[0].kind == "video"
    facts = video_facts(result.path)
    assert abs(facts["duration_s"] - 1.6) <= 1 / 24 and facts["frames"] == round(1.6 * 24)
    first, looped = frame_at(result.path, 0.2).astype(int), frame_at(result.path, 0.7).astype(int)
    later = frame_at(result.path, 0.45).astype(int)
    assert np.abs(first - looped).mean() < 3  # 0.5 s later the clip shows the same picture again
    assert np.abs(first - later).mean() > 3 * max(1.0, np.abs(first - looped).mean())  # and it does move


def test_transitions_blend_the_right_scenes(make_clip, make_tone, tmp_path):
    from PIL import Image

    def solid(name: str, rgb: tuple[int, int, int]) -> Path:
        path = tmp_path / name
        Image.new("RGB", (640, 360), rgb).save(path)
        return path

    def scene(sid: str, visual: Path, transition: str | None) -> Scene:
        return Scene(id=sid, narration="", audio=make_tone(f"{sid}.wav", duration_s=0.6), audio_duration_s=0.6,
                     visual=visual, transition=transition)

    clip = make_clip("clip.mp4", size=(320, 240), duration_s=0.4, fps=24)
    scenes = (scene("a", solid("a.png", (200, 20, 20)), None), scene("b", clip, "slide"),
              scene("c", solid("c.png", (20, 200, 20)), "fade"), scene("d", solid("d.png", (20, 20, 200)), "crossfade"))
    result = compose(Project(title="t", scenes=scenes, captions=False), "draft", tmp_path / "v.mp4")
    tl = result.timeline
    assert [s.transition.kind for s in tl.segments] == ["cut", "slide", "fade", "crossfade"]
    assert video_facts(result.path)["frames"] == tl.frame_count

    def middle(i: int) -> float:
        seg = tl.segments[i]
        return seg.start_s + seg.transition.duration_s / 2

    slide = frame_at(result.path, middle(1), "rgb24").astype(int)
    w = slide.shape[1]
    left, right = slide[:, : w // 4].mean(axis=(0, 1)), slide[:, -w // 4:].mean(axis=(0, 1))
    assert left[0] > 150 and left[1] < 60  # the old scene, pushed left
    assert abs(right[0] - left[0]) > 40  # the clip coming in from the right
    faded = frame_at(result.path, middle(2))
    assert faded.mean() < 40  # through black: dark at the middle
    mixed = frame_at(result.path, middle(3), "rgb24").astype(int).mean(axis=(0, 1))
    assert 70 < mixed[1] < 150 and 70 < mixed[2] < 150 and mixed[0] < 50  # half green, half blue


def _tone_level(samples: np.ndarray, rate: int, freq_hz: float) -> float:
    """Amplitude of one frequency in a stretch of mono samples (a single DFT bin, Hann window)."""
    window = np.hanning(len(samples))
    t = np.arange(len(samples)) / rate
    return float(abs(np.sum(samples * window * np.exp(-2j * np.pi * freq_hz * t))) / np.sum(window) * 2)


def test_music_is_looped_and_ducked_under_narration_and_loudness_normalised(make_image, make_tone, tmp_path):
    voice = make_tone("voice.wav", duration_s=1.5, freq_hz=220.0)
    music = make_tone("music.wav", duration_s=0.7, freq_hz=880.0, sample_rate=44100)  # shorter than the video: loops
    scene = Scene(id="a", narration="", audio=voice, audio_duration_s=1.5, duration_s=3.6,
                  visual=make_image("a.png"))
    project = Project(title="t", scenes=(scene,), music=music, music_volume=0.3, captions=False)
    result = compose(project, "draft", tmp_path / "v.mp4")
    rate = 48000
    audio = read_audio(result.path, rate)[:, 0]
    voice_at = DRAFT.lead_s
    during = audio[int((voice_at + 0.3) * rate):int((voice_at + 1.3) * rate)]
    gap_from = voice_at + 1.5 + result.timeline.music.release_s + 0.1
    gap = audio[int(gap_from * rate):int(3.5 * rate)]
    music_during, music_gap = _tone_level(during, rate, 880.0), _tone_level(gap, rate, 880.0)
    assert _tone_level(during, rate, 220.0) > 5 * _tone_level(gap, rate, 220.0)  # the narration is where it belongs
    assert music_gap > 0.01  # the music plays (looped: 0.7 s of it covers 3.6 s)
    assert music_during < 0.5 * music_gap, (music_during, music_gap)  # ducked (about -10 dB) under the narration
    loud = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(result.path), "-vn", "-af", "ebur128",
                           "-f", "null", "-"], capture_output=True, text=True).stderr
    integrated = float(loud.rsplit("I:", 1)[1].split("LUFS")[0])
    assert abs(integrated - DRAFT.loudness_lufs) < 1.5, integrated


def test_watermark_is_drawn_in_its_corner(scene_of, tmp_path):
    from PIL import Image

    logo = np.zeros((60, 120, 4), np.uint8)
    logo[10:50, 10:110] = (255, 0, 255, 255)  # an opaque magenta bar on a transparent background
    path = tmp_path / "logo.png"
    Image.fromarray(logo).save(path)  # 4 channels: RGBA
    scene = scene_of("a", speech_s=0.5)
    plain = compose(Project(title="t", scenes=(scene,), captions=False), "draft", tmp_path / "plain.mp4")
    marked = compose(Project(title="t", scenes=(scene,), captions=False, watermark=path), "draft", tmp_path / "mark.mp4")
    a, b = frame_at(plain.path, 0.5, "rgb24").astype(int), frame_at(marked.path, 0.5, "rgb24").astype(int)
    diff = np.abs(a - b).sum(axis=2)
    h, w = diff.shape
    corner = diff[: h // 4, w * 3 // 4:]
    rest = diff.copy()
    rest[: h // 4, w * 3 // 4:] = 0
    assert corner.mean() > 20 and rest.mean() < 1.0
    ys, xs = np.nonzero(diff > 150)  # the logo itself (encoder noise at sharp edges stays far below)
    assert len(xs) > 1000 and xs.min() > w * 0.8 and ys.max() < h * 0.2  # top-right
    r, g, bl = b[ys, xs].mean(axis=0)
    assert r > 150 and bl > 150 and g < 120  # magenta, mostly opaque


def test_cancel_stops_ffmpeg_at_once_and_leaves_no_trace(scene_of, tmp_path):
    scenes = tuple(scene_of(f"s{i}", speech_s=4.0, image_size=(1280, 720)) for i in range(4))
    project = Project(title="t", scenes=scenes)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous video")
    token = CancelToken()
    started = threading.Event()
    fractions = []

    def progress(fraction: float, message: str) -> None:
        fractions.append(fraction)
        if "encoding" in message and fraction > 0.05:
            started.set()

    outcome = {}

    def run() -> None:
        try:
            compose(project, "standard", out, on_progress=progress, cancel=token)
            outcome["result"] = "finished"
        except BaseException as exc:
            outcome["result"] = exc
        outcome["at"] = time.monotonic()

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60), "encoding never started"
    assert ffmpeg_children(), "ffmpeg should be running while encoding"
    cancelled_at = time.monotonic()
    token.cancel()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome["result"], Cancelled), outcome["result"]
    assert outcome["at"] - cancelled_at < 1.5
    assert ffmpeg_children() == []
    assert out.read_bytes() == b"previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.mp4"] + [f"s{i}.wav" for i in range(4)]
                                                                   + [f"s{i}.png" for i in range(4)])
    assert fractions == sorted(fractions) and max(fractions) < 0.97


def test_existing_output_is_replaced_only_after_success(scene_of, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous video")
    good, second = scene_of("a", speech_s=0.5), scene_of("b", speech_s=0.5)
    # A PNG whose header is fine but whose pixels are cut off: it fails while encoding, not before.
    data = Path(second.visual).read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(StudioError, match=r"scene 2 \(id b\)"):
        compose(Project(title="t", scenes=(good, replace(second, visual=broken))), "draft", out,
                on_progress=lambda f, m: seen.append(out.read_bytes()))
    assert out.read_bytes() == b"previous video" and set(seen) == {b"previous video"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    result = compose(Project(title="t", scenes=(good, second)), "draft", out,
                     on_progress=lambda f, m: seen.append(out.read_bytes()[:14]) if f < 1 else None)
    assert set(seen) == {b"previous video"}  # untouched until the new file was complete
    assert video_facts(out)["frames"] == result.timeline.frame_count


def test_studio_compose_stays_the_verb_after_its_subpackage_is_imported(tmp_path, make_image):
    import importlib

    import studio

    importlib.import_module("studio.compose.timeline")  # rebinds `studio.compose` to the subpackage
    project = Project(title="Verb", scenes=(Scene(id="a", narration="", duration_s=0.5, visual=make_image("a.png")),))
    first = studio.compose(project, "draft", tmp_path / "one.mp4")
    second = studio.compose(project, "draft", tmp_path / "two.mp4")  # the second use fails if the module shadows the verb
    assert first.path.is_file() and second.path.is_file()
    assert video_facts(second.path)["width"] == 854


def test_ffmpeg_runs_leave_no_pipe_open():
    """Each ffmpeg run closes its pipes when it ends (a server renders for days: before, ~3 descriptors a render
    stayed open until the garbage collector found them, as the soak bench measured)."""
    import gc
    import os

    from studio.media import Ffmpeg, run_ffmpeg
    from studio.progress import CancelToken

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    args = ["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "0.05", "-f", "null", "-"]
    run_ffmpeg(args)  # warm-up (threads, lazily opened files)
    gc.disable()
    try:
        before = open_fds()
        for _ in range(5):
            run_ffmpeg(args, cancel=CancelToken())
            with Ffmpeg(["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "0.05", "-f", "s16le", "pipe:1"],
                        stdout=True, cancel=CancelToken()) as ff:
                ff.stdout.read()
        assert open_fds() <= before
    finally:
        gc.enable()


@pytest.mark.parametrize("style", ["bold", "words"])
def test_an_abbreviations_full_stop_does_not_end_a_caption(style):
    """ "In 1822, Dr. Smith paid ..." was shown as "In 1822, Dr." then "Smith paid ...": the full stop of "Dr." ends
    no sentence (the narrators read on without a pause), so "Dr." and "Smith" share a caption; a real full stop
    still ends one."""
    from studio.compose.captions import caption_events

    layout = caption_layout(style, (1280, 720))
    text = "In 1822, Dr. Smith paid for tea. Then Mrs. Jones came."
    timed = [TimedWord(w, 0.3 * i, 0.3 * i + 0.25) for i, w in enumerate(text.split())]
    events = caption_events(layout, timed, window_end_s=100.0)
    texts = [e.text for e in events]
    assert any("Dr. Smith" in t for t in texts), texts
    if style == "bold":  # (`words` shows at most three words: "Then Mrs." and "Jones came." is its best split)
        assert any("Mrs. Jones" in t for t in texts), texts
    assert not any("tea. Then" in t for t in texts), texts
