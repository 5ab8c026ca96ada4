"""The soundtrack: narration placed on the timeline, music looped and ducked under it, loudness normalised, AAC.

1. Mix in chunks of one second (memory stays flat for any length), always in stereo: each narration is decoded
   (PyAV, file protocol only) when the mix reaches it and put in both channels (centred); music streams from one
   ffmpeg process (``-stream_loop -1``) in stereo and is multiplied by a ducking envelope computed from the narration's
   known times (no guessing from levels). Gaps between narrations under `DUCK_HOLD_S` stay ducked, so the music does
   not swell at every scene change; the duck falls and rises on raised-cosine ramps.
2. Analyse the mix once (`analyse_mix`): one ffmpeg pass applies the BS.1770 K-weighting filters, and numpy keeps, per
   millisecond, the K-weighted energy and the 4x-oversampled (true) peak. That is all the normalisation needs.
3. Normalise as broadcast and streaming masters do (`normalise`): a linear gain to the preset's target, then a
   true-peak limiter with lookahead (ceiling `TRUE_PEAK_CEILING_DBTP`, under the -1 dBTP the platforms ask for, so the
   AAC encoder's overs stay under it), then the loudness *after* limiting is measured again and the gain corrected,
   twice more, so limiting does not leave the programme short of its target. The gain and limiter curves are computed
   on the millisecond arrays (microseconds), then applied to the mix in one chunked pass.
4. Encode AAC, measure the ENCODED file with ffmpeg's ``ebur128`` (what a platform measures), and when it is off the
   target by more than `ENCODED_TOLERANCE_LU` or over -1 dBTP, correct the gain or the ceiling and encode once more.
   ``loudnorm`` is not used because it always resamples to 192 kHz, which measured 1.5 s per minute of audio to
   analyse and 1.7 s more to apply on this machine's cores, which the video encoder needs.

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

TRUE_PEAK_LIMIT_DBTP = -1.0  # what the finished file must not exceed (YouTube, Spotify, EBU R128 s1: -1 dBTP)
TRUE_PEAK_CEILING_DBTP = -1.5  # the limiter's ceiling before AAC: AAC's overs measured 0.1-0.4 dB at 96-256 kb/s
ENCODED_TOLERANCE_LU = 0.3  # the encoded file is corrected (encoded once more) when further from the target
CHUNK_S = 1.0
ENVELOPE_RATE = 200  # ducking envelope control points per second
DUCK_HOLD_S = 1.0  # a gap between narrations shorter than this stays ducked (no swell at each scene change)
LIMITER_RAMP_S = 0.015  # the limiter's gain falls over this much before a peak (lookahead) and rises as long after


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


def _raised_cosine(x: np.ndarray) -> np.ndarray:
    """0 at x <= 0, 1 at x >= 1, a half cosine between (smooth at both ends)."""
    return (0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))).astype(np.float32)


def duck_windows(timeline: Timeline) -> list[tuple[float, float]]:
    """The stretches (start_s, end_s) under which the music is ducked: the narrations, with gaps between them shorter
    than `DUCK_HOLD_S` (or than the attack and release together) filled in."""
    assert timeline.music is not None
    hold = max(DUCK_HOLD_S, timeline.music.attack_s + timeline.music.release_s)
    windows: list[list[float]] = []
    for voice in sorted(timeline.narration, key=lambda v: v.offset_s):
        a, b = voice.offset_s, voice.offset_s + voice.duration_s
        if b <= a:
            continue
        if windows and a - windows[-1][1] < hold:
            windows[-1][1] = max(windows[-1][1], b)
        else:
            windows.append([a, b])
    return [(a, b) for a, b in windows]


def duck_envelope(timeline: Timeline) -> np.ndarray:
    """How much narration is present (0..1) at `ENVELOPE_RATE` points per second over the whole video: 1 under each
    of `duck_windows`, rising on a raised cosine over `attack_s` before it and falling over `release_s` after it."""
    assert timeline.music is not None
    music = timeline.music
    n = int(math.ceil(timeline.duration_s * ENVELOPE_RATE)) + 2
    t = np.arange(n) / ENVELOPE_RATE
    env = np.zeros(n, np.float32)
    attack, release = max(music.attack_s, 1e-3), max(music.release_s, 1e-3)
    for a, b in duck_windows(timeline):
        shape = np.minimum(_raised_cosine((t - (a - attack)) / attack), _raised_cosine(((b + release) - t) / release))
        np.maximum(env, shape, out=env)
    return env


def mix_soundtrack(timeline: Timeline, work: Path, *, cancel: CancelToken | None = None) -> Mix:
    """Write the mixed soundtrack of `timeline` to ``work/mix.f32`` (see the module docstring, step 1)."""
    rate = timeline.sample_rate
    channels = 2  # always stereo: the narration centred (the same in both channels), the music as it is
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


def measure_file(input_args: list, *, cwd: Path | None = None, cancel: CancelToken | None = None) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) of an input, with ffmpeg's ``ebur128`` filter."""
    ff = Ffmpeg([*input_args, "-vn", "-loglevel", "info", "-nostats", "-af", "ebur128=peak=true:framelog=verbose",
                 "-f", "null", "-"], cwd=cwd, cancel=cancel, what="measuring loudness")
    ff.wait()
    log = ff.log_text()
    loud, peak = _LOUDNESS_RE.search(log), _PEAK_RE.search(log)
    if not loud or not peak:
        raise StudioError(f"measuring loudness failed: ffmpeg's ebur128 report was not found ({log[-300:]!r})")
    return float(loud.group(1)), float(peak.group(1))


