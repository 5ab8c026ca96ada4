"""The ``cards`` painter: a typographic title card per scene, drawn offline with numpy and Pillow in under a second.

A card is a `CardDesign` (layout, palette, geometry seed, the words to draw) rendered at the output size:

- The palette is a harmonious HSL scheme (analogous, complementary, split-complementary, triadic or tonal) whose
  details come from a hash of the visual prompt, the project seed and the scene seed; style words nudge it ("dark",
  "pastel", "warm", "cool", "mono", "vivid", "light"). Its base hue walks the colour wheel by the golden angle from
  scene to scene, and the layout walks a per-project shuffle of `LAYOUTS`, so neighbouring scenes never share
  layout or palette.
- The background is drawn at a working resolution of at most `WORK_SIDE` pixels with analytic anti-aliasing (every
  shape is smooth, so upscaling loses nothing), then scaled to the frame; a light grain on the soft layouts keeps
  gradients from banding; the type is drawn at full size.
- The key words (the visual prompt's first phrase, the next ones smaller; else the narration's longest words) are
  fitted and wrapped to the layout's text box, which never reaches into the lower `CAPTION_BAND` of the frame where
  captions are burned in later. The ink is checked against the pixels behind it (WCAG contrast ratio at least
  `MIN_CONTRAST`); where it falls short a panel is laid under the type.
- Every script: the type is drawn with `studio.fonts.FallbackFont`, so characters DejaVu lacks (Chinese, Japanese,
  Devanagari, emoji ...) come from the installed fallback fonts, each line in bidi order and each run shaped by raqm
  (Arabic joined right to left, Devanagari conjuncts). Characters no installed font has are drawn as boxes and
  logged as a warning (``studio.cards``) naming what to install; the fonts a card uses are part of its identity.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import json
import logging
import math
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..assets import atomic_path
from ..errors import StudioError
from ..fonts import FontError, clusters, coverage, coverage_notes, face_of, fallback_font, font_path
from ..progress import CancelToken, check
from ..project import Scene
from ..providers import register

MODEL = "cards-v1"
LAYOUTS = ("gradient", "band", "stripes", "bokeh", "split", "radial", "hills")
CAPTION_BAND = 0.22  # lower share of the frame kept free of type: captions are burned in there
MIN_CONTRAST = 4.5  # WCAG AA for text
WORK_SIDE = 1280  # longest side of the working canvas for backgrounds
GOLDEN_ANGLE = 137.50776  # degrees; consecutive hues land far apart and never repeat
# Words that steer image models but mean nothing on a title card.
_PROMPT_NOISE = {"4k", "8k", "hd", "uhd", "hdr", "cinematic", "photorealistic", "realistic", "highly detailed",
                 "detailed", "high quality", "best quality", "masterpiece", "trending on artstation", "sharp focus",
                 "octane render", "unreal engine", "award winning", "illustration", "digital art", "concept art"}
# Style words that nudge the palette (matched as whole words in the project's style).
_STYLE_WORDS = {
    "dark": {"dark", "night", "moody", "noir", "dramatic", "shadowy"},
    "light": {"light", "bright", "airy", "minimal", "minimalist", "clean"},
    "pastel": {"pastel", "soft", "gentle", "muted"},
    "vivid": {"vivid", "vibrant", "neon", "bold", "saturated", "colourful", "colorful", "pop"},
    "warm": {"warm", "sunset", "autumn", "fall", "golden", "fire", "desert"},
    "cool": {"cool", "cold", "winter", "ice", "icy", "ocean", "sea", "underwater", "frost"},
    "mono": {"mono", "monochrome", "monochromatic", "greyscale", "grayscale", "black-and-white", "bw"},
}

RGB = tuple[int, int, int]
log = logging.getLogger("studio.cards")


# -- design ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Palette:
    """A card's colours (sRGB 0-255). `id` names the scheme, mood and hue, e.g. ``triadic/dark/h212``."""

    id: str
    background: tuple[RGB, RGB]
    accent: RGB
    accent2: RGB
    deep: RGB  # darkest colour: dark ink, dark panels, shadows
    light: RGB  # lightest colour: light ink, light panels


@dataclass(frozen=True)
class CardDesign:
    """Everything a card's pixels depend on except the size (see `render_card`)."""

    layout: str
    palette: Palette
    seed: int  # the layout's geometry: angles, positions, circles
    headline: str
    subline: str = ""
    font: str = ""  # file name of the bold font, part of the card's identity


@dataclass(frozen=True)
class RenderedCard:
    """A rendered card and the facts about its type (for tests and for the UI's explanations)."""

    image: Any  # PIL.Image.Image, RGB, at the requested size
    text_box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1) around the type and its padding; None: no type
    ink: RGB | None
    contrast: float | None  # worst WCAG contrast ratio between the ink and the pixels behind it
    panel: bool  # whether a panel was laid under the type


