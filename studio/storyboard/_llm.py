"""What the LLM storyboard writers share: the prompts, reading a JSON answer robustly, and retrying with the reason.

A writer only has to say how it chats (`ChatWriter.chat`: a list of messages and the JSON schema of the answer in, the
model's text out); this module asks for JSON, checks what comes back against that schema, tells the model what was
wrong and asks again a bounded number of times, and fails with a message that shows the last answer.

Each answer's JSON schema is built in one place (`storyboard_schema`, `prompts_schema`, `rewrite_schema`): a writer
sends it with its request (the openai writer as ``response_format``, in `portable_schema`'s strict-mode subset) or
constrains its generation to it (the transformers writer), and the same schema checks the answer (`check_schema`).

- Brief mode: the model writes the title and every scene (narration, visual prompt, optional duration) in the
  project's language, aiming at the target length.
- Script mode: the narration is the user's and is never rewritten: the offline rules writer cuts it into scenes, and
  the model writes one visual prompt per scene (in batches, so long scripts fit a small context).
- Rewriting one scene's narration or visual prompt (`ChatWriter.rewrite`), with its neighbours as context.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, Sequence

from ..errors import StudioError
from ..progress import CancelToken, check
from ..project import Project, Scene, new_scene_id
from . import Draft

# Limits an answer must respect (they match the rules writer's scene sizes, with some room).
MAX_SCENES = 60
MAX_NARRATION_WORDS = 70
MAX_PROMPT_WORDS = 80
WORDS_PER_S = 2.5  # about 150 words a minute
SCENE_S = 7.0  # a scene's usual length
PROMPT_BATCH = 12  # scenes per visual-prompt request in script mode
SHOWN_CHARS = 400  # how much of a bad answer an error shows
MIN_DURATION_S, MAX_DURATION_S = 1, 60  # a scene's `duration_s`, when the model gives one
CHARS_PER_WORD = 10  # a text's character limit in the schemas (its word limit is checked after)
TITLE_CHARS = 200
LANGUAGES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
             "nl": "Dutch", "pl": "Polish", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish",
             "cs": "Czech", "tr": "Turkish", "ru": "Russian", "uk": "Ukrainian", "el": "Greek", "ar": "Arabic",
             "he": "Hebrew", "hi": "Hindi", "ja": "Japanese", "ko": "Korean", "zh": "Chinese", "vi": "Vietnamese",
             "id": "Indonesian", "th": "Thai"}
FIELDS = ("narration", "visual_prompt")
Messages = list[dict[str, str]]


class BadAnswer(ValueError):
    """An answer that cannot be used; the message is what the model is told before it tries again."""


def language_name(code: str) -> str:
    """``"fr"`` -> ``"French"``; unknown codes are returned as they are."""
    return LANGUAGES.get(code.lower().split("-")[0].split("_")[0], code)


# -- the answers' JSON schemas ------------------------------------------------------------------------------------------
def _string(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_chars}


def _strict_object(properties: dict[str, Any], title: str | None = None) -> dict[str, Any]:
    # Every key required and no others: what OpenAI's strict mode asks of every object. The title names the schema.
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return {"title": title, **schema} if title else schema


def storyboard_schema(max_scenes: int = MAX_SCENES, max_chars: int | None = None) -> dict[str, Any]:
    """The JSON schema of a brief-mode answer: a title and 1 to `max_scenes` scenes.

    `max_chars` caps every text (default: the word limits, at `CHARS_PER_WORD` characters a word).
    """
    scene = _strict_object({
        "narration": _string(max_chars or MAX_NARRATION_WORDS * CHARS_PER_WORD),
        "visual_prompt": _string(max_chars or MAX_PROMPT_WORDS * CHARS_PER_WORD),
        "duration_s": {"type": ["number", "null"], "minimum": MIN_DURATION_S, "maximum": MAX_DURATION_S},
    })
    return _strict_object({
        "title": {"type": "string", "maxLength": max_chars or TITLE_CHARS},
        "scenes": {"type": "array", "items": scene, "minItems": 1, "maxItems": max_scenes},
    }, "storyboard")


def prompts_schema(count: int, max_chars: int | None = None) -> dict[str, Any]:
    """The JSON schema of a script-mode answer: exactly `count` visual prompts."""
    prompt = _string(max_chars or MAX_PROMPT_WORDS * CHARS_PER_WORD)
    return _strict_object({"visual_prompts": {"type": "array", "items": prompt, "minItems": count, "maxItems": count}},
                          "visual_prompts")


def rewrite_schema(field: str, max_chars: int | None = None) -> dict[str, Any]:
    """The JSON schema of a rewrite answer: the new `text` of one scene's `field`."""
    words = MAX_NARRATION_WORDS if field == "narration" else MAX_PROMPT_WORDS
    return _strict_object({"text": _string(max_chars or words * CHARS_PER_WORD)}, "rewrite")


