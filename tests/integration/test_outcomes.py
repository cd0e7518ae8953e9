"""Handler outcomes beyond returning and raising: PermanentFailure (failed now, whatever
attempts are left) and Snooze (again after N seconds, the attempt not spent, at most
MAX_SNOOZES times). Both are recorded in job_logs and shown by GET /jobs/{id}."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import httpx

from app.jobs.outcomes import PermanentFailure, Snooze
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from tests.support.factories import add_queue, create_job, job_row, run_until_settled


async def logs_of(rt: Runtime, job_id: uuid.UUID) -> list[tuple[str, int, str | None]]:
    rows = await rt.pool.fetch(
        "SELECT status, attempt_number, log_message FROM job_logs WHERE job_id = $1 "
        "ORDER BY created_at",
        job_id,
    )
    return [(r["status"], r["attempt_number"], r["log_message"]) for r in rows]


async def test_a_permanent_failure_fails_the_job_at_once_with_attempts_left(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    rt = runtime
    runs: list[int] = []

    @registry.handler("t-gone")
    def deliver(job: Job) -> None:  # a sync handler: the same outcome from a thread
        runs.append(job.attempt)
        raise PermanentFailure("endpoint gone (410)")

    await add_queue(rt, "t-gone")
    job_id = await create_job(rt, "t-gone", max_attempts=5)
    await run_until_settled(rt)

    assert runs == [1]
    body = (await client.get(f"/jobs/{job_id}")).json()
    assert body["status"] == "failed"
    assert body["attempt_count"] == 1
    assert body["last_error_message"] == "PermanentFailure: endpoint gone (410)"
    assert body["failed_at"] is not None
    assert await logs_of(rt, job_id) == [
        ("failed", 1, "PermanentFailure: endpoint gone (410) (permanent failure: no more attempts)")
    ]
    # It is a dead letter like any other failed job.
    dead = (await client.get("/dead-letter", params={"queue_name": "t-gone"})).json()
    assert [item["job_id"] for item in dead["items"]] == [str(job_id)]


async def test_snoozes_do_not_spend_attempts_and_each_is_logged(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    rt = runtime
    seen: list[int] = []

    @registry.handler("t-snooze")
    async def rate_limited(job: Job) -> Snooze | None:
        seen.append(job.attempt)
        if len(seen) == 1:
            raise Snooze(0, "rate limited")
        if len(seen) <= 3:
            return Snooze(0.01, "still rate limited")  # returned, not raised: the same
        return None

    await add_queue(rt, "t-snooze")
    job_id = await create_job(rt, "t-snooze", max_attempts=2)
    await run_until_settled(rt)

    # Every run was attempt 1: a snooze gives the attempt back.
    assert seen == [1, 1, 1, 1]
    body = (await client.get(f"/jobs/{job_id}")).json()
    assert (body["status"], body["attempt_count"], body["snooze_count"]) == ("completed", 1, 3)
    logs = await logs_of(rt, job_id)
    assert [(status, attempt) for status, attempt, _ in logs] == [
        ("snoozed", 1),
        ("snoozed", 1),
        ("snoozed", 1),
        ("completed", 1),
    ]
    assert logs[0][2] is not None and logs[0][2].startswith(
        "snoozed for 0s (1 of 25): rate limited"
    )
    assert logs[2][2] is not None and "(3 of 25): still rate limited (again at " in logs[2][2]
    timeline = (await client.get(f"/jobs/{job_id}/logs")).json()["items"]
    assert [item["status"] for item in timeline] == ["snoozed", "snoozed", "snoozed", "completed"]


async def test_a_snoozed_job_waits_in_postgresql_until_its_time(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime

    @registry.handler("t-later")
    async def later(job: Job) -> None:
        raise Snooze(60, "mailbox warming up")

    await add_queue(rt, "t-later")
    job_id = await create_job(rt, "t-later")
    before = datetime.now(UTC)
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True).run()

    row = await job_row(rt, job_id)
    assert (row["status"], row["attempt_count"], row["snooze_count"]) == ("scheduled", 0, 1)
    assert 59 <= (row["run_at"] - before).total_seconds() <= 62
    assert row["last_error_message"] is None  # a snooze is not an error
    # Not due: the migrator moves nothing.
    assert (await rt.migrator().move_due_jobs()).moved == 0
    state = await rt.redis.hgetall(rt.keys.job(str(job_id)))
    assert (state[b"status"], state[b"attempt_count"]) == (b"scheduled", b"0")


async def test_past_max_snoozes_the_job_fails(runtime: Runtime, registry: HandlerRegistry) -> None:
    rt = dataclasses.replace(runtime, settings=runtime.settings.replace(max_snoozes=2))
    runs: list[int] = []

    @registry.handler("t-forever")
    async def forever(job: Job) -> None:
        runs.append(job.attempt)
        raise Snooze(0, "not yet")

    await add_queue(rt, "t-forever")
    job_id = await create_job(rt, "t-forever", max_attempts=3)
    await run_until_settled(rt)

    assert runs == [1, 1, 1]
    row = await job_row(rt, job_id)
    assert (row["status"], row["attempt_count"], row["snooze_count"]) == ("failed", 1, 2)
    assert row["last_error_message"] == "snoozed more than 2 times (MAX_SNOOZES): not yet"
    assert [(s, a) for s, a, _ in await logs_of(rt, job_id)] == [
        ("snoozed", 1),
        ("snoozed", 1),
        ("failed", 1),
    ]


async def test_outcomes_that_postgresql_could_not_hold_are_made_storable(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    """A snooze of a million years is cut to a year, a NUL in a reason is dropped: the
    outcome is written (an unwritable one would hold up the recorder's batch)."""
    rt = runtime

    @registry.handler("t-odd")
    async def odd(job: Job) -> None:
        if job.payload["kind"] == "snooze":
            raise Snooze(1e13, "far\x00away")
        raise PermanentFailure("nul\x00byte")

    await add_queue(rt, "t-odd")
    snoozed = await create_job(rt, "t-odd", {"kind": "snooze"})
    failed = await create_job(rt, "t-odd", {"kind": "fail"})
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True).run()

    row = await job_row(rt, snoozed)
    assert row["status"] == "scheduled"  # a year from now
    assert 365 <= (row["run_at"] - datetime.now(UTC)).days <= 366
    row = await job_row(rt, failed)
    assert (row["status"], row["last_error_message"]) == ("failed", "PermanentFailure: nulbyte")
