"""Mailbox warm-up (`warmup:process`): today's warm-up messages of one mailbox, sent round
robin to its warm-up recipients through the same sender as every email (suppression
list, events, circuit breaker).

One run per mailbox at a time: a mailbox's reputation depends on its sending pattern,
and two runs at once would double its volume. Until jobs carry a concurrency key (the
time-and-flow issue), a Redis lock per mailbox enforces it: a second run snoozes while
the first holds it. Each message has a Message-ID of its own (job id and index), so a
run that is retried skips the messages already accepted and sends the rest.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from app.handlers.payloads import WarmupPayload
from app.handlers.sender import (
    EmailSender,
    OutgoingEmail,
    build_message,
    display_from,
    message_id_for,
)
from app.jobs.outcomes import PermanentFailure, Snooze
from app.keys import Keys

log = logging.getLogger("hybridq.handlers.warmup")

# How long a run waits for another run of its mailbox to end before it looks again.
BUSY_SNOOZE = 30.0

# Deletes the lock only if this run still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(slots=True)
class WarmupResult:
    sent: int = 0
    refused: list[str] = field(default_factory=list)


class Warmup:
    """Sends warm-up runs; `lock_seconds` bounds a run (the lock outlives a dead worker
    by at most that)."""

    def __init__(
        self, sender: EmailSender, redis: aioredis.Redis, keys: Keys, lock_seconds: float
    ) -> None:
        self.sender = sender
        self.redis = redis
        self.keys = keys
        self.lock_ms = int(lock_seconds * 1000)
        self._release = redis.register_script(_RELEASE)

    async def run(self, job_id: uuid.UUID, attempt: int, payload: WarmupPayload) -> WarmupResult:
        mailbox = payload.mailbox.email.lower()
        lock, token = self.keys.warmup_lock(mailbox), str(job_id)
        if not await self.redis.set(lock, token, nx=True, px=self.lock_ms):
            holder = await self.redis.get(lock)
            holder = holder.decode() if isinstance(holder, bytes) else holder
            if holder != token:  # a retry of this very job may take its own lock back
                raise Snooze(BUSY_SNOOZE, f"mailbox {mailbox} is being warmed up by job {holder}")
        try:
            return await self._send_all(job_id, attempt, payload, mailbox)
        finally:
            await self._release(keys=[lock], args=[token])

    async def _send_all(
        self, job_id: uuid.UUID, attempt: int, p: WarmupPayload, mailbox: str
    ) -> WarmupResult:
        result = WarmupResult()
        for index in range(p.messages):
            to = p.recipients[index % len(p.recipients)]
            message = build_message(
                from_header=display_from(p.mailbox.name, mailbox),
                to=to,
                subject=f"Quick note {index + 1} from {p.mailbox.name or mailbox}",
                message_id=message_id_for(job_id, mailbox, index),
                text=f"Warm-up day {p.day}, message {index + 1} of {p.messages}.",
                headers={"X-Hybridq-Warmup": f"{mailbox}; day={p.day}"},
            )
            email = OutgoingEmail(
                job_id=job_id,
                attempt=attempt,
                message=message,
                sender=mailbox,
                recipient=to,
                campaign_id=f"warmup:{mailbox}",
                account_id=p.account_id,
            )
            try:
                await self.sender.send(email)
                result.sent += 1
            except PermanentFailure as exc:
                # One refused or suppressed recipient does not stop the mailbox's day.
                result.refused.append(f"{to}: {exc}")
        log.info(
            "warm-up of %s (day %d): %d sent, %d refused",
            mailbox,
            p.day,
            result.sent,
            len(result.refused),
        )
        return result