# Keywords that every server taking a JSON schema understands (OpenAI's strict mode is the narrowest): lengths, counts
# and ranges are left out of what is sent, and `check_schema` checks them on the answer.
PORTABLE_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "anyOf",
                               "description"})


def portable_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with only the `PORTABLE_KEYWORDS`, for sending to a server (its ``title`` names it there)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in PORTABLE_KEYWORDS:
            continue
        if key == "properties":
            value = {name: portable_schema(sub) for name, sub in value.items()}
        elif key == "items":
            value = portable_schema(value)
        elif key == "anyOf":
            value = [portable_schema(sub) for sub in value]
        out[key] = value
    return out


_PY_TYPES = {"string": str, "object": dict, "array": list, "boolean": bool, "null": type(None)}
_TYPE_NAMES = {"string": "a string", "number": "a number", "integer": "a whole number", "object": "an object",
               "array": "a list", "boolean": "true or false", "null": "null"}


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    return [kind] if isinstance(kind, str) else list(kind or [])


def _fits_type(value: Any, kind: str) -> bool:
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return kind == "number" or float(value).is_integer()
    return isinstance(value, _PY_TYPES.get(kind, object))


def _describe(schema: dict[str, Any]) -> str:
    names = []
    for kind in _types(schema):
        name = _TYPE_NAMES.get(kind, kind)
        if kind in ("number", "integer") and "minimum" in schema and "maximum" in schema:
            name += f" from {schema['minimum']:g} to {schema['maximum']:g}"
        names.append(name)
    return " or ".join(names) or "a JSON value"


def _item_name(what: str, index: int) -> str:
    """``scene 2`` for item 2 of `scenes`, ``visual prompt 1`` for item 1 of `visual_prompts`."""
    noun = what.strip("`").rsplit("`", 1)[-1].replace("_", " ")
    return f"{noun[:-1] if noun.endswith('s') else noun} {index}"


def check_schema(value: Any, schema: dict[str, Any], what: str = "the answer") -> None:
    """Check `value` against `schema` (the keywords the schemas here use); keys it does not name are ignored.

    Raises:
        BadAnswer: saying which part is wrong and why, in words the model is told (``scene 2's `narration` must be a
            non-empty string``).
    """
    types = _types(schema)
    if types and not any(_fits_type(value, kind) for kind in types):
        raise BadAnswer(f"{what} must be {_describe(schema)}")
    if isinstance(value, str):  # lengths leave out the spaces around a text (they are dropped)
        if len(value.strip()) < schema.get("minLength", 0):
            raise BadAnswer(f"{what} must be a non-empty string")
        if len(value.strip()) > schema.get("maxLength", len(value)):
            raise BadAnswer(f"{what} has {len(value.strip())} characters; at most {schema['maxLength']} are allowed")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not schema.get("minimum", value) <= value <= schema.get("maximum", value):
            raise BadAnswer(f"{what} must be {_describe(schema)}")
    elif isinstance(value, list):
        low, high = schema.get("minItems", 0), schema.get("maxItems", len(value))
        if len(value) < low:
            need = "exactly" if low == high else "at least"
            raise BadAnswer(f"{what} must be a non-empty list" if low == 1 else
                            f"{what} has {len(value)} items; {need} {low} are needed")
        if len(value) > high:
            raise BadAnswer(f"{what} has {len(value)} items; " +
                            (f"exactly {high} are needed" if low == high else f"at most {high} are allowed"))
        for index, item in enumerate(value, start=1):
            check_schema(item, schema.get("items", {}), _item_name(what, index))
    elif isinstance(value, dict):
        properties = schema.get("properties", {})
        prefix = "" if what == "the answer" else f"{what}'s "
        for key in schema.get("required", []):
            if key not in value:
                raise BadAnswer(f"{prefix}`{key}` is missing")
        for key, sub in properties.items():
            if key in value:
                check_schema(value[key], sub, f"{prefix}`{key}`")


