"""Caption styles beyond lines of words: ``karaoke`` (the spoken word highlighted, one caption event per word) and
``words`` (the shorts look: one to three large words at a time, higher in the frame). Their events, their ASS text
(user text stays literal), their place in the safe areas, their segment keys, and real renders checked on the
decoded pixels: the highlight over the word being spoken, the caption changing at the word times."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from studio import Project, Scene, StudioError, WordTiming, load_preset
from studio.compose import build_timeline, compose
from studio.compose.captions import (PAUSE_S, STYLES, WORDS_HOLD_S, TimedWord,
                                     ass_document, caption_events, caption_layout, clean_text, escape_ass_text,
                                     group_words, text_width)
from studio.compose.segments import join_segments, plan_segments, render_segment, segment_key, sub_timeline
from studio.testing import TINY_PRESET
from tests.conftest import caption_ink, video_facts
from tests.test_compose import frame_at

CLAUSE_END = re.compile(r"[.!?,;:]$")
SIZES = ((854, 480), (480, 854), (480, 480), (1080, 1920))
TEXT = ("Well, the quick brown fox jumps over the lazy dog. Then it ran away quickly, never to return; and "
        "nobody knew where it went!")


def timed(text: str, step_s: float = 0.3, gap_after: dict[int, float] | None = None) -> list[TimedWord]:
    """`text`'s words, one every `step_s` (each spoken for 80 % of it), with extra silence after some of them."""
    out, at = [], 0.0
    for i, word in enumerate(text.split()):
        out.append(TimedWord(word, at, at + 0.8 * step_s))
        at += step_s + (gap_after or {}).get(i, 0.0)
    return out


def tokens(event) -> list[str]:
    return " ".join(event.lines).split(" ")


@pytest.fixture
def small(tmp_path):
    """A 640x360 preset at 12 fps, near-lossless, so colours and edges survive the encode; short lead and tail."""
    text = (TINY_PRESET.replace('"16:9" = [128, 72]', '"16:9" = [640, 360]')
            .replace('"9:16" = [72, 128]', '"9:16" = [360, 640]').replace("crf = 35", "crf = 12"))
    path = tmp_path / "small.toml"
    path.write_text(text, "utf-8")
    return load_preset(path)


@pytest.fixture
def flat_scene(tmp_path, make_tone):
    """A scene on a flat dark-blue picture (no yellow, no white; Ken Burns moves leave it unchanged) with words
    spoken at known times."""
    from PIL import Image

    def make(words: list[tuple[str, float, float]], speech_s: float, sid: str = "s", **fields) -> Scene:
        picture = tmp_path / f"{sid}.png"
        Image.new("RGB", (640, 360), (30, 50, 110)).save(picture)
        audio = make_tone(f"{sid}.wav", duration_s=speech_s)
        timings = tuple(WordTiming(w, a, b) for w, a, b in words)
        return Scene(id=sid, narration=" ".join(w for w, _, _ in words), audio=audio, audio_duration_s=speech_s,
                     words=timings, visual=picture, **fields)

    return make


# -- karaoke: events and ASS -------------------------------------------------------------------------------------------
def test_karaoke_is_one_event_per_word_with_that_word_highlighted():
    for size in SIZES:
        layout = caption_layout("karaoke", size)
        words = timed(TEXT, gap_after={9: 0.9})  # a pause after "dog."
        lines_of = {(e.start_s, e.lines) for e in group_words(layout, words, window_end_s=100.0)}
        events = caption_events(layout, words, window_end_s=100.0)
        assert len(events) == len(words)  # no word too wide for a line here: one event each
        # The groups are the line captions' (same lines, same start), each word lit in turn, in order.
        groups = [(e.start_s, e.lines) for e in events if e.highlight[0] == 0]
        assert set(groups) == lines_of and len(groups) == len(lines_of)
        spoken = []
        for event in events:
            first, end = event.highlight
            assert end == first + 1 and 0 <= first < len(tokens(event))
            spoken.append(tokens(event)[first])
        assert spoken == [w.text for w in words]
        # Each word's event starts when it is spoken (a group's first at the group's start) and lasts until the next
        # word starts: contiguous within a group, never overlapping.
        for event, word, nxt in zip(events, words, events[1:] + [None]):
            assert event.start_s == pytest.approx(word.start_s)
            if nxt is not None:
                assert event.end_s <= nxt.start_s + 1e-9
                if nxt.highlight[0] > 0:
                    assert event.end_s == pytest.approx(nxt.start_s)
        # The last word of a caption stays lit until the caption ends: before the pause, the group's hold.
        dog = next(e for e in events if tokens(e)[e.highlight[0]] == "dog.")
        assert dog.end_s == pytest.approx(words[9].end_s + 0.35)


