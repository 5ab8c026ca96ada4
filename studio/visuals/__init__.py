"""Step 3, visuals: `illustrate()` gives every scene an image or a clip.

    project = studio.illustrate(project, preset=studio.load_preset("draft"))
    project.scenes[0].visual      # assets/<sha256>.png

Painters are providers of kind ``"painter"``. Scenes without their own media are painted by the chosen painter
(``cards``: offline typographic title cards; ``diffusers-image``: a text-to-image model; ``diffusers-video``: an
AnimateDiff clip). Scenes that name a file in
`Scene.media` always use the ``local`` painter, which checks the file and copies it into the asset store.

Every asset is named by the sha256 of everything it depends on, so a second run reuses all of them and editing one
scene's prompt repaints only that scene.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Collection, Protocol

from ..assets import AssetStore, asset_key, file_digest
from ..errors import Cancelled, StudioError
from ..presets import Preset, load_preset
from ..progress import CancelToken, ProgressFn, check, no_progress
from ..project import Project, Scene
from ..providers import create, leasing, names, supports
from .local import scene_label

__all__ = ["Painter", "illustrate", "scene_label"]

# Output sizes outside this range are refused before any work (a typo such as 38400x2160 would take minutes).
_MIN_SIDE, _MAX_SIDE = 16, 7680


class Painter(Protocol):
    """What every painter provides.

    Optional hooks, declared in ``hooks`` (see `studio.providers.HOOKS`): ``variant``, a method
    ``variant(scene, *, index, style, project_seed) -> dict`` giving the choices its output depends on beyond the
    prompt, seeds, style and size (for ``cards``: layout, palette, font and the words drawn, some of them chosen by the
    scene's position), which `illustrate` puts into the asset's cache key; ``progress`` (`paint` takes
    ``on_progress``); ``release`` (frees its model).
    """

    name: str
    hooks: frozenset[str]  # the optional hooks it implements
    model: str  # identity for cache keys ("cards-v1"); change it when the painter's output changes
    suffix: str  # ".png" for stills, ".mp4" for clips; ``local`` keeps each file's own suffix

    def paint(self, scene: Scene, *, index: int, size: tuple[int, int], style: str, project_seed: int, out: Path,
              cancel: CancelToken | None = None) -> Path:
        """Write the scene's image or clip at `out` (atomically) and return `out`."""
        ...


@leasing
def illustrate(
    project: Project,
    *,
    painter: str = "auto",
    preset: Preset | str | None = None,
    size: tuple[int, int] | None = None,
    media_root: Path | None = None,
    only: Collection[str] | None = None,
    store: AssetStore | None = None,
    on_progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Project:
    """Give every scene an image or clip (`Scene.visual`).

    Args:
        project: A saved project (it needs `project.folder`: assets go into its ``assets/``).
        painter: Painter for scenes without `media`: ``auto`` (the preset's preference, else the first that runs
            here) or a name such as ``cards``.
        preset: Render preset (or its name); gives the frame size for the project's aspect ratio and the painter
            preference.
        size: Frame size (width, height) in pixels; overrides the preset's. One of `preset` / `size` is required.
        media_root: Folder that relative `Scene.media` paths are resolved against (default: the current directory).
        only: Scene ids to illustrate; other scenes are left as they are (default: all).
        store: Asset store (default: ``AssetStore(project.assets_dir)``).
        on_progress: ``on_progress(fraction, message)``, called after each scene.
        cancel: Checked between scenes.

    Returns:
        A new project whose scenes carry their visuals, with notes on which painter ran and why; the input project
        is not changed.

    Raises:
        StudioError: missing folder or size, unknown scene id or painter, or a scene that cannot be painted (the
            message names the scene by number and id).
        ProviderUnavailable: the named painter cannot run here (the message says what to install).
        Cancelled: `cancel` was cancelled.
    """
    # 1. Check inputs
    if project.folder is None:
        raise StudioError("`project` has no folder: save it first with `project.save(folder)`, so its images have "
                          "somewhere to go")
    if isinstance(preset, str):
        preset = load_preset(preset)
    if size is None:
        if preset is None:
            raise StudioError("illustrate needs `preset` or `size` to know the frame size, "
                              "e.g. preset=load_preset('draft')")
        size = preset.size(project.aspect)
    size = _check_size(size)
    known = names("painter")
    if painter != "auto" and painter not in known:
        raise StudioError(f"unknown painter {painter!r}; choose one of: auto, {', '.join(known)}")
    targets = _target_indexes(project, only)
    report = on_progress or no_progress
    check(cancel)
    store = store if store is not None else AssetStore(project.assets_dir)
    root = Path(media_root) if media_root is not None else Path.cwd()

    # 2. Choose the painters: the chosen one for scenes without media, `local` for scenes with it
    result = project
    scenes = list(project.scenes)
    generated = [i for i in targets if not scenes[i].media]
    with_media = [i for i in targets if scenes[i].media]
    chosen: Any = None
    if generated:
        if painter == "local":
            first = scenes[generated[0]]
            raise StudioError(f"{scene_label(first, generated[0])} has no `media` file, and the local painter only "
                              "uses files the user names: set its `media`, or choose another painter (e.g. cards)")
        # `local` is never an automatic choice: it cannot paint a scene without a file.
        wanted = (preset.providers.get("painter") if preset is not None else None) or known
        prefer = [name for name in wanted if name != "local"] or [name for name in known if name != "local"]
        chosen, choice = create("painter", painter, prefer=prefer,
                                configs=preset.models if preset is not None else None)
        result = _with_note_once(result, "painter: " + choice.reason)
    if with_media:
        numbers = ", ".join(str(i + 1) for i in with_media)
        result = _with_note_once(result, f"visuals: scene(s) {numbers} use their own media files (local painter); "
                                         "they keep their size, and composing fits them to the frame")
    media_painter = create("painter", "local")[0] if with_media else None

    # 3. Paint (or find) each scene's visual
    for done, i in enumerate(targets):
        check(cancel)
        scene = scenes[i]
        label = scene_label(scene, i)
        try:
            if scene.media:
                visual, reused = _use_media(media_painter, scene, i, size, result, root, store, cancel)
                by = "local"
            else:
                within = (lambda f, m, d=done, n=i: report((d + f) / len(targets),
                                                           f"scene {n + 1}/{len(scenes)}: {m} ({chosen.name})"))
                visual, reused = _paint(chosen, scene, i, size, result, store, cancel, within)
                by = chosen.name
        except Cancelled:
            raise
        except StudioError as exc:
            if str(exc).startswith(label):
                raise
            raise type(exc)(f"{label}: {exc}") from exc
        except Exception as exc:  # a painter's own failure (disk full, a model error): name the scene it was on
            raise StudioError(f"{label}: painting it failed ({type(exc).__name__}: {exc})") from exc
        scenes[i] = scene.with_visual(visual)
        report((done + 1) / len(targets), f"scene {i + 1}/{len(scenes)}: {'reused' if reused else 'painted'} ({by})")
    return replace(result, scenes=tuple(scenes))


def _paint(painter: Any, scene: Scene, index: int, size: tuple[int, int], project: Project, store: AssetStore,
           cancel: CancelToken | None, on_progress: ProgressFn | None = None) -> tuple[Path, bool]:
    """Paint one scene without media with the chosen painter, or find the same image in the store."""
    variant = painter.variant if supports(painter, "variant") else None
    key = asset_key(
        step="illustrate",
        provider=painter.name,
        model=painter.model,
        prompt=scene.visual_prompt,
        # Painters fall back on the narration when a scene has no visual prompt.
        narration=scene.narration if not scene.visual_prompt.strip() else "",
        style=project.style,
        seed=scene.seed,
        project_seed=project.seed,
        size=list(size),
        variant=variant(scene, index=index, style=project.style, project_seed=project.seed) if variant else None,
    )
    found = store.find(key, painter.suffix)
    if found is not None:
        return found, True
    # Painters that report progress within a scene (e.g. per denoising step) get a callback.
    extra = {"on_progress": on_progress} if on_progress is not None and supports(painter, "progress") else {}
    with store.making(key, painter.suffix) as tmp:
        painter.paint(scene, index=index, size=size, style=project.style, project_seed=project.seed, out=tmp,
                      cancel=cancel, **extra)
    return store.path(key, painter.suffix), False


def _use_media(painter: Any, scene: Scene, index: int, size: tuple[int, int], project: Project, root: Path,
               store: AssetStore, cancel: CancelToken | None) -> tuple[Path, bool]:
    """Copy a scene's own media file into the store (checked on first use), or find it there by its bytes."""
    source, suffix = painter.prepare(scene, index=index, media_root=root)
    key = asset_key(step="illustrate", provider=painter.name, model=painter.model, media_sha256=file_digest(source))
    found = store.find(key, suffix)
    if found is not None:  # the same bytes were checked and copied before
        return found, True
    with store.making(key, suffix) as tmp:
        painter.paint(scene, index=index, size=size, style=project.style, project_seed=project.seed, out=tmp,
                      cancel=cancel, media_root=root)
    return store.path(key, suffix), False


def _check_size(size: Any) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok or not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise StudioError(f"`size` must be (width, height) in whole pixels from {_MIN_SIDE} to {_MAX_SIDE}, "
                          f"got {size!r}")
    return width, height


def _target_indexes(project: Project, only: Collection[str] | None) -> list[int]:
    if only is None:
        return list(range(len(project.scenes)))
    if isinstance(only, str):
        raise StudioError(f"`only` must be a collection of scene ids, e.g. [{only!r}], not a string")
    ids = [s.id for s in project.scenes]
    unknown = sorted(set(only) - set(ids))
    if unknown:
        raise StudioError(f"`only` names unknown scene id(s) {unknown}; this project's scenes are {ids}")
    return [i for i, scene_id in enumerate(ids) if scene_id in set(only)]


def _with_note_once(project: Project, note: str) -> Project:
    return project if note in project.notes else project.with_note(note)
