"""Captions: word timings grouped into one- or two-line captions, wrapped with the font's real metrics, written as an
ASS file that ffmpeg's ``subtitles`` filter (libass) burns in.

Safety: user text only ever lands in the *text* field of an ASS event, escaped so that libass shows it literally
(`escape_ass_text`); it never reaches a filter string. How libass reads event text (checked by rendering, and in
libass's ``get_next_char``): ``\\N``, ``\\n``, ``\\h``, ``\\{`` and ``\\}`` are escapes anywhere in the text, a ``{``
that has a later ``}`` opens an override block, and any other backslash is drawn as is. So a user ``\\`` is followed
by an invisible WORD JOINER (U+2060; HarfBuzz draws default-ignorable characters as nothing), ``{``/``}`` become
``\\{``/``\\}``, and newlines and other control characters become spaces (Studio wraps lines itself).

Sizes: an ASS ``Fontsize`` is the font's line height (libass: the OS/2 win ascent + descent), not its em size, so
text is measured with the font at ``Fontsize * units_per_em / (ascent + descent)`` pixels, which matches libass's
layout.

Every script: characters the caption font lacks are drawn by libass in a fallback font that fontconfig finds among
the installed fonts (the set-up installs fonts for Latin, Greek, Cyrillic, Hebrew, Arabic, Devanagari, Chinese,
Japanese and emoji); libass shapes each run with HarfBuzz and orders it with FriBiDi (Arabic joined right to left,
Devanagari conjuncts). Text is measured the same way (`studio.fonts.FallbackFont`, each fallback sized as libass sizes
it), and `caption_notes` says which scripts came from fallback fonts and which characters no installed font has.

Styles (`STYLES`, `caption_events`): ``bold``, ``boxed`` and ``plain`` show captions of one or two lines
(`group_words`); ``karaoke`` shows the same captions with the spoken word in yellow, as one event per word (an ASS
override around that word, the only unescaped braces in the text: `karaoke_events`); ``words`` (the shorts look)
shows one to three large words at a time around 70 % of the frame's height (`few_words_events`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
import shutil
import threading
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import StudioError
from ..fonts import (FontError, clusters, coverage, coverage_notes, face_of, fallback_faces, fallback_font, font_path,
                     read_font)
from ..voice.timing import boundary_strength, is_abbreviation

MAX_LINES = 2
PAUSE_S = 0.55  # a silence this long between two words starts a new caption
HOLD_S = 0.35  # a caption stays up this long after its last word (unless the next one starts)
MIN_SHOW_S = 0.6  # shortest time a caption is shown, when the next one leaves room
WORDS_HOLD_S = 0.2  # `few_words_events`: a caption stays up this long after its last word before a pause
KARAOKE_COLOUR = "&H00FFFF"  # yellow (ASS colours are &HBBGGRR): karaoke's, and any highlight with no colour
SHORT_WORDS = 2  # a caption of this many words or fewer is an orphan when the scene says more (`_no_short_groups`)
WORD_JOINER = "\u2060"
# Where captions may sit, as fractions of the frame (`caption_layout`). Every aspect keeps all caption ink (outline,
# shadow and box included) inside the title-safe area (EBU R 95 / SMPTE ST 2046-1: 5 % in from each edge). In 9:16 the
# short-video apps draw their own interface over the video; their published safe-zone templates (TikTok's, Instagram
# Reels', YouTube Shorts' creator guides, approximately) leave the bottom fifth to the caption/description/audio bar
# and a column of buttons (like, comment, share) on the right, about 12-15 % of the width.
TITLE_SAFE = 0.05  # every edge, every aspect
PORTRAIT_BOTTOM_UI = 0.20  # 9:16: the bottom band the apps' caption and description cover
PORTRAIT_RIGHT_UI = 0.15  # 9:16: the right-hand column of the apps' buttons
MARGIN_H = 0.06  # left and right (9:16: left) margin, inside the title-safe area
MARGIN_V_LANDSCAPE = 0.075  # 16:9: from the bottom to the caption's last line
MARGIN_V_SQUARE = 0.09  # 1:1
log = logging.getLogger("studio.captions")
# The end of a sentence or clause (`few_words_events` breaks there first): Latin, CJK, Arabic and Devanagari marks,
# dashes; closing quotes and brackets may follow.
_CLAUSE_END = re.compile(r"[.!?,;:\u2026\u2013\u2014\u3001\u3002\uff01\uff0c\uff1a\uff1b\uff1f\u060c\u061b\u061f"
                         r"\u0964\u0965][\"'\u201d\u2019)\]]*$")


def _clause_end(word: str) -> bool:
    """Whether `word` ends a sentence or clause (an abbreviation's full stop, as in "Dr.", ends neither)."""
    return bool(_CLAUSE_END.search(word)) and not is_abbreviation(word)


@dataclass(frozen=True)
class CaptionStyle:
    """How captions look, relative to the frame (so every resolution looks the same).

    Attributes:
        name: The style's name (``Project.caption_style``).
        weight: ``bold`` or ``regular`` (see `studio.fonts.font_path`).
        size_frac: Line height (ASS ``Fontsize``) as a fraction of the frame's shorter side.
        outline_frac: Outline thickness (or, with `box`, the box's padding) as a fraction of the line height.
        shadow_frac: Shadow offset as a fraction of the line height.
        box: A translucent dark box behind each line instead of an outline.
        highlight: Karaoke: the fill colour (ASS ``&HBBGGRR``) of the word being spoken; each caption is then one
            event per word (`karaoke_events`). Empty: no highlight.
        max_words: The shorts look: captions of one to this many words, each shown while its words are spoken
            (`few_words_events`). 0: captions of one or two lines (`group_words`).
        centre_frac: Where a one-line caption's centre sits, as a fraction of the frame's height from the top (a
            caption of two lines grows upwards from there); 0: at the bottom margin. The safe areas still apply.
    """

    name: str
    weight: str
    size_frac: float
    outline_frac: float
    shadow_frac: float
    box: bool = False
    highlight: str = ""
    max_words: int = 0
    centre_frac: float = 0.0


STYLES: dict[str, CaptionStyle] = {
    "bold": CaptionStyle("bold", "bold", size_frac=0.068, outline_frac=0.075, shadow_frac=0.045),
    "boxed": CaptionStyle("boxed", "bold", size_frac=0.062, outline_frac=0.16, shadow_frac=0.0, box=True),
    "plain": CaptionStyle("plain", "regular", size_frac=0.064, outline_frac=0.065, shadow_frac=0.04),
    # The spoken word in yellow (fill only: the outline stays black). Colour, not size: a scaled word would widen
    # its centred line, and every word on it would shift each time the highlight moves.
    "karaoke": CaptionStyle("karaoke", "bold", size_frac=0.068, outline_frac=0.075, shadow_frac=0.045,
                            highlight=KARAOKE_COLOUR),
    # Shorts: one to three large words at a time, around the lower third (for 9:16 well above the apps' bottom bar).
    "words": CaptionStyle("words", "bold", size_frac=0.10, outline_frac=0.08, shadow_frac=0.05, max_words=3,
                          centre_frac=0.70),
}


@dataclass(frozen=True)
class CaptionLayout:
    """A caption style resolved for one frame size: font, sizes and margins in pixels (ASS units = pixels).

    `font_sha256` is the font file's content hash (so anything keyed by the layout changes with the font) and
    `font_suffix` the extension the font is copied under into the work folder (``.ttf`` or ``.otf``, by content);
    `fallbacks` names the installed fonts that characters the font lacks fall back to (so it changes, and what is
    keyed by the layout with it, when fonts are installed or removed).
    """

    style: CaptionStyle
    width: int
    height: int
    font_path: Path
    font_sha256: str
    font_suffix: str
    family: str
    bold: bool
    font_size: int
    em_px: float
    outline_px: float
    shadow_px: float
    margin_l_px: int
    margin_r_px: int
    margin_v_px: int
    max_line_px: float
    fallbacks: str = ""

    @property
    def weight(self) -> str:
        """The weight of the fallback fonts: bold for a bold caption font."""
        return "bold" if self.bold else "regular"


@dataclass(frozen=True)
class CaptionEvent:
    """One caption on the video's clock: up to `MAX_LINES` lines shown from `start_s` to `end_s`."""

    start_s: float
    end_s: float
    lines: tuple[str, ...]
    scene_id: str = ""
    # Karaoke: the words [first, end) being spoken, counted over the lines' space-separated words; None for none.
    highlight: tuple[int, int] | None = None

    @property
    def text(self) -> str:
        return join_words(self.lines)


@dataclass(frozen=True)
class TimedWord:
    """A word on the video's clock (seconds)."""

    text: str
    start_s: float
    end_s: float


def caption_layout(style_name: str, size: tuple[int, int], font: Path | None = None) -> CaptionLayout:
    """Resolve the caption style `style_name` for a frame of `size` (width, height).

    Args:
        style_name: A name in `STYLES`.
        size: The frame's (width, height) in pixels.
        font: A TrueType or OpenType file (``Project.caption_font``) used instead of the style's bundled font; its
            own weight is used (a regular face stays regular), the style sets size, outline, shadow and box.

    Raises:
        StudioError: unknown style, a font file that cannot be used (naming `caption_font`), or no font installed.
    """
    if style_name not in STYLES:
        raise StudioError(f"`caption_style` must be one of {', '.join(STYLES)}, got {style_name!r}")
    style = STYLES[style_name]
    width, height = size
    if font is not None:
        path = Path(font)
        facts = read_font(path, "caption_font")
        family, face_style, line_ratio = facts.family, facts.style, facts.line_ratio
        sha256, suffix = facts.sha256, facts.suffix
    else:
        path = font_path(style.weight)
        family, face_style, line_ratio = _font_facts(str(path))
        sha256, suffix = _file_sha256(str(path)), path.suffix.lower()
    try:
        line_ratio = face_of(path).line_ratio  # libass's line height per em (the OS/2 win metrics)
    except FontError:
        pass  # FreeType's metrics, as read above
    bold = "bold" in face_style.lower()
    font_size = max(8, round(min(width, height) * style.size_frac))
    outline = max(1.0, round(font_size * style.outline_frac, 1))
    shadow = round(font_size * style.shadow_frac, 1)
    # Margins: libass centres each line between the left and right margins and sets the last line's bottom (its
    # descent included) `margin_v` above the frame's bottom; the outline (or box padding) and the shadow reach past
    # that, so they are added to the zones the ink must stay out of.
    ink = math.ceil(outline + shadow) + 1
    portrait = height > width * 1.2
    margin_l = max(round(width * MARGIN_H), math.ceil(width * TITLE_SAFE) + ink)
    margin_r = max(margin_l, math.ceil(width * PORTRAIT_RIGHT_UI) + ink) if portrait else margin_l
    bottom = PORTRAIT_BOTTOM_UI if portrait else TITLE_SAFE
    if style.centre_frac:  # a one-line caption's centre at `centre_frac` (libass: Fontsize is the line's height)
        wanted_v = round(height * (1.0 - style.centre_frac) - font_size / 2)
    else:
        wanted_v = round(height * (0.0 if portrait else MARGIN_V_LANDSCAPE if width > height * 1.2
                                   else MARGIN_V_SQUARE))
    margin_v = max(wanted_v, math.ceil(height * bottom) + ink)
    # Leave room for the outline (or box padding) and a small margin for layout differences between PIL and libass.
    max_line = (width - margin_l - margin_r - 2 * outline) * 0.96
    return CaptionLayout(
        style=style, width=width, height=height, font_path=path, font_sha256=sha256, font_suffix=suffix, family=family,
        bold=bold, font_size=font_size, em_px=font_size / line_ratio, outline_px=outline, shadow_px=shadow,
        margin_l_px=margin_l, margin_r_px=margin_r, margin_v_px=margin_v, max_line_px=max_line,
        fallbacks=_fallbacks_id("bold" if bold else "regular"),
    )


def _fallbacks_id(weight: str) -> str:
    """A short fingerprint of the installed fallback fonts (their names and sizes, in fallback order)."""
    parts = []
    for face in fallback_faces(weight):
        try:
            parts.append(f"{face.path.name}#{face.index}:{face.path.stat().st_size}")
        except OSError:
            continue
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def _font_facts(path: str) -> tuple[str, str, float]:
    """(family, style, line height per em) of a font file."""
    from PIL import ImageFont

    big = ImageFont.truetype(path, 1000)
    ascent, descent = big.getmetrics()
    family, face_style = big.getname()
    return family.replace(",", " "), face_style or "", (ascent + descent) / 1000.0


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str) -> str:
    """The content hash of an installed font (they do not change while Studio runs)."""
    from ..assets import file_digest

    return file_digest(Path(path))


