"""The HTTP API: a FastAPI app over a `JobRunner` (``python -m studio serve``); the Gradio app mounts into it.

    from studio.server import JobRunner, Users, create_app
    app = create_app(JobRunner(data_dir), auth=Users.from_file("users.txt"))   # then: uvicorn.run(app)

Routes (the OpenAPI document is at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /api/jobs``: a script, a brief or a storyboard, with preset, aspect, voice, providers, captions, music,
  caption font ->
  ``202`` and the job (``Idempotency-Key`` header: the same key and request give the same job, ``200``).
- ``GET /api/jobs``: the caller's jobs; ``GET /api/jobs/{id}``: state, percent, step, scene, ETA, error, video facts.
- ``GET /api/jobs/{id}/events``: Server-Sent Events (progress, scene and step completion, done/failed/canceled);
  reconnecting with ``Last-Event-ID`` resumes after that event.
- ``GET /api/jobs/{id}/video``: the MP4, with HTTP range requests.
- ``POST /api/jobs/{id}/cancel``; ``POST /api/uploads`` (multipart ``file``) -> an upload id for ``music``,
  ``watermark``, ``caption_font``, a scene's ``media`` or its ``recording``; ``GET /api/health`` (liveness for anyone; a signed-in caller also gets their own job counts).

Errors are JSON ``{"detail": "...", "field": "..."}`` with a 4xx status naming the field at fault; another user's
job or upload answers 404, exactly like one that does not exist. A full disk answers ``507`` (a submission the disk
clearly has no room for, an upload or any write that ran out of space); a damaged journal answers ``503`` on every
job and upload route, naming the fix (``studio serve --recover``), and ``/api/health`` says ``degraded``.
"""

import contextlib
from typing import Any, Optional

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ..requests import models_for
from . import errors, jobs, service, uploads
from .deps import LOCAL_USER, callers
from .jobs import SSE_KEEPALIVE_S, SSE_POLL_S

__all__ = ["create_app", "LOCAL_USER", "SSE_POLL_S", "SSE_KEEPALIVE_S"]


def create_app(runner: Any, auth: Optional[Any] = None, *, close_runner: bool = False,
               max_json_bytes: int = 1_000_000) -> FastAPI:
    """The FastAPI app of a job runner.

    Args:
        runner: The job runner it serves (`studio.server.JobRunner`: its data folder, limits and presets).
        auth: Users allowed in (`studio.server.auth.Users`); None: no authentication, every request is the ``local``
            user (bind such a server to loopback only; ``studio serve`` enforces that).
        close_runner: Close the runner when the app shuts down (``studio serve`` sets it).
        max_json_bytes: Largest request body accepted outside uploads (413 beyond).

    Returns:
        The app; mount others (the Gradio app) into it with ``app.mount`` or ``gr.mount_gradio_app``.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if close_runner:
            await run_in_threadpool(runner.close)

    app = FastAPI(title="Studio API", version=__version__, lifespan=lifespan, max_body_size=max_json_bytes,
                  description="Render narrated videos from a script, a brief or a storyboard, as background jobs.")
    app.state.runner = runner
    app.state.auth = auth
    errors.install(app, runner)
    deps = callers(auth)
    job_model, _ = models_for(runner.limits, runner.presets)  # the one request schema, with this server's limits
    app.include_router(service.router(runner, deps, signed_in_server=auth is not None))
    app.include_router(jobs.router(runner, job_model, deps))
    app.include_router(uploads.router(runner, deps))
    return app
