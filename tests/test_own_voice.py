"""Your own voice: a scene narrated by the user's recording (`Scene.recording`, `studio.voice.recording`).

The recordings are espeak-ng at another rate than the narrator's (`studio.testing.make_recording`), quiet and padded
with silence, as a record button catches them; every property is measured on the files made (ffmpeg's ``ebur128``
for loudness, the energy detector for silence), never taken from the code's own numbers.
"""

from __future__ import annotations

import shutil
import sys
import types
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from studio import load_preset
from studio.assets import AssetStore
from studio.compose.audio import measure_file
from studio.compose.timeline import build_timeline
from studio.errors import StudioError
from studio.media import INPUT_GUARD, read_audio, wav_duration_s
from studio.project import Project, Scene, WordTiming
from studio.testing import make_recording
from studio.visuals import illustrate
from studio.voice import narrate
from studio.voice import recording as rec
from studio.voice.timing import read_wav, speech_frames, split_words

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")

TEXT = "Bees dance to tell each other where the flowers are."
OTHER = "The hive keeps warm in winter."


def speech_span(path: Path) -> tuple[float, float, float]:
    """(first sound s, last sound s, length s) of a file, by the same energy detector at 10 ms."""
    samples = read_audio(path, 24_000)[:, 0]
    mask, frame_s = speech_frames(samples, 24_000)
    loud = np.flatnonzero(mask)
    return loud[0] * frame_s, (loud[-1] + 1) * frame_s, len(samples) / 24_000


def loudness(path: Path) -> tuple[float, float]:
    return measure_file([*INPUT_GUARD, "-i", str(path)])


@pytest.fixture
def project(tmp_path):
    def make(*scenes: Scene) -> Project:
        return Project("Own voice", scenes).save(tmp_path / "project")
    return make


def test_trimming_removes_the_padded_silence_and_keeps_a_short_margin(tmp_path, project):
    source = make_recording(tmp_path / "take.wav", TEXT, pad_s=(1.2, 2.0))
    first, last, length = speech_span(source)
    assert first > 1.1 and length - last > 1.9  # the padding is really there

    made = narrate(project(Scene("s1", TEXT, recording=str(source))), narrator="espeak")
    scene = made.scenes[0]
    first_out, last_out, length_out = speech_span(scene.audio)
    assert first_out <= rec.LEAD_MARGIN_S + 0.03  # the lead silence is gone, but for the margin
    assert length_out - last_out <= rec.TAIL_MARGIN_S + 0.03
    assert first_out >= rec.LEAD_MARGIN_S - 0.05  # a margin is kept, the first word is not clipped
    assert (last_out - first_out) == pytest.approx(last - first, abs=0.05)  # the speech itself is all there
    assert length_out == pytest.approx(length - first - (length - last) + rec.LEAD_MARGIN_S + rec.TAIL_MARGIN_S,
                                       abs=0.06)
    # The narration WAV format of the other narrators: mono 16-bit PCM, read by the word-timing reader.
    with wave.open(str(scene.audio)) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, rec.SAMPLE_RATE)
    read_wav(scene.audio)


@pytest.mark.parametrize("gain", [0.02, 0.25, 6.0])  # a quiet microphone, a fair one, one clipping loud
def test_loudness_is_matched_to_the_tts_voices_whatever_the_microphone_level(tmp_path, project, gain):
    source = make_recording(tmp_path / "take.wav", TEXT, gain=gain)
    before, _ = loudness(source)
    made = narrate(project(Scene("s1", TEXT, recording=str(source))), narrator="espeak")
    after, peak = loudness(made.scenes[0].audio)
    assert abs(before - rec.TARGET_LUFS) > 3  # the raw recording is far from the target
    assert after == pytest.approx(rec.TARGET_LUFS, abs=1.0)
    assert peak <= -1.0  # true peak under the platforms' -1 dBTP
    # And the TTS voice it stands beside comes out near the same level (the target is theirs).
    spoken = narrate(project(Scene("s2", OTHER)), narrator="espeak").scenes[0].audio
    assert loudness(spoken)[0] == pytest.approx(rec.TARGET_LUFS, abs=2.5)


