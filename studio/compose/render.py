"""The fast renderer: frames made with numpy/OpenCV directly in YUV 4:2:0, streamed to one encoder.

Why this shape (measured on 2 cores; numbers in the compose report and ``bench/README.md``): one big ffmpeg filter
graph costs about twice the encoder's own time and its memory grows with the video's length; frames made in Python
and piped as raw video stay close to the encoder's bound with flat memory. To keep frame making cheap:

* each still is decoded, cover-cropped and scaled **once** to slightly more than the frame (just enough for its Ken
  Burns move) and converted once to BT.709 YUV planes; every frame is then one float affine warp per plane
  (``cv2.warpAffine``, bilinear, 1/32-pixel precision: smooth, no integer crop steps);
* frames are made and blended in ``yuv420p`` (Y full size, U/V quarter size), half the bytes of RGB and no colour
  conversion in ffmpeg;
* the next scene's source is prepared in a helper thread while the current one renders, a writer thread feeds
  ffmpeg's (enlarged) pipe, and frame buffers are reused;
* OpenCV runs single-threaded: the encoder needs the cores more than the warps do;
* captions are drawn by libass from an ASS file Studio writes, once per caption, and blended into the frames that
  show them (see `studio.compose.captions.CaptionOverlays`: ffmpeg's ``subtitles`` filter on every frame measured
  about 1 ms a frame, a tenth of the render at 480p);
* the soundtrack is mixed, measured and encoded in another thread while the video encodes, then both are joined into
  the MP4 with ``-c copy -movflags +faststart``.

The MP4 is written to a temporary ``.<name>.part-*.mp4`` beside the output, checked (video and audio streams, size,
duration within one frame of the timeline) and only then renamed onto the output; on failure or cancel it is removed
and an existing output is left as it was.
"""

from __future__ import annotations

import math
import queue
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

import numpy as np

from ..assets import atomic_path
from ..errors import Cancelled, StudioError
from ..media import INPUT_GUARD, Ffmpeg, check_output_path, probe, run_ffmpeg
from ..presets import Preset, load_preset
from ..progress import CancelToken, ProgressFn, no_progress
from ..project import Project
from .audio import encode_soundtrack
from .captions import CaptionOverlays
from .encoders import check_encoder
from .timeline import FULL, Segment, Timeline, Watermark, build_timeline

# Bump when a change to the frame loop (here) or to the caption drawing (`studio.compose.captions`) changes the frames
# it makes: video segments are assets keyed by it (`studio.compose.segments`), and old ones must not be reused.
RENDERER_VERSION = 1
# OpenCV threads while rendering: the encoder needs the cores more than the warps do (see the module docstring).
CV_THREADS = 1
QUEUE_FRAMES = 4  # frames made ahead of the encoder
PIPE_BYTES = 1 << 20
PROGRESS_EVERY_S = 0.25
COLOUR_TAGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
# BT.709, limited ("TV") range: 8-bit R'G'B' -> Y'CbCr, rows Y, Cb, Cr; the last column is the offset.
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB
RGB_TO_YUV = np.array([
    [219 / 255 * _KR, 219 / 255 * _KG, 219 / 255 * _KB, 16.0],
    [224 / 255 * -_KR / (2 * (1 - _KB)), 224 / 255 * -_KG / (2 * (1 - _KB)), 224 / 255 * 0.5, 128.0],
    [224 / 255 * 0.5, 224 / 255 * -_KG / (2 * (1 - _KR)), 224 / 255 * -_KB / (2 * (1 - _KR)), 128.0],
], dtype=np.float64)


@dataclass(frozen=True)
class RenderResult:
    """A finished video: where it is, what ffprobe-level facts it has, and the timeline it was made from."""

    path: Path
    duration_s: float
    size_bytes: int
    width: int
    height: int
    fps: int
    encoder: str
    timeline: Timeline
    # Where the frames were made ("GPU compose: NVIDIA H200, hevc_nvenc p6", "CPU compose: libx264 veryfast"), and
    # what happened on the way (a GPU failure that made the render fall back to the CPU).
    renderer: str = ""
    notes: tuple[str, ...] = ()


