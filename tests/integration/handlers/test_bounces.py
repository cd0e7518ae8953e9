"""Bounces from Postfix, Exim and Exchange: classified hard or soft by their status, the
hard ones suppress their address (the next email to it is not sent, GET /suppressions
lists it, DELETE lifts it), each attributed to the campaign of the bounced message."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from app.db.suppressions import SuppressionStore
from app.handlers.bounces import BounceProcessor, parse_dsn
from app.handlers.events import EventStore
from app.handlers.payloads import BouncePayload, EmailPayload
from app.jobs.outcomes import PermanentFailure
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from tests.integration.handlers.conftest import Clock, plain, sender_for
from tests.support import bounces
from tests.support.smtp import SmtpTestServer

MID = "<0b6f7c1e-4d1a-4c55-9d5e-3f4c2a1b0e9d@acme.example>"

FIXTURES: list[tuple[Callable[[str], str], str, str, str, str]] = [
    # (fixture, recipient, kind, status, reporting MTA)
    (bounces.postfix_hard, "nobody@example.org", "hard", "5.1.1", "mail.sender.example"),
    (bounces.postfix_delayed, "slow@example.org", "soft", "4.4.1", "mail.sender.example"),
    (bounces.exim_hard, "gone@example.net", "hard", "5.0.0", "mx.exim.example"),
    (bounces.exim_mailbox_full, "full@example.net", "soft", "4.2.2", "mx.exim.example"),
    (bounces.exchange_hard, "pat.doe@corp.example", "hard", "5.1.10", "EXCH01.corp.example"),
]


@pytest.mark.parametrize(("fixture", "address", "kind", "status", "mta"), FIXTURES)
def test_each_mail_servers_bounce_is_classified(
    fixture: Callable[[str], str], address: str, kind: str, status: str, mta: str
) -> None:
    bounce = parse_dsn(fixture(MID))
    ((r),) = bounce.recipients
    assert (r.address, r.kind, r.status) == (address, kind, status)
    assert r.diagnostic is not None and r.diagnostic.startswith(("smtp;", "X-Postfix;"))
    assert bounce.original_message_id == MID
    assert bounce.reporting_mta == mta


def test_a_message_that_is_not_a_dsn_is_refused() -> None:
    with pytest.raises(PermanentFailure, match="not a delivery status notification"):
        parse_dsn("From: someone@example.com\nSubject: out of office\n\nI am away.\n")


def processor(rt: Runtime) -> BounceProcessor:
    return BounceProcessor(EventStore(rt.pool), SuppressionStore(rt.pool))


async def test_a_hard_bounce_stops_the_next_email_to_that_address(
    runtime: Runtime, clock: Clock, client: httpx.AsyncClient
) -> None:
    first = uuid.uuid4()
    email = EmailPayload.model_validate(
        {"to": "nobody@example.org", "subject": "Hi", "text": "t", "campaign_id": "spring"}
    )
    async with SmtpTestServer() as smtp:
        sender = sender_for(runtime, plain(smtp.port), clock)
        outgoing = sender.compose(first, 1, email)
        await sender.send(outgoing)

        bounce_job = uuid.uuid4()
        dsn = bounces.postfix_hard(outgoing.message_id)
        await processor(runtime).process(bounce_job, 1, dsn)
        await processor(runtime).process(bounce_job, 2, dsn)  # run again: nothing new

        with pytest.raises(PermanentFailure, match="on the suppression list"):
            await sender.send(sender.compose(uuid.uuid4(), 1, email))
        assert len(smtp.received) == 1

        rows = await runtime.pool.fetch(
            "SELECT event, campaign_id, bounce_type, message_id FROM email_events "
            "ORDER BY occurred_at"
        )
        assert [tuple(r) for r in rows] == [
            ("sent", "spring", None, outgoing.message_id),
            ("bounced", "spring", "hard", outgoing.message_id),
            ("suppressed", "spring", None, rows[2]["message_id"]),
        ]

        listed = (await client.get("/suppressions")).json()
        (entry,) = listed["items"]
        assert entry["address"] == "nobody@example.org"
        assert entry["source"] == "bounce" and entry["job_id"] == str(bounce_job)
        assert entry["reason"].startswith("hard bounce 5.1.1: smtp; 550 5.1.1")

        lifted = await client.delete("/suppressions/Nobody@Example.org")
        assert lifted.status_code == 200 and lifted.json()["address"] == "nobody@example.org"
        assert (await client.delete("/suppressions/nobody@example.org")).status_code == 404
        assert (await client.get("/suppressions")).json()["items"] == []

        await sender.send(sender.compose(uuid.uuid4(), 1, email))  # goes out again
        await smtp.wait_for(2)


async def test_soft_bounces_are_recorded_but_suppress_nothing(runtime: Runtime) -> None:
    for fixture in (bounces.postfix_delayed, bounces.exim_mailbox_full):
        await processor(runtime).process(uuid.uuid4(), 1, fixture(MID))
    kinds = await runtime.pool.fetch(
        "SELECT address, bounce_type FROM email_events WHERE event = 'bounced' ORDER BY address"
    )
    assert [tuple(r) for r in kinds] == [
        ("full@example.net", "soft"),
        ("slow@example.org", "soft"),
    ]
    assert await runtime.pool.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_suppressions_page_in_address_order(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    store = SuppressionStore(runtime.pool)
    for n in range(5):
        await store.add(f"user{n}@example.com", "test", source="manual")
    first = (await client.get("/suppressions", params={"limit": 3})).json()
    second = (
        await client.get("/suppressions", params={"limit": 3, "cursor": first["next_cursor"]})
    ).json()
    addresses = [e["address"] for e in first["items"] + second["items"]]
    assert addresses == [f"user{n}@example.com" for n in range(5)]
    assert second["next_cursor"] is None
    bounced = (await client.get("/suppressions", params={"source": "bounce"})).json()
    assert bounced["items"] == []


async def test_a_payload_that_is_not_a_dsn_is_refused_at_post_jobs(
    client: httpx.AsyncClient, registry: HandlerRegistry
) -> None:
    @registry.handler("bounce:process", payload_model=BouncePayload)
    async def process(job: Job) -> None:
        raise AssertionError("never runs")

    refused = await client.post(
        "/jobs",
        json={"queue_name": "bounce:process", "payload": {"message": "Subject: hi\n\nhello"}},
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "payload", "message"]
    accepted = await client.post(
        "/jobs",
        json={"queue_name": "bounce:process", "payload": {"message": bounces.exim_hard(MID)}},
    )
    assert accepted.status_code == 201, accepted.text