def card_text(scene: Scene) -> tuple[str, str]:
    """The words a card shows: (headline, subline).

    The visual prompt's first comma-separated phrase is the headline and the next two the subline; a prompt that is a
    list of keywords ("sun, hills") puts up to three of them, five words at most, in the headline ("sun · hills").
    Prompt boilerplate ("4k", "cinematic") is left out. Without a visual prompt the narration's four longest words
    are the headline.
    """
    parts = [_clean(p) for p in scene.visual_prompt.split(",")]
    parts = [p for p in parts if p and p.casefold() not in _PROMPT_NOISE]
    if parts:
        head = 1
        while (head < min(3, len(parts)) and all(len(p.split()) <= 2 for p in parts[:head + 1])
               and sum(len(p.split()) for p in parts[:head + 1]) <= 5):
            head += 1
        return " · ".join(parts[:head]), " · ".join(parts[head:head + 2])
    words = re.findall(r"[^\W_]+(?:['’-][^\W_]+)*", scene.narration)
    seen: dict[str, tuple[int, str]] = {}
    for position, word in enumerate(words):
        seen.setdefault(word.casefold(), (position, word))
    longest = sorted(seen.values(), key=lambda item: (-len(item[1]), item[0]))[:4]
    return " ".join(word for _, word in sorted(longest)), ""


def design_card(scene: Scene, *, index: int, style: str = "", project_seed: int = 0) -> CardDesign:
    """The design of scene `index`'s card: layout, palette, geometry and words (deterministic).

    The layout is the `index`-th of a shuffle of `LAYOUTS` seeded by the project seed, and the base hue moves by the
    golden angle per index, so scenes next to each other always differ in both.
    """
    headline, subline = card_text(scene)
    digest = _hash_ints("card", scene.visual_prompt, headline, project_seed, scene.seed)
    order = list(LAYOUTS)
    random.Random(_hash_ints("layouts", project_seed)[0]).shuffle(order)
    layout = order[index % len(order)]
    palette = make_palette(index=index, project_seed=project_seed, salt=digest[1], style=style)
    return CardDesign(layout, palette, digest[0], headline, subline, _fonts_id(headline, subline))


def make_palette(*, index: int, project_seed: int, salt: int, style: str = "") -> Palette:
    """A harmonious palette for the `index`-th card of a project; `salt` (from the scene's content) varies the
    scheme, mood and a small hue jitter; `style` words nudge it."""
    rng = random.Random(salt)
    words = set(re.findall(r"[\w-]+", style.casefold()))
    nudges = {name for name, triggers in _STYLE_WORDS.items() if words & triggers}
    if "black" in words and "white" in words:
        nudges.add("mono")

    # 1. Hue: the project's start, the golden-angle walk, a jitter of at most 15 degrees; warm/cool squeeze the wheel
    start = _hash_ints("hue", project_seed)[0] % 360
    raw = (start + index * GOLDEN_ANGLE + rng.uniform(-15, 15)) % 360
    if "warm" in nudges and "cool" not in nudges:
        hue = (-35 + raw / 360 * 100) % 360  # reds, oranges, yellows
    elif "cool" in nudges and "warm" not in nudges:
        hue = 165 + raw / 360 * 105  # teals, blues, violets
    else:
        hue = raw

    # 2. Scheme: the two backgrounds stay in one hue family, the scheme's contrasting hues go to the accents
    scheme = rng.choice(["analogous", "complementary", "split", "triadic", "tonal"])
    turn = rng.choice([-1, 1])
    second, accent_hue, accent2_hue = {
        "analogous": (hue + turn * rng.uniform(20, 35), hue - turn * rng.uniform(40, 60),
                      hue + turn * rng.uniform(50, 70)),
        "complementary": (hue + turn * rng.uniform(5, 12), hue + 180, hue + 180 + turn * 20),
        "split": (hue + turn * rng.uniform(10, 20), hue + 150, hue + 210),
        "triadic": (hue + turn * rng.uniform(10, 20), hue + 120, hue + 240),
        "tonal": (hue + turn * rng.uniform(3, 8), hue + turn * rng.uniform(10, 20), hue - turn * rng.uniform(10, 20)),
    }[scheme]

    # 3. Mood: lightness and saturation
    moods = ["light", "mid", "dark"]
    mood = rng.choices(moods, weights=[3, 4, 3])[0]
    if "mono" in nudges:  # no hue to tell neighbours apart: step through lightness instead
        mood = moods[(index + rng.randrange(3)) % 3]
    for name in ("dark", "light", "pastel"):
        if name in nudges:
            mood = name
            break
    saturation = {"light": rng.uniform(0.35, 0.55), "mid": rng.uniform(0.38, 0.6), "dark": rng.uniform(0.35, 0.6),
                  "pastel": rng.uniform(0.28, 0.42)}[mood]
    if "vivid" in nudges:
        saturation = rng.uniform(0.75, 0.9)
    if "mono" in nudges:
        saturation = rng.uniform(0.0, 0.06)
    lightness = {"light": rng.uniform(0.76, 0.86), "mid": rng.uniform(0.34, 0.48), "dark": rng.uniform(0.12, 0.2),
                 "pastel": rng.uniform(0.8, 0.88)}[mood]
    step = {"light": -rng.uniform(0.08, 0.16), "mid": rng.uniform(-0.1, 0.1), "dark": rng.uniform(0.06, 0.12),
            "pastel": -rng.uniform(0.05, 0.1)}[mood]
    if scheme == "tonal":  # one hue: the lightness carries the contrast
        step *= 1.6

    # 4. Colours
    def hsl(h: float, s: float, lum: float) -> RGB:
        r, g, b = colorsys.hls_to_rgb((h % 360) / 360, min(max(lum, 0.0), 1.0), min(max(s, 0.0), 1.0))
        return (round(r * 255), round(g * 255), round(b * 255))

    accent_light = 0.62 if mood == "dark" else (0.42 if mood in ("light", "pastel") else rng.choice([0.28, 0.74]))
    boost = 0.04 if "mono" in nudges else 0.25  # accents are more saturated than backgrounds, except in mono
    palette_id = f"{scheme}/{mood}/h{int(hue):03d}"
    return Palette(
        id=palette_id,
        background=(hsl(hue, saturation, lightness), hsl(second, saturation * 0.9, lightness + step)),
        accent=hsl(accent_hue, min(1.0, saturation + boost), accent_light),
        accent2=hsl(accent2_hue, min(1.0, saturation + boost * 0.6), 1 - accent_light * 0.8),
        deep=hsl(hue, min(saturation, 0.5), 0.09),
        light=hsl(hue, saturation * 0.3, 0.965),
    )


