"""Bounces (`bounce:process`): a delivery status notification (RFC 3464) as a mail server
sends it back, read with the standard library's `email` package (which parses the
message/delivery-status part into its per-message and per-recipient field blocks).

Each failed or delayed recipient is recorded as a `bounced` email event, classified by
its status code (RFC 3463): 5.x.x is a hard bounce, 4.x.x a soft one (without a status,
Action `failed` is hard and `delayed` soft). A hard bounce puts the address on the
suppression list, so no later email goes to it. The event is attributed to the campaign
and account of the original message, found by its Message-ID (which the sender derived
from the job id), when the DSN returns its headers.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from email import message_from_string, policy
from email.message import Message
from typing import Literal

from app.db.suppressions import SuppressionStore
from app.handlers.events import EmailEvent, EventStore
from app.jobs.outcomes import PermanentFailure

log = logging.getLogger("hybridq.handlers.bounces")

_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_BOUNCING_ACTIONS = ("failed", "delayed")
_ORIGINAL_PARTS = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    address: str
    kind: Literal["hard", "soft"]
    action: str
    status: str | None
    diagnostic: str | None

    @property
    def summary(self) -> str:
        """`hard bounce 5.1.1: smtp; 550 5.1.1 … User unknown`"""
        detail = self.diagnostic or self.action
        return f"{self.kind} bounce {self.status or '(no status)'}: {detail}"


@dataclass(frozen=True, slots=True)
class Bounce:
    reporting_mta: str | None
    original_message_id: str | None
    recipients: list[BouncedRecipient]


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else None


def _address(typed: str | None) -> str | None:
    """`rfc822; <User@Example.org>` -> `user@example.org`."""
    if not typed:
        return None
    _type, _, address = typed.rpartition(";")
    address = address.strip().strip("<>").strip()
    return address.lower() or None


def _recipient(block: Message) -> BouncedRecipient | None:
    action = (_field(block, "Action") or "").lower()
    address = _address(_field(block, "Final-Recipient") or _field(block, "Original-Recipient"))
    if action not in _BOUNCING_ACTIONS or address is None:
        return None  # delivered, relayed, expanded: not a bounce
    match = _STATUS.search(_field(block, "Status") or "")
    status = match.group(0) if match else None
    kind: Literal["hard", "soft"]
    if match is None:
        kind = "hard" if action == "failed" else "soft"
    elif match.group(1) == "2":
        return None  # a success status under a failure action: nothing bounced
    else:
        kind = "hard" if match.group(1) == "5" else "soft"
    return BouncedRecipient(address, kind, action, status, _field(block, "Diagnostic-Code"))


def _original_message_id(report: Message) -> str | None:
    for part in report.walk():
        if part.get_content_type() not in _ORIGINAL_PARTS:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            headers = payload[0]  # message/rfc822: a parsed message
        elif isinstance(payload, str):  # the returned headers as text
            headers = message_from_string(payload, policy=policy.default)
        else:
            continue
        message_id = _field(headers, "Message-ID")
        if message_id:
            return message_id
    return None


def parse_dsn(raw: str) -> Bounce:
    """The bounce's recipients and the message it is about; PermanentFailure if `raw` is
    not a delivery status notification (it never will be)."""
    message = message_from_string(raw, policy=policy.default)
    report = next(
        (p for p in message.walk() if p.get_content_type() == "message/delivery-status"), None
    )
    if report is None:
        raise PermanentFailure("not a delivery status notification (RFC 3464)")
    blocks = [b for b in report.get_payload() if isinstance(b, Message)]
    if not blocks:
        raise PermanentFailure("the message/delivery-status part has no fields")
    per_message, per_recipient = blocks[0], blocks[1:]
    recipients = [r for r in map(_recipient, per_recipient) if r is not None]
    reporting = _field(per_message, "Reporting-MTA")
    return Bounce(
        reporting_mta=reporting.rpartition(";")[2].strip() if reporting else None,
        original_message_id=_original_message_id(message),
        recipients=recipients,
    )


class BounceProcessor:
    """Records the bounces of a DSN and suppresses hard-bounced addresses."""

    def __init__(self, events: EventStore, suppressions: SuppressionStore) -> None:
        self.events = events
        self.suppressions = suppressions

    async def process(self, job_id: uuid.UUID, attempt: int, raw: str) -> Bounce:
        bounce = parse_dsn(raw)
        original = None
        if bounce.original_message_id:
            original = await self.events.sent(bounce.original_message_id)
        for r in bounce.recipients:
            await self.events.record(
                EmailEvent(
                    event="bounced",
                    job_id=job_id,
                    attempt=attempt,
                    message_id=bounce.original_message_id,
                    address=r.address,
                    campaign_id=original.campaign_id if original else None,
                    account_id=original.account_id if original else None,
                    bounce_type=r.kind,
                    detail=r.summary,
                )
            )
            if r.kind == "hard":
                await self.suppressions.add(r.address, r.summary, source="bounce", job_id=job_id)
            log.info("%s from %s: %s", r.summary, bounce.reporting_mta, r.address)
        if not bounce.recipients:
            log.info("DSN from %s names no failed or delayed recipient", bounce.reporting_mta)
        return bounce
