"""The offline ``rules`` storyboard writer: splits a script into scenes, or outlines a brief from its own words.

It needs no model and no network, so it always runs. Script mode keeps every word the user wrote, in order, and only
decides where scenes begin and what each scene shows. Brief mode cannot write prose without a language model, so it
makes an honest outline (an opening, one scene per group of the brief's key words, a closing) from the brief's own
words plus a few fixed connective words, and says so in the draft's notes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection

from ..errors import ProviderUnavailable, StudioError
from ..progress import CancelToken, check
from ..project import Project, Scene, new_scene_id
from ..providers import register
from . import Draft
from .text import (Block, content_words, count_words, even_groups, join_and, key_phrases, normalise, proper_words,
                   read_markdown, scene_spans, sentence_spans)

# Scene size in script mode.
MAX_SCENE_WORDS = 45
MAX_SCENE_SENTENCES = 3
MIN_SCENE_WORDS = 6
# Speaking rate used to estimate a script's length (about 150 words a minute).
WORDS_PER_S = 2.5
# Brief mode: seconds of video per outline scene, and the default length when no target is given.
OUTLINE_SCENE_S = 7.0
OUTLINE_DEFAULT_S = 30.0
# The only words an English outline adds to the brief's own.
OUTLINE_WORDS = frozenset("this video is about first next then finally to sum up".split())
# How a request usually starts ("Make a short video about ..."); removed to find the topic.
_REQUEST_RE = re.compile(
    r"^\s*(?:please[\s,]+)?(?:(?:can|could|would)\s+you\s+)?"
    r"(?:(?:make|create|write|produce|generate|build|draft|prepare|give\s+me|i\s+want|i\s+need|i'd\s+like|we\s+need)\s+)?"
    r"(?:me\s+|us\s+)?(?:an?\s+|the\s+|some\s+)?"
    r"(?:(?:short|quick|brief|simple|fun|little|small|friendly|clear|engaging|animated|educational|narrated|"
    r"\d+[\s-]*(?:seconds?|secs?|minutes?|mins?|s)(?:[\s-]*long)?)[\s,-]+)*"
    r"(?:(?:video|explainer|film|clip|story|lesson|presentation|overview|introduction|intro|tutorial|documentary|"
    r"piece|reel|storyboard|script|slideshow)s?\s+)?"
    r"(?:(?:about|on|of|explaining|that\s+explains|to\s+explain|introducing|describing|covering|showing)\s+)?"
    r"(?:(?:explain|describe|show|teach|introduce|present|tell\s+(?:me|us|them|people)\s+about)\s+)?",
    re.I,
)


@register("storyboard", "rules", check=lambda: "offline, no model",
          description="Offline: splits a script into scenes; outlines a brief from its own words")
def rules() -> "RulesWriter":
    """The offline rules writer (always available)."""
    return RulesWriter()


class RulesWriter:
    """Splits scripts into scenes and outlines briefs without a language model; deterministic."""

    name = "rules"
    hooks = frozenset({"rewrite"})  # optional hooks it implements (studio.providers.HOOKS)

    def write(self, source: str, *, mode: str, title: str | None = None, language: str = "en", style: str = "",
              target_s: float | None = None, cancel: CancelToken | None = None) -> Draft:
        """Write a draft storyboard.

        Args:
            source: The script (``mode="script"``) or the brief (``mode="brief"``), Markdown or plain text.
            mode: ``"script"`` or ``"brief"`` (``write_storyboard`` resolves ``"auto"`` first).
            title: A title chosen by the user; otherwise one is taken from the text.
            language: Language of the text; brief outlines add English connective words only for English.
            style: Unused here (painters apply the style); accepted for the protocol.
            target_s: Wanted length in seconds: sets the number of outline scenes in brief mode; a script is never cut.
            cancel: Checked between paragraphs.
        """
        if mode == "script":
            return _write_script(source, title, target_s, cancel)
        if mode == "brief":
            return _write_outline(source, title, language, target_s)
        raise ValueError(f"mode must be 'script' or 'brief', got {mode!r}")

    def rewrite(self, project: Project, scene_id: str, *, field: str, instruction: str = "",
                cancel: CancelToken | None = None) -> str:
        """The offline rewrite: tidy the narration, or make the visual prompt again from the narration's key words.

        Raises:
            ProviderUnavailable: an `instruction` was given; following one needs an LLM writer.
        """
        if instruction.strip():
            raise ProviderUnavailable("following an instruction needs an LLM storyboard writer (transformers with a "
                                      "local model, or openai with a server): the offline rules writer can only tidy "
                                      "the narration or make the visual prompt again from its key words; leave the "
                                      "instruction empty for that")
        scene = project.scene(scene_id)
        if field == "narration":
            return tidy_narration(scene.narration)
        if field == "visual_prompt":
            body = " ".join(s.narration for s in project.scenes)
            proper = proper_words(body)
            topic = _topic(project.title, body, proper)
            return _visual_prompt(scene.narration, heading=None, topic=topic, proper=proper) or scene.visual_prompt
        raise StudioError(f"`field` must be narration or visual_prompt, got {field!r}")


# --------------------------------------------------------------------------------------------------------------------
# Script mode
# --------------------------------------------------------------------------------------------------------------------


# Words that are correctly said twice in a row ("I know that that is true", "it had had enough").
_GOOD_DOUBLES = frozenset({"that", "had", "is", "do", "very", "so", "bye", "no", "yes"})


def tidy_narration(text: str) -> str:
    """A deterministic clean-up of narration: one space between words, none before punctuation, a doubled word
    ("the the") said once, a capital first letter and a final full stop. The words themselves are kept."""
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.;:!?…])", r"\1", text)
    text = re.sub(r"\b(\w+)(\s+\1\b)+", lambda m: m.group(0) if m.group(1).lower() in _GOOD_DOUBLES else m.group(1),
                  text, flags=re.I)
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    if text and not re.search(r"[.!?…。！？\"”’)]$", text):
        text += "."
    return text


def _strip_final(text: str) -> str:
    return text.strip().rstrip(".!?…:;,。！？ ").strip()


def _title_of(blocks: list[Block], front_title: str | None) -> tuple[str | None, int | None]:
    """(title, index of the block it came from, which is then not narrated)."""
    # 1. The first level-1 heading, if no narration comes before it.
    for i, block in enumerate(blocks):
        if block.kind == "paragraph":
            break
        if block.level == 1:
            return block.text, i
    if front_title:
        return front_title, None
    # 2. A short first line standing alone, without final punctuation ("Fractions in three minutes").
    paragraphs = [i for i, b in enumerate(blocks) if b.kind == "paragraph"]
    first = paragraphs[0] if paragraphs else None
    if first is not None and len(paragraphs) > 1:
        text = blocks[first].text
        if ("\n" not in text and count_words(text) <= 10 and len(text) <= 80
                and not re.search(r"[.!?…:;,。！？\"”’)]$", text)):
            return text, first
    # 3. A leading heading of any level, else the first words (which stay in the narration).
    for block in blocks:
        if block.kind == "heading":
            return block.text, None
        break
    if first is not None:
        a, b = sentence_spans(blocks[first].text)[0]
        words = _strip_final(blocks[first].text[a:b]).split()
        return " ".join(words[:8]).rstrip(",;:—–-"), None
    return None, None


def _topic(title: str, body: str, proper: set[str]) -> str | None:
    """The subject of the whole script: a title word the body repeats, else the body's most repeated key word."""
    words = content_words(body)
    counts = Counter(normalise(w) for w in words)
    forms: dict[str, Counter] = {}
    for w in words:
        forms.setdefault(normalise(w), Counter())[w] += 1
    candidates = [normalise(w) for w in content_words(title) if counts[normalise(w)] >= 2]
    if not candidates:
        candidates = [lemma for lemma, n in counts.items() if n >= 3]
    if not candidates:
        return None
    best = max(candidates, key=lambda lemma: (counts[lemma], -candidates.index(lemma)))
    word = forms[best].most_common(1)[0][0]
    return word if word in proper or word.isupper() else word.lower()


