"""The data model: `Scene`, `Project`, their JSON / CSV / pandas round-trips and the on-disk layout.

A project lives in its own folder::

    project.json      the project, written atomically; asset paths are stored relative to the folder
    assets/           files named by the sha256 of everything that made them (see `studio.assets`)
    renders/          finished videos

Steps are verbs shaped ``Project -> Project`` that never mutate their input: `Scene` and `Project` are frozen and
edited with `dataclasses.replace` (or the helpers below).
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .assets import atomic_write_text
from .errors import StudioError

if TYPE_CHECKING:  # pandas is imported lazily: the CLI's start must stay fast
    import pandas as pd

ASPECTS = ("16:9", "9:16", "1:1")
PROJECT_FILE = "project.json"
FORMAT_VERSION = 1
# The storyboard's columns, in order, as they appear in CSV files, DataFrames and the UI's table.
STORYBOARD_COLUMNS = ("id", "narration", "visual_prompt", "duration_s", "seed", "media", "transition", "recording")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def new_scene_id() -> str:
    """A short random id; ids stay with a scene through edits and reordering."""
    return "s" + secrets.token_hex(4)


def check_aspect(aspect: str) -> str:
    if aspect not in ASPECTS:
        raise StudioError(f"`aspect` must be one of {', '.join(ASPECTS)}, got {aspect!r}")
    return aspect


@dataclass(frozen=True)
class WordTiming:
    """One spoken word and when it is heard, in seconds from the start of its scene's audio."""

    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Scene:
    """One scene of the storyboard and the assets made for it.

    Attributes:
        id: Stable across edits and reordering (asset cache keys use content, not the id or position).
        narration: What the narrator says.
        visual_prompt: What the scene shows; painters turn it into an image or clip.
        duration_s: Fixed length in seconds, or None to follow the narration's length.
        seed: Seed for generative painters and voices, so a scene can be reproduced or varied.
        media: A user's image or video file for this scene (the ``local`` painter), as the user named it.
        transition: Transition into this scene (``crossfade``, ``fade``, ``wipe``, ``slide``, ``cut``), None for auto.
        recording: A user's own narration for this scene (an audio file, as the user named it): `studio.narrate`
            uses it instead of a TTS voice (trimmed, loudness-matched, its words timed to `narration`).
        audio: The narration WAV, filled by `studio.narrate`.
        audio_duration_s: Length of `audio` in seconds.
        words: Word-level timings within `audio`, for captions.
        visual: The scene's image or clip, filled by `studio.illustrate`.
    """

    id: str
    narration: str
    visual_prompt: str = ""
    duration_s: float | None = None
    seed: int = 0
    media: str | None = None
    transition: str | None = None
    recording: str | None = None
    audio: Path | None = None
    audio_duration_s: float | None = None
    words: tuple[WordTiming, ...] = ()
    visual: Path | None = None

    def with_audio(self, audio: Path, words: Iterable[WordTiming], duration_s: float) -> "Scene":
        """A copy with narration audio, its word timings and its length."""
        return replace(self, audio=Path(audio), words=tuple(words), audio_duration_s=float(duration_s))

    def with_visual(self, visual: Path) -> "Scene":
        """A copy with its image or clip."""
        return replace(self, visual=Path(visual))

    def edited(self, **changes: Any) -> "Scene":
        """A copy with storyboard fields changed; assets that depend on a changed field are dropped."""
        unknown = set(changes) - set(STORYBOARD_COLUMNS[1:])
        if unknown:
            raise StudioError(f"cannot edit scene field(s) {sorted(unknown)}; editable: {list(STORYBOARD_COLUMNS[1:])}")
        scene = replace(self, **changes)
        if (scene.narration, scene.recording) != (self.narration, self.recording):
            scene = replace(scene, audio=None, audio_duration_s=None, words=())
        if (scene.visual_prompt, scene.seed, scene.media) != (self.visual_prompt, self.seed, self.media):
            scene = replace(scene, visual=None)
        return scene