def measuring_font(layout: CaptionLayout):
    """The `studio.fonts.FallbackFont` that measures captions as libass draws them: the caption font, and for what
    it lacks the installed fallback fonts, each sized so that its line height is the style's ``Fontsize``."""
    return fallback_font(str(layout.font_path), layout.em_px, layout.weight, float(layout.font_size))


def text_width(layout: CaptionLayout, text: str) -> float:
    """Advance width of `text` in pixels as libass lays it out with `layout`'s font and its fallbacks (outline not
    included)."""
    return measuring_font(layout).getlength(text)


def caption_notes(layout: CaptionLayout, events: Sequence[CaptionEvent]) -> list[str]:
    """Project notes on the captions' glyphs: the scripts the caption font lacks that fallback fonts draw, and the
    characters no installed font has (they are drawn as empty boxes) with what to install; none when the caption
    font draws every character. Each is also logged (``studio.captions``): as a warning for boxes and for a caption
    font the user chose (``Project.caption_font``), else as information (the bundled font falls back by design)."""
    if not events:
        return []
    try:
        primary = face_of(layout.font_path)
    except FontError:
        return []
    text = " ".join(e.text for e in events)
    cover = coverage(text, primary, layout.weight)
    notes = coverage_notes("captions", cover)
    try:
        chosen = Path(layout.font_path) != font_path(layout.style.weight)  # the user's own caption font
    except StudioError:
        chosen = True
    for note in notes:  # boxes, or a font the user chose that does not draw it all: a warning; else how it works
        log.log(logging.WARNING if chosen or "empty boxes" in note else logging.INFO, note)
    return notes


