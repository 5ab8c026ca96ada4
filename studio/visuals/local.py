"""The ``local`` painter: a scene shows the user's own image or video file (`Scene.media`).

The file is checked before it is used: it must be an existing regular file (symlinks are followed) with an image or
video suffix, an image must decode completely with Pillow (at most `MAX_PIXELS`), and a video must hold a video
stream with a duration that FFmpeg can decode. It is then copied into the asset store, keyed by the sha256 of its
bytes (and this painter's version), so the same file is checked and copied once however often it is used.

Videos and plain PNG / JPEG files are copied byte for byte and keep their suffix. Other images are normalised so that
every later step reads them the same way: EXIF orientation is applied (a phone photo shows upright), and formats
other than PNG / JPEG (WebP, BMP, GIF: its first frame, TIFF) become PNG. A JPEG that needs turning stays a JPEG
(quality 95). The size is never changed: fitting the picture to the frame is the compositor's job.
"""

from __future__ import annotations

import os
import shutil
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..assets import atomic_path
from ..errors import StudioError
from ..media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, probe
from ..progress import CancelToken, check
from ..project import Scene
from ..providers import register

MODEL = "local-v1"
# Images above this many pixels are refused (a decompression bomb, or a photo far larger than any video frame).
MAX_PIXELS = 100_000_000
EXIF_ORIENTATION = 0x0112
# Modes that every reader (Pillow, OpenCV, ffmpeg) handles; other modes are normalised.
_PLAIN_MODES = {"PNG": {"RGB", "RGBA", "L", "LA", "P"}, "JPEG": {"RGB", "L"}}
_FORMAT_SUFFIXES = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg")}


def scene_label(scene: Scene, index: int) -> str:
    """How messages name a scene: ``scene 3 (id s1a2b3c4)`` (1-based number)."""
    return f"scene {index + 1} (id {scene.id})"


@dataclass(frozen=True)
class ImagePlan:
    """How a user's image becomes an asset: copied as it is, or normalised (`format` is Pillow's writer name)."""

    normalise: bool
    format: str
    suffix: str


class LocalPainter:
    """Checks a scene's own media file and copies it into the asset store (see the module's notes)."""

    name = "local"
    hooks = frozenset()  # optional hooks it implements (studio.providers.HOOKS)
    model = MODEL
    suffix = ""  # each asset keeps its file's own suffix: see `prepare`

    def prepare(self, scene: Scene, *, index: int, media_root: Path | None = None) -> tuple[Path, str]:
        """Resolve and check `scene.media` cheaply (no full decode): its path and the suffix its asset will have.

        Raises:
            StudioError: no media, missing file, a folder or device, unsupported type, or an unreadable image header.
        """
        label = scene_label(scene, index)
        path = resolve_media(scene, index=index, media_root=media_root)
        if path_kind(scene.media) == "video":
            return path, Path(scene.media).suffix.lower()
        return path, _image_plan(path, scene.media, label).suffix

    def paint(self, scene: Scene, *, index: int, size: tuple[int, int], style: str, project_seed: int, out: Path,
              cancel: CancelToken | None = None, media_root: Path | None = None) -> Path:
        """Check the scene's media file completely and copy (or normalise) it to `out`.

        `size`, `style` and `project_seed` are not used: the user's file is shown as it is. `out` must end in the
        suffix that `prepare` returns. Relative media paths are resolved against `media_root` (default: the current
        directory).
        """
        # 1. Check the path and the file's type
        check(cancel)
        label = scene_label(scene, index)
        source = resolve_media(scene, index=index, media_root=media_root)
        out = Path(out)
        if path_kind(scene.media) == "video":
            expected = Path(scene.media).suffix.lower()
        else:
            expected = _image_plan(source, scene.media, label).suffix
        if out.suffix.lower() != expected:
            raise StudioError(f"{label}: `out` must end in {expected} for media file {scene.media}, got {out.name}")

        # 2. Decode it completely, so a damaged file fails here, naming the scene, and not halfway through a render
        if path_kind(scene.media) == "video":
            _check_video(source, scene.media, label)
            image = plan = None
        else:
            image = _load_image(source, scene.media, label)
            plan = _image_plan(source, scene.media, label, loaded=image)
        try:
            check(cancel)
            # 3. Copy it byte for byte, or write the normalised image
            with atomic_path(out) as tmp:
                if plan is None or not plan.normalise:
                    shutil.copyfile(source, tmp)
                else:
                    upright = _normalised(image, plan.format)
                    options = {"quality": 95} if plan.format == "JPEG" else {"compress_level": 3}
                    if upright.info.get("icc_profile"):  # keep the colours as the camera or editor meant them
                        options["icc_profile"] = upright.info["icc_profile"]
                    upright.save(tmp, format=plan.format, **options)
        finally:
            if image is not None:
                image.close()
        return out


