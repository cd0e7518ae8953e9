"""Request limits enforced before FastAPI parses a body: its size, the time it takes to
arrive, its JSON nesting, and JSON that only a lenient parser reads.

A pure ASGI middleware (it runs after app.api.gate, so only authenticated requests get
here). It reads the body, refusing at once with 413 one whose Content-Length or streamed
size exceeds the route's limit (MAX_JOB_REQUEST_BYTES for POST /jobs, MAX_REQUEST_BYTES
for the others), with 408 one that takes longer than REQUEST_BODY_TIMEOUT; then, for a
JSON body, refuses with 422 nesting deeper than MAX_JSON_DEPTH and anything RFC 8259
does not allow (NaN, Infinity, a number too large for a double such as 1e400: Python's
json module would read them, and they would be stored as null), and hands the buffered
body to the app. Every check runs at C speed: no Python loop over the bytes.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Bracket bytes as signed steps: an opening bracket +1, a closing one -1 (0xFF).
_STEPS = bytearray(256)
_STEPS[ord("[")] = _STEPS[ord("{")] = 1
_STEPS[ord("]")] = _STEPS[ord("}")] = 0xFF
_STEP_TABLE = bytes(_STEPS)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
# Steps summed per slice before the loop may run other tasks (a few ms of C each).
_SLICE = 1 << 20
# Every digit as 0, so that numbers are found with substring searches (memchr speed,
# where a regular expression with a character class scans at a few tens of MB/s).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)


def outside_strings(body: bytes) -> bytes:
    """`body` without its JSON strings (for a body a JSON parser accepts, exactly)."""
    if b'"' not in body:
        return body
    if b"\\" in body:
        # Escaped backslashes first, then escaped quotes: what is left of every string
        # is the text between an unescaped pair of quotes.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(body.split(b'"')[::2])


async def json_depth_exceeds(body: bytes, limit: int, *, outside: bytes | None = None) -> bool:
    """True if `body` nests arrays/objects deeper than `limit` (strings are skipped).
    The bytes are only handled by C code (replace, split, translate, accumulate), one
    slice at a time, between which the event loop runs other tasks; a deep body is
    found in its first slice. `outside`: the body's `outside_strings`, if known."""
    if outside is None:
        outside = outside_strings(body)
    deep_run = b"\x01" * (limit + 1)
    depth = 0
    for start in range(0, len(outside), _SLICE):
        if start:
            await asyncio.sleep(0)
        steps = outside[start : start + _SLICE].translate(_STEP_TABLE, _NOT_BRACKET)
        if deep_run in steps:  # the common deep case, found at once
            return True
        opens = steps.count(1)
        if depth + opens > limit:  # else this slice cannot go deeper than the limit
            chunk = array("b", steps)
            if max(accumulate(chunk, initial=depth)) > limit:
                return True
        depth += 2 * opens - len(steps)
    return False


def _maybe_lenient(outside: bytes) -> bool:
    """Whether the text outside strings holds what a lenient parser may read as a number
    JSON has not: NaN or Infinity (N, I: true, false and null have neither), an exponent,
    or a literal of hundreds of digits (beyond a double)."""
    if b"N" in outside or b"I" in outside:
        return True
    if b"e" not in outside and b"E" not in outside and len(outside) < 300:
        return False
    digits = outside.translate(_DIGITS_AS_ZERO)
    return b"0e" in digits or b"0E" in digits or b"0" * 300 in digits


def strict_json_error(body: bytes, *, outside: bytes | None = None) -> str | None:
    """Why `body` is not strict JSON (NaN, Infinity, 1e400), or None. orjson refuses what
    RFC 8259 refuses, at C speed; it runs only when the text outside strings holds what
    could be such a number, so a body is parsed once (by FastAPI, which keeps integers
    of any size exact) unless it may need refusing."""
    if outside is None:
        outside = outside_strings(body)
    if not _maybe_lenient(outside):
        return None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return str(exc)
    return None


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI will parse this body as JSON (application/json or +json)."""
    value = _header(scope, b"content-type")
    if value is None:
        return False
    media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        max_depth: int,
        body_timeout: float,
        path_limits: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.body_timeout = body_timeout
        # (method, path) -> a smaller body limit for that route.
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get((scope["method"], scope["path"]), self.max_bytes)
        too_large = f"request body over {limit} bytes"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _reject(send, 413, too_large, "too_large", close=True)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await _reject(send, 413, too_large, "too_large", close=True)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            msg = f"request body not received within {self.body_timeout:g} seconds"
            await _reject(send, 408, msg, "timeout", close=True)
            return
        body = b"".join(chunks)
        if body and _is_json(scope):
            outside = outside_strings(body)
            if await json_depth_exceeds(body, self.max_depth, outside=outside):
                msg = f"JSON nested deeper than {self.max_depth} levels"
                await _reject(send, 422, msg, "too_deep")
                return
            error = strict_json_error(body, outside=outside)
            if error is not None:
                msg = f"invalid JSON: {error} (no NaN or Infinity; numbers must fit a double)"
                await _reject(send, 422, msg, "json_invalid")
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


async def _reject(send: Send, status: int, msg: str, type_: str, *, close: bool = False) -> None:
    body: dict[str, Any] = {"detail": [{"loc": ["body"], "msg": msg, "type": type_}]}
    raw = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    if close:  # the rest of the body was not read: this connection cannot serve another
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
