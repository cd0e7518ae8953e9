"""The transition table (app.jobs.transitions) is the truth about the statements: each
statement that writes `jobs` is run against jobs in every status, and the status changes
it makes must be exactly the rows the table lists for it (no more: nothing unlisted; no
fewer: every row is exercised). The README's lifecycle table is the table itself."""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.db.pool import Connection
from app.jobs.transitions import (
    JOB_STATUSES,
    STATUS_PRESERVING,
    TRANSITIONS,
    lifecycle_markdown,
)
from app.runtime import Runtime
from tests.support.factories import add_queue

QUEUE = "t-transitions"
WORKER = "w-1"
DB_MODULES = (
    "hot",
    "outcomes",
    "cancels",
    "recovery",
    "inserts",
    "actions",
    "listings",
    "queues",
    "retention",
    "schedules",
    "limits",
)
WRITES_JOBS = re.compile(r"\b(UPDATE jobs|INSERT INTO jobs|DELETE FROM jobs)\b")

Jobs = dict[uuid.UUID, str]
Runner = Callable[[Connection, Jobs], Awaitable[Any]]


def sql(statement: str) -> str:
    module, name = statement.split(":")
    text: str = getattr(importlib.import_module(f"app.db.{module}"), name)
    return text


def statements_writing_jobs() -> set[str]:
    found = set()
    for module in DB_MODULES:
        mod = importlib.import_module(f"app.db.{module}")
        for name, value in vars(mod).items():
            if (
                name.isupper()
                and not name.startswith("_")
                and isinstance(value, str)
                and WRITES_JOBS.search(value)
            ):
                found.add(f"{module}:{name}")
    return found


def test_every_statement_that_writes_jobs_is_in_the_table() -> None:
    listed = {t.statement for t in TRANSITIONS} | set(STATUS_PRESERVING)
    assert statements_writing_jobs() == listed


def test_the_readme_lifecycle_is_the_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert lifecycle_markdown() in readme, "regenerate: app.jobs.transitions.lifecycle_markdown"


async def setup_jobs(conn: Connection) -> Jobs:
    """Two jobs in every status, one on its last attempt, one with attempts left; leases
    expired, last change an hour ago, so every statement may act on any of them."""
    jobs: Jobs = {}
    for status in JOB_STATUSES:
        for max_attempts in (1, 3):
            job_id = uuid.uuid4()
            await conn.execute(
                """
                INSERT INTO jobs (id, queue_name, status, payload, attempt_count, max_attempts,
                                  worker_id, lease_expires_at, started_at, failed_at, run_at,
                                  created_at, updated_at)
                VALUES ($1, $2, $3, '{}', 1, $4, $5, now() - interval '1 minute',
                        now() - interval '1 hour', now() - interval '1 hour',
                        now() - interval '1 hour', now() - interval '1 hour',
                        now() - interval '1 hour')
                """,
                job_id,
                QUEUE,
                status,
                max_attempts,
                WORKER,
            )
            jobs[job_id] = status
    return jobs


def each(args: Callable[[uuid.UUID], tuple[Any, ...]]) -> Callable[[str], Runner]:
    """Run the statement once per job."""

    def runner(statement: str) -> Runner:
        async def run(conn: Connection, jobs: Jobs) -> None:
            for job_id in jobs:
                await conn.fetch(sql(statement), *args(job_id))

        return run

    return runner


def once(args: Callable[[Jobs], tuple[Any, ...]]) -> Callable[[str], Runner]:
    """Run the statement once for all the jobs."""

    def runner(statement: str) -> Runner:
        async def run(conn: Connection, jobs: Jobs) -> None:
            async with conn.transaction():
                await conn.fetch(sql(statement), *args(jobs))

        return run

    return runner


def ids(jobs: Jobs) -> list[uuid.UUID]:
    return list(jobs)


HOUR_AGO = datetime.now(UTC).replace(microsecond=0)
LATER = datetime(2100, 1, 1, tzinfo=UTC)


# The direct path's jobs go to a queue of their own: it takes them only while no job
# of their queue waits queued (and the statements run beside jobs of every status).
DIRECT_QUEUE = "t-transitions-direct"


async def default_priority(conn: Connection) -> int:
    value = await conn.fetchval(
        "INSERT INTO job_queues (name) VALUES ($1) ON CONFLICT (name) "
        "DO UPDATE SET name = EXCLUDED.name RETURNING default_priority",
        DIRECT_QUEUE,
    )
    assert isinstance(value, int)
    return value