@dataclass(frozen=True)
class Project:
    """A video in the making: the brief, the look, and the scenes.

    Attributes:
        title: The video's title.
        scenes: The storyboard, in order.
        brief: What the user asked for (a brief or the script itself).
        style: A style applied to every scene's visuals (e.g. "flat pastel illustration").
        aspect: ``16:9``, ``9:16`` or ``1:1``.
        language: Language of the narration (BCP-47-ish, e.g. ``en``).
        voice: Voice name for the narrator, None for the provider's default.
        music: Background music file, looped to length and ducked under the narration.
        music_volume: Music level relative to full scale (0..1) when nobody speaks.
        captions: Burn captions in.
        caption_style: Name of a caption style (see `studio.compose.captions.STYLES`): ``bold``, ``boxed``,
            ``plain``, ``karaoke`` (the spoken word highlighted) or ``words`` (one to three words at a time).
        caption_font: A TrueType or OpenType font file for the captions instead of the bundled DejaVu Sans (its own
            weight is used; the style still sets size, outline, shadow and box). Checked by `studio.fonts.read_font`.
        watermark: An image (logo) drawn in a corner of every frame.
        seed: Project seed; painters mix it with each scene's seed so one project looks like one film.
        folder: Where the project lives on disk (not saved inside project.json).
        notes: Messages for the user gathered by the steps (e.g. which provider ran and why).
    """

    title: str
    scenes: tuple[Scene, ...]
    brief: str = ""
    style: str = ""
    aspect: str = "16:9"
    language: str = "en"
    voice: str | None = None
    music: Path | None = None
    music_volume: float = 0.15
    captions: bool = True
    caption_style: str = "bold"
    caption_font: Path | None = None
    watermark: Path | None = None
    seed: int = 0
    folder: Path | None = field(default=None, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        check_aspect(self.aspect)
        if not 0.0 <= self.music_volume <= 1.0:
            raise StudioError(f"`music_volume` must be between 0 and 1, got {self.music_volume!r}")
        ids = [s.id for s in self.scenes]
        if len(set(ids)) != len(ids):
            raise StudioError("scene ids must be unique; found duplicates: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))

    # -- editing -------------------------------------------------------------------------------------------------
    def scene(self, scene_id: str) -> Scene:
        for scene in self.scenes:
            if scene.id == scene_id:
                return scene
        raise StudioError(f"no scene with id {scene_id!r}; this project's scenes are {[s.id for s in self.scenes]}")

    def with_scenes(self, scenes: Sequence[Scene]) -> "Project":
        return replace(self, scenes=tuple(scenes))

    def replace_scene(self, scene: Scene) -> "Project":
        """A copy with the scene of the same id replaced."""
        self.scene(scene.id)  # raises if unknown
        return self.with_scenes([scene if s.id == scene.id else s for s in self.scenes])

    def edit_scene(self, scene_id: str, **changes: Any) -> "Project":
        """A copy with one scene's storyboard fields changed (see `Scene.edited`)."""
        return self.replace_scene(self.scene(scene_id).edited(**changes))

    # -- scene editing: each returns a new project (ids are kept, so untouched scenes keep their assets) ---------------
    def _index(self, scene_id: str) -> int:
        for i, scene in enumerate(self.scenes):
            if scene.id == scene_id:
                return i
        raise StudioError(f"no scene {scene_id!r} in this project")

    def insert_scene(self, after: str | None = None, scene: Scene | None = None) -> "Project":
        """A copy with `scene` (default: a new empty one) after the scene `after` (None: at the start)."""
        scene = scene or Scene(id=new_scene_id(), narration="", visual_prompt="")
        if any(s.id == scene.id for s in self.scenes):
            raise StudioError(f"the project already has a scene {scene.id!r}")
        at = 0 if after is None else self._index(after) + 1
        return self.with_scenes([*self.scenes[:at], scene, *self.scenes[at:]])

    def delete_scene(self, scene_id: str) -> "Project":
        """A copy without the scene `scene_id` (a storyboard keeps at least one scene)."""
        index = self._index(scene_id)
        if len(self.scenes) == 1:
            raise StudioError("a storyboard needs at least one scene; edit this one instead of deleting it")
        return self.with_scenes([s for i, s in enumerate(self.scenes) if i != index])

    def move_scene(self, scene_id: str, offset: int) -> "Project":
        """A copy with the scene moved `offset` places (-1: one up, +1: one down)."""
        index = self._index(scene_id)
        target = index + int(offset)
        if not 0 <= target < len(self.scenes):
            where = "first" if offset < 0 else "last"
            raise StudioError(f"scene {index + 1} is already the {where} scene")
        scenes = list(self.scenes)
        scenes.insert(target, scenes.pop(index))
        return self.with_scenes(scenes)

    def split_scene(self, scene_id: str) -> "Project":
        """A copy with the scene's narration split in two at the sentence boundary nearest its middle (by words); a
        fixed duration is shared in proportion, the second scene keeps the picture prompt and media."""
        from .storyboard.text import count_words, split_sentences

        index = self._index(scene_id)
        original = self.scenes[index]
        if original.recording:
            raise StudioError(f"scene {index + 1} is narrated by your recording, which cannot be split in two: use the "
                              "narrator for it first (clear its recording), or record each half as its own scene")
        sentences = split_sentences(original.narration)
        if len(sentences) < 2:
            raise StudioError(f"scene {index + 1} has a single sentence; there is nothing to split (edit it instead)")
        words = [count_words(s) for s in sentences]
        half, running, cut, best = sum(words) / 2, 0, 1, None
        for i in range(1, len(sentences)):
            running += words[i - 1]
            if best is None or abs(running - half) < best:
                best, cut = abs(running - half), i
        duration = original.duration_s
        share = sum(words[:cut]) / max(sum(words), 1)
        first = original.edited(narration=" ".join(sentences[:cut]),
                                duration_s=None if duration is None else max(0.2, round(duration * share, 2)))
        second = Scene(id=new_scene_id(), narration=" ".join(sentences[cut:]), visual_prompt=original.visual_prompt,
                       duration_s=None if duration is None else max(0.2, round(duration - first.duration_s, 2)),
                       seed=original.seed + 1, media=original.media)
        return self.with_scenes([*self.scenes[:index], first, second, *self.scenes[index + 1:]])

    def with_note(self, note: str) -> "Project":
        return replace(self, notes=self.notes + (note,))

    @property
    def assets_dir(self) -> Path:
        if self.folder is None:
            raise StudioError("this project has no folder yet; save it with `project.save(folder)` first")
        return self.folder / "assets"

    @property
    def renders_dir(self) -> Path:
        if self.folder is None:
            raise StudioError("this project has no folder yet; save it with `project.save(folder)` first")
        return self.folder / "renders"

    # -- JSON ------------------------------------------------------------------------------------------------------
    def to_dict(self, relative_to: Path | None = None) -> dict:
        """A JSON-ready dict; paths inside `relative_to` are stored relative to it."""

        def rel(path: Path | None) -> str | None:
            if path is None:
                return None
            path = Path(path)
            if relative_to is not None:
                try:
                    return path.resolve().relative_to(Path(relative_to).resolve()).as_posix()
                except ValueError:
                    pass
            return str(path)

        data = asdict(self)
        data.pop("folder")
        data["format"] = FORMAT_VERSION
        data["music"] = rel(self.music)
        data["watermark"] = rel(self.watermark)
        data["caption_font"] = rel(self.caption_font)
        data["notes"] = list(self.notes)
        data["scenes"] = []
        for scene in self.scenes:
            item = asdict(scene)
            item["audio"] = rel(scene.audio)
            item["visual"] = rel(scene.visual)
            item["words"] = [[w.word, round(w.start_s, 4), round(w.end_s, 4)] for w in scene.words]
            data["scenes"].append(item)
        return data

    @classmethod
    def from_dict(cls, data: dict, base: Path | None = None) -> "Project":
        """Build a project from `to_dict`'s output; relative paths are resolved against `base`."""
        if not isinstance(data, dict):
            raise StudioError("a project must be a JSON object with `title` and `scenes`")
        fmt = data.get("format", FORMAT_VERSION)
        if fmt != FORMAT_VERSION:
            raise StudioError(f"project format {fmt!r} is not supported by this version of Studio (expects {FORMAT_VERSION})")

        def path(value: Any) -> Path | None:
            if value in (None, ""):
                return None
            p = Path(value)
            return p if p.is_absolute() or base is None else base / p

        try:
            scenes = []
            for i, item in enumerate(data.get("scenes", [])):
                scenes.append(
                    Scene(
                        id=_check_id(str(item.get("id") or new_scene_id()), i),
                        narration=str(item.get("narration", "")),
                        visual_prompt=str(item.get("visual_prompt", "")),
                        duration_s=_opt_duration(item.get("duration_s"), i),
                        seed=int(item.get("seed", 0) or 0),
                        media=item.get("media") or None,
                        transition=item.get("transition") or None,
                        recording=item.get("recording") or None,
                        audio=path(item.get("audio")),
                        audio_duration_s=item.get("audio_duration_s"),
                        words=tuple(WordTiming(str(w), float(a), float(b)) for w, a, b in item.get("words", [])),
                        visual=path(item.get("visual")),
                    )
                )
            return cls(
                title=str(data.get("title", "")),
                scenes=tuple(scenes),
                brief=str(data.get("brief", "")),
                style=str(data.get("style", "")),
                aspect=str(data.get("aspect", "16:9")),
                language=str(data.get("language", "en")),
                voice=data.get("voice") or None,
                music=path(data.get("music")),
                music_volume=float(data.get("music_volume", 0.15)),
                captions=bool(data.get("captions", True)),
                caption_style=str(data.get("caption_style", "bold")),
                caption_font=path(data.get("caption_font")),
                watermark=path(data.get("watermark")),
                seed=int(data.get("seed", 0) or 0),
                folder=base,
                notes=tuple(data.get("notes", ())),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise StudioError(f"the project file is malformed: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(self.folder), ensure_ascii=False, indent=2)

    def save(self, folder: Path | None = None) -> "Project":
        """Write ``project.json`` atomically into `folder` (default: the project's own) and return the project
        with its folder set. Creates ``assets/`` and ``renders/``."""
        folder = Path(folder) if folder is not None else self.folder
        if folder is None:
            raise StudioError("`folder` is required: this project has not been saved before")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "assets").mkdir(exist_ok=True)
        (folder / "renders").mkdir(exist_ok=True)
        project = replace(self, folder=folder)
        atomic_write_text(folder / PROJECT_FILE, project.to_json())
        return project

    @classmethod
    def load(cls, folder: Path) -> "Project":
        """Read a project folder written by `save`."""
        folder = Path(folder)
        file = folder / PROJECT_FILE
        if not file.is_file():
            raise StudioError(f"{folder} is not a Studio project: it has no {PROJECT_FILE}")
        try:
            data = json.loads(file.read_text("utf-8"))
        except ValueError as exc:
            raise StudioError(f"{file} is not valid JSON ({exc}); restore it or start a new project") from exc
        return cls.from_dict(data, base=folder)

    # -- storyboard table (pandas, CSV, JSON list) -------------------------------------------------------------------
    def storyboard_records(self) -> list[dict]:
        """The storyboard as a list of dicts with `STORYBOARD_COLUMNS` keys."""
        return [{c: getattr(s, c) for c in STORYBOARD_COLUMNS} for s in self.scenes]

    def to_dataframe(self) -> "pd.DataFrame":
        """The storyboard, one row per scene (for `gr.Dataframe`, notebooks and CSV)."""
        import pandas as pd

        return pd.DataFrame(self.storyboard_records(), columns=list(STORYBOARD_COLUMNS))

    def with_storyboard(self, table: "pd.DataFrame | Sequence[dict]") -> "Project":
        """A copy whose scenes follow `table` (rows in order); a row whose id matches an existing scene keeps that
        scene's assets unless the fields they depend on changed."""
        records = _records(table)
        old = {s.id: s for s in self.scenes}
        scenes = []
        for i, row in enumerate(records):
            fields = _row_fields(row, i)
            scene_id = fields.pop("id") or new_scene_id()
            if scene_id in old:
                scenes.append(old[scene_id].edited(**fields))
            else:
                scenes.append(Scene(id=scene_id, **fields))
        return self.with_scenes(scenes)

    @classmethod
    def from_storyboard(cls, table: "pd.DataFrame | Sequence[dict]", **project_fields: Any) -> "Project":
        """A new project from a storyboard table (DataFrame, list of dicts)."""
        project_fields.setdefault("title", "Untitled")
        return cls(scenes=(), **project_fields).with_storyboard(table)

    def to_csv(self, path: Path) -> None:
        """Write the storyboard as CSV, atomically."""
        atomic_write_text(Path(path), self.to_dataframe().to_csv(index=False))

    @classmethod
    def read_storyboard(cls, path: Path, **project_fields: Any) -> "Project":
        """Read a storyboard from ``.csv`` or ``.json`` (a list of scenes, or a whole project)."""
        import pandas as pd

        path = Path(path)
        if not path.is_file():
            raise StudioError(f"storyboard file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            try:
                table = pd.read_csv(path, dtype={"id": str, "narration": str, "visual_prompt": str, "media": str,
                                                 "transition": str, "recording": str}, keep_default_na=False)
            except (ValueError, pd.errors.ParserError) as exc:
                raise StudioError(f"{path} is not a readable CSV storyboard: {exc}") from exc
            if "narration" not in table.columns:
                raise StudioError(f"{path} has no `narration` column; expected columns: {', '.join(STORYBOARD_COLUMNS)}")
            project_fields.setdefault("title", path.stem.replace("_", " ").replace("-", " ").title())
            return cls.from_storyboard(table, **project_fields)
        if suffix == ".json":
            try:
                data = json.loads(path.read_text("utf-8"))
            except ValueError as exc:
                raise StudioError(f"{path} is not valid JSON: {exc}") from exc
            if isinstance(data, list):
                project_fields.setdefault("title", path.stem.replace("_", " ").replace("-", " ").title())
                return cls.from_storyboard(data, **project_fields)
            project = cls.from_dict(data, base=None)
            return replace(project, **project_fields) if project_fields else project
        raise StudioError(f"storyboard {path} must be a .csv or .json file, got {suffix or 'no extension'!r}")

    def write_storyboard_file(self, path: Path) -> None:
        """Write the storyboard to ``.csv`` or ``.json`` (the whole project without asset paths)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            self.to_csv(path)
        elif suffix == ".json":
            data = self.to_dict()
            for scene in data["scenes"]:
                scene.update(audio=None, audio_duration_s=None, words=[], visual=None)
            atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2))
        else:
            raise StudioError(f"storyboard output {path} must end in .csv or .json")


def _records(table: Any) -> list[dict]:
    if hasattr(table, "to_dict") and hasattr(table, "columns"):
        return table.to_dict("records")
    if isinstance(table, (list, tuple)):
        for i, row in enumerate(table):
            if not isinstance(row, dict):
                raise StudioError(f"storyboard row {i + 1} must be an object with a `narration` field, got {type(row).__name__}")
        return list(table)
    raise StudioError(f"a storyboard must be a DataFrame or a list of scenes, got {type(table).__name__}")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _check_id(value: str, index: int) -> str:
    if not _ID_RE.match(value):
        raise StudioError(f"scene {index + 1}: id {value!r} must be 1-40 letters, digits, '-' or '_'")
    return value


def _opt_duration(value: Any, index: int) -> float | None:
    if _blank(value):
        return None
    try:
        duration = float(value)
    except (TypeError, ValueError):
        raise StudioError(f"scene {index + 1}: `duration_s` must be a number of seconds or empty, got {value!r}") from None
    if not (0.2 <= duration <= 600):
        raise StudioError(f"scene {index + 1}: `duration_s` must be between 0.2 and 600 seconds, got {duration}")
    return duration


def _row_fields(row: dict, index: int) -> dict:
    """Storyboard fields of one table row, checked; blank cells mean 'not set'."""
    unknown = set(row) - set(STORYBOARD_COLUMNS)
    if unknown:
        raise StudioError(f"storyboard row {index + 1}: unknown column(s) {sorted(unknown)}; expected {', '.join(STORYBOARD_COLUMNS)}")
    narration = "" if _blank(row.get("narration")) else str(row["narration"]).strip()
    seed_value = row.get("seed")
    try:
        seed = 0 if _blank(seed_value) else int(float(seed_value))
    except (TypeError, ValueError):
        raise StudioError(f"storyboard row {index + 1}: `seed` must be a whole number, got {seed_value!r}") from None
    raw_id = row.get("id")
    scene_id = None if _blank(raw_id) else _check_id(str(raw_id).strip(), index)
    return {
        "id": scene_id,
        "narration": narration,
        "visual_prompt": "" if _blank(row.get("visual_prompt")) else str(row["visual_prompt"]).strip(),
        "duration_s": _opt_duration(row.get("duration_s"), index),
        "seed": seed,
        "media": None if _blank(row.get("media")) else str(row["media"]).strip(),
        "transition": None if _blank(row.get("transition")) else str(row["transition"]).strip().lower(),
        "recording": None if _blank(row.get("recording")) else str(row["recording"]).strip(),
    }