# -- rendering ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TextSpec:
    """Where a layout wants its type, in fractions of the frame."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    align: str = "center"  # center | left | right
    panel: str = "auto"  # auto: only when contrast needs it; always: part of the look
    shadow: bool = True


def render_card(design: CardDesign, size: tuple[int, int], *, draw_glyphs: bool = True) -> RenderedCard:
    """Render `design` at `size` (width, height) pixels; deterministic (same design and size -> same pixels).

    With `draw_glyphs` off everything is drawn except the letters themselves (panel and shadow stay): the backdrop
    that the ink's contrast is judged against.
    """
    from PIL import Image, ImageChops

    width, height = size
    # 1. Background at a working resolution (every shape in it is smooth, so scaling it up loses nothing)
    scale = min(1.0, WORK_SIDE / max(width, height))
    work_w, work_h = max(8, round(width * scale)), max(8, round(height * scale))
    rng = np.random.default_rng(design.seed)
    canvas, spec, finish = _LAYOUT_PAINTERS[design.layout](work_w, work_h, design.palette, rng)
    if finish.get("vignette"):
        canvas *= _vignette(work_w, work_h, finish["vignette"])[..., None]
    image = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)

    # 2. Grain against banding in the soft gradients: one grain cell per working pixel, so it scales with the frame
    #    like the shapes do (and a 4K PNG stays small and quick to write)
    if finish.get("grain"):
        noise = np.random.default_rng(design.seed ^ 0x5EED).standard_normal((work_h, work_w), dtype=np.float32)
        grain = Image.fromarray(np.clip(noise * finish["grain"] + 128.5, 0, 255).astype(np.uint8))
        grain = grain.resize((width, height), Image.NEAREST)
        image = ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)

    # 3. Type
    return _draw_type(image, design, spec, draw_glyphs)


def _hash_ints(*parts: Any) -> list[int]:
    """Four 64-bit integers from the sha256 of `parts` (stable across runs and machines, unlike `hash`)."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).digest()
    return [int.from_bytes(digest[i:i + 8], "big") for i in range(0, 32, 8)]


def _clean(text: str) -> str:
    """Whitespace collapsed, control characters dropped; everything else is kept literally."""
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return " ".join(text.split())


# Shapes: coverage maps in 0..1 with about one working pixel of anti-aliased edge.
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(w, dtype=np.float32)[None, :] + 0.5, np.arange(h, dtype=np.float32)[:, None] + 0.5


def _fill(canvas: np.ndarray, colour: RGB, coverage: np.ndarray | float = 1.0, alpha: float = 1.0,
          box: tuple[int, int, int, int] | None = None) -> None:
    """Blend `colour` over `canvas` (in place) by `coverage * alpha`, optionally only inside `box` (x0, y0, x1, y1)."""
    target = canvas if box is None else canvas[box[1]:box[3], box[0]:box[2]]
    weight = np.asarray(coverage, dtype=np.float32) * alpha
    if weight.ndim == 2:
        weight = weight[..., None]
    target += (np.asarray(colour, dtype=np.float32) - target) * weight


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def _linear(w: int, h: int, angle_deg: float, start: RGB, end: RGB) -> np.ndarray:
    """A smooth linear gradient from `start` to `end` along `angle_deg`."""
    x, y = _grid(w, h)
    dx, dy = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    t = (x - w / 2) * dx + (y - h / 2) * dy
    extent = abs(w / 2 * dx) + abs(h / 2 * dy)
    t = np.clip(t / (2 * extent) + 0.5, 0, 1)
    t = t * t * (3 - 2 * t)  # smoothstep: no hard start or end
    a, b = np.asarray(start, np.float32), np.asarray(end, np.float32)
    return a + (b - a) * t[..., None]