# -- reading answers ----------------------------------------------------------------------------------------------------
def extract_json(text: str) -> Any:
    """The JSON value in a model's answer: the whole text, a fenced block, or the first object in it.

    Small slips are repaired (trailing commas, curly quotes around keys and strings); anything else raises
    `BadAnswer` saying what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise BadAnswer("the answer was empty")
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in re.finditer(r"```(?:json|JSON)?\s*(.*?)```", text, re.S)]
    for candidate in candidates:
        for attempt in (candidate, _repair(candidate)):
            try:
                return json.loads(attempt)
            except ValueError:
                pass
    decoder = json.JSONDecoder()
    for source in (text, _repair(text)):
        for match in re.finditer(r"[{\[]", source):
            try:
                value, _ = decoder.raw_decode(source, match.start())
            except ValueError:
                continue
            if isinstance(value, dict) or (isinstance(value, list) and value):
                return value
    raise BadAnswer("the answer holds no valid JSON object")


def _repair(text: str) -> str:
    text = text.replace("“", '"').replace("”", '"').replace("„", '"')
    return re.sub(r",\s*([}\]])", r"\1", text)


def _text(value: Any, what: str, max_words: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadAnswer(f"{what} must be a non-empty string")
    value = " ".join(value.split())
    if len(value.split()) > max_words:
        raise BadAnswer(f"{what} has {len(value.split())} words; at most {max_words} are allowed")
    return value


def parse_storyboard(answer: str, schema: dict[str, Any] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The title and scenes of a brief-mode answer, checked against `schema` (default `storyboard_schema()`).

    A little is forgiven first, for servers that could not be sent the schema: a bare list of scenes, a scene
    without a visual prompt (its narration is used) or without a duration (null), no title.

    Raises:
        BadAnswer: not JSON, no scenes, a scene without narration, a duration out of range (the reason is sent
            back to the model).
    """
    data = extract_json(answer)
    if isinstance(data, list):
        data = {"scenes": data}
    if not isinstance(data, dict):
        raise BadAnswer("the answer must be a JSON object with `title` and `scenes`")
    scenes = data.get("scenes")
    if isinstance(scenes, list):
        scenes = [{**scene, "duration_s": scene.get("duration_s"),
                   "visual_prompt": scene.get("visual_prompt") or scene.get("visual") or scene.get("narration")}
                  if isinstance(scene, dict) else scene for scene in scenes]
    title = data.get("title")
    data = {"title": " ".join(title.split()) if isinstance(title, str) else "", "scenes": scenes}
    check_schema(data, schema or storyboard_schema())
    out = []
    for i, scene in enumerate(scenes, start=1):
        duration = scene["duration_s"]
        out.append({"narration": _text(scene["narration"], f"scene {i}'s `narration`", MAX_NARRATION_WORDS),
                    "visual_prompt": _text(scene["visual_prompt"], f"scene {i}'s `visual_prompt`", MAX_PROMPT_WORDS),
                    "duration_s": None if duration is None else float(duration)})
    return data["title"], out


def parse_prompts(answer: str, count: int, schema: dict[str, Any] | None = None) -> list[str]:
    """Exactly `count` visual prompts from a script-mode answer (``{"visual_prompts": [...]}`` or a bare list), checked
    against `schema` (default `prompts_schema(count)`)."""
    data = extract_json(answer)
    if isinstance(data, dict):
        data = data.get("visual_prompts", data.get("prompts", data.get("scenes")))
    if not isinstance(data, list):
        raise BadAnswer("the answer must be a JSON object with a `visual_prompts` list")
    items = [item.get("visual_prompt") if isinstance(item, dict) else item for item in data]
    if len(items) != count:
        raise BadAnswer(f"`visual_prompts` has {len(items)} items; exactly {count} are needed, one per scene, in order")
    check_schema({"visual_prompts": items}, schema or prompts_schema(count))
    return [_text(item, f"visual prompt {i}", MAX_PROMPT_WORDS) for i, item in enumerate(items, start=1)]


