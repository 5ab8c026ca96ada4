"""A client of the HTTP API (``python -m studio jobs ...`` uses it): submit, follow, cancel and fetch jobs of a running
``studio serve``.

    client = Client("http://127.0.0.1:8000", token=None)
    job = client.submit({"script": "# Tea\\n\\nTea is a leaf.", "preset": "draft"})
    for event in client.events(job["id"]):          # reconnects with Last-Event-ID if the connection drops
        print(event["event"], event["data"].get("percent"))
    client.download(job["id"], Path("tea.mp4"))
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from .assets import atomic_path
from .errors import StudioError

DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL_EVENTS = ("done", "failed", "canceled")


class Client:
    """Talks to a Studio server.

    Args:
        url: The server (default ``$STUDIO_SERVER`` or ``http://127.0.0.1:8000``).
        token: A bearer token from the server's ``--auth`` file (default ``$STUDIO_TOKEN``).
        timeout_s: Timeout of each request (event streams wait as long as the job runs).
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout_s: float = 60.0) -> None:
        import httpx

        self.url = (url or os.environ.get("STUDIO_SERVER") or DEFAULT_SERVER).rstrip("/")
        token = token if token is not None else os.environ.get("STUDIO_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._httpx = httpx
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except self._httpx.TransportError as exc:
            raise StudioError(f"no Studio server answers at {self.url} ({exc}); start one with "
                              "`python -m studio serve`, or give --server") from exc
        if response.status_code >= 400:
            try:
                data = response.json()
                message = data.get("detail") or response.text
            except ValueError:
                message = response.text
            raise StudioError(f"the server refused: {message} (HTTP {response.status_code})")
        return response.json() if response.content else None

    def upload(self, path: Path) -> str:
        """Upload a media file (image, audio, video); returns its upload id."""
        path = Path(path)
        if not path.is_file():
            raise StudioError(f"{path} does not exist")
        with open(path, "rb") as handle:
            return self._call("POST", "/api/uploads", files={"file": (path.name, handle)})["id"]

    def submit(self, request: dict, idempotency_key: str | None = None) -> dict:
        """Queue a render (see `studio.server.JobRequest` for the fields); returns the job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/api/jobs", json=request, headers=headers)

    def get(self, job_id: str) -> dict:
        return self._call("GET", f"/api/jobs/{job_id}")

    def list(self, state: str | None = None, limit: int = 50) -> list[dict]:
        params = {"limit": limit, **({"state": state} if state else {})}
        return self._call("GET", "/api/jobs", params=params)["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/api/jobs/{job_id}/cancel")

    def events(self, job_id: str, after: int = 0, *, reconnect_s: float = 300.0) -> Iterator[dict]:
        """The job's events (``{"id", "event", "data"}``) until done, failed or canceled. A dropped connection (the
        server restarting, say) is resumed with ``Last-Event-ID`` for up to `reconnect_s` seconds."""
        last, gave_up_at = after, None
        while True:
            try:
                with self.http.stream("GET", f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(last)},
                                      timeout=self._httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise StudioError(f"the server refused: {response.json().get('detail')} "
                                          f"(HTTP {response.status_code})")
                    gave_up_at = None
                    current: dict = {}
                    for line in response.iter_lines():
                        if line == "":
                            if "data" in current:
                                event = {"id": int(current.get("id", last)), "event": current.get("event", "message"),
                                         "data": json.loads(current["data"])}
                                last = event["id"]
                                yield event
                                if event["event"] in TERMINAL_EVENTS:
                                    return
                            current = {}
                        elif not line.startswith(":"):
                            key, _, value = line.partition(":")
                            current[key] = value[1:] if value.startswith(" ") else value
                if self.get(job_id)["state"] in TERMINAL_EVENTS:
                    return
            except self._httpx.TransportError:
                gave_up_at = gave_up_at or time.monotonic() + reconnect_s
                if time.monotonic() > gave_up_at:
                    raise StudioError(f"lost the server at {self.url} and it did not come back") from None
                time.sleep(1.0)

    def download(self, job_id: str, output: Path) -> Path:
        """Save a finished job's MP4 at `output` (written to a temporary name, renamed when complete)."""
        output = Path(output)
        try:
            with self.http.stream("GET", f"/api/jobs/{job_id}/video") as response:
                if response.status_code >= 400:
                    response.read()
                    raise StudioError(f"the server refused: {response.json().get('detail')} (HTTP {response.status_code})")
                with atomic_path(output) as tmp:
                    with open(tmp, "wb") as handle:
                        for chunk in response.iter_bytes():
                            handle.write(chunk)
        except self._httpx.TransportError as exc:
            raise StudioError(f"downloading the video from {self.url} failed ({exc}); try again") from exc
        return output
