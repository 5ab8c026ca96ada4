"""Forced alignment of the known text (`studio.voice.align`): real espeak-ng speech aligned by pocketsphinx, and the
narrate step keeping aligned timings for narrators without engine timings."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from studio import Cancelled, CancelToken, Project, Scene
from studio.assets import AssetStore
from studio.media import write_wav
from studio.voice import narrate
from studio.voice.align import Alignment, align, aligner_for, ipa_to_arpabet, letters_to_arpabet
from studio.voice.timing import estimate_word_timings, read_wav, split_words

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
needs_pocketsphinx = pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None,
                                        reason="pocketsphinx is not installed (requirements.txt has it)")

WORDS = "The river carried 12 small boats past Studio's old mill before the evening storm arrived.".split()
GAPS_S = (0.05, 0.12, 0.03, 0.2, 0.08, 0.15, 0.04, 0.1, 0.06, 0.18, 0.07, 0.09, 0.05, 0.11)


def _say(text: str, out: Path, speed_wpm: int = 165) -> Path:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed_wpm), "-w", str(out), text], check=True,
                   capture_output=True)
    return out


def _check(alignment: Alignment, text: str, wav: Path) -> None:
    """The Alignment contract: one timing per caption word, in order, monotonic, inside the WAV."""
    samples, rate = read_wav(wav)
    assert [w.word for w in alignment.words] == split_words(text)
    previous_end = 0.0
    for w in alignment.words:
        assert previous_end - 1e-6 <= w.start_s <= w.end_s <= len(samples) / rate + 1e-6, w
        previous_end = w.end_s
    assert alignment.aligner == aligner_for("en") and alignment.aligner.startswith("pocketsphinx-")


@pytest.fixture(scope="module")
def spaced_words(tmp_path_factory) -> tuple[Path, list[float]]:
    """Each word of WORDS spoken on its own by espeak-ng, trimmed to its sound, and joined with known silences:
    the WAV and every word's true onset (s)."""
    folder = tmp_path_factory.mktemp("spaced")
    chunks, onsets, at, rate = [], [], 0.3, 22050
    for i, word in enumerate(WORDS):
        samples, rate = read_wav(_say(word, folder / f"{i}.wav"))
        loud = np.flatnonzero(np.abs(samples) > 0.02 * np.abs(samples).max())
        chunks.append(samples[loud[0]:loud[-1] + 1])
        onsets.append(at)
        at += len(chunks[-1]) / rate + GAPS_S[i % len(GAPS_S)]
    audio = np.zeros(int((at + 0.3) * rate), np.float32)
    for onset, chunk in zip(onsets, chunks):
        first = int(round(onset * rate))
        audio[first:first + len(chunk)] = chunk
    write_wav(folder / "spaced.wav", audio, rate)
    return folder / "spaced.wav", onsets


@needs_espeak
@needs_pocketsphinx
def test_aligned_onsets_land_where_the_words_are_heard_and_beat_the_estimate(spaced_words):
    wav, onsets = spaced_words
    text = " ".join(WORDS)
    alignment = align(text, wav, "en")
    assert alignment is not None
    _check(alignment, text, wav)
    aligned = np.abs(np.array([w.start_s for w in alignment.words]) - onsets)
    samples, rate = read_wav(wav)
    estimated = np.abs(np.array([w.start_s for w in estimate_word_timings(text, samples, rate)]) - onsets)
    # Measured: median 13 ms (the estimate's: 185 ms); one word ("mill", whose long initial /m/ of a word said alone
    # pocketsphinx hears as silence) 123 ms late.
    assert np.median(aligned) <= 0.025, aligned
    assert np.mean(aligned <= 0.05) >= 0.9, aligned
    assert np.median(aligned) < np.median(estimated) / 3 and aligned.mean() < estimated.mean()