def _disc(canvas: np.ndarray, cx: float, cy: float, radius: float, colour: RGB, alpha: float,
          soft: float = 1.0) -> None:
    """A filled circle with an edge `soft` pixels wide, drawn only over its bounding box."""
    h, w = canvas.shape[:2]
    reach = radius + soft
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    x = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    y = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    coverage = np.clip((radius - distance) / max(soft, 1.0) + 0.5, 0, 1)
    _fill(canvas, colour, coverage, alpha, (x0, y0, x1, y1))


def _vignette(w: int, h: int, strength: float) -> np.ndarray:
    x, y = _grid(w, h)
    d = np.sqrt(((x / w - 0.5) * 2) ** 2 + ((y / h - 0.5) * 2) ** 2) / math.sqrt(2)
    return 1.0 - strength * np.clip((d - 0.45) / 0.55, 0, 1) ** 2


LayoutResult = tuple[np.ndarray, _TextSpec, dict]
_LAYOUT_PAINTERS: dict[str, Callable[[int, int, Palette, np.random.Generator], LayoutResult]] = {}


def _layout(name: str):
    def decorate(fn):
        _LAYOUT_PAINTERS[name] = fn
        return fn

    return decorate


@_layout("gradient")
def _gradient(w: int, h: int, p: Palette, rng: np.random.Generator) -> LayoutResult:
    """A soft gradient with a glow in one corner; large centred type."""
    canvas = _linear(w, h, rng.uniform(0, 360), p.background[0], p.background[1])
    corner = rng.integers(4)
    cx, cy = (w * (0.1 if corner % 2 == 0 else 0.9), h * (0.1 if corner < 2 else 0.9))
    radius = max(w, h) * rng.uniform(0.45, 0.7)
    _disc(canvas, cx, cy, radius * 0.55, p.accent, 0.35, soft=radius * 0.9)
    return canvas, _TextSpec((0.1, 0.1, 0.9, 0.76)), {"vignette": 0.28, "grain": 1.2}


@_layout("band")
def _band(w: int, h: int, p: Palette, rng: np.random.Generator) -> LayoutResult:
    """A colour band across the frame with off-centre, left-aligned type on it and a short accent rule."""
    # The frame around the band is the band's colour moved towards white or black, so the band always stands out.
    around = _mix(p.background[0], p.light if sum(p.background[1]) < 382 else p.deep, 0.35)
    canvas = _linear(w, h, rng.uniform(60, 120), around, _mix(around, p.background[0], 0.5))
    top = rng.uniform(0.12, 0.2)
    bottom = min(0.72, top + rng.uniform(0.42, 0.5))
    _, y = _grid(w, h)
    band = np.clip(y - top * h + 0.5, 0, 1) * np.clip(bottom * h - y + 0.5, 0, 1)
    _fill(canvas, p.background[1], np.broadcast_to(band, (h, w)))
    rule_y, rule_h = bottom * h - h * 0.02, h * 0.012
    x0, x1 = int(w * 0.08), int(w * rng.uniform(0.3, 0.45))
    cover = np.clip(y - rule_y + 0.5, 0, 1) * np.clip(rule_y + rule_h - y + 0.5, 0, 1)
    _fill(canvas, p.accent, np.broadcast_to(cover, (h, w))[:, x0:x1], 1.0, (x0, 0, x1, h))
    box = (0.08, top + 0.04, 0.8 if w >= h else 0.92, bottom - 0.05)
    return canvas, _TextSpec(box, align="left", shadow=False), {}


@_layout("stripes")
def _stripes(w: int, h: int, p: Palette, rng: np.random.Generator) -> LayoutResult:
    """Diagonal stripes of two close colours; the type sits on a panel."""
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = np.asarray(p.background[0], np.float32)
    angle = math.radians(rng.uniform(25, 65) * rng.choice([-1, 1]))
    period = math.hypot(w, h) * rng.uniform(0.06, 0.11)
    x, y = _grid(w, h)
    phase = (x * math.cos(angle) + y * math.sin(angle)) % period
    half = period / 2
    # Signed distance to the nearest stripe edge (positive inside a stripe): a one-pixel anti-aliased edge.
    inside = np.where(phase < half, np.minimum(phase, half - phase), np.maximum(half - phase, phase - period))
    _fill(canvas, _mix(p.background[0], p.background[1], 0.7), np.clip(inside + 0.5, 0, 1))
    return canvas, _TextSpec((0.14, 0.14, 0.86, 0.74), panel="always", shadow=False), {"vignette": 0.18}


