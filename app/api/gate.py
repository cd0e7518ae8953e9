"""Authentication before the body: a request that may carry a body is answered 401 from
its headers alone, before a byte of its body is read or parsed.

FastAPI reads and parses a JSON body before it runs a route's dependencies, so without
this gate an anonymous client could make the API read, scan and parse megabytes (and
learn from a 422 how its body is validated) before being told it has no key. No public
route takes a body (GET /health, /health/ready and /metrics are the public ones; a test
holds every operation with a request body to a scope), so every POST, PUT, PATCH and
DELETE needs a valid key. Which scope the route needs (403) is still decided by its
`require(...)` dependency, after the body: by then the caller is a known key.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.auth import Authenticator, AuthFailure, authenticate

# Requests without a body need no gate: the route's dependency answers them first.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthGate:
    """Pure ASGI middleware: 401 from the headers for requests that may have a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _BODILESS:
            authenticator: Authenticator = scope["app"].state.authenticator
            try:
                authenticate(authenticator, _header(scope, b"authorization"))
            except AuthFailure as exc:
                await _refuse(send, exc)
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, exc: AuthFailure) -> None:
    raw = orjson.dumps({"detail": exc.detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    # The body is never read: closing costs the client a reconnect, reading it to keep
    # the connection would cost the API as much as the body is large.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
