"""The GPU compositor: the same `Timeline` rendered with torch tensors, on CUDA (or on the CPU, to check it).

    from studio.compose.gpu import cuda_ready, resolve_device
    cuda_ready()                          # (True, "NVIDIA H200") or (False, "torch is a CPU build (2.13.0+cpu)")
    resolve_device(preset, "hevc_nvenc")  # ("cuda", "GPU compose: NVIDIA H200, hevc_nvenc p6", None)

Where composition runs is the preset's ``[compose] device`` (`Preset.compose_device`), or `compose(device=...)`:

* ``auto``: the GPU renderer when CUDA is usable **and** the render's encoder is a working NVENC one (frames made on
  the GPU and encoded by the GPU; a GPU renderer feeding libx264 would leave the CPU's encoder as the long pole), else
  the CPU renderer (`studio.compose.render`), saying why;
* ``cuda``: the GPU renderer, or an error that says why it cannot run here;
* ``cpu``: the CPU renderer (numpy/OpenCV), whatever the machine has;
* ``tensor-cpu``: this module's code on ``torch.device("cpu")``: slow, it is how CI checks the GPU renderer's
  frames against the CPU renderer's (PSNR per frame, `tests/test_gpu_compose.py`).

How frames are made (`TensorFrameMaker`, the shared frame loop of `studio.compose.render.FrameMaker` with tensor
operations): each still is decoded and fitted on the CPU once (as the CPU renderer does), converted to BT.709
``yuv420p`` planes and **uploaded once per scene**; every frame's Ken Burns move is then an axis-aligned affine warp
on the GPU, done separably (bilinear along x, then along y, by gathering two source columns/rows per output pixel
with replicated borders: the same sampling as ``cv2.warpAffine`` with ``BORDER_REPLICATE``, without the per-pixel
grid a ``grid_sample`` needs); transitions are blends or slices of the two frames, the fade through black a scale,
the watermark and each caption (drawn once by libass, see `studio.compose.captions.CaptionOverlays`, uploaded once)
an alpha blend into their boxes. Frames are built directly in the encoder's ``yuv420p`` layout, so the colour
conversion is done once per still, on upload. Clips are decoded by ffmpeg with ``-hwaccel cuda`` (NVDEC where it
has the codec, ffmpeg's own decoder where not) and uploaded frame by frame.

To the encoder: each finished frame is copied from the GPU into one of a few **pinned** host buffers with a
non-blocking copy; the writer thread waits for that copy's CUDA event just before writing the buffer to ffmpeg's
pipe, so the GPU makes frame k+1 while frame k crosses the bus and the pipe. (PyAV's NVENC encoder could take the
frames in-process; frames on the GPU handed straight to NVENC need CUDA hardware frames that neither ffmpeg's pipe
nor PyAV accepts from torch: not built, see bench/README.md.)

A GPU failure mid-render (out of memory, an NVENC session limit, a driver error) makes `studio.compose.render.compose`
render again on the CPU with libx264, with a note: never a broken MP4.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StudioError
from .render import ClipSource, FrameMaker, Logo, Planes, StillSource, smoothstep

if TYPE_CHECKING:
    from ..presets import Preset
    from ..progress import CancelToken
    from .captions import CaptionOverlays
    from .timeline import Segment, Timeline, Watermark

NVENC = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
HARDWARE_PREFIXES = ("_nvenc", "_qsv", "_amf", "_vaapi", "_videotoolbox")
FALLBACK_ENCODER = "libx264"


def is_hardware_encoder(encoder: str) -> bool:
    """Whether `encoder` runs on a GPU or media engine (NVENC, Quick Sync, AMF, VAAPI, VideoToolbox)."""
    return encoder.endswith(HARDWARE_PREFIXES)


# -- is CUDA here? ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def cuda_ready() -> tuple[bool, str]:
    """Whether torch can run on a CUDA GPU here: ``(True, gpu name)`` or ``(False, why not)``.

    Cheap where it cannot be: torch's build is read without importing it (`studio.devices.torch_build`), so a CPU
    machine never pays torch's import to learn it has no GPU. Cached for the process.
    """
    from .. import devices

    build = devices.torch_build()
    if not build.get("installed"):
        return False, "torch is not installed (pip install -e '.[gpu]', with a CUDA build of torch)"
    if not build.get("cuda"):
        return False, f"torch is a CPU build ({build.get('version', '?')}); install a CUDA build of torch"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "torch finds no CUDA GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides it)"
        return True, torch.cuda.get_device_name(0)
    except Exception as exc:  # a broken driver: say so, render on the CPU
        return False, f"CUDA does not start ({type(exc).__name__}: {exc})"


def _torch_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _encoder_words(preset: "Preset", encoder: str) -> str:
    opts = preset.encoder.get(encoder, {})
    return f"{encoder} {opts['preset']}" if "preset" in opts else encoder


def resolve_device(preset: "Preset", encoder: str, device: str | None = None) -> tuple[str, str, str | None]:
    """Where this render's frames are made.

    Args:
        preset: Its ``compose_device`` is used unless `device` is given.
        encoder: The render's video encoder (already probed: it works here).
        device: ``auto``, ``cuda``, ``cpu`` or ``tensor-cpu``; None: the preset's.

    Returns:
        ``(device, label, note)``: device is ``cuda``, ``cpu`` or ``tensor-cpu``; label reads like "GPU compose:
        NVIDIA H200, hevc_nvenc p6" (for the run summary and the Compose panel); note says why ``auto`` stayed on the
        CPU (None when it did not have to choose).

    Raises:
        StudioError: ``cuda`` asked for where CUDA cannot run, ``tensor-cpu`` without torch, or an unknown device.
    """
    from ..presets import COMPOSE_DEVICES

    requested = device or preset.compose_device
    if requested not in COMPOSE_DEVICES:
        raise StudioError(f"compose `device` must be one of {', '.join(COMPOSE_DEVICES)}, got {requested!r}")
    words = _encoder_words(preset, encoder)
    if requested == "cpu":
        return "cpu", f"CPU compose: {words}", None
    if requested == "tensor-cpu":
        if not _torch_importable():
            raise StudioError("compose device `tensor-cpu` needs torch; install it (pip install torch) or use `cpu`")
        return "tensor-cpu", f"tensor compose on the CPU: {words}", None
    ok, why = cuda_ready()
    if requested == "cuda":
        if not ok:
            raise StudioError(f"compose device `cuda` cannot run here: {why}; set `[compose] device` to \"auto\" or "
                              "\"cpu\" (or pass --device auto)")
        return "cuda", f"GPU compose: {why}, {words}", None
    # auto
    if not ok:
        return "cpu", f"CPU compose: {words}", f"CPU compose: {why}"
    if encoder not in NVENC:
        # e.g. an H100/H200: CUDA, but no NVENC engine on the chip. `cuda` still puts the frames on the GPU.
        return "cpu", f"CPU compose: {words}", (f"CPU compose: {why} is here but no NVENC encoder of the preset "
                                                f"works, so {encoder} encodes; auto uses the GPU renderer with NVENC "
                                                f"only (set [compose] device = \"cuda\" to make the frames on the GPU)")
    return "cuda", f"GPU compose: {why}, {words}", None


def gpu_failure(timeline: "Timeline", exc: BaseException, captions: "CaptionOverlays | None" = None) -> bool:
    """Whether a failed encode is worth one more try on the CPU: the render used the GPU renderer or a hardware
    encoder, and the error is not the caption drawing's own (which the CPU would meet again)."""
    if timeline.compose_device == "cpu" and not is_hardware_encoder(timeline.encoder):
        return False
    if captions is not None and exc is captions.error:
        return False
    return not isinstance(exc, (KeyboardInterrupt, SystemExit))


