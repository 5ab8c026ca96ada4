"""How the HTTP API answers errors: JSON ``{"detail": ..., "field": ...}`` with the status the error names."""

import json
import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import StudioError
from ..journal import QueueFull, ServiceError, disk_full_message, free_bytes, is_disk_full
from ..requests import UPLOAD_MISSING, describe_error, field_of

log = logging.getLogger("studio.api")


def error(status: int, detail: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status_code=status, headers=headers)


def install(app: FastAPI, runner) -> None:
    """Answer every error of `app` as JSON, in the words of the request schema (`studio.server.requests`)."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
        return error(exc.status, str(exc), exc.field, headers)

    @app.exception_handler(StudioError)
    async def studio_error(request: Request, exc: StudioError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(sqlite3.DatabaseError)
    async def journal_error(request: Request, exc: sqlite3.DatabaseError) -> JSONResponse:
        # The journal's own calls raise ServiceErrors; this is for SQLite errors raised past them.
        translated = runner.journal._translate(exc)
        if isinstance(translated, ServiceError):
            return error(translated.status, str(translated), translated.field)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(503, "the server's journal failed; the server's operator should run `studio serve --check`")

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        # A write that failed for want of room is 507 and says so; any other is the server's fault, said in JSON.
        if is_disk_full(exc):
            try:
                free = free_bytes(runner.data_dir)
            except OSError:
                free = None
            return error(507, disk_full_message(free, then="try again"))
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, f"the server failed with an internal error ({type(exc).__name__}); its log has the details")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The same words as the job runner's check of the same model (`describe_error`).
        errors = exc.errors()
        field, message = describe_error(errors[0]) if errors else ("body", "the request is not valid")
        status = 404 if errors and errors[0].get("type") == UPLOAD_MISSING else 422  # as the job runner answers
        return JSONResponse({"detail": message, "field": field,
                             "errors": [{"field": field_of(e.get("loc")), "message": describe_error(e)[1]}
                                        for e in errors[:20]]}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 413:
            detail = f"the request body is too large ({detail})"
        return error(exc.status_code, detail, None, getattr(exc, "headers", None))
