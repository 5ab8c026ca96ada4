"""Who is asking: the dependencies every route of the HTTP API shares."""

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

from fastapi import Depends, Path as PathParam, Request
from fastapi.security import HTTPBasic, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

LOCAL_USER = "local"  # the one user of a loopback server without sign-in

JobId = Annotated[str, PathParam(description="a job id (32 hex digits)", max_length=200)]
UploadId = Annotated[str, PathParam(description="an upload id (32 hex digits)", max_length=200)]


@dataclass(frozen=True)
class Callers:
    """The caller dependencies of one app: `user` (401 unless signed in, when the server has users) and
    `maybe_user` (None for an anonymous caller)."""

    user: Callable[..., str]
    maybe_user: Callable[..., Optional[str]]

    @property
    def User(self) -> Any:  # noqa: N802 - a type alias for route signatures
        return Annotated[str, Depends(self.user)]

    @property
    def MaybeUser(self) -> Any:  # noqa: N802
        return Annotated[Optional[str], Depends(self.maybe_user)]


def callers(auth: Any) -> Callers:
    """The dependencies for `auth` (`studio.server.auth.Users`, or None for a loopback server's one user)."""
    if auth is None:
        def user() -> str:  # a local server: one user, no sign-in (and no security schemes in the document)
            return LOCAL_USER

        def maybe_user() -> Optional[str]:
            return LOCAL_USER

        return Callers(user, maybe_user)

    basic = HTTPBasic(auto_error=False, description="user:secret from the server's --auth file")
    bearer = HTTPBearer(auto_error=False, description="a token (secret) from the server's --auth file")

    def user(request: Request, _basic: Annotated[Any, Depends(basic)] = None,
             _bearer: Annotated[Any, Depends(bearer)] = None) -> str:
        # The two security dependencies document the schemes; the header is checked here, in one place.
        who = auth.authenticate(request.headers.get("authorization"))
        if who is None:
            raise StarletteHTTPException(401, "sign in: HTTP basic (user and secret) or a bearer token",
                                         headers={"WWW-Authenticate": 'Basic realm="studio", Bearer realm="studio"'})
        return who

    def maybe_user(request: Request) -> Optional[str]:
        """The signed-in user, or None for an anonymous caller (health answers those too)."""
        return auth.authenticate(request.headers.get("authorization"))

    return Callers(user, maybe_user)
