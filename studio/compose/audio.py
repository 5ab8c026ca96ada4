"""The soundtrack: narration placed on the timeline, music looped and ducked under it, loudness normalised, AAC.

1. Mix in chunks of one second (memory stays flat for any length): each narration is decoded (PyAV, file protocol
   only) when the mix reaches it; music streams from one ffmpeg process (``-stream_loop -1``) and is multiplied by a
   ducking envelope computed from the narration's known times (no guessing from levels).
2. Measure the mix's integrated loudness and true peak with ffmpeg's ``ebur128`` filter (EBU R128 / BS.1770).
3. Encode AAC with one linear gain (``volume``) that brings the mix to the preset's target, and a limiter only when
   that gain would push the true peak over -1.5 dBTP. This is what ``loudnorm`` does in its linear (two-pass) mode;
   ``loudnorm`` itself is not used because it always resamples to 192 kHz, which measured 1.5 s per minute of audio
   to analyse and 1.7 s more to apply on this machine's cores, which the video encoder needs.

Filter strings hold numbers only; file names in them are ones this module made.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StudioError
from ..media import INPUT_GUARD, Ffmpeg, probe
from ..progress import CancelToken, check
from .timeline import NarrationTrack, Timeline

TRUE_PEAK_LIMIT_DBTP = -1.5
CHUNK_S = 1.0
ENVELOPE_RATE = 200  # ducking envelope control points per second


@dataclass(frozen=True)
class Mix:
    """A mixed soundtrack on disk: raw float32 samples, interleaved."""

    path: Path
    channels: int
    sample_rate: int
    samples: int
    peak: float

    def input_args(self) -> list[str]:
        return ["-f", "f32le", "-ar", str(self.sample_rate), "-ac", str(self.channels), *INPUT_GUARD, "-i", self.path.name]


def decode_audio(path: Path, sample_rate: int, channels: int) -> np.ndarray:
    """Decode a whole (short) audio file to float32 samples of shape (n, channels) at `sample_rate`."""
    import av

    layout = "mono" if channels == 1 else "stereo"
    chunks = []
    try:
        # Local files only: the same guard as ffmpeg's INPUT_GUARD.
        with av.open(str(path), options={"protocol_whitelist": "file"}) as container:
            if not container.streams.audio:
                raise StudioError(f"{path} holds no audio stream; run narrate again or replace the file")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout=layout, rate=sample_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1, channels))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1, channels))
    except StudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise StudioError(f"cannot read audio {path} ({exc}); replace it or run narrate again") from exc
    if not chunks:
        return np.zeros((0, channels), np.float32)
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def duck_envelope(timeline: Timeline) -> np.ndarray:
    """How much narration is present (0..1) at `ENVELOPE_RATE` points per second over the whole video: 1 while a
    narration plays, ramping up `attack_s` before it and down `release_s` after it."""
    assert timeline.music is not None
    music = timeline.music
    n = int(math.ceil(timeline.duration_s * ENVELOPE_RATE)) + 2
    t = np.arange(n) / ENVELOPE_RATE
    env = np.zeros(n, np.float32)
    for voice in timeline.narration:
        a, b = voice.offset_s, voice.offset_s + voice.duration_s
        shape = np.interp(t, [a - music.attack_s, a, b, b + music.release_s], [0.0, 1.0, 1.0, 0.0], left=0.0, right=0.0)
        np.maximum(env, shape.astype(np.float32), out=env)
    return env


def mix_soundtrack(timeline: Timeline, work: Path, *, cancel: CancelToken | None = None) -> Mix:
    """Write the mixed soundtrack of `timeline` to ``work/mix.f32`` (see the module docstring, step 1)."""
    rate = timeline.sample_rate
    channels = 2 if timeline.music is not None else 1
    total = int(round(timeline.frame_count / timeline.fps * rate))
    chunk = int(CHUNK_S * rate)
    path = work / "mix.f32"
    voices = sorted(timeline.narration, key=lambda v: v.offset_s)
    loaded: dict[int, np.ndarray] = {}

    def voice_samples(i: int) -> np.ndarray:
        if i not in loaded:
            voice = voices[i]
            data = decode_audio(voice.path, rate, 1)[:, 0]
            length = int(round(voice.duration_s * rate))
            data = data[:length]
            if voice.fade_out_s > 0:
                fade = min(len(data), int(round(voice.fade_out_s * rate)))
                if fade:
                    data = data.copy()
                    data[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
            loaded[i] = data
        return loaded[i]

    envelope = duck_envelope(timeline) if timeline.music is not None else None
    envelope_t = np.arange(len(envelope)) / ENVELOPE_RATE if envelope is not None else None
    peak = 0.0
    first_voice = 0
    with contextlib.ExitStack() as stack:
        music_proc = None
        if timeline.music is not None:
            # Leaving the block by an exception kills it; `-t` ends it just after what the mix needs.
            music_proc = stack.enter_context(Ffmpeg(
                ["-stream_loop", "-1", *INPUT_GUARD, "-i", Path(timeline.music.path).resolve(), "-vn", "-ac", "2",
                 "-ar", str(rate), "-t", f"{total / rate + 0.2:.6f}", "-f", "f32le", "pipe:1"],
                stdout=True, cancel=cancel, what=f"reading music {Path(timeline.music.path).name}"))
        out = stack.enter_context(open(path, "wb"))
        for begin in range(0, total, chunk):
            check(cancel)
            end = min(total, begin + chunk)
            block = np.zeros((end - begin, channels), np.float32)
            # Narration: every voice that overlaps this chunk (voices are in time order and do not overlap).
            for i in range(first_voice, len(voices)):
                at = int(round(voices[i].offset_s * rate))
                if at >= end:
                    break
                data = voice_samples(i)
                lo, hi = max(begin, at), min(end, at + len(data))
                if hi > lo:
                    block[lo - begin:hi - begin] += data[lo - at:hi - at, None]
                if at + len(data) <= end and i == first_voice:
                    loaded.pop(i, None)  # done with it: memory stays flat
                    first_voice = i + 1
            # Music: the next chunk of the looped stream, times the ducking gain.
            if music_proc is not None:
                samples = np.frombuffer(_read_exact(music_proc, (end - begin) * 2 * 4), np.float32).reshape(-1, 2)
                if len(samples) < end - begin:  # the stream ended early: silence for the rest
                    samples = np.concatenate([samples, np.zeros((end - begin - len(samples), 2), np.float32)])
                t = np.arange(begin, end) / rate
                presence = np.interp(t, envelope_t, envelope).astype(np.float32)
                gain = timeline.music.volume * (1.0 - (1.0 - timeline.music.duck_gain) * presence)
                block += samples * gain[:, None]
            peak = max(peak, float(np.abs(block).max(initial=0.0)))
            out.write(block.tobytes())
        if music_proc is not None:
            while music_proc.stdout.read(1 << 16):  # the last fraction of a second, so it exits by itself
                pass
    return Mix(path=path, channels=channels, sample_rate=rate, samples=total, peak=peak)


def _read_exact(ff: Ffmpeg, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        data = ff.stdout.read(size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


_LOUDNESS_RE = re.compile(r"Integrated loudness:\s*I:\s*(-?inf|-?[\d.]+)\s*LUFS", re.S)
_PEAK_RE = re.compile(r"True peak:\s*Peak:\s*(-?inf|-?[\d.]+)\s*dBFS", re.S)


def measure_loudness(mix: Mix, work: Path, *, cancel: CancelToken | None = None) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) of a mix, with ffmpeg's ``ebur128`` filter."""
    ff = Ffmpeg([*mix.input_args(), "-loglevel", "info", "-nostats", "-af", "ebur128=peak=true:framelog=verbose",
                 "-f", "null", "-"], cwd=work, cancel=cancel, what="measuring loudness")
    ff.wait()
    log = ff.log_text()
    loud, peak = _LOUDNESS_RE.search(log), _PEAK_RE.search(log)
    if not loud or not peak:
        raise StudioError(f"measuring loudness failed: ffmpeg's ebur128 report was not found ({log[-300:]!r})")
    return float(loud.group(1)), float(peak.group(1))


