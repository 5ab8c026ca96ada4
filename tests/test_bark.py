"""The Bark narrator on a tiny random-weight Bark: pieces and pauses, batches, timings, seeds, voices, cancel, loading
from a folder and from the hub cache, narrate() through a preset, and (on a GPU) fp16 and release()."""

from __future__ import annotations

import hashlib
import shutil
import wave
from dataclasses import replace

import numpy as np
import pytest
import torch

from studio import Cancelled, CancelToken, Project, ProviderUnavailable, Scene, StudioError, load_preset, providers
from studio.testing import BARK_SAMPLE_RATE, BARK_VOICES, put_in_hub_cache
from studio.voice import narrate
from studio.voice.bark import plan_pieces
from studio.voice.timing import split_words

TEXT = "The sun rises. It warms the hills, the fields and the rivers. Then the day begins!"


@pytest.fixture
def bark(tiny_models):
    narrator, _ = providers.create("narrator", "bark", **tiny_models.options("bark"))
    return narrator


def _samples(path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as handle:
        assert handle.getnchannels() == 1 and handle.getsampwidth() == 2
        return np.frombuffer(handle.readframes(handle.getnframes()), "<i2").astype(np.float32), handle.getframerate()


def _silent_runs(samples: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """(start, end) of runs of exact zeros at least `min_len` samples long (the pauses Studio inserts)."""
    zero = np.concatenate([[False], samples == 0, [False]])
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_len]


def test_pieces_end_at_sentences_and_long_sentences_at_clauses():
    assert [(" ".join(w), end) for w, end in plan_pieces("Dr. Smith came. He left!")] == [
        ("Dr. Smith came.", True), ("He left!", True)]
    long = ", ".join(f"part {i} of a long list of things" for i in range(8)) + "."
    pieces = plan_pieces(long, max_words=20)
    assert len(pieces) > 2 and all(len(w) <= 20 for w, _ in pieces)
    assert [end for _, end in pieces] == [False] * (len(pieces) - 1) + [True]
    assert all(w[-1].endswith((",", ".")) for w, _ in pieces), "cut after commas"
    assert [word for w, _ in pieces for word in w] == split_words(long), "every word, once, in order"


def test_tiny_bark_speaks_in_batches_with_pauses_and_timings(bark, tmp_path):
    bark.batch_size = 2
    before = bark.generations
    seen = []
    out = tmp_path / "speech.wav"
    speech = bark.speak(TEXT, voice=None, seed=3, language="en", out=out, on_progress=lambda f, m: seen.append((f, m)))
    samples, rate = _samples(out)

    # The WAV is what the Speech says; three sentences were made in two batches (2 + 1)
    assert rate == speech.sample_rate == BARK_SAMPLE_RATE
    assert speech.duration_s == pytest.approx(len(samples) / rate, abs=1e-3)
    assert bark.generations - before == 2
    assert seen == [(2 / 3, "sentence 2/3"), (1.0, "sentence 3/3")]
    assert np.abs(samples).max() > 0

    # Two pauses of 0.3 s of silence join the three sentences; each sentence's words lie on its own audio
    pauses = _silent_runs(samples, int(0.3 * rate) - 1)
    assert len(pauses) == 2
    assert [w.word for w in speech.words] == split_words(TEXT)
    sentences = [3, 9, 3]
    first_of = np.cumsum([0] + sentences)[:-1]
    bounds = [0, *[b for _, b in pauses]]
    ends = [a for a, _ in pauses] + [len(samples)]
    for k, (start_word, count) in enumerate(zip(first_of, sentences)):
        for w in speech.words[start_word:start_word + count]:
            assert bounds[k] / rate - 1e-3 <= w.start_s <= w.end_s <= ends[k] / rate + 1e-3, (k, w)
    assert all(a.end_s <= b.start_s + 1e-6 for a, b in zip(speech.words, speech.words[1:]))


def test_seed_fixes_the_audio_and_voices_change_it(bark, tmp_path):
    def digest(name: str, **kwargs) -> str:
        bark.speak("Hello there.", language="en", out=tmp_path / name, **kwargs)
        return hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()

    first = digest("a.wav", voice=None, seed=5)
    assert digest("b.wav", voice=None, seed=5) == first
    assert digest("c.wav", voice=None, seed=6) != first
    assert digest("d.wav", voice=BARK_VOICES[1], seed=5) != first
    assert sorted(bark.voices()) == sorted(BARK_VOICES)
    # A speaker prompt file of the user's own
    arrays = {"semantic_prompt": np.arange(12), "coarse_prompt": np.ones((2, 20), int), "fine_prompt": np.ones((8, 20), int)}
    np.savez(tmp_path / "me.npz", **arrays)
    assert digest("e.wav", voice=str(tmp_path / "me.npz"), seed=5) != first


def test_bad_voice_language_and_text_are_named(bark, tmp_path):
    with pytest.raises(StudioError, match=r"`voice` 'v2/xx_speaker_9' is not a voice preset .*v2/en_speaker_0"):
        bark.speak("Hi.", voice="v2/xx_speaker_9", seed=0, language="en", out=tmp_path / "x.wav")
    with pytest.raises(StudioError, match="does not exist"):
        bark.speak("Hi.", voice=str(tmp_path / "missing.npz"), seed=0, language="en", out=tmp_path / "x.wav")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(StudioError, match="not a Bark speaker prompt"):
        bark.speak("Hi.", voice=str(tmp_path / "bad.npz"), seed=0, language="en", out=tmp_path / "x.wav")
    with pytest.raises(StudioError, match="does not speak language 'sw'.*espeak"):
        bark.speak("Habari.", voice=None, seed=0, language="sw", out=tmp_path / "x.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_cancel_between_sentences_stops_and_writes_nothing(bark, tmp_path):
    bark.batch_size = 1
    token = CancelToken()
    before = bark.generations
    with pytest.raises(Cancelled):
        bark.speak(TEXT, voice=None, seed=0, language="en", out=tmp_path / "x.wav", cancel=token,
                   on_progress=lambda f, m: token.cancel())
    assert bark.generations - before == 1, "the second sentence was not generated"
    assert not (tmp_path / "x.wav").exists()


def test_bark_loads_from_the_hub_cache_and_checks_its_voice_files(tiny_models, tmp_path):
    cache = tmp_path / "hub"
    snapshot = put_in_hub_cache(tiny_models.folder("bark"), "suno/bark-small", cache)
    options = {"model": "suno/bark-small", "cache_dir": str(cache), "voice": BARK_VOICES[0], "device": "cpu"}
    narrator, choice = providers.create("narrator", "bark", **options)
    assert "suno/bark-small" in choice.reason and "hub cache" in choice.reason
    speech = narrator.speak("Hello.", voice=None, seed=0, language="en", out=tmp_path / "h.wav")
    assert speech.duration_s > 0.1
    # auto on a machine without a GPU does not take Bark unless asked for the CPU
    auto = providers.choose("narrator", "auto", prefer=["bark", "espeak"], configs={"bark": {**options, "device": None}})
    assert auto.name == "espeak" and "no GPU" in auto.reason
    # A voice preset whose files were never downloaded
    for path in (snapshot / "speaker_embeddings").rglob(f"{BARK_VOICES[1].split('/')[1]}_*.npy"):
        path.unlink()
    with pytest.raises(ProviderUnavailable, match=r"hf download suno/bark-small --include 'speaker_embeddings/v2/en_speaker_1\*'"):
        providers.choose("narrator", "bark", **{**options, "voice": BARK_VOICES[1]})
    shutil.rmtree(cache)
    with pytest.raises(ProviderUnavailable, match="not on this machine"):
        providers.choose("narrator", "bark", **options)


def test_narrate_uses_bark_from_the_preset_and_reports_sentences(tiny_models, tmp_path):
    preset = replace(load_preset("standard"), models=tiny_models.preset_models())
    project = Project(title="T", scenes=(Scene("a", "One. Two!"), Scene("b", "Three."))).save(tmp_path / "p")
    seen = []
    done = narrate(project, narrator="bark", preset=preset, on_progress=lambda f, m: seen.append((round(f, 3), m)))
    assert all(s.audio is not None and s.audio.is_file() for s in done.scenes)
    assert [w.word for w in done.scene("a").words] == ["One.", "Two!"]
    assert any(n.startswith("narrator: bark: chosen by the user") for n in done.notes)
    assert ("narrating scene 1/2: sentence 2/2" in [m for _, m in seen])
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: fp16 Bark and release(); this machine has none")
def test_bark_runs_in_fp16_on_the_gpu_and_release_frees_its_memory(tiny_models, tmp_path):
    providers.release("narrator")
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    narrator, _ = providers.create("narrator", "bark", model=str(tiny_models.folder("bark")), device="cuda",
                                   voice=BARK_VOICES[0])
    narrator.speak("Hello there.", voice=None, seed=0, language="en", out=tmp_path / "g.wav")
    assert narrator._bark.dtype == torch.float16 and narrator._bark.device.type == "cuda"
    assert torch.cuda.memory_allocated() > base
    providers.release("narrator", "bark")
    assert torch.cuda.memory_allocated() <= base + 1024