@_layout("bokeh")
def _bokeh(w: int, h: int, p: Palette, rng: np.random.Generator) -> LayoutResult:
    """Big soft out-of-focus circles over a darkened gradient; centred type."""
    base = _mix(p.background[0], p.deep, 0.55)
    canvas = _linear(w, h, rng.uniform(0, 360), base, _mix(p.background[1], p.deep, 0.35))
    colours = [p.accent, p.accent2, p.light, p.background[1]]
    side = min(w, h)
    for _ in range(int(rng.integers(10, 18))):
        radius = side * rng.uniform(0.04, 0.24)
        _disc(canvas, rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h, radius,
              colours[int(rng.integers(len(colours)))], rng.uniform(0.1, 0.35), soft=radius * rng.uniform(0.05, 0.6))
    return canvas, _TextSpec((0.1, 0.12, 0.9, 0.76)), {"vignette": 0.35, "grain": 1.2}


@_layout("split")
def _split(w: int, h: int, p: Palette, rng: np.random.Generator) -> LayoutResult:
    """Two colour blocks with a thin accent divider; the type fills the larger block."""
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = np.asarray(p.background[0], np.float32)
    x, y = _grid(w, h)
    share = rng.uniform(0.56, 0.64)
    first = bool(rng.integers(2))  # landscape: text block on the left (True) or right; portrait: always on top
    if w >= h:
        edge = w * (share if first else 1 - share)
        other = np.clip(x - edge + 0.5, 0, 1) if first else np.clip(edge - x + 0.5, 0, 1)
        line = np.clip(w * 0.004 - np.abs(x - edge) + 0.5, 0, 1)
        other, line = np.broadcast_to(other, (h, w)), np.broadcast_to(line, (h, w))
        box = (0.07, 0.12, share - 0.05, 0.76) if first else (1 - share + 0.05, 0.12, 0.93, 0.76)
        circle = ((share + 1) / 2 * w if first else (1 - share) / 2 * w, h * rng.uniform(0.3, 0.6))
        align = "left"
    else:
        edge = h * min(share, 0.7)
        other = np.broadcast_to(np.clip(y - edge + 0.5, 0, 1), (h, w))
        line = np.broadcast_to(np.clip(h * 0.004 - np.abs(y - edge) + 0.5, 0, 1), (h, w))
        box = (0.08, 0.08, 0.92, min(share, 0.7) - 0.04)
        circle = (w * rng.uniform(0.25, 0.75), (edge + h) / 2)
        align = "center"
    _fill(canvas, p.background[1], other)
    radius = min(w, h) * rng.uniform(0.14, 0.22)
    circle_canvas = canvas.copy()
    _disc(circle_canvas, circle[0], circle[1], radius, p.accent, 0.9)
    canvas += (circle_canvas - canvas) * other[..., None]  # the circle shows on the other block only
    _fill(canvas, p.accent, line)
    return canvas, _TextSpec(box, align=align, shadow=False), {}


@_layout("radial")
def _radial(w: int, h: int, p: Palette, rng: np.random.Generator) -> LayoutResult:
    """A radial glow from one side with thin concentric rings; the type sits on the other side."""
    left = bool(rng.integers(2))
    cx, cy = w * (rng.uniform(0.1, 0.3) if left else rng.uniform(0.7, 0.9)), h * rng.uniform(0.25, 0.6)
    x, y = _grid(w, h)
    distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    reach = math.hypot(max(cx, w - cx), max(cy, h - cy))
    inner, outer = np.asarray(_mix(p.background[0], p.light, 0.25), np.float32), np.asarray(p.background[1], np.float32)
    canvas = inner + (outer - inner) * np.sqrt(np.clip(distance / reach, 0, 1))[..., None]
    step = min(w, h) * rng.uniform(0.07, 0.11)
    thickness = max(1.2, min(w, h) * 0.004)
    for k in range(1, 6):  # thin rings, further apart and fainter outwards
        coverage = np.clip(thickness / 2 - np.abs(distance - step * k * (1 + 0.15 * k)) + 0.5, 0, 1)
        _fill(canvas, p.accent, coverage, 0.5 - 0.07 * k)
    if w >= h:
        box, align = ((0.46, 0.12, 0.93, 0.76), "left") if left else ((0.07, 0.12, 0.54, 0.76), "right")
    else:
        box, align = (0.08, 0.3, 0.92, 0.76), ("left" if left else "right")
    return canvas, _TextSpec(box, align=align), {"vignette": 0.22, "grain": 1.2}