def loudness_filter(integrated_lufs: float, true_peak_dbtp: float, target_lufs: float) -> str:
    """The audio filter (numbers only) that brings a mix measured at `integrated_lufs` to `target_lufs`."""
    if not math.isfinite(integrated_lufs) or integrated_lufs < -70:
        return "anull"  # silence (or nearly): nothing to normalise
    gain_db = target_lufs - integrated_lufs
    chain = [f"volume={gain_db:.3f}dB"]
    if math.isfinite(true_peak_dbtp) and true_peak_dbtp + gain_db > TRUE_PEAK_LIMIT_DBTP:
        # Sample-peak limiter 0.5 dB under the true-peak ceiling, delay compensated, no auto level.
        limit = 10 ** ((TRUE_PEAK_LIMIT_DBTP - 0.5) / 20)
        chain.append(f"alimiter=limit={limit:.4f}:attack=5:release=50:level=false:latency=true")
    return ",".join(chain)


def encode_soundtrack(timeline: Timeline, work: Path, *, cancel: CancelToken | None = None) -> Path:
    """Mix, measure and encode the soundtrack of `timeline` to ``work/audio.m4a`` (AAC); returns its path."""
    if timeline.music is not None and not probe(timeline.music.path).has_audio:
        raise StudioError(f"the project's music {timeline.music.path} holds no audio; choose another file")
    mix = mix_soundtrack(timeline, work, cancel=cancel)
    if mix.peak > 0:
        integrated, peak = measure_loudness(mix, work, cancel=cancel)
        chain = loudness_filter(integrated, peak, timeline.loudness_lufs)
    else:
        chain = "anull"
    out = work / "audio.m4a"
    # ffmpeg's AAC "twoloop" coder costs twice the "fast" one on speech with music (2.5 s against 1.1 s per minute
    # here); the difference is only audible at high bitrates, so the premium tiers pay for it and the quick ones don't.
    coder = "twoloop" if timeline.audio_bitrate_kbps > 128 else "fast"
    Ffmpeg([*mix.input_args(), "-af", chain, "-c:a", "aac", "-aac_coder", coder, "-b:a", f"{timeline.audio_bitrate_kbps}k",
            "-ar", str(mix.sample_rate), "-ac", str(mix.channels), "-f", "mp4", out.name],
           cwd=work, cancel=cancel, what="encoding the soundtrack").wait()
    return out


def narration_windows(timeline: Timeline) -> list[tuple[float, float]]:
    """(start_s, end_s) of each narration on the video's clock (for checks and tests)."""
    return [(v.offset_s, v.offset_s + v.duration_s) for v in timeline.narration]


__all__ = ["Mix", "NarrationTrack", "decode_audio", "duck_envelope", "encode_soundtrack", "loudness_filter",
           "measure_loudness", "mix_soundtrack", "narration_windows"]