def clean_text(text: str) -> str:
    """User text for a caption: every run of whitespace (newlines included) becomes one space; control characters
    are dropped."""
    text = "".join(" " if ch.isspace() or unicodedata.category(ch) in ("Zl", "Zp") else ch for ch in str(text))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc")
    return " ".join(text.split())


def escape_ass_text(text: str) -> str:
    """Escape one line of user text for an ASS event so libass draws it literally (see the module docstring)."""
    out = []
    for ch in clean_text(text):
        if ch == "\\":
            out.append("\\" + WORD_JOINER)
        elif ch == "{":
            out.append("\\{")
        elif ch == "}":
            out.append("\\}")
        else:
            out.append(ch)
    return "".join(out)


# Chinese and Japanese (Han, kana, their punctuation and full-width forms) are written without spaces: caption words
# of them are joined with none, and a line may break between any two of them.
_UNSPACED_RE = re.compile(r"[\u3000-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
                          r"\U00020000-\U0003ffff]")


def join_words(words: Sequence[str]) -> str:
    """Caption words as one line: a space between words, none where Chinese or Japanese text meets (a word ending
    or starting with a Han character, a kana or CJK punctuation)."""
    out = ""
    for word in words:
        if out and word:
            out += "" if _UNSPACED_RE.match(out[-1]) or _UNSPACED_RE.match(word[0]) else " "
        out += word
    return out


