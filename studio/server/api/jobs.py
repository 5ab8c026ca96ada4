"""The jobs routes: submit, list, follow (Server-Sent Events), cancel, download."""

import asyncio
import json
import re
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..models import STATES, TERMINAL
from .deps import Callers, JobId
from .errors import error
from .schemas import ERRORS, JobList, JobOut

SSE_POLL_S = 0.2
SSE_KEEPALIVE_S = 15.0
VIDEO_RESPONSES = {
    200: {"description": "The MP4 (HTTP range requests answer 206).",
          "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
    206: {"description": "Part of the MP4.", "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
    416: {"description": "The range is outside the file."}, **ERRORS}
EVENT_RESPONSES = {
    200: {"description": "Server-Sent Events: `id` is the event's number, `event` its kind (queued, running, progress, "
                         "scene, segment, step, cancel_requested, interrupted, done, failed, canceled), `data` JSON.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **ERRORS}


def job_out(job: Any) -> dict:
    """A job as its owner sees it, with the links to follow it."""
    data = job.to_dict()
    base = f"/api/jobs/{job.id}"
    data["links"] = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
    if data["video"] is not None:
        data["video"]["url"] = f"{base}/video"
        data["links"]["video"] = f"{base}/video"
    return data


def router(runner: Any, job_model: type, deps: Callers) -> APIRouter:
    """The jobs routes of `runner`; `job_model` is the request body (`studio.server.requests.models_for`)."""
    routes = APIRouter(prefix="/api/jobs", tags=["jobs"])
    User = deps.User
    JobIn = job_model

    @routes.post("", status_code=202, response_model=JobOut, responses={200: {"model": JobOut}, **ERRORS})
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

    @routes.get("", response_model=JobList, responses=ERRORS)
    def list_jobs(who: User,  # type: ignore[valid-type]
                  state: Annotated[Optional[Literal[STATES]], Query()] = None,  # type: ignore[valid-type]
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
        """The caller's jobs, newest first."""
        return {"jobs": [job_out(job) for job in runner.list(who, state=state, limit=limit)]}

    @routes.get("/{job_id}", response_model=JobOut, responses=ERRORS)
    def get_job(job_id: JobId, who: User) -> dict:  # type: ignore[valid-type]
        """A job's state, percent, step and scene, ETA, error and video facts."""
        return job_out(runner.get(job_id, who))

    @routes.post("/{job_id}/cancel", status_code=202, response_model=JobOut, responses=ERRORS)
    def cancel_job(job_id: JobId, who: User) -> dict:  # type: ignore[valid-type]
        """Cancel a job: a waiting one at once; a running one stops within moments (watch its events)."""
        return job_out(runner.cancel(job_id, who))

    @routes.get("/{job_id}/events", response_class=StreamingResponse, responses=EVENT_RESPONSES)
    async def job_events(job_id: JobId, request: Request, who: User,  # type: ignore[valid-type]
                         last_event_id: Annotated[Optional[str], Header(alias="Last-Event-ID", max_length=40)] = None,
                         after: Annotated[Optional[int], Query(ge=0, le=2**53)] = None):
        """The job's events as Server-Sent Events, from the start or after `Last-Event-ID` (or `after`); the stream
        ends after done, failed or canceled."""
        await run_in_threadpool(runner.get, job_id, who)
        start = after or 0
        if last_event_id is not None:
            if not re.fullmatch(r"\d{1,15}", last_event_id.strip()):
                return error(400, "`Last-Event-ID` must be an event number from this stream", "Last-Event-ID")
            start = int(last_event_id.strip())
        return StreamingResponse(_stream(runner, request, job_id, who, start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @routes.get("/{job_id}/video", response_class=FileResponse, responses=VIDEO_RESPONSES)
    def job_video(job_id: JobId, who: User):  # type: ignore[valid-type]
        """The finished MP4 (supports `Range`)."""
        path = runner.video_path(job_id, who)
        job = runner.get(job_id, who)
        title = re.sub(r"[^A-Za-z0-9._-]+", "-", job.request.get("title") or "studio").strip("-.")[:60] or "studio"
        return FileResponse(path, media_type="video/mp4", filename=f"{title}.mp4", content_disposition_type="inline")

    return routes


async def _stream(runner: Any, request: Request, job_id: str, who: str, start: int):
    """A job's events as Server-Sent Events, polling the journal; ends after the job's end event."""
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
            # The end and its event are journaled in one transaction, maybe just after the query above: read once
            # more, so the stream closes on that event.
            ended = True
            continue
        quiet += SSE_POLL_S
        if quiet >= SSE_KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(SSE_POLL_S)
