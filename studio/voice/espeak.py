"""espeak-ng: a small, robotic but dependable offline voice for over a hundred languages (Debian package ``espeak-ng``).

The ``espeak-ng`` program is run with an argument list and the text on stdin, so any text is safe. Word timings are
estimated from the audio (`estimate_word_timings`), weighted by the phonemes espeak-ng itself gives each word.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import unicodedata
from pathlib import Path

import numpy as np

from ..assets import atomic_path
from ..errors import Cancelled, ProviderUnavailable, StudioError
from ..progress import CancelToken, check
from ..project import WordTiming
from ..providers import register
from . import Speech
from .scripts import SCRIPT_VOICES, reads_script, word_script
from .timing import estimate_word_timings, estimate_word_weight, read_wav, split_words

INSTALL_HINT = "install espeak-ng: apt-get install espeak-ng"
# espeak-ng voice names: "en-us", "fr", "en-us+f3" (a variant), "mb/mb-en1"; never starting with "-" (an option).
VOICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}(/[A-Za-z0-9][A-Za-z0-9_-]{0,30})?(\+[A-Za-z0-9_-]{1,30})?$")
TIMEOUT_S = 600.0
# Languages whose bare code espeak-ng reads with a voice other than the one a user most likely means.
_DEFAULT_VOICES = {"en": "en-us"}


def _exe() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ProviderUnavailable(INSTALL_HINT)
    return exe


def _check() -> str:
    _exe()
    return "espeak-ng formant voice"


@functools.lru_cache(maxsize=4)
def espeak_version(exe: str) -> str:
    """The installed espeak-ng's version (part of the asset cache key: another version sounds different)."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StudioError(f"espeak-ng at {exe} does not run: {exc}; {INSTALL_HINT}") from exc
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
    return match.group(1) if match else "unknown"