# -- frames as planes ------------------------------------------------------------------------------------------------
class Planes:
    """A ``yuv420p`` frame in one contiguous buffer, with views of its Y, U and V planes."""

    def __init__(self, width: int, height: int, buf: np.ndarray | None = None) -> None:
        self.width, self.height = width, height
        area = width * height
        self.buf = np.empty(area * 3 // 2, np.uint8) if buf is None else buf
        # Set by a renderer whose frame is still being copied into `buf` (the GPU's): call before reading `buf`.
        self.ready: Callable[[], None] | None = None
        self.flat2d = self.buf.reshape(height * 3 // 2, width)  # for whole-frame OpenCV operations
        self.y = self.buf[:area].reshape(height, width)
        self.u = self.buf[area:area * 5 // 4].reshape(height // 2, width // 2)
        self.v = self.buf[area * 5 // 4:].reshape(height // 2, width // 2)


def rgb_to_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB image of even size -> (Y, U, V) planes, BT.709 limited range, chroma averaged over 2x2 pixels."""
    import cv2

    h, w = rgb.shape[:2]
    yuv = cv2.transform(rgb, RGB_TO_YUV)
    y = np.ascontiguousarray(yuv[:, :, 0])
    u = cv2.resize(np.ascontiguousarray(yuv[:, :, 1]), (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    v = cv2.resize(np.ascontiguousarray(yuv[:, :, 2]), (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return y, u, v


def load_rgb(path: Path, cover_size: tuple[int, int], what: str) -> np.ndarray:
    """Decode an image as RGB (EXIF orientation applied, transparency over black), at no less than what covering
    `cover_size` (width, height) needs.

    PNGs decode with OpenCV (a quarter faster than Pillow's decode plus its RGB copy); JPEGs with Pillow, which
    decodes large ones at a reduced DCT scale and applies their EXIF orientation; any other format with Pillow.
    """
    if Path(path).suffix.lower() == ".png":
        rgb = _load_png(path)
        if rgb is not None:
            return rgb
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            iw, ih = img.size
            need = max(cover_size[0] / iw, cover_size[1] / ih)
            img.draft("RGB", (math.ceil(iw * need), math.ceil(ih * need)))
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise StudioError(f"{what}: cannot read image {path} ({exc}); replace it or run illustrate again") from exc


def _load_png(path: Path) -> np.ndarray | None:
    """A PNG as RGB uint8 with OpenCV, or None to let Pillow try (and report) it."""
    import cv2

    try:
        data = np.fromfile(path, np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error):
        return None
    if image is None:
        return None
    if image.dtype != np.uint8:  # 16-bit PNG
        image = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else None
        if image is None:
            return None
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:  # transparency over black
        alpha = image[:, :, 3:4].astype(np.uint16)
        rgb = (cv2.cvtColor(image, cv2.COLOR_BGRA2RGB).astype(np.uint16) * alpha + 127) // 255
        return rgb.astype(np.uint8)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return None


def cover(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale and centre-crop `rgb` so it fills `size` (width, height) exactly: crop first, then one resize."""
    import cv2

    w, h = size
    ih, iw = rgb.shape[:2]
    scale = max(w / iw, h / ih)
    cw, ch = min(iw, max(1, round(w / scale))), min(ih, max(1, round(h / scale)))
    x0, y0 = (iw - cw) // 2, (ih - ch) // 2
    crop = rgb[y0:y0 + ch, x0:x0 + cw]  # a view: OpenCV reads it with its row stride, no copy
    interpolation = cv2.INTER_AREA if cw >= w else cv2.INTER_CUBIC
    return cv2.resize(crop, (w, h), interpolation=interpolation)


class StillSource:
    """A still scaled once to just cover its Ken Burns move; each frame is one affine warp per plane."""

    def __init__(self, segment: Segment, size: tuple[int, int]) -> None:
        self.segment = segment
        self.width, self.height = size
        rect0, rect1 = segment.ken_burns
        tight = min(rect0.w, rect1.w, rect0.h, rect1.h)
        # Enough pixels that the tightest rectangle maps 1:1 (or finer) onto the frame; even for 4:2:0.
        self.src_w = max(2, 2 * math.ceil(self.width / tight / 2))
        self.src_h = max(2, 2 * math.ceil(self.height / tight / 2))
        what = f"scene {segment.scene_number} (id {segment.scene_id})"
        rgb = cover(load_rgb(segment.source, (self.src_w, self.src_h), what), (self.src_w, self.src_h))
        self.y, self.u, self.v = rgb_to_planes(rgb)
        self.static = rect0 == rect1 == FULL and (self.src_w, self.src_h) == (self.width, self.height)

    def render(self, time_s: float, out: Planes) -> None:
        import cv2

        if self.static:
            np.copyto(out.y, self.y)
            np.copyto(out.u, self.u)
            np.copyto(out.v, self.v)
            return
        rect = self.segment.rect_at(self.segment.progress(time_s))
        # Output pixel centre x+0.5 shows picture point rect.x + (x+0.5)/W*rect.w; in source pixel indices that is
        # a*x + b. Chroma samples sit at luma 2j+0.5 in both images, which gives the chroma offset.
        ax = self.src_w * rect.w / self.width
        bx = self.src_w * rect.x + 0.5 * ax - 0.5
        ay = self.src_h * rect.h / self.height
        by = self.src_h * rect.y + 0.5 * ay - 0.5
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        luma = np.array([[ax, 0.0, bx], [0.0, ay, by]])
        chroma = np.array([[ax, 0.0, (0.5 * ax + bx - 0.5) / 2], [0.0, ay, (0.5 * ay + by - 0.5) / 2]])
        half = (self.width // 2, self.height // 2)
        cv2.warpAffine(self.y, luma, (self.width, self.height), dst=out.y, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        cv2.warpAffine(self.u, chroma, half, dst=out.u, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        cv2.warpAffine(self.v, chroma, half, dst=out.v, flags=flags, borderMode=cv2.BORDER_REPLICATE)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class ClipSource:
    """A video clip decoded by ffmpeg at the frame's size and rate (cover-cropped, BT.709), looped to its length."""

    def __init__(self, segment: Segment, size: tuple[int, int], fps: int, frames: int, cancel: CancelToken,
                 hwaccel: tuple[str, ...] = ()) -> None:
        self.segment = segment
        self.frames = frames
        self.read = 0
        w, h = size
        self.frame_bytes = w * h * 3 // 2
        # Numbers only in the filter; the clip's path is an argument of -i, read with the input guard.
        graph = (f"fps={fps},scale={w}:{h}:force_original_aspect_ratio=increase:out_color_matrix=bt709:out_range=tv,"
                 f"crop={w}:{h},setsar=1,format=yuv420p")
        # `hwaccel` (the GPU renderer's ``-hwaccel cuda``): decoded on the GPU where NVDEC has the codec (ffmpeg falls
        # back to its software decoder where not), frames come back to host memory for the scale and crop.
        self.ff = Ffmpeg(["-stream_loop", "-1", *hwaccel, *INPUT_GUARD, "-i", Path(segment.source).resolve(), "-an", "-sn", "-dn",
                          "-vf", graph, "-frames:v", str(max(1, frames)), "-f", "rawvideo", "-pix_fmt", "yuv420p",
                          "pipe:1"], stdout=True, cancel=cancel,
                         what=f"decoding the clip of scene {segment.scene_number} (id {segment.scene_id})")
        grow_pipe(self.ff.stdout)
        self.last: np.ndarray | None = None

    def render(self, time_s: float, out: Planes) -> None:
        view = memoryview(out.buf)
        got = 0
        if self.read < self.frames:
            while got < self.frame_bytes:
                n = self.ff.stdout.readinto(view[got:])
                if not n:
                    break
                got += n
            self.read += 1
        if got == self.frame_bytes:
            if self.last is None:
                self.last = np.empty_like(out.buf)
            np.copyto(self.last, out.buf)
        elif self.last is not None:  # the decoder gave fewer frames than asked: hold the last one
            np.copyto(out.buf, self.last)
        else:
            self.ff.wait()  # raises with ffmpeg's own message
            raise StudioError(f"scene {self.segment.scene_number} (id {self.segment.scene_id}): its clip "
                              f"{self.segment.source.name} has no video frames; replace it")

    def close(self) -> None:
        """After its last frame: ffmpeg stops by itself (`-frames:v`); an error exit raises."""
        if self.read >= self.frames:
            while self.ff.stdout.read(1 << 16):  # nothing is left unless no frame was needed (one was asked for)
                pass
            self.ff.wait()
        else:
            self.abort()

    def abort(self) -> None:
        self.ff.kill()
        self.ff.proc.wait()


class Logo:
    """A watermark image blended into a corner of every frame (planes and alpha prepared once)."""

    def __init__(self, mark: Watermark, size: tuple[int, int]) -> None:
        import cv2
        from PIL import Image

        width, height = size
        try:
            with Image.open(mark.path) as img:
                rgba = np.asarray(img.convert("RGBA"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise StudioError(f"cannot read the watermark {mark.path} ({exc}); choose another image") from exc
        ih, iw = rgba.shape[:2]
        lw = max(2, 2 * round(width * mark.width_frac / 2))
        lh = max(2, 2 * round(lw * ih / iw / 2))
        if lh > height // 4:  # a tall logo: limit its height instead
            lh = max(2, 2 * round(height / 4 / 2))
            lw = max(2, 2 * round(lh * iw / ih / 2))
        rgba = cv2.resize(rgba, (lw, lh), interpolation=cv2.INTER_AREA if lw < iw else cv2.INTER_CUBIC)
        y, u, v = rgb_to_planes(np.ascontiguousarray(rgba[:, :, :3]))
        alpha = rgba[:, :, 3].astype(np.float32) / 255.0 * mark.opacity
        alpha_c = cv2.resize(alpha, (lw // 2, lh // 2), interpolation=cv2.INTER_AREA)
        margin = 2 * round(min(width, height) * mark.margin_frac / 2)
        right = mark.corner.endswith("right")
        bottom = mark.corner.startswith("bottom")
        self.x = width - margin - lw if right else margin
        self.y = height - margin - lh if bottom else margin
        self.parts = [self._pre(y, alpha), self._pre(u, alpha_c), self._pre(v, alpha_c)]

    @staticmethod
    def _pre(plane: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return plane.astype(np.float32) * alpha + 0.5, (1.0 - alpha)

    def apply(self, out: Planes) -> None:
        for (premultiplied, keep), plane, div in zip(self.parts, (out.y, out.u, out.v), (1, 2, 2)):
            h, w = keep.shape
            x, y = self.x // div, self.y // div
            region = plane[y:y + h, x:x + w]
            np.copyto(region, (region * keep + premultiplied).astype(np.uint8))


def smoothstep(q: float) -> float:
    q = min(max(q, 0.0), 1.0)
    return q * q * (3.0 - 2.0 * q)


def blend(kind: str, q: float, old: Planes, new: Planes, out: Planes) -> None:
    """Mix the outgoing frame `old` and the incoming `new` at transition progress `q` (0..1) into `out`."""
    import cv2

    q = smoothstep(q)
    if kind == "wipe":  # the new scene is revealed from the left
        edge = 2 * round(q * out.width / 2)
        for a, b, o, e in ((old.y, new.y, out.y, edge), (old.u, new.u, out.u, edge // 2),
                           (old.v, new.v, out.v, edge // 2)):
            o[:, :e] = b[:, :e]
            o[:, e:] = a[:, e:]
    elif kind == "slide":  # the new scene pushes the old one out to the left
        shift = 2 * round(q * out.width / 2)
        for a, b, o, s in ((old.y, new.y, out.y, shift), (old.u, new.u, out.u, shift // 2),
                           (old.v, new.v, out.v, shift // 2)):
            w = o.shape[1]
            o[:, :w - s] = a[:, s:]
            o[:, w - s:] = b[:, :s]
    else:  # crossfade
        cv2.addWeighted(old.flat2d, 1.0 - q, new.flat2d, q, 0.0, dst=out.flat2d)


def fade_to_black(out: Planes, gain: float) -> None:
    """Scale a frame towards black (Y 16, U/V 128) in place: ``gain`` 1 = unchanged, 0 = black."""
    import cv2

    cv2.convertScaleAbs(out.y, dst=out.y, alpha=gain, beta=16.0 * (1.0 - gain))
    cv2.convertScaleAbs(out.u, dst=out.u, alpha=gain, beta=128.0 * (1.0 - gain))
    cv2.convertScaleAbs(out.v, dst=out.v, alpha=gain, beta=128.0 * (1.0 - gain))


def frame_ranges(timeline: Timeline) -> list[tuple[int, int]]:
    """(first, last) frame index of each segment: frame k (at k/fps) shows the segments with start <= k/fps < end."""
    fps, total = timeline.fps, timeline.frame_count
    out = []
    for seg in timeline.segments:
        first = max(0, math.ceil(seg.start_s * fps - 1e-6))
        last = min(total - 1, math.ceil(seg.end_s * fps - 1e-6) - 1)
        out.append((first, last))
    return out


def grow_pipe(pipe) -> None:
    """Enlarge a pipe's kernel buffer (Linux) to hold a few frames, so each frame costs fewer wake-ups of the reader."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), 1031, PIPE_BYTES)  # F_SETPIPE_SZ
    except (ImportError, OSError, ValueError):
        pass  # other systems, or over the user's limit: the default size works, a little slower


# -- the frame loop --------------------------------------------------------------------------------------------------
class FrameMaker:
    """Makes the timeline's frames in order into reusable buffers; sources are prepared one scene ahead."""

    def __init__(self, timeline: Timeline, captions: CaptionOverlays | None, cancel: CancelToken) -> None:
        self.timeline = timeline
        self.cancel = cancel
        self.size = timeline.size
        self.ranges = frame_ranges(timeline)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-prepare")
        self.sources: dict[int, Future] = {}
        self.scratch = [self._planes(), self._planes()]
        self.logo = self._logo(timeline.watermark) if timeline.watermark is not None else None
        self.captions = captions
        self.lo = 0

    # What a renderer on other hardware replaces (`studio.compose.gpu.TensorFrameMaker`): its frames, its sources
    # and its pixel operations; the frame loop below (which scenes show, transition timing) is shared.
    label = "cpu"

    def _planes(self) -> Planes:
        return Planes(*self.size)

    def host_planes(self) -> Planes:
        """A frame buffer for the encoder queue."""
        return Planes(*self.size)

    def _logo(self, mark: Watermark):
        return Logo(mark, self.size)

    def _blend(self, kind: str, q: float, old, new, out) -> None:
        blend(kind, q, old, new, out)

    def _fade(self, out, gain: float) -> None:
        fade_to_black(out, gain)

    def _caption(self, k: int, out) -> None:
        self.captions.apply(k, out)

    def _prepare(self, i: int):
        seg = self.timeline.segments[i]
        if seg.kind == "video":
            first, last = self.ranges[i]
            return ClipSource(seg, self.size, self.timeline.fps, max(0, last - first + 1), self.cancel)
        return StillSource(seg, self.size)

    def source(self, i: int):
        for j in (i, i + 1):  # this one and the next, so a scene change never waits on a decode
            if j < len(self.timeline.segments) and j not in self.sources:
                self.sources[j] = self.pool.submit(self._prepare, j)
        return self.sources[i].result()

    def release_before(self, k: int) -> None:
        while self.lo < len(self.ranges) and self.ranges[self.lo][1] < k:
            future = self.sources.pop(self.lo, None)
            if future is not None:
                future.result().close()
            self.lo += 1

    def make(self, k: int, out: Planes) -> None:
        """Frame `k` into `out`."""
        t = k / self.timeline.fps
        self.release_before(k)
        active = []
        i = self.lo
        while i < len(self.ranges) and self.ranges[i][0] <= k:
            if self.ranges[i][1] >= k:
                active.append(i)
            i += 1
        if not active:  # cannot happen with a valid timeline; keep the previous picture rather than garbage
            active = [min(self.lo, len(self.ranges) - 1)]
        if len(active) == 1:
            self.source(active[0]).render(t, out)
        else:
            old_i, new_i = active[-2], active[-1]
            new_seg = self.timeline.segments[new_i]
            kind, length = new_seg.transition.kind, new_seg.transition.duration_s
            q = min(max((t - new_seg.start_s) / length, 0.0), 1.0) if length > 0 else 1.0
            if kind == "fade":  # through black: only one scene is visible at a time
                if q < 0.5:
                    self.source(old_i).render(t, out)
                    # A clip that is not drawn must still advance: decode it into scratch.
                    if new_seg.kind == "video":
                        self.source(new_i).render(t, self.scratch[1])
                    self._fade(out, 1.0 - smoothstep(2 * q))
                else:
                    if self.timeline.segments[old_i].kind == "video":
                        self.source(old_i).render(t, self.scratch[0])
                    self.source(new_i).render(t, out)
                    self._fade(out, smoothstep(2 * q - 1))
            else:
                old, new = self.scratch
                self.source(old_i).render(t, old)
                self.source(new_i).render(t, new)
                self._blend(kind, q, old, new, out)
        if self.logo is not None:
            self.logo.apply(out)
        if self.captions is not None:
            self._caption(k, out)

    def close(self, failed: bool = False) -> None:
        """Stop the helper thread, the caption drawing and any clip decoder still running."""
        if self.captions is not None:
            self.captions.close(stop=failed)
        self.pool.shutdown(wait=True, cancel_futures=True)
        for future in self.sources.values():
            if not future.cancelled() and future.exception() is None:
                future.result().abort()
        self.sources.clear()


_cv_lock = threading.Lock()
_cv_state = {"renders": 0, "threads": None}


def _cv_threads(change: int) -> None:
    """OpenCV's thread count is process-wide: `CV_THREADS` while any render runs (segments render in threads side by
    side), the caller's own again when the last one ends."""
    import cv2

    with _cv_lock:
        if change > 0 and _cv_state["renders"] == 0:
            _cv_state["threads"] = cv2.getNumThreads()
            cv2.setNumThreads(CV_THREADS)
        _cv_state["renders"] += change
        if change < 0 and _cv_state["renders"] == 0 and _cv_state["threads"] is not None:
            cv2.setNumThreads(_cv_state["threads"])


def encode_video(timeline: Timeline, work: Path, *, cancel: CancelToken, on_progress: ProgressFn,
                 captions: CaptionOverlays | None = None, check_other=lambda: None, renderer=None) -> Path:
    """Make every frame and stream it to the encoder; returns ``work/video.mp4`` (video only).

    `captions` draws the timeline's captions (None: no captions). `check_other()` is called once a frame: it raises
    to stop the encode when work running beside it has failed. `renderer` (a `studio.compose.gpu.Renderer`; None:
    this module's CPU renderer) says where the frames are made.
    """
    width, height = timeline.size
    total = timeline.frame_count
    args = [*timeline.encoder_input_args, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
            "-framerate", str(timeline.fps), *COLOUR_TAGS, *INPUT_GUARD, "-i", "pipe:0"]
    args += [*timeline.encoder_args, *COLOUR_TAGS, "-an", "-f", "mp4", "video.mp4"]

    _cv_threads(+1)
    try:
        maker = renderer.frame_maker(timeline, captions, cancel) if renderer is not None else \
            FrameMaker(timeline, captions, cancel)
    except BaseException:
        _cv_threads(-1)
        raise
    free: queue.Queue = queue.Queue()
    full: queue.Queue = queue.Queue()
    for _ in range(QUEUE_FRAMES):
        free.put(maker.host_planes())
    failure: list[BaseException] = []

    def write(ff: Ffmpeg) -> None:
        stdin = ff.stdin
        while True:
            planes = full.get()
            if planes is None:
                return
            try:
                if planes.ready is not None:  # a GPU frame still on its way into this buffer
                    planes.ready()
                stdin.write(planes.buf.data)
            except BaseException as exc:  # a closed pipe, or a GPU copy that failed: the frame loop raises it
                failure.append(exc)
                free.put(planes)
                return
            free.put(planes)

    failed = True
    try:
        with Ffmpeg(args, stdin=True, cwd=work, cancel=cancel, what="encoding the video") as ff:
            grow_pipe(ff.stdin)
            writer = threading.Thread(target=write, args=(ff,), name="studio-writer", daemon=True)
            writer.start()
            try:
                last_report = 0.0
                for k in range(total):
                    if cancel.cancelled:
                        raise Cancelled()
                    check_other()
                    planes = free.get()
                    if failure:
                        if not isinstance(failure[0], (BrokenPipeError, OSError, ValueError)):
                            raise failure[0]
                        raise BrokenPipeError(str(failure[0]))
                    maker.make(k, planes)
                    full.put(planes)
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_EVERY_S:
                        last_report = now
                        on_progress(k / total, f"encoding {k}/{total} frames")
            except BaseException:
                ff.kill()  # first, so the writer is not left blocked on a full pipe
                raise
            finally:
                full.put(None)
                writer.join()
            if failure:
                if not isinstance(failure[0], (BrokenPipeError, OSError, ValueError)):
                    raise failure[0]
                raise BrokenPipeError(str(failure[0]))
        failed = False
    finally:
        maker.close(failed)
        _cv_threads(-1)
    return work / "video.mp4"


# -- compose ---------------------------------------------------------------------------------------------------------
def _check_sources(timeline: Timeline) -> None:
    """Fail fast, before any encoding, on a visual, music or watermark that cannot be read."""
    from PIL import Image, UnidentifiedImageError

    for seg in timeline.segments:
        where = f"scene {seg.scene_number} (id {seg.scene_id})"
        if seg.kind == "image":
            try:
                with Image.open(seg.source) as img:
                    if img.size[0] < 1 or img.size[1] < 1:
                        raise StudioError(f"{where}: its image {seg.source} is empty")
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                raise StudioError(f"{where}: cannot read image {seg.source} ({exc}); "
                                  "replace it or run illustrate again") from exc
        else:
            info = probe(seg.source)
            if not info.has_video or info.is_image:
                raise StudioError(f"{where}: {seg.source.name} holds no video; replace it or run illustrate again")


def compose(project: Project, preset: Preset | str, output: Path, *, encoder: str | None = None,
            only: Collection[str] | None = None, on_progress: ProgressFn | None = None,
            cancel: CancelToken | None = None, device: str | None = None) -> RenderResult:
    """Render `project` to an MP4 at `output` with `preset`.

    Stills move with a smooth Ken Burns zoom or pan, clips are trimmed or looped to their scene, scenes change with
    the chosen transitions, captions are burned in (when ``project.captions``), narration is mixed with ducked
    background music, loudness-normalised and encoded as AAC; a watermark goes in a corner.

    Args:
        project: Scenes with visuals and narration (or fixed durations): after `narrate` and `illustrate`.
        preset: A `Preset` or a tier name (``draft``, ``standard``, ``premium``, ``maximum``) or a TOML path.
        output: Where the MP4 goes; its folder must exist. An existing file is replaced only when the new one is
            complete and checked.
        encoder: A video encoder from the preset (``libx264``, ``h264_nvenc``, ``hevc_nvenc``); None picks the first
            of the preset's encoders that really works here.
        only: Render just these scene ids (a quick preview), back to back.
        on_progress: ``on_progress(fraction, message)``, a few times a second at most.
        cancel: A `CancelToken`; cancelling kills ffmpeg at once and removes temporary files.
        device: Where the frames are made: ``auto`` (the GPU when CUDA and a working NVENC are both here), ``cuda``,
            ``cpu`` or ``tensor-cpu``; None: the preset's ``[compose] device``. A GPU failure mid-render (out of
            memory, an encoder session limit, a driver error) renders again on the CPU with libx264, with a note.

    Returns:
        A `RenderResult` (path, duration, size in bytes, width, height, fps, encoder, timeline, renderer, notes).

    Raises:
        StudioError: bad input (named in the message) or a failed encode. `Cancelled` when cancelled.
    """
    # 1. Check the inputs and lay out the timeline.
    output = check_output_path(Path(output))
    if not isinstance(preset, Preset):
        preset = load_preset(preset)
    if encoder is not None:
        encoder = check_encoder(preset, encoder)
    timeline = build_timeline(project, preset, only=only, encoder=encoder, device=device)
    _check_sources(timeline)
    report = on_progress or no_progress
    report(0.0, f"rendering {timeline.frame_count} frames at {timeline.width}x{timeline.height}; "
                f"{timeline.compose_label}")
    notes: list[str] = []

    # 2. A private work folder beside the output: ffmpeg's working directory, so filters see only names made here.
    work = Path(tempfile.mkdtemp(prefix=f".{output.stem}.render-", dir=output.parent)).resolve()
    inner = CancelToken()  # stops every ffmpeg of this render, on the user's cancel or on a failure
    unhook = cancel.on_cancel(inner.cancel) if cancel is not None else (lambda: None)
    soundtrack: dict[str, object] = {}
    audio_thread = None
    captions = None
    try:
        # 3. Captions are drawn, then the soundtrack is made, in threads, while the video encodes. One after the
        #    other, so their ffmpeg processes are never alive at once (memory stays flat for long videos).
        captions = (CaptionOverlays(timeline.caption_layout, timeline.captions, timeline.fps, work, inner)
                    if timeline.captions else None)

        def make_soundtrack() -> None:
            try:
                if captions is not None:
                    captions.wait_drawn()
                soundtrack["path"] = encode_soundtrack(timeline, work, cancel=inner)
            except BaseException as exc:  # handed to the main thread
                soundtrack["error"] = exc

        audio_thread = threading.Thread(target=make_soundtrack, name="studio-soundtrack", daemon=True)
        audio_thread.start()

        # 4. The frames (captions drawn by libass, see CaptionOverlays), streamed to the encoder.
        def check_soundtrack() -> None:
            if "error" in soundtrack:  # e.g. unreadable music: stop now, not after the whole video
                raise soundtrack["error"]  # type: ignore[misc]

        from .gpu import Renderer, fallback_timeline, gpu_failure

        try:
            video = encode_video(timeline, work, cancel=inner, on_progress=lambda f, m: report(0.97 * f, m),
                                 captions=captions, check_other=check_soundtrack,
                                 renderer=Renderer(timeline.compose_device))
        except Exception as exc:
            # A GPU (or hardware encoder) failure: once more on the CPU with libx264, captions drawn anew.
            if inner.cancelled or exc is soundtrack.get("error") or not gpu_failure(timeline, exc, captions):
                raise
            failed_on = timeline.compose_label
            timeline = fallback_timeline(timeline, preset)
            note = (f"compose: {failed_on.split(':')[0]} failed ({_short(exc)}); rendered again on the CPU with "
                    f"{timeline.encoder}")
            notes.append(note)
            report(0.0, note)
            if captions is not None:
                captions.close(stop=True)
            captions = (CaptionOverlays(timeline.caption_layout, timeline.captions, timeline.fps, work, inner,
                                        prefix="retry-") if timeline.captions else None)
            video = encode_video(timeline, work, cancel=inner, on_progress=lambda f, m: report(0.97 * f, m),
                                 captions=captions, check_other=check_soundtrack, renderer=Renderer("cpu"))
        audio_thread.join()
        if "error" in soundtrack:
            raise soundtrack["error"]  # type: ignore[misc]

        # 5. Join video and audio, check the file, then put it in place.
        report(0.97, "writing the MP4")
        with atomic_path(output) as part:
            run_ffmpeg([*INPUT_GUARD, "-i", video.name, *INPUT_GUARD, "-i", Path(soundtrack["path"]).name,
                        "-map", "0:v:0", "-map", "1:a:0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4",
                        Path(part).resolve()], cwd=work, cancel=inner, what="writing the MP4")
            info = _check_output(Path(part), timeline)
        report(1.0, f"done: {output.name}")
        return RenderResult(path=output, duration_s=info.duration_s, size_bytes=output.stat().st_size,
                            width=info.width, height=info.height, fps=timeline.fps, encoder=timeline.encoder,
                            timeline=timeline, renderer=timeline.compose_label, notes=tuple(notes))
    except BaseException as exc:
        inner.cancel()
        if captions is not None:
            captions.close(stop=True)
        if audio_thread is not None:
            audio_thread.join()
        if cancel is not None and cancel.cancelled:
            raise Cancelled() from None
        if isinstance(exc, BrokenPipeError):
            raise StudioError(f"encoding the video failed: {exc}") from exc
        raise
    finally:
        unhook()
        shutil.rmtree(work, ignore_errors=True)


def _short(exc: BaseException) -> str:
    """One line of an error for a note: its type and the first line of its message, at most 160 characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _check_output(path: Path, timeline: Timeline):
    """The finished file must hold video of the right size and length, and audio."""
    info = probe(path)
    frame = 1.0 / timeline.fps
    problems = []
    if not info.has_video:
        problems.append("no video stream")
    if (info.width, info.height) != timeline.size:
        problems.append(f"size {info.width}x{info.height}, expected {timeline.width}x{timeline.height}")
    if abs(info.duration_s - timeline.duration_s) > frame + 1e-3:
        problems.append(f"duration {info.duration_s:.3f} s, expected {timeline.duration_s:.3f} s")
    if not info.has_audio:
        problems.append("no audio stream")
    if problems:
        raise StudioError(f"the rendered file failed its check ({'; '.join(problems)}); nothing was written")
    return info