def test_the_scene_follows_the_recording_and_its_words_are_the_narration_texts(tmp_path, project):
    slow = make_recording(tmp_path / "slow.wav", TEXT, rate_wpm=100)
    made = narrate(project(Scene("s1", TEXT, recording=str(slow)), Scene("s2", OTHER)), narrator="espeak")
    scene = made.scenes[0]
    assert scene.audio_duration_s == pytest.approx(wav_duration_s(scene.audio), abs=1e-3)
    tts = narrate(project(Scene("s1", TEXT)), narrator="espeak").scenes[0]
    assert scene.audio_duration_s > tts.audio_duration_s + 0.5  # the slow reader's length, not the narrator's
    # On the timeline the scene lasts lead + the recording + tail, and the whole recording is played.
    preset = load_preset("draft")
    timeline = build_timeline(illustrate(made, painter="cards", size=(160, 90)), preset)
    assert timeline.narration[0].duration_s == pytest.approx(scene.audio_duration_s, abs=0.05)
    first_length = timeline.segments[1].start_s - timeline.segments[0].start_s
    assert first_length == pytest.approx(preset.lead_s + scene.audio_duration_s + preset.tail_s
                                       - timeline.segments[1].transition.duration_s, abs=0.1)
    # Captions: one timing per word of the narration text, in order, inside the speech.
    assert [w.word for w in scene.words] == split_words(TEXT)
    starts = [w.start_s for w in scene.words]
    assert starts == sorted(starts) and all(w.end_s >= w.start_s for w in scene.words)
    assert scene.words[0].start_s == pytest.approx(rec.LEAD_MARGIN_S, abs=0.1)
    assert scene.words[-1].end_s <= scene.audio_duration_s and scene.words[-1].end_s > scene.audio_duration_s - 0.6
    assert any(n.startswith("recordings: scene(s) 1 ") for n in made.notes)


def test_a_recording_is_processed_once_by_its_content(tmp_path, project):
    source = make_recording(tmp_path / "take.wav", TEXT)
    made = narrate(project(Scene("s1", TEXT, recording=str(source))), narrator="espeak")
    renamed = tmp_path / "renamed-take.wav"
    shutil.copyfile(source, renamed)
    store = AssetStore(made.assets_dir)
    again = narrate(made.edit_scene("s1", recording=str(renamed)), narrator="espeak", store=store)
    assert again.scenes[0].audio == made.scenes[0].audio and store.made == 0  # same bytes, another name: found
    # Another text: the same audio, its words timed again to the new text.
    edited = narrate(again.edit_scene("s1", narration=OTHER), narrator="espeak", store=store)
    assert edited.scenes[0].audio == made.scenes[0].audio and store.made == 0
    assert [w.word for w in edited.scenes[0].words] == split_words(OTHER)
    # Other bytes: another asset.
    other = make_recording(tmp_path / "other.wav", TEXT, rate_wpm=160)
    changed = narrate(made.edit_scene("s1", recording=str(other)), narrator="espeak", store=store)
    assert changed.scenes[0].audio != made.scenes[0].audio and store.made == 1


def test_a_recording_without_text_keeps_its_audio_and_has_no_captions(tmp_path, project):
    source = make_recording(tmp_path / "take.wav", TEXT)
    made = narrate(project(Scene("s1", "", recording=str(source))), narrator="espeak")
    scene = made.scenes[0]
    assert scene.audio is not None and scene.audio_duration_s > 1.5 and scene.words == ()
    assert any("no narration text, so no captions" in n for n in made.notes)


def test_no_narrator_is_started_when_every_scene_is_recorded(tmp_path, project, monkeypatch):
    from studio import providers

    def refuse(*args, **kwargs):
        raise AssertionError("a narrator was created for scenes that have recordings")

    monkeypatch.setattr(providers, "create", refuse)
    source = make_recording(tmp_path / "take.wav", TEXT)
    made = narrate(project(Scene("s1", TEXT, recording=str(source))))
    assert made.scenes[0].audio is not None and not any(n.startswith("narrator: ") for n in made.notes)


@pytest.mark.parametrize("what", ["text", "image", "empty", "missing", "silent", "folder"])
def test_a_broken_recording_names_the_scene_and_loses_nothing_made(tmp_path, project, make_image, what):
    bad = tmp_path / "bad.wav"
    if what == "text":
        bad.write_text("this is not audio at all\n" * 50)
    elif what == "image":
        bad = tmp_path / "bad.mp3"
        shutil.copyfile(make_image("x.png"), bad)
    elif what == "empty":
        bad.write_bytes(b"")
    elif what == "silent":
        from studio.media import write_wav

        write_wav(bad, np.zeros(44_100 * 2, np.float32), 44_100)
    elif what == "folder":
        bad = tmp_path / "folder.wav"
        bad.mkdir()
    start = project(Scene("s1", OTHER), Scene("s2", TEXT, recording=str(bad)))
    with pytest.raises(StudioError) as caught:
        narrate(start, narrator="espeak")
    message = str(caught.value)
    assert message.startswith("scene 2 (id s2)") and "recording" in message and len(message) < 400
    said = {"silent": "silent", "missing": "does not exist", "folder": "folder", "empty": "empty"}
    assert said.get(what, "") in message
    assert start.scenes[0].audio is None  # the input is not changed
    # Scene 1 was narrated before scene 2 failed: its WAV is kept, and a second run after the fix reuses it.
    wavs = sorted(p.name for p in start.assets_dir.glob("*.wav"))
    assert len(wavs) == 1 and not list(start.assets_dir.glob(".*part*"))
    good = make_recording(tmp_path / "good.wav", TEXT)
    store = AssetStore(start.assets_dir)
    fixed = narrate(start.edit_scene("s2", recording=str(good)), narrator="espeak", store=store)
    assert fixed.scenes[0].audio.name == wavs[0] and store.reused >= 1 and store.made == 1