@_layout("hills")
def _hills(w: int, h: int, p: Palette, rng: np.random.Generator) -> LayoutResult:
    """A sky gradient, a soft sun and layered rolling hills; the type sits in the sky."""
    sky_top, horizon = _mix(p.background[0], p.light, 0.15), _mix(p.background[0], p.background[1], 0.6)
    canvas = _linear(w, h, 90, sky_top, horizon)
    side = min(w, h)
    # The sun sits low, half behind the hills, clear of the type above.
    _disc(canvas, w * rng.uniform(0.15, 0.85), h * rng.uniform(0.56, 0.64), side * rng.uniform(0.1, 0.15), p.accent,
          0.85, soft=side * 0.02)
    x, y = _grid(w, h)
    layers = 4
    for k in range(layers):
        base = h * (0.58 + 0.1 * k)
        amplitude = h * rng.uniform(0.03, 0.07)
        wavelength = w * rng.uniform(0.35, 0.9)
        phase = rng.uniform(0, 2 * math.pi)
        ridge = base + amplitude * np.sin(x / wavelength * 2 * math.pi + phase) \
            + amplitude * 0.4 * np.sin(x / wavelength * 5.3 + phase * 1.7)
        coverage = np.broadcast_to(np.clip(y - ridge + 0.5, 0, 1), (h, w))
        _fill(canvas, _mix(p.background[1], p.deep, 0.2 + 0.22 * k), coverage)
    return canvas, _TextSpec((0.08, 0.08, 0.92, 0.46)), {}


# -- type --------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _font_name() -> str:
    try:
        return font_path("bold").name
    except StudioError:
        return "pillow-default"


@functools.lru_cache(maxsize=256)
def _fonts_id(headline: str, subline: str) -> str:
    """The fonts the card's words are drawn in: the bold font's file name, then any fallback fonts it needs (so a
    card is drawn again when the fonts for its words change); warns about characters no installed font has."""
    name = _font_name()
    if name == "pillow-default":
        return name
    used: list[str] = []
    for weight, text in (("bold", headline), ("regular", subline)):
        if not text:
            continue
        try:
            primary = face_of(font_path(weight))
        except (StudioError, FontError):
            continue
        cover = coverage(text, primary, weight)
        used += [family for _, families in cover.fallback.values() for family in families]
        used += [f"no font for {script}" for script in cover.missing]
        for note in coverage_notes("cards", cover):
            if "empty boxes" in note:
                log.warning(note)
    return "+".join([name, *dict.fromkeys(used)])


class _PlainFont:
    """Pillow's built-in font with `studio.fonts.FallbackFont`'s drawing call (a machine without TrueType fonts)."""

    def __init__(self, size: int) -> None:
        from PIL import ImageFont

        self.font = ImageFont.load_default(size)

    def getlength(self, text: str) -> float:
        return float(self.font.getlength(text))

    def getmetrics(self) -> tuple[int, int]:
        return self.font.getmetrics()

    def draw_text(self, draw, xy, text: str, fill) -> None:
        draw.text(xy, text, font=self.font, fill=fill)


@functools.lru_cache(maxsize=256)
def _font(weight: str, size: int):
    """The card font of a weight and size, with fallback fonts for what it lacks (`studio.fonts.FallbackFont`)."""
    try:
        return fallback_font(str(font_path(weight)), size, weight)
    except (StudioError, FontError):  # no TrueType font on this machine: Pillow's own scalable font draws every card
        return _PlainFont(size)


