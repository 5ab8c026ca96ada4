"""Fonts for cards and captions: DejaVu (installed by the set-up) or another TrueType font fontconfig knows, a
user's own caption font (a TrueType or OpenType file, checked by `read_font`), and the fallback fonts for every script
DejaVu lacks: which installed face draws which character (`Face`, read from the font's own tables; `fallback_faces` in
fontconfig's order), notes on what a text needs (`coverage`, `coverage_notes`), and `FallbackFont`, which draws a line
with Pillow run by run in covering fonts, in bidi order, each run shaped by raqm."""

from __future__ import annotations

import bisect
import functools
import hashlib
import mmap
import os
import shutil
import struct
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import StudioError

FONT_MAX_BYTES = 20_000_000  # the largest font file Studio reads (big CJK fonts are 10-20 MB)
# The first four bytes of the font files Studio accepts (an sfnt: TrueType or OpenType/CFF; no collections, no WOFF),
# and the extension each is kept under.
FONT_SIGNATURES = {b"\x00\x01\x00\x00": ".ttf", b"true": ".ttf", b"OTTO": ".otf"}

_CANDIDATES = {
    "bold": ["DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf", "NotoSans-Bold.ttf", "Arial Bold.ttf", "Arial_Bold.ttf"],
    "regular": ["DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf", "Arial.ttf"],
}
_DIRS = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts", Path("/Library/Fonts"),
         Path("/System/Library/Fonts"), Path("C:/Windows/Fonts")]


@functools.lru_cache(maxsize=None)
def font_path(weight: str = "bold") -> Path:
    """A TrueType font file of the given weight (``bold`` or ``regular``).

    Raises:
        StudioError: no font found; the message says which package to install.
    """
    names = _CANDIDATES[weight]
    for folder in _DIRS:
        if folder.is_dir():
            for name in names:
                found = next(iter(folder.rglob(name)), None)
                if found is not None:
                    return found
    if shutil.which("fc-match"):
        style = "Bold" if weight == "bold" else "Regular"
        out = subprocess.run(["fc-match", "-f", "%{file}", f"sans:style={style}"], capture_output=True, text=True).stdout
        if out and Path(out).suffix.lower() in (".ttf", ".otf") and Path(out).is_file():
            return Path(out)
    raise StudioError("no TrueType font found: install one, e.g. `apt-get install fonts-dejavu-core`")


@dataclass(frozen=True)
class FontFacts:
    """What Studio needs to know of a font file (read by `read_font`).

    Attributes:
        family: The family name (what a subtitle style names to pick the font).
        style: The face's style name (``Bold``, ``Book``, ``Italic`` ...).
        line_ratio: Line height (ascender + descender) per em.
        suffix: ``.ttf`` (TrueType outlines) or ``.otf`` (OpenType with CFF outlines).
        sha256: The file's content hash (a changed font re-renders what shows it).
        size_bytes: The file's size.
    """

    family: str
    style: str
    line_ratio: float
    suffix: str
    sha256: str
    size_bytes: int

    @property
    def bold(self) -> bool:
        return "bold" in self.style.lower()

    @property
    def italic(self) -> bool:
        return any(word in self.style.lower() for word in ("italic", "oblique"))


class FontError(ValueError):
    """A file is not a font Studio can use; the message says why and never holds the file's path."""


def inspect_font(path: Path) -> FontFacts:
    """Check a font file by its content: a TrueType or OpenType file (by its signature, not its name) that FreeType
    (through Pillow) opens, with a family name a subtitle style can hold, metrics and a glyph for ``A``.

    Raises:
        FontError: why the file is not usable (no path in the message: callers name the file or the field).
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError:
        raise FontError("the file does not exist") from None
    if not path.is_file():
        raise FontError("it is not a file")
    return _inspect(str(path), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _inspect(path: str, size_bytes: int, mtime_ns: int) -> FontFacts:
    """`inspect_font`, cached by the file's path, size and time (a replaced file is read again)."""
    from PIL import ImageFont

    if size_bytes > FONT_MAX_BYTES:
        raise FontError(f"it is {size_bytes / 1e6:.1f} MB; fonts of up to {FONT_MAX_BYTES // 1_000_000} MB are accepted")
    with open(path, "rb") as handle:
        head = handle.read(4)
        digest = hashlib.sha256(head)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if head not in FONT_SIGNATURES:
        raise FontError("it is not a TrueType or OpenType font (.ttf or .otf)")
    try:
        font = ImageFont.truetype(path, 1000)
        family, style = font.getname()
        ascent, descent = font.getmetrics()
        glyph = font.getbbox("A")
    except (OSError, ValueError, MemoryError) as exc:
        raise FontError(f"FreeType cannot read it ({type(exc).__name__})") from None
    family, style = (family or "").strip(), (style or "").strip()
    if not family or not _plain_name(family):
        raise FontError(f"its family name {family!r} cannot be named in a subtitle style (it must be printable, "
                        "without commas, not starting with '@'); choose another font")
    if ascent + descent <= 0:
        raise FontError("it has no line height (ascender + descender)")
    if glyph[2] <= glyph[0] or glyph[3] <= glyph[1]:
        raise FontError("it has no glyph for the letter A; choose a font for Latin text")
    return FontFacts(family=family, style=style if _plain_name(style) else "", line_ratio=(ascent + descent) / 1000.0,
                     suffix=FONT_SIGNATURES[head], sha256=digest.hexdigest(), size_bytes=size_bytes)


