"""Helpers that keep notebook cells short: show a storyboard, play a scene, show pictures, videos and timings.

    from studio import notebook as nb
    nb.show_storyboard(project)           # the scenes as a table
    nb.play(project.scenes[0])            # an inline audio player
    nb.show_grid(project)                 # every scene's picture (a clip's first frame)
    nb.show_video(result.path)            # an inline video player
    nb.scene_player(project)              # widgets: a slider over the scenes and a player for the chosen one

Every function returns an object that Jupyter displays (an ``IPython.display`` object, a pandas DataFrame or a
matplotlib Figure), so a helper can be the last line of a cell or be passed to ``display(...)``. Nothing here holds
logic of its own: the notebooks call the same library verbs as the app and the CLI. IPython and matplotlib are imported
on first use, so ``import studio`` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import StudioError
from .media import INPUT_GUARD, IMAGE_SUFFIXES, probe, read_audio, run_ffmpeg_output
from .project import Project, Scene

if TYPE_CHECKING:  # heavy modules stay lazy
    import pandas as pd
    from matplotlib.figure import Figure

    from .presets import Preset

__all__ = ["with_models", "progress_bar", "show_storyboard", "word_table", "play", "show_image", "show_scene", "show_video", "frame_at", "show_grid",
           "compare", "plot_narration", "notebook_dir", "scene_player", "scrubber"]

# Videos larger than this are linked rather than embedded, so a saved notebook stays small.
EMBED_LIMIT_BYTES = 8 * 1024 * 1024


def notebook_dir(name: str) -> Path:
    """A work folder for a notebook's projects and renders: ``$STUDIO_NOTEBOOK_DIR/name`` or ``~/studio-notebooks/name``.

    Kept between runs (re-running a notebook reuses every asset whose inputs did not change); delete it to start over.
    """
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise StudioError(f"`name` must be a plain folder name, got {name!r}")
    base = Path(os.environ.get("STUDIO_NOTEBOOK_DIR") or Path.home() / "studio-notebooks")
    folder = base / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def with_models(preset: "Preset | str", models: Mapping[str, Mapping[str, object]]) -> "Preset":
    """A copy of `preset` whose ``[models]`` options are updated per provider, e.g. a hub id, a local folder or a tiny
    test model (``studio.testing.TinyModels(folder).options("bark")``)::

        preset = nb.with_models("draft", {"diffusers-image": {"model": "stabilityai/sdxl-turbo"}})
    """
    from dataclasses import replace

    from .presets import load_preset

    preset = load_preset(preset) if isinstance(preset, str) else preset
    merged = {name: dict(options) for name, options in preset.models.items()}
    for name, options in models.items():
        if not isinstance(options, Mapping):
            raise StudioError(f"`models[{name!r}]` must be a dict of options, got {type(options).__name__}")
        merged[name] = {**merged.get(name, {}), **options}
    return replace(preset, models=merged)


def progress_bar(description: str = "") -> Callable[[float, str], None]:
    """An ``on_progress(fraction, message)`` callback drawing a progress bar (a widget in Jupyter, text elsewhere)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc=description, bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")

    def report(fraction: float, message: str) -> None:
        bar.n = round(min(max(fraction, 0.0), 1.0) * 100, 1)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if fraction >= 1.0:
            bar.close()

    return report


# -- tables --------------------------------------------------------------------------------------------------------
def show_storyboard(project: Project, columns: Sequence[str] = ("id", "narration", "visual_prompt", "duration_s", "seed"),
                    *, assets: bool = True) -> "pd.DataFrame":
    """The storyboard as a DataFrame (one row per scene), with each scene's audio length and visual when made.

    Args:
        project: The project to show.
        columns: Storyboard columns to include (see `studio.project.STORYBOARD_COLUMNS`).
        assets: Add ``audio_s`` (narration length) and ``visual`` (file name) columns, and ``voice`` (``your
            recording`` or ``narrator``) when a scene has its own recording.
    """
    table = project.to_dataframe()
    unknown = [c for c in columns if c not in table.columns]
    if unknown:
        raise StudioError(f"unknown storyboard column(s) {unknown}; choose from {list(table.columns)}")
    table = table[list(columns)].copy()
    if assets:
        table["audio_s"] = [round(s.audio_duration_s, 2) if s.audio_duration_s else None for s in project.scenes]
        table["visual"] = [s.visual.name if s.visual else None for s in project.scenes]
        if any(s.recording for s in project.scenes):
            table["voice"] = ["your recording" if s.recording else "narrator" if s.audio else None
                              for s in project.scenes]
    table.index = range(1, len(table) + 1)
    table.index.name = "scene"
    return table


