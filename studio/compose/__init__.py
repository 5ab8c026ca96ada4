"""Step 4, composition: a `Timeline` (pure data) built from the project, rendered to an MP4.

    from studio.compose import build_timeline, compose
    timeline = build_timeline(project, load_preset("draft"))     # inspect it: timeline.to_dataframe()
    result = compose(project, "draft", Path("video.mp4"))        # RenderResult(path, duration_s, ...)

See `studio.compose.render` for how frames are made and why, `studio.compose.captions` for captions and their
escaping, `studio.compose.audio` for the soundtrack and `studio.compose.encoders` for the encoder probe.
"""

from __future__ import annotations

import sys
import types

from .captions import STYLES, CaptionEvent, CaptionLayout, CaptionStyle
from .encoders import pick_encoder
from .render import RenderResult, compose
from .timeline import (TRANSITIONS, MusicTrack, NarrationTrack, Rect, Segment, Timeline, Transition, Watermark,
                       build_timeline)

__all__ = ["build_timeline", "compose", "RenderResult", "pick_encoder", "Timeline", "Segment", "Rect", "Transition",
           "NarrationTrack", "MusicTrack", "Watermark", "CaptionEvent", "CaptionLayout", "CaptionStyle", "STYLES",
           "TRANSITIONS"]


class _CallableModule(types.ModuleType):
    """``studio.compose`` is both this subpackage and the step's verb: importing a subpackage rebinds the parent's
    attribute to the module, so the module itself must be callable for ``studio.compose(project, ...)`` to keep
    working after anyone has imported ``studio.compose.*``."""

    def __call__(self, *args, **kwargs) -> RenderResult:
        return compose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
