"""The suppression list: addresses no email is sent to. A hard bounce adds one (the
bounce handler), an operator lists and lifts them (GET/DELETE /suppressions), the email
sender reads it before every message. Addresses are stored lower-cased.

Here rather than in app.handlers because the API serves it whatever HANDLER_MODULES
says, and importing app.handlers registers its handlers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

SELECT_SUPPRESSION: Final = """
SELECT address, reason, source, job_id, created_at
FROM suppressions
WHERE address = $1
"""

# The first reason stays: the list says since when, and why, an address is suppressed.
INSERT_SUPPRESSION: Final = """
INSERT INTO suppressions (address, reason, source, job_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (address) DO NOTHING
"""

LIST_SUPPRESSIONS: Final = """
SELECT address, reason, source, job_id, created_at
FROM suppressions
WHERE ($1::text IS NULL OR address > $1)
  AND ($2::text IS NULL OR source = $2)
ORDER BY address
LIMIT $3
"""

DELETE_SUPPRESSION: Final = """
DELETE FROM suppressions WHERE address = $1
RETURNING address, reason, source, job_id, created_at
"""


def normalize_address(address: str) -> str:
    """The form stored and compared: no surrounding space, lower case."""
    return address.strip().lower()


@dataclass(frozen=True, slots=True)
class Suppression:
    address: str
    reason: str
    source: str
    job_id: uuid.UUID | None
    created_at: datetime


def _row(record: asyncpg.Record) -> Suppression:
    return Suppression(
        address=record["address"],
        reason=record["reason"],
        source=record["source"],
        job_id=record["job_id"],
        created_at=record["created_at"],
    )


class SuppressionStore:
    """Named statements on the suppressions table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, address: str) -> Suppression | None:
        record = await self.pool.fetchrow(SELECT_SUPPRESSION, normalize_address(address))
        return None if record is None else _row(record)

    async def add(
        self, address: str, reason: str, *, source: str, job_id: uuid.UUID | None = None
    ) -> None:
        """Suppress `address` (an address already listed keeps its first reason)."""
        await self.pool.execute(
            INSERT_SUPPRESSION, normalize_address(address), reason, source, job_id
        )

    async def list(self, *, after: str | None, source: str | None, limit: int) -> list[Suppression]:
        records = await self.pool.fetch(LIST_SUPPRESSIONS, after, source, limit)
        return [_row(r) for r in records]

    async def delete(self, address: str) -> Suppression | None:
        """Lift the suppression of `address`: the entry lifted, None if it was not listed."""
        record = await self.pool.fetchrow(DELETE_SUPPRESSION, normalize_address(address))
        return None if record is None else _row(record)