def parse_rewrite(answer: str, field: str, schema: dict[str, Any] | None = None) -> str:
    """The new text of a rewrite answer (``{"text": "..."}``), checked against `schema` (default
    `rewrite_schema(field)`)."""
    data = extract_json(answer)
    if isinstance(data, dict):
        data = data.get("text", data.get(field))
    check_schema({"text": data}, schema or rewrite_schema(field))
    return _text(data, "`text`", MAX_NARRATION_WORDS if field == "narration" else MAX_PROMPT_WORDS)


# -- prompts ------------------------------------------------------------------------------------------------------------
def brief_messages(brief: str, *, title: str | None, language: str, style: str, target_s: float | None) -> Messages:
    seconds = target_s or 45.0
    scenes = max(2, min(MAX_SCENES, round(seconds / SCENE_S)))
    words = round(seconds * WORDS_PER_S)
    system = (
        "You write storyboards for short narrated videos. Answer with one JSON object and nothing else, in this "
        'form: {"title": "...", "scenes": [{"narration": "...", "visual_prompt": "...", "duration_s": null}]}.\n'
        f"- narration: what the narrator says, in {language_name(language)}; one to three sentences, at most 45 words; "
        "plain spoken language, facts you are sure of, no stage directions.\n"
        "- visual_prompt: one concrete picture for a text-to-image model, in English: subject, setting, light, "
        "composition; no text or letters in the picture"
        + (f"; in this style: {style}" if style.strip() else "") + ".\n"
        "- duration_s: null (the narration sets the length) or seconds.\n"
        f"- About {scenes} scenes and {words} words of narration in all (about {seconds:.0f} seconds read aloud)."
    )
    user = f"Brief: {brief.strip()}"
    if title:
        user += f"\nTitle: {title.strip()}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def prompt_messages(scenes: Sequence[Scene], *, title: str, style: str, context: str) -> Messages:
    system = (
        "You write visual prompts for the scenes of a narrated video. For each scene's narration, describe one "
        "concrete picture for a text-to-image model, in English: subject, setting, light, composition; no text or "
        "letters in the picture; at most 40 words"
        + (f"; in this style: {style}" if style.strip() else "") + ". "
        'Answer with one JSON object and nothing else: {"visual_prompts": ["...", "..."]}, exactly one prompt per '
        "scene, in order."
    )
    listing = "\n".join(f"{i}. {scene.narration}" for i, scene in enumerate(scenes, start=1))
    user = f"Video: {title}\n" + (f"Story so far: {context}\n" if context else "") + f"Scenes:\n{listing}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def rewrite_messages(project: Project, scene_id: str, field: str, instruction: str) -> Messages:
    index = [s.id for s in project.scenes].index(scene_id)
    scene = project.scenes[index]
    before = project.scenes[index - 1].narration if index > 0 else ""
    after = project.scenes[index + 1].narration if index + 1 < len(project.scenes) else ""
    what = ("the narration (what the narrator says, in " + language_name(project.language) +
            ", one to three sentences)") if field == "narration" else (
        "the visual prompt (one concrete picture for a text-to-image model, in English, no text in the picture"
        + (f", style: {project.style}" if project.style.strip() else "") + ")")
    system = (f"You edit one scene of a storyboard for a narrated video. Rewrite {what}, keeping it consistent with the "
              'scenes around it. Answer with one JSON object and nothing else: {"text": "..."}.')
    user = (f"Video: {project.title}\n"
            + (f"Scene before: {before}\n" if before else "")
            + f"This scene's narration: {scene.narration}\n"
            + (f"This scene's visual prompt: {scene.visual_prompt}\n" if scene.visual_prompt else "")
            + (f"Scene after: {after}\n" if after else "")
            + f"Rewrite this scene's {field.replace('_', ' ')}. "
            + (f"Instruction: {instruction.strip()}" if instruction.strip() else "Make it clearer and more vivid."))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# -- the writer --------------------------------------------------------------------------------------------------------