def _wrap(text: str, font, max_width: float, break_words: bool = True) -> list[str] | None:
    """Greedy word wrap. A word wider than the line is broken between characters, or, with `break_words` off, the
    text does not fit (None)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= max_width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        if font.getlength(word) <= max_width:
            continue
        if not break_words:
            return None
        line = ""
        for ch in clusters(word):  # between user-perceived characters: conjuncts and emoji stay whole
            if font.getlength(line + ch) <= max_width or not line:
                line += ch
            else:
                lines.append(line)
                line = ch
    if line:
        lines.append(line)
    return lines


def _truncate(lines: list[str], font, max_width: float, max_lines: int) -> list[str]:
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1]
    while last and font.getlength(last.rstrip() + "…") > max_width:
        last = "".join(clusters(last)[:-1])
    kept[-1] = last.rstrip() + "…"
    return kept


def _line_height(font) -> float:
    ascent, descent = font.getmetrics()
    return (ascent + descent) * 1.04


@dataclass
class _Block:
    lines: list[tuple[str, Any]]  # (text, font), top to bottom
    size: int
    height: float
    width: float


def _fit(headline: str, subline: str, box_w: float, box_h: float, frame_min: int, frame_h: int) -> _Block:
    """The largest headline size whose wrapped block fits the box (headline at most 4 lines, subline at most 2).

    Sizes that keep every word whole are preferred; then words may break between characters; the last resort is
    the smallest size with the text cut short ("…"). The block never grows past the box, whatever the text.
    """

    def build(size: int, break_words: bool, max_lines: int | None = None) -> _Block | None:
        head_font, sub_font = _font("bold", size), _font("regular", max(6, round(size * 0.42)))
        head = _wrap(headline, head_font, box_w, break_words) if headline else []
        if head is None or (max_lines is None and len(head) > 4):
            return None
        head = _truncate(head, head_font, box_w, max_lines or 4)
        sub = _truncate(_wrap(subline, sub_font, box_w) or [], sub_font, box_w, 2) if subline else []
        if max_lines is not None and max_lines < 3:
            sub = []  # no room: the headline matters more
        lines = [(t, head_font) for t in head] + [(t, sub_font) for t in sub]
        height = sum(_line_height(f) for _, f in lines) + (size * 0.35 if head and sub else 0)
        if height > box_h:
            return None
        return _Block(lines, size, height, max((f.getlength(t) for t, f in lines), default=0.0))

    def largest(low: int, high: int, break_words: bool) -> _Block | None:
        best = None
        while low <= high:  # bisect on the size: the block only grows with it
            mid = (low + high) // 2
            block = build(mid, break_words)
            if block is not None:
                best, low = block, mid + 1
            else:
                high = mid - 1
        return best

    smallest = max(9, round(frame_min * 0.03))
    high = max(smallest, round(min(frame_h * 0.14, box_w * 0.22)))
    found = largest(smallest, high, False) or largest(smallest, high, True)
    if found is not None:
        return found
    for size in range(smallest, 3, -1):  # cut the text short, then shrink it, until it fits (tiny frames)
        for max_lines in (4, 3, 2, 1):
            block = build(size, True, max_lines)
            if block is not None:
                return block
    return _Block([], smallest, 0.0, 0.0)


_SRGB_TO_LINEAR = np.array([(c / 255 / 12.92) if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in range(256)],
                           dtype=np.float64)
_LUMA = np.array([0.2126, 0.7152, 0.0722])


def relative_luminance(pixels: np.ndarray) -> np.ndarray:
    """WCAG relative luminance of sRGB uint8 pixels, shape (..., 3) -> (...)."""
    return _SRGB_TO_LINEAR[np.asarray(pixels, dtype=np.uint8)] @ _LUMA


def contrast_ratio(a: float, b: float) -> float:
    """WCAG contrast ratio of two relative luminances (1 to 21)."""
    high, low = max(a, b), min(a, b)
    return (high + 0.05) / (low + 0.05)


def _draw_type(image, design: CardDesign, spec: _TextSpec, draw_glyphs: bool = True) -> RenderedCard:
    """Fit, place and draw the words; choose ink and, where contrast needs it, a panel."""
    from PIL import Image, ImageDraw, ImageFilter

    width, height = image.size
    band_top = round(height * (1 - CAPTION_BAND))
    if not design.headline and not design.subline:
        return RenderedCard(image, None, None, None, False)

    # 1. Fit the words to the layout's box (kept clear of the caption band, with room for the panel's padding)
    frame_min = min(width, height)
    pad = round(frame_min * 0.03)
    x0, y0 = spec.box[0] * width, spec.box[1] * height
    x1, y1 = spec.box[2] * width, max(y0, min(spec.box[3] * height, band_top - pad - 2))
    block = _fit(design.headline, design.subline, x1 - x0, y1 - y0, frame_min, height)
    if not block.lines:  # a frame too small for any type
        return RenderedCard(image, None, None, None, False)
    top = y0 + (y1 - y0 - block.height) / 2
    if spec.align == "left":
        left = x0
    elif spec.align == "right":
        left = x1 - block.width
    else:
        left = x0 + (x1 - x0 - block.width) / 2
    # The contrast is measured over the words plus half the padding; a panel covers the words plus all of it, so its
    # rounded corners (radius pad/2) never uncover a measured pixel.
    def around(margin: float) -> tuple[int, int, int, int]:
        right, bottom = math.ceil(left + block.width + margin), math.ceil(top + block.height + margin)
        return max(0, int(left - margin)), max(0, int(top - margin)), min(width, right), min(band_top, bottom)

    box, panel_box = around(pad / 2), around(pad)

    # 2. Ink: the one that contrasts best with the pixels behind the words; a panel where that is not enough
    # Every background feature is at least one working pixel wide, so sampling once per working pixel misses none.
    stride = max(1, max(width, height) // WORK_SIDE)
    behind = np.asarray(image.crop(box))[::stride, ::stride].reshape(-1, 3).astype(np.float32)
    palette = design.palette
    ink, contrast = _best_ink(behind, palette)
    panel_alpha = 0.0
    if spec.panel == "always" or contrast < MIN_CONTRAST:
        light_ink = sum(ink) > 382
        panel_colour = palette.deep if light_ink else palette.light
        for alpha in ((0.78, 0.88, 1.0) if spec.panel == "always" else (0.55, 0.7, 0.82, 0.92, 1.0)):
            covered = behind + (np.asarray(panel_colour, np.float32) - behind) * alpha
            panel_alpha, contrast = alpha, _ink_contrast(ink, covered)
            if contrast >= MIN_CONTRAST:
                break
        region = image.crop(panel_box)
        mask = Image.new("L", region.size, 0)
        ImageDraw.Draw(mask).rounded_rectangle((0, 0, region.width - 1, region.height - 1), radius=round(pad / 2),
                                               fill=round(255 * panel_alpha))
        image.paste(Image.composite(Image.new("RGB", region.size, panel_colour), region, mask), panel_box[:2])
        contrast = _ink_contrast(ink, np.asarray(image.crop(box))[::stride, ::stride].reshape(-1, 3))

    # 3. A soft shadow under light ink (not measured for contrast: it only helps), then the words
    if spec.shadow and panel_alpha == 0.0 and sum(ink) > 382:
        blur = max(1.0, block.size * 0.06)
        offset = max(1, round(block.size * 0.04))
        shadow_box = (max(0, int(left - 3 * blur)), max(0, int(top - 3 * blur)),
                      min(width, math.ceil(left + block.width + 3 * blur + offset)),
                      min(band_top, math.ceil(top + block.height + 3 * blur + offset)))
        if shadow_box[2] > shadow_box[0] and shadow_box[3] > shadow_box[1]:
            mask = Image.new("L", (shadow_box[2] - shadow_box[0], shadow_box[3] - shadow_box[1]), 0)
            _draw_lines(ImageDraw.Draw(mask), block, left - shadow_box[0] + offset, top - shadow_box[1] + offset,
                        spec.align, 150)
            mask = mask.filter(ImageFilter.GaussianBlur(blur))
            region = image.crop(shadow_box)
            image.paste(Image.composite(Image.new("RGB", region.size, palette.deep), region, mask), shadow_box[:2])
    if draw_glyphs:
        _draw_lines(ImageDraw.Draw(image), block, left, top, spec.align, ink)
    return RenderedCard(image, box, ink, round(contrast, 3), panel_alpha > 0)


def _draw_lines(draw, block: _Block, left: float, top: float, align: str, fill) -> None:
    y = top
    for i, (text, font) in enumerate(block.lines):
        if i > 0 and font is not block.lines[i - 1][1]:
            y += block.size * 0.35  # the gap between headline and subline
        line_w = font.getlength(text)
        x = left + {"left": 0.0, "right": block.width - line_w}.get(align, (block.width - line_w) / 2)
        font.draw_text(draw, (round(x), round(y)), text, fill)
        y += _line_height(font)


def _ink_contrast(ink: RGB, behind: np.ndarray) -> float:
    """The worst WCAG contrast ratio between `ink` and any of the pixels `behind` it."""
    ink_l = float(relative_luminance(np.asarray(ink)))
    lum = relative_luminance(np.clip(np.rint(behind), 0, 255)) if len(behind) else np.zeros(1)
    return float(((np.maximum(lum, ink_l) + 0.05) / (np.minimum(lum, ink_l) + 0.05)).min())


def _best_ink(behind: np.ndarray, palette: Palette) -> tuple[RGB, float]:
    """The palette's light or deep colour, whichever contrasts better with `behind`."""
    return max(((ink, _ink_contrast(ink, behind)) for ink in (palette.light, palette.deep)), key=lambda item: item[1])


