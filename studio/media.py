"""Media helpers: the ffmpeg from the ``imageio-ffmpeg`` wheel, run safely; probing with FFmpeg's libraries (PyAV);
audio read/write.

ffmpeg always gets an argument list (never a shell), starts in its own process group so a cancel or an error kills it
with its children, and reads inputs through the ``file`` and ``pipe`` protocols only.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

import numpy as np

from .assets import atomic_path
from .errors import Cancelled, StudioError
from .progress import CancelToken

# Put before every `-i` that reads a file: no network, no concat playlists pointing elsewhere.
INPUT_GUARD = ["-protocol_whitelist", "file,pipe,fd"]


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped in the imageio-ffmpeg wheel (or ``IMAGEIO_FFMPEG_EXE``)."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a requirement
        raise StudioError("ffmpeg is missing: `pip install imageio-ffmpeg` (it ships a full ffmpeg)") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Ffmpeg:
    """One ffmpeg process in its own process group.

    Use as a context manager; leaving the block by an exception (or a cancel) kills the whole group::

        with Ffmpeg(args, stdin=True, cancel=token) as ff:
            ff.stdin.write(frame_bytes)
        # the block's end closes stdin and waits; a non-zero exit raises StudioError with ffmpeg's last lines
    """

    def __init__(self, args: Sequence[str], *, stdin: bool = False, stdout: bool = False, cwd: Path | None = None,
                 cancel: CancelToken | None = None, what: str = "ffmpeg") -> None:
        self.args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)]
        self.what = what
        self.cancel = cancel
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,  # its own process group: a cancel kills ffmpeg and anything it started
        )
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._unregister = cancel.on_cancel(self.kill) if cancel is not None else (lambda: None)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-40]

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        _kill_group(self.proc)

    def wait(self) -> None:
        """Close stdin, wait for the exit, raise `Cancelled` or `StudioError` if it did not succeed."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self.proc.wait()
        self._reader.join(timeout=5)
        self._release()
        if self.cancel is not None and self.cancel.cancelled:
            raise Cancelled()
        if code != 0:
            raise StudioError(f"{self.what} failed (ffmpeg exit code {code}): {self.error_text()}")

    def _release(self) -> None:
        """Stop listening for a cancel and close the pipes now (not when the garbage collector gets to them: a
        server renders for days, and each render would leave its pipes open until then)."""
        self._unregister()
        self._unregister = lambda: None  # breaks the cycle through the cancel token's callback
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass

    def error_text(self) -> str:
        return b"".join(self._stderr[-8:]).decode("utf-8", "replace").strip() or "no message"

    def log_text(self) -> str:
        """The last lines (up to 40) ffmpeg wrote to stderr, e.g. a filter's report when run with ``-loglevel info``;
        complete only after `wait`."""
        return b"".join(self._stderr).decode("utf-8", "replace")

    def __enter__(self) -> "Ffmpeg":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.wait()
            return
        self.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        self._release()
        if isinstance(exc, BrokenPipeError):  # ffmpeg died: its own message says why
            if self.cancel is not None and self.cancel.cancelled:
                raise Cancelled() from None
            raise StudioError(f"{self.what} failed: {self.error_text()}") from None


def run_ffmpeg(args: Sequence[str], *, cwd: Path | None = None, cancel: CancelToken | None = None, what: str = "ffmpeg") -> None:
    """Run ffmpeg to completion (see `Ffmpeg`)."""
    with Ffmpeg(args, cwd=cwd, cancel=cancel, what=what):
        pass


def run_ffmpeg_output(args: Sequence[str], *, cancel: CancelToken | None = None, what: str = "ffmpeg") -> bytes:
    """Run ffmpeg and return what it wrote to stdout (use ``pipe:1`` as the output)."""
    with Ffmpeg(args, stdout=True, cancel=cancel, what=what) as ff:
        data = ff.stdout.read()
    return data


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds, as FFmpeg's libraries read it."""

    path: Path
    duration_s: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_codec: str = ""
    audio_codec: str = ""
    sample_rate: int = 0
    is_image: bool = False


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac"}


def probe(path: Path) -> MediaInfo:
    """Open a media file with FFmpeg's libraries (PyAV) and describe it.

    Raises:
        StudioError: the file is missing or no decoder can read it (the message names the file).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"media file {path} does not exist")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            if video is None and audio is None:
                raise StudioError(f"{path} holds no audio or video stream")
            duration = float(container.duration / 1_000_000) if container.duration else 0.0
            if not duration:
                for stream in (video, audio):
                    if stream is not None and stream.duration and stream.time_base:
                        duration = max(duration, float(stream.duration * stream.time_base))
            fps = float(video.average_rate) if video is not None and video.average_rate else 0.0
            return MediaInfo(
                path=path,
                duration_s=duration,
                has_video=video is not None,
                has_audio=audio is not None,
                width=video.codec_context.width if video is not None else 0,
                height=video.codec_context.height if video is not None else 0,
                fps=fps,
                video_codec=video.codec_context.name if video is not None else "",
                audio_codec=audio.codec_context.name if audio is not None else "",
                sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
                is_image=video is not None and (path.suffix.lower() in IMAGE_SUFFIXES or (video.frames or 0) == 1),
            )
    except StudioError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as exc:
        raise StudioError(f"{path} is not a readable media file ({exc}); replace it with a valid image, audio or video file") from exc


def read_audio(path: Path, sample_rate: int, *, channels: int = 1, duration_s: float | None = None, loop: bool = False,
               cancel: CancelToken | None = None) -> np.ndarray:
    """Decode any audio file to float32 samples at `sample_rate`, shape (n, channels).

    Args:
        loop: Repeat the file as often as needed to fill `duration_s` (background music).
    """
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"audio file {path} does not exist")
    args = (["-stream_loop", "-1"] if loop else []) + INPUT_GUARD + ["-i", path]
    if duration_s is not None:
        args += ["-t", f"{duration_s:.6f}"]
    args += ["-vn", "-ac", str(channels), "-ar", str(sample_rate), "-f", "f32le", "pipe:1"]
    data = run_ffmpeg_output(args, cancel=cancel, what=f"reading audio {path.name}")
    samples = np.frombuffer(data, dtype=np.float32).reshape(-1, channels)
    if not len(samples):
        raise StudioError(f"{path} holds no audio")
    return samples


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples (-1..1), shape (n,) or (n, channels), as a 16-bit PCM WAV, atomically."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with atomic_path(Path(path)) as tmp:
        with wave.open(str(tmp), "wb") as handle:
            handle.setnchannels(pcm.shape[1])
            handle.setsampwidth(2)
            handle.setframerate(sample_rate)
            handle.writeframes(pcm.tobytes())


def wav_duration_s(path: Path) -> float:
    """Length of a PCM WAV file in seconds."""
    with wave.open(str(path), "rb") as handle:
        return handle.getnframes() / float(handle.getframerate())


def check_output_path(output: Path, suffixes: Sequence[str] = (".mp4",)) -> Path:
    """Check that `output` can be written: its folder exists and it has an allowed extension."""
    output = Path(output)
    if output.suffix.lower() not in suffixes:
        raise StudioError(f"output {output} must end in {' or '.join(suffixes)}")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise StudioError(f"output folder {parent} does not exist; create it first or choose another --output")
    if not os.access(parent, os.W_OK):
        raise StudioError(f"output folder {parent} is not writable")
    if output.is_dir():
        raise StudioError(f"output {output} is a folder; give a file name ending in {suffixes[0]}")
    return output
