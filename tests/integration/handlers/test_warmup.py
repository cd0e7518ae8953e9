"""Warm-up through the same sender, against a real SMTP server: round robin over the
recipients, a refused recipient does not stop the day, a retry sends only what is left,
and two runs for one mailbox never send at once. Then the registered handlers, called
as the worker calls them, on a context of the test's own."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from typing import Any

import pytest

from app.handlers import jobs
from app.handlers.context import HandlerContext, use_context
from app.handlers.errors import TransientFailure
from app.handlers.payloads import WarmupPayload
from app.handlers.sender import EmailSender
from app.handlers.warmup import Warmup
from app.jobs.outcomes import PermanentFailure, Snooze
from app.registry import Job
from app.runtime import Runtime
from app.settings import Settings
from tests.integration.handlers.conftest import Clock, plain, sender_for
from tests.support import bounces
from tests.support.smtp import Behaviour, SmtpTestServer

RECIPIENTS = ["seed1@example.com", "seed2@example.com", "seed3@example.com"]


def warmup(rt: Runtime, sender: EmailSender) -> Warmup:
    return Warmup(sender, rt.redis, rt.keys, lock_seconds=60)


def plan(messages: int, **fields: Any) -> WarmupPayload:
    return WarmupPayload.model_validate(
        {
            "mailbox": "Sales <Sales@acme.example>",
            "recipients": RECIPIENTS,
            "messages": messages,
            "day": 3,
            "account_id": "acme",
            **fields,
        }
    )


async def test_round_robin_with_a_refused_recipient_and_a_retry(
    runtime: Runtime, clock: Clock
) -> None:
    behaviour = Behaviour(
        data_replies=["250", "250", "451 4.3.0 Try later"],  # the 4th message is deferred
        refuse={"seed3@example.com": "550 5.1.1 User unknown"},
    )
    job_id = uuid.uuid4()
    async with SmtpTestServer(behaviour=behaviour) as smtp:
        w = warmup(runtime, sender_for(runtime, plain(smtp.port), clock))
        with pytest.raises(TransientFailure, match="451"):
            await w.run(job_id, 1, plan(7))
        result = await w.run(job_id, 2, plan(7))  # the retry sends what is left
        await smtp.wait_for(5)

    # Messages 0..6 go to seed1, seed2, seed3, seed1, …; seed3 refuses its 2.
    assert Counter(r.rcpt_tos[0] for r in smtp.received) == {
        "seed1@example.com": 3,
        "seed2@example.com": 2,
    }
    ids = [r.message["Message-ID"] for r in smtp.received]
    assert sorted(ids) == sorted(f"<{job_id}.{i}@acme.example>" for i in (0, 1, 3, 4, 6))
    assert smtp.received[0].message["From"] == "Sales <sales@acme.example>"
    assert smtp.received[0].message["X-Hybridq-Warmup"] == "sales@acme.example; day=3"
    assert len(result.refused) == 2 and result.sent == 5
    campaigns = await runtime.pool.fetch("SELECT DISTINCT campaign_id FROM email_events")
    assert [r["campaign_id"] for r in campaigns] == ["warmup:sales@acme.example"]


async def test_one_run_per_mailbox_at_a_time(runtime: Runtime, clock: Clock) -> None:
    async with SmtpTestServer() as smtp:
        w = warmup(runtime, sender_for(runtime, plain(smtp.port), clock))
        outcomes = await asyncio.gather(
            w.run(uuid.uuid4(), 1, plan(3)),
            w.run(uuid.uuid4(), 1, plan(3)),
            w.run(uuid.uuid4(), 1, plan(3, mailbox="other@acme.example")),
            return_exceptions=True,
        )
        snoozed = [o for o in outcomes if isinstance(o, Snooze)]
        assert len(snoozed) == 1
        assert "mailbox sales@acme.example is being warmed up by job" in str(snoozed[0])
        await w.run(uuid.uuid4(), 1, plan(3))  # the lock was given back
        await smtp.wait_for(9)


async def test_the_registered_handlers_run_on_the_context(
    runtime: Runtime, settings: Settings, clock: Clock
) -> None:
    async with SmtpTestServer() as smtp:
        configured = settings.replace(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls="none")
        ctx = HandlerContext.build(configured, runtime.pool, runtime.redis)
        async with use_context(ctx):
            email = Job(
                uuid.uuid4(),
                "email-sending",
                {"to": "ada@example.com", "subject": "Hi", "text": "t", "campaign_id": "c"},
                attempt=1,
                max_attempts=3,
                priority=100,
            )
            await jobs.send_email(email)
            (got,) = await smtp.wait_for(1)
            dsn = bounces.exim_hard(got.message["Message-ID"], "ada@example.com")
            await jobs.process_bounce(
                Job(uuid.uuid4(), "bounce:process", {"message": dsn}, 1, 3, 100)
            )
            with pytest.raises(PermanentFailure, match="suppression list"):
                await jobs.send_email(dataclasses.replace(email, id=uuid.uuid4()))
            await jobs.run_analytics(
                Job(uuid.uuid4(), "analytics:campaign-aggregate", {}, 1, 3, 200)
            )
            with pytest.raises(PermanentFailure, match="invalid EmailPayload: to"):
                await jobs.send_email(Job(uuid.uuid4(), "email-sending", {"to": 1}, 1, 3, 100))
    row = await runtime.pool.fetchrow("SELECT sent, bounced, suppressed FROM email_campaign_stats")
    assert row is not None and tuple(row) == (1, 1, 1)
