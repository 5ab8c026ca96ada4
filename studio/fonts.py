"""Fonts for cards and captions: DejaVu (installed by the set-up) or another TrueType font fontconfig knows, and a
user's own caption font (a TrueType or OpenType file, checked by `read_font`)."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

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
