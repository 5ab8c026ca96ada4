"""The HTTP API's response models (its request body is `studio.server.requests`, shared with every face)."""

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict


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
    # Where the frames were made: "GPU compose: NVIDIA H200, hevc_nvenc p6" or "CPU compose: libx264 veryfast".
    compose: Optional[str] = None
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


ERRORS = {status: {"model": ErrorOut} for status in (400, 401, 404, 409, 410, 413, 422, 429, 503, 507)}
