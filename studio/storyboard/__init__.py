"""Step 1, the storyboard: turn a script or a brief into scenes (narration + what each scene shows).

    project = write_storyboard(open("examples/coffee.md").read())            # a script: split into scenes
    project = write_storyboard("A short video about how bees make honey")  # a brief: written by a writer

A writer is a provider of kind ``"storyboard"`` (see `StoryboardWriter`): ``rules`` (offline, always available)
splits scripts and outlines briefs from their own words; LLM writers (transformers, an OpenAI-compatible server)
write real scripts from briefs. Each provider lives in its own module in this package and registers itself when this
package is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .. import providers
from ..errors import ProviderUnavailable, StudioError
from ..presets import Preset, load_preset
from ..progress import CancelToken, ProgressFn, check, no_progress
from ..project import Project, Scene, check_aspect

MODES = ("auto", "script", "brief")
SCRIPT_SUFFIXES = (".md", ".markdown", ".txt")
MAX_SCRIPT_BYTES = 200_000
# "auto" reads a text as a brief when it is one paragraph of at most this many sentences and words.
BRIEF_MAX_SENTENCES = 2
BRIEF_MAX_WORDS = 40


@dataclass(frozen=True)
class Draft:
    """What a writer returns: a title, the scenes, and notes for the user (e.g. "this is only an outline").

    Attributes:
        title: The video's title.
        scenes: The scenes, in order (narration and visual prompt filled; no assets).
        notes: Messages for the user; `write_storyboard` adds them to the project's notes.
    """

    title: str
    scenes: tuple[Scene, ...]
    notes: tuple[str, ...] = ()


@runtime_checkable
class StoryboardWriter(Protocol):
    """A storyboard provider: writes scenes from a script or a brief.

    Optional hooks, declared in ``hooks`` (see `studio.providers.HOOKS`): ``rewrite`` (a method
    ``rewrite(project, scene_id, *, field, instruction, cancel) -> str``), ``release`` (frees its model).
    """

    name: str
    hooks: frozenset[str]  # the optional hooks it implements

    def write(self, source: str, *, mode: str, title: str | None, language: str, style: str,
              target_s: float | None, cancel: CancelToken | None) -> Draft:
        """Write the storyboard of `source`.

        Args:
            source: The script or brief (Markdown or plain text).
            mode: ``"script"`` (the text is the narration: keep it) or ``"brief"`` (write about it).
            title: The user's title, or None to find or write one.
            language: Language of the narration to write (e.g. ``"en"``).
            style: The project's visual style, a hint for visual prompts.
            target_s: Wanted length of the video in seconds, or None.
            cancel: Checked between units of work.
        """
        ...


def detect_mode(source: str) -> tuple[str, str]:
    """Whether a text reads as a brief or a script, and why.

    A brief is short: one paragraph of at most `BRIEF_MAX_SENTENCES` sentences and `BRIEF_MAX_WORDS` words (a leading
    title heading does not count). Anything longer is a script.

    Returns:
        (``"brief"`` or ``"script"``, a reason for the notes).
    """
    from .text import count_words, read_markdown, sentence_spans

    doc = read_markdown(source)
    paragraphs = [b for b in doc.blocks if b.kind == "paragraph"]
    headings = [b for b in doc.blocks if b.kind == "heading"]
    text = "\n".join(b.text for b in paragraphs) or "\n".join(b.text for b in headings)
    words = count_words(text)
    sentences = sum(len(sentence_spans(piece)) for b in paragraphs for piece in b.pieces) or (1 if text else 0)
    facts = f"{len(paragraphs)} paragraph(s), {sentences} sentence(s), {words} words"
    if len(paragraphs) <= 1 and len(headings) <= 1 and sentences <= BRIEF_MAX_SENTENCES and words <= BRIEF_MAX_WORDS:
        return "brief", f"auto mode read the text as a brief ({facts}); pass mode='script' to narrate it as written"
    return "script", f"auto mode read the text as a script ({facts})"


def read_script(path: str | Path) -> str:
    """Read a script or brief file (``.md``, ``.markdown`` or ``.txt``, UTF-8, at most 200 kB).

    Raises:
        StudioError: the file is missing, is a folder, has another extension, is too big, is not UTF-8 text, or is
            empty; the message names the file and says what to do.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in SCRIPT_SUFFIXES:
        raise StudioError(f"script {path} must be a .md, .markdown or .txt file, got {suffix or 'no extension'!r}; "
                          "save the script as plain text or Markdown")
    if not path.exists():
        raise StudioError(f"script file {path} does not exist")
    if not path.is_file():
        raise StudioError(f"script {path} is not a file (it is a folder or a device); give the path of a text file")
    size = path.stat().st_size
    if size > MAX_SCRIPT_BYTES:
        raise StudioError(f"script {path} is {size / 1000:.0f} kB; the limit is {MAX_SCRIPT_BYTES // 1000} kB "
                          "(about 30,000 words): split it into several videos")
    data = path.read_bytes()
    if b"\x00" in data:
        raise StudioError(f"script {path} is a binary file, not text; save the script as UTF-8 text (.md or .txt)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StudioError(f"script {path} is not UTF-8 text (byte {exc.start} cannot be decoded); "
                          "save it with UTF-8 encoding") from None
    if not text.strip():
        raise StudioError(f"script {path} is empty: write the narration (or a brief) in it")
    return text