def test_karaoke_ass_highlights_the_right_word_and_keeps_user_text_literal():
    layout = caption_layout("karaoke", (854, 480))
    text = "{\\b1}X a\\Nb }{ plain \\ end\\"
    words = timed(text)
    events = caption_events(layout, words, window_end_s=100.0)
    doc = ass_document(layout, events)
    dialogues = [line.split(",", 9)[9] for line in doc.splitlines() if line.startswith("Dialogue:")]
    assert len(dialogues) == len(events) == len(words)
    tag_on, tag_off = "{\\1c&H00FFFF&}", "{\\r}"
    for text_field, event in zip(dialogues, events):
        # The only override blocks are the two around the highlighted word: every other brace is escaped.
        opened = [i for i, ch in enumerate(text_field) if ch == "{" and (i == 0 or text_field[i - 1] != "\\")]
        assert len(opened) == 2, text_field
        start = text_field.index(tag_on)
        end = text_field.index(tag_off, start)
        assert opened == [start, end]
        lit = text_field[start + len(tag_on):end]
        assert lit == escape_ass_text(tokens(event)[event.highlight[0]])
        # Without the two tags the text is exactly the escaped lines: the user's text drawn literally.
        plain = text_field.replace(tag_on, "", 1).replace(tag_off, "", 1)
        assert plain == "\\N".join(escape_ass_text(line) for line in event.lines)
    assert [tokens(e)[e.highlight[0]] for e in events] == [clean_text(w.text) for w in words]


def test_karaoke_survives_the_timeline_the_overlay_slots_and_segment_keys(tmp_path, small, flat_scene):
    words = [("ONE", 0.0, 0.4), ("TWO", 0.5, 0.9), ("THREE", 1.0, 1.4), ("FOUR", 1.5, 1.9)]
    scene = flat_scene(words, 2.0)
    timeline = build_timeline(Project(title="t", scenes=(scene,), caption_style="karaoke"), small, encoder="libx264")
    assert [e.highlight for e in timeline.captions] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert timeline.captions[0].lines == ("ONE TWO THREE FOUR",)
    assert timeline.to_rows()[0]["captions"] == 1  # one caption, shown as four events
    # A part of the video keeps its events' highlights, and its key depends on them: two parts that show the same
    # lines on the same frames with another word lit are different segments.
    part = sub_timeline(timeline, 0, timeline.frame_count)
    assert [e.highlight for e in part.captions] == [e.highlight for e in timeline.captions]
    moved = replace(part, captions=tuple(replace(e, highlight=((e.highlight[0] + 1) % 4, (e.highlight[0] + 1) % 4 + 1))
                                         for e in part.captions))
    assert segment_key(moved) != segment_key(part)
    bold = build_timeline(Project(title="t", scenes=(scene,)), small, encoder="libx264")
    assert segment_key(sub_timeline(bold, 0, bold.frame_count)) != segment_key(part)
    assert all(e.highlight is None for e in bold.captions)


