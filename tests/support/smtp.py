"""Real SMTP servers (aiosmtpd) that a test starts on 127.0.0.1, in its own event loop:
plain, STARTTLS or implicit TLS, with or without AUTH, answering each message as the
test scripts it (451 then 250, 550 for an address, …). Every accepted message is kept
and announced, so a test waits on its arrival, never on a clock."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.servers import free_port


@dataclass(slots=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass(slots=True)
class Behaviour:
    """How the server answers. `data_replies` are used in order for successive DATA
    commands (then 250); `refuse` maps a recipient to its RCPT reply."""

    data_replies: list[str] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)


class _Handler:
    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.server.behaviour.refuse.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.server.data_commands += 1
        if self.server.behaviour.data_replies:
            reply = self.server.behaviour.data_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        content = envelope.original_content or b""
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.server.received.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), message)
        )
        self.server.arrived.set()
        return "250 OK queued"


class SmtpTestServer:
    """`async with SmtpTestServer(...) as smtp:`; `smtp.port`, `smtp.received`."""

    def __init__(
        self,
        *,
        port: int | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.port = port or free_port()
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.credentials = credentials
        self.behaviour = behaviour or Behaviour()
        self.received: list[Received] = []
        self.data_commands = 0
        self.logins: list[str] = []
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append(login)
        return AuthResult(success=(login, password) == self.credentials, handled=False)

    def _protocol(self) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="smtp.test",
            tls_context=self.starttls,
            require_starttls=self.starttls is not None,
            authenticator=self._authenticate if self.credentials else None,
            auth_required=self.credentials is not None,
            auth_require_tls=True,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, "127.0.0.1", self.port, ssl=self.implicit_tls
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, timeout: float = 10) -> Sequence[Received]:
        """Return once `count` messages were accepted; fail after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received

    async def __aenter__(self) -> SmtpTestServer:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