def _visual_prompt(narration: str, *, heading: str | None, topic: str | None, proper: set[str]) -> str:
    """3-6 key words or short phrases of a scene, in order of appearance, led by its section heading or the topic."""
    items: list[str] = []
    lemmas = {normalise(w) for w in content_words(narration)}
    if heading:
        items.append(heading)
    elif topic and normalise(topic) not in lemmas:
        items.append(topic)  # "coffee, cherry, pickers": the picture needs the subject the scene takes for granted
    for phrase in key_phrases(narration, limit=6 - len(items), proper=proper):
        if phrase.lower() not in (item.lower() for item in items):
            items.append(phrase)
    return ", ".join(items[:6])


def _write_script(source: str, title: str | None, target_s: float | None, cancel: CancelToken | None) -> Draft:
    # 1. Read the Markdown and find the title.
    doc = read_markdown(source)
    blocks = list(doc.blocks)
    found_title, title_index = _title_of(blocks, doc.front_title)
    if title_index is not None:
        del blocks[title_index]
    body = "\n\n".join(b.text for b in blocks if b.kind == "paragraph")
    if not body.strip():
        raise StudioError("the script has no narration: it holds only headings, code or images; "
                          "write the words to be spoken as paragraphs")
    proper = proper_words(body)
    topic = _topic(title or found_title or "", body, proper)

    # 2. Cut every paragraph into scenes; a sub-heading starts a new scene and labels its picture, unspoken.
    scenes: list[Scene] = []
    heading: str | None = None
    for block in blocks:
        check(cancel)
        if block.kind == "heading":
            heading = block.text
            continue
        text = block.text
        for a, b in scene_spans(block, max_words=MAX_SCENE_WORDS, max_sentences=MAX_SCENE_SENTENCES,
                                min_words=MIN_SCENE_WORDS):
            narration = text[a:b]
            prompt = _visual_prompt(narration, heading=heading, topic=topic, proper=proper)
            scenes.append(Scene(id=new_scene_id(), narration=narration, visual_prompt=prompt))
            heading = None

    # 3. Notes: what was left out, and a target length the script does not meet (it is never cut).
    notes = []
    if doc.skipped:
        notes.append("storyboard: left out of the narration: " + ", ".join(doc.skipped))
    if target_s:
        spoken_s = count_words(body) / WORDS_PER_S
        if abs(spoken_s - target_s) > 0.5 * target_s:
            notes.append(f"storyboard: the script reads in about {spoken_s:.0f} s, far from the {target_s:.0f} s asked; "
                         "script mode never cuts or pads a script, so shorten or extend it yourself")
    return Draft(title=title or found_title or "Untitled", scenes=tuple(scenes), notes=tuple(notes))