@functools.lru_cache(maxsize=4)
def espeak_languages(exe: str) -> frozenset[str]:
    """The language codes the installed espeak-ng has voices for (``en-us``, ``cmn``, and the aliases it lists
    beside them: ``en``, ``zh``), lower case."""
    try:
        out = subprocess.run([exe, "--voices"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StudioError(f"espeak-ng at {exe} does not run: {exc}; {INSTALL_HINT}") from exc
    codes: set[str] = set()
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            codes.add(fields[1].lower())
        codes.update(code.lower() for code in re.findall(r"\(([A-Za-z0-9-]+) \d+\)", line))
    return frozenset(codes)


def _speaks(language: str) -> bool:
    """Whether espeak-ng has a voice for `language` (its code, or its primary subtag: ``pt-BR``, ``fr``, ``zh``)."""
    codes = espeak_languages(_exe())
    code = (language or "en").strip().replace("_", "-").lower()
    if code in codes or code.split("-")[0] in codes:
        return True
    raise ProviderUnavailable(f"espeak-ng has no voice for {language!r} (list them with `espeak-ng --voices`)")


@register("narrator", "espeak", check=_check, description="espeak-ng formant voice, offline, many languages",
          speaks=_speaks)
def espeak(speed_wpm: int = 165) -> "EspeakNarrator":
    """An espeak-ng narrator.

    Args:
        speed_wpm: Speaking rate in words per minute (80-450).
    """
    if not isinstance(speed_wpm, int) or isinstance(speed_wpm, bool) or not 80 <= speed_wpm <= 450:
        raise StudioError(f"`speed_wpm` must be a whole number from 80 to 450, got {speed_wpm!r}")
    return EspeakNarrator(speed_wpm=speed_wpm)


def voice_for(voice: str | None, language: str) -> str:
    """The espeak-ng voice to use: `voice` if given, else one for `language`; checked against `VOICE_RE`."""
    if voice:
        name, what = voice.strip(), "`voice`"
    else:
        code = (language or "en").strip().replace("_", "-").lower()
        name, what = _DEFAULT_VOICES.get(code, code), "`language`"
    if not VOICE_RE.match(name):
        raise StudioError(f"{what} {name!r} is not an espeak-ng voice name (like 'en-us', 'fr' or 'en-us+f3'); "
                          "list them with `espeak-ng --voices`")
    return name


class EspeakNarrator:
    """Speaks with the ``espeak-ng`` program."""

    name = "espeak"
    hooks = frozenset()  # optional hooks it implements (studio.providers.HOOKS)

    def __init__(self, speed_wpm: int = 165) -> None:
        self.exe = _exe()
        self.speed_wpm = speed_wpm
        self.model = f"espeak-ng-{espeak_version(self.exe)}@{speed_wpm}wpm"

    def speak(self, text: str, *, voice: str | None = None, seed: int = 0, language: str = "en", out: Path,
              cancel: CancelToken | None = None) -> Speech:
        """Say `text` into a 16-bit mono WAV at `out` (written atomically).

        Args:
            text: What to say; passed on stdin, never on the command line.
            voice: An espeak-ng voice name (``en-us``, ``fr``, ``en-us+f3``); None picks one for `language`.
            seed: Ignored: espeak-ng is deterministic.
            language: The text's language (``en``, ``fr``, ``pt-br``...), used when `voice` is None.
            out: Where to write the WAV.
            cancel: Stops espeak-ng at once when cancelled.

        Returns:
            The `Speech`, with estimated word timings.
        """
        # 1. Check inputs
        if not text or not text.strip():
            raise StudioError("`text` is empty: there is nothing to say")
        name = voice_for(voice, language)
        check(cancel)
        out = Path(out)

        # 2. A narration that mixes in another script ("Tokyo 東京" in English) speaks each run of it with a voice
        #    for that script: an English voice reads Chinese as "Chinese letter" for every character.
        runs = script_runs(text, language, name, espeak_languages(self.exe))
        if len(runs) > 1:
            return self._speak_runs(runs, out, cancel)

        # 3. Synthesize into a temporary file beside `out`
        with atomic_path(out) as tmp:
            # espeak-ng keeps only the first 199 characters of a `-w` path (and writes to the truncated name), so it
            # runs in the file's folder and gets the short name alone.
            self._run(["-v", name, "-s", str(self.speed_wpm), "-w", Path(tmp).name], text, name, cancel,
                      cwd=Path(tmp).parent)
            samples, sample_rate = read_wav(tmp)
            if not len(samples):
                raise StudioError(f"espeak-ng produced no audio for {text[:60]!r} with voice {name!r}")

            # 4. Word timings from the audio, weighted by espeak-ng's own phonemes for each word
            words = split_words(text)
            weights = self._phoneme_counts(words, name, cancel)
            timings = estimate_word_timings(text, samples, sample_rate, weights=weights)
        return Speech(duration_s=len(samples) / sample_rate, words=timings, sample_rate=sample_rate,
                      timing_source="estimated")

    def _speak_runs(self, runs: list[tuple[str, str]], out: Path, cancel: CancelToken | None) -> Speech:
        """Say each (voice, text) run into its own WAV, then join them into `out`; the word timings of each run are
        estimated on its own audio and moved to where it starts."""
        import tempfile

        from ..media import write_wav

        pieces: list[np.ndarray] = []
        timings: list[WordTiming] = []
        sample_rate = 0
        offset = 0
        with tempfile.TemporaryDirectory(prefix=".runs-", dir=out.parent) as folder:
            for index, (voice, text) in enumerate(runs):
                check(cancel)
                wav = Path(folder) / f"{index}.wav"
                self._run(["-v", voice, "-s", str(self.speed_wpm), "-w", wav.name], text, voice, cancel, cwd=Path(folder))
                samples, rate = read_wav(wav)
                if sample_rate and rate != sample_rate:  # espeak-ng voices share one rate; resample if one did not
                    samples = np.interp(np.arange(0, len(samples), rate / sample_rate), np.arange(len(samples)),
                                        samples).astype(np.float32)
                    rate = sample_rate
                sample_rate = rate
                samples = _trim(samples, rate, start=index > 0, end=index < len(runs) - 1)
                if len(samples):
                    weights = self._phoneme_counts(split_words(text), voice, cancel)
                    for t in estimate_word_timings(text, samples, rate, weights=weights):
                        timings.append(WordTiming(t.word, round(t.start_s + offset / rate, 4),
                                                  round(t.end_s + offset / rate, 4)))
                else:  # nothing said: the run's words are points where it would have been
                    timings.extend(WordTiming(w, round(offset / max(rate, 1), 4), round(offset / max(rate, 1), 4))
                                   for w in split_words(text))
                pieces.append(samples)
                offset += len(samples)
        samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        if not len(samples):
            raise StudioError(f"espeak-ng produced no audio for {runs[0][1][:60]!r}")
        write_wav(out, samples, sample_rate)
        return Speech(duration_s=len(samples) / sample_rate, words=tuple(timings), sample_rate=sample_rate,
                      timing_source="estimated")

    def _run(self, args: list[str], text: str, voice: str, cancel: CancelToken | None, cwd: Path | None = None) -> bytes:
        """Run espeak-ng with `text` on stdin (UTF-8); returns its stdout. A cancel kills it at once."""
        proc = subprocess.Popen([self.exe, "-b", "1", "--stdin", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, cwd=cwd)

        def kill() -> None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

        unregister = cancel.on_cancel(kill) if cancel is not None else (lambda: None)
        try:
            stdout, stderr = proc.communicate(text.encode("utf-8"), timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill()
            proc.communicate()
            raise StudioError(f"espeak-ng took longer than {TIMEOUT_S:.0f} s; shorten the text") from None
        finally:
            unregister()
        if cancel is not None and cancel.cancelled:
            raise Cancelled()
        message = stderr.decode("utf-8", "replace").strip()
        if proc.returncode != 0 or "does not exist" in message:
            if "voice" in message.lower():
                raise StudioError(f"espeak-ng has no voice {voice!r}: choose another `voice` or `language` "
                                  "(list them with `espeak-ng --voices`)")
            raise StudioError(f"espeak-ng failed (exit code {proc.returncode}): {message or 'no message'}")
        return stdout

    def _phoneme_counts(self, words: list[str], voice: str, cancel: CancelToken | None) -> list[float] | None:
        """Phonemes espeak-ng says for each word (one clause per word, one line of IPA per clause); None if the
        lines do not match the words up, and the caller estimates from letters instead."""
        cores = [_core(word) for word in words]
        spoken = [c for c in cores if c]
        if not spoken:
            return None
        stdout = self._run(["-q", "--ipa", "-v", voice], "".join(f"{c}.\n" for c in spoken), voice, cancel)
        lines = stdout.decode("utf-8", "replace").splitlines()
        if len(lines) != len(spoken):
            return None
        counts = iter(_count_phonemes(line) for line in lines)
        weights = [float(next(counts)) if core else 0.0 for core in cores]
        # A word espeak-ng could not phonemize alone keeps a letter-based estimate rather than no time at all.
        return [w if w > 0 else estimate_word_weight(word) for w, word in zip(weights, words)]


_JOIN_GAP_S = 0.06  # silence kept at each side of a join between runs (espeak-ng pads every utterance much more)


def _trim(samples: np.ndarray, rate: int, *, start: bool, end: bool) -> np.ndarray:
    """A run's audio without the silence espeak-ng puts before (`start`) and after (`end`) every utterance, less a
    short gap, so runs join like words of one sentence."""
    loud = np.nonzero(np.abs(samples) > 0.02 * max(float(np.max(np.abs(samples))) if len(samples) else 0.0, 1e-6))[0]
    if not len(loud):
        return samples
    gap = int(_JOIN_GAP_S * rate)
    a = max(0, loud[0] - gap) if start else 0
    b = min(len(samples), loud[-1] + gap) if end else len(samples)
    return samples[a:b]


def script_runs(text: str, language: str, voice: str, languages: frozenset[str] | set[str]) -> list[tuple[str, str]]:
    """`text` cut, between words, into (espeak-ng voice, text) runs: words in a script the narration's voice does
    not read (Chinese in an English narration) get the voice for that script (`SCRIPT_VOICES`), where espeak-ng has
    it; the rest keep `voice`. One run, ``[(voice, text)]``, for a narration in one script.

    Args:
        text: The narration.
        language: The narration's language (its voice reads that language's scripts).
        voice: The narration's espeak-ng voice.
        languages: The codes espeak-ng has voices for (`espeak_languages`).
    """
    from .normalise import _locate

    words = split_words(text)
    chosen = []
    for word in words:
        script = word_script(word)
        other = SCRIPT_VOICES.get(script)
        chosen.append(other if not reads_script(language, script) and other in languages else voice)
    if len(set(chosen)) <= 1:
        return [(voice, text)]
    spans = _locate(text, words)
    runs: list[tuple[str, str]] = []
    start = 0
    for k in range(1, len(words) + 1):
        if k == len(words) or chosen[k] != chosen[start]:
            runs.append((chosen[start], text[spans[start][0]:spans[k - 1][1]]))
            start = k
    return runs


def _core(word: str) -> str:
    """A word without the punctuation that would split it into clauses (kept: ' and ’, and . , between digits)."""
    chars = []
    for i, c in enumerate(word):
        keep = not unicodedata.category(c).startswith("P") or c in "'’%&#@"
        if c in ".," and 0 < i < len(word) - 1 and word[i - 1].isdigit() and word[i + 1].isdigit():
            keep = True
        chars.append(c if keep else " ")
    return " ".join("".join(chars).split())


def _count_phonemes(ipa: str) -> int:
    """Phoneme symbols in a line of espeak-ng IPA (stress, length marks, spaces and pauses not counted)."""
    return sum(unicodedata.category(c) in ("Ll", "Lu", "Lo") for c in unicodedata.normalize("NFD", ipa))
