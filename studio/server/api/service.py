"""The service route: health."""

from typing import Any

from fastapi import APIRouter, Response

from ... import __version__
from ..journal import ServiceError
from .deps import Callers
from .schemas import Health


def router(runner: Any, deps: Callers, *, signed_in_server: bool) -> APIRouter:
    routes = APIRouter(tags=["service"])
    MaybeUser = deps.MaybeUser

    @routes.get("/api/health", response_model=Health, response_model_exclude_none=True,
                responses={503: {"model": Health}})
    def health(response: Response, who: MaybeUser) -> dict:  # type: ignore[valid-type]
        """Whether the server runs; ``degraded`` (503) when its journal is damaged or cannot be used (every job and
        upload route then answers 503 too). A signed-in caller (or anyone on a loopback server without sign-in) also
        gets the reason, the executor and how many of *their own* jobs are in each state; an anonymous caller of a
        server with sign-in gets liveness only."""
        reason = runner.journal.damage
        counts = None
        try:
            counts = runner.counts(who if signed_in_server else None) if who is not None else None
        except ServiceError as exc:
            reason = reason or str(exc)
        if reason:
            response.status_code = 503
        out = {"status": "degraded" if reason else "ok", "version": __version__}
        if who is not None:
            out.update(reason=reason, jobs=counts or {}, executor=runner.executor.name)
        return out

    return routes