def _plain_name(name: str) -> bool:
    """A name that is one field of an ASS style line: printable, no comma, no leading '@' (libass: vertical text)."""
    return (len(name) <= 200 and not name.startswith("@") and "," not in name
            and all(ch.isprintable() and unicodedata.category(ch) not in ("Zl", "Zp") for ch in name))


def read_font(path: Path, what: str = "caption_font") -> FontFacts:
    """`inspect_font`, for a file the user named.

    Args:
        path: The font file.
        what: The setting it comes from, for the message (``caption_font``).

    Raises:
        StudioError: naming `what` and the file, and why it cannot be used.
    """
    try:
        return inspect_font(path)
    except FontError as exc:
        raise StudioError(f"`{what}` {path}: {exc}; choose a TrueType or OpenType font file (.ttf, .otf) or remove "
                          "the setting") from None


# -- what each font draws: scripts, coverage and fallback ----------------------------------------------------------
# libass (captions) falls back through fontconfig by itself; Pillow (title cards) draws one font per call, so Studio
# splits text into runs, each in the first font that has its glyphs (`FallbackFont`). Both orders are fontconfig's:
# the fonts it sorts for "sans-serif", which is what libass's fontconfig provider falls back through.

# The scripts Studio checks (the doctor, the warnings): sample characters of each, and the Debian package that draws
# it. scripts/setup.sh installs fonts for the `NEEDED_SCRIPTS`; for the others the doctor names what to install.
SCRIPTS: dict[str, tuple[str, str]] = {
    "Latin": ("AaÉéŁłŸÿ", "fonts-dejavu-core"),
    "Greek": ("ΑαΩωΣσ", "fonts-dejavu-core"),
    "Cyrillic": ("АаЖжЯя", "fonts-dejavu-core"),
    "Hebrew": ("אבגדש", "fonts-dejavu-core"),
    "Arabic": ("ابتجمه", "fonts-dejavu-core"),
    "Devanagari": ("कखगनमा", "fonts-lohit-deva"),
    "Han": ("東京中文字", "fonts-droid-fallback"),
    "Kana": ("ひらがなカタカナ", "fonts-droid-fallback"),
    "Hangul": ("한국어", "fonts-nanum"),
    "emoji": ("🎬😀👍🌍", "fonts-symbola"),
    "Thai": ("ภาษาไทย", "fonts-thai-tlwg"),
    "Bengali": ("বাংলা", "fonts-lohit-beng-bengali"),
    "Tamil": ("தமிழ்", "fonts-lohit-taml"),
}
NEEDED_SCRIPTS = ("Latin", "Greek", "Cyrillic", "Hebrew", "Arabic", "Devanagari", "Han", "Kana", "emoji")
_NAME_SCRIPTS = {"CJK": "Han", "IDEOGRAPHIC": "Han", "FULLWIDTH": "Han", "HALFWIDTH": "Han", "BOPOMOFO": "Han",
                 "HIRAGANA": "Kana", "KATAKANA": "Kana", "KATAKANA-HIRAGANA": "Kana", "HANGUL": "Hangul"}
_SCRIPT_NAMES = {"LATIN", "GREEK", "COPTIC", "CYRILLIC", "ARMENIAN", "HEBREW", "ARABIC", "SYRIAC", "THAANA", "NKO",
                 "DEVANAGARI", "BENGALI", "GURMUKHI", "GUJARATI", "ORIYA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM",
                 "SINHALA", "THAI", "LAO", "TIBETAN", "MYANMAR", "GEORGIAN", "ETHIOPIC", "CHEROKEE", "KHMER",
                 "MONGOLIAN", "TIFINAGH", "YI", "VAI", "JAVANESE", "BALINESE", "SUNDANESE", "ADLAM", "OL"}
_VIRAMA = 9  # canonical combining class of a virama: it joins the next consonant into a conjunct
_ZWJ = "\u200d"


