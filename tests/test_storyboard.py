"""Step 1, the storyboard: script splitting, Markdown reading, key words, brief outlines, modes and errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from studio import CancelToken, Cancelled, Project, StudioError, load_preset, providers
from studio.storyboard import Draft, StoryboardWriter, detect_mode, read_script, write_storyboard
from studio.storyboard.rules import RulesWriter
from studio.storyboard.text import read_markdown, scene_spans, split_sentences

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
# The connective words an English outline may add to the brief's own (kept here, apart from the code under test).
CONNECTIVES = {"this", "video", "is", "about", "first", "next", "then", "finally", "to", "sum", "up", "and", "in", "we"}


def words(text: str) -> list[str]:
    return re.findall(r"\w+(?:['’-]\w+)*", text.lower())


def sentence_count(text: str) -> int:
    """Sentences in the plain example texts (they hold no abbreviations): terminators before a space or the end."""
    return len(re.findall(r"[.!?]+(?=\s|$)", text))


def raw_paragraphs(path: Path, skip_title: bool) -> list[str]:
    paragraphs = [" ".join(p.split()) for p in path.read_text("utf-8").split("\n\n") if p.strip()]
    return paragraphs[1:] if skip_title else paragraphs


# -- the examples ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, title, min_scenes, max_scenes", [
    ("coffee.md", "How Coffee Gets to Your Cup", 6, 9),
    ("sky.md", "Why Is the Sky Blue?", 3, 5),
    ("lesson-fractions.txt", "Fractions in three minutes", 5, 8),
])
def test_examples_split_into_scenes_that_keep_every_word(name, title, min_scenes, max_scenes):
    path = EXAMPLES / name
    project = write_storyboard(read_script(path))
    assert isinstance(project, Project) and project.folder is None
    assert project.title == title
    assert min_scenes <= len(project.scenes) <= max_scenes

    paragraphs = raw_paragraphs(path, skip_title=True)
    # Every scene lies inside exactly one paragraph, and the scenes of a paragraph rebuild it: no word is lost, added
    # or moved, and no scene joins two paragraphs.
    rebuilt: list[list[str]] = [[] for _ in paragraphs]
    cursor = 0
    for scene in project.scenes:
        narration = " ".join(scene.narration.split())
        homes = [i for i, p in enumerate(paragraphs) if narration in p]
        assert len(homes) == 1, f"scene {narration!r} is not inside exactly one paragraph"
        assert homes[0] >= cursor, "scenes are out of order"
        cursor = homes[0]
        rebuilt[homes[0]].append(narration)
        assert 1 <= sentence_count(narration) <= 3, narration
        assert len(narration.split()) <= 45, narration
        assert ID_RE.match(scene.id) and scene.seed == 0 and scene.duration_s is None
        assert scene.audio is None and scene.visual is None
    assert [" ".join(parts) for parts in rebuilt] == paragraphs
    assert words(" ".join(s.narration for s in project.scenes)) == words(" ".join(paragraphs))
    assert len({s.id for s in project.scenes}) == len(project.scenes)


def test_visual_prompts_are_key_words_of_the_text():
    text = read_script(EXAMPLES / "coffee.md")
    project = write_storyboard(text)
    vocabulary = set(words(text))
    for scene in project.scenes:
        items = [item.strip() for item in scene.visual_prompt.split(",")]
        assert 3 <= len(items) <= 6, scene.visual_prompt
        assert len({i.lower() for i in items}) == len(items), "repeated key word"
        for item in items:
            assert set(words(item)) <= vocabulary, f"{item!r} is not from the script"
            assert item.lower() not in {"the", "a", "is", "are", "it", "and", "of", "to", "in"}
    cherry = next(s for s in project.scenes if "cherry" in s.narration and "pickers" in s.narration)
    prompt = cherry.visual_prompt.lower()
    for expected in ("cherry", "pickers", "steep hillsides"):
        assert expected in prompt
    # The scene takes the subject for granted; the picture needs it.
    assert "coffee" in prompt and "coffee" not in cherry.narration.lower()
    # Names keep their capitals: "Tropic of Cancer".
    tropics = next(s for s in project.scenes if "Tropic" in s.narration)
    assert "Tropic of Cancer" in tropics.visual_prompt
    # Deterministic: the same text gives the same storyboard (ids aside).
    again = write_storyboard(text)
    assert [(s.narration, s.visual_prompt) for s in again.scenes] == [(s.narration, s.visual_prompt) for s in project.scenes]


# -- sentences and scene sizes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Dr. Rivera moved to the U.S. in 1999. She was 3.5 years late, e.g. by train. Then she rested.",
     ["Dr. Rivera moved to the U.S. in 1999.", "She was 3.5 years late, e.g. by train.", "Then she rested."]),
    ("We bought apples, pears, etc. The rest stayed home.", ["We bought apples, pears, etc.", "The rest stayed home."]),
    ("He lives in the U.S. The next year he left.", ["He lives in the U.S.", "The next year he left."]),
    ("The U.S. Army arrived. Wait... what? Really?! Yes.", ["The U.S. Army arrived.", "Wait... what?", "Really?!", "Yes."]),
    ('"Stop." Then he left. (See above.) Next.', ['"Stop."', "Then he left.", "(See above.)", "Next."]),
    ("I waited... Then it came. It cost $3.50 per kg. See Fig. 3 for details.",
     ["I waited...", "Then it came.", "It cost $3.50 per kg.", "See Fig. 3 for details."]),
    ("She asked “Why?” and left. Is it 5 p.m. already? Mr. J. K. Rowling agrees.",
     ["She asked “Why?” and left.", "Is it 5 p.m. already?", "Mr. J. K. Rowling agrees."]),
    ("Pi is about 3.14159. Version 2.0 shipped… Nobody noticed!", ["Pi is about 3.14159.", "Version 2.0 shipped…", "Nobody noticed!"]),
    ("日本語の文です。二番目の文！三番目？", ["日本語の文です。", "二番目の文！", "三番目？"]),
])
def test_sentence_splitter_handles_abbreviations_decimals_ellipses_and_quotes(text, expected):
    assert split_sentences(text) == expected


def test_long_paragraph_becomes_balanced_scenes_and_keeps_its_text():
    lengths = [16, 9, 21, 12, 18, 7, 25, 14, 3]
    sentences = [" ".join(["Word"] + ["word"] * (n - 2)) + f" end{i}." for i, n in enumerate(lengths)]
    paragraph = " ".join(sentences)
    project = write_storyboard(paragraph, mode="script")
    counts = [len(s.narration.split()) for s in project.scenes]
    assert " ".join(s.narration for s in project.scenes) == paragraph
    assert all(c <= 45 for c in counts)
    assert all(1 <= len(re.findall(r"end\d+\.", s.narration)) <= 3 for s in project.scenes)
    assert min(counts) >= 6, "the 3-word last sentence should join its neighbour"
    assert len(project.scenes) == 4  # 125 words need at least 3 scenes of <= 45; 3 sentences each forces 4
    assert max(counts) - min(counts) <= 20, counts


def test_a_sentence_longer_than_a_scene_is_cut_at_its_clauses():
    sentence = ", ".join(f"then part {i} of the long journey goes on" for i in range(12)) + "."
    project = write_storyboard(sentence, mode="script", title="Long")
    assert len(project.scenes) >= 3
    assert all(len(s.narration.split()) <= 45 for s in project.scenes)
    assert " ".join(s.narration for s in project.scenes) == sentence
    assert all(s.narration.endswith((",", ".")) for s in project.scenes), "cuts fall after the commas"


def test_tiny_fragment_joins_its_neighbour_but_paragraphs_never_share_a_scene():
    text = ("The first sentence of this paragraph is long enough to stand alone as one scene here. "
            "A second one follows it with a few more words to say about it. Ok.\n\n"
            "Short.\n\nAnother paragraph, with its own scene.")
    project = write_storyboard(text, mode="script", title="T")
    narrations = [s.narration for s in project.scenes]
    assert narrations[-2:] == ["Short.", "Another paragraph, with its own scene."]
    assert not any(n == "Ok." for n in narrations)
    assert narrations[0].startswith("The first") and "Ok." in " ".join(narrations[:-2])


# -- Markdown -------------------------------------------------------------------------------------------------------

MARKDOWN = """---
title: From the front matter
author: someone
---

