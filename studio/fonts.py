"""Fonts for cards and captions: DejaVu (installed by the set-up) or another TrueType font fontconfig knows."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from .errors import StudioError

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
