"""Errors that Studio raises for its users.

Every message names what is wrong and how to fix it; the UI turns `StudioError` into `gr.Error`, the CLI prints it
without a traceback.
"""

from __future__ import annotations


class StudioError(Exception):
    """Bad input or a failed step, with a message written for the user."""


class ProviderUnavailable(StudioError):
    """A provider cannot run on this machine (missing package, weights or GPU); the message says what to install."""


class Cancelled(StudioError):
    """The user (or a job runner) cancelled the work."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