def word_table(scene: Scene) -> "pd.DataFrame":
    """A scene's word timings (word, start_s, end_s) as a DataFrame."""
    import pandas as pd

    return pd.DataFrame([(w.word, w.start_s, w.end_s) for w in scene.words], columns=["word", "start_s", "end_s"])


# -- audio -----------------------------------------------------------------------------------------------------------
def _audio_path(item: Scene | Path | str) -> Path:
    if isinstance(item, Scene):
        if item.audio is None:
            raise StudioError(f"scene {item.id} has no narration yet: run `studio.narrate(project)` first")
        return Path(item.audio)
    return Path(item)


def play(item: Scene | Path | str, *, autoplay: bool = False):
    """An inline audio player for a scene's narration or an audio file."""
    from IPython.display import Audio

    path = _audio_path(item)
    if not path.is_file():
        raise StudioError(f"audio file {path} does not exist")
    return Audio(filename=str(path), autoplay=autoplay)


def scene_player(scenes: Project | Sequence[Scene], *, description: str = "scene"):
    """A slider over the scenes with an audio player that plays the chosen scene's narration (an ipywidgets box).

    Built from plain widgets (a slider and an ``ipywidgets.Audio`` whose bytes the slider swaps), not ``interact``: an
    ``Output`` widget makes headless runners such as nbclient talk to the kernel while it waits for a reply, which can
    stall a notebook run until its timeout.
    """
    import ipywidgets as widgets

    scenes = list(scenes.scenes if isinstance(scenes, Project) else scenes)
    if not scenes:
        raise StudioError("there are no scenes to play")
    paths = [_audio_path(scene) for scene in scenes]  # raises for a scene with no narration yet

    def audio_bytes(number: int) -> bytes:
        path = paths[number - 1]
        if not path.is_file():
            raise StudioError(f"audio file {path} does not exist")
        return path.read_bytes()

    slider = widgets.IntSlider(value=1, min=1, max=len(scenes), description=description)
    player = widgets.Audio(value=audio_bytes(1), format=paths[0].suffix.lstrip(".").lower() or "wav", autoplay=False)
    slider.observe(lambda change: setattr(player, "value", audio_bytes(change["new"])), names="value")
    return widgets.VBox([slider, player])


def scrubber(video: Path | str, *, width: int = 480, step_s: float = 0.05):
    """A time slider over a video with the frame at that time (an ipywidgets box; plain widgets, see `scene_player`)."""
    import ipywidgets as widgets
    from PIL import Image

    path = Path(video)
    info = probe(path)
    if not info.has_video or info.is_image:
        raise StudioError(f"{path} is not a video")

    def png(time_s: float) -> bytes:
        import io

        buffer = io.BytesIO()
        Image.fromarray(frame_at(path, time_s, width=width)).save(buffer, format="PNG")
        return buffer.getvalue()

    last = max(0.0, round(info.duration_s - step_s, 2))
    slider = widgets.FloatSlider(value=0.0, min=0.0, max=last, step=step_s, description="time (s)")
    picture = widgets.Image(value=png(0.0), format="png", width=width)
    slider.observe(lambda change: setattr(picture, "value", png(change["new"])), names="value")
    return widgets.VBox([slider, picture])


def plot_narration(scene: Scene, *, sample_rate: int = 16000) -> "Figure":
    """The scene's narration waveform with its word timings drawn over it (one shaded span per word)."""
    import matplotlib.pyplot as plt

    samples = read_audio(_audio_path(scene), sample_rate)[:, 0]
    t = np.arange(len(samples)) / sample_rate
    fig, ax = plt.subplots(figsize=(11, 2.6))
    ax.plot(t, samples, linewidth=0.5, color="#4a5a7a")
    top = float(np.abs(samples).max(initial=0.0)) or 1.0
    for i, word in enumerate(scene.words):
        ax.axvspan(word.start_s, word.end_s, color=("#f4b942" if i % 2 else "#7cc6a4"), alpha=0.35, linewidth=0)
        ax.text((word.start_s + word.end_s) / 2, top * (0.9 if i % 2 else 0.7), word.word, ha="center", va="top", fontsize=8)
    ax.set_xlim(0, max(t[-1] if len(t) else 0.0, scene.words[-1].end_s if scene.words else 0.0))
    ax.set_ylim(-top * 1.05, top * 1.05)
    ax.set_xlabel("seconds")
    ax.set_yticks([])
    ax.set_title(f"scene {scene.id}: {len(scene.words)} words over {scene.audio_duration_s or t[-1]:.2f} s", fontsize=10)
    fig.tight_layout()
    plt.close(fig)  # shown once, where the cell returns it
    return fig