async def insert_one_now_and_later(conn: Connection, jobs: Jobs) -> None:
    """Due now, due later, and due now on the direct path (app.direct)."""
    direct = await default_priority(conn)
    for queue, run_at, assumed in (
        (QUEUE, None, None),
        (QUEUE, LATER, None),
        (DIRECT_QUEUE, None, direct),
    ):
        await conn.fetch(
            sql("inserts:INSERT_ONE_JOB"),
            uuid.uuid4(),
            queue,
            "{}",
            None,
            run_at,
            3,
            None,
            assumed,
            None,
        )


def insert_batch(statement: str, *, keyed: bool) -> Runner:
    """Due now, due later and due now on the direct path, in one statement; each job
    with an idempotency key of its own when the statement takes keys."""

    async def run(conn: Connection, jobs: Jobs) -> None:
        direct = await default_priority(conn)
        keys = [f"k-{uuid.uuid4()}" for _ in range(3)] if keyed else [None] * 3
        async with conn.transaction():
            await conn.fetch(
                sql(statement),
                [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()],
                [QUEUE, QUEUE, DIRECT_QUEUE],
                ["{}", "{}", "{}"],
                [None, None, None],
                [None, LATER, None],
                [3, 3, 3],
                keys,
                ["h", "h", "h"] if keyed else keys,
                [None, None, None],
                [None, None, direct],
                None,
            )

    return run


RUNNERS: dict[str, Callable[[str], Runner]] = {
    "inserts:INSERT_ONE_JOB": lambda statement: insert_one_now_and_later,
    "inserts:INSERT_JOBS": lambda statement: insert_batch(statement, keyed=False),
    "inserts:INSERT_KEYED_JOBS": lambda statement: insert_batch(statement, keyed=True),
    "inserts:RELEASE_EXPIRED_KEYS": once(lambda j: (["k"], 0.0)),
    "hot:MOVE_DUE_JOBS": once(lambda j: ([QUEUE], 100, "10000")),
    "hot:PROMOTE_DUE_JOBS": once(lambda j: (100,)),
    "limits:MOVE_LIMITED_JOBS": once(lambda j: (QUEUE, 100)),
    "limits:MOVE_KEYED_JOBS": once(lambda j: (QUEUE, 100, 1)),
    "hot:CLAIM_JOBS": once(lambda j: (ids(j), WORKER, 30.0, "10000")),
    "hot:RENEW_LEASES": once(lambda j: (ids(j), WORKER, 30.0)),
    "hot:COMPLETE_JOBS": once(
        lambda j: (
            ids(j),
            [1] * len(j),
            [HOUR_AGO] * len(j),
            [HOUR_AGO] * len(j),
            WORKER,
            [None] * len(j),
        )
    ),
    "hot:FAIL_JOBS": once(
        lambda j: (
            ids(j),
            [1] * len(j),
            [HOUR_AGO] * len(j),
            [HOUR_AGO] * len(j),
            ["boom"] * len(j),
            [1.0] * len(j),
            WORKER,
            [None] * len(j),
        )
    ),
    "hot:RELEASE_JOBS": once(lambda j: (ids(j), [1] * len(j), [HOUR_AGO] * len(j), WORKER)),
    "outcomes:PERMANENT_FAIL_JOBS": once(
        lambda j: (
            ids(j),
            [1] * len(j),
            [HOUR_AGO] * len(j),
            [HOUR_AGO] * len(j),
            ["gone"] * len(j),
            WORKER,
            [None] * len(j),
        )
    ),
    "outcomes:SNOOZE_JOBS": None,  # type: ignore[dict-item]  # needs snoozed jobs: below
    "schedules:FIRE_TICK": None,  # type: ignore[dict-item]  # needs a schedule: below
    "cancels:REQUEST_CANCEL": each(lambda i: (i, "why", "key:t")),
    "outcomes:CANCEL_RUNNING_JOBS": None,  # type: ignore[dict-item]  # needs requests: below
    "cancels:CANCEL_ABANDONED": None,  # type: ignore[dict-item]  # needs requests: below
    "recovery:RESCUE_EXPIRED_LEASES": None,  # type: ignore[dict-item]  # two stall counts
    "recovery:REQUEUE_MIGRATED_BEFORE": once(lambda j: (100, datetime.now(UTC))),
    "recovery:REQUEUE_QUEUES_MIGRATED_BEFORE": once(lambda j: (100, datetime.now(UTC), [QUEUE])),
    "actions:REPLAY_JOB": each(lambda i: (i, "why", "key:t")),
    "actions:REPLAY_DEAD_LETTERS": once(
        lambda j: (QUEUE, "why", "key:t", None, datetime.now(UTC), 100)
    ),
    "actions:DISCARD_JOB": each(lambda i: (i, "why", "key:t")),
    "actions:CANCEL_JOB": each(lambda i: (i, "why", "key:t")),
    "retention:DELETE_OLD_JOBS": once(lambda j: (list(JOB_STATUSES), 0.0, 100)),
}