def measure_loudness(mix: Mix, work: Path, *, cancel: CancelToken | None = None) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) of a mix, with ffmpeg's ``ebur128`` filter."""
    return measure_file(mix.input_args(), cwd=work, cancel=cancel)


# -- analysis: K-weighted energy and true peak per millisecond ---------------------------------------------------------
def k_weighting(sample_rate: int) -> list[tuple[float, float, float, float, float, float]]:
    """The two BS.1770 K-weighting biquads (b0, b1, b2, a0, a1, a2) at `sample_rate`: the head's high shelf (+4 dB
    above about 1.7 kHz) and the RLB high-pass (38 Hz). At 48 kHz these are the coefficients of ITU-R BS.1770-4."""
    out = []
    # High shelf.
    gain_db, q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * fc / sample_rate
    alpha, cos = math.sin(w0) / (2 * q), math.cos(w0)
    out.append((a * ((a + 1) + (a - 1) * cos + 2 * math.sqrt(a) * alpha), -2 * a * ((a - 1) + (a + 1) * cos),
                a * ((a + 1) + (a - 1) * cos - 2 * math.sqrt(a) * alpha),
                (a + 1) - (a - 1) * cos + 2 * math.sqrt(a) * alpha, 2 * ((a - 1) - (a + 1) * cos),
                (a + 1) - (a - 1) * cos - 2 * math.sqrt(a) * alpha))
    # High-pass.
    q, fc = 0.5003270373238773, 38.13547087602444
    w0 = 2 * math.pi * fc / sample_rate
    alpha, cos = math.sin(w0) / (2 * q), math.cos(w0)
    out.append(((1 + cos) / 2, -(1 + cos), (1 + cos) / 2, 1 + alpha, -2 * cos, 1 - alpha))
    return out


_TP_TAPS = 16  # per phase of the 4x true-peak interpolator


def _tp_filters() -> np.ndarray:
    """Three fractional-delay filters (1/4, 2/4, 3/4 of a sample), Kaiser-windowed sinc, `_TP_TAPS` taps each."""
    half = _TP_TAPS / 2
    rows = []
    for d in (0.25, 0.5, 0.75):
        t = np.arange(_TP_TAPS) - (half - 1) - d
        h = np.sinc(t) * np.i0(5.0 * np.sqrt(np.clip(1 - (t / half) ** 2, 0, 1))) / np.i0(5.0)
        rows.append(h / h.sum())
    return np.asarray(rows, np.float64)