# -- the painter -------------------------------------------------------------------------------------------------------
class CardsPainter:
    """Typographic title cards: see the module's notes."""

    name = "cards"
    hooks = frozenset({"variant"})  # optional hooks it implements (studio.providers.HOOKS)
    model = MODEL
    suffix = ".png"

    def variant(self, scene: Scene, *, index: int, style: str, project_seed: int) -> dict:
        """The card's design, for the cache key: layout and palette depend on the scene's position."""
        design = design_card(scene, index=index, style=style, project_seed=project_seed)
        return {"layout": design.layout, "palette": design.palette.id,
                "colours": [list(c) for c in _colours(design.palette)], "geometry": design.seed,
                "headline": design.headline, "subline": design.subline, "font": design.font}

    def paint(self, scene: Scene, *, index: int, size: tuple[int, int], style: str, project_seed: int, out: Path,
              cancel: CancelToken | None = None) -> Path:
        """Render the scene's card at `size` and save it as a PNG at `out` (atomically)."""
        check(cancel)
        card = render_card(design_card(scene, index=index, style=style, project_seed=project_seed), size)
        check(cancel)
        out = Path(out)
        with atomic_path(out) as tmp:
            card.image.save(tmp, format="PNG", compress_level=1)  # fast: 4K in a few tenths of a second
        return out


def _colours(palette: Palette) -> list[RGB]:
    return [*palette.background, palette.accent, palette.accent2, palette.deep, palette.light]


def _check() -> str:
    try:
        return f"offline title cards, font {font_path('bold').name} (with fallback fonts for other scripts)"
    except StudioError:
        return "offline title cards, Pillow's built-in font (install fonts-dejavu-core for DejaVu Sans)"


@register("painter", "cards", check=_check, description="Typographic title cards drawn offline in well under a second")
def cards() -> CardsPainter:
    """Typographic title cards drawn offline in well under a second."""
    return CardsPainter()


__all__ = ["CardDesign", "CardsPainter", "Palette", "RenderedCard", "card_text", "contrast_ratio", "design_card",
           "make_palette", "relative_luminance", "render_card", "LAYOUTS", "CAPTION_BAND", "MIN_CONTRAST"]