# -- pictures and videos ---------------------------------------------------------------------------------------------
def frame_at(video: Path | str, time_s: float = 0.0, *, width: int | None = None) -> np.ndarray:
    """One frame of a video (or an image) as an RGB array (H, W, 3), optionally scaled to `width`."""
    path = Path(video)
    info = probe(path)
    if not info.has_video:
        raise StudioError(f"{path} holds no pictures")
    if not 0 <= time_s <= max(info.duration_s, 0.0) + 1e-6 and not info.is_image:
        raise StudioError(f"`time_s` must be between 0 and the video's {info.duration_s:.2f} s, got {time_s}")
    w, h = info.width, info.height
    if width is not None:
        w, h = int(width), max(2, round(info.height * width / info.width / 2) * 2)
    args = ([] if info.is_image else ["-ss", f"{time_s:.3f}"]) + [*INPUT_GUARD, "-i", path.resolve(), "-frames:v", "1",
                                                                   "-vf", f"scale={w}:{h}", "-f", "rawvideo",
                                                                   "-pix_fmt", "rgb24", "pipe:1"]
    data = run_ffmpeg_output(args, what=f"reading a frame of {path.name}")
    if len(data) < w * h * 3:
        raise StudioError(f"{path.name} has no frame at {time_s:.2f} s")
    return np.frombuffer(data[:w * h * 3], np.uint8).reshape(h, w, 3)


def show_image(path: Path | str, *, width: int = 480):
    """An inline picture."""
    from IPython.display import Image

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"image {path} does not exist")
    return Image(filename=str(path), width=width)


def show_video(path: Path | str, *, width: int = 640):
    """An inline video player; small files are embedded so the notebook shows them anywhere."""
    from IPython.display import Video

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"video {path} does not exist")
    embed = path.stat().st_size <= EMBED_LIMIT_BYTES
    return Video(str(path), embed=embed, width=width, mimetype="video/mp4" if embed else None)


def show_scene(scene: Scene, *, width: int = 480):
    """A scene's picture or clip (whatever `illustrate` made)."""
    if scene.visual is None:
        raise StudioError(f"scene {scene.id} has no visual yet: run `studio.illustrate(project)` first")
    if Path(scene.visual).suffix.lower() in IMAGE_SUFFIXES:
        return show_image(scene.visual, width=width)
    return show_video(scene.visual, width=width)


def _thumb(path: Path, width: int) -> np.ndarray:
    return frame_at(path, 0.0, width=width)


def show_grid(project: Project | Iterable[Scene], *, columns: int = 3, width: int = 320, titles: bool = True) -> "Figure":
    """Every scene's picture in a grid (a clip shows its first frame), titled with its number and prompt."""
    scenes = list(project.scenes if isinstance(project, Project) else project)
    if not scenes:
        raise StudioError("there are no scenes to show")
    missing = [s.id for s in scenes if s.visual is None]
    if missing:
        raise StudioError(f"scene(s) {missing} have no visual yet: run `studio.illustrate(project)` first")
    return compare({(f"{i}. {s.visual_prompt[:40]}" if titles else str(i)): s.visual for i, s in enumerate(scenes, 1)},
                   columns=columns, width=width)


def compare(pictures: Mapping[str, Path | str | np.ndarray], *, columns: int | None = None, width: int = 320) -> "Figure":
    """Pictures side by side, each under its label (files are read with `frame_at`; arrays are shown as they are)."""
    import matplotlib.pyplot as plt

    if not pictures:
        raise StudioError("`pictures` is empty: give a dict of label -> image path, video path or RGB array")
    columns = max(1, min(columns or len(pictures), len(pictures)))
    rows = -(-len(pictures) // columns)
    images = {label: (np.asarray(p) if isinstance(p, np.ndarray) else _thumb(Path(p), width)) for label, p in pictures.items()}
    aspect = max(img.shape[0] / img.shape[1] for img in images.values())
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.6 * aspect * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, img) in zip(axes.flat, images.items()):
        ax.imshow(img)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig

