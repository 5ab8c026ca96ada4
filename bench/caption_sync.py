"""Caption timing against exact word timings: the energy estimate and forced alignment side by side, per voice.

    python bench/caption_sync.py                              # every example script, 4 scenes each, every voice here
    python bench/caption_sync.py --scenes 8 --json bench/results/caption_sync.json
    python bench/caption_sync.py --quick                      # one script, 2 scenes, espeak-ng only: a smoke test

Each example script (examples/*.md, *.txt) becomes a storyboard with the rules writer; the first scenes' narration is
spoken by each voice, and every word's onset from each timing source is compared with the voice's exact onsets:

- ``espeak``: Studio's espeak-ng narrator (165 wpm). Exact onsets: espeak-ng's own word events (its library's
  synthesis callback, through ctypes: the sample where each word's first phoneme starts), from a second synthesis of
  the same text, checked to be the narrator's WAV sample for sample.
- ``recorded``: a stand-in for a user's own recording of the text: espeak-ng at 130 wpm, timed as a recording is
  (the estimate has no phoneme weights), with the same exact onsets.
- ``piper``: Piper (when installed). Exact onsets: Piper's engine timings (its phoneme alignments).

Sources: ``estimate`` (`estimate_word_timings`: the espeak narrator's own phoneme-weighted estimate for ``espeak``,
the unweighted one for the others, as a narrator without engine timings has) and ``aligned``
(`studio.voice.align.align`). For each it prints the absolute onset error (median, p95, max, in ms) and the signed
median (positive: late), over all words and over caption starts: the first word of each caption as
`studio.compose.captions.group_words` groups that source's timings (the captions a viewer sees), against that word's
exact onset.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=4, help="scenes per script (the first ones)")
    parser.add_argument("--voices", default="espeak,recorded,piper")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--quick", action="store_true", help="one script, 2 scenes, espeak only")
    parser.add_argument("--studio", type=Path, default=HERE.parent,
                        help="the checkout whose studio package is measured")
    parser.add_argument("--espeak-events", type=int, metavar="WPM", help=argparse.SUPPRESS)  # internal: see below
    args = parser.parse_args()
    if args.espeak_events:
        espeak_events_main(args.espeak_events)
        return
    sys.path.insert(0, str(args.studio.resolve()))
    import studio
    from studio.voice.align import aligner_for

    scripts = sorted(p for p in (HERE.parent / "examples").glob("*") if p.suffix in (".md", ".txt"))
    voices = args.voices.split(",")
    if args.quick:
        scripts, args.scenes, voices = scripts[:1], 2, ["espeak"]
    print(f"studio from {Path(studio.__file__).parent}; aligner {aligner_for('en')}", flush=True)
    texts = []
    for script in scripts:
        project = studio.write_storyboard(studio.read_script(script), mode="script", writer="rules")
        texts += [(script.name, s.narration) for s in project.scenes[: args.scenes] if s.narration.strip()]
    print(f"{len(texts)} scenes from {len(scripts)} scripts, {sum(len(t.split()) for _, t in texts)} words", flush=True)

    folder = Path(tempfile.mkdtemp(prefix="bench-caption-sync-"))
    rows, started = [], time.perf_counter()
    for voice in voices:
        try:
            cases = list(_speak(voice, texts, folder))
        except Unavailable as exc:
            print(f"{voice}: skipped ({exc})", flush=True)
            continue
        rows += _measure(voice, cases)
    _print(rows)
    print(f"\n{time.perf_counter() - started:.1f} s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"aligner": aligner_for("en"), "scenes": len(texts), "rows": rows}, indent=1))


class Unavailable(Exception):
    """A voice that cannot speak here."""


# -- voices -----------------------------------------------------------------------------------------------------------
def _speak(voice: str, texts: list[tuple[str, str]], folder: Path):
    """Yield (text, wav, exact words, estimated words, seconds the narrator took) per scene."""
    from studio import providers
    from studio.voice.timing import estimate_word_timings, read_wav

    if voice in ("espeak", "recorded"):
        wpm = 165 if voice == "espeak" else 130
        try:
            narrator, _ = providers.create("narrator", "espeak", speed_wpm=wpm)
        except providers.ProviderUnavailable as exc:
            raise Unavailable(str(exc)) from None
        events = EspeakEvents(wpm)
        for i, (_, text) in enumerate(texts):
            wav = folder / f"{voice}-{i}.wav"
            start = time.perf_counter()
            speech = narrator.speak(text, voice=None, seed=0, language="en", out=wav)
            took = time.perf_counter() - start
            samples, rate = read_wav(wav)
            exact = events.onsets(text, samples, rate)
            estimated = speech.words if voice == "espeak" else estimate_word_timings(text, samples, rate)
            yield text, wav, exact, estimated, took
    elif voice == "piper":
        try:
            narrator, _ = providers.create("narrator", "piper")
        except providers.ProviderUnavailable as exc:
            raise Unavailable(str(exc)) from None
        for i, (_, text) in enumerate(texts):
            wav = folder / f"piper-{i}.wav"
            start = time.perf_counter()
            speech = narrator.speak(text, voice=None, seed=0, language="en", out=wav)
            took = time.perf_counter() - start
            if speech.timing_source != "engine":
                raise Unavailable(f"Piper gave {speech.timing_source} timings, not its engine's")
            samples, rate = read_wav(wav)
            yield text, wav, [w.start_s for w in speech.words], estimate_word_timings(text, samples, rate), took
    else:
        raise Unavailable(f"unknown voice {voice!r}: choose from espeak, recorded, piper")


class _Event(ctypes.Structure):
    # espeak_EVENT (speak_lib.h): type, unique_identifier, text_position (1-based characters), length,
    # audio_position (ms), sample (output samples so far), user_data, id (a union of int / pointer / char[8])
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_WORD_EVENT, _SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8, _RATE = 1, 2, 1, 1, 1


def espeak_events_main(wpm: int) -> None:
    """``caption_sync.py --espeak-events WPM`` (run per text, in a fresh process as the program is: one synthesis
    leaves library state that changes the next): synthesises stdin with libespeak-ng and prints JSON with the sample
    rate, the audio's sha256 and each word event's (0-based character position, sample)."""
    import hashlib

    lib = ctypes.CDLL("libespeak-ng.so.1")
    chunks, events = [], []

    def on_synth(wav, count, event) -> int:
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        i = 0
        while event[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            if event[i].type == _WORD_EVENT:
                events.append((event[i].text_position - 1, event[i].sample))
            i += 1
        return 0

    callback = _CALLBACK(on_synth)  # kept alive: the library holds only a raw pointer to it
    rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, None, 0)
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_SetVoiceByName(b"en-us")
    lib.espeak_SetParameter(_RATE, wpm, 0)
    data = sys.stdin.buffer.read()
    lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    audio = np.concatenate(chunks).astype("<i2") if chunks else np.zeros(0, "<i2")
    print(json.dumps({"rate": rate, "samples": len(audio), "sha256": hashlib.sha256(audio.tobytes()).hexdigest(),
                      "events": events}))


class EspeakEvents:
    """espeak-ng's own word onsets, from its library's synthesis callback (the program has no way to print them)."""

    def __init__(self, wpm: int) -> None:
        try:
            ctypes.CDLL("libespeak-ng.so.1")
        except OSError as exc:
            raise Unavailable(f"libespeak-ng.so.1 cannot be loaded ({exc}): apt-get install espeak-ng") from None
        self.wpm = wpm

    def onsets(self, text: str, samples: np.ndarray, sample_rate: int) -> list[float | None]:
        """Each caption word's exact onset (s; None where espeak-ng reported no word inside it), checking that the
        library's audio is `samples` (the narrator's WAV) sample for sample."""
        import hashlib
        import subprocess

        from studio.voice.timing import split_words

        out = subprocess.run([sys.executable, __file__, "--espeak-events", str(self.wpm)], input=text.encode("utf-8"),
                             capture_output=True, check=True, timeout=120).stdout
        found = json.loads(out)
        pcm = np.round(samples[: found["samples"]] * 32768.0).astype("<i2")
        if found["rate"] != sample_rate or hashlib.sha256(pcm.tobytes()).hexdigest() != found["sha256"]:
            raise SystemExit("espeak-ng's library and program made different audio for the same text: "
                             "the exact onsets would not belong to the WAV")
        spans, at = [], 0
        for word in split_words(text):
            first = text.find(word.split()[0], at)
            spans.append((first, first + len(word)))
            at = first + len(word.split()[0])
        onsets = []
        for begin, end in spans:
            inside = [sample for position, sample in found["events"] if begin <= position < end]
            onsets.append(min(inside) / sample_rate if inside else None)
        return onsets


# -- measuring --------------------------------------------------------------------------------------------------------
def _measure(voice: str, cases) -> list[dict]:
    """Onset errors per source for one voice: all words, and caption starts."""
    from studio.compose.captions import TimedWord, caption_layout, group_words
    from studio.voice.align import align
    from studio.voice.timing import read_wav

    layout = caption_layout("bold", (1280, 720))
    errors = {src: {"words": [], "captions": []} for src in ("estimate", "aligned")}
    unaligned, align_s, speak_s, audio_s = 0, 0.0, 0.0, 0.0
    for text, wav, exact, estimated, took in cases:
        samples, rate = read_wav(wav)
        audio_s += len(samples) / rate
        speak_s += took
        start = time.perf_counter()
        alignment = align(text, wav, "en")
        align_s += time.perf_counter() - start
        sources = {"estimate": list(estimated)}
        if alignment is None:
            unaligned += 1
        else:
            sources["aligned"] = list(alignment.words)
        for src, words in sources.items():
            assert len(words) == len(exact), (src, text)
            errors[src]["words"] += [w.start_s - e for w, e in zip(words, exact) if e is not None]
            timed = [TimedWord(w.word, w.start_s, w.end_s) for w in words]
            events = group_words(layout, timed, window_end_s=len(samples) / rate + 0.5)
            starts = [w.start_s for w in words]
            k = 0
            for event in events:  # the first word of each caption: the next word starting where the caption does
                while k < len(starts) and abs(starts[k] - event.start_s) > 1e-9:
                    k += 1
                if k < len(starts) and exact[k] is not None:
                    errors[src]["captions"].append(event.start_s - exact[k])
    rows = []
    for src, by in errors.items():
        for what, values in by.items():
            e = np.array(values) * 1000.0
            rows.append({
                "voice": voice, "source": src, "what": what, "n": len(e),
                "median_ms": float(np.median(np.abs(e))) if len(e) else None,
                "p95_ms": float(np.percentile(np.abs(e), 95)) if len(e) else None,
                "max_ms": float(np.max(np.abs(e))) if len(e) else None,
                "signed_median_ms": float(np.median(e)) if len(e) else None,
                "scenes": len(cases), "unaligned_scenes": unaligned, "audio_s": audio_s,
                "align_s": align_s, "speak_s": speak_s,
            })
    return rows


def _print(rows: list[dict]) -> None:
    print("\n| voice | source | onsets of | n | median | p95 | max | signed median | scenes not aligned | align time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["n"]:
            print(f"| {r['voice']} | {r['source']} | {r['what']} | 0 | - | - | - | - | {r['unaligned_scenes']} | - |")
            continue
        print(f"| {r['voice']} | {r['source']} | {r['what']} | {r['n']} | {r['median_ms']:.0f} ms | "
              f"{r['p95_ms']:.0f} ms | {r['max_ms']:.0f} ms | {r['signed_median_ms']:+.0f} ms | "
              f"{r['unaligned_scenes']} of {r['scenes']} | "
              f"{r['align_s']:.2f} s for {r['audio_s']:.0f} s of audio |", flush=True)


if __name__ == "__main__":
    main()