def wrap_words(layout: CaptionLayout, words: Sequence[str]) -> list[str]:
    """Lines of `words` that each fit `layout.max_line_px`; two lines are balanced; a word wider than a line is split.
    Words are joined by `join_words` (no space inside Chinese or Japanese); right-to-left words stay in logical
    order (libass lays each line out right to left)."""
    pieces: list[str] = []
    for word in words:
        pieces.extend([word] if text_width(layout, word) <= layout.max_line_px else _split_long(layout, word))
    lines: list[str] = []
    current = ""
    for piece in pieces:
        candidate = join_words([current, piece]) if current else piece
        if not current or text_width(layout, candidate) <= layout.max_line_px:
            current = candidate
        else:
            lines.append(current)
            current = piece
    if current:
        lines.append(current)
    if len(lines) == 2:
        lines = _balance(layout, pieces) or lines
    return lines


def _split_long(layout: CaptionLayout, word: str) -> list[str]:
    """A word too wide for a line, in line-wide pieces broken between characters (never inside a cluster: a
    conjunct, a letter and its marks, an emoji sequence stay whole)."""
    chunks, current = [], ""
    for ch in clusters(word):
        if current and text_width(layout, current + ch) > layout.max_line_px:
            chunks.append(current)
            current = ""
        current += ch
    return chunks + ([current] if current else [])


def _balance(layout: CaptionLayout, pieces: Sequence[str]) -> list[str] | None:
    """Two lines of similar width (easier to read than a full line over a short one)."""
    best = None
    for i in range(1, len(pieces)):
        top, bottom = join_words(pieces[:i]), join_words(pieces[i:])
        widest = max(text_width(layout, top), text_width(layout, bottom))
        if widest <= layout.max_line_px and (best is None or widest < best[0]):
            best = (widest, [top, bottom])
    return best[1] if best else None


def group_words(layout: CaptionLayout, words: Sequence[TimedWord], *, window_end_s: float,
                scene_id: str = "") -> list[CaptionEvent]:
    """Group one scene's timed words into captions of at most `MAX_LINES` lines.

    A caption ends at a sentence end, at a pause longer than `PAUSE_S`, or where one more word would need a third
    line. Then no caption is left with `SHORT_WORDS` words or fewer while the scene says more (`_no_short_groups`,
    which never joins words across a pause):
    a short tail joins the caption before it when the two still fit two lines, else the two are rebalanced evenly by
    width. It is shown from its first word's start until shortly after its last word (`HOLD_S`), never past the next
    caption's start or `window_end_s`.
    """
    events = []
    for group, start, end in _line_groups(layout, words, window_end_s):
        lines = wrap_words(layout, [w.text for w in group])
        events.append(CaptionEvent(start_s=start, end_s=end, lines=tuple(lines), scene_id=scene_id))
    return events


def _line_groups(layout: CaptionLayout, words: Sequence[TimedWord],
                 window_end_s: float) -> list[tuple[list[TimedWord], float, float]]:
    """`group_words`' groups with the times each is shown: (words, start, end), none shown for no time."""
    words, pieces = _prepared_words(layout, words, window_end_s)
    groups: list[list[TimedWord]] = []
    current: list[TimedWord] = []
    for word in words:
        if current:
            gap = word.start_s - current[-1].end_s
            if (gap > PAUSE_S or boundary_strength(current[-1].text) == 2  # "Dr." and "e.g." end nothing
                    or not _fits(layout, current + [word])):
                groups.append(current)
                current = []
        current.append(word)
    if current:
        groups.append(current)
    groups = _no_short_groups(layout, groups, pieces)

    shown = []
    for i, group in enumerate(groups):
        start = group[0].start_s
        next_start = groups[i + 1][0].start_s if i + 1 < len(groups) else window_end_s
        end = max(group[-1].end_s + HOLD_S, start + MIN_SHOW_S)
        end = min(end, next_start, window_end_s)
        if end > start:
            shown.append((group, start, end))
    return shown


def _prepared_words(layout: CaptionLayout, words: Sequence[TimedWord],
                    window_end_s: float) -> tuple[list[TimedWord], set[int]]:
    """`words` cleaned, without empty ones and ones starting at or after `window_end_s`, a word wider than a line
    split into pieces (`_fit_word`); and the ids of those pieces."""
    words = [TimedWord(clean_text(w.text), w.start_s, w.end_s) for w in words]
    timed_words = set(words)
    words = [piece for w in words if w.text and w.start_s < window_end_s for piece in _fit_word(layout, w)]
    return words, {id(w) for w in words if w not in timed_words}  # pieces of a word split over lines: never short


def caption_events(layout: CaptionLayout, words: Sequence[TimedWord], *, window_end_s: float,
                   scene_id: str = "") -> list[CaptionEvent]:
    """One scene's captions as `layout`'s style makes them: one to a few words at a time (``max_words``,
    `few_words_events`), lines with the spoken word highlighted (``highlight``, `karaoke_events`), or lines
    (`group_words`). Arguments as `group_words`'."""
    style = layout.style
    if style.max_words:
        return few_words_events(layout, words, window_end_s=window_end_s, scene_id=scene_id)
    if style.highlight:
        return karaoke_events(layout, words, window_end_s=window_end_s, scene_id=scene_id)
    return group_words(layout, words, window_end_s=window_end_s, scene_id=scene_id)