@needs_espeak
@needs_pocketsphinx
def test_words_outside_the_dictionary_still_get_one_timing_each(tmp_path):
    # "Kokoro" and "Zorblax" are not in the CMU dictionary, nor are "1,500", "R&D" or the possessive "Piper's"
    text = "Kokoro read 1,500 lines of R&D notes — Zorblax, Piper's rival, said “done”."
    wav = _say(text, tmp_path / "oov.wav")
    alignment = align(text, wav, "en-US")
    assert alignment is not None
    _check(alignment, text, wav)
    by_word = {w.word: w for w in alignment.words}
    for word in ("Kokoro", "1,500", "R&D", "Zorblax,", "Piper's"):
        assert by_word[word].end_s - by_word[word].start_s >= 0.15, by_word[word]  # each really spans its sound
    assert by_word["1,500"].end_s - by_word["1,500"].start_s > by_word["R&D"].end_s - by_word["R&D"].start_s


@needs_espeak
@needs_pocketsphinx
def test_audio_that_does_not_say_the_text_gives_none(tmp_path, caplog):
    text = "Studio turns a script into a video with narration and captions."
    other = _say("The weather in the mountains was cold and windy all week long.", tmp_path / "other.wav")
    half = _say("Studio turns a script into a video. The weather was cold and windy.", tmp_path / "half.wav")
    write_wav(tmp_path / "silence.wav", np.zeros(48000, np.float32), 16000)
    noise = np.random.default_rng(0).normal(0.0, 0.1, 48000).astype(np.float32)
    write_wav(tmp_path / "noise.wav", noise, 16000)
    for wav in (other, half, tmp_path / "silence.wav", tmp_path / "noise.wav"):
        assert align(text, wav, "en") is None, wav.name
    assert "does not match the text" in caplog.text
    write_wav(tmp_path / "blip.wav", np.zeros(400, np.float32), 16000)  # 25 ms: too short to hold any word
    assert align(text, tmp_path / "blip.wav", "en") is None
    assert align(text, tmp_path / "missing.wav", "en") is None  # unreadable audio is "could not align", not an error


@needs_espeak
@needs_pocketsphinx
def test_slower_speech_and_other_english_codes_align(tmp_path):
    text = "A recorded voice reads this sentence slowly and clearly."
    wav = _say(text, tmp_path / "slow.wav", speed_wpm=120)
    alignment = align(text, wav, "en_GB")
    assert alignment is not None
    _check(alignment, text, wav)
    fast = align(text, _say(text, tmp_path / "fast.wav", speed_wpm=220), "en")
    assert fast.words[-1].end_s < alignment.words[-1].end_s * 0.75  # the same words, said faster, end earlier


