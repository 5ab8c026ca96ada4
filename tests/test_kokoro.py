"""The kokoro narrator on a tiny random-weight ONNX graph with Kokoro-82M's interface, and real espeak-ng phonemes."""

from __future__ import annotations

import socket
import wave
from pathlib import Path

import numpy as np
import pytest

from studio import model_store, providers, testing
from studio.catalog import load_catalog
from studio.errors import Cancelled, ProviderUnavailable, StudioError
from studio.progress import CancelToken
from studio.voice import kokoro as kk
from studio.voice.timing import split_words

from .hub_standin import serving_hub

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXT = ("The lighthouse keeper climbed the stairs at dusk. He lit the lamp, wound the clock and wrote in his log. "
        "Ships passed far out at sea, and none of them knew his name. In the morning he slept until noon.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return testing.tiny_kokoro(tmp_path_factory.mktemp("kokoro") / "plain")


@pytest.fixture(scope="module")
def timed(tmp_path_factory) -> Path:
    return testing.tiny_kokoro(tmp_path_factory.mktemp("kokoro") / "timed", durations=True, seed=3)


def _wav(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path), "rb") as handle:
        return handle.getframerate(), handle.getnchannels(), handle.getsampwidth(), handle.getnframes()


def _g2p(tag: str = "en-us") -> kk._G2P:
    return kk._G2P(tag, dict(testing.KOKORO_VOCAB), None)


def test_espeak_phonemes_become_kokoro_ids_and_back():
    g2p = _g2p()
    phonemes = g2p.phonemize("Hello world, this is a boat. Is it?")
    ids = g2p.ids(phonemes)
    back = {i: s for s, i in testing.KOKORO_VOCAB.items()}
    assert "".join(back[i] for i in ids) == phonemes  # every symbol is in the vocabulary: nothing was dropped
    assert phonemes.count(",") == 1 and phonemes.count(".") == 1 and phonemes.endswith("?")  # punctuation kept
    assert testing.KOKORO_VOCAB["ˈ"] in ids  # stress marks
    assert "^" not in phonemes and "O" in phonemes  # espeak-ng's tied o^ʊ ("hello", "boat") is Kokoro's O
    assert phonemes.split(" ")[0] == "həlˈO"
    # Numbers stay numbers: the . of 3.5 is not punctuation; years are read as years
    assert "." not in g2p.phonemize("3.5") and "pYnt" in g2p.phonemize("3.5")
    assert g2p.phonemize("the 1990s") == "ðə nˈIntin nˈIntiz"
    # Other languages use Kokoro's own espeak mapping (French: ʁ, nasal vowels' tilde)
    french = _g2p("fr").phonemize("Bonjour, mon ami.")
    assert "ʁ" in french and "\u0303" in french and "," in french
    assert all(c in testing.KOKORO_VOCAB for c in french)


# Words with their phonemes in Kokoro's own dictionaries (misaki's us_gold / gb_gold.json, flaps as misaki gives them
# to Kokoro v1.0): the espeak-ng mapping should land on most of them exactly (measured on 1,500 random dictionary words
# with espeak-ng 1.51: 37-40 % exact and 0.90 similar for US English, 44 % and 0.91 for British; raw espeak-ng IPA
# filtered to the vocabulary, as kokoro-onnx feeds it, gets 10 % and 0.76).
KOKORO_WORDS = {"en-us": {"bedmate": "bˈɛdmAt", "stenotopic": "stˌɛnətˈɑpɪk", "purdah": "pˈɜɹdə",
                          "mechanizer": "mˈɛkənˌIzəɹ", "regressing": "ɹəɡɹˈɛsɪŋ"},
                "en-gb": {"provokingly": "pɹəvˈQkɪŋli", "sadness": "sˈadnəs", "beefsteak": "bˈiːfstAk",
                          "relentlessly": "ɹɪlˈɛntləsli", "tauntingly": "tˈɔːntɪŋli"}}


@pytest.mark.parametrize("tag", sorted(KOKORO_WORDS))
def test_english_phonemes_are_kokoros_own_symbols(tag):
    import difflib

    words = KOKORO_WORDS[tag]
    said = _g2p(tag).word_phonemes(list(words))
    assert said is not None
    matches = [p == gold for p, gold in zip(said, words.values())]
    assert sum(matches) >= 4, dict(zip(words, said))
    assert all(difflib.SequenceMatcher(None, p, gold).ratio() > 0.8 for p, gold in zip(said, words.values()))


