"""Users of a shared Studio server, from a file: HTTP basic passwords and bearer tokens.

The file has one ``user:secret`` per line (``#`` starts a comment). A secret is the password or token itself, or
``sha256:<hex>`` of it, so the file need not hold it in the clear (tokens should be long and random:
``python -c "import secrets; print(secrets.token_urlsafe(32))"``). A request authenticates with
``Authorization: Basic base64(user:secret)`` or ``Authorization: Bearer <secret>``; each user sees only their own jobs
and uploads. Keep the file readable by the server's user only (``chmod 600``).

    users = Users.from_file("users.txt")
    users.authenticate("Bearer 3q2-...")        # "alice", or None
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import StudioError
from .journal import OWNER_RE

log = logging.getLogger("studio.auth")


def _matches(secret: str, given: str) -> bool:
    """Constant-time check of `given` against a stored secret (plain, or ``sha256:<hex>``)."""
    if secret.startswith("sha256:"):
        digest = hashlib.sha256(given.encode("utf-8")).hexdigest()
        return hmac.compare_digest(secret[7:].lower(), digest)
    return hmac.compare_digest(secret.encode("utf-8"), given.encode("utf-8"))


@dataclass(frozen=True)
class Users:
    """Who may use the server: user name -> secret (plain or ``sha256:<hex>``)."""

    secrets: dict[str, str]

    @classmethod
    def from_file(cls, path: Path | str) -> "Users":
        """Read a users file (see the module docstring).

        Raises:
            StudioError: a missing or empty file, or a malformed line (named by its number).
        """
        path = Path(path)
        try:
            text = path.read_text("utf-8")
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise StudioError(f"cannot read the --auth file {path}: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the --auth file %s can be read by other users of this machine; chmod 600 it", path)
        secrets: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, secret = line.partition(":")
            user, secret = user.strip(), secret.strip()
            if not sep or not OWNER_RE.match(user) or not secret:
                raise StudioError(f"{path} line {number}: expected `user:secret` with a user name of letters, digits "
                                  "or _ . @ + - and a non-empty secret")
            if secret.startswith("sha256:"):
                hexpart = secret[7:]
                if len(hexpart) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hexpart):
                    raise StudioError(f"{path} line {number}: `sha256:` must be followed by 64 hex digits")
            elif len(secret) < 8:
                raise StudioError(f"{path} line {number}: the secret of {user!r} is shorter than 8 characters")
            if user in secrets:
                raise StudioError(f"{path} line {number}: user {user!r} appears twice")
            secrets[user] = secret
        if not secrets:
            raise StudioError(f"the --auth file {path} names no users; add lines like `alice:LONG-SECRET`")
        return cls(secrets)

    def check_basic(self, user: str, password: str) -> str | None:
        """The user if the password is theirs, else None."""
        secret = self.secrets.get(user)
        ok = _matches(secret if secret is not None else "sha256:" + "0" * 64, password)  # same work either way
        return user if secret is not None and ok else None

    def check_token(self, token: str) -> str | None:
        """The user whose secret `token` is, else None (every user is checked, in constant time each)."""
        found = None
        for user, secret in self.secrets.items():
            if _matches(secret, token) and found is None:
                found = user
        return found

    def authenticate(self, authorization: str | None) -> str | None:
        """The user an ``Authorization`` header value proves, else None."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return self.check_token(value)
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            user, sep, password = decoded.partition(":")
            return self.check_basic(user, password) if sep else None
        return None


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or ``localhost`` (the only hosts a server without --auth may bind)."""
    import ipaddress

    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def hash_secret(secret: str) -> str:
    """The ``sha256:<hex>`` form of a secret, for a users file."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


__all__ = ["Users", "is_loopback", "hash_secret"]
