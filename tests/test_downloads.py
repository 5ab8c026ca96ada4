"""Model downloads in the background (the Models panel's), and downloads on first use: who may, when, and what."""

from __future__ import annotations

import threading
import time

import pytest

from studio.downloads import Downloads, download_allowed, first_use_enabled
from studio.errors import Cancelled, StudioError


def wait(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_first_use_is_off_unless_asked_and_on_for_a_space():
    assert first_use_enabled(environ={}) is False
    assert first_use_enabled(environ={"STUDIO_DOWNLOAD_MODELS": "1"}) is True
    assert first_use_enabled(environ={"SPACE_ID": "me/studio"}) is True  # a Space: the hub is near, /data persists
    assert first_use_enabled(environ={"SPACE_ID": "me/studio", "STUDIO_DOWNLOAD_MODELS": "0"}) is False
    assert first_use_enabled(True, environ={}) is True and first_use_enabled(False, environ={"SPACE_ID": "x"}) is False


def test_downloads_are_allowed_on_the_users_machine_and_a_space_only():
    assert download_allowed(True, environ={}) is True
    assert download_allowed(False, environ={}) is False  # a shared server: its operator decides
    assert download_allowed(False, environ={"STUDIO_ALLOW_MODEL_DOWNLOADS": "1"}) is True
    assert download_allowed(False, environ={"SPACE_ID": "me/studio"}) is True
    assert download_allowed(True, environ={"STUDIO_ALLOW_MODEL_DOWNLOADS": "no"}) is False


class FakePull:
    """Pulls 10 chunks of 1 MB, reporting each; stops when cancelled (as `studio.catalog.pull` does)."""

    def __init__(self, fail: str | None = None) -> None:
        self.release = threading.Event()
        self.fail = fail
        self.calls = []

    def __call__(self, entry, *, on_progress, cancel, yes=False):
        assert yes  # a click (or the first-use setting) is the user's confirmation
        self.calls.append(entry.name)
        for chunk in range(10):
            if cancel.cancelled:
                raise Cancelled("cancelled")
            on_progress((chunk + 1) * 1_000_000, 10_000_000, f"chunk {chunk + 1}")
            if chunk == 4:
                self.release.wait(5)
        if self.fail:
            raise StudioError(self.fail)


def test_a_download_runs_in_the_background_reports_progress_and_can_be_cancelled():
    pull = FakePull()
    downloads = Downloads(pull=pull)
    item = downloads.start("sd-turbo")
    wait(lambda: downloads.state("sd-turbo")["done"] == 5_000_000)
    state = downloads.state("sd-turbo")
    assert state["state"] == "running" and state["percent"] == 50.0 and state["total"] == 10_000_000
    assert downloads.start("sd-turbo") is item and pull.calls == ["sd-turbo"]  # one download per model at a time
    downloads.cancel("sd-turbo")
    pull.release.set()
    wait(lambda: downloads.state("sd-turbo")["state"] != "running")
    assert downloads.state("sd-turbo")["state"] == "canceled" and "resumes" in downloads.state("sd-turbo")["message"]
    assert not downloads.running()

    again = FakePull()
    again.release.set()
    downloads = Downloads(pull=again)
    downloads.start("stabilityai/sd-turbo")  # a hub id names the same catalogue model
    wait(lambda: downloads.state("sd-turbo")["state"] == "done")
    assert downloads.state("sd-turbo")["percent"] == 100.0


def test_a_failed_download_says_why_and_unknown_models_are_refused_at_once():
    pull = FakePull(fail="the hub answered 401: accept the licence at https://huggingface.co/org/model")
    pull.release.set()
    downloads = Downloads(pull=pull)
    downloads.start("sd-turbo")
    wait(lambda: downloads.state("sd-turbo")["state"] == "failed")
    assert "accept the licence" in downloads.state("sd-turbo")["error"]
    with pytest.raises(StudioError):
        downloads.start("no-such-model/anywhere")
