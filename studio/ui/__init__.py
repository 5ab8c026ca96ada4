"""The studio app: Gradio panels over the `studio` library, one module per step, plus the app builder.

    from studio.ui import build_app, launch

Importing `studio` never imports Gradio; this package loads it on first use of `build_app` or `launch`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Gradio must not report usage anywhere: set before any module of this package imports it.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__all__ = ["build_app", "launch", "make_studio"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("studio.ui.app"), name)
    raise AttributeError(f"module 'studio.ui' has no attribute {name!r}")
