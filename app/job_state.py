"""The `job:<id>` hash: real-time state of a job in Redis, for status polling.

PostgreSQL is the truth; this hash is a cache that may be missing (Redis lost its data,
or it expired). Every write sets a TTL, so no hash lives forever: a short one after a
terminal state, a long safety net before. Writes are monotonic: one that arrives late
(the migrator's `migrated_to_redis` after a fast worker's `completed`) does not
overwrite a later state (app.redis_batch guards).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.keys import Keys
from app.redis_batch import GUARD_MIGRATED, GUARD_NONE, GUARD_OUTCOME, GUARD_RUNNING, Batch

# A job that never reaches a terminal state within a week still loses its hash.
NON_TERMINAL_TTL = 7 * 86_400


class JobStateCache:
    def __init__(self, keys: Keys, terminal_ttl: int) -> None:
        self.keys = keys
        self.terminal_ttl = terminal_ttl

    def _write(
        self,
        pipe: Batch,
        job_id: uuid.UUID,
        fields: dict[str, Any],
        *,
        terminal: bool,
        keep_ttl: bool = False,
        guard: int = GUARD_NONE,
        attempt: int = 0,
    ) -> None:
        ttl = 0 if keep_ttl else self.terminal_ttl if terminal else NON_TERMINAL_TTL
        pipe.hash(
            self.keys.job(str(job_id)),
            {k: ("" if v is None else str(v)) for k, v in fields.items()},
            ttl,
            guard,
            attempt,
        )

    def migrated(self, pipe: Batch, job_id: uuid.UUID, attempt_count: int) -> None:
        self._write(
            pipe,
            job_id,
            {"status": "migrated_to_redis", "attempt_count": attempt_count},
            terminal=False,
            guard=GUARD_MIGRATED,
            attempt=attempt_count,
        )

    def running(
        self, pipe: Batch, job_id: uuid.UUID, worker_id: str, started_at: datetime, attempt: int
    ) -> None:
        self._write(
            pipe,
            job_id,
            {
                "status": "running",
                "worker_id": worker_id,
                "started_at": started_at.isoformat(),
                "attempt_count": attempt,
            },
            terminal=False,
            # The migrator set the week-long safety TTL; one EXPIRE fewer per job.
            keep_ttl=True,
            guard=GUARD_RUNNING,
            attempt=attempt,
        )

    def completed(
        self, pipe: Batch, job_id: uuid.UUID, completed_at: datetime, attempt: int
    ) -> None:
        self._write(
            pipe,
            job_id,
            {
                "status": "completed",
                "completed_at": completed_at.isoformat(),
                "attempt_count": attempt,
                "last_error": None,
            },
            terminal=True,
            guard=GUARD_OUTCOME,
            attempt=attempt,
        )

    def failed_attempt(
        self, pipe: Batch, job_id: uuid.UUID, status: str, error: str, attempt: int
    ) -> None:
        """After a failed attempt: `scheduled` (a retry waits for run_at) or `failed`."""
        self._write(
            pipe,
            job_id,
            {"status": status, "last_error": error, "attempt_count": attempt},
            terminal=status == "failed",
            guard=GUARD_OUTCOME,
            attempt=attempt,
        )

    def requeued(
        self, pipe: Batch, job_id: uuid.UUID, attempt_count: int, status: str = "queued"
    ) -> None:
        """Back to wait in PostgreSQL: `queued`, or `scheduled` when it is due later."""
        self._write(
            pipe, job_id, {"status": status, "attempt_count": attempt_count}, terminal=False
        )

    def operator_changed(
        self, pipe: Batch, job_id: uuid.UUID, status: str, attempt_count: int
    ) -> None:
        """After an operator's change (replay, cancel, discard): the new status, with the
        terminal TTL for a terminal one; a replay also clears the last error."""
        fields: dict[str, Any] = {"status": status, "attempt_count": attempt_count}
        if status == "queued":
            fields["last_error"] = None
        self._write(pipe, job_id, fields, terminal=status in ("cancelled", "discarded", "failed"))
