"""Which scripts a voice reads: a narration that mixes in another script (Chinese characters in English) is read
with a voice for that script (espeak-ng) or left out and flagged (a voice that speaks one language, such as Piper's).

Latin letters, digits and punctuation count as readable by every voice (espeak-ng and Piper read Latin words in any
language); other scripts only by the languages written in them.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["SCRIPT_VOICES", "reads_script", "word_script", "unreadable_runs"]

# The espeak-ng voice that reads each script best, for runs of it inside a narration in another language.
SCRIPT_VOICES = {"Han": "cmn", "Kana": "ja", "Hangul": "ko", "Arabic": "ar", "Hebrew": "he", "Cyrillic": "ru",
                 "Greek": "el", "Devanagari": "hi", "Thai": "th", "Bengali": "bn", "Tamil": "ta", "Armenian": "hy",
                 "Georgian": "ka", "Telugu": "te", "Kannada": "kn", "Malayalam": "ml", "Gujarati": "gu",
                 "Gurmukhi": "pa", "Sinhala": "si", "Ethiopic": "am", "Myanmar": "my", "Oriya": "or"}
# Languages that read a script besides the one `SCRIPT_VOICES` names them for.
_NATIVE = {"Cyrillic": {"uk", "bg", "be", "sr", "mk", "kk", "ky", "tt", "ba", "cv", "nog"},
           "Arabic": {"fa", "ur", "ug", "sd", "ps", "ku"}, "Han": {"zh", "yue", "hak", "ja", "ko"},
           "Kana": {"ja"}, "Greek": {"grc"}, "Devanagari": {"mr", "ne", "kok", "sa"}, "Bengali": {"as", "bpy"},
           "Hebrew": {"yi"}}


def reads_script(language: str, script: str) -> bool:
    """Whether a voice for `language` (``en``, ``pt-BR``, ``cmn``) reads `script` (a `studio.fonts.script_of` name)."""
    if script in ("Latin", "common", "symbols", "emoji") or script.startswith("U+"):
        return True
    primary = (language or "en").strip().replace("_", "-").lower().split("-")[0]
    return SCRIPT_VOICES.get(script) == primary or primary in _NATIVE.get(script, ())


def word_script(word: str) -> str:
    """The script most of a word's letters are written in (``common`` for digits and punctuation)."""
    from ..fonts import script_of

    counts: dict[str, int] = {}
    for ch in word:
        if ch.isalpha():
            script = script_of(ch)
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.get) if counts else "common"


def unreadable_runs(words: Sequence[str], language: str) -> list[tuple[int, int, str]]:
    """(first, end, script) of each run of consecutive words in a script a voice for `language` does not read."""
    runs: list[tuple[int, int, str]] = []
    for index, word in enumerate(words):
        script = word_script(word)
        if reads_script(language, script):
            continue
        if runs and runs[-1][1] == index and runs[-1][2] == script:
            runs[-1] = (runs[-1][0], index + 1, script)
        else:
            runs.append((index, index + 1, script))
    return runs
