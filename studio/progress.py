"""Progress callbacks and cancellation, shared by every step.

Progress is a plain callback ``on_progress(fraction, message)``; the UI adapts it to ``gr.Progress`` and the CLI to a
tqdm bar. Cancellation is a `CancelToken` checked between units of work and inside model loops.
"""

from __future__ import annotations

import threading
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
