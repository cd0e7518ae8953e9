"""Sending one email over SMTP (aiosmtplib), for `email-sending` and `warmup:process`.

What each outcome does to the job, and the email event it records:
- accepted (2xx): `sent`; the job completes.
- the address is suppressed: `suppressed`; PermanentFailure naming the suppression.
- 5xx to the sender, recipient or data: `failed`; PermanentFailure (no more attempts).
- 4xx, a connection error, a timeout, a refused login: `deferred`; TransientFailure
  (the attempt fails, retried with backoff).
- the SMTP server's circuit breaker is open: nothing sent; Snooze until a probe may go.

The Message-ID is derived from the job id, so a message sent again after a crash is
recognisable downstream, and a job whose message was accepted before (its `sent` event
exists) does not send it again.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from typing import Literal

import aiosmtplib

from app.circuit import CircuitBreakers
from app.db.suppressions import SuppressionStore
from app.handlers.errors import TransientFailure
from app.handlers.events import EmailEvent, EventName, EventStore
from app.handlers.payloads import EmailPayload
from app.jobs.outcomes import PermanentFailure, Snooze
from app.settings import Settings

log = logging.getLogger("hybridq.handlers.email")

# How long an unconfigured sender makes a job wait before it looks again.
NOT_CONFIGURED_SNOOZE = 60.0


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to send (the SMTP_* settings)."""

    host: str
    port: int
    tls: Literal["none", "starttls", "tls"]
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    # Which certificates to trust; None: the system's (tests pass their own CA).
    tls_context: ssl.SSLContext | None = None

    @property
    def target(self) -> str:
        """The circuit breaker's name for this server."""
        return f"{self.host}:{self.port}"

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpServer | None:
        if not settings.smtp_host:
            return None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            timeout=settings.smtp_timeout,
        )


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One message to one recipient, and what its events are attributed to."""

    job_id: uuid.UUID
    attempt: int
    message: EmailMessage
    sender: str  # the envelope sender (MAIL FROM)
    recipient: str
    campaign_id: str | None = None
    account_id: str | None = None

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


def address_of(value: str) -> str:
    """The bare address of `Name <address>` (or of a bare address)."""
    return parseaddr(value)[1]


def message_id_for(job_id: uuid.UUID, from_address: str, index: int | None = None) -> str:
    """`<job id[.index]@sender's domain>`: the same for every attempt of the job."""
    domain = address_of(from_address).rsplit("@", 1)[-1] or "localhost"
    local = str(job_id) if index is None else f"{job_id}.{index}"
    return f"<{local}@{domain}>"


def display_from(name: str, address: str) -> str:
    # pydantic's NameEmail names a bare address after its local part: keep it bare.
    return address if not name or name == address.split("@", 1)[0] else formataddr((name, address))


def build_message(
    *,
    from_header: str,
    to: str,
    subject: str,
    message_id: str,
    text: str | None,
    html: str | None = None,
    reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """The message, with the standard library's EmailMessage: text, HTML, or both as
    multipart/alternative."""
    message = EmailMessage()
    message["From"] = from_header
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    if reply_to:
        message["Reply-To"] = reply_to
    for name, value in (headers or {}).items():
        message[name] = value
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")
    return message


class EmailSender:
    """Sends email jobs through one SMTP server, guarded by its circuit breaker."""

    def __init__(
        self,
        server: SmtpServer | None,
        *,
        events: EventStore,
        suppressions: SuppressionStore,
        breakers: CircuitBreakers,
        default_from: str,
    ) -> None:
        self.server = server
        self.events = events
        self.suppressions = suppressions
        self.breakers = breakers
        self.default_from = default_from

    def compose(self, job_id: uuid.UUID, attempt: int, payload: EmailPayload) -> OutgoingEmail:
        """The message of an `email-sending` job."""
        if payload.from_ is not None:
            sender = payload.from_.email
            from_header = display_from(payload.from_.name, sender)
        else:
            sender = address_of(self.default_from)
            from_header = self.default_from
        message = build_message(
            from_header=from_header,
            to=payload.to,
            subject=payload.subject,
            message_id=message_id_for(job_id, sender),
            text=payload.text,
            html=payload.html,
            reply_to=payload.reply_to,
            headers=payload.headers,
        )
        return OutgoingEmail(
            job_id=job_id,
            attempt=attempt,
            message=message,
            sender=sender,
            recipient=payload.to,
            campaign_id=payload.campaign_id,
            account_id=payload.account_id,
        )

    async def send(self, email: OutgoingEmail) -> None:
        """Send `email`; raise what the job's outcome must be (see the module doc)."""
        if await self.events.sent(email.message_id) is not None:
            log.info("%s was accepted before: not sent again", email.message_id)
            return
        suppressed = await self.suppressions.get(email.recipient)
        if suppressed is not None:
            await self._record(email, "suppressed", suppressed.reason)
            since = suppressed.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise PermanentFailure(
                f"{suppressed.address} is on the suppression list since {since} "
                f"({suppressed.source}: {suppressed.reason}); not sent"
            )
        server = self.server
        if server is None:
            raise Snooze(NOT_CONFIGURED_SNOOZE, "SMTP_HOST is not set: no server to send with")
        wait = await self.breakers.wait_time("smtp", server.target, probe_seconds=server.timeout)
        if wait:
            raise Snooze(wait, f"circuit breaker of SMTP server {server.target} is open")

        try:
            _errors, response = await aiosmtplib.send(
                email.message,
                sender=email.sender,
                recipients=[email.recipient],
                hostname=server.host,
                port=server.port,
                username=server.username or None,
                password=server.password or None,
                use_tls=server.tls == "tls",
                start_tls=server.tls == "starttls",
                tls_context=server.tls_context,
                timeout=server.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            await self._answered(email, server, refused.code, refused.message)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # The server is up; the configuration is wrong, not the message.
            await self.breakers.record_success("smtp", server.target)
            detail = f"SMTP login refused ({exc.code} {exc.message}): check SMTP_USERNAME"
            await self._record(email, "deferred", detail)
            raise TransientFailure(detail) from None
        except (
            aiosmtplib.SMTPConnectError,  # includes a refusing greeting (421 …)
            aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPNotSupported,
            aiosmtplib.SMTPHeloError,
            OSError,  # SSL errors included
        ) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            await self.breakers.record_failure("smtp", server.target, detail)
            await self._record(email, "deferred", detail)
            raise TransientFailure(f"SMTP server {server.target} unreachable: {detail}") from None
        except aiosmtplib.SMTPResponseException as exc:  # MAIL FROM, RCPT TO or DATA refused
            await self._answered(email, server, exc.code, exc.message)
        else:
            await self.breakers.record_success("smtp", server.target)
            await self._record(email, "sent", response)
            log.info("sent %s to %s (%s)", email.message_id, email.recipient, response)

    async def _answered(
        self, email: OutgoingEmail, server: SmtpServer, code: int, text: str
    ) -> None:
        """The server refused the message: 4xx is worth another attempt, 5xx is final."""
        await self.breakers.record_success("smtp", server.target)
        detail = f"{code} {text}"
        if 400 <= code < 500:
            await self._record(email, "deferred", detail)
            raise TransientFailure(f"SMTP server deferred the message: {detail}")
        await self._record(email, "failed", detail)
        raise PermanentFailure(f"SMTP server refused the message: {detail}")

    async def _record(self, email: OutgoingEmail, event: EventName, detail: str) -> None:
        await self.events.record(
            EmailEvent(
                event=event,
                job_id=email.job_id,
                attempt=email.attempt,
                message_id=email.message_id,
                address=email.recipient,
                campaign_id=email.campaign_id,
                account_id=email.account_id,
                detail=detail,
            )
        )