# --------------------------------------------------------------------------------------------------------------------
# Brief mode (no language model): an outline from the brief's own words
# --------------------------------------------------------------------------------------------------------------------


# Words a cut-off topic must not end on (it would read "... and ate ramen at a").
_DANGLING = frozenset("a an the and or but of to at in on by for from with into onto near about as than that "
                      "my our your their his her its this these those some".split())


def _brief_core(brief: str) -> str:
    """The brief's topic: its first sentence without the request around it ("Make a short video about X" -> "X")."""
    spans = sentence_spans(brief)
    first = brief[spans[0][0]:spans[0][1]] if spans else brief
    first = " ".join(first.split())
    core = _REQUEST_RE.sub("", first, count=1).strip()
    core = _strip_final(core or first)
    words = core.split()
    if len(words) > 10:
        # A long request: keep its first clause, else its first ten words.
        clause = re.split(r"[,;:—–(]", core)[0].strip()
        words = clause.split()[:10] if 2 <= len(clause.split()) else words[:10]
        while len(words) > 2 and words[-1].lower() in _DANGLING:  # "... ate ramen at a" -> "... ate ramen"
            words = words[:-1]
        core = _strip_final(" ".join(words))
    return core


def _write_outline(source: str, title: str | None, language: str, target_s: float | None) -> Draft:
    # 1. Read the brief (it may be Markdown too) and find its topic and key words.
    doc = read_markdown(source)
    heading = doc.first_heading(1)
    brief = "\n".join(b.text for b in doc.blocks if b is not heading) or (heading.text if heading else "")
    if not brief.strip():
        raise StudioError("the brief has no words once its Markdown is removed (only images, code or markup); "
                          "type what the video should be about")
    core = _brief_core(brief) or _strip_final(brief) or " ".join(brief.split())
    proper = proper_words(brief)
    found_title = heading.text if heading else (core[:1].upper() + core[1:])
    # Key words come from the brief without its request words ("make a short video about").
    topic_text = " ".join(_REQUEST_RE.sub("", brief[a:b], count=1) for a, b in sentence_spans(brief))
    phrases = [p for p in key_phrases(topic_text, limit=12, proper=proper, max_total_words=24) if not _is_request(p)]
    english = language.lower().startswith("en")

    # 2. How many scenes: ~7 s each for the target length, but never more key-word scenes than key words.
    wanted = max(3, round((target_s or OUTLINE_DEFAULT_S) / OUTLINE_SCENE_S))
    middle = min(wanted - 2, len(phrases))
    notes = ["storyboard: the offline rules writer made an outline from the brief's own words (it does not invent "
             "facts); edit the narration, paste a full script, or use an LLM storyboard provider (transformers, or "
             "an OpenAI-compatible server) to have real scripts written"]
    if middle < wanted - 2:
        notes.append(f"storyboard: the brief has {len(phrases)} key word(s), so the outline has "
                     f"{middle + 2 if phrases else 1} scene(s) instead of the ~{wanted} a "
                     f"{target_s or OUTLINE_DEFAULT_S:.0f} s video needs")
    if not english:
        notes.append(f"storyboard: language {language!r}: the outline uses only the brief's words, without English "
                     "connective words")

    # 3. Opening, key-word scenes (the key words shared out in order), closing.
    topic_lemmas = {normalise(w) for w in content_words(core)}
    scenes = [(_opening(_with_article(brief, core), proper) if english else f"{found_title}.", core)]
    groups = even_groups(len(phrases), middle)
    for i, (a, b) in enumerate(groups):
        shown = phrases[a:b]
        if i == 0:
            lead = "First"
        elif i == len(groups) - 1:
            lead = "Finally"
        else:
            lead = "Then" if i % 2 == 0 else "Next"
        words = join_and(shown) if english else ", ".join(shown)
        narration = f"{lead}, {words}." if english else f"{words[:1].upper()}{words[1:]}."
        scenes.append((narration, ", ".join(shown)))
    if phrases:
        recap = phrases[:4]
        closing = f"To sum up: {join_and(recap)}." if english else ", ".join(recap) + "."
        scenes.append((closing[:1].upper() + closing[1:], ", ".join(recap)))
    built = []
    for narration, prompt in scenes:
        prompt_items = [p.strip() for p in prompt.split(",") if p.strip()]
        if core.lower() not in (p.lower() for p in prompt_items) and not topic_lemmas & {
                normalise(w) for w in content_words(prompt)}:
            prompt_items.insert(0, core)
        built.append(Scene(id=new_scene_id(), narration=narration, visual_prompt=", ".join(prompt_items[:6])))
    return Draft(title=title or found_title or "Untitled", scenes=tuple(built), notes=tuple(notes))