# -- words: grouping ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_words_shows_one_to_three_words_at_a_time_each_once_in_order(size):
    layout = caption_layout("words", size)
    rng = np.random.default_rng(sum(size))
    vocab = ["a", "cat", "sat", "on", "the", "mat", "quickly", "extraordinary", "Oh", "yes", "we", "ran", "home",
             "{\\b1}", "x\\Ny", "}"]
    for _ in range(25):  # random sentences: punctuation, pauses and word lengths anywhere
        n = int(rng.integers(1, 30))
        words, at = [], 0.0
        for _ in range(n):
            text = str(rng.choice(vocab)) + str(rng.choice(["", "", "", "", ",", ".", "!", ";"]))
            length = float(rng.uniform(0.1, 0.5))
            words.append(TimedWord(text, at, at + length))
            at += length + float(rng.choice([0.02, 0.05, 0.1, 0.8]))
        events = caption_events(layout, words, window_end_s=at + 5.0)
        # Every word exactly once, in order; one to three words a caption; within two lines.
        assert [t for e in events for t in tokens(e)] == [w.text for w in words]
        sizes = [len(tokens(e)) for e in events]
        assert all(1 <= s <= 3 for s in sizes) and all(len(e.lines) <= 2 for e in events)
        # Each caption starts at its first word's onset, shows while its words are spoken, never overlaps the next,
        # and bridges a short gap to the next caption (no blink) but not a pause.
        at_word = 0
        for i, event in enumerate(events):
            group = words[at_word:at_word + sizes[i]]
            at_word += sizes[i]
            assert event.start_s == group[0].start_s
            if i + 1 < len(events):
                nxt = words[at_word]
                assert event.end_s <= nxt.start_s
                gap = nxt.start_s - group[-1].end_s
                assert event.end_s == pytest.approx(nxt.start_s if gap <= PAUSE_S else group[-1].end_s + WORDS_HOLD_S)
            else:
                assert event.end_s == pytest.approx(group[-1].end_s + WORDS_HOLD_S)
        # Punctuation and pauses break first: the captions split each run of words between two breaks, and within
        # a run leave as few one-word captions as any split into fitting captions of one to three words can.
        runs, current = [], []
        for word in words:
            if current and (CLAUSE_END.search(current[-1].text) or word.start_s - current[-1].end_s > PAUSE_S):
                runs.append(current)
                current = []
            current.append(word)
        runs.append(current)
        at_word = 0
        for run in runs:
            taken, singles = 0, 0
            while taken < len(run):
                size = sizes.pop(0)
                assert taken + size <= len(run), "a caption crosses a break"
                singles += size == 1
                taken += size
            assert singles == (fewest_singles(layout, run) if len(run) > 1 else 1), [w.text for w in run]


def fewest_singles(layout, run) -> int:
    """The fewest one-word groups of any split of `run` into groups of 1-3 words that fit two lines (brute force)."""
    from functools import lru_cache

    from studio.compose.captions import wrap_words

    @lru_cache(maxsize=None)
    def best(i: int) -> float:
        if i == len(run):
            return 0
        options = [1 + best(i + 1)]
        for size in (2, 3):
            if i + size <= len(run) and len(wrap_words(layout, [w.text for w in run[i:i + size]])) <= 2:
                options.append(best(i + size))
        return min(options)

    return best(0)


def test_words_prefers_even_groups_and_breaks_at_punctuation_first():
    layout = caption_layout("words", (854, 480))
    events = caption_events(layout, timed("Well, the cat sat on the mat. One two three four. Go!"), window_end_s=99.0)
    assert [e.text for e in events] == ["Well,", "the cat sat", "on the mat.", "One two", "three four.", "Go!"]
    assert group_words(layout, timed("one two three four five six seven"), window_end_s=99.0)[0].text.count(" ") > 2
    # Seven words: three captions, never one left alone.
    sizes = [len(tokens(e)) for e in caption_events(layout, timed("one two three four five six seven"),
                                                    window_end_s=99.0)]
    assert sorted(sizes) == [2, 2, 3]


def test_words_style_is_larger_and_higher_than_bold():
    for size in SIZES:
        words, bold = caption_layout("words", size), caption_layout("bold", size)
        width, height = size
        assert words.font_size > 1.3 * bold.font_size
        # A one-line caption's centre near 70 % of the height (9:16: the lower third, well above the apps' bar).
        centre = height - words.margin_v_px - words.font_size / 2
        assert centre == pytest.approx(0.70 * height, abs=1.0)
        assert words.margin_v_px > bold.margin_v_px