# The Real Title

Intro with **bold**, *italic*, _under_, ~~gone~~ and `inline code` plus a [link text](https://example.com/a_(b)).
![a picture](photo.png)

## The Harvest

> Quoted narration stays as words.
> It keeps going here.

Practice with:
- a chocolate bar
- a ruler
+ a clock face

```python
print("never narrated")
```

<div align="center">Inside <em>HTML</em> tags</div>

***

Escaped \\*stars\\* and snake_case_names and 2 * 3 * 4 stay, as does &amp; decoded.

Press <Enter> when x < y > z, see <b>this</b> <img src="a.png" alt="A">.
"""


def test_markdown_syntax_is_removed_and_words_kept():
    project = write_storyboard(MARKDOWN, mode="script")
    assert project.title == "The Real Title"
    narration = "\n".join(s.narration for s in project.scenes)
    for kept in ("Intro with bold, italic, under, gone and inline code plus a link text.",
                 "Quoted narration stays as words.", "It keeps going here.", "Practice with:", "a chocolate bar",
                 "a clock face", "Inside HTML tags", "Escaped *stars* and snake_case_names and 2 * 3 * 4 stay",
                 "as does & decoded.", "Press <Enter> when x < y > z, see this."):
        assert kept in narration, kept
    for gone in ("**", "](", "https://", "photo.png", "a picture", "print(", "never narrated", "<div", "<em>", "\n>",
                 "# ", "---", "From the front matter", "author:", "The Harvest", "- a", "+ a", "&amp;", "\\*"):
        assert gone not in narration, gone
    assert not any(s.narration.startswith(">") for s in project.scenes)  # quote marks are syntax
    # A sub-heading starts a new scene, is not narrated, and labels the picture of the scene it opens.
    quoted = next(s for s in project.scenes if s.narration.startswith("Quoted"))
    before = project.scenes[project.scenes.index(quoted) - 1]
    assert "Intro" in before.narration and "Quoted" not in before.narration
    assert quoted.visual_prompt.startswith("The Harvest")
    # A short list stays with its lead-in; its items keep their line breaks.
    assert any(s.narration == "Practice with:\na chocolate bar\na ruler\na clock face" for s in project.scenes)
    notes = " ".join(project.notes)
    assert "code block" in notes and "image" in notes


def test_front_matter_title_and_setext_heading():
    doc = read_markdown("---\ntitle: \"Bees at work\"\n---\nHoney\n=====\n\nBees make honey. They work hard.\n")
    assert doc.front_title == "Bees at work"
    assert [(b.kind, b.text) for b in doc.blocks] == [("heading", "Honey"), ("paragraph", "Bees make honey. They work hard.")]
    # A rule under a long paragraph is a rule, never a heading that would swallow narration.
    doc = read_markdown("This long line is narration that must be kept, not turned into a heading at all.\n---\nNext.")
    assert [b.kind for b in doc.blocks] == ["paragraph", "paragraph"]


def test_special_characters_and_line_breaks_stay_literal():
    line1 = "Costs rose 50% in Q3: that's {odd}; see [note 2], C:\\temp\\new and a \\d pattern,"
    line2 = "then 'quoted' words, a backslash \\ alone and braces {} too."
    text = f"Title line\n\n{line1}\n{line2}\n\nSecond paragraph: 100% sure."
    project = write_storyboard(text, mode="script")
    assert project.title == "Title line"
    assert project.scenes[0].narration == f"{line1}\n{line2}"
    assert project.scenes[1].narration == "Second paragraph: 100% sure."
    # The key words hold no Markdown or format-string surprises either, and come from the text.
    assert set(words(project.scenes[0].visual_prompt)) <= set(words(text))


def test_list_items_are_units_and_only_full_sentences_count_toward_the_limit():
    block = read_markdown("Bring these:\n- a bar\n- a ruler\n- a clock\n- a pen").blocks[0]
    assert block.pieces == ("Bring these:", "a bar", "a ruler", "a clock", "a pen")
    assert [block.text[a:b] for a, b in scene_spans(block)] == [block.text]  # 9 words, no full sentence: one scene
    items = [f"Step {i} is to do the thing number {i} with care." for i in range(4)]
    block = read_markdown("\n".join(f"{i + 1}. {item}" for i, item in enumerate(items))).blocks[0]
    assert block.pieces == tuple(items)
    spans = [block.text[a:b] for a, b in scene_spans(block)]
    assert spans == ["\n".join(items[:2]), "\n".join(items[2:])]  # 4 sentences: two scenes of two


# -- briefs ---------------------------------------------------------------------------------------------------------

BRIEF = "A short video about how bees make honey, for curious kids: the hive, nectar and the waggle dance."


def test_brief_outline_uses_only_the_briefs_words_and_says_so():
    project = write_storyboard(BRIEF, mode="brief")
    allowed = set(words(BRIEF)) | CONNECTIVES
    assert set(words(project.title)) <= set(words(BRIEF)) and "bees" in project.title.lower()
    assert 3 <= len(project.scenes) <= 6
    for scene in project.scenes:
        assert set(words(scene.narration)) <= allowed, scene.narration
        assert set(words(scene.visual_prompt)) <= set(words(BRIEF)), scene.visual_prompt
        assert scene.visual_prompt.strip()
    spoken = " ".join(s.narration for s in project.scenes).lower()
    for key in ("bees", "honey", "hive", "nectar", "waggle dance"):
        assert key in spoken
    assert "bees make honey" in project.scenes[0].narration  # the opening states the topic
    assert "short video" not in spoken, "request words are not key words"
    note = next(n for n in project.notes if "outline" in n)
    assert "brief's own words" in note and "LLM" in note and "transformers" in note and "OpenAI" in note
    assert project.brief == BRIEF


def test_longer_target_gives_more_outline_scenes():
    short = write_storyboard(BRIEF, mode="brief", target_s=20)
    long = write_storyboard(BRIEF, mode="brief", target_s=50)
    assert len(short.scenes) == 3
    assert len(long.scenes) > len(short.scenes)
    assert len(long.scenes) == round(50 / 7)  # ~7 s a scene; the brief has enough key words
    # Asking for more than the brief can fill is said, not padded with invented words.
    tiny = write_storyboard("Explain why the sky is blue", mode="brief", target_s=120)
    assert len(tiny.scenes) < round(120 / 7)
    assert any("key word" in n for n in tiny.notes)
    assert {w for s in tiny.scenes for w in words(s.narration)} <= set(words("Explain why the sky is blue")) | CONNECTIVES


def test_non_english_outline_adds_no_english_words():
    brief = "Les abeilles et le miel: la ruche, le nectar."
    project = write_storyboard(brief, mode="brief", language="fr")
    for scene in project.scenes:
        assert set(words(scene.narration)) <= set(words(brief)), scene.narration
    assert any("'fr'" in n for n in project.notes)


@pytest.mark.parametrize("brief, opening", [
    # A noun phrase (or a how/why clause) follows "This video is about", its first letter lowered.
    ("How honeybees turn nectar into honey, for curious children",
     "This video is about how honeybees turn nectar into honey, for curious children."),
    ("Why the sky is blue, for kids", "This video is about why the sky is blue, for kids."),
    ("Make a video about volcanoes", "This video is about volcanoes."),
    ("The history of tea", "This video is about the history of tea."),
    ("The reasons why leaves change colour", "This video is about the reasons why leaves change colour."),
    ("NASA and the moon landing", "This video is about NASA and the moon landing."),
    ("Make a video about how we flew to Tokyo", "This video is about how we flew to Tokyo."),
    # A sentence is said as the brief puts it: "This video is about we flew ..." is not English.
    ("We flew to Tokyo today", "We flew to Tokyo today."),
    ("we flew to Tokyo today!", "We flew to Tokyo today."),
    ("I learned to bake bread", "I learned to bake bread."),
    ("They built a boat in the garden", "They built a boat in the garden."),
    ("Our team finished second in the league", "Our team finished second in the league."),
    ("The sky is blue because of scattering", "The sky is blue because of scattering."),
    ("This is my first vlog", "This is my first vlog."),
    ("Tokyo was amazing", "Tokyo was amazing."),
    # What the user wants to do, once the request words are gone, is what the video does.
    ("I want to show how tea is made", "In this video we show how tea is made."),
    ("I'd like to compare cats and dogs", "In this video we compare cats and dogs."),
    # A question stays a question.
    ("Why is the sky blue?", "Why is the sky blue?"),
    ("Is coffee bad for you", "Is coffee bad for you?"),
    # A long sentence cut to ten words does not end on "at a".
    ("We flew to Tokyo today and ate ramen at a tiny shop near the station", "We flew to Tokyo today and ate ramen."),
    # Not in Latin letters: said as it is, with no English words added.
    ("東京に行きました", "東京に行きました."),
])
def test_outline_opening_reads_as_english(brief, opening):
    project = write_storyboard(brief, mode="brief")
    assert project.scenes[0].narration == opening
    # Only the brief's words and the outline's connectives, whatever the brief's form.
    spoken = {w for s in project.scenes for w in words(s.narration)}
    assert spoken <= set(words(brief)) | CONNECTIVES, spoken - set(words(brief)) - CONNECTIVES


def test_outline_opening_of_a_non_english_sentence_is_left_as_it_is():
    brief = "Nous sommes allés à Tokyo aujourd'hui"
    project = write_storyboard(brief, mode="brief", language="fr")
    assert project.scenes[0].narration == brief + "."


# -- modes, writers, notes --------------------------------------------------------------------------------------------

def test_auto_mode_tells_briefs_from_scripts():
    assert detect_mode("Make a video about volcanoes")[0] == "brief"
    assert detect_mode("# Volcanoes\n\nHow volcanoes erupt. Why they matter.")[0] == "brief"
    assert detect_mode("One. Two. Three sentences make a script.")[0] == "script"
    assert detect_mode(" ".join(["word"] * 41) + ".")[0] == "script"
    assert detect_mode("First paragraph.\n\nSecond paragraph.")[0] == "script"
    assert detect_mode(read_script(EXAMPLES / "sky.md"))[0] == "script"

    brief = write_storyboard("Make a video about volcanoes")
    assert any("read the text as a brief" in n for n in brief.notes)
    assert any("outline" in n for n in brief.notes)
    script = write_storyboard(read_script(EXAMPLES / "sky.md"))
    assert any("read the text as a script" in n for n in script.notes)
    assert script.scenes[0].narration.startswith("Sunlight looks white")
    # mode="script" narrates even a short text as written.
    forced = write_storyboard("Make a video about volcanoes", mode="script")
    assert [s.narration for s in forced.scenes] == ["Make a video about volcanoes"]


def test_chosen_provider_is_noted_and_project_fields_are_set():
    project = write_storyboard(read_script(EXAMPLES / "sky.md"), title="My Sky", aspect="9:16", style="watercolour",
                               language="en-GB", voice="joe", seed=7, preset=load_preset("draft"))
    assert project.notes[0].startswith("storyboard: rules: ")
    assert "first of [openai, transformers, rules]" in project.notes[0]
    assert "skipped openai cannot run" in project.notes[0]  # and says why the model writers were not used
    assert (project.title, project.aspect, project.style, project.language, project.voice, project.seed) == \
        ("My Sky", "9:16", "watercolour", "en-GB", "joe", 7)
    assert project.brief == read_script(EXAMPLES / "sky.md")
    chosen = write_storyboard("Some words to say. More of them. And more.", writer="rules")
    assert chosen.notes[0] == "storyboard: rules: chosen by the user (offline, no model)"


def test_rules_writer_follows_the_protocol():
    writer = RulesWriter()
    assert isinstance(writer, StoryboardWriter) and writer.name == "rules"
    draft = writer.write("One sentence here. Another one.", mode="script", title=None, language="en", style="",
                         target_s=None, cancel=None)
    assert isinstance(draft, Draft) and draft.title == "One sentence here"
    assert [s.narration for s in draft.scenes] == ["One sentence here. Another one."]


def test_script_is_never_cut_to_a_target_length():
    text = read_script(EXAMPLES / "coffee.md")
    plain = write_storyboard(text)
    short = write_storyboard(text, target_s=10)
    assert [s.narration for s in short.scenes] == [s.narration for s in plain.scenes]
    assert any("never cuts" in n for n in short.notes)
    assert not any("never cuts" in n for n in write_storyboard(text, target_s=60).notes)  # ~180 words: about 60 s


def test_progress_and_cancel():
    seen = []
    write_storyboard("A script. With two sentences. And a third.", on_progress=lambda f, m: seen.append((f, m)))
    assert seen and seen[-1][0] == 1.0 and all(0.0 <= f <= 1.0 for f, _ in seen)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        write_storyboard("A script. With two sentences. And a third.", cancel=token)


# -- errors -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    ({"source": ""}, "the script is empty"),
    ({"source": "  \n\t "}, "the script is empty"),
    ({"source": "Hi there.", "mode": "poem"}, "`mode`"),
    ({"source": "Hi there.", "writer": "gpt-9"}, "`writer`"),
    ({"source": "Hi there.", "aspect": "4:3"}, "`aspect`"),
    ({"source": "Hi there.", "target_s": -5}, "`target_s`"),
    ({"source": "Hi there.", "language": ""}, "`language`"),
    ({"source": "# Only\n\n## Headings", "mode": "script"}, "no narration"),
    ({"source": "![a picture](photo.png)"}, "no words"),
    ({"source": "Hi there.", "preset": "nonexistent"}, "unknown preset"),
])
def test_bad_input_raises_a_helpful_error(kwargs, needle):
    source = kwargs.pop("source")
    with pytest.raises(StudioError) as info:
        write_storyboard(source, **kwargs)
    assert needle in str(info.value)
    if needle == "`writer`":
        assert "rules" in str(info.value)  # it lists what can be chosen


def test_read_script_accepts_text_files(tmp_path):
    assert read_script(EXAMPLES / "coffee.md") == (EXAMPLES / "coffee.md").read_text("utf-8")
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffHello there.".encode("utf-8"))
    assert read_script(bom) == "Hello there."
    upper = tmp_path / "upper.MARKDOWN"
    upper.write_text("# T\n\nText.", "utf-8")
    assert read_script(str(upper)).startswith("# T")


@pytest.mark.parametrize("name, content, needle", [
    ("missing.md", None, "does not exist"),
    ("script.pdf", b"%PDF-1.4", ".md, .markdown or .txt"),
    ("noext", b"text", "no extension"),
    ("binary.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("latin1.txt", "Caf\u00e9 au lait".encode("latin-1"), "not UTF-8"),
    ("empty.md", b"", "empty"),
    ("blank.txt", b" \n\n\t", "empty"),
    ("huge.md", b"word " * 50_000, "200 kB"),
    ("folder.md", "dir", "not a file"),
])
def test_read_script_errors_name_the_file(tmp_path, name, content, needle):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(StudioError) as info:
        read_script(path)
    assert needle in str(info.value)
    assert name in str(info.value)


# -- the writer contract, for every registered storyboard writer ----------------------------------------------------------
_BRIEF_ANSWER = ('{"title": "Bees", "scenes": [{"narration": "Bees visit flowers.", "visual_prompt": "a bee"}, '
                 '{"narration": "They make honey.", "visual_prompt": "honeycomb", "duration_s": 5}]}')
_SCRIPT = "# Bees\n\nBees visit flowers for nectar. They carry it home.\n\nIn the hive it becomes honey."


def _writer_answers(name: str) -> list[str]:
    """What a model writer is scripted to answer: a brief's storyboard, a script's two visual prompts, a rewrite."""
    return [_BRIEF_ANSWER, '{"visual_prompts": ["a bee on a flower", "a hive"]}', '{"text": "Honey is made inside."}']


@pytest.mark.parametrize("name", providers.names("storyboard"))
def test_writer_contract(name, tiny_models):
    from contextlib import ExitStack

    from studio.testing import ScriptedChat

    from .openai_server import OpenAIServer

    with ExitStack() as stack:
        options = dict(tiny_models.options(name))
        if name == "openai":  # a real HTTP server on 127.0.0.1
            server = stack.enter_context(OpenAIServer(answers=_writer_answers(name)))
            options = {"base_url": server.url, "model": "tiny-chat"}
        writer, choice = providers.create("storyboard", name, **options)
        if name == "transformers":  # the tiny random-weight LM writes noise: script what it says
            stack.enter_context(ScriptedChat(writer, _writer_answers(name)))
        assert isinstance(writer, StoryboardWriter) and writer.name == name and choice.name == name

        brief = writer.write("How bees make honey", mode="brief", title=None, language="en", style="", target_s=20)
        assert isinstance(brief, Draft) and brief.title and brief.scenes
        for scene in brief.scenes:
            assert ID_RE.match(scene.id) and scene.narration.strip() and scene.visual_prompt.strip()
            assert scene.audio is None and scene.visual is None
        assert len({s.id for s in brief.scenes}) == len(brief.scenes)

        script = writer.write(_SCRIPT, mode="script", title=None, language="en", style="", target_s=None)
        assert script.title == "Bees"
        assert words(" ".join(s.narration for s in script.scenes)) == words(_SCRIPT.split("\n", 1)[1])
        assert all(s.visual_prompt.strip() for s in script.scenes)

        project = Project(title="Bees", scenes=script.scenes)
        instruction = "" if name == "rules" else "simpler"
        text = writer.rewrite(project, script.scenes[-1].id, field="narration", instruction=instruction)
        assert isinstance(text, str) and text.strip()


def test_key_words_of_every_script_are_whole_words():
    """A title card's words come from the narration's key words: a Devanagari word keeps its virama and vowel signs
    (Python's \\w leaves combining marks out, which cut नमस्ते to नमस), and a two-character Han word is a word."""
    from studio.storyboard.text import content_words, count_words, key_phrases

    assert content_words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    assert content_words("We flew to 東京 today.") == ["東京"]
    assert key_phrases("Здравствуй, мир.") == ["здравствуй", "мир"]
    assert count_words("नमस्ते दुनिया, don't stop") == 4
    assert content_words("It is an ox.") == []  # short words of Latin text are still not key words


def test_markdown_backslash_escapes_give_the_literal_character_once():
    from studio.storyboard.text import read_markdown

    source = "\n".join([
        r"A \\ B and \*stars\* and \_under\_ and \[x\] and \$5 \% \{a\} \@me \"q\" \# \~ \! here.",
        "",
        r"path C:\temp\d stays and \\server\share too.",
        "",
        r"\# not a heading",
        "",
        r"two \\\\ slashes, \\*em* after one, `code \* \\ kept` and \`not code\`.",
        "",
        "hard break \\",
        "next and escaped end \\\\",
        "and odd \\\\\\",
        "end",
    ])
    pieces = [b.text for b in read_markdown(source).blocks]
    assert pieces == [
        'A \\ B and *stars* and _under_ and [x] and $5 % {a} @me "q" # ~ ! here.',
        "path C:\\temp\\d stays and \\server\\share too.",  # a backslash before a letter is not an escape
        "# not a heading",
        "two \\\\ slashes, \\em after one, code \\* \\\\ kept and `not code`.",  # code spans keep backslashes
        "hard break\nnext and escaped end \\\nand odd \\\nend",  # an escaped backslash is no hard line break
    ]
    assert all(b.kind == "paragraph" for b in read_markdown(source).blocks)
