"""The uploads routes: store a file for jobs (checked by its content), list, look up, delete."""

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from .deps import Callers, UploadId
from .schemas import ERRORS, UploadList, UploadOut


def router(runner: Any, deps: Callers) -> APIRouter:
    routes = APIRouter(prefix="/api/uploads", tags=["uploads"])
    User = deps.User
    limit_bytes = runner.uploads.limits.max_bytes

    @routes.post("", status_code=201, response_model=UploadOut, responses=ERRORS,
                 max_body_size=limit_bytes + 64 * 1024, form_limits={"max_files": 1, "max_fields": 4})
    async def upload(file: Annotated[UploadFile, File(description="an image, audio, video or font file")],
                     who: User) -> dict:  # type: ignore[valid-type]
        """Store an image, audio, video or font (TTF, OTF) file for jobs (checked by its content; stored under a
        server-made name). Use its `id` as a request's `music`, `watermark`, `caption_font`, a scene's `media` or
        a scene's `recording` (your own voice for it)."""
        try:
            saved = await run_in_threadpool(runner.uploads.save, who, file.file, file.filename)
        finally:
            await file.close()
        return saved.to_public()

    @routes.get("", response_model=UploadList, responses=ERRORS)
    def list_uploads(who: User, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict:  # type: ignore[valid-type]
        """The caller's uploads, newest first."""
        return {"uploads": [u.to_public() for u in runner.uploads.list(who, limit)]}

    @routes.get("/{upload_id}", response_model=UploadOut, responses=ERRORS)
    def get_upload(upload_id: UploadId, who: User) -> dict:  # type: ignore[valid-type]
        """One of the caller's uploads."""
        return runner.uploads.get(who, upload_id).to_public()

    @routes.delete("/{upload_id}", status_code=204, responses=ERRORS)
    def delete_upload(upload_id: UploadId, who: User) -> Response:  # type: ignore[valid-type]
        """Delete one of the caller's uploads. An upload that a waiting or running job uses answers 409 naming the
        job (cancel it, or wait until it ends); a finished job's does not hold it."""
        runner.uploads.delete(who, upload_id)
        return Response(status_code=204)

    return routes