@register("painter", "local",
          description="Your own image or video file for a scene (the `media` column), checked and copied")
def local() -> LocalPainter:
    """Your own image or video file for a scene, checked and copied into the project."""
    return LocalPainter()


def path_kind(media: str) -> str:
    """``image`` or ``video`` by the file name's suffix (checked by `resolve_media`)."""
    return "video" if Path(media).suffix.lower() in VIDEO_SUFFIXES else "image"


def resolve_media(scene: Scene, *, index: int, media_root: Path | None = None) -> Path:
    """The existing regular file that `scene.media` names, symlinks resolved; relative paths are taken from
    `media_root` (default: the current directory).

    Raises:
        StudioError: naming the scene, when there is no such file, it is a folder or device, or its type is unsupported.
    """
    label = scene_label(scene, index)
    media = scene.media
    if not media or not str(media).strip():
        raise StudioError(f"{label} has no `media` file to show")
    name = Path(os.path.expanduser(str(media)))
    path = name if name.is_absolute() else Path(media_root if media_root is not None else Path.cwd()) / name
    try:
        resolved = path.resolve(strict=True)
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        raise StudioError(f"{label}: media file {media} does not exist (looked for {path}); fix the path in the "
                          "`media` column (relative paths start from the media folder)") from None
    except (OSError, RuntimeError) as exc:  # a symlink loop, a permission problem
        raise StudioError(f"{label}: media file {media} cannot be opened ({exc}); fix the path or its "
                          "permissions") from None
    if stat.S_ISDIR(mode):
        raise StudioError(f"{label}: media file {media} is a folder, not a file; name one image or video file in it")
    if not stat.S_ISREG(mode):
        raise StudioError(f"{label}: media file {media} is not a regular file (a device, pipe or socket); "
                          "name an image or video file")
    # The user's name decides the type (a symlink may point at a content-addressed file without a suffix).
    suffix = name.suffix.lower()
    if suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
        kind = suffix or "(none)"
        raise StudioError(f"{label}: media file {media} has an unsupported file type {kind}; use one of "
                          f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}")
    if not os.access(resolved, os.R_OK):
        raise StudioError(f"{label}: media file {media} is not readable; check its permissions")
    return resolved


def _unreadable(label: str, media: str, exc: BaseException) -> StudioError:
    detail = str(exc) or type(exc).__name__
    return StudioError(f"{label}: media file {media} is not a readable image ({detail}): replace it")


