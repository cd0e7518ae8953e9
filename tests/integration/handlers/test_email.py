"""Email over SMTP against real aiosmtpd servers on 127.0.0.1: what arrives, over plain
text, STARTTLS and implicit TLS with AUTH; and the outcome each answer gives the job
(4xx: retried, 5xx: permanent, unreachable: retried until the breaker opens and jobs
wait, suppressed: not sent)."""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

import httpx
import pytest

from app.db.suppressions import SuppressionStore
from app.handlers.errors import TransientFailure
from app.handlers.payloads import EmailPayload
from app.handlers.sender import EmailSender, SmtpServer
from app.jobs.outcomes import PermanentFailure, Snooze
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from tests.integration.handlers.conftest import OPEN_SECONDS, Clock, events_of, plain, sender_for
from tests.support.smtp import Behaviour, SmtpTestServer
from tests.support.tls import TlsFiles


def payload(to: str = "ada@example.com", **fields: Any) -> EmailPayload:
    return EmailPayload.model_validate({"to": to, "subject": "Hello", "text": "Hi Ada", **fields})


async def send(sender: EmailSender, p: EmailPayload, job_id: uuid.UUID, attempt: int = 1) -> None:
    await sender.send(sender.compose(job_id, attempt, p))


async def test_the_message_arrives_with_its_headers_and_both_bodies(
    runtime: Runtime, clock: Clock
) -> None:
    job_id = uuid.uuid4()
    async with SmtpTestServer() as smtp:
        sender = sender_for(runtime, plain(smtp.port), clock)
        await send(
            sender,
            payload(
                **{"from": "Acme News <news@acme.example>"},
                html="<p>Hi <b>Ada</b></p>",
                reply_to="help@acme.example",
                headers={"List-Unsubscribe": "<mailto:unsub@acme.example>"},
                campaign_id="spring",
                account_id="acme",
            ),
            job_id,
        )
        (got,) = await smtp.wait_for(1)

    assert (got.mail_from, got.rcpt_tos) == ("news@acme.example", ["ada@example.com"])
    m = got.message
    assert m["Message-ID"] == f"<{job_id}@acme.example>"
    assert m["From"] == "Acme News <news@acme.example>"
    assert (m["To"], m["Subject"], m["Reply-To"]) == (
        "ada@example.com",
        "Hello",
        "help@acme.example",
    )
    assert m["List-Unsubscribe"] == "<mailto:unsub@acme.example>"
    assert m["Date"] is not None
    assert m.get_content_type() == "multipart/alternative"
    text, html = m.iter_parts()
    assert text.get_content().strip() == "Hi Ada"
    assert html.get_content().strip() == "<p>Hi <b>Ada</b></p>"
    row = await runtime.pool.fetchrow("SELECT * FROM email_events")
    assert row is not None
    assert (row["event"], row["job_id"], row["message_id"]) == ("sent", job_id, m["Message-ID"])
    assert (row["campaign_id"], row["account_id"], row["address"]) == (
        "spring",
        "acme",
        "ada@example.com",
    )


async def test_starttls_with_auth_and_a_verified_certificate(
    runtime: Runtime, clock: Clock, tls: TlsFiles
) -> None:
    async with SmtpTestServer(
        starttls=tls.server_context(), credentials=("mailer", "s3cret")
    ) as smtp:
        good = SmtpServer(
            host="localhost",
            port=smtp.port,
            tls="starttls",
            username="mailer",
            password="s3cret",
            timeout=5,
            tls_context=tls.client_context(),
        )
        await send(sender_for(runtime, good, clock), payload(), uuid.uuid4())
        (got,) = await smtp.wait_for(1)
        assert got.message["Subject"] == "Hello"

        wrong = dataclasses.replace(good, password="guess")
        with pytest.raises(TransientFailure, match="login refused"):
            await send(sender_for(runtime, wrong, clock), payload(), uuid.uuid4())

        logins = len(smtp.logins)
        # A server whose certificate the client does not trust is not talked to.
        untrusted = dataclasses.replace(good, tls_context=None)
        with pytest.raises(TransientFailure, match="CERTIFICATE_VERIFY_FAILED"):
            await send(sender_for(runtime, untrusted, clock), payload(), uuid.uuid4())
        assert len(smtp.received) == 1
        assert len(smtp.logins) == logins  # no password went to it


async def test_implicit_tls(runtime: Runtime, clock: Clock, tls: TlsFiles) -> None:
    async with SmtpTestServer(implicit_tls=tls.server_context()) as smtp:
        server = SmtpServer(
            host="localhost", port=smtp.port, tls="tls", timeout=5, tls_context=tls.client_context()
        )
        await send(sender_for(runtime, server, clock), payload(), uuid.uuid4())
        (got,) = await smtp.wait_for(1)
    assert got.rcpt_tos == ["ada@example.com"]