def karaoke_events(layout: CaptionLayout, words: Sequence[TimedWord], *, window_end_s: float,
                   scene_id: str = "") -> list[CaptionEvent]:
    """`group_words`' captions, each as one event per word that highlights that word (`CaptionEvent.highlight`).

    Word k's event runs from its start to the next word's start (the first word's from the caption's start, the
    last word's to the caption's end): the word just spoken stays lit through the gap after it, so the caption
    never blinks between words and its events never overlap. Each event is drawn once like any caption
    (`CaptionOverlays`), and a segment of the video holds exactly the events it shows.
    """
    events = []
    for group, start, end in _line_groups(layout, words, window_end_s):
        lines = tuple(wrap_words(layout, [w.text for w in group]))
        at = 0  # the word's first index among the lines' space-separated words
        for k, word in enumerate(group):
            count = len(word.text.split(" "))
            first = start if k == 0 else max(start, word.start_s)
            until = min(end, group[k + 1].start_s) if k + 1 < len(group) else end
            if until > first:
                events.append(CaptionEvent(first, until, lines, scene_id, highlight=(at, at + count)))
            at += count
    return events


def few_words_events(layout: CaptionLayout, words: Sequence[TimedWord], *, window_end_s: float,
                     scene_id: str = "") -> list[CaptionEvent]:
    """The shorts look: captions of one to ``layout.style.max_words`` words, each shown exactly while its words are
    spoken: from its first word's start to the next caption's start when that follows within `PAUSE_S` (no blink
    between captions), else until `WORDS_HOLD_S` after its last word; never past `window_end_s`.

    Captions break first at punctuation (the end of a sentence or clause, `_CLAUSE_END`) and at pauses longer than
    `PAUSE_S`. Each run of words between two breaks is then split into groups that fit `MAX_LINES` lines, choosing
    in this order: the fewest one-word groups (none where the run has two words or more and a split without them
    fits), the fewest lines beyond each group's first, the fewest groups, the breaks at the longest gaps between
    words (`_split_run`). Words keep their order and timings; each is in exactly one caption.
    """
    most = max(1, layout.style.max_words)
    words, _ = _prepared_words(layout, words, window_end_s)
    runs: list[list[TimedWord]] = []
    current: list[TimedWord] = []
    for word in words:
        if current and (word.start_s - current[-1].end_s > PAUSE_S or _clause_end(current[-1].text)):
            runs.append(current)
            current = []
        current.append(word)
    if current:
        runs.append(current)
    groups = [group for run in runs for group in _split_run(layout, run, most)]
    events = []
    for i, group in enumerate(groups):
        start = group[0].start_s
        end = group[-1].end_s + WORDS_HOLD_S
        if i + 1 < len(groups):
            next_start = groups[i + 1][0].start_s
            end = next_start if next_start - group[-1].end_s <= PAUSE_S else min(end, next_start)
        end = min(end, window_end_s)
        if end > start:
            lines = wrap_words(layout, [w.text for w in group])
            events.append(CaptionEvent(start_s=start, end_s=end, lines=tuple(lines), scene_id=scene_id))
    return events


def _split_run(layout: CaptionLayout, run: Sequence[TimedWord], most: int) -> list[list[TimedWord]]:
    """`run` split into groups of 1 to `most` words, each within `MAX_LINES` lines, the best split by
    `few_words_events`' order (a shortest-path search over the break positions)."""
    n = len(run)
    # best[i]: the cost of the best split of run[:i] (one-word groups, extra lines, groups, minus the gaps broken
    # at) and where its last group begins.
    best: list[tuple[tuple[int, int, int, float], int] | None] = [None] * (n + 1)
    best[0] = ((0, 0, 0, 0.0), 0)
    for end in range(1, n + 1):
        for size in range(1, min(most, end) + 1):
            begin = end - size
            if best[begin] is None:
                continue
            lines = len(wrap_words(layout, [w.text for w in run[begin:end]]))
            if size > 1 and lines > MAX_LINES:
                continue
            gap = run[end].start_s - run[end - 1].end_s if end < n else 0.0
            orphans, extra, count, gaps = best[begin][0]
            cost = (orphans + (size == 1 and n > 1), extra + lines - 1, count + 1, gaps - gap)
            if best[end] is None or cost < best[end][0]:
                best[end] = (cost, begin)
    groups, end = [], n
    while end > 0:
        begin = best[end][1]
        groups.append(list(run[begin:end]))
        end = begin
    return groups[::-1]


def _fits(layout: CaptionLayout, group: Sequence[TimedWord]) -> bool:
    """Whether `group`'s words wrap into at most `MAX_LINES` lines."""
    return len(wrap_words(layout, [w.text for w in group])) <= MAX_LINES


def _no_short_groups(layout: CaptionLayout, groups: list[list[TimedWord]],
                     pieces: set[int] = frozenset()) -> list[list[TimedWord]]:
    """`groups` with no group of `SHORT_WORDS` words or fewer (an orphan tail such as "away." shown alone for half
    a second) where the scene has more words: a short group joins the one before it (else, for a first group, the
    one after it) when the joined words still fit `MAX_LINES` lines, never across a pause longer than `PAUSE_S`
    (a caption would show words long before they are heard); otherwise it and its neighbour are split anew
    where their widths are most even (`_rebalance`). Words keep their order and timings; only where groups break
    changes. A group holding a piece of a word split over lines (`_fit_word`, a line wide) is never short. A short
    group remains only when no split gives both sides more words (words too wide to share lines).
    """
    if sum(len(g) for g in groups) <= SHORT_WORDS:
        return groups
    groups = [list(g) for g in groups]
    i = 0
    while i < len(groups):
        if not _short(groups[i], pieces) or len(groups) < 2:
            i += 1
            continue
        before = i > 0 and groups[i][0].start_s - groups[i - 1][-1].end_s <= PAUSE_S
        after = i + 1 < len(groups) and groups[i + 1][0].start_s - groups[i][-1].end_s <= PAUSE_S
        if before and _fits(layout, groups[i - 1] + groups[i]):
            groups[i - 1:i + 1] = [groups[i - 1] + groups[i]]
            i = max(0, i - 1)  # the joined group is checked again
            continue
        if after and _fits(layout, groups[i] + groups[i + 1]):
            groups[i:i + 2] = [groups[i] + groups[i + 1]]
            continue
        if not (before or after):  # alone between two pauses: it stays on its own
            i += 1
            continue
        j = i - 1 if before else i + 1  # rebalance with the group before (or, failing that, after)
        a, b = min(i, j), max(i, j)
        groups[a], groups[b] = _rebalance(layout, groups[a] + groups[b], len(groups[a]), pieces)
        i += 1
    return groups