def test_a_wav_of_24_khz_and_the_models_length_comes_out(tiny, tmp_path):
    narrator = kk.kokoro(model=str(tiny))
    speech = narrator.speak("Hello world, this is Kokoro.", out=tmp_path / "a.wav", language="en")
    rate, channels, width, frames = _wav(tmp_path / "a.wav")
    ids = _g2p().ids(_g2p().phonemize("Hello world, this is Kokoro."))
    assert (rate, channels, width) == (24000, 1, 2)
    assert frames == (len(ids) + 2) * testing.KOKORO_SAMPLES_PER_TOKEN  # one call: the ids and their two pads
    assert speech.sample_rate == 24000 and speech.duration_s == pytest.approx(frames / 24000)
    assert speech.timing_source == "estimated"  # this graph gives no durations
    assert [w.word for w in speech.words] == split_words("Hello world, this is Kokoro.")
    starts = [w.start_s for w in speech.words]
    assert starts == sorted(starts) and 0 <= starts[0] and speech.words[-1].end_s <= speech.duration_s + 1e-6
    assert narrator.calls == 1 and narrator.loaded
    narrator.release()
    assert not narrator.loaded


def test_durations_give_engine_word_timings(timed, tmp_path):
    narrator = kk.kokoro(model=str(timed), max_chunk_tokens=48)
    speech = narrator.speak(TEXT, out=tmp_path / "t.wav", language="en")
    assert speech.timing_source == "engine" and narrator.calls > 1
    words = speech.words
    assert [w.word for w in words] == split_words(TEXT)
    for before, after in zip(words, words[1:]):
        assert before.start_s <= before.end_s <= after.start_s + 1e-6
    assert words[-1].end_s <= speech.duration_s + 1e-6
    # Timings follow the model's durations: the words of the second chunk start after the first chunk's audio
    chunks = kk.plan_chunks(TEXT, _g2p(), 48)
    first = (len(chunks[0].ids) + 2) * testing.KOKORO_SAMPLES_PER_TOKEN / 24000
    count = len(split_words(chunks[0].text))
    assert words[count - 1].end_s <= first + 1e-6 <= words[count].start_s + 1e-6