def script_of(ch: str) -> str:
    """The script a character is written in, as Studio names it in notes: ``Latin``, ``Han``, ``Kana``, ``emoji``
    ..., or ``common`` (digits, punctuation, spaces: drawn by any font) and ``symbols``."""
    cp = ord(ch)
    if 0x1F000 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF or 0x1F1E6 <= cp <= 0x1F1FF:
        return "emoji"
    if 0x3400 <= cp <= 0x9FFF or 0x20000 <= cp <= 0x3FFFF or 0xF900 <= cp <= 0xFAFF:
        return "Han"
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return f"U+{cp:04X}"  # unassigned or private use
    word = name.split(" ", 1)[0]
    if word in _NAME_SCRIPTS:
        return _NAME_SCRIPTS[word]
    if word in _SCRIPT_NAMES:
        return "N'Ko" if word == "NKO" else word.title()
    return "common" if unicodedata.category(ch)[0] in "NPZ" else "symbols"


def is_drawn(ch: str) -> bool:
    """Whether a character needs a glyph: not whitespace, and not one HarfBuzz draws as nothing (controls, format
    characters such as ZWJ and WORD JOINER, variation selectors)."""
    cp = ord(ch)
    if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
        return False
    return not (0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF or cp in (0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0))


def clusters(text: str) -> list[str]:
    """`text` in user-perceived characters (an approximation of grapheme clusters): a base with its combining marks,
    variation selectors and emoji modifiers, a virama or ZWJ with the character it joins, a pair of regional
    indicators (a flag). Text is broken between lines and fonts only between clusters."""
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        if out:
            last = out[-1][-1]
            joins = (unicodedata.category(ch) in ("Mn", "Mc", "Me") or ch in (_ZWJ, "\u200c")
                     or 0xFE00 <= cp <= 0xFE0F or 0xE0020 <= cp <= 0xE007F or 0x1F3FB <= cp <= 0x1F3FF
                     or last == _ZWJ or (unicodedata.combining(last) == _VIRAMA and unicodedata.category(ch) == "Lo")
                     or (0x1F1E6 <= cp <= 0x1F1FF and len(out[-1]) == 1 and 0x1F1E6 <= ord(last) <= 0x1F1FF))
            if joins:
                out[-1] += ch
                continue
        out.append(ch)
    return out


@dataclass(frozen=True, eq=False)
class Face:
    """One face of a font file, as far as drawing text needs it (read by `face_of`).

    Attributes:
        path, index: The file and the face's index in it (a ``.ttc`` collection holds several).
        family, style: Names from the font's name table (for notes and the doctor).
        weight: OS/2 weight class (400 regular, 700 bold).
        line_ratio: Line height per em as libass sizes a font: (OS/2 win ascent + win descent) / units per em, or
            the hhea ascender - descender where those are missing.
        outline: Whether it has outlines (TrueType or CFF); bitmap-only faces (colour emoji) cannot be scaled and
            libass skips them.
    """

    path: Path
    index: int
    family: str
    style: str
    weight: int
    line_ratio: float
    outline: bool
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def has(self, ch: str) -> bool:
        """Whether the face's character map has a glyph for `ch` (one character)."""
        cp = ord(ch)
        i = bisect.bisect_right(self.starts, cp) - 1
        return i >= 0 and cp <= self.ends[i]

    def covers(self, text: str) -> bool:
        """Whether the face has a glyph for every character of `text` that needs one (see `is_drawn`)."""
        return all(self.has(ch) for ch in text if is_drawn(ch))

    @property
    def italic(self) -> bool:
        return any(word in self.style.lower() for word in ("italic", "oblique"))

    @property
    def bold(self) -> bool:
        return self.weight >= 600

    @property
    def name(self) -> str:
        return self.family or self.path.name

    def __repr__(self) -> str:
        return f"Face({self.path.name}#{self.index} {self.family} {self.style})"


def face_of(path: Path, index: int = 0) -> Face:
    """The face `index` of a TrueType/OpenType file or collection, read from its tables (cached by path, size and
    time).

    Raises:
        FontError: not an sfnt font, or a damaged one.
    """
    try:
        info = os.stat(path)
    except OSError:
        raise FontError("the file does not exist") from None
    return _face(str(path), info.st_size, info.st_mtime_ns, index)