def _image_plan(path: Path, media: str, label: str, loaded=None) -> ImagePlan:
    """Decide whether an image is copied as it is or normalised, from its header (cheap) or from a `loaded` image.

    The asset's suffix depends only on the format and the user's suffix, so the header and the decoded image always
    agree on it; a PNG's EXIF chunk may follow its pixels, so only the decoded image tells its orientation for sure.
    """
    from PIL import Image

    suffix = Path(media).suffix.lower()
    try:
        if loaded is not None:
            fmt, mode, orientation = loaded.format, loaded.mode, loaded.getexif().get(EXIF_ORIENTATION, 1)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
                with Image.open(path) as image:
                    _check_pixels(image.width, image.height, media, label)
                    fmt, mode, orientation = image.format, image.mode, _header_orientation(image)
    except StudioError:
        raise
    except Image.DecompressionBombError as exc:
        raise StudioError(f"{label}: media file {media} is too large ({exc}); scale it down to at most "
                          f"{MAX_PIXELS // 1_000_000} megapixels") from None
    except Exception as exc:  # Pillow raises many kinds of errors on damaged or foreign bytes
        raise _unreadable(label, media, exc) from None
    if fmt == "JPEG":  # a photo stays a JPEG (PNG would be many times larger); only its orientation or colours change
        out_suffix = suffix if suffix in _FORMAT_SUFFIXES["JPEG"] else ".jpg"
    else:
        out_suffix = ".png" if fmt != "PNG" or suffix != ".png" else suffix
    plain = (fmt in _PLAIN_MODES and mode in _PLAIN_MODES[fmt] and suffix in _FORMAT_SUFFIXES[fmt]
             and orientation in (None, 1))
    return ImagePlan(not plain, "JPEG" if fmt == "JPEG" else "PNG", out_suffix)


def _header_orientation(image) -> int:
    """EXIF orientation without decoding the pixels (``getexif`` would decode a whole PNG to find a late chunk)."""
    from PIL import Image

    if image.format != "PNG":
        return image.getexif().get(EXIF_ORIENTATION, 1)
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return exif.get(EXIF_ORIENTATION, 1)


def _check_pixels(width: int, height: int, media: str, label: str) -> None:
    if width < 1 or height < 1:
        raise StudioError(f"{label}: media file {media} is not a readable image (it is {width}x{height} pixels): "
                          "replace it")
    if width * height > MAX_PIXELS:
        raise StudioError(f"{label}: media file {media} is too large ({width}x{height} = {width * height / 1e6:.0f} "
                          f"megapixels; the limit is {MAX_PIXELS // 1_000_000}): scale it down")


def _load_image(path: Path, media: str, label: str):
    """Decode the whole image (a truncated or corrupt file fails here); returns the loaded Pillow image."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.verify()  # checksums and structure (PNG CRCs); the image cannot be used after verify
            image = Image.open(path)
            _check_pixels(image.width, image.height, media, label)
            image.load()
            return image
    except StudioError:
        raise
    except Image.DecompressionBombError as exc:
        raise StudioError(f"{label}: media file {media} is too large ({exc}); scale it down") from None
    except Exception as exc:  # decoding untrusted bytes: OSError, SyntaxError, struct.error, ValueError...
        raise _unreadable(label, media, exc) from None


def _normalised(image, target_format: str):
    """The image upright (EXIF orientation applied) in a mode that `target_format` and every reader handle."""
    import numpy as np
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float greyscale: scale to 8 bits
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max()) if values.size else 0.0
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        image = Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if target_format == "JPEG":
        return image.convert("RGB")
    return image.convert("RGBA" if has_alpha else "RGB")


def _check_video(path: Path, media: str, label: str) -> None:
    """Probe the clip and decode its first frame."""
    import av

    try:
        info = probe(path)
    except StudioError as exc:  # probe's own message names the absolute path; the cause is what the user needs
        raise StudioError(f"{label}: media file {media} is not a readable video ({exc.__cause__ or exc}): "
                          "replace it") from None
    if not info.has_video:
        raise StudioError(f"{label}: media file {media} holds no video stream (only audio?): use an image or "
                          "video file")
    if info.duration_s <= 0:
        raise StudioError(f"{label}: media file {media} is not a readable video (its duration is unknown or zero): "
                          "replace it")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            frame = next(container.decode(video=0), None)
    except Exception as exc:  # a damaged file whose header still reads
        raise StudioError(f"{label}: media file {media} is not a readable video ({exc}): replace it") from None
    if frame is None:
        raise StudioError(f"{label}: media file {media} is not a readable video (no frame decodes): replace it")