class ChatWriter:
    """Base of the LLM writers: subclasses set `name` and `model` and implement `chat`."""

    name = "llm"
    hooks = frozenset({"rewrite"})  # optional hooks it implements (studio.providers.HOOKS)
    model = ""
    max_attempts = 3

    def chat(self, messages: Messages, *, schema: dict[str, Any] | None = None,
             cancel: CancelToken | None = None) -> str:
        """Send `messages` (``role``/``content`` dicts) and return the model's answer text.

        `schema` is the JSON schema the answer must fit: a writer sends it with the request or constrains its
        generation to it where it can (and otherwise relies on the prompt, which describes the same form).
        """
        raise NotImplementedError

    def output_notes(self) -> tuple[str, ...]:
        """Project notes about how this writer produced its answers (e.g. a missing optional library)."""
        return ()

    def _ask(self, messages: Messages, parse, what: str, cancel: CancelToken | None, schema: dict[str, Any]):
        """Ask for an answer fitting `schema`, check it with `parse`, and on a bad answer tell the model why and ask
        again."""
        messages = list(messages)
        answer, reason = "", ""
        for attempt in range(1, self.max_attempts + 1):
            check(cancel)
            answer = self.chat(messages, schema=schema, cancel=cancel)
            check(cancel)
            try:
                return parse(answer)
            except BadAnswer as exc:
                reason = str(exc)
            messages += [{"role": "assistant", "content": answer},
                         {"role": "user", "content": f"That answer cannot be used: {reason}. Answer again with only "
                                                     "the JSON object, in the form asked for."}]
        shown = answer.strip()[:SHOWN_CHARS] or "(nothing)"
        raise StudioError(f"the {self.name} storyboard writer ({self.model}) gave no usable {what} in "
                          f"{self.max_attempts} attempts: {reason}. Its last answer began: {shown!r}. "
                          "Try again, choose a larger or instruction-tuned model, or use writer='rules'")

    def write(self, source: str, *, mode: str, title: str | None = None, language: str = "en", style: str = "",
              target_s: float | None = None, cancel: CancelToken | None = None) -> Draft:
        """Write a storyboard: the model writes a brief's scenes, or a script's visual prompts (see the module)."""
        if mode == "brief":
            schema = storyboard_schema()
            messages = brief_messages(source, title=title, language=language, style=style, target_s=target_s)
            found_title, scenes = self._ask(messages, lambda answer: parse_storyboard(answer, schema), "storyboard",
                                            cancel, schema)
            built = tuple(Scene(id=new_scene_id(), narration=s["narration"], visual_prompt=s["visual_prompt"],
                                duration_s=s["duration_s"]) for s in scenes)
            notes = [f"storyboard: written by {self.model} from the brief; check its facts before publishing"]
            if target_s:
                spoken_s = sum(len(s.narration.split()) for s in built) / WORDS_PER_S
                if abs(spoken_s - target_s) > 0.5 * target_s:
                    notes.append(f"storyboard: the narration reads in about {spoken_s:.0f} s, far from the "
                                 f"{target_s:.0f} s asked")
            return Draft(title=title or found_title or "Untitled", scenes=built,
                         notes=tuple(notes) + self.output_notes())
        if mode != "script":
            raise ValueError(f"mode must be 'script' or 'brief', got {mode!r}")
        from .rules import RulesWriter

        draft = RulesWriter().write(source, mode="script", title=title, language=language, style=style,
                                    target_s=target_s, cancel=cancel)
        scenes = list(draft.scenes)
        for start in range(0, len(scenes), PROMPT_BATCH):
            batch = scenes[start:start + PROMPT_BATCH]
            context = " ".join(s.narration for s in scenes[max(0, start - 2):start])
            schema = prompts_schema(len(batch))
            prompts = self._ask(prompt_messages(batch, title=draft.title, style=style, context=context),
                                lambda answer, n=len(batch), schema=schema: parse_prompts(answer, n, schema),
                                "visual prompts", cancel, schema)
            for offset, prompt in enumerate(prompts):
                scenes[start + offset] = replace(scenes[start + offset], visual_prompt=prompt)
        notes = draft.notes + (f"storyboard: the script's words are kept as written; {self.model} wrote the visual "
                               "prompts",) + self.output_notes()
        return Draft(title=draft.title, scenes=tuple(scenes), notes=notes)

    def rewrite(self, project: Project, scene_id: str, *, field: str, instruction: str = "",
                cancel: CancelToken | None = None) -> str:
        """The new text of one scene's `field` (``narration`` or ``visual_prompt``), following `instruction`."""
        schema = rewrite_schema(field)
        return self._ask(rewrite_messages(project, scene_id, field, instruction),
                         lambda answer: parse_rewrite(answer, field, schema), f"rewrite of the {field}", cancel, schema)