def test_a_long_text_is_spoken_in_chunks_cut_at_sentences_and_clauses(tiny, tmp_path):
    g2p = _g2p()
    chunks = kk.plan_chunks(TEXT, g2p, 48)
    assert len(chunks) > 2 and all(0 < len(c.ids) <= 48 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == TEXT.split()  # nothing lost, nothing repeated
    assert all(c.text.rstrip()[-1] in ".," for c in chunks)  # cut at sentence ends and, inside them, at commas
    # Short sentences are packed together under the limit
    assert len(kk.plan_chunks(TEXT, g2p, 510)) == 1
    # One long sentence without punctuation is cut between words
    long = " ".join(["banana"] * 40)
    pieces = kk.plan_chunks(long, g2p, 40)
    assert len(pieces) > 1 and all(len(p.ids) <= 40 for p in pieces)
    assert " ".join(p.text for p in pieces) == long
    # The WAV holds every chunk
    narrator = kk.kokoro(model=str(tiny), max_chunk_tokens=48)
    seen = []
    speech = narrator.speak(TEXT, out=tmp_path / "long.wav", language="en", on_progress=lambda f, m: seen.append(f))
    frames = _wav(tmp_path / "long.wav")[3]
    assert frames == sum(len(c.ids) + 2 for c in chunks) * testing.KOKORO_SAMPLES_PER_TOKEN
    assert narrator.calls == len(chunks) and seen == pytest.approx([i / len(chunks) for i in range(1, len(chunks) + 1)])
    assert [w.word for w in speech.words] == split_words(TEXT)


def test_cancel_stops_between_chunks(tiny, tmp_path):
    narrator = kk.kokoro(model=str(tiny), max_chunk_tokens=48)
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        narrator.speak(TEXT, out=tmp_path / "c.wav", language="en", cancel=cancel,
                       on_progress=lambda fraction, message: cancel.cancel())
    assert narrator.calls == 1 and not (tmp_path / "c.wav").exists()


def test_voices_and_languages():
    assert len(kk.KOKORO_VOICES) == 54 and set(kk.DEFAULT_VOICES.values()) <= set(kk.KOKORO_VOICES)
    assert kk.KOKORO_VOICES["bm_george"] == "en-gb" and kk.KOKORO_VOICES["pm_alex"] == "pt-br"
    assert [kk.default_voice(x) for x in ("en", "en-GB", "fr-FR", "es", "pt_BR", "it", "hi")] == \
        ["af_heart", "bf_emma", "ff_siwis", "ef_dora", "pf_dora", "if_sara", "hf_alpha"]
    assert all(kk.speaks(x) for x in ("en", "en-us", "en-GB", "es", "fr", "hi", "it", "pt", "pt-BR"))
    assert not any(kk.speaks(x) for x in ("ja", "zh", "zh-Hans", "de", "ru", ""))  # ja/zh need misaki's G2P
    assert kk.kokoro_language("en", "bm_george") == "en-gb" and kk.kokoro_language("en", "af_bella") == "en-us"
    with pytest.raises(StudioError, match="no voice for language 'de'"):
        kk.default_voice("de")
    assert kk.accepts_voice(None) and kk.accepts_voice("am_adam") and not kk.accepts_voice("v2/en_speaker_6")


def test_voice_choice_when_speaking(tiny, tmp_path):
    narrator = kk.kokoro(model=str(tiny), voice="af_heart")
    assert narrator._choose_voice(None, "en") == ("af_heart", "en-us")
    assert narrator._choose_voice(None, "fr") == ("ff_siwis", "fr")  # the default voice is English: French's own
    assert narrator._choose_voice("bf_emma", "en") == ("bf_emma", "en-gb")  # a British voice reads British English
    with pytest.raises(StudioError, match="narrator='bark'"):
        narrator.speak("Hello.", voice="v2/en_speaker_6", out=tmp_path / "x.wav")
    with pytest.raises(StudioError, match="misaki"):
        narrator.speak("こんにちは", language="ja", out=tmp_path / "x.wav")
    with pytest.raises(StudioError, match="does not speak language 'de'"):
        narrator.speak("Guten Tag.", language="de", out=tmp_path / "x.wav")
    # Another voice is another style vector: different audio for the same text
    narrator.speak("Hello there.", out=tmp_path / "heart.wav")
    narrator.speak("Hello there.", voice="bf_emma", language="en-us", out=tmp_path / "emma.wav")
    heart, emma = (np.frombuffer(wave.open(str(tmp_path / f)).readframes(10**6), "<i2") for f in ("heart.wav", "emma.wav"))
    assert len(heart) == len(emma) and not np.array_equal(heart, emma)
    # A voice the folder lacks is named with how to fetch it
    with pytest.raises(StudioError, match="am_adam"):
        narrator.speak("Hello.", voice="am_adam", out=tmp_path / "x.wav")


def test_bad_options_are_refused_by_name(tiny):
    for options, message in (({"speed": 3}, "`speed`"), ({"device": "tpu"}, "`device`"),
                             ({"max_chunk_tokens": 600}, "`max_chunk_tokens`"), ({"variant": "fp8"}, "`variant`"),
                             ({"voice": "v2/en_speaker_6"}, "`voice`")):
        with pytest.raises(StudioError, match=message):
            kk.kokoro(model=str(tiny), **options)


def test_missing_weights_name_the_model_its_size_and_the_pull_command(tmp_path):
    with pytest.raises(ProviderUnavailable) as info:
        kk._check(cache_dir=str(tmp_path / "empty"))
    message = str(info.value)
    assert kk.DEFAULT_MODEL in message and "python -m studio models pull kokoro-82m" in message
    assert "355 MB" in message and "apache-2.0" in message
    choice = providers.choose("narrator", "auto", prefer=["kokoro", "espeak"],
                              configs={"kokoro": {"cache_dir": str(tmp_path / "empty")}})
    assert choice.name == "espeak" and "kokoro cannot run" in choice.reason
    with pytest.raises(ProviderUnavailable, match="no onnx/model_q4.onnx"):
        kk.find_kokoro(str(tmp_path), "q4")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A hub stand-in on 127.0.0.1 with HF_ENDPOINT pointing at it and an empty hub cache."""
    with serving_hub(monkeypatch, tmp_path) as standin:
        yield standin


def test_models_pull_fetches_the_catalogue_files_then_it_speaks_with_no_network(hub, tiny, tmp_path, monkeypatch):
    entry = load_catalog().get("kokoro-82m")
    assert entry.provider == "kokoro" and entry.repo == kk.DEFAULT_MODEL and entry.commercial
    hub.add_repo(kk.DEFAULT_MODEL, tiny, extra={"onnx/model_fp16.onnx": b"x" * 4096, "README.md": b"# Kokoro"})
    folder = model_store.pull(entry)
    fetched = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "onnx/model.onnx" in fetched and "tokenizer.json" in fetched and "voices/af_heart.bin" in fetched
    assert "onnx/model_fp16.onnx" not in fetched and "README.md" not in fetched  # only what the provider needs
    assert model_store.status(entry).state == "present"

    # From here on nothing may reach the network: the narrator finds the files in the hub cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"the kokoro narrator opened a connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert "hub cache" in kk._check(cache_dir=str(hub.cache))
    narrator = kk.kokoro(cache_dir=str(hub.cache))
    assert narrator.files.graph.is_file() and narrator.files.weights.source == "hub cache"
    speech = narrator.speak("Hello from the hub cache.", out=tmp_path / "hub.wav", language="en")
    assert _wav(tmp_path / "hub.wav")[0] == 24000 and speech.duration_s > 0


def test_premium_tiers_prefer_kokoro_and_a_bark_voice_leaves_it_out(tiny, tmp_path):
    from dataclasses import replace

    from studio.presets import load_preset
    from studio.project import Project, Scene
    from studio.voice import narrate

    for tier in ("premium", "maximum"):
        preset = load_preset(tier)
        order = list(preset.providers["narrator"])
        assert order.index("kokoro") < order.index("bark")
        assert preset.models["kokoro"]["model"] == kk.DEFAULT_MODEL
    premium = load_preset("premium")
    preset = replace(premium, models={**premium.models, "kokoro": {"model": str(tiny)}})
    scenes = (Scene(id="s1", narration="Hello there. How are you today?", visual_prompt="a door"),)
    project = Project(title="Kokoro", scenes=scenes).save(tmp_path / "proj")
    done = narrate(project, preset=preset)
    assert any(n.startswith("narrator: kokoro: first of [kokoro, bark") for n in done.notes), done.notes
    assert _wav(done.scenes[0].audio)[0] == 24000 and done.scenes[0].words
    # A Bark voice preset is not Kokoro's: auto leaves Kokoro out (and goes on to Bark where it runs)
    bark_voiced = replace(done, voice="v2/en_speaker_6")
    preset = replace(preset, providers={**preset.providers, "narrator": ("kokoro", "espeak")})
    with pytest.raises(StudioError) as info:  # espeak has no such voice: the point is that Kokoro was not chosen
        narrate(bark_voiced, preset=preset)
    assert "espeak" in str(info.value) and "Kokoro" not in str(info.value)


def test_a_kokoro_voice_makes_auto_pick_kokoro_on_any_preset(tiny, tmp_path):
    """Draft prefers Piper then espeak-ng; a project whose voice is Kokoro's (af_heart) is narrated by Kokoro."""
    from dataclasses import replace

    from studio.presets import load_preset
    from studio.project import Project, Scene
    from studio.voice import narrate

    draft = load_preset("draft")
    assert "kokoro" not in draft.providers["narrator"]
    preset = replace(draft, models={**draft.models, "kokoro": {"model": str(tiny)}})
    scenes = (Scene(id="s1", narration="Hello there.", visual_prompt="a door"),)
    project = Project(title="Kokoro", scenes=scenes, voice="af_heart").save(tmp_path / "proj")
    done = narrate(project, preset=preset)
    assert any(n.startswith("narrator: kokoro") for n in done.notes), done.notes
    assert _wav(done.scenes[0].audio)[0] == 24000
    plain = narrate(replace(project, voice=None), preset=preset)  # no voice named: the preset's own order
    assert not any(n.startswith("narrator: kokoro") for n in plain.notes), plain.notes