# Reading an English brief's topic for the opening line (`_opening`): whether it is a noun phrase ("how bees make
# honey", "the history of tea"), which follows "This video is about", or a sentence ("We flew to Tokyo today", "The sky
# is blue"), or a question ("Why is the sky blue"), which are said as they are.
_SUBJECT_PRONOUNS = frozenset("i we you they he she it i'm we're you're they're he's she's it's i've we've you've "
                              "they've i'd we'd you'd they'd i'll we'll you'll they'll let's there's".split())
_POSSESSIVES = frozenset("my our your their his her".split())
_DEMONSTRATIVES = frozenset("this that these those there it".split())
_AUXILIARIES = frozenset("is are was were am be been has have had do does did will would can could shall should may "
                         "might must isn't aren't wasn't weren't hasn't haven't hadn't don't doesn't didn't won't "
                         "wouldn't can't couldn't shouldn't".split())
_QUESTION_WORDS = frozenset("how why what when where who whom whose which".split())
# Words after which an auxiliary belongs to a subordinate clause ("the reasons why the sky is blue").
_SUBORDINATORS = _QUESTION_WORDS | frozenset("that whether if because while although though since as once until "
                                             "unless".split())


def _brief_kind(core: str) -> str:
    """``question``, ``sentence`` or ``phrase``: how an English brief's topic reads (a heuristic on its first words:
    no tagger runs offline)."""
    words = [w.strip("\"'“”‘’()[]").replace("’", "'").lower() for w in core.split()]
    words = [w for w in words if w]
    if not words:
        return "phrase"
    first, second = words[0], (words[1] if len(words) > 1 else "")
    if first in _AUXILIARIES and len(words) > 1:
        return "question"  # "Is coffee bad for you", "Can plants hear"
    if first in _QUESTION_WORDS:
        return "question" if second in _AUXILIARIES else "phrase"  # "why is ..." / "why the sky is blue"
    if first in _SUBJECT_PRONOUNS or (first in _DEMONSTRATIVES and second in _AUXILIARIES):
        return "sentence"  # "We flew to Tokyo today", "This is my first vlog"
    for i, word in enumerate(words[1:], start=1):
        if word in _SUBORDINATORS:
            return "phrase"  # "the reasons why the sky is blue"
        if word in _AUXILIARIES:
            return "sentence"  # "The sky is blue", "Tokyo was amazing"
        if first in _POSSESSIVES and i <= 3 and len(word) > 4 and word.endswith("ed"):
            return "sentence"  # "Our team finished second"
    return "phrase"