def test_languages_without_an_aligner_give_none(tmp_path):
    write_wav(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    for language in ("fr", "de", "zh", "", "english"):
        if aligner_for(language) is None:
            assert align("un deux trois", tmp_path / "a.wav", language) is None
    assert aligner_for("fr") is None or aligner_for("fr").startswith("ctc-")  # only with CTC weights on this machine
    assert align("", tmp_path / "a.wav", "en") is None  # no words, nothing to align


@needs_pocketsphinx
def test_cancel_raises(tmp_path):
    write_wav(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        align("one two three", tmp_path / "a.wav", "en", cancel=token)


def test_pronunciations_for_words_outside_the_dictionary():
    assert ipa_to_arpabet("θˈɔːt") == ["TH", "AO", "T"]
    assert ipa_to_arpabet("dʒˈʌdʒ") == ["JH", "AH", "JH"]
    assert ipa_to_arpabet("pˈaɪpɚz") == ["P", "AY", "P", "ER", "Z"]
    assert ipa_to_arpabet("twˈɛlv (fr)ʒə(en)") == ["T", "W", "EH", "L", "V", "ZH", "AH"]
    lookup = {"four": "F AO R", "two": "T UW"}.get
    assert letters_to_arpabet("shop", lookup) == ["SH", "AA", "P"]
    assert letters_to_arpabet("4k2", lookup) == ["F", "AO", "R", "K", "T", "UW"]
    assert letters_to_arpabet("café") == ["K", "AE", "F"]  # accent dropped, then the silent-e rule
    assert letters_to_arpabet("---") == []


# -- narrate() keeps aligned timings ----------------------------------------------------------------------------------
@needs_espeak
@needs_pocketsphinx
def test_narrate_with_espeak_records_aligned_timings_and_realigns_a_cached_asset(tmp_path):
    scenes = (Scene("a", "Studio's captions follow the voice."), Scene("b", "Twelve scenes, one video."))
    project = Project(title="Aligned", scenes=scenes).save(tmp_path / "proj")
    store = AssetStore(project.assets_dir)
    done = narrate(project, narrator="espeak", store=store)
    assert store.made == 2
    metas = sorted(project.assets_dir.glob("*.json"))
    assert len(metas) == 2
    for scene in done.scenes:
        meta = next(json.loads(m.read_text()) for m in metas if json.loads(m.read_text())["text"] == scene.narration)
        assert meta["timing_source"] == "aligned" and meta["aligner"] == aligner_for("en")
        expected = align(scene.narration, scene.audio, "en")
        assert scene.words == expected.words  # the scene carries the aligner's timings
        assert [w.word for w in scene.words] == split_words(scene.narration)

    # An asset timed by another aligner (or before aligners) is aligned again from its WAV, without speaking again
    path = next(m for m in metas if json.loads(m.read_text())["text"] == scenes[0].narration)
    meta = json.loads(path.read_text())
    stale = [[w, a + 0.4, b + 0.4] for w, a, b in meta["words"]]
    path.write_text(json.dumps({**meta, "timing_source": "estimated", "aligner": None, "words": stale}))
    wav = done.scene("a").audio
    mtime = wav.stat().st_mtime_ns
    again_store = AssetStore(project.assets_dir)
    again = narrate(project, narrator="espeak", store=again_store)
    assert again_store.made == 0 and wav.stat().st_mtime_ns == mtime  # nothing was spoken
    assert again.scene("a").words == done.scene("a").words
    rewritten = json.loads(path.read_text())
    assert rewritten["timing_source"] == "aligned" and rewritten["aligner"] == aligner_for("en")
    assert rewritten["words"] == meta["words"]


@needs_espeak
@needs_pocketsphinx
def test_narrate_keeps_the_estimate_when_alignment_fails(tmp_path, monkeypatch):
    import studio.voice.align as align_module

    project = Project(title="Estimate", scenes=(Scene("a", "Nothing to align here."),)).save(tmp_path / "proj")
    monkeypatch.setattr(align_module, "_align_pocketsphinx", lambda *args: None)
    done = narrate(project, narrator="espeak")
    meta = json.loads(next(project.assets_dir.glob("*.json")).read_text())
    assert meta["timing_source"] == "estimated" and meta["aligner"] is None
    assert meta["align_tried"] == aligner_for("en")  # not tried again with the same aligner
    assert [w.word for w in done.scene("a").words] == split_words("Nothing to align here.")


# -- the multilingual CTC aligner -------------------------------------------------------------------------------------
def test_ctc_viterbi_finds_the_known_path():
    from studio.voice.ctc import ctc_forced_align, token_spans

    # 8 frames, vocabulary {0: blank, 1: a, 2: b}; the frames clearly say: blank a a blank b b blank a
    best = [0, 1, 1, 0, 2, 2, 0, 1]
    probs = np.full((8, 3), 0.05)
    probs[np.arange(8), best] = 0.9
    path, total = ctc_forced_align(np.log(probs), [1, 2, 1], blank=0)
    assert path.tolist() == [-1, 0, 0, -1, 1, 1, -1, 2]
    assert total == pytest.approx(8 * np.log(0.9))
    assert token_spans(path, 3) == [(1, 2), (4, 5), (7, 7)]
    # A repeated token needs a blank between its two emissions, even where the frames prefer the token
    probs = np.full((4, 3), 0.05)
    probs[:, 1] = 0.9
    path, _ = ctc_forced_align(np.log(probs), [1, 1], blank=0)
    assert path.tolist() in ([0, -1, 1, 1], [0, 0, -1, 1])
    assert ctc_forced_align(np.log(probs[:2]), [1, 1], blank=0) is None  # too few frames: 2 tokens + 1 blank
    # The frames say "b" where the text says "a": the forced path still spells the text, at a lower probability
    probs = np.full((3, 3), 0.05)
    probs[:, 2] = 0.9
    path, forced = ctc_forced_align(np.log(probs), [1], blank=0)
    assert (path >= 0).sum() >= 1 and forced < 3 * np.log(0.9)


@pytest.fixture
def tiny_ctc(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from studio import testing

    folder = testing.tiny_ctc_aligner(tmp_path / "ctc")
    monkeypatch.setenv("STUDIO_ALIGNER_MODEL", str(folder))
    return folder


def test_ctc_aligner_runs_on_a_tiny_random_model_for_other_languages(tiny_ctc, tmp_path):
    from studio.voice import ctc

    aligner = aligner_for("fr")
    assert aligner is not None and aligner.startswith(f"ctc-{tiny_ctc}@") and aligner.endswith("/fr")
    rng = np.random.default_rng(1)
    write_wav(tmp_path / "fr.wav", rng.normal(0, 0.1, 3 * 22050).astype(np.float32), 22050)  # resampled to 16 kHz
    text = "Déjà l'été, ça va — 12 élèves !"
    alignment = align(text, tmp_path / "fr.wav", "fr")
    assert alignment is not None and alignment.aligner == aligner
    words = [w.word for w in alignment.words]
    assert words == split_words(text)
    previous_end = 0.0
    for w in alignment.words:
        assert previous_end - 1e-6 <= w.start_s <= w.end_s <= 3.0 + 1e-6
        previous_end = w.end_s
    by_word = dict(zip(words, alignment.words))
    assert by_word["12"].start_s == by_word["12"].end_s  # no letters the model knows: placed where its neighbours meet
    assert by_word["Déjà"].end_s > by_word["Déjà"].start_s  # accents stripped: d, e, j, a
    assert ctc.romanise("Déjà", "fr").startswith("deja") or ctc.romanise("Déjà", "fr").startswith("dej")
    # Too little audio for the text: no alignment, no error
    write_wav(tmp_path / "short.wav", np.zeros(3200, np.float32), 16000)
    assert align("un deux trois quatre cinq six sept huit", tmp_path / "short.wav", "fr") is None


def test_ctc_aligner_uses_weights_only_when_they_are_on_this_machine(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    import huggingface_hub.constants

    from studio import testing
    from studio.voice.ctc import MMS_MODEL

    monkeypatch.setenv("STUDIO_ALIGNER_MODEL", str(tmp_path / "nowhere"))
    assert aligner_for("fr") is None and aligner_for("de") is None
    monkeypatch.delenv("STUDIO_ALIGNER_MODEL")
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert aligner_for("fr") is None  # the MMS weights are not in this (empty) hub cache, and nothing is downloaded
    testing.put_in_hub_cache(testing.tiny_ctc_aligner(tmp_path / "ctc"), MMS_MODEL, cache)
    assert aligner_for("fr").startswith(f"ctc-{MMS_MODEL}@") and aligner_for("ja").endswith("/ja")


def test_romanise_uses_uroman_for_other_scripts():
    pytest.importorskip("uroman")
    from studio.voice.ctc import romanise

    assert romanise("Привет, мир", "ru") == "privet, mir"
    assert romanise("Déjà vu", "fr") == "deja vu"


@needs_espeak
@needs_pocketsphinx
def test_a_cached_asset_keeps_its_old_aligned_words_when_the_new_aligner_cannot_align(tmp_path, monkeypatch):
    import studio.voice.align as align_module

    project = Project(title="Old", scenes=(Scene("a", "Old timings stay."),)).save(tmp_path / "proj")
    narrate(project, narrator="espeak")
    path = next(project.assets_dir.glob("*.json"))
    meta = json.loads(path.read_text())
    old = [[w, a + 0.01, b + 0.01] for w, a, b in meta["words"]]
    path.write_text(json.dumps({**meta, "aligner": "pocketsphinx-0.1/en-us", "words": old}))
    monkeypatch.setattr(align_module, "_align_pocketsphinx", lambda *args: None)
    again = narrate(project, narrator="espeak")
    assert [[w.word, w.start_s, w.end_s] for w in again.scene("a").words] == old  # better than no timings at all
    kept = json.loads(path.read_text())
    assert kept["timing_source"] == "aligned" and kept["aligner"] == "pocketsphinx-0.1/en-us"
    assert kept["align_tried"] == aligner_for("en")
    calls = []
    monkeypatch.setattr(align_module, "_align_pocketsphinx", lambda *args: calls.append(args))
    narrate(project, narrator="espeak")
    assert calls == []  # not tried again with the same aligner