async def test_451_fails_the_attempt_and_the_retry_sends_it_once(
    runtime: Runtime, clock: Clock
) -> None:
    job_id = uuid.uuid4()
    async with SmtpTestServer(behaviour=Behaviour(data_replies=["451 4.3.0 Try later"])) as smtp:
        sender = sender_for(runtime, plain(smtp.port), clock)
        with pytest.raises(TransientFailure, match=re.escape("451 4.3.0 Try later")):
            await send(sender, payload(), job_id, attempt=1)
        await send(sender, payload(), job_id, attempt=2)
        await smtp.wait_for(1)
        # A third run of the job (at least once) finds it sent and sends nothing.
        await send(sender, payload(), job_id, attempt=3)

    assert (len(smtp.received), smtp.data_commands) == (1, 2)
    assert await events_of(runtime) == [
        ("deferred", "ada@example.com", 1),
        ("sent", "ada@example.com", 2),
    ]


async def test_550_is_a_permanent_failure(runtime: Runtime, clock: Clock) -> None:
    refuse = {"nobody@example.com": "550 5.1.1 <nobody@example.com>: User unknown"}
    async with SmtpTestServer(behaviour=Behaviour(refuse=refuse)) as smtp:
        sender = sender_for(runtime, plain(smtp.port), clock)
        with pytest.raises(
            PermanentFailure, match=re.escape("550 5.1.1 <nobody@example.com>: User unknown")
        ):
            await send(sender, payload("nobody@example.com"), uuid.uuid4())
    assert smtp.received == []
    assert await events_of(runtime) == [("failed", "nobody@example.com", 1)]


async def test_a_suppressed_address_is_not_sent_to(runtime: Runtime, clock: Clock) -> None:
    await SuppressionStore(runtime.pool).add(
        "Gone@Example.com", "hard bounce 5.1.1", source="bounce"
    )
    async with SmtpTestServer() as smtp:
        sender = sender_for(runtime, plain(smtp.port), clock)
        with pytest.raises(
            PermanentFailure, match=re.escape("gone@example.com is on the suppression list")
        ):
            await send(sender, payload("gone@example.com"), uuid.uuid4())
    assert smtp.received == []
    assert await events_of(runtime) == [("suppressed", "gone@example.com", 1)]


async def test_an_unreachable_server_opens_the_breaker_and_jobs_wait_until_it_is_back(
    runtime: Runtime, clock: Clock
) -> None:
    smtp = SmtpTestServer()  # its port is free: connections are refused
    sender = sender_for(runtime, plain(smtp.port), clock)
    for _ in range(3):  # the threshold
        with pytest.raises(TransientFailure, match="unreachable"):
            await send(sender, payload(), uuid.uuid4())

    waiting = uuid.uuid4()
    with pytest.raises(Snooze) as snoozed:
        await send(sender, payload(), waiting)
    assert snoozed.value.seconds == OPEN_SECONDS
    assert "circuit breaker of SMTP server" in str(snoozed.value)

    async with smtp:  # the server comes back; the open period ends
        clock.now += OPEN_SECONDS
        await send(sender, payload(), waiting, attempt=1)  # the probe: attempt not spent
        await send(sender, payload(), uuid.uuid4())  # closed again: everyone goes
        await smtp.wait_for(2)
    assert [e for e, _, _ in await events_of(runtime)] == ["deferred"] * 3 + ["sent"] * 2


async def test_without_smtp_host_jobs_wait(runtime: Runtime, clock: Clock) -> None:
    with pytest.raises(Snooze, match="SMTP_HOST is not set"):
        await send(sender_for(runtime, None, clock), payload(), uuid.uuid4())


async def test_bad_email_payloads_are_refused_at_post_jobs(
    client: httpx.AsyncClient, registry: HandlerRegistry
) -> None:
    @registry.handler("email-sending", payload_model=EmailPayload)
    async def send_email(job: Job) -> None:
        raise AssertionError("never runs")

    cases = [
        ({"to": "not-an-address", "subject": "s", "text": "t"}, ["to"]),
        ({"to": "a@example.com", "subject": "s"}, []),
        ({"to": "a@example.com", "subject": "s\r\nBcc: x@evil.example", "text": "t"}, ["subject"]),
        ({"to": "a@example.com", "subject": "s", "text": "t", "headers": {"To": "x"}}, ["headers"]),
        ({"to": "a@example.com", "subject": "s", "text": "t", "cc": "b@example.com"}, ["cc"]),
    ]
    for body, loc in cases:
        response = await client.post("/jobs", json={"queue_name": "email-sending", "payload": body})
        assert response.status_code == 422, body
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "payload", *loc], error
    ok = {"to": "a@example.com", "subject": "s", "html": "<p>t</p>", "from": "x@example.com"}
    response = await client.post("/jobs", json={"queue_name": "email-sending", "payload": ok})
    assert response.status_code == 201, response.text
