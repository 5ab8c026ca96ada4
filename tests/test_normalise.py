"""Numbers, dates, money, units and abbreviations read as a person reads them (issue 14): the spoken forms per
language, the written words keeping their timings (captions show "1822" while the voice says "eighteen twenty-two"),
espeak-ng really saying the spoken form, the cache key, and narrators that read numbers themselves."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from studio import Project, Scene, providers
from studio.assets import AssetStore
from studio.project import WordTiming
from studio.voice import narrate
from studio.voice.normalise import fold_timings, reading, spoken_words
from studio.voice.timing import split_words

pytest.importorskip("num2words", reason="num2words is a core dependency: pip install -r requirements.txt")


def said(text: str, language: str = "en") -> str:
    return reading(text, language).text


# -- spoken forms ---------------------------------------------------------------------------------------------------
ENGLISH = [
    ("In 1822 the ship sailed.", "In eighteen twenty-two the ship sailed."),
    ("It weighs 3.5 kg.", "It weighs three point five kilograms."),
    ("It weighs 1 kg, or 3.5kg.", "It weighs one kilogram, or three point five kilograms."),
    ("It costs $4.20.", "It costs four dollars and twenty cents."),
    ("$1, $0.50, £3 and $5m", "one dollar, fifty cents, three pounds and five million dollars"),
    ("Dr. Smith met Mr. Jones.", "Doctor Smith met Mister Jones."),
    ("The 21st century, the 2nd and 3rd.", "The twenty-first century, the second and third."),
    ("At 10:30, 10:05 or 10:00.", "At ten thirty, ten oh five or ten o'clock."),
    ("At 9:15 pm or 7 a.m. sharp.", "At nine fifteen p m or seven a m sharp."),
    ("About 50% of them.", "About fifty percent of them."),
    ("1,000,000 people", "one million people"),
    ("In the 1990s and the '80s.", "In the nineteen nineties and the eighties."),
    ("On 2021-05-03.", "On May third, twenty twenty-one."),
    ("On 3 May 2021, or May 3.", "On the third of May twenty twenty-one, or May third."),
    ("From 1990-2000, e.g. wars, etc. The end.", "From nineteen ninety to two thousand, for example wars, et cetera. The end."),
    ("It is 20°C, -5 and 2.718, code 007.", "It is twenty degrees Celsius, minus five and two point seven one eight, code zero zero seven."),
    ("No. 5 & 12 km/h", "number five and twelve kilometres per hour"),
    ("St. Patrick lived on Baker St. there.", "Saint Patrick lived on Baker Street there."),
]
OTHER = [
    ("fr", "En 1822, il a payé 4,20 €.", "En mille huit cent vingt-deux, il a payé quatre euros vingt."),
    ("fr", "Le 21e siècle, le 1er mai, 1 000 000 d'habitants.",
     "Le vingt et unième siècle, le premier mai, un million d'habitants."),
    ("fr", "À 10h30, 3,5 kg, 50 %, M. Dupont.", "À dix heures trente, trois virgule cinq kilogrammes, cinquante pour cent, "
                                                "Monsieur Dupont."),
    ("de", "Im Jahr 1822 kostete es 4,20 € und 1.000.000 Euro.",
     "Im Jahr achtzehnhundertzweiundzwanzig kostete es vier Euro zwanzig und eine Million Euro."),
    ("de", "Am 3. Mai um 10:30 Uhr, z. B. im 21. Jahrhundert.",
     "Am dritten Mai um zehn Uhr dreißig, zum Beispiel im einundzwanzigsten Jahrhundert."),
    ("es", "En 1822 pagó 4,20 € y 1.000.000 de euros.",
     "En mil ochocientos veintidós pagó cuatro euros con veinte y un millón de euros."),
    ("es", "La 1ª vez, el 2º día, a las 10:30, el Sr. García.",
     "La primera vez, el segundo día, a las diez y treinta, el señor García."),
    ("it", "Nel 1822 aveva 3 gatti.", "Nel milleottocentoventidue aveva tre gatti."),  # plain numbers elsewhere
]


@pytest.mark.parametrize("written, spoken", ENGLISH)
def test_english_is_read_as_a_person_reads_it(written, spoken):
    assert said(written) == spoken


@pytest.mark.parametrize("language, written, spoken", OTHER)
def test_french_german_spanish_numbers_ordinals_years_and_money(language, written, spoken):
    assert said(written, language) == spoken


def test_one_spoken_string_per_written_word_and_plain_text_untouched():
    words = split_words("It weighs 3.5 kg and costs 4,20 € today, Dr. Who said.")
    spoken = spoken_words(words, "en")
    assert len(spoken) == len(words)
    # A pattern over two words gives each its part where the order allows...
    assert spoken[2:4] == ["three point five", "kilograms"]
    assert spoken[9] == "Doctor"
    # ... else everything to the first word and "" to the rest ("quatre euros vingt": the currency comes between).
    fr = spoken_words(["coûte", "4,20", "€."], "fr")
    assert fr == ["coûte", "quatre euros vingt.", ""]
    plain = split_words("Nothing here needs reading out, “quoted” (bracketed) — fine.")
    assert spoken_words(plain, "en") == plain and said(" ".join(plain)) == " ".join(plain)
    assert spoken_words(["東京", "2021"], "xx") == ["東京", "2021"]  # a language nobody knows: as written


def test_the_year_rule_and_its_limits():
    assert said("1066") == "ten sixty-six" and said("2000") == "two thousand" and said("2021") == "twenty twenty-one"
    assert said("1,822") == "one thousand, eight hundred and twenty-two"  # a separator: a quantity, not a year
    assert said("2150") == "two thousand, one hundred and fifty"  # past 2099: a quantity
    assert said("12345") == "twelve thousand, three hundred and forty-five"
    # "No." is "number" only before a number; a title before a name only.
    assert said("The answer is No. Then we left.") == "The answer is No. Then we left."


# -- timings fold back onto the written words ------------------------------------------------------------------------
def _timed(text: str, step: float = 0.5) -> tuple[WordTiming, ...]:
    """Evenly spaced timings for the words of `text` (what a narrator returns for the spoken text)."""
    return tuple(WordTiming(w, k * step, k * step + 0.4) for k, w in enumerate(split_words(text)))


def test_written_words_span_the_timings_of_their_spoken_words():
    r = reading("In 1822, it weighed 3.5 kg.", "en")
    assert r.written == ("In", "1822,", "it", "weighed", "3.5", "kg.")
    assert r.text == "In eighteen twenty-two, it weighed three point five kilograms."
    spoken = _timed(r.text)
    words = fold_timings(r, spoken)
    assert [w.word for w in words] == list(r.written)
    by_word = {w.word: w for w in words}
    # "1822," spans "eighteen twenty-two," (spoken words 1-2); "3.5" spans "three point five" (5-7)
    assert (by_word["1822,"].start_s, by_word["1822,"].end_s) == (spoken[1].start_s, spoken[2].end_s)
    assert (by_word["3.5"].start_s, by_word["3.5"].end_s) == (spoken[5].start_s, spoken[7].end_s)
    assert (by_word["kg."].start_s, by_word["kg."].end_s) == (spoken[8].start_s, spoken[8].end_s)
    # Together they cover the speech from its first to its last spoken word, in order.
    assert words[0].start_s == spoken[0].start_s and words[-1].end_s == spoken[-1].end_s
    assert all(a.end_s <= b.start_s + 1e-9 and a.start_s <= a.end_s for a, b in zip(words, words[1:]))


def test_words_said_by_the_word_before_share_its_time():
    r = reading("Il paie 4,20 € maintenant.", "fr")
    assert r.text == "Il paie quatre euros vingt maintenant."
    spoken = _timed(r.text)
    words = fold_timings(r, spoken)
    assert [w.word for w in words] == ["Il", "paie", "4,20", "€", "maintenant."]
    money = (spoken[2].start_s, spoken[4].end_s)  # "quatre euros vingt"
    assert words[2].start_s == money[0] and words[3].end_s == pytest.approx(money[1])
    assert words[2].end_s == pytest.approx(words[3].start_s) and words[2].end_s - words[2].start_s > words[3].end_s - words[3].start_s
    assert words[4].start_s == spoken[5].start_s


def test_fold_keeps_going_when_the_narrator_returns_other_words():
    """An aligner that merged or renamed words: the written words still get ordered timings inside the speech."""
    r = reading("In 1822 it rained.", "en")
    odd = (WordTiming("In eighteen", 0.0, 0.8), WordTiming("twenty two", 0.9, 1.6), WordTiming("it rained.", 1.7, 2.5))
    words = fold_timings(r, odd)
    assert [w.word for w in words] == ["In", "1822", "it", "rained."]
    assert words[0].start_s >= 0.0 and words[-1].end_s <= 2.5
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(words, words[1:]))


def test_chinese_is_joined_without_spaces_when_numbers_are_read():
    r = reading("我在2021年去了东京。", "ja")  # num2words reads Japanese numbers
    assert " " not in r.text.strip() and "2021" not in r.text
    assert [r.text[a:b] for a, b in r.spans][0] == "我在"


# -- narration --------------------------------------------------------------------------------------------------------
def _espeak():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is missing: apt-get install espeak-ng")
    return shutil.which("espeak-ng")


def _ipa(exe: str, text: str, voice: str = "en-us") -> str:
    return subprocess.run([exe, "-q", "--ipa", "-v", voice, text], capture_output=True, text=True, timeout=60).stdout.strip()


def test_espeak_says_the_year_form_not_one_thousand_eight_hundred():
    exe = _espeak()
    text = "In 1822, Dr. Smith paid $4.20."
    heard, expected = _ipa(exe, said(text)), _ipa(exe, "In eighteen twenty-two, Doctor Smith paid four dollars and twenty cents.")
    assert heard == expected
    assert "θˈaʊzənd" in _ipa(exe, text) and "θˈaʊzənd" not in heard  # unnormalised espeak says "thousand"
    # German years are said in hundreds ("achtzehnhundert..."), which espeak-ng's German does not do by itself.
    assert _ipa(exe, said("Im Jahr 1822.", "de"), "de") == _ipa(exe, "Im Jahr achtzehnhundertzweiundzwanzig.", "de")
    assert _ipa(exe, "Im Jahr 1822.", "de") != _ipa(exe, "Im Jahr achtzehnhundertzweiundzwanzig.", "de")


@pytest.fixture
def years(tmp_path) -> Project:
    scenes = (Scene("a", "In 1822, it weighed 3.5 kg."), Scene("b", "Plain words only."))
    return Project(title="Years", scenes=scenes).save(tmp_path / "proj")


def test_narrate_speaks_the_spoken_form_and_captions_keep_the_written_words(years, tmp_path):
    _espeak()
    store = AssetStore(years.assets_dir)
    done = narrate(years, narrator="espeak", store=store)
    scene = done.scene("a")
    assert [w.word for w in scene.words] == ["In", "1822,", "it", "weighed", "3.5", "kg."]
    assert scene.words[-1].end_s <= scene.audio_duration_s + 1e-6
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(scene.words, scene.words[1:]))
    meta = store.read_meta(next(p.stem for p in years.assets_dir.glob("*.wav") if _meta_text(store, p.stem) == scene.narration))
    assert meta["spoken"] == "In eighteen twenty-two, it weighed three point five kilograms."
    # The written form said by espeak-ng takes longer ("one thousand eight hundred and twenty-two").
    speaker, _ = providers.create("narrator", "espeak")
    raw = speaker.speak(scene.narration, voice=None, seed=0, language="en", out=tmp_path / "raw.wav")
    assert raw.duration_s > scene.audio_duration_s + 0.3, (raw.duration_s, scene.audio_duration_s)
    # "1822," lasts about as long as espeak-ng takes for "eighteen twenty-two,"
    alone = speaker.speak("eighteen twenty-two", voice=None, seed=0, language="en", out=tmp_path / "year.wav")
    year = scene.words[1]
    assert 0.5 * alone.duration_s < year.end_s - year.start_s < 1.5 * alone.duration_s

    # The cache key has the normaliser's version: same text again is reused, another version speaks again.
    again = AssetStore(years.assets_dir)
    narrate(years, narrator="espeak", store=again)
    assert again.reused == 2 and again.made == 0
    bumped = AssetStore(years.assets_dir)
    with pytest.MonkeyPatch.context() as patch:
        import studio.voice as voice

        patch.setattr(voice, "NORMALISER_VERSION", "test-bump")
        narrate(years, narrator="espeak", store=bumped)
    assert bumped.made == 2


def _meta_text(store: AssetStore, key: str) -> str | None:
    meta = store.read_meta(key)
    return meta.get("text") if meta else None


class _Recorder:
    """A narrator that records the text it is given (and, with ``normalises``, reads numbers itself)."""

    name = "recorder"
    model = "recorder-1"

    def __init__(self, normalises: bool) -> None:
        self.hooks = frozenset({"normalises"}) if normalises else frozenset()
        self.heard: list[str] = []

    def speak(self, text, *, voice, seed, language, out, cancel=None):
        from studio.media import write_wav
        from studio.voice import Speech

        import numpy as np

        self.heard.append(text)
        write_wav(out, np.zeros(22050, np.float32), 22050)
        words = tuple(WordTiming(w, k * 0.1, k * 0.1 + 0.08) for k, w in enumerate(split_words(text)))
        return Speech(duration_s=1.0, words=words, sample_rate=22050, timing_source="estimated")


@pytest.mark.parametrize("reads_numbers", [False, True])
def test_a_narrator_that_reads_numbers_itself_gets_the_written_text(years, reads_numbers):
    recorder = _Recorder(reads_numbers)
    providers.register("narrator", "recorder")(lambda: recorder)
    try:
        done = narrate(years, narrator="recorder")
    finally:
        providers._REGISTRY["narrator"].pop("recorder", None)
        providers.release("narrator", "recorder")
    expected = "In 1822, it weighed 3.5 kg." if reads_numbers else "In eighteen twenty-two, it weighed three point five kilograms."
    assert recorder.heard[0] == expected
    assert [w.word for w in done.scene("a").words] == ["In", "1822,", "it", "weighed", "3.5", "kg."]