async def rescue_expired_leases(conn: Connection, jobs: Jobs) -> None:
    """Jobs with attempts left stall for the first time (queued again); the others are at
    their last allowed stall (failed as poison pills)."""
    await conn.execute("UPDATE jobs SET stall_count = CASE WHEN max_attempts = 1 THEN 2 ELSE 0 END")
    await conn.fetch(sql("recovery:RESCUE_EXPIRED_LEASES"), 100, 3, 1.0)


async def snooze(conn: Connection, jobs: Jobs) -> None:
    # Jobs on their last attempt have snoozed once already: with MAX_SNOOZES 1 they fail,
    # the others are queued again.
    await conn.execute("UPDATE jobs SET snooze_count = 1 WHERE max_attempts = 1")
    n = len(jobs)
    await conn.fetch(
        sql("outcomes:SNOOZE_JOBS"),
        ids(jobs),
        [1] * n,
        [HOUR_AGO] * n,
        [HOUR_AGO] * n,
        [5.0] * n,
        ["later"] * n,
        1,
        WORKER,
        [None] * n,
    )


async def fire_tick(conn: Connection, jobs: Jobs) -> None:
    await conn.execute(
        "INSERT INTO schedules (name, queue_name, cron) VALUES ('t-every-minute', $1, '* * * * *')",
        QUEUE,
    )
    await conn.fetch(sql("schedules:FIRE_TICK"), "t-every-minute", HOUR_AGO)


async def cancel_running(conn: Connection, jobs: Jobs) -> None:
    await conn.execute("UPDATE jobs SET cancel_requested_at = now()")
    n = len(jobs)
    await conn.fetch(
        sql("outcomes:CANCEL_RUNNING_JOBS"),
        ids(jobs),
        [1] * n,
        [HOUR_AGO] * n,
        [HOUR_AGO] * n,
        WORKER,
        [None] * n,
    )


async def cancel_abandoned(conn: Connection, jobs: Jobs) -> None:
    await conn.execute("UPDATE jobs SET cancel_requested_at = now()")
    await conn.fetch(sql("cancels:CANCEL_ABANDONED"), 100)


CUSTOM_RUNNERS: dict[str, Runner] = {
    "outcomes:CANCEL_RUNNING_JOBS": cancel_running,
    "cancels:CANCEL_ABANDONED": cancel_abandoned,
    "schedules:FIRE_TICK": fire_tick,
    "recovery:RESCUE_EXPIRED_LEASES": rescue_expired_leases,
    "outcomes:SNOOZE_JOBS": snooze,
}


@pytest.mark.parametrize("statement", sorted(statements_writing_jobs()))
async def test_a_statement_makes_exactly_the_changes_the_table_lists(
    runtime: Runtime, statement: str
) -> None:
    await add_queue(runtime, QUEUE)
    async with runtime.pool.acquire() as conn:
        jobs = await setup_jobs(conn)
        factory = RUNNERS[statement]
        run = CUSTOM_RUNNERS[statement] if factory is None else factory(statement)
        await run(conn, jobs)
        after = {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status FROM jobs")}
    seen: set[tuple[str | None, str | None]] = {
        (before, after.get(job_id)) for job_id, before in jobs.items()
    }
    seen |= {(None, status) for job_id, status in after.items() if job_id not in jobs}
    changes = {(a, b) for a, b in seen if a != b}
    listed = {(t.source, t.target) for t in TRANSITIONS if t.statement == statement}
    assert changes == listed, f"{statement}: made {sorted(changes, key=str)}"
