"""Email events: what happened to each message (sent, deferred, failed, suppressed,
bounced), with its campaign and account. The analytics are computed from them.

Delivery is at least once, so a job may run again after it recorded an event: each
event has a dedupe key naming the fact it records (`sent:<message id>`, `deferred:<message
id>:<attempt>` …), and a second insert of the same fact does nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final, Literal

import asyncpg

INSERT_EVENT: Final = """
INSERT INTO email_events (
    event, dedupe_key, job_id, attempt, message_id, address,
    campaign_id, account_id, bounce_type, detail
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (dedupe_key) DO NOTHING
"""

# The `sent` event of a message, by its dedupe key (the unique index serves it).
SELECT_SENT: Final = """
SELECT job_id, campaign_id, account_id, occurred_at
FROM email_events
WHERE dedupe_key = 'sent:' || $1
"""

EventName = Literal["sent", "deferred", "failed", "suppressed", "bounced"]


@dataclass(frozen=True, slots=True)
class EmailEvent:
    event: EventName
    job_id: uuid.UUID
    attempt: int
    message_id: str | None
    address: str
    campaign_id: str | None = None
    account_id: str | None = None
    bounce_type: Literal["hard", "soft"] | None = None
    detail: str | None = None

    @property
    def dedupe_key(self) -> str:
        """The fact this event records: one row per fact, however often a job runs."""
        if self.event == "deferred":
            return f"deferred:{self.message_id}:{self.attempt}"
        if self.event == "bounced":
            # A DSN names the message it is about; without one, the bounce job is the fact.
            about = self.message_id or f"job:{self.job_id}"
            return f"bounced:{self.bounce_type}:{about}:{self.address}"
        return f"{self.event}:{self.message_id}"


@dataclass(frozen=True, slots=True)
class SentMessage:
    """Who sent a message that was accepted, from its `sent` event."""

    job_id: uuid.UUID
    campaign_id: str | None
    account_id: str | None


class EventStore:
    """Named statements on email_events."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, e: EmailEvent) -> None:
        await self.pool.execute(
            INSERT_EVENT,
            e.event,
            e.dedupe_key,
            e.job_id,
            e.attempt,
            e.message_id,
            e.address.lower(),
            e.campaign_id,
            e.account_id,
            e.bounce_type,
            (e.detail or "")[:2000] or None,
        )

    async def sent(self, message_id: str) -> SentMessage | None:
        """The message's `sent` event, if it was accepted by the SMTP server before."""
        row = await self.pool.fetchrow(SELECT_SENT, message_id)
        if row is None:
            return None
        return SentMessage(
            job_id=row["job_id"], campaign_id=row["campaign_id"], account_id=row["account_id"]
        )