def test_a_relative_recording_is_found_under_the_media_root(tmp_path, project):
    folder = tmp_path / "media"
    folder.mkdir()
    make_recording(folder / "take.wav", TEXT)
    start = project(Scene("s1", TEXT, recording="take.wav"))
    with pytest.raises(StudioError, match="does not exist"):
        narrate(start, narrator="espeak", media_root=tmp_path)
    assert narrate(start, narrator="espeak", media_root=folder).scenes[0].audio is not None


def test_the_aligner_times_the_words_when_it_is_there(tmp_path, project, monkeypatch):
    @dataclass
    class Alignment:
        words: tuple

    calls = []

    def align(text, wav, language, *, cancel=None):
        calls.append((text, Path(wav).is_file(), language))
        words = split_words(text)
        return Alignment(tuple(WordTiming(w, 0.2 + i * 0.1, 0.25 + i * 0.1) for i, w in enumerate(words)))

    source = make_recording(tmp_path / "take.wav", TEXT)
    start = project(Scene("s1", TEXT, recording=str(source)))
    monkeypatch.setitem(sys.modules, "studio.voice.align", None)  # no aligner here: the words are estimated
    estimated = narrate(start, narrator="espeak").scenes[0].words
    module = types.ModuleType("studio.voice.align")
    module.align = align
    monkeypatch.setitem(sys.modules, "studio.voice.align", module)
    made = narrate(start, narrator="espeak")  # the same take and text: timed again now that an aligner is there
    assert calls == [(TEXT, True, "en")] and made.scenes[0].words != estimated
    assert made.scenes[0].words[1] == WordTiming("dance", 0.3, 0.35)
    # An aligner that finds nothing: the estimate from the audio times the words instead.
    module.align = lambda text, wav, language, *, cancel=None: None
    other = narrate(made.edit_scene("s1", narration=OTHER), narrator="espeak").scenes[0]
    assert [w.word for w in other.words] == split_words(OTHER) and other.words[1].start_s != 0.3


def test_the_recording_round_trips_and_an_edit_drops_the_audio(tmp_path):
    scene = Scene("s1", TEXT, recording="uploads/take.wav", audio=tmp_path / "a.wav", audio_duration_s=2.0,
                  words=(WordTiming("Bees", 0.1, 0.3),))
    original = Project("Round trip", (scene, Scene("s2", OTHER)))
    again = Project.from_dict(original.to_dict())
    assert again.scenes[0].recording == "uploads/take.wav" and again.scenes[1].recording is None
    frame = original.to_dataframe()
    assert "recording" in frame.columns and frame["recording"][0] == "uploads/take.wav"
    original.to_csv(tmp_path / "board.csv")
    read = Project.read_storyboard(tmp_path / "board.csv")
    assert [s.recording for s in read.scenes] == ["uploads/take.wav", None]
    kept = original.with_storyboard(original.storyboard_records())
    assert kept.scenes[0].audio == scene.audio  # unchanged rows keep their audio
    dropped = original.edit_scene("s1", recording="uploads/other.wav").scenes[0]
    assert dropped.audio is None and dropped.words == () and dropped.recording == "uploads/other.wav"
    assert original.edit_scene("s1", recording=None).scenes[0].audio is None
    with pytest.raises(StudioError, match="recording"):
        original.split_scene("s1")


def test_a_csv_storyboard_names_a_recording_and_the_video_follows_it(tmp_path):
    from studio.pipeline import make_video
    from studio.testing import write_tiny_preset

    from .conftest import video_facts

    folder = tmp_path / "board"
    folder.mkdir()
    make_recording(folder / "take.wav", TEXT, rate_wpm=100)
    (folder / "board.csv").write_text("narration,duration_s,recording\n"
                                      f'"{TEXT}",,take.wav\n"{OTHER}",1.0,\n', "utf-8")
    project = Project.read_storyboard(folder / "board.csv")
    preset = load_preset(write_tiny_preset(tmp_path))
    result = make_video(project, preset=preset, output=tmp_path / "out.mp4", project_dir=tmp_path / "project",
                        media_root=folder, painter="cards", narrator="espeak")
    spoken = result.project.scenes[0].audio_duration_s
    assert spoken > 3.0 and result.project.scenes[0].words
    facts = video_facts(result.output)
    assert facts["has_audio"]
    assert facts["duration_s"] == pytest.approx(preset.lead_s + spoken + preset.tail_s + 1.0 - preset.transition_s,
                                                abs=0.15)


def test_the_notebook_table_says_whose_voice_each_scene_has(tmp_path, project):
    from studio import notebook as nb

    source = make_recording(tmp_path / "take.wav", TEXT)
    made = narrate(project(Scene("s1", TEXT, recording=str(source)), Scene("s2", OTHER)), narrator="espeak")
    table = nb.show_storyboard(made)
    assert list(table["voice"]) == ["your recording", "narrator"]
    assert table["audio_s"].iloc[0] == pytest.approx(made.scenes[0].audio_duration_s, abs=0.01)
    assert "voice" not in nb.show_storyboard(made.edit_scene("s1", recording=None)).columns
