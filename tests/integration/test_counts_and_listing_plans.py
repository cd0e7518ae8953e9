"""Counts and listings that stay flat on a huge table: the counters of terminal jobs
follow every statement that changes a status, and every listing keeps an index plan
when PostgreSQL switches its prepared statement to a generic plan."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.db import hot, outcomes
from app.db.counts import COUNT_LIVE_JOBS
from app.db.listings import CUSTOM_PLANS, list_dead_letters_sql, list_jobs_sql
from app.db.pool import Connection
from app.jobs.transitions import JOB_STATUSES, TERMINAL_STATUSES
from app.runtime import Runtime
from tests.integration.test_transitions import (
    CUSTOM_RUNNERS,
    QUEUE,
    RUNNERS,
    setup_jobs,
    statements_writing_jobs,
)
from tests.support.factories import add_queue

OTHER_QUEUE = "t-other"


async def real_counts(runtime: Runtime) -> dict[str, int]:
    rows = await runtime.pool.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


@pytest.mark.parametrize("statement", sorted(statements_writing_jobs()))
async def test_counts_match_the_table_after_every_statement(
    runtime: Runtime, statement: str
) -> None:
    await add_queue(runtime, QUEUE)
    async with runtime.pool.acquire() as conn:
        jobs = await setup_jobs(conn)
        factory = RUNNERS[statement]
        run = CUSTOM_RUNNERS[statement] if factory is None else factory(statement)
        await run(conn, jobs)
    counts = await runtime.listings.count_jobs(timeout=5.0)
    assert counts.exact
    assert counts.by_status == await real_counts(runtime), statement
    by_queue = await runtime.pool.fetch(
        "SELECT queue_name, status, count(*) AS n FROM jobs GROUP BY queue_name, status"
    )
    expected: dict[str, dict[str, int]] = {}
    for r in by_queue:
        expected.setdefault(r["queue_name"], {})[r["status"]] = r["n"]
    assert counts.by_queue == expected


async def test_counts_of_a_truncated_table_are_zero(runtime: Runtime) -> None:
    await add_queue(runtime, QUEUE)
    async with runtime.pool.acquire() as conn:
        await setup_jobs(conn)
        await conn.execute("TRUNCATE jobs CASCADE")
    counts = await runtime.listings.count_jobs(timeout=5.0)
    assert counts.by_status == {}


async def fill_completed(conn: Connection, n: int) -> None:
    """A table big enough that a scan would cost more than an index: completed jobs of
    another queue."""
    await conn.execute(
        "INSERT INTO job_queues (name) VALUES ($1) ON CONFLICT DO NOTHING", OTHER_QUEUE
    )
    await conn.execute(
        """
        INSERT INTO jobs (queue_name, status, payload, completed_at)
        SELECT $1, 'completed', '{}', now() FROM generate_series(1, $2::int)
        """,
        OTHER_QUEUE,
        n,
    )
    await conn.execute("ANALYZE jobs")


async def test_counting_live_jobs_reads_partial_indexes_only(runtime: Runtime) -> None:
    """/metrics on a table of finished jobs does not read them."""
    await add_queue(runtime, QUEUE)
    async with runtime.pool.acquire() as conn, conn.transaction():
        await setup_jobs(conn)
        await fill_completed(conn, 20_000)
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + COUNT_LIVE_JOBS))
        counts = await runtime.listings.count_jobs(timeout=5.0)
    for index in (
        "idx_jobs_queue_due",
        "idx_jobs_migrated",
        "idx_jobs_running_lease",
        "idx_jobs_scheduled",
    ):
        assert any(name in plan for name in index.split("|")), plan
    assert "Seq Scan" not in plan, plan
    assert counts.by_status == {}  # the filling transaction is not committed yet


def literal(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def listing_cases() -> list[tuple[str, tuple[str, list[object]], str]]:
    now = datetime.now(UTC)
    cases: list[tuple[str, tuple[str, list[object]], str]] = []
    for status in ("failed", "cancelled", "discarded"):
        cases.append(
            (
                f"status={status}",
                list_jobs_sql(
                    queue_name=None,
                    status=status,
                    created_from=None,
                    created_to=None,
                    after_id=None,
                    limit=51,
                ),
                "idx_jobs_rare_terminal",
            )
        )
    cases.append(
        (
            "queue",
            list_jobs_sql(
                queue_name=QUEUE,
                status=None,
                created_from=None,
                created_to=None,
                after_id=uuid.UUID(int=2**127),
                limit=51,
            ),
            "idx_jobs_at_rest_by_queue",
        )
    )
    # The harness itself: the old optional-filter statement, generic, reads the table.
    cases.append(
        (
            "control: optional filters",
            (
                "SELECT id FROM jobs WHERE ($2::text IS NULL OR status = $2) "
                "ORDER BY id DESC LIMIT $1",
                [51, "failed"],
            ),
            "pk_jobs",
        )
    )
    cases.append(
        (
            "no filter",
            list_jobs_sql(
                queue_name=None,
                status=None,
                created_from=None,
                created_to=None,
                after_id=None,
                limit=51,
            ),
            "pk_jobs",
        )
    )
    cases.append(
        (
            "dead letters of a queue",
            list_dead_letters_sql(queue_name=QUEUE, failed_since=now, after=None, limit=51),
            "idx_jobs_dead_letter|idx_jobs_rare_terminal",
        )
    )
    return cases


@pytest.mark.parametrize(
    ("statement", "index"),
    [(c[1], c[2]) for c in listing_cases()],
    ids=[c[0] for c in listing_cases()],
)
async def test_listings_keep_their_index_after_five_calls(
    runtime: Runtime, statement: tuple[str, list[object]], index: str
) -> None:
    """After five calls a prepared statement may switch to a generic plan; the store
    plans listings for their values instead (CUSTOM_PLANS). The control case shows the
    harness does get a generic plan, in which an optional filter is useless."""
    text, args = statement
    await add_queue(runtime, QUEUE)
    async with runtime.pool.acquire() as conn, conn.transaction():
        await fill_completed(conn, 20_000)
        if text.startswith("SELECT id FROM"):  # the control
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        else:
            await conn.execute(CUSTOM_PLANS)
        await conn.execute(f"PREPARE listing AS {text}")
        values = ", ".join(literal(a) for a in args)
        rows = await conn.fetch(f"EXPLAIN EXECUTE listing({values})")
        await conn.execute("DEALLOCATE listing")
        plan = "\n".join(r[0] for r in rows)
    assert any(name in plan for name in index.split("|")), plan
    assert "Seq Scan" not in plan, plan


def test_a_status_outside_the_state_machine_is_refused() -> None:
    assert "queued" in JOB_STATUSES and "completed" in TERMINAL_STATUSES
    with pytest.raises(ValueError, match="unknown status"):
        list_jobs_sql(
            queue_name=None,
            status="x' OR true --",
            created_from=None,
            created_to=None,
            after_id=None,
            limit=1,
        )


# Literal values for the outcome statements' parameters, by type: 30 jobs' ids and the
# fence values of worker "w", attempt 1.
OUTCOME_ARGS = {
    "int[]": "array_fill(1, ARRAY[30])",
    "timestamp with time zone[]": "array_fill(now(), ARRAY[30])",
    "text[]": "array_fill('boom'::text, ARRAY[30])",
    "double precision[]": "array_fill(1.0::float8, ARRAY[30])",
    "text": "'w'",
    "integer": "25",
}


@pytest.mark.parametrize(
    "name",
    [
        "COMPLETE_JOBS",
        "FAIL_JOBS",
        "RELEASE_JOBS",
        "PERMANENT_FAIL_JOBS",
        "SNOOZE_JOBS",
        "CANCEL_RUNNING_JOBS",
    ],
)
@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_outcomes_find_their_jobs_by_key_whatever_the_statistics(
    runtime: Runtime, name: str, mode: str
) -> None:
    """Statistics taken while the jobs waited (none running) must not make an outcome
    read every running job: each finds its rows by primary key."""
    text = getattr(hot, name, None) or getattr(outcomes, name)
    await add_queue(runtime, QUEUE)
    async with runtime.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO jobs (queue_name, payload) SELECT $1, '{}' FROM generate_series(1, 20000)",
            QUEUE,
        )
        await conn.execute("ANALYZE jobs")
        await conn.execute(
            "UPDATE jobs SET status = 'running', worker_id = 'w', attempt_count = 1, "
            "lease_expires_at = now() + interval '30 seconds'"
        )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM jobs LIMIT 30")]
        types = [
            await conn.fetchval("SELECT format_type($1::oid, NULL)", t.oid)
            for t in (await conn.prepare(text)).get_parameters()
        ]
        id_array = "ARRAY[" + ", ".join(literal(i) for i in ids) + "]::uuid[]"
        values = [
            id_array if n == 0 else OUTCOME_ARGS.get(t, f"NULL::{t}") for n, t in enumerate(types)
        ]
        await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await conn.execute(f"PREPARE outcome({', '.join(types)}) AS {text}")
        rows = await conn.fetch(f"EXPLAIN EXECUTE outcome({', '.join(values)})")
        await conn.execute("DEALLOCATE outcome")
        plan = "\n".join(r[0] for r in rows)
    assert "pk_jobs" in plan, plan
    assert "idx_jobs_running_lease" not in plan, plan
    assert "Seq Scan" not in plan, plan