@pytest.mark.parametrize("style", ["karaoke", "words"])
def test_new_styles_ink_stays_in_the_safe_areas(style, tmp_path):
    """As drawn by libass for the overlays: all ink (outline and shadow included) inside the title-safe 5 %; in 9:16
    above the bottom 20 % and clear of the right-hand buttons; a `words` caption around 70 % of the height."""
    text = "WOMBAT WAVES MAKE WIDE WAKES, WHILE WALRUSES WATCH. EXTRAORDINARILY-LONG-COMPOUND-WORDS-WRAP " * 2
    for size in SIZES[:3]:
        layout = caption_layout(style, size)
        width, height = size
        events = caption_events(layout, timed(text), window_end_s=100.0)
        assert any(len(e.lines) == 2 for e in events)
        boxes = caption_ink(layout, events, tmp_path / f"{style}-{width}x{height}")
        for event, (x0, x1, y0, y1) in zip(events, boxes):
            assert x0 >= 0.05 * width and x1 < 0.95 * width and y0 >= 0.05 * height, (size, event.lines)
            if height > width:
                assert y1 < 0.80 * height and x1 < 0.88 * width, (size, event.lines, x1, y1)
            else:
                assert y1 < 0.95 * height
            if style == "words" and len(event.lines) == 1:
                assert abs((y0 + y1) / 2 - 0.70 * height) < 0.04 * height, (size, event.lines, y0, y1)


def test_every_style_is_offered_wherever_styles_are_chosen(tmp_path):
    from studio.cli import _job_request, _project_fields, build_parser
    from studio.server.requests import RequestError, parse_request

    from studio.ui.compose import STYLE_LABELS

    assert {"bold", "boxed", "plain", "karaoke", "words"} <= set(STYLES)
    assert set(STYLE_LABELS) == set(STYLES)  # the app's style choice names every style
    for style in ("karaoke", "words"):  # the request schema (HTTP API, job runner, the app)
        assert parse_request({"script": "A short script.", "caption_style": style}).caption_style == style
    with pytest.raises(RequestError, match="caption_style"):
        parse_request({"script": "A short script.", "caption_style": "neon"})
    script = tmp_path / "script.md"
    script.write_text("A short script.", "utf-8")
    for style in ("karaoke", "words"):
        args = build_parser().parse_args(["render", str(script), "-o", "x.mp4", "--caption-style", style])
        assert _project_fields(args)["caption_style"] == style
        args = build_parser().parse_args(["jobs", "submit", str(script), "--caption-style", style])
        assert _job_request(args, client=None)["caption_style"] == style
    args = build_parser().parse_args(["render", str(script), "-o", "x.mp4", "--caption-style", "neon"])
    with pytest.raises(StudioError, match="--caption-style must be one of bold, boxed, plain, karaoke, words"):
        _project_fields(args)


# -- real renders ------------------------------------------------------------------------------------------------------
def yellow(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 150) & (g > 150) & (b < 110) & (r - b > 90)


def white(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(int) > 200).all(axis=-1)


def test_karaoke_render_lights_the_word_being_spoken(tmp_path, small, flat_scene):
    words = [("ONE", 0.0, 0.3), ("TWO", 0.6, 0.9), ("THREE", 1.2, 1.5), ("FOUR", 1.8, 2.1)]  # gaps of 3-4 frames
    scene = flat_scene(words, 2.2)
    result = compose(Project(title="t", scenes=(scene,), caption_style="karaoke"), small, tmp_path / "k.mp4")
    layout, lead = result.timeline.caption_layout, small.lead_s
    line = "ONE TWO THREE FOUR"
    assert result.timeline.captions[0].lines == (line,)
    # Where libass puts each word: the line centred between the margins, words at their measured advances.
    left = layout.margin_l_px + (layout.width - layout.margin_l_px - layout.margin_r_px - text_width(layout, line)) / 2
    spans, at = [], 0
    for word, _, _ in words:
        x0 = left + text_width(layout, line[:at])
        spans.append((x0, x0 + text_width(layout, word)))
        at += len(word) + 1
    pad = layout.outline_px + 2
    band = slice(int(layout.height * 0.6), layout.height)
    seen = []
    for k, (word, start, end) in enumerate(words):
        rgb = frame_at(result.path, lead + (start + end) / 2, "rgb24")[band]
        lit, inked = yellow(rgb), white(rgb)
        xs = np.nonzero(lit)[1]
        assert len(xs) > 30, (word, len(xs))
        a, b = spans[k]
        inside = ((xs >= a - pad) & (xs <= b + pad)).mean()
        assert inside > 0.95, (word, inside, xs.min(), xs.max(), spans[k])
        for j, (a, b) in enumerate(spans):  # every other word is drawn white, with no yellow on it
            if j != k:
                cols = slice(int(a + pad), int(b - pad))
                assert lit[:, cols].sum() == 0, (word, j)
                assert inked[:, cols].sum() > 20, (word, j)
        seen.append(xs.mean())
    assert seen == sorted(seen)  # the highlight moves left to right, word by word
    # Between two words (0.3 s .. 0.6 s) the word just spoken stays lit.
    rgb = frame_at(result.path, lead + 0.45, "rgb24")[band]
    xs = np.nonzero(yellow(rgb))[1]
    assert len(xs) > 30 and spans[0][0] - pad <= xs.mean() <= spans[0][1] + pad
    facts = video_facts(result.path)
    assert (facts["width"], facts["height"]) == (640, 360)


