"""The HTTP API: a FastAPI app over a `JobRunner` (``python -m studio serve``); the Gradio app mounts into it.

    from studio.api import create_app
    from studio.jobs import JobRunner
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
  ``watermark``, ``caption_font`` or a scene's ``media``; ``GET /api/health`` (liveness for anyone; a signed-in caller also gets their own job counts).

Errors are JSON ``{"detail": "...", "field": "..."}`` with a 4xx status naming the field at fault; another user's
job or upload answers 404, exactly like one that does not exist. A full disk answers ``507`` (a submission the disk
clearly has no room for, an upload or any write that ran out of space); a damaged journal answers ``503`` on every
job and upload route, naming the fix (``studio serve --recover``), and ``/api/health`` says ``degraded``.
"""


import asyncio
import contextlib
import json
import logging
import re
import sqlite3
from typing import Annotated, Any, Literal, Optional

from fastapi import Depends, FastAPI, File, Header, Path as PathParam, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBasic, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .auth import Users
from .errors import StudioError
from .jobs import STATES, TERMINAL, JobRunner
from .journal import QueueFull, ServiceError, disk_full_message, free_bytes, is_disk_full

log = logging.getLogger("studio.api")

ID_PATTERN = r"^[0-9a-f]{32}$"
LOCAL_USER = "local"
SSE_POLL_S = 0.2
SSE_KEEPALIVE_S = 15.0


class ErrorOut(BaseModel):
    """An error: what is wrong, and the field (body field, header or path parameter) it is about."""

    detail: str
    field: Optional[str] = None


class SceneProgress(BaseModel):
    index: Optional[int] = None
    total: Optional[int] = None


class ErrorInfo(BaseModel):
    message: str


class VideoOut(BaseModel):
    """Facts of the finished video (as its check found them) and where to fetch it."""

    model_config = ConfigDict(extra="allow")
    duration_s: float
    size_bytes: int
    width: int
    height: int
    fps: int
    encoder: str
    url: str


class JobOut(BaseModel):
    """A job as its owner sees it."""

    id: str
    state: Literal["queued", "running", "done", "failed", "canceled", "interrupted"]
    percent: float
    step: Optional[str] = None
    message: Optional[str] = None
    scene: Optional[SceneProgress] = None
    eta_s: Optional[float] = None
    error: Optional[ErrorInfo] = None
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    attempts: int
    cancel_requested: bool
    expired: bool
    preset: str
    aspect: Optional[str] = None
    source: str
    title: Optional[str] = None
    steps: list[dict[str, Any]]
    scenes: dict[str, dict[str, str]]
    timings: dict[str, float]
    video: Optional[VideoOut] = None
    links: dict[str, str]


class JobList(BaseModel):
    jobs: list[JobOut]


class UploadOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    kind: Literal["image", "audio", "video", "font"]
    size_bytes: int
    sha256: str
    name: str
    created_at: float


class UploadList(BaseModel):
    uploads: list[UploadOut]


class Health(BaseModel):
    """``ok``; or ``degraded`` (HTTP 503) with the reason, when the journal is damaged or cannot be used."""

    status: Literal["ok", "degraded"]
    reason: Optional[str] = None
    version: str
    jobs: Optional[dict[str, int]] = None  # the caller's own jobs; absent for an anonymous caller
    executor: Optional[str] = None


_ERRORS = {status: {"model": ErrorOut} for status in (400, 401, 404, 409, 410, 413, 422, 429, 503, 507)}


