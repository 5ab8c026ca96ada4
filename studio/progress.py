"""Progress callbacks and cancellation, shared by every step.

Progress is a plain callback ``on_progress(fraction, message)``; the UI adapts it to ``gr.Progress`` and the CLI to a
tqdm bar. Cancellation is a `CancelToken` checked between units of work and inside model loops.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import Cancelled

ProgressFn = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that ignores everything."""


class CancelToken:
    """A flag that a worker checks; `cancel()` may be called from any thread.

    Processes registered with `on_cancel` (e.g. ffmpeg) are stopped as soon as `cancel()` is called, so a cancel does
    not wait for the next check.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a dead process must not stop the others from being stopped
                pass

    def check(self) -> None:
        """Raise `Cancelled` if `cancel()` was called."""
        if self._event.is_set():
            raise Cancelled()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on cancel (at once if already cancelled); returns a function that unregisters it."""
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._callbacks.append(callback)
        if already:
            callback()

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s`; True if cancelled meanwhile."""
        return self._event.wait(timeout_s)


def check(cancel: Optional[CancelToken]) -> None:
    """`cancel.check()` when a token was given."""
    if cancel is not None:
        cancel.check()


def scaled(on_progress: Optional[ProgressFn], start: float, end: float) -> ProgressFn:
    """A callback that maps a sub-task's 0..1 onto `start..end` of the parent's."""
    parent = on_progress or no_progress

    def report(fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        parent(start + (end - start) * fraction, message)

    return report


# -- a render's progress as data -------------------------------------------------------------------------------------
# The steps of a render and the share of the bar each gets (narration and encoding take most of the time offline).
# The one definition: the pipeline, the CLI, the job journal and the UIs all read it from here.
STEPS: tuple[tuple[str, float], ...] = (("storyboard", 0.02), ("narrate", 0.28), ("illustrate", 0.12), ("compose", 0.58))
STEP_NAMES: tuple[str, ...] = tuple(name for name, _ in STEPS)


def step_range(step: str) -> tuple[float, float]:
    """The part ``(start, end)`` of the whole run's 0..1 that `step` covers."""
    start = 0.0
    for name, weight in STEPS:
        if name == step:
            return start, start + weight
        start += weight
    raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEP_NAMES)}")


@dataclass(frozen=True)
class Progress:
    """One progress event of a render, as data (the CLI's bar, ``gr.Progress``, the job journal and SSE read its
    fields; nobody parses `message`).

    Attributes:
        fraction: Of the whole run, 0..1.
        message: What is happening, for people (``scene 3/7 narrated``).
        step: The step it belongs to (one of `STEP_NAMES`), or None for the run's start and end.
        step_fraction: Of that step, 0..1.
        scene: The scene (or segment) being worked on, 1-based, when there is one.
        scenes: How many scenes (or segments) the step has.
    """

    fraction: float
    message: str
    step: Optional[str] = None
    step_fraction: Optional[float] = None
    scene: Optional[int] = None
    scenes: Optional[int] = None

    @property
    def step_number(self) -> Optional[int]:
        """1-based number of `step` among `STEP_NAMES`."""
        return STEP_NAMES.index(self.step) + 1 if self.step in STEP_NAMES else None

    def label(self) -> str:
        """``[2/4 narrate] scene 3/7 narrated``: the message with its step, as a bar shows it."""
        if self.step is None:
            return self.message
        return f"[{self.step_number}/{len(STEPS)} {self.step}] {self.message}"


UpdateFn = Callable[[Progress], None]


class Reporter:
    """Turns a step's own ``(fraction, message)`` reports into `Progress` events for `on_update`, and into the plain
    ``on_progress(fraction, label)`` callback for callers that want only that."""

    def __init__(self, on_progress: Optional[ProgressFn] = None, on_update: Optional[UpdateFn] = None) -> None:
        self._progress, self._update = on_progress, on_update

    def emit(self, event: Progress) -> None:
        if self._update is not None:
            self._update(event)
        if self._progress is not None:
            self._progress(event.fraction, event.label())

    def step(self, step: str, step_fraction: float, message: str, *, scene: Optional[int] = None,
             scenes: Optional[int] = None) -> None:
        start, end = step_range(step)
        within = min(max(step_fraction, 0.0), 1.0)
        self.emit(Progress(start + (end - start) * within, message, step, within, scene, scenes))

    def for_step(self, step: str) -> ProgressFn:
        """A plain ``(fraction, message)`` callback for a step verb, reported as `step`."""
        return lambda fraction, message: self.step(step, fraction, message)

    def done(self) -> None:
        self.emit(Progress(1.0, "done"))