def test_words_render_changes_caption_at_the_word_times(tmp_path, small, flat_scene):
    names = "ONE TWO THREE FOUR FIVE SIX".split()
    words = [(w, 0.4 * i, 0.4 * i + 0.3) for i, w in enumerate(names)]
    scene = flat_scene(words, 2.5)
    project = Project(title="t", scenes=(scene,), caption_style="words", aspect="9:16")
    result = compose(project, small, tmp_path / "w.mp4")
    events, lead = result.timeline.captions, small.lead_s
    assert [len(e.lines[0].split()) for e in events] == [3, 3] or [len(tokens(e)) for e in events] == [2, 2, 2]
    height, width = 640, 360

    def caption(t: float) -> np.ndarray:
        return frame_at(result.path, t).astype(int)

    # The caption changes exactly when its first word is spoken (within a frame), and not while its words are.
    fps = small.fps
    first_words = [names.index(tokens(e)[0]) for e in events]
    for i in first_words[1:]:
        onset = lead + words[i][1]
        before, after = caption(onset - 1.5 / fps), caption(onset + 1.5 / fps)
        assert (np.abs(before - after) > 40).mean() > 0.003, names[i]
    for e in events:
        inside = [t for t in np.arange(e.start_s + 1.5 / fps, e.end_s - 1.5 / fps, 1 / fps)]
        assert len(inside) >= 2
        a, b = caption(float(inside[0])), caption(float(inside[-1]))
        assert (np.abs(a - b) > 40).mean() < 0.0005
    # No caption before the first word; the ink in the safe areas, around 70 % of the height.
    assert (caption(0.0) > 200).sum() == 0  # frame 0, before the lead (0.1 s) ends
    gray = caption((events[0].start_s + events[0].end_s) / 2)
    ys, xs = np.nonzero(gray > 200)
    assert len(xs) > 100
    assert ys.max() < 0.80 * height and ys.min() > 0.05 * height and xs.max() < 0.88 * width and xs.min() > 0.05 * width
    assert 0.6 * height < ys.mean() < 0.75 * height


def test_karaoke_segment_by_segment_matches_the_one_pass_render(tmp_path, small, flat_scene):
    """Segments cut through a caption's word events (a transition between two scenes), yet the joined video shows
    the same highlight on the same frames as a one-pass render."""
    first = flat_scene([(w, 0.3 * i, 0.3 * i + 0.25) for i, w in enumerate("ONE TWO THREE FOUR FIVE".split())], 1.6,
                       sid="a")
    second = flat_scene([(w, 0.3 * i, 0.3 * i + 0.25) for i, w in enumerate("SIX SEVEN EIGHT".split())], 1.0, sid="b",
                        transition="crossfade")
    project = Project(title="t", scenes=(first, second), caption_style="karaoke")
    timeline = build_timeline(project, small, encoder="libx264")
    plans = plan_segments(timeline)
    assert [p.kind for p in plans] == ["scene", "transition", "scene"]
    assert sum(e.highlight is not None for e in timeline.captions) == 8
    parts = [render_segment(timeline, plan, tmp_path / "assets") for plan in plans]
    joined = join_segments(timeline, [p.path for p in parts], tmp_path / "joined.mp4")
    whole = compose(project, small, tmp_path / "whole.mp4")
    x, y = rgb_frames(joined.path), rgb_frames(whole.path)
    assert len(x) == len(y) == timeline.frame_count
    lit = 0
    for k, (a, b) in enumerate(zip(x, y)):
        assert yellow(a).sum() == pytest.approx(yellow(b).sum(), abs=6), k
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0, k
        lit += yellow(a).sum() > 30
    assert lit > 0.5 * len(x)  # most frames show a lit word


def rgb_frames(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
