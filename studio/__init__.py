"""Studio: a Python text-to-video studio.

    import studio
    project = studio.write_storyboard(open("examples/coffee.md").read())
    result = studio.make_video(project, preset="draft", output="coffee.mp4")

The four steps are verbs shaped ``Project -> Project`` (`write_storyboard`, `narrate`, `illustrate`) plus `compose`,
which renders the MP4; `make_video` runs them in order with caching, progress and cancellation. Heavy modules load on
first use, so ``import studio`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import Cancelled, ProviderUnavailable, StudioError
from .presets import Preset, load_preset
from .progress import CancelToken
from .project import Project, Scene, WordTiming

__version__ = "0.1.0"

_LAZY = {
    "write_storyboard": "studio.storyboard",
    "read_script": "studio.storyboard",
    "rewrite_scene": "studio.storyboard",
    "narrate": "studio.voice",
    "illustrate": "studio.visuals",
    "compose": "studio.compose",
    "build_timeline": "studio.compose",
    "make_video": "studio.pipeline",
}

__all__ = ["Project", "Scene", "WordTiming", "Preset", "load_preset", "CancelToken", "StudioError", "ProviderUnavailable",
           "Cancelled", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
