"""API keys with scopes, sent as `Authorization: Bearer <key>`.

Keys are configured by the API_KEYS setting, comma-separated `name:scope:secret` entries,
where `secret` is `sha256:<hex digest of the key>` (recommended: the key itself is never
stored) or the key in plain text (development only; the service warns at start). Scopes:
`producer` creates and reads jobs; `admin` may do everything. A presented key is hashed
and compared with every configured hash in constant time.

    python -m app.api.auth hash <key>     # prints the sha256:<hex> form of a key
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from app.api.common import MessageOut, documented

log = logging.getLogger("hybridq.auth")

SCOPES: Final = ("producer", "admin")
# What each scope may do: admin includes producer.
GRANTS: Final = {"producer": {"producer"}, "admin": {"producer", "admin"}}


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    scope: str
    digest: bytes  # sha256 of the key
    plaintext: bool  # configured in clear text


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_api_keys(entries: list[str]) -> list[ApiKey]:
    """Parse `name:scope:secret` entries; ValueError names the bad entry."""
    keys: list[ApiKey] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        parts = entry.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"API_KEYS entry {i + 1} is not name:scope:secret")
        name, scope, secret = parts
        if scope not in SCOPES:
            raise ValueError(f"API_KEYS entry {name!r}: scope must be one of {', '.join(SCOPES)}")
        if name in names:
            raise ValueError(f"API_KEYS: the name {name!r} is used twice")
        names.add(name)
        if secret.startswith("sha256:"):
            hexdigest = secret.removeprefix("sha256:")
            try:
                raw = bytes.fromhex(hexdigest)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"API_KEYS entry {name!r}: sha256: needs 64 hex digits")
            keys.append(ApiKey(name, scope, raw, plaintext=False))
        else:
            keys.append(ApiKey(name, scope, digest(secret), plaintext=True))
    return keys


class Authenticator:
    """Resolves a bearer token to its key; constant time over every configured key."""

    def __init__(self, keys: list[ApiKey], *, enabled: bool) -> None:
        self.keys = keys
        self.enabled = enabled

    def identify(self, token: str) -> ApiKey | None:
        presented = digest(token)
        found: ApiKey | None = None
        for key in self.keys:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(presented, key.digest):
                found = key
        return found


# Documented on every protected route.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: documented(
        MessageOut,
        "No API key, or an unknown one (with WWW-Authenticate: Bearer).",
        {
            "missing": ("No key", {"detail": "missing API key: send Authorization: Bearer <key>"}),
            "invalid": ("Unknown key", {"detail": "invalid API key"}),
        },
    ),
    403: documented(
        MessageOut,
        "The key lacks the scope this route needs.",
        {
            "scope": (
                "Producer key on an admin route",
                {"detail": "the key 'billing' lacks the 'admin' scope"},
            )
        },
    ),
}

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


class AuthFailure(Exception):
    """The request may not go on: 401 (no key, unknown key) or 403 (scope lacking)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"} if self.status_code == 401 else {}


def authenticate(auth: Authenticator, authorization: str | None) -> ApiKey | None:
    """The key a request's Authorization header presents (None with auth off), or
    AuthFailure (401). Headers alone decide, so this can run before the body is read."""
    if not auth.enabled:
        return None
    scheme, token = get_authorization_scheme_param(authorization)
    if not authorization or scheme.lower() != "bearer" or not token:
        raise AuthFailure(401, "missing API key: send Authorization: Bearer <key>")
    key = auth.identify(token)
    if key is None:
        raise AuthFailure(401, "invalid API key")
    return key


def authorize(auth: Authenticator, authorization: str | None, scope: str) -> str:
    """The actor (`key:<name>`, or `anonymous` with auth off) of a request whose key is
    granted `scope`; AuthFailure (401 or 403) otherwise."""
    key = authenticate(auth, authorization)
    if key is None:
        return "anonymous"
    if scope not in GRANTS[key.scope]:
        raise AuthFailure(403, f"the key {key.name!r} lacks the {scope!r} scope")
    return f"key:{key.name}"


class Require:
    """The dependency behind `require(scope)`: admits keys granted `scope` and records who
    called."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        # `credentials` documents the scheme in OpenAPI; the header is read as the gate
        # (app.api.gate) reads it, so both always agree.
        try:
            request.state.actor = authorize(
                request.app.state.authenticator, request.headers.get("authorization"), self.scope
            )
        except AuthFailure as exc:
            raise HTTPException(exc.status_code, exc.detail, headers=exc.headers) from None


def require(scope: str) -> Any:
    """A dependency that admits keys granted `scope`, and records who called."""
    return Depends(Require(scope))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "hash":
        print("sha256:" + digest(args[1]).hex())
        return
    if args == ["new"]:
        key = secrets.token_urlsafe(32)
        print(f"key:    {key}\nstored: sha256:{digest(key).hex()}")
        return
    print("usage: python -m app.api.auth hash <key> | new", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