def fallback_timeline(timeline: "Timeline", preset: "Preset") -> "Timeline":
    """`timeline` for the CPU renderer, with libx264 in place of a hardware encoder."""
    from dataclasses import replace

    encoder = FALLBACK_ENCODER if is_hardware_encoder(timeline.encoder) else timeline.encoder
    return replace(timeline, compose_device="cpu", encoder=encoder, encoder_args=tuple(preset.encoder_args(encoder)),
                   encoder_input_args=tuple(preset.encoder_input_args(encoder)),  # no VAAPI device for libx264
                   compose_label=f"CPU compose: {_encoder_words(preset, encoder)} (after a GPU failure)")


# -- the renderer ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Renderer:
    """Where frames are made: ``cpu`` (numpy/OpenCV), ``cuda`` or ``tensor-cpu`` (torch)."""

    device: str = "cpu"

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"

    def frame_maker(self, timeline: "Timeline", captions: "CaptionOverlays | None", cancel: "CancelToken"):
        if self.device == "cpu":
            return FrameMaker(timeline, captions, cancel)
        return TensorFrameMaker(timeline, captions, cancel, "cuda" if self.device == "cuda" else "cpu")


class TensorPlanes:
    """A ``yuv420p`` frame as one uint8 tensor on a device, with views of its Y, U and V planes."""

    def __init__(self, torch: Any, width: int, height: int, device: Any) -> None:
        self.width, self.height = width, height
        area = width * height
        self.buf = torch.empty(area * 3 // 2, dtype=torch.uint8, device=device)
        self.flat2d = self.buf.view(height * 3 // 2, width)
        self.y = self.buf[:area].view(height, width)
        self.u = self.buf[area:area * 5 // 4].view(height // 2, width // 2)
        self.v = self.buf[area * 5 // 4:].view(height // 2, width // 2)

    def planes(self):
        return (self.y, self.u, self.v)


def _store(torch: Any, values, out) -> None:
    """Float pixel values -> rounded, saturated uint8 into `out` (as OpenCV's saturate_cast does)."""
    out.copy_(values.round_().clamp_(0, 255))


class _Axis:
    """Linear interpolation along one axis: the two source indices and the weight for each output position."""

    def __init__(self, torch: Any, scale: float, offset: float, n_out: int, n_src: int, device: Any) -> None:
        pos = torch.arange(n_out, dtype=torch.float64, device=device) * scale + offset
        low = torch.floor(pos)
        self.weight = (pos - low).to(torch.float32)
        low = low.to(torch.int64)
        self.i0 = low.clamp(0, n_src - 1)
        self.i1 = (low + 1).clamp(0, n_src - 1)


class TensorStill:
    """A still on the device: fitted and converted on the CPU once (as `StillSource`), uploaded once; each frame is a
    separable bilinear warp per plane."""

    def __init__(self, torch: Any, segment: "Segment", size: tuple[int, int], device: Any) -> None:
        host = StillSource(segment, size)
        self.torch, self.device, self.segment = torch, device, segment
        self.width, self.height = size
        self.src_w, self.src_h = host.src_w, host.src_h
        self.static = host.static
        self.planes = [torch.from_numpy(np.ascontiguousarray(p)).to(device=device, dtype=torch.float32)
                       for p in (host.y, host.u, host.v)]

    def _warp(self, plane, ax: float, bx: float, ay: float, by: float, out) -> None:
        torch = self.torch
        h_out, w_out = out.shape
        h_src, w_src = plane.shape
        cols = _Axis(torch, ax, bx, w_out, w_src, self.device)
        rows = _Axis(torch, ay, by, h_out, h_src, self.device)
        # Rows first (only the rows the frame needs), then columns: two small gathers and two lerps.
        top = plane.index_select(0, rows.i0)
        bottom = plane.index_select(0, rows.i1)
        mixed = torch.lerp(top, bottom, rows.weight[:, None])
        left = mixed.index_select(1, cols.i0)
        right = mixed.index_select(1, cols.i1)
        _store(torch, torch.lerp(left, right, cols.weight[None, :]), out)

    def render(self, time_s: float, out: TensorPlanes) -> None:
        if self.static:
            for src, dst in zip(self.planes, out.planes()):
                _store(self.torch, src.clone(), dst)
            return
        rect = self.segment.rect_at(self.segment.progress(time_s))
        # The same mapping as `StillSource.render`: output pixel x samples source pixel a*x + b.
        ax = self.src_w * rect.w / self.width
        bx = self.src_w * rect.x + 0.5 * ax - 0.5
        ay = self.src_h * rect.h / self.height
        by = self.src_h * rect.y + 0.5 * ay - 0.5
        self._warp(self.planes[0], ax, bx, ay, by, out.y)
        cbx, cby = (0.5 * ax + bx - 0.5) / 2, (0.5 * ay + by - 0.5) / 2
        self._warp(self.planes[1], ax, cbx, ay, cby, out.u)
        self._warp(self.planes[2], ax, cbx, ay, cby, out.v)

    def close(self) -> None:
        self.planes = []

    def abort(self) -> None:
        self.planes = []


class TensorClip:
    """A clip decoded by ffmpeg (``-hwaccel cuda`` on the GPU) into a host frame, uploaded frame by frame."""

    def __init__(self, torch: Any, segment: "Segment", size: tuple[int, int], fps: int, frames: int,
                 cancel: "CancelToken", device: Any) -> None:
        hwaccel = ("-hwaccel", "cuda") if str(device).startswith("cuda") else ()
        self.clip = ClipSource(segment, size, fps, frames, cancel, hwaccel=hwaccel)
        self.torch, self.device = torch, device
        self.host = _host_planes(torch, size, pinned=str(device).startswith("cuda"))
        self.host_tensor = torch.from_numpy(self.host.buf)

    def render(self, time_s: float, out: TensorPlanes) -> None:
        self.clip.render(time_s, self.host)
        out.buf.copy_(self.host_tensor)  # synchronous: the decoder overwrites the host frame next

    def close(self) -> None:
        self.clip.close()

    def abort(self) -> None:
        self.clip.abort()


class TensorLogo:
    """`Logo`'s planes and alpha, prepared on the CPU once and uploaded once."""

    def __init__(self, torch: Any, mark: "Watermark", size: tuple[int, int], device: Any) -> None:
        host = Logo(mark, size)
        self.torch, self.x, self.y = torch, host.x, host.y
        self.parts = [(torch.from_numpy(pre).to(device), torch.from_numpy(np.ascontiguousarray(keep)).to(device))
                      for pre, keep in host.parts]

    def apply(self, out: TensorPlanes) -> None:
        for (premultiplied, keep), plane, div in zip(self.parts, out.planes(), (1, 2, 2)):
            h, w = keep.shape
            x, y = self.x // div, self.y // div
            region = plane[y:y + h, x:x + w]
            # As `Logo.apply`: premultiplied already holds +0.5, then truncation.
            region.copy_((region.to(self.torch.float32) * keep + premultiplied).clamp_(0, 255).floor_())


def _host_planes(torch: Any, size: tuple[int, int], pinned: bool) -> Planes:
    width, height = size
    if not pinned:
        return Planes(width, height)
    tensor = torch.empty(width * height * 3 // 2, dtype=torch.uint8, pin_memory=True)
    planes = Planes(width, height, tensor.numpy())
    planes.tensor = tensor  # keeps the pinned memory alive with the buffer
    return planes


class TensorFrameMaker(FrameMaker):
    """`FrameMaker`'s frame loop with every pixel operation on torch tensors on `device` ("cuda" or "cpu")."""

    def __init__(self, timeline: "Timeline", captions: "CaptionOverlays | None", cancel: "CancelToken",
                 device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.set_device(self.device.index or 0)
        self.frame = TensorPlanes(torch, *timeline.size, self.device)
        self._caption_index: int | None = None
        self._caption_parts: tuple | None = None
        self._f32 = torch.float32
        super().__init__(timeline, captions, cancel)
        self.label = f"gpu: {torch.cuda.get_device_name(self.device)}" if self.cuda else "tensor-cpu"

    # The hooks of FrameMaker.
    def _planes(self) -> TensorPlanes:
        return TensorPlanes(self.torch, *self.size, self.device)

    def host_planes(self) -> Planes:
        planes = _host_planes(self.torch, self.size, pinned=self.cuda)
        if not hasattr(planes, "tensor"):
            planes.tensor = self.torch.from_numpy(planes.buf)
        return planes

    def _prepare(self, i: int):
        seg = self.timeline.segments[i]
        if seg.kind == "video":
            first, last = self.ranges[i]
            return TensorClip(self.torch, seg, self.size, self.timeline.fps, max(0, last - first + 1), self.cancel,
                              self.device)
        return TensorStill(self.torch, seg, self.size, self.device)

    def _logo(self, mark: "Watermark"):
        return TensorLogo(self.torch, mark, self.size, self.device)

    def _blend(self, kind: str, q: float, old: TensorPlanes, new: TensorPlanes, out: TensorPlanes) -> None:
        q = smoothstep(q)
        if kind in ("wipe", "slide"):
            step = 2 * round(q * out.width / 2)
            for a, b, o, div in zip(old.planes(), new.planes(), out.planes(), (1, 2, 2)):
                e = step // div
                w = o.shape[1]
                if kind == "wipe":  # the new scene is revealed from the left
                    o[:, :e].copy_(b[:, :e])
                    o[:, e:].copy_(a[:, e:])
                else:  # the new scene pushes the old one out to the left
                    o[:, :w - e].copy_(a[:, e:])
                    o[:, w - e:].copy_(b[:, :e])
        else:  # crossfade
            mixed = old.flat2d.to(self._f32) * (1.0 - q) + new.flat2d.to(self._f32) * q
            _store(self.torch, mixed, out.flat2d)

    def _fade(self, out: TensorPlanes, gain: float) -> None:
        for plane, black in zip(out.planes(), (16.0, 128.0, 128.0)):
            _store(self.torch, plane.to(self._f32) * gain + black * (1.0 - gain), plane)

    def _caption(self, k: int, out: TensorPlanes) -> None:
        shown = self.captions.shown(k)
        if shown is None:
            return
        index, x, y, *parts = shown
        if index != self._caption_index:  # each caption is uploaded once
            self._caption_index = index
            self._caption_parts = tuple((self.torch.from_numpy(np.ascontiguousarray(pre)).to(self.device, self._f32),
                                         self.torch.from_numpy(np.ascontiguousarray(keep)).to(self.device, self._f32))
                                        for pre, keep in parts)
        for (pre, keep), plane, div in zip(self._caption_parts, out.planes(), (1, 2, 2)):
            h, w = keep.shape
            region = plane[y // div:y // div + h, x // div:x // div + w]
            # As `CaptionOverlays.apply`: background * keep / 255 rounded, plus the premultiplied caption, saturated.
            scaled = (region.to(self._f32) * keep / 255.0).round_()
            region.copy_((scaled + pre).clamp_(0, 255))

    def make(self, k: int, out: Planes) -> None:
        """Frame `k` on the device, then copied into the host buffer `out` (non-blocking into pinned memory on CUDA;
        `out.ready` waits for that copy)."""
        FrameMaker.make(self, k, self.frame)
        if self.cuda:
            out.tensor.copy_(self.frame.buf, non_blocking=True)
            event = self.torch.cuda.Event()
            event.record()
            out.ready = event.synchronize
        else:
            out.tensor.copy_(self.frame.buf)
            out.ready = None


def frames_match_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 frames (inf when equal): how tests and the benchmark compare the two renderers."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