def _request_models(runner: JobRunner) -> tuple[type[BaseModel], type[BaseModel]]:
    """The request body models, with this server's limits, presets and providers in their schema."""
    from . import providers
    from .compose.captions import STYLES
    from .compose.timeline import TRANSITIONS

    limits = runner.limits
    preset_names = tuple(runner.presets)
    writers = tuple(["auto", *providers.names("storyboard")])
    narrators = tuple(["auto", *providers.names("narrator")])
    painters = tuple(["auto", *[p for p in providers.names("painter") if p != "local"]])
    strict = ConfigDict(extra="forbid", strict=True)
    text = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # no control characters (tab and newlines are fine)

    class ProvidersIn(BaseModel):
        """Providers of the steps; ``auto`` picks by the preset's preferences."""

        model_config = strict
        writer: Optional[Literal[writers]] = None  # type: ignore[valid-type]
        narrator: Optional[Literal[narrators]] = None  # type: ignore[valid-type]
        painter: Optional[Literal[painters]] = None  # type: ignore[valid-type]

    class SceneIn(BaseModel):
        """One scene: narration (or a fixed duration for a silent scene), what it shows, and optional media."""

        model_config = strict
        id: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_-]{1,40}$")
        narration: str = Field("", max_length=limits.max_narration_chars, pattern=text)
        visual_prompt: str = Field("", max_length=limits.max_prompt_chars, pattern=text)
        duration_s: Optional[float] = Field(None, ge=0.2, le=limits.max_scene_s, allow_inf_nan=False)
        seed: int = Field(0, ge=0, le=2**31 - 1)
        media: Optional[str] = Field(None, pattern=ID_PATTERN, description="an upload id (image or video)")
        transition: Optional[Literal[TRANSITIONS]] = None  # type: ignore[valid-type]

    class JobIn(BaseModel):
        """What to render: exactly one of `script`, `brief` or `storyboard`, and how."""

        model_config = strict
        script: Optional[str] = Field(None, min_length=1, max_length=limits.max_script_chars, pattern=text,
                                      description="a script to narrate as written (Markdown or plain text)")
        brief: Optional[str] = Field(None, min_length=1, max_length=limits.max_brief_chars, pattern=text,
                                     description="a short request to write about")
        storyboard: Optional[list[SceneIn]] = Field(None, min_length=1, max_length=limits.max_scenes)
        preset: Literal[preset_names] = "draft" if "draft" in preset_names else preset_names[0]  # type: ignore[valid-type]
        aspect: Literal["16:9", "9:16", "1:1"] = "16:9"
        title: Optional[str] = Field(None, max_length=limits.max_text_chars, pattern=text)
        style: Optional[str] = Field(None, max_length=limits.max_text_chars, pattern=text)
        language: Optional[str] = Field(None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$", max_length=16)
        voice: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,63}$")
        seed: Optional[int] = Field(None, ge=0, le=2**31 - 1)
        providers: Optional[ProvidersIn] = None
        captions: Optional[bool] = None
        caption_style: Optional[Literal[tuple(STYLES)]] = None  # type: ignore[valid-type]
        music: Optional[str] = Field(None, pattern=ID_PATTERN, description="an upload id (audio)")
        music_volume: Optional[float] = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
        watermark: Optional[str] = Field(None, pattern=ID_PATTERN, description="an upload id (image)")
        caption_font: Optional[str] = Field(None, pattern=ID_PATTERN, description="an upload id (font: TTF or OTF)")

    return JobIn, SceneIn


def _error(status: int, detail: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status_code=status, headers=headers)