def _with_article(brief: str, core: str) -> str:
    """`core` with the article the request pattern took from its start ("The sky is blue" -> "sky is blue" -> "the
    sky is blue"), when the brief's first sentence begins with that article followed by `core`."""
    first = " ".join(brief.split())
    match = re.match(r"(the|an?|some)\s+", first, re.I)
    if match and first[match.end():].startswith(core):
        return f"{match.group(1)} {core}"
    return core


def _opening(core: str, proper: Collection[str] = ()) -> str:
    """The outline's first line in English: "This video is about how honeybees turn nectar into honey." for a noun
    phrase; a sentence or a question is said as the brief puts it ("We flew to Tokyo today.", "Why is the sky blue?"):
    "This video is about we flew ..." is not English."""
    if not re.search(r"[A-Za-z]", core):  # not written in Latin letters: said as it is, no English words added
        return core + "."
    infinitive = re.match(r"(?i)to\s+([A-Za-z]+)\s+(.+)", core)
    if infinitive:  # "I want to show how tea is made" (its request words gone): say what the video does
        return f"In this video we {infinitive.group(1).lower()} {infinitive.group(2)}."
    kind = _brief_kind(core)
    first = core.split()[0] if core.split() else ""
    if kind == "phrase":
        keep = first in proper or first.isupper() and len(first) > 1
        return f"This video is about {core if keep else core[:1].lower() + core[1:]}."
    return core[:1].upper() + core[1:] + ("?" if kind == "question" else ".")


_REQUEST_WORDS = frozenset("video explainer clip film movie short quick brief minute second sec min long audience "
                           "viewer script storyboard".split())


def _is_request(phrase: str) -> bool:
    """Whether a phrase only describes the request ("short video", "60-second explainer"), not the topic."""
    words = [w for w in re.split(r"[\s-]+", phrase.lower()) if w]
    return any(normalise(w) in _REQUEST_WORDS for w in words) and all(
        normalise(w) in _REQUEST_WORDS or w.isdigit() for w in words)
