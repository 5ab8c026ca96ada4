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

from ..assets import atomic_path
from ..errors import Cancelled, ProviderUnavailable, StudioError
from ..progress import CancelToken, check
from ..providers import register
from . import Speech
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


@register("narrator", "espeak", check=_check, description="espeak-ng formant voice, offline, many languages")
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

        # 2. Synthesize into a temporary file beside `out`
        with atomic_path(out) as tmp:
            # espeak-ng keeps only the first 199 characters of a `-w` path (and writes to the truncated name), so it
            # runs in the file's folder and gets the short name alone.
            self._run(["-v", name, "-s", str(self.speed_wpm), "-w", Path(tmp).name], text, name, cancel,
                      cwd=Path(tmp).parent)
            samples, sample_rate = read_wav(tmp)
            if not len(samples):
                raise StudioError(f"espeak-ng produced no audio for {text[:60]!r} with voice {name!r}")

            # 3. Word timings from the audio, weighted by espeak-ng's own phonemes for each word
            words = split_words(text)
            weights = self._phoneme_counts(words, name, cancel)
            timings = estimate_word_timings(text, samples, sample_rate, weights=weights)
        return Speech(duration_s=len(samples) / sample_rate, words=timings, sample_rate=sample_rate,
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