def _field_of(loc: Any) -> str | None:
    """``("body", "storyboard", 2, "duration_s")`` -> ``storyboard[2].duration_s``; headers and parameters by name."""
    parts = list(loc or ())
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        kind = parts.pop(0)
        if kind != "body" and parts:
            return str(parts[0])
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def create_app(runner: JobRunner, auth: Users | None = None, *, close_runner: bool = False,
               max_json_bytes: int = 1_000_000) -> FastAPI:
    """The FastAPI app of a job runner.

    Args:
        runner: The job runner it serves (its data folder, limits and presets).
        auth: Users allowed in (`studio.auth.Users`); None: no authentication, every request is the ``local`` user
            (bind such a server to loopback only; ``studio serve`` enforces that).
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
    JobIn, _ = _request_models(runner)
    basic = HTTPBasic(auto_error=False, description="user:secret from the server's --auth file")
    bearer = HTTPBearer(auto_error=False, description="a token (secret) from the server's --auth file")
    upload_limit = runner.uploads.limits.max_bytes

    # -- errors ------------------------------------------------------------------------------------------------------
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
        return _error(exc.status, str(exc), exc.field, headers)

    @app.exception_handler(StudioError)
    async def studio_error(request: Request, exc: StudioError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(sqlite3.DatabaseError)
    async def journal_error(request: Request, exc: sqlite3.DatabaseError) -> JSONResponse:
        # The journal's own calls raise ServiceErrors; this is for SQLite errors raised past them.
        translated = runner.journal._translate(exc)
        if isinstance(translated, ServiceError):
            return _error(translated.status, str(translated), translated.field)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(503, "the server's journal failed; the server's operator should run `studio serve --check`")

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        # A write that failed for want of room is 507 and says so; any other is the server's fault, said in JSON.
        if is_disk_full(exc):
            try:
                free = free_bytes(runner.data_dir)
            except OSError:
                free = None
            return _error(507, disk_full_message(free, then="try again"))
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"the server failed with an internal error ({type(exc).__name__}); its log has the "
                           "details")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = _field_of(first.get("loc"))
        message = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":
            field, message = "body", "the body is not valid JSON"
        return JSONResponse({"detail": f"`{field}`: {message}", "field": field,
                             "errors": [{"field": _field_of(e.get("loc")), "message": str(e.get("msg"))}
                                        for e in errors[:20]]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 413:
            detail = f"the request body is too large ({detail})"
        return _error(exc.status_code, detail, None, getattr(exc, "headers", None))

    # -- who is asking ---------------------------------------------------------------------------------------------
    if auth is None:
        def user() -> str:  # a local server: one user, no sign-in (and no security schemes in the document)
            return LOCAL_USER
    else:
        def user(request: Request, _basic: Annotated[Any, Depends(basic)] = None,
                 _bearer: Annotated[Any, Depends(bearer)] = None) -> str:
            # The two security dependencies document the schemes; the header is checked here, in one place.
            who = auth.authenticate(request.headers.get("authorization"))
            if who is None:
                raise StarletteHTTPException(401, "sign in: HTTP basic (user and secret) or a bearer token",
                                             headers={"WWW-Authenticate": 'Basic realm="studio", Bearer realm="studio"'})
            return who

    User = Annotated[str, Depends(user)]

    def maybe_user(request: Request) -> str | None:
        """The signed-in user, or None for an anonymous caller (health answers those too)."""
        return LOCAL_USER if auth is None else auth.authenticate(request.headers.get("authorization"))
    JobId = Annotated[str, PathParam(description="a job id (32 hex digits)", max_length=200)]
    UploadId = Annotated[str, PathParam(description="an upload id (32 hex digits)", max_length=200)]

    def job_out(job) -> dict:
        data = job.to_dict()
        base = f"/api/jobs/{job.id}"
        data["links"] = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
        if data["video"] is not None:
            data["video"]["url"] = f"{base}/video"
            data["links"]["video"] = f"{base}/video"
        return data

    # -- routes ----------------------------------------------------------------------------------------------------
    @app.get("/api/health", response_model=Health, response_model_exclude_none=True, responses={503: {"model": Health}},
             tags=["service"])
    def health(response: Response, who: Annotated[Optional[str], Depends(maybe_user)]) -> dict:
        """Whether the server runs; ``degraded`` (503) when its journal is damaged or cannot be used (every job and
        upload route then answers 503 too). A signed-in caller (or anyone on a loopback server without sign-in) also
        gets the reason, the executor and how many of *their own* jobs are in each state; an anonymous caller of a
        server with sign-in gets liveness only."""
        reason = runner.journal.damage
        counts = None
        try:
            counts = runner.counts(None if auth is None else who) if who is not None else None
        except ServiceError as exc:
            reason = reason or str(exc)
        if reason:
            response.status_code = 503
        out = {"status": "degraded" if reason else "ok", "version": __version__}
        if who is not None:
            out.update(reason=reason, jobs=counts or {}, executor=runner.executor.name)
        return out

    @app.post("/api/jobs", status_code=202, response_model=JobOut, responses={200: {"model": JobOut}, **_ERRORS},
              tags=["jobs"])
    def submit_job(body: JobIn, response: Response, who: User,  # type: ignore[valid-type]
                   idempotency_key: Annotated[Optional[str], Header(alias="Idempotency-Key", max_length=200)] = None
                   ) -> dict:
        """Queue a render. Returns 202 and the job; with an `Idempotency-Key` already used for the same request, 200
        and the job it made then (the same key with another request is 409)."""
        before = runner.find(who, idempotency_key) if idempotency_key is not None else None
        job = runner.submit(body.model_dump(exclude_none=True), owner=who, idempotency_key=idempotency_key)
        if before is not None and before.id == job.id:
            response.status_code = 200
        response.headers["Location"] = f"/api/jobs/{job.id}"
        return job_out(job)

    @app.get("/api/jobs", response_model=JobList, responses=_ERRORS, tags=["jobs"])
    def list_jobs(who: User,  # type: ignore[valid-type]
                  state: Annotated[Optional[Literal[STATES]], Query()] = None,  # type: ignore[valid-type]
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
        """The caller's jobs, newest first."""
        return {"jobs": [job_out(job) for job in runner.list(who, state=state, limit=limit)]}

    @app.get("/api/jobs/{job_id}", response_model=JobOut, responses=_ERRORS, tags=["jobs"])
    def get_job(job_id: JobId, who: User) -> dict:  # type: ignore[valid-type]
        """A job's state, percent, step and scene, ETA, error and video facts."""
        return job_out(runner.get(job_id, who))

    @app.post("/api/jobs/{job_id}/cancel", status_code=202, response_model=JobOut, responses=_ERRORS, tags=["jobs"])
    def cancel_job(job_id: JobId, who: User) -> dict:  # type: ignore[valid-type]
        """Cancel a job: a waiting one at once; a running one stops within moments (watch its events)."""
        return job_out(runner.cancel(job_id, who))

    @app.get("/api/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
             responses={200: {"description": "Server-Sent Events: `id` is the event's number, `event` its kind "
                                             "(queued, running, progress, scene, segment, step, cancel_requested, "
                                             "interrupted, done, failed, canceled), `data` JSON.",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **_ERRORS})
    async def job_events(job_id: JobId, request: Request, who: User,  # type: ignore[valid-type]
                         last_event_id: Annotated[Optional[str], Header(alias="Last-Event-ID", max_length=40)] = None,
                         after: Annotated[Optional[int], Query(ge=0, le=2**53)] = None):
        """The job's events as Server-Sent Events, from the start or after `Last-Event-ID` (or `after`); the stream
        ends after done, failed or canceled."""
        await run_in_threadpool(runner.get, job_id, who)
        start = after or 0
        if last_event_id is not None:
            if not re.fullmatch(r"\d{1,15}", last_event_id.strip()):
                return _error(400, "`Last-Event-ID` must be an event number from this stream", "Last-Event-ID")
            start = int(last_event_id.strip())

        async def stream():
            seq, quiet, ended = start, 0.0, False
            yield "retry: 2000\n\n"
            while True:
                if await request.is_disconnected() or runner.closing:
                    return
                events = await run_in_threadpool(runner.events, job_id, who, after=seq, limit=200)
                for event in events:
                    seq = event.seq
                    payload = json.dumps(event.to_dict(), ensure_ascii=True)
                    yield f"id: {event.seq}\nevent: {event.kind}\ndata: {payload}\n\n"
                    if event.kind in TERMINAL:
                        return
                if events:
                    quiet = 0.0
                    continue
                if ended:  # its end was sent before this connection's Last-Event-ID
                    return
                job = await run_in_threadpool(runner.get, job_id, who)
                if job.terminal:
                    # The end and its event are journaled in one transaction, maybe just after the query above: read
                    # once more, so the stream closes on that event.
                    ended = True
                    continue
                quiet += SSE_POLL_S
                if quiet >= SSE_KEEPALIVE_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(SSE_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{job_id}/video", tags=["jobs"], response_class=FileResponse,
             responses={200: {"description": "The MP4 (HTTP range requests answer 206).",
                              "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
                        206: {"description": "Part of the MP4.",
                              "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
                        416: {"description": "The range is outside the file."}, **_ERRORS})
    def job_video(job_id: JobId, who: User):  # type: ignore[valid-type]
        """The finished MP4 (supports `Range`)."""
        path = runner.video_path(job_id, who)
        job = runner.get(job_id, who)
        title = re.sub(r"[^A-Za-z0-9._-]+", "-", job.request.get("title") or "studio").strip("-.")[:60] or "studio"
        return FileResponse(path, media_type="video/mp4", filename=f"{title}.mp4", content_disposition_type="inline")

    @app.post("/api/uploads", status_code=201, response_model=UploadOut, responses=_ERRORS, tags=["uploads"],
              max_body_size=upload_limit + 64 * 1024, form_limits={"max_files": 1, "max_fields": 4})
    async def upload(file: Annotated[UploadFile, File(description="an image, audio, video or font file")],
                     who: User) -> dict:  # type: ignore[valid-type]
        """Store an image, audio, video or font (TTF, OTF) file for jobs (checked by its content; stored under a
        server-made name). Use its `id` as a request's `music`, `watermark`, `caption_font` or a scene's `media`."""
        try:
            saved = await run_in_threadpool(runner.uploads.save, who, file.file, file.filename)
        finally:
            await file.close()
        return saved.to_public()

    @app.get("/api/uploads", response_model=UploadList, responses=_ERRORS, tags=["uploads"])
    def list_uploads(who: User, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict:  # type: ignore[valid-type]
        """The caller's uploads, newest first."""
        return {"uploads": [u.to_public() for u in runner.uploads.list(who, limit)]}

    @app.get("/api/uploads/{upload_id}", response_model=UploadOut, responses=_ERRORS, tags=["uploads"])
    def get_upload(upload_id: UploadId, who: User) -> dict:  # type: ignore[valid-type]
        """One of the caller's uploads."""
        return runner.uploads.get(who, upload_id).to_public()

    @app.delete("/api/uploads/{upload_id}", status_code=204, responses=_ERRORS, tags=["uploads"])
    def delete_upload(upload_id: UploadId, who: User) -> Response:  # type: ignore[valid-type]
        """Delete one of the caller's uploads. An upload that a waiting or running job uses answers 409 naming the
        job (cancel it, or wait until it ends); a finished job's does not hold it."""
        runner.uploads.delete(who, upload_id)
        return Response(status_code=204)

    return app
