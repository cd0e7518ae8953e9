"""The HTTP server of `python -m app`: uvicorn, with limits on what a client may send
before its request reaches the app.

uvicorn parses requests with httptools (llhttp), which buffers a request line and header
fields of any size and count, and waits forever for them: one 50 MB header was accepted
and grew the API by 90 MB. uvicorn's own limit (`h11_max_incomplete_event_size`) applies
only to its slower pure-Python h11 parser, and it has no timeout for a request head at
all. So the protocol below is uvicorn's httptools protocol with three limits on the head
of each request (request line and header fields):

- size (MAX_HEADER_BYTES): beyond it, 431 and the connection is closed, without
  buffering more;
- count (MAX_HEADER_COUNT) of header fields: beyond it, 431;
- time (HEADER_TIMEOUT), counted from when the connection opens or the request's first
  byte arrives: a client that trickles its head (slowloris) gets 408 and is closed, one
  that connects and sends nothing is closed.

Idle keep-alive connections are closed after KEEP_ALIVE_TIMEOUT (uvicorn's
`timeout_keep_alive`); a body that arrives too slowly is refused by the app
(REQUEST_BODY_TIMEOUT, app.api.limits).
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_bytes: int
    max_count: int
    timeout: float


class _TooManyFields(Exception):
    """Raised from the parser's callback to stop parsing; answered with 431."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on each request's head (see the module).
    `limits` is set per server by `guarded_protocol`."""

    limits: ClassVar[HeadLimits] = HeadLimits(16 * 1024, 100, 10.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._head_fields = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None

    # A head is awaited from the moment a connection opens, and from the first byte of
    # each later request on it.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._begin_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:
            self._begin_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.limits.max_count:
            self._refusal = (431, f"more than {self.limits.max_count} header fields")
            raise _TooManyFields
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        allowed = self.limits.max_bytes - self._head_bytes
        if len(data) <= allowed:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed only what the limit allows: if the head ends within it, the rest is body
        # (or the next request) and goes on; if not, the head is too large.
        self._head_bytes += allowed
        super().data_received(data[:allowed])
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(431, f"request line and headers over {self.limits.max_bytes} bytes")
            return
        super().data_received(data[allowed:])

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error with 400; a limit of ours says which.
        if self._refusal is not None:
            self._refuse(*self._refusal)
        else:
            super().send_400_response(msg)

    def _begin_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_fields = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.timeout, self._head_timed_out)

    def _end_head(self) -> None:
        self._in_head = False
        self._cancel_head_timer()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(408, f"request headers not received within {self.limits.timeout:g} s")
        else:  # connected and said nothing: nothing to answer
            self.transport.close()

    def _refuse(self, status: int, msg: str) -> None:
        self._end_head()
        body = msg.encode()
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            "content-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


def guarded_protocol(limits: HeadLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server, with its limits."""
    return type("GuardedHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def server_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.run` that bound what a client may hold."""
    limits = HeadLimits(
        settings.max_header_bytes, settings.max_header_count, settings.header_timeout
    )
    return {
        "http": guarded_protocol(limits),
        "timeout_keep_alive": settings.keep_alive_timeout,
    }