def face_count(path: Path) -> int:
    """How many faces a font file holds (a ``.ttc`` collection several, any other one)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        raise FontError("the file cannot be read") from None
    return struct.unpack(">I", head[8:12])[0] if head[:4] == b"ttcf" and len(head) == 12 else 1


@functools.lru_cache(maxsize=512)
def _face(path: str, size_bytes: int, mtime_ns: int, index: int) -> Face:
    """One face, read from the file (only its own tables: a big collection is not read whole)."""
    try:
        with open(path, "rb") as handle:
            if size_bytes < 12:
                raise FontError("it is not a TrueType or OpenType font")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                offset = 0
                if data[:4] == b"ttcf":
                    if not 0 <= index < struct.unpack_from(">I", data, 8)[0]:
                        raise FontError(f"it has no face {index}")
                    offset = struct.unpack_from(">I", data, 12 + 4 * index)[0]
                elif index:
                    raise FontError(f"it has no face {index}")
                return _read_face(data, offset, Path(path), index)
    except (struct.error, ValueError, IndexError, OSError) as exc:
        raise FontError(f"its tables cannot be read ({type(exc).__name__})") from None


def _read_face(data, offset: int, path: Path, index: int) -> Face:
    version, count = struct.unpack_from(">IH", data, offset)
    if version not in (0x00010000, 0x74727565, 0x4F54544F):  # 1.0, 'true', 'OTTO'
        raise FontError("it is not a TrueType or OpenType font")
    tables = {}
    for i in range(count):
        tag, _, at, length = struct.unpack_from(">4sIII", data, offset + 12 + 16 * i)
        tables[tag] = (at, length)
    upem = struct.unpack_from(">H", data, tables[b"head"][0] + 18)[0] if b"head" in tables else 1000
    upem = upem or 1000
    weight, ratio = 400, 0.0
    if b"OS/2" in tables:
        at, length = tables[b"OS/2"]
        weight = struct.unpack_from(">H", data, at + 4)[0]
        if length >= 78:
            win_ascent, win_descent = struct.unpack_from(">hh", data, at + 74)
            if win_ascent + win_descent:
                ratio = (win_ascent + win_descent) / upem
    if not ratio and b"hhea" in tables:
        ascender, descender = struct.unpack_from(">hh", data, tables[b"hhea"][0] + 4)
        ratio = (ascender - descender) / upem
    family, style = _names(data, *tables[b"name"]) if b"name" in tables else ("", "")
    starts, ends = _cmap(data, tables[b"cmap"][0]) if b"cmap" in tables else ((), ())
    outline = any(tag in tables for tag in (b"glyf", b"CFF ", b"CFF2"))
    return Face(path, index, family, style, weight, ratio or 1.2, outline, starts, ends)


def _names(data, at: int, length: int) -> tuple[str, str]:
    """(family, style) from a name table: Windows Unicode English names first, then any Unicode, then Mac Roman."""
    _, count, strings = struct.unpack_from(">HHH", data, at)
    found: dict[tuple[int, int], tuple[int, str]] = {}
    for i in range(count):
        platform, encoding, language, name_id, size, where = struct.unpack_from(">HHHHHH", data, at + 6 + 12 * i)
        if name_id not in (1, 2, 16, 17):
            continue
        raw = bytes(data[at + strings + where: at + strings + where + size])
        if platform == 3 and encoding in (0, 1, 10) or platform == 0:
            text, rank = raw.decode("utf-16-be", "replace"), 0 if (platform == 3 and language == 0x409) else 1
        elif platform == 1 and encoding == 0:
            text, rank = raw.decode("mac_roman", "replace"), 2
        else:
            continue
        key = (name_id, 0)
        if key not in found or rank < found[key][0]:
            found[key] = (rank, text.strip())
    family = found.get((1, 0), found.get((16, 0), (0, "")))[1]
    style = found.get((2, 0), found.get((17, 0), (0, "")))[1]
    return family, style


def _cmap(data, at: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The code point ranges (starts, ends, inclusive) that a face's best Unicode character map gives glyphs."""
    _, count = struct.unpack_from(">HH", data, at)
    subtables = {}
    for i in range(count):
        platform, encoding, where = struct.unpack_from(">HHI", data, at + 4 + 8 * i)
        subtables.setdefault((platform, encoding), at + where)
    order = [(3, 10), (0, 6), (0, 4), (3, 1), (0, 3), (0, 2), (0, 1), (0, 0), (3, 0)]
    ranges: list[tuple[int, int]] = []
    for key in order:
        if key in subtables:
            ranges = _cmap_ranges(data, subtables[key])
            if ranges:
                break
    ranges.sort()
    merged: list[list[int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple(r[0] for r in merged), tuple(r[1] for r in merged)


def _cmap_ranges(data, at: int) -> list[tuple[int, int]]:
    fmt = struct.unpack_from(">H", data, at)[0]
    out: list[tuple[int, int]] = []
    if fmt == 4:
        segments = struct.unpack_from(">H", data, at + 6)[0] // 2
        ends = struct.unpack_from(f">{segments}H", data, at + 14)
        starts = struct.unpack_from(f">{segments}H", data, at + 16 + 2 * segments)
        deltas = struct.unpack_from(f">{segments}h", data, at + 16 + 4 * segments)
        range_at = at + 16 + 6 * segments
        offsets = struct.unpack_from(f">{segments}H", data, range_at)
        for i, (start, end, delta, ro) in enumerate(zip(starts, ends, deltas, offsets)):
            if start > end or start == 0xFFFF:
                continue
            if ro == 0:
                zero = -delta & 0xFFFF  # the one code (if any) that the delta maps to glyph 0
                if start <= zero <= end:
                    out.extend(r for r in ((start, zero - 1), (zero + 1, end)) if r[0] <= r[1])
                else:
                    out.append((start, end))
                continue
            run: list[int] | None = None
            for code in range(start, end + 1):
                if struct.unpack_from(">H", data, range_at + 2 * i + ro + 2 * (code - start))[0]:
                    if run is not None and run[1] == code - 1:
                        run[1] = code
                    else:
                        if run is not None:
                            out.append((run[0], run[1]))
                        run = [code, code]
            if run is not None:
                out.append((run[0], run[1]))
    elif fmt in (12, 13):
        groups = struct.unpack_from(">I", data, at + 12)[0]
        for start, end, glyph in struct.iter_unpack(">III", data[at + 16: at + 16 + 12 * groups]):
            if fmt == 12 or glyph:
                out.append((start + (1 if fmt == 12 and glyph == 0 else 0), end))
    elif fmt == 6:
        first, entries = struct.unpack_from(">HH", data, at + 6)
        glyphs = struct.unpack_from(f">{entries}H", data, at + 10)
        out = [(first + i, first + i) for i, glyph in enumerate(glyphs) if glyph]
    return [(s, e) for s, e in out if s <= e]


# Families Studio prefers, in order, where fontconfig's tools are missing and it orders the fonts itself.
_PREFERRED = ("DejaVu Sans", "Noto Sans", "Liberation Sans", "Noto Sans Arabic", "Noto Sans Hebrew",
              "Noto Sans Devanagari", "Lohit Devanagari", "Noto Sans CJK SC", "Noto Sans CJK JP", "Droid Sans Fallback",
              "WenQuanYi Micro Hei", "Noto Sans Symbols", "Noto Sans Symbols2", "Symbola", "Noto Emoji")
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")


@functools.lru_cache(maxsize=4)
def fallback_faces(weight: str = "regular") -> tuple[Face, ...]:
    """The installed faces that text falls back through, in order: fontconfig's sort for sans-serif text of that
    weight (the order libass's fontconfig provider falls back through), without italics and faces that have no
    outlines (colour-bitmap emoji: libass cannot draw them). Without fontconfig's tools (``fc-match``): every font in
    the usual folders, in Studio's own order (`_PREFERRED` families first). Cached; `refresh_fonts` forgets it."""
    entries = _fontconfig_order(weight)
    if entries is None:
        entries = _scanned_order(weight)
    faces, seen = [], set()
    for path, index in entries:
        if (path, index) in seen:
            continue
        seen.add((path, index))
        try:
            face = face_of(Path(path), index)
        except FontError:
            continue
        if face.outline and not face.italic and face.starts:
            faces.append(face)
    return tuple(faces)


def refresh_fonts() -> None:
    """Forget what is installed (after installing fonts while Studio runs)."""
    fallback_faces.cache_clear()
    font_path.cache_clear()
    fallback_font.cache_clear()


def _fontconfig_order(weight: str) -> list[tuple[str, int]] | None:
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    pattern = "sans-serif:weight=bold" if weight == "bold" else "sans-serif"
    try:
        out = subprocess.run([exe, "-s", pattern, "--format", "%{file}\t%{index}\n"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    entries = []
    for line in out.stdout.splitlines():
        path, _, index = line.partition("\t")
        if path.lower().endswith(_FONT_SUFFIXES) and index.isdigit():
            entries.append((path, int(index) & 0xFFFF))  # the high bits name a variable font's instance
    return entries


def _scanned_order(weight: str) -> list[tuple[str, int]]:
    found: list[Face] = []
    folders = [*_DIRS, Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "fonts"]
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in _FONT_SUFFIXES and path.is_file():
                try:
                    found.extend(face_of(path, i) for i in range(min(face_count(path), 64)))
                except FontError:
                    continue
    want = 700 if weight == "bold" else 400

    def rank(face: Face) -> tuple:
        family = _PREFERRED.index(face.family) if face.family in _PREFERRED else len(_PREFERRED)
        return (family, "mono" in face.family.lower(), "serif" in face.family.lower(), abs(face.weight - want),
                str(face.path), face.index)

    return [(str(face.path), face.index) for face in sorted(found, key=rank)]


def font_for(cluster: str, faces: Sequence[Face]) -> Face | None:
    """The first of `faces` with a glyph for every character of `cluster` that needs one; else the first with one
    for its first such character; None when none has it (or nothing in it needs a glyph)."""
    drawn = [ch for ch in cluster if is_drawn(ch)]
    if not drawn:
        return None
    for face in faces:
        if all(face.has(ch) for ch in drawn):
            return face
    return next((face for face in faces if face.has(drawn[0])), None)


@dataclass(frozen=True)
class Coverage:
    """Which characters of a text the chosen font lacks (see `coverage`).

    Attributes:
        font: The chosen font's family.
        fallback: Script -> (the characters, the fallback families that draw them), for what the chosen font lacks
            but an installed font has.
        missing: Script -> the characters no installed font has (they are drawn as empty boxes).
    """

    font: str
    fallback: dict[str, tuple[str, tuple[str, ...]]]
    missing: dict[str, str]


def coverage(text: str, primary: Face, weight: str = "regular") -> Coverage:
    """What `primary` lacks of `text`, and which installed fonts draw it instead (the fallback order of
    `fallback_faces`). The characters are kept as they stand in the text: pieces that are not next to each other
    are separated by a space, and a piece is kept once."""
    found: dict[str, list[str]] = {}  # script -> pieces of text
    families: dict[str, list[str]] = {}
    missing: set[str] = set()
    last: dict[str, int] = {}  # script -> the index of the cluster its last piece ended at
    chain: Sequence[Face] | None = None
    for i, cluster in enumerate(clusters(text)):
        if primary.covers(cluster):
            continue
        chain = chain if chain is not None else fallback_faces(weight)
        face = font_for(cluster, chain)
        base = next((ch for ch in cluster if is_drawn(ch) and not primary.has(ch)), cluster[0])
        script = script_of(base)
        if face is None or not face.has(base):
            missing.add(script)
        elif face.name not in families.setdefault(script, []):
            families[script].append(face.name)
        pieces = found.setdefault(script, [])
        if pieces and last.get(script) == i - 1:
            pieces[-1] += cluster
        else:
            pieces.append(cluster)
        last[script] = i
    def text_of(script: str) -> str:
        return " ".join(dict.fromkeys(found[script]))

    return Coverage(primary.name,
                    {s: (text_of(s), tuple(families[s])) for s in found if s not in missing and s in families},
                    {s: text_of(s) for s in found if s in missing})


def _sample(chars: str, limit: int = 16) -> str:
    return chars if len(chars) <= limit else chars[:limit].rstrip() + "…"


def coverage_notes(what: str, cover: Coverage) -> list[str]:
    """Notes for a project on a text's coverage (none when the chosen font draws all of it): which scripts come from
    fallback fonts, and which characters no installed font can draw and what to install for them."""
    notes = []
    if cover.fallback:
        scripts = ", ".join(f"{script} ({_sample(chars)})" for script, (chars, _) in cover.fallback.items())
        families = ", ".join(dict.fromkeys(f for _, fams in cover.fallback.values() for f in fams))
        notes.append(f"{what}: the font {cover.font} has no glyphs for {scripts}; they are drawn with the fallback "
                     f"fonts {families}")
    if cover.missing:
        scripts = ", ".join(f"{script} ({_sample(chars)})" for script, chars in cover.missing.items())
        packages = sorted({SCRIPTS[s][1] if s in SCRIPTS else "fonts-noto-core" for s in cover.missing})
        notes.append(f"{what}: no installed font has glyphs for {scripts}: they are drawn as empty boxes; install a "
                     f"font for them, e.g. `apt-get install {' '.join(packages)}` (scripts/setup.sh installs the "
                     "fonts Studio covers)")
    return notes


def script_coverage(weight: str = "regular") -> list[tuple[str, Face | None, str]]:
    """For each script in `SCRIPTS`: (script, the first installed face that draws its samples or None, the Debian
    package that would draw it)."""
    faces = fallback_faces(weight)
    out = []
    for script, (sample, package) in SCRIPTS.items():
        face = next((f for f in faces if f.covers(sample)), None)
        out.append((script, face, package))
    return out


# -- drawing with fallback (Pillow) ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def raqm_available() -> bool:
    """Whether Pillow lays text out with libraqm (HarfBuzz shaping and FriBiDi): Arabic joined and right to left,
    Devanagari conjuncts and vowel signs in place. Pillow's wheels carry raqm and HarfBuzz but load FriBiDi from
    the system (Debian's libfribidi0)."""
    try:
        from PIL import features

        return bool(features.check("raqm"))
    except Exception:  # noqa: BLE001  (an odd Pillow build: basic layout)
        return False


def paragraph_rtl(text: str) -> bool:
    """Whether a line of text reads right to left: its first strong character is (Unicode bidi rule P2)."""
    for ch in text:
        kind = unicodedata.bidirectional(ch)
        if kind in ("R", "AL"):
            return True
        if kind == "L":
            return False
    return False


_STRONG_OR_NUMBER = ("L", "R", "EN", "AN")


def bidi_levels(text: str) -> list[int]:
    """The bidi embedding level of each character of one line (even: left to right, odd: right to left), by the
    Unicode bidi algorithm's implicit rules (W1-W7, N1-N2, I1-I2) with the line's direction from its first strong
    character; explicit embeddings and isolates are taken as neutrals (Studio's text never needs them)."""
    base = 1 if paragraph_rtl(text) else 0
    sos = "R" if base else "L"
    types = [unicodedata.bidirectional(ch) or "L" for ch in text]
    prev = sos
    for i, kind in enumerate(types):  # W1: a mark takes its base's type
        if kind == "NSM":
            types[i] = prev
        else:
            prev = kind
    strong = sos
    for i, kind in enumerate(types):  # W2, W3: numbers after Arabic letters are Arabic numbers; AL is R
        if kind in ("L", "R", "AL"):
            strong = kind
        elif kind == "EN" and strong == "AL":
            types[i] = "AN"
    types = ["R" if kind == "AL" else kind for kind in types]
    for i in range(1, len(types) - 1):  # W4: one separator between two numbers of a kind joins them
        if types[i] == "ES" and types[i - 1] == types[i + 1] == "EN":
            types[i] = "EN"
        elif types[i] == "CS" and types[i - 1] == types[i + 1] and types[i - 1] in ("EN", "AN"):
            types[i] = types[i - 1]
    for i, kind in enumerate(types):  # W5: terminators (%, $) next to European numbers are numbers
        if kind == "ET":
            j = i
            while j < len(types) and types[j] == "ET":
                j += 1
            if (i > 0 and types[i - 1] == "EN") or (j < len(types) and types[j] == "EN"):
                types[i:j] = ["EN"] * (j - i)
    strong = sos
    for i, kind in enumerate(types):  # W7: European numbers after left-to-right text are left to right
        if kind in ("L", "R"):
            strong = kind
        elif kind == "EN" and strong == "L":
            types[i] = "L"
    directions = ["R" if kind in ("R", "EN", "AN") else "L" if kind == "L" else None for kind in types]
    i = 0
    while i < len(directions):  # N1, N2: neutrals between two runs of one direction take it, else the line's
        if directions[i] is None:
            j = i
            while j < len(directions) and directions[j] is None:
                j += 1
            before = directions[i - 1] if i > 0 else sos
            after = directions[j] if j < len(directions) else sos
            directions[i:j] = [before if before == after else sos] * (j - i)
            i = j
        else:
            i += 1
    levels = []
    for kind, direction in zip(types, directions):  # I1, I2
        if kind not in _STRONG_OR_NUMBER:
            kind = direction
        if base == 0:
            levels.append(0 if kind == "L" else 2 if kind in ("EN", "AN") else 1)
        else:
            levels.append(1 if kind == "R" else 2)
    return levels


@dataclass(frozen=True)
class Run:
    """A piece of a line drawn in one face: its text (logical order), the face (None: no installed font has it, drawn
    in the chosen font as boxes) and its bidi level (odd: right to left)."""

    text: str
    face: Face | None
    level: int


class FallbackFont:
    """A font for Pillow that draws every character some installed font has.

    A line is split into runs, each in the first face with its glyphs: the chosen font, then `fallback_faces`
    (digits, punctuation and spaces stay in the run around them). Runs are placed in bidi order (the line's direction
    from its first strong character, each character's level by `bidi_levels`) and each is shaped by raqm in its own
    direction, so Arabic and Hebrew read right to left with joined letters and Devanagari gets its
    conjuncts, even inside a line of another script. Without raqm (`raqm_available`), right-to-left runs are at least
    drawn in reading order, but unjoined and unshaped.

    Sizes: by default every face is drawn at the same em size `size` (Pillow's meaning); with `line_px` each face is
    sized so that its line height (`Face.line_ratio`) is `line_px`, which is how libass sizes a style's font and
    its fallbacks (so caption widths measured here match libass's).

    It answers the parts of ``ImageFont.FreeTypeFont`` that Studio uses: `getlength`, `getmetrics`, and `draw_text`
    in place of ``ImageDraw.text``.
    """

    def __init__(self, path: Path, size: float, weight: str = "regular", *, line_px: float | None = None,
                 index: int = 0) -> None:
        self.primary = face_of(Path(path), index)
        self.size, self.weight, self.line_px = float(size), weight, line_px
        key = (str(self.primary.path), self.primary.index)
        self.faces = (self.primary, *(f for f in fallback_faces(weight) if (str(f.path), f.index) != key))
        self.raqm = raqm_available()

    def font(self, face: Face):
        """Pillow's font for one of the faces, at this font's size."""
        size = self.size if self.line_px is None else self.line_px / face.line_ratio
        return _pil_font(str(face.path), face.index, round(size * 64) / 64, self.raqm)

    def runs(self, text: str) -> list[Run]:
        """`text` split into runs (logical order), each of one face and one bidi level."""
        primary = self.primary
        if primary.covers(text) and (self.raqm or all(unicodedata.bidirectional(ch) not in ("R", "AL")
                                                        for ch in text)):
            return [Run(text, primary, 1 if paragraph_rtl(text) else 0)]  # one run: raqm orders it all by itself
        levels = bidi_levels(text)
        pieces: list[list] = []  # [text, face, level]
        at = 0
        for cluster in clusters(text):
            level = levels[at]
            at += len(cluster)
            if primary.covers(cluster):
                face = primary
            else:
                face = font_for(cluster, self.faces)
                if face is not None and not face.has(next((c for c in cluster if is_drawn(c)), cluster[0])):
                    face = None
            if pieces and pieces[-1][2] == level:
                last = pieces[-1][1]
                neutral = not any(is_drawn(ch) for ch in cluster) or script_of(cluster[0]) == "common"
                if last is face or (neutral and last is not None and last.covers(cluster)):
                    pieces[-1][0] += cluster  # the same face, or a space or digit it also has: the same run
                    continue
            pieces.append([cluster, face, level])
        return [Run(t, f, level) for t, f, level in pieces]

    def _kwargs(self, run: Run) -> dict:
        return {"direction": "rtl" if run.level % 2 else "ltr"} if self.raqm else {}

    def _shown(self, run: Run) -> str:
        if self.raqm or not run.level % 2:
            return run.text
        return "".join(reversed(clusters(run.text)))  # basic layout: at least in reading order

    def getlength(self, text: str) -> float:
        """The advance width of `text` in pixels."""
        return float(sum(self.font(r.face or self.primary).getlength(self._shown(r), **self._kwargs(r))
                         for r in self.runs(text)))

    def getmetrics(self) -> tuple[int, int]:
        """(ascent, descent) of the chosen font."""
        return self.font(self.primary).getmetrics()

    def faces_used(self, text: str) -> list[Face]:
        """The faces that draw `text` (the chosen font first if it draws any of it)."""
        return list(dict.fromkeys(r.face for r in self.runs(text) if r.face is not None))

    def draw_text(self, draw, xy: tuple[float, float], text: str, fill) -> None:
        """Draw one line with its top-left at `xy` (the chosen font's ascent above the baseline), like
        ``ImageDraw.text``."""
        x, y = xy
        baseline = y + self.getmetrics()[0]
        for run in visual_order(self.runs(text)):
            font = self.font(run.face or self.primary)
            shown = self._shown(run)
            draw.text((x, baseline), shown, font=font, fill=fill, anchor="ls", **self._kwargs(run))
            x += font.getlength(shown, **self._kwargs(run))


def visual_order(runs: Sequence[Run]) -> list[Run]:
    """Runs left to right as they are shown (Unicode bidi rule L2 over the runs' levels)."""
    runs = list(runs)
    if not runs:
        return runs
    top = max(r.level for r in runs)
    lowest_odd = min((r.level for r in runs if r.level % 2), default=top + 1)
    for level in range(top, lowest_odd - 1, -1):
        i = 0
        while i < len(runs):
            if runs[i].level >= level:
                j = i
                while j < len(runs) and runs[j].level >= level:
                    j += 1
                runs[i:j] = runs[i:j][::-1]
                i = j
            else:
                i += 1
    return runs


@functools.lru_cache(maxsize=256)
def _pil_font(path: str, index: int, size: float, raqm: bool):
    from PIL import ImageFont

    layout = ImageFont.Layout.RAQM if raqm else ImageFont.Layout.BASIC
    return ImageFont.truetype(path, size, index=index, layout_engine=layout)


@functools.lru_cache(maxsize=64)
def fallback_font(path: str, size: float, weight: str = "regular", line_px: float | None = None) -> FallbackFont:
    """A cached `FallbackFont` (fonts are read once per process)."""
    return FallbackFont(Path(path), size, weight, line_px=line_px)


def describe_scripts() -> list[str]:
    """Lines for ``python -m studio doctor``: for each script in `SCRIPTS`, the installed font that draws it (or what
    to install), and how text is shaped."""
    lines = []
    try:
        primary = face_of(font_path("bold")).family
    except (StudioError, FontError):
        primary = "none (install fonts-dejavu-core)"
    lines.append(f"fonts: captions and cards use {primary}; other scripts fall back through the installed fonts")
    for script, face, package in script_coverage():
        needed = "" if script in NEEDED_SCRIPTS else " (optional)"
        if face is not None:
            lines.append(f"  ok  {script:11s} {face.name}")
        else:
            lines.append(f"  no  {script:11s} no installed font draws it: apt-get install {package}{needed}")
    if raqm_available():
        lines.append("text shaping: cards with raqm (Arabic and Hebrew right to left and joined, Devanagari "
                     "conjuncts); captions with libass (HarfBuzz and FriBiDi)")
    else:
        lines.append("text shaping: cards without raqm (Arabic unjoined, Devanagari unshaped: install Debian's "
                     "libfribidi0, which Pillow's raqm needs); captions with libass (HarfBuzz and FriBiDi)")
    return lines
