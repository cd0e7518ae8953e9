"""Authentication before the body: a request that may carry a body is answered 401 from
its headers alone, before a byte of its body is read or parsed.

FastAPI reads and parses a JSON body before it runs a route's dependencies, so without
this gate an anonymous client could make the API read, scan and parse megabytes (and
learn from a 422 how its body is validated) before being told it has no key. No public
route takes a body (GET /health, /health/ready and /metrics are the public ones; a test
holds every operation with a request body to a scope), so every POST, PUT, PATCH and
DELETE needs a valid key. Which scope the route needs (403) is still decided by its
`require(...)` dependency, after the body: by then the caller is a known key.

The dashboard's forms are the exception: a browser sends no Authorization header, and the
dashboard authenticates each form itself (its session cookie and CSRF token, or the key
typed into the login form). They are small: a form body must declare its length, at
most DASHBOARD_FORM_MAX_BYTES, or it is refused before it is read.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.auth import Authenticator, AuthFailure, authenticate

# Requests without a body need no gate: the route's dependency answers them first.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})
# The dashboard's forms (app.dashboard.forms) authenticate themselves; a login or an
# action form is a few hundred bytes.
DASHBOARD_PREFIX = "/dashboard/"
DASHBOARD_FORM_MAX_BYTES = 16 * 1024


class AuthGate:
    """Pure ASGI middleware: 401 from the headers for requests that may have a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _BODILESS:
            if scope["path"].startswith(DASHBOARD_PREFIX):
                length = _header(scope, b"content-length")
                if length is None or not length.isdigit():
                    await _refuse(send, 411, "a dashboard form must declare its Content-Length")
                    return
                if int(length) > DASHBOARD_FORM_MAX_BYTES:
                    detail = f"a dashboard form is at most {DASHBOARD_FORM_MAX_BYTES} bytes"
                    await _refuse(send, 413, detail)
                    return
                await self.app(scope, receive, send)
                return
            authenticator: Authenticator = scope["app"].state.authenticator
            try:
                authenticate(authenticator, _header(scope, b"authorization"))
            except AuthFailure as exc:
                await _refuse(send, exc.status_code, exc.detail, exc.headers)
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(
    send: Send, status: int, detail: str, extra: dict[str, str] | None = None
) -> None:
    raw = orjson.dumps({"detail": detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    # The body is never read: closing costs the client a reconnect, reading it to keep
    # the connection would cost the API as much as the body is large.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