@dataclass(frozen=True)
class Analysis:
    """Per block of `block` samples (about 1 ms): the K-weighted energy (summed over channels) and the true peak."""

    sample_rate: int
    block: int
    energy: np.ndarray
    peak: np.ndarray


def analyse_mix(mix: Mix, work: Path, *, cancel: CancelToken | None = None) -> Analysis:
    """One ffmpeg pass (K-weighting biquads, beside the unfiltered mix) read by numpy in one-second chunks."""
    rate = mix.sample_rate
    block = max(1, int(round(rate / 1000)))
    blocks = -(-mix.samples // block)
    energy = np.zeros(blocks, np.float64)
    peak = np.zeros(blocks, np.float64)
    kw = ",".join(f"biquad=b0={b0!r}:b1={b1!r}:b2={b2!r}:a0={a0!r}:a1={a1!r}:a2={a2!r}"
                  for b0, b1, b2, a0, a1, a2 in k_weighting(rate))
    graph = f"[0:a]asplit=2[raw][k];[k]{kw}[kw];[raw][kw]amerge=inputs=2[out]"
    filters = _tp_filters()
    taps = _TP_TAPS
    centre = taps // 2 - 1
    chunk = block * 1000
    history = np.zeros((taps, 2), np.float64)
    done = 0
    with Ffmpeg([*mix.input_args(), "-filter_complex", graph, "-map", "[out]", "-f", "f32le", "pipe:1"], cwd=work,
                stdout=True, cancel=cancel, what="analysing the soundtrack") as ff:
        while done < mix.samples:
            check(cancel)
            data = _read_exact(ff, min(chunk, mix.samples - done) * 4 * 4)
            if not data:
                break
            frames = np.frombuffer(data, np.float32).reshape(-1, 4).astype(np.float64)
            raw, weighted = frames[:, :2], frames[:, 2:]
            n = len(frames)
            _block_sum(energy, done, (weighted ** 2).sum(axis=1), block)
            _block_max(peak, done, np.abs(raw).max(axis=1), block)
            last = done + n >= mix.samples
            ext = np.concatenate([history, raw, np.zeros((taps, 2)) if last else np.zeros((0, 2))])
            inter = np.zeros(len(ext) - taps + 1)
            for h in filters:
                for c in range(2):
                    np.maximum(inter, np.abs(np.convolve(ext[:, c], h[::-1], "valid")), out=inter)
            # inter[i] lies between the samples at ext[i + centre] and the next; ext[0] is sample done - taps.
            first = done - taps + centre
            keep = max(0, -first)
            _block_max(peak, first + keep, inter[keep:mix.samples - first] if last else inter[keep:], block)
            history = np.concatenate([history, raw])[-taps:]
            done += n
        while ff.stdout.read(1 << 16):
            pass
    return Analysis(rate, block, energy, peak)


def _block_sum(out: np.ndarray, first: int, values: np.ndarray, block: int) -> None:
    ids = np.arange(first, first + len(values)) // block
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    out[ids[starts]] += np.add.reduceat(values, starts)


def _block_max(out: np.ndarray, first: int, values: np.ndarray, block: int) -> None:
    if not len(values):
        return
    ids = np.minimum(np.arange(first, first + len(values)) // block, len(out) - 1)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    np.maximum.at(out, ids[starts], np.maximum.reduceat(values, starts))


def integrated_loudness(analysis: Analysis, gain: np.ndarray | float = 1.0) -> float:
    """BS.1770 integrated loudness (LUFS) of the analysed mix times `gain` (linear, one value per block): 400 ms
    gating blocks every 100 ms, the absolute gate at -70 LUFS and the relative gate 10 LU under the ungated mean."""
    energy = analysis.energy * np.square(gain)
    per_s = analysis.sample_rate / analysis.block
    width, hop = max(1, int(round(0.4 * per_s))), max(1, int(round(0.1 * per_s)))
    sums = np.concatenate([[0.0], np.cumsum(energy)])
    if len(energy) <= width:
        z = np.array([sums[-1] / max(1, len(energy) * analysis.block)])
    else:
        starts = np.arange(0, len(energy) - width + 1, hop)
        z = (sums[starts + width] - sums[starts]) / (width * analysis.block)
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(z)
    z = z[loud > -70]
    if not len(z):
        return -math.inf
    relative = -0.691 + 10 * math.log10(z.mean()) - 10
    z = z[-0.691 + 10 * np.log10(z) > relative]
    return -0.691 + 10 * math.log10(z.mean())


def limiter_gain(analysis: Analysis, gain: float, ceiling_dbtp: float) -> np.ndarray:
    """Per block, the gain (<= 1) a lookahead limiter applies after `gain` so the true peak stays under the ceiling:
    the least gain any peak within `LIMITER_RAMP_S` (plus a block) needs, smoothed by a moving average of that width,
    so the gain has fallen in time for every peak and changes over about 2 x `LIMITER_RAMP_S`."""
    ceiling = 10 ** (ceiling_dbtp / 20)
    with np.errstate(divide="ignore"):
        need = np.minimum(1.0, ceiling / (gain * analysis.peak))
    half = max(1, int(round(LIMITER_RAMP_S * analysis.sample_rate / analysis.block)))
    padded = np.pad(need, half + 1, constant_values=1.0)
    low = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 3).min(axis=1)  # one per block, centred
    low = np.pad(low, half, constant_values=1.0)
    sums = np.concatenate([[0.0], np.cumsum(low)])
    return (sums[2 * half + 1:] - sums[:-(2 * half + 1)]) / (2 * half + 1)


@dataclass(frozen=True)
class Normalisation:
    """A linear `gain` and a limiter's per-block gain curve, and what they are predicted to give."""

    gain: float
    limiter: np.ndarray
    loudness_lufs: float
    limited_db: float  # the most the limiter takes off


def normalise(analysis: Analysis, target_lufs: float, ceiling_dbtp: float = TRUE_PEAK_CEILING_DBTP,
              rounds: int = 4) -> Normalisation | None:
    """Gain to the target, limit the true peak, measure again, correct the gain (`rounds` times): the limiter takes
    loudness off, and the corrected gain puts it back. None for silence (nothing to normalise)."""
    measured = integrated_loudness(analysis)
    if not math.isfinite(measured) or measured < -70:
        return None
    gain = 10 ** ((target_lufs - measured) / 20)
    for _ in range(rounds):
        limit = limiter_gain(analysis, gain, ceiling_dbtp)
        measured = integrated_loudness(analysis, gain * limit)
        gain *= 10 ** ((target_lufs - measured) / 20)
    limit = limiter_gain(analysis, gain, ceiling_dbtp)
    return Normalisation(gain, limit, integrated_loudness(analysis, gain * limit),
                         float(-20 * np.log10(max(limit.min(initial=1.0), 1e-9))))


def apply_normalisation(mix: Mix, analysis: Analysis, norm: Normalisation, path: Path, *,
                        cancel: CancelToken | None = None) -> Mix:
    """Write ``mix * gain * limiter`` (the limiter's block curve interpolated between block centres) to `path`."""
    source = np.memmap(mix.path, np.float32, "r", shape=(mix.samples, mix.channels)) if mix.samples else None
    centres = (np.arange(len(norm.limiter)) + 0.5) * analysis.block
    chunk = int(CHUNK_S * mix.sample_rate)
    with open(path, "wb") as out:
        for begin in range(0, mix.samples, chunk):
            check(cancel)
            end = min(mix.samples, begin + chunk)
            curve = norm.gain * np.interp(np.arange(begin, end) + 0.5, centres, norm.limiter)
            out.write((source[begin:end] * curve[:, None].astype(np.float32)).astype(np.float32).tobytes())
    del source
    return Mix(path=path, channels=mix.channels, sample_rate=mix.sample_rate, samples=mix.samples, peak=mix.peak)


def _encode(mix: Mix, out: Path, timeline: Timeline, work: Path, cancel: CancelToken | None) -> None:
    # ffmpeg's AAC "twoloop" coder costs twice the "fast" one on speech with music (2.5 s against 1.1 s per minute
    # here); the difference is only audible at high bitrates, so the premium tiers pay for it and the quick ones don't.
    coder = "twoloop" if timeline.audio_bitrate_kbps > 128 else "fast"
    # No intensity stereo and no noise substitution: on a centred voice over music at 96 kb/s they put true-peak
    # overs of +3.5 dB into the decoded file (the channels decoded far apart where the mix had them equal); without
    # them the overs measured 0.1 dB, at no cost in time.
    Ffmpeg([*mix.input_args(), "-c:a", "aac", "-aac_coder", coder, "-aac_is", "0", "-aac_pns", "0", "-b:a", f"{timeline.audio_bitrate_kbps}k",
            "-ar", str(mix.sample_rate), "-ac", "2", "-f", "mp4", "-y", out.name],
           cwd=work, cancel=cancel, what="encoding the soundtrack").wait()


@dataclass(frozen=True)
class SoundtrackReport:
    """What `encode_soundtrack` measured: the mix before normalising and the encoded file (LUFS, dBTP)."""

    mix_lufs: float
    encoded_lufs: float
    encoded_peak_dbtp: float
    limited_db: float
    encodes: int


def encode_soundtrack(timeline: Timeline, work: Path, *, cancel: CancelToken | None = None,
                      report: list | None = None) -> Path:
    """Mix, normalise and encode the soundtrack of `timeline` to ``work/audio.m4a`` (AAC stereo); returns its path.
    `report`, when given, gets one `SoundtrackReport` appended."""
    if timeline.music is not None and not probe(timeline.music.path).has_audio:
        raise StudioError(f"the project's music {timeline.music.path} holds no audio; choose another file")
    mix = mix_soundtrack(timeline, work, cancel=cancel)
    out = work / "audio.m4a"
    target = timeline.loudness_lufs
    if mix.peak <= 0:
        _encode(mix, out, timeline, work, cancel)
        if report is not None:
            report.append(SoundtrackReport(-math.inf, -math.inf, -math.inf, 0.0, 1))
        return out
    analysis = analyse_mix(mix, work, cancel=cancel)
    aim, ceiling = target, TRUE_PEAK_CEILING_DBTP
    encodes = 0
    while True:
        norm = normalise(analysis, aim, ceiling)
        master = apply_normalisation(mix, analysis, norm, work / "master.f32", cancel=cancel) if norm else mix
        _encode(master, out, timeline, work, cancel)
        encodes += 1
        loud, peak = measure_file([*INPUT_GUARD, "-i", out.name], cwd=work, cancel=cancel)
        off, over = target - loud, peak - TRUE_PEAK_LIMIT_DBTP
        if norm is None or encodes >= 2 or (abs(off) <= ENCODED_TOLERANCE_LU and over <= 0):
            break
        # Measured on the encoded file, corrected once: the rest of the gap to the target, a lower ceiling for overs.
        aim += off
        if over > -0.1:
            ceiling -= over + 0.2
    with contextlib.suppress(OSError):
        (work / "master.f32").unlink()
    if report is not None:
        report.append(SoundtrackReport(integrated_loudness(analysis), loud, peak, norm.limited_db if norm else 0.0,
                                       encodes))
    return out


def narration_windows(timeline: Timeline) -> list[tuple[float, float]]:
    """(start_s, end_s) of each narration on the video's clock (for checks and tests)."""
    return [(v.offset_s, v.offset_s + v.duration_s) for v in timeline.narration]


__all__ = ["Analysis", "Mix", "NarrationTrack", "Normalisation", "SoundtrackReport", "analyse_mix", "decode_audio",
           "duck_envelope", "duck_windows", "encode_soundtrack", "integrated_loudness", "k_weighting", "limiter_gain",
           "measure_file", "measure_loudness", "mix_soundtrack", "narration_windows", "normalise"]