def _short(group: Sequence[TimedWord], pieces: set[int]) -> bool:
    """A group of `SHORT_WORDS` words or fewer, none of them a piece of a split word."""
    return len(group) <= SHORT_WORDS and not any(id(w) in pieces for w in group)


def _rebalance(layout: CaptionLayout, words: list[TimedWord], at: int,
               pieces: set[int]) -> tuple[list[TimedWord], list[TimedWord]]:
    """`words` (two neighbouring groups, split at `at`) split anew into two groups that each fit `MAX_LINES` lines:
    both sides longer than `SHORT_WORDS` words if possible, then the most even widths."""
    best = None
    for k in range(1, len(words)):
        left, right = words[:k], words[k:]
        if not (_fits(layout, left) and _fits(layout, right)):
            continue
        short = _short(left, pieces) or _short(right, pieces)
        gap = abs(text_width(layout, join_words([w.text for w in left])) - text_width(layout, join_words([w.text for w in right])))
        if best is None or (short, gap) < best[0]:
            best = ((short, gap), k)
    k = best[1] if best else at
    return words[:k], words[k:]


def _fit_word(layout: CaptionLayout, word: TimedWord) -> list[TimedWord]:
    """A word wider than a line, as line-wide pieces that share its time (each piece then fits a caption)."""
    if text_width(layout, word.text) <= layout.max_line_px:
        return [word]
    pieces = _split_long(layout, word.text)
    total = sum(len(p) for p in pieces)
    out, at = [], word.start_s
    for piece in pieces:
        length = (word.end_s - word.start_s) * len(piece) / total
        out.append(TimedWord(piece, at, at + length))
        at += length
    return out


def spread_words(text: str, start_s: float, end_s: float) -> list[TimedWord]:
    """Timings for narration that has none: each word gets a share of the span in proportion to its length."""
    tokens = clean_text(text).split(" ")
    tokens = [t for t in tokens if t]
    if not tokens or end_s <= start_s:
        return []
    weights = [len(t) + 1 for t in tokens]
    total = float(sum(weights))
    out, t = [], start_s
    for token, weight in zip(tokens, weights):
        length = (end_s - start_s) * weight / total
        out.append(TimedWord(token, t, t + length * 0.92))
        t += length
    return out


def no_overlaps(events: Iterable[CaptionEvent]) -> tuple[CaptionEvent, ...]:
    """Events in time order with none overlapping the next (one caption on screen at a time)."""
    ordered = sorted(events, key=lambda e: e.start_s)
    out = []
    for i, event in enumerate(ordered):
        end = event.end_s
        if i + 1 < len(ordered):
            end = min(end, ordered[i + 1].start_s)
        if end - event.start_s >= 0.01:
            out.append(replace(event, end_s=end))
    return tuple(out)