@providers.leasing
def write_storyboard(source: str, *, mode: str = "auto", writer: str = "auto", title: str | None = None,
                     aspect: str = "16:9", style: str = "", language: str = "en", voice: str | None = None,
                     target_s: float | None = None, seed: int = 0, preset: Preset | str | None = None,
                     on_progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Project:
    """Write a storyboard (step 1): a new `Project` whose scenes hold narration and visual prompts.

    Args:
        source: A script (the narration, Markdown or plain text) or a short brief to write about.
        mode: ``"script"``, ``"brief"``, or ``"auto"`` (a brief when the text is one short paragraph of at most two
            sentences and about 40 words, else a script).
        writer: Storyboard provider name, or ``"auto"`` (the preset's preference, else the first that runs here).
        title: The video's title; None to take it from the script (its first heading or line) or the brief.
        aspect: ``"16:9"``, ``"9:16"`` or ``"1:1"``.
        style: Visual style for every scene (e.g. "flat pastel illustration"), kept on the project for painters.
        language: Language of the narration (e.g. ``"en"``).
        voice: Narrator voice, None for the narrator's default.
        target_s: Wanted length in seconds: guides how much a writer writes from a brief; a script is never cut.
        seed: The project's seed.
        preset: A `Preset` (or its name) whose ``[providers] storyboard`` list orders the ``auto`` choice.
        on_progress: ``on_progress(fraction, message)``.
        cancel: A `CancelToken`, checked before and after writing (writers also check it).

    Returns:
        A `Project` without a folder; its notes say which writer ran and why, and anything the writer wants known.

    Raises:
        StudioError: empty source, unknown `mode` or `writer`, bad `aspect` or `target_s`; `ProviderUnavailable` when
            the chosen writer cannot run here (the message says what to install).
    """
    report = on_progress or no_progress
    # 1. Check inputs.
    if not isinstance(source, str) or not source.strip():
        raise StudioError("the script is empty: paste a script or type a brief")
    if len(source.encode("utf-8")) > MAX_SCRIPT_BYTES:
        raise StudioError(f"the script is longer than {MAX_SCRIPT_BYTES // 1000} kB (about 30,000 words): "
                          "split it into several videos")
    if mode not in MODES:
        raise StudioError(f"`mode` must be one of {', '.join(MODES)}, got {mode!r}")
    check_aspect(aspect)
    if target_s is not None:
        if isinstance(target_s, bool) or not isinstance(target_s, (int, float)) or not 1 <= target_s <= 3600:
            raise StudioError(f"`target_s` must be a number of seconds from 1 to 3600, or None; got {target_s!r}")
        target_s = float(target_s)
    if not isinstance(language, str) or not language.strip():
        raise StudioError(f"`language` must be a language code such as 'en', got {language!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise StudioError(f"`seed` must be a whole number, got {seed!r}")
    if title is not None and not title.strip():
        title = None
    if isinstance(preset, str):
        preset = load_preset(preset)
    known = providers.names("storyboard")
    if writer != "auto" and writer not in known:
        raise StudioError(f"`writer` must be 'auto' or one of {', '.join(known)}, got {writer!r}")
    check(cancel)

    # 2. Resolve the mode and choose the writer.
    notes: list[str] = []
    if mode == "auto":
        mode, why = detect_mode(source)
        notes.append(f"storyboard: {why}")
    prefer = preset.providers.get("storyboard") if preset is not None else None
    configs = preset.models if preset is not None else None
    instance, choice = providers.create("storyboard", writer, prefer=prefer, configs=configs)
    notes.insert(0, f"storyboard: {choice.reason}")
    report(0.05, f"storyboard: writing from the {mode} with {choice.name}")

    # 3. Write, then check what came back.
    draft = instance.write(source, mode=mode, title=title, language=language, style=style, target_s=target_s,
                           cancel=cancel)
    check(cancel)
    if not isinstance(draft, Draft) or not draft.scenes:
        raise StudioError(f"the {choice.name} storyboard writer returned no scenes; try mode='script' or another "
                          "`writer`")
    for i, scene in enumerate(draft.scenes):
        if not isinstance(scene, Scene) or not scene.narration.strip():
            raise StudioError(f"the {choice.name} storyboard writer returned an empty scene {i + 1}; "
                              "edit the storyboard or try another `writer`")
    report(1.0, f"storyboard: {len(draft.scenes)} scenes")
    return Project(
        title=title or draft.title or "Untitled",
        scenes=tuple(draft.scenes),
        brief=source,
        style=style,
        aspect=aspect,
        language=language,
        voice=voice,
        seed=seed,
        notes=tuple(notes) + tuple(draft.notes),
    )


REWRITE_FIELDS = ("narration", "visual_prompt")


@providers.leasing
def rewrite_scene(project: Project, scene_id: str, *, field: str = "narration", instruction: str = "",
                  writer: str = "auto", preset: Preset | str | None = None,
                  cancel: CancelToken | None = None) -> Project:
    """Rewrite one scene's narration or visual prompt, keeping the rest of the storyboard (the studio's per-scene edit).

    An LLM writer (``transformers``, ``openai``) rewrites the text following `instruction`, with the scenes around it
    as context. The offline ``rules`` writer cannot follow instructions: without one it tidies the narration
    (spacing, capitals, final punctuation, doubled words) or makes the visual prompt again from the narration's key
    words; with one it raises `ProviderUnavailable` saying that an LLM writer is needed.

    Args:
        project: The project (not changed).
        scene_id: The scene to rewrite.
        field: ``"narration"`` or ``"visual_prompt"``.
        instruction: What to change, e.g. "shorter, for children"; empty for a general clean-up.
        writer: A storyboard provider name, or ``"auto"`` (the preset's preference order).
        preset: A `Preset` (or its name) for the ``auto`` order and the writers' model options.
        cancel: Checked before and after the rewrite.

    Returns:
        A new `Project` whose scene has the new text (its audio or visual is dropped when the text changed) and a
        note saying which writer rewrote what.

    Raises:
        StudioError: unknown scene id, `field` or `writer`; a writer that gave no usable text.
        ProviderUnavailable: the chosen writer cannot run here, or cannot follow an instruction (rules).
    """
    # 1. Check inputs.
    if field not in REWRITE_FIELDS:
        raise StudioError(f"`field` must be one of {', '.join(REWRITE_FIELDS)}, got {field!r}")
    if not isinstance(instruction, str):
        raise StudioError(f"`instruction` must be text, got {type(instruction).__name__}")
    if len(instruction) > 2000:
        raise StudioError("`instruction` is longer than 2000 characters; say in a sentence or two what to change")
    index = [s.id for s in project.scenes].index(project.scene(scene_id).id)  # raises for an unknown id
    if isinstance(preset, str):
        preset = load_preset(preset)
    known = providers.names("storyboard")
    if writer != "auto" and writer not in known:
        raise StudioError(f"`writer` must be 'auto' or one of {', '.join(known)}, got {writer!r}")
    if field == "narration" and not project.scenes[index].narration.strip() and not instruction.strip():
        raise StudioError(f"scene {index + 1} ({scene_id}) has no narration to rewrite: write some, or give an "
                          "`instruction` saying what it should say")
    check(cancel)

    # 2. Choose the writer and rewrite.
    prefer = preset.providers.get("storyboard") if preset is not None else None
    configs = preset.models if preset is not None else None
    instance, choice = providers.create("storyboard", writer, prefer=prefer, configs=configs)
    rewrite = instance.rewrite if providers.supports(instance, "rewrite") else None
    if rewrite is None:
        raise ProviderUnavailable(f"the {choice.name} storyboard writer cannot rewrite a scene; choose another `writer`")
    text = rewrite(project, scene_id, field=field, instruction=instruction, cancel=cancel)
    check(cancel)
    if not isinstance(text, str) or not text.strip():
        raise StudioError(f"the {choice.name} writer returned no text for scene {index + 1}'s {field}")

    # 3. A new project: only this scene's field changes (and the assets that depend on it are dropped).
    edited = project.edit_scene(scene_id, **{field: text.strip()})
    how = f" following {instruction.strip()[:80]!r}" if instruction.strip() else ""
    return edited.with_note(f"storyboard: scene {index + 1}'s {field.replace('_', ' ')} rewritten by "
                            f"{choice.name}{how} ({choice.reason})")


__all__ = ["Draft", "StoryboardWriter", "MODES", "REWRITE_FIELDS", "detect_mode", "read_script", "rewrite_scene",
           "write_storyboard"]
