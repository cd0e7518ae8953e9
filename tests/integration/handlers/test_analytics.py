"""Analytics from a mix of real email outcomes (a real SMTP server that defers, refuses;
suppressed addresses; bounces): the daily, campaign and billing aggregates match the
counts the test keeps itself, a second run gives the same rows, and analytics_jobs shows
every run."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest

from app.db.suppressions import SuppressionStore
from app.handlers.analytics import BILLING, CAMPAIGN, DAILY, AnalyticsRunner
from app.handlers.bounces import BounceProcessor
from app.handlers.errors import TransientFailure
from app.handlers.events import EventStore
from app.handlers.payloads import EmailPayload
from app.jobs.outcomes import PermanentFailure
from app.registry import Job
from app.runtime import Runtime
from tests.integration.handlers.conftest import Clock, plain, sender_for
from tests.support import bounces
from tests.support.smtp import Behaviour, SmtpTestServer

NOV_30, DEC_1 = date(2026, 11, 30), date(2026, 12, 1)
# Either side of midnight UTC: the day boundary is where a wrong query shows.
AT = {
    NOV_30: datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=UTC),
    DEC_1: datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC),
}


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    campaign: str | None
    account: str | None
    day: date


MAILS = [
    *(Mail(f"ok{n}@example.com", "spring", "acme", NOV_30) for n in range(4)),
    *(Mail(f"ok{n}@example.com", "spring", "acme", DEC_1) for n in range(4, 6)),
    Mail("bad1@example.com", "spring", "acme", NOV_30),
    Mail("bad2@example.com", "fall", "globex", DEC_1),
    *(Mail(f"ok{n}@example.com", "fall", "globex", DEC_1) for n in range(6, 9)),
    Mail("blocked@example.com", "fall", "globex", DEC_1),
    *(Mail(f"ok{n}@example.com", None, "acme", NOV_30) for n in range(9, 11)),
    Mail("ok11@example.com", None, None, DEC_1),
]


def job(queue: str, payload: dict[str, Any]) -> Job:
    return Job(uuid.uuid4(), queue, payload, attempt=1, max_attempts=3, priority=200)


async def produce_events(
    rt: Runtime, clock: Clock
) -> tuple[Counter[tuple[Any, ...]], dict[str, str]]:
    """Send MAILS through a real server; the counts by (day, campaign, outcome) as this
    test observed them, and the Message-ID of each address."""
    refuse = {a: "550 5.1.1 User unknown" for a in ("bad1@example.com", "bad2@example.com")}
    behaviour = Behaviour(data_replies=["451 4.7.1 Greylisted"], refuse=refuse)
    await SuppressionStore(rt.pool).add("blocked@example.com", "complaint", source="manual")
    seen: Counter[tuple[Any, ...]] = Counter()
    message_ids: dict[str, str] = {}
    async with SmtpTestServer(behaviour=behaviour) as smtp:
        sender = sender_for(rt, plain(smtp.port), clock)
        for mail in MAILS:
            payload = EmailPayload.model_validate(
                {
                    "to": mail.to,
                    "subject": "s",
                    "text": "t",
                    "campaign_id": mail.campaign,
                    "account_id": mail.account,
                }
            )
            job_id = uuid.uuid4()
            for attempt in (1, 2):
                outgoing = sender.compose(job_id, attempt, payload)
                message_ids[mail.to] = outgoing.message_id
                try:
                    await sender.send(outgoing)
                    seen[mail.day, mail.campaign or "", "sent"] += 1
                    break
                except TransientFailure:
                    seen[mail.day, mail.campaign or "", "deferred"] += 1
                except PermanentFailure as exc:
                    outcome = "suppressed" if "suppression" in str(exc) else "failed"
                    seen[mail.day, mail.campaign or "", outcome] += 1
                    break
        await smtp.wait_for(seen.total() - sum(v for k, v in seen.items() if k[2] != "sent"))
    processor = BounceProcessor(EventStore(rt.pool), SuppressionStore(rt.pool))
    await processor.process(
        uuid.uuid4(), 1, bounces.postfix_hard(message_ids["ok5@example.com"], "ok5@example.com")
    )
    await processor.process(
        uuid.uuid4(),
        1,
        bounces.exim_mailbox_full(message_ids["ok7@example.com"], "ok7@example.com"),
    )
    seen[DEC_1, "spring", "bounced"] += 1
    seen[DEC_1, "fall", "soft_bounced"] += 1
    # Each event happened on its mail's day (a bounce on the day of the mail it returns).
    for mail in MAILS:
        await rt.pool.execute(
            "UPDATE email_events SET occurred_at = $2 WHERE address = $1",
            mail.to,
            AT[mail.day],
        )
    return seen, message_ids


COUNTS = ("sent", "deferred", "failed", "bounced", "soft_bounced", "suppressed")


async def table(rt: Runtime, query: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await rt.pool.fetch(query)]


async def test_aggregates_match_the_outcomes_and_runs_are_idempotent(
    runtime: Runtime, clock: Clock
) -> None:
    rt = runtime
    seen, _ = await produce_events(rt, clock)
    assert seen[NOV_30, "spring", "deferred"] == 1  # the greylisted first message

    runner = AnalyticsRunner(rt.pool, today=lambda: date(2026, 12, 2))
    runs = [
        job(DAILY, {"day": "2026-11-30"}),
        job(DAILY, {}),  # yesterday: 2026-12-01
        job(DAILY, {"day": "2026-12-01"}),  # again: the same rows
        job(CAMPAIGN, {}),
        job(CAMPAIGN, {"campaign_id": "fall"}),
        job(BILLING, {"month": "2026-11"}),
        job(BILLING, {"month": "2026-12"}),
        job(BILLING, {}),  # last month: 2026-11
    ]
    for run in runs:
        await runner.run(run)

    columns = ", ".join(COUNTS)
    daily = await table(
        rt, f"SELECT day, campaign_id, {columns} FROM email_daily_stats ORDER BY 1, 2"
    )
    expected_daily = sorted(
        (day, campaign, *(seen[day, campaign, c] for c in COUNTS))
        for day, campaign in {(k[0], k[1]) for k in seen}
    )
    assert daily == expected_daily

    campaigns = await table(
        rt, f"SELECT campaign_id, {columns} FROM email_campaign_stats ORDER BY 1"
    )
    assert campaigns == [
        (name, *(sum(seen[d, name, c] for d in (NOV_30, DEC_1)) for c in COUNTS))
        for name in ("fall", "spring")
    ]

    billing = await table(
        rt, "SELECT account_id, month, messages_sent FROM billing_usage ORDER BY 1, 2"
    )
    sent_by = Counter(
        (m.account, m.day.replace(day=1)) for m in MAILS if m.account and m.to.startswith("ok")
    )
    assert billing == sorted((a, month, n) for (a, month), n in sent_by.items())

    tracked = await table(rt, "SELECT job_type, status, payload, error_message FROM analytics_jobs")
    assert sorted(tracked, key=str) == sorted(
        ((r.queue_name, "completed", r.payload, None) for r in runs), key=str
    )
    assert await rt.pool.fetchval("SELECT bool_and(processed_at >= queued_at) FROM analytics_jobs")


async def test_a_failed_run_is_tracked_with_its_error(runtime: Runtime) -> None:
    bad = job(BILLING, {"month": "2026-13"})
    with pytest.raises(PermanentFailure, match="month"):
        await AnalyticsRunner(runtime.pool).run(bad)
    row = await runtime.pool.fetchrow(
        "SELECT status, error_message, processed_at FROM analytics_jobs WHERE id = $1", bad.id
    )
    assert row is not None
    assert row["status"] == "failed" and "month" in row["error_message"]
    assert row["processed_at"] <= datetime.now(UTC)