def _ass_time(seconds: float) -> str:
    cs = max(0, int(round(seconds * 100)))
    hours, rest = divmod(cs, 360000)
    minutes, rest = divmod(rest, 6000)
    secs, cents = divmod(rest, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{cents:02d}"


def ass_document(layout: CaptionLayout, events: Sequence[CaptionEvent]) -> str:
    """The ASS subtitle file for `events` (UTF-8 text); coordinates are frame pixels."""
    style = layout.style
    if style.box:
        # BorderStyle 3: libass fills a box (OutlineColour) padded by `Outline` around each line.
        border_style, outline_colour, back_colour, shadow = 3, "&H50000000", "&H80000000", 0.0
    else:
        border_style, outline_colour, back_colour, shadow = 1, "&H00000000", "&H80000000", layout.shadow_px
    head = "\n".join([
        "[Script Info]",
        "; Written by Studio; every text below is escaped so libass shows it literally",
        "ScriptType: v4.00+",
        f"PlayResX: {layout.width}",
        f"PlayResY: {layout.height}",
        "WrapStyle: 0",
        "ScaledBorderAndShadow: yes",
        "YCbCr Matrix: TV.709",
        "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
        "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
        "MarginR, MarginV, Encoding",
        f"Style: Caption,{layout.family},{layout.font_size},&H00FFFFFF,&H00FFFFFF,{outline_colour},{back_colour},"
        f"{-1 if layout.bold else 0},0,0,0,100,100,0,0,{border_style},{layout.outline_px:g},{shadow:g},2,"
        f"{layout.margin_l_px},{layout.margin_r_px},{layout.margin_v_px},1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ])
    lines = [head]
    colour = style.highlight or KARAOKE_COLOUR
    for event in events:
        text = "\\N".join(_ass_lines(event, colour))
        lines.append(f"Dialogue: 0,{_ass_time(event.start_s)},{_ass_time(event.end_s)},Caption,,0,0,0,,{text}")
    return "\n".join(lines) + "\n"


def _ass_lines(event: CaptionEvent, colour: str) -> list[str]:
    """`event`'s lines as ASS text: each escaped (`escape_ass_text`), the highlighted words (if any) each between
    an override that sets the fill colour to `colour` and one that resets the style (the only override blocks:
    every brace of the user's text is escaped)."""
    if event.highlight is None:
        return [escape_ass_text(line) for line in event.lines]
    first, end = event.highlight
    out, at = [], 0
    for line in event.lines:
        words = []
        for word in line.split(" "):
            text = escape_ass_text(word)
            words.append(f"{{\\1c{colour}&}}{text}{{\\r}}" if first <= at < end else text)
            at += 1
        out.append(" ".join(words))
    return out


def write_ass(path: Path, layout: CaptionLayout, events: Sequence[CaptionEvent]) -> Path:
    """Write the ASS file for `events` to `path`."""
    Path(path).write_text(ass_document(layout, events), encoding="utf-8")
    return Path(path)


# -- burning captions in -------------------------------------------------------------------------------------------
class CaptionOverlays:
    """Captions drawn by libass once each, then blended into every frame that shows them.

    ffmpeg's ``subtitles`` filter on every frame costs about 1 ms a frame (libass lays the text out again each time),
    a tenth of the whole render at 480p. So libass draws each caption once: an ASS file whose event *i* is shown at
    second *i* is rendered at one frame per second over a black and over a white canvas (``yuv420p``, BT.709, the
    frame's size, cropped to the caption band), which gives each pixel's exact coverage and colour
    (``out = bg * (1 - a) + premultiplied``); blending that into a frame is a few array operations on the text's box.
    The ASS file and the font are in the private work folder that is ffmpeg's working directory, so the filter string
    holds only names this module made and numbers.

    Drawing runs in a thread while the video encodes; each caption is kept as a small ``.npz`` in the work folder
    until its turn, so memory stays flat however many captions there are, and the drawing ffmpeg exits early.
    """

    def __init__(self, layout: CaptionLayout, events: Sequence[CaptionEvent], fps: int, work: Path, cancel=None,
                 prefix: str = "") -> None:
        """`prefix` starts the names of this drawing's files in `work` (a second drawing in the same folder, after a
        GPU render fell back to the CPU, must not meet the first one's files); letters and dashes only."""
        import numpy as np

        if not re.fullmatch(r"[a-z-]*", prefix):
            raise ValueError(f"caption file prefix {prefix!r}: letters and dashes only")
        self.prefix = prefix
        self.layout, self.events, self.fps, self.work, self.cancel = layout, list(events), fps, work, cancel
        height = layout.height
        # The band that bottom-aligned captions can reach: the margin plus three lines (one spare, should libass wrap
        # a line that Studio measured as fitting), the outline or box padding and the shadow.
        text_h = (MAX_LINES + 1) * 1.25 * layout.font_size + 4 * layout.outline_px + 2 * layout.shadow_px
        self.top = max(0, 2 * int((height - layout.margin_v_px - text_h) // 2))
        self.band_h = height - self.top
        # ASS times are centiseconds; libass shows an event while start <= t < end, t = the frame's time in whole ms.
        self.windows = [(int(round(e.start_s * 100)) * 10, int(round(e.end_s * 100)) * 10) for e in self.events]
        self.next_event = 0
        self.current: tuple[int, tuple | None] | None = None
        self.ready = 0  # captions drawn so far
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self.thread = None
        self.proc = None
        self.stopped = False
        self._scratch = np.empty(layout.width * self.band_h, np.uint8)
        if self.events:
            self.thread = threading.Thread(target=self._draw_all, name="studio-captions", daemon=True)
            self.thread.start()

    # -- drawing (in the thread) -----------------------------------------------------------------------------------
    def _draw_all(self) -> None:
        try:
            self._draw()
        except BaseException as exc:  # handed to the frame loop
            with self.changed:
                self.error = exc
                self.changed.notify_all()

    def _draw(self) -> None:
        from ..media import Ffmpeg

        layout, work = self.layout, self.work
        width, height = layout.width, layout.height
        slotted = [replace(e, start_s=float(i), end_s=float(i + 1)) for i, e in enumerate(self.events)]
        write_ass(work / f"{self.prefix}captions.ass", layout, slotted)
        fonts = work / f"{self.prefix}fonts"
        fonts.mkdir(exist_ok=True)
        target = fonts / f"caption{layout.font_suffix}"
        try:
            target.symlink_to(layout.font_path)
        except OSError:  # no symlinks here: copy it
            shutil.copyfile(layout.font_path, target)
        count = len(self.events)
        canvas = f"s={width}x{height}:r=1:d={count}"
        draw = (f"format=yuv420p,setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv,"
                f"subtitles={self.prefix}captions.ass:fontsdir={self.prefix}fonts,crop={width}:{self.band_h}:0:{self.top}")
        graph = f"color=c=black:{canvas},{draw}[b];color=c=white:{canvas},{draw}[w];[b][w]vstack=inputs=2"
        frame_bytes = width * self.band_h * 2 * 3 // 2
        with Ffmpeg(["-filter_complex", graph, "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "yuv420p",
                     "pipe:1"], stdout=True, cwd=work, cancel=self.cancel, what="drawing the captions") as ff:
            self.proc = ff
            for i in range(count):
                if self.stopped:
                    raise StudioError("drawing the captions was stopped")
                data = ff.stdout.read(frame_bytes)
                if len(data) < frame_bytes:
                    raise StudioError("drawing the captions failed: libass returned fewer captions than asked for")
                self._store(i, data)
                with self.changed:
                    self.ready = i + 1
                    self.changed.notify_all()

    def _store(self, index: int, data: bytes) -> None:
        """Turn one drawn caption (over black, over white) into coverage and premultiplied planes, cropped to its ink."""
        import cv2
        import numpy as np

        width, bh = self.layout.width, self.band_h
        stacked = np.frombuffer(data, np.uint8)
        luma = stacked[:width * 2 * bh].reshape(2 * bh, width)
        chroma = stacked[width * 2 * bh:].reshape(2, bh, width // 2)  # U, V; each the black then the white canvas
        y_black, y_white = luma[:bh].astype(np.float32), luma[bh:].astype(np.float32)
        alpha = np.clip(1.0 - (y_white - y_black) / 219.0, 0.0, 1.0)
        ys, xs = np.nonzero(alpha > 1.0 / 255)
        path = self.work / f"{self.prefix}caption-{index:05d}.npz"
        if not len(xs):
            np.savez(path, x=0, y=0, empty=1)
            return
        x0, x1 = 2 * (int(xs.min()) // 2), min(width, 2 * ((int(xs.max()) + 2) // 2))
        y0, y1 = 2 * (int(ys.min()) // 2), min(bh, 2 * ((int(ys.max()) + 2) // 2))
        a = alpha[y0:y1, x0:x1]
        a_c = cv2.resize(a, ((x1 - x0) // 2, (y1 - y0) // 2), interpolation=cv2.INTER_AREA)
        pre_y = y_black[y0:y1, x0:x1] - 16.0 * (1.0 - a)
        pre_u, pre_v = (plane[: bh // 2][y0 // 2:y1 // 2, x0 // 2:x1 // 2].astype(np.float32) - 128.0 * (1.0 - a_c)
                        for plane in chroma)

        def u8(values):
            return np.clip(np.rint(values), 0, 255).astype(np.uint8)

        np.savez(path, x=x0, y=self.top + y0, empty=0, a=u8(a * 255), a_c=u8(a_c * 255), pre_y=u8(pre_y),
                 pre_u=u8(pre_u), pre_v=u8(pre_v))

    # -- blending (in the frame loop) ------------------------------------------------------------------------------
    def _load(self, index: int) -> tuple | None:
        import numpy as np

        with self.changed:
            while self.ready <= index and self.error is None:
                self.changed.wait(0.5)
            if self.ready <= index:
                raise self.error  # type: ignore[misc]
        path = self.work / f"{self.prefix}caption-{index:05d}.npz"
        with np.load(path) as data:
            if int(data["empty"]):
                result = None
            else:
                # 8-bit "keep" (255 - coverage) and premultiplied planes: two saturating OpenCV passes per plane.
                keep_y, keep_c = 255 - data["a"], 255 - data["a_c"]
                result = (int(data["x"]), int(data["y"]), (data["pre_y"], keep_y), (data["pre_u"], keep_c),
                          (data["pre_v"], keep_c))
        path.unlink()
        return result

    def shown(self, frame_index: int) -> tuple | None:
        """The caption on screen at `frame_index`: ``(index, x, y, luma, u, v)`` (each plane part a ``(premultiplied,
        keep)`` pair of uint8 arrays, see `_load`), or None. Frames must be asked for in order."""
        if not self.events:
            return None
        t_ms = int(frame_index * 1000 / self.fps)
        while self.next_event < len(self.events) and self.windows[self.next_event][0] <= t_ms:
            self.current = (self.next_event, self._load(self.next_event))  # in time order: each is loaded once
            self.next_event += 1
        if self.current is None or self.current[1] is None:
            return None
        index, parts = self.current
        start, end = self.windows[index]
        if not start <= t_ms < end:
            return None
        return (index, *parts)

    def apply(self, frame_index: int, out) -> None:
        """Blend the caption shown at `frame_index` (if any) into `out` (planes with y, u, v)."""
        import cv2

        shown = self.shown(frame_index)
        if shown is None:
            return
        _, x, y, luma, u, v = shown
        for (pre, keep), plane, div in ((luma, out.y, 1), (u, out.u, 2), (v, out.v, 2)):
            h, w = keep.shape
            region = plane[y // div:y // div + h, x // div:x // div + w]
            scratch = self._scratch[:h * w].reshape(h, w)
            cv2.multiply(region, keep, dst=scratch, scale=1 / 255)  # background * (1 - coverage), rounded
            cv2.add(scratch, pre, dst=region)  # + premultiplied caption, saturated

    def wait_drawn(self) -> None:
        """Block until every caption is drawn (or drawing failed: the frame loop reports that)."""
        if self.thread is not None:
            self.thread.join()

    def close(self, stop: bool = False) -> None:
        """Wait for the drawing thread; with `stop`, end it at once (the render failed)."""
        if self.thread is not None:
            if stop:
                self.stopped = True
                if self.proc is not None:
                    self.proc.kill()
            self.thread.join()
            self.thread = None
