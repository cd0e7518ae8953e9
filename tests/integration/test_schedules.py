"""Periodic jobs: the scheduler (beside every migrator) with a test clock, and the
/schedules API. Exactly one job per tick however many schedulers run; after downtime one
catch-up job (or none, with SCHEDULE_CATCH_UP=skip); a daily job runs once on each day
of a DST change."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography.fernet import Fernet
from pydantic import BaseModel

from app.crypto import PayloadCipher
from app.maintenance.scheduler import Scheduler
from app.registry import HandlerRegistry
from app.runtime import Runtime, open_runtime
from app.settings import Settings
from tests.support.factories import add_queue

QUEUE = "t-periodic"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def add_schedule(
    rt: Runtime, name: str, cron: str, *, timezone: str = "UTC", ticks_from: datetime
) -> None:
    await rt.pool.execute(
        "INSERT INTO schedules (name, queue_name, cron, timezone, payload, ticks_from) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        name,
        QUEUE,
        cron,
        timezone,
        {"report": name},
        ticks_from,
    )


async def jobs_by_tick(rt: Runtime, name: str) -> dict[datetime, int]:
    rows = await rt.pool.fetch(
        "SELECT t.tick, count(j.id) AS n FROM schedule_ticks t JOIN jobs j ON j.id = t.job_id "
        "WHERE t.schedule_name = $1 GROUP BY t.tick ORDER BY t.tick",
        name,
    )
    return {r["tick"]: r["n"] for r in rows}


async def test_three_schedulers_create_exactly_one_job_per_tick(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, QUEUE)
    start = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
    clock = FakeClock(start)
    await add_schedule(rt, "every-second", "* * * * * *", ticks_from=start)
    schedulers = [Scheduler(rt.schedules, rt.settings, clock) for _ in range(3)]

    for step in range(1, 11):
        clock.now = start + timedelta(seconds=step, milliseconds=3)
        # All three at once, as three migrators would.
        await asyncio.gather(*(s.run_once() for s in schedulers))

    ticks = await jobs_by_tick(rt, "every-second")
    assert list(ticks) == [start + timedelta(seconds=s) for s in range(1, 11)]
    assert set(ticks.values()) == {1}
    jobs = await rt.pool.fetch("SELECT payload, run_at, status FROM jobs ORDER BY run_at")
    assert len(jobs) == 10
    assert all(j["payload"] == {"report": "every-second"} and j["status"] == "queued" for j in jobs)
    assert [j["run_at"] for j in jobs] == list(ticks)


async def test_after_downtime_a_missed_schedule_runs_once(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, QUEUE)
    start = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    clock = FakeClock(start)
    await add_schedule(rt, "every-minute", "* * * * *", ticks_from=start)
    scheduler = Scheduler(rt.schedules, rt.settings, clock)
    clock.now = start + timedelta(minutes=1)
    assert await scheduler.run_once() == 1  # 12:01

    # Down for an hour and a half: 90 ticks missed, one job for them.
    clock.now = start + timedelta(minutes=91, seconds=10)
    restarted = Scheduler(rt.schedules, rt.settings, clock)
    assert await restarted.run_once() == 1
    assert await restarted.run_once() == 0
    ticks = await jobs_by_tick(rt, "every-minute")
    assert list(ticks) == [
        datetime(2026, 6, 1, 12, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 13, 31, tzinfo=UTC),
    ]
    # Then on time again.
    clock.now = datetime(2026, 6, 1, 13, 32, 1, tzinfo=UTC)
    assert await restarted.run_once() == 1


async def test_with_catch_up_skip_a_missed_tick_makes_no_job(runtime: Runtime) -> None:
    rt = dataclasses.replace(runtime, settings=runtime.settings.replace(schedule_catch_up="skip"))
    await add_queue(rt, QUEUE)
    start = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    await add_schedule(rt, "hourly", "0 * * * *", ticks_from=start)
    clock = FakeClock(datetime(2026, 6, 1, 13, 0, 40, tzinfo=UTC))
    scheduler = Scheduler(rt.schedules, rt.settings, clock)
    assert await scheduler.run_once() == 1  # 13:00, 40 s late: within the grace, it runs

    # Down from 13:01 to 15:20: 14:00 and 15:00 are missed, and skipped.
    clock.now = datetime(2026, 6, 1, 15, 20, tzinfo=UTC)
    assert await Scheduler(rt.schedules, rt.settings, clock).run_once() == 0
    assert list(await jobs_by_tick(rt, "hourly")) == [datetime(2026, 6, 1, 13, tzinfo=UTC)]
    last = await rt.pool.fetchval("SELECT last_tick FROM schedules WHERE name = 'hourly'")
    assert last == datetime(2026, 6, 1, 15, tzinfo=UTC)
    clock.now = datetime(2026, 6, 1, 16, 0, 1, tzinfo=UTC)  # the next tick, on time
    assert await scheduler.run_once() == 1


async def walk_days(rt: Runtime, name: str, first: datetime, days: int) -> list[datetime]:
    """Run a scheduler every 10 minutes of clock time from `first` for `days` days; the
    ticks that made jobs (each job is due at its tick; schedule_ticks keeps one day)."""
    clock = FakeClock(first)
    scheduler = Scheduler(rt.schedules, rt.settings, clock)
    while clock.now < first + timedelta(days=days):
        await scheduler.run_once()
        clock.now += timedelta(minutes=10)
    rows = await rt.pool.fetch("SELECT run_at FROM jobs WHERE queue_name = $1 ORDER BY 1", QUEUE)
    return [r["run_at"] for r in rows]


async def test_a_daily_job_runs_once_on_the_day_clocks_go_forward(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, QUEUE)
    # Europe/Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    first = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    await add_schedule(rt, "nightly", "30 2 * * *", timezone="Europe/Berlin", ticks_from=first)
    assert await walk_days(rt, "nightly", first, 4) == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST, just after the gap
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]
    # The ticks table keeps a day of ticks: a schedule's history lives in its jobs.
    assert await rt.pool.fetchval("SELECT count(*) FROM schedule_ticks") == 2


async def test_a_daily_job_runs_once_on_the_day_clocks_go_back(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, QUEUE)
    # Europe/Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 comes twice.
    first = datetime(2026, 10, 23, 12, 0, tzinfo=UTC)
    await add_schedule(rt, "nightly", "30 2 * * *", timezone="Europe/Berlin", ticks_from=first)
    assert await walk_days(rt, "nightly", first, 4) == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # the first 02:30 (CEST) only
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]


async def test_schedules_declared_in_code_are_stored_at_start(
    settings: Settings, clean_db: None
) -> None:
    registry = HandlerRegistry()

    @registry.handler(
        "t-daily", cron="0 2 * * *", timezone="Europe/Berlin", payload={"scope": "all"}
    )
    async def aggregate(job: Any) -> None: ...

    registry.periodic("t-hourly-report", "t-daily", cron="0 * * * *", priority=10)

    async with open_runtime(settings, registry) as rt:
        rows = {r.name: r for r in await rt.schedules.all()}
        assert {
            n: (r.queue_name, r.cron, r.timezone, r.payload, r.source) for n, r in rows.items()
        } == {
            "t-daily": ("t-daily", "0 2 * * *", "Europe/Berlin", {"scope": "all"}, "code"),
            "t-hourly-report": ("t-daily", "0 * * * *", "UTC", {}, "code"),
        }
        await rt.schedules.update("t-daily", {"enabled": False})
    # A restart with a changed cron: the code's cron wins, the operator's `enabled` stays.
    changed = HandlerRegistry()
    changed.periodic("t-daily", "t-daily", cron="0 3 * * *", timezone="Europe/Berlin")
    async with open_runtime(settings, changed) as rt:
        row = await rt.schedules.get("t-daily")
        assert row is not None and (row.cron, row.enabled) == ("0 3 * * *", False)
        await rt.pool.execute("DELETE FROM schedules WHERE name LIKE 't-%'")


async def test_the_api_creates_lists_changes_and_deletes_schedules(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, QUEUE)
    body = {
        "name": "t-nightly",
        "queue_name": QUEUE,
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "payload": {"scope": "all"},
    }
    created = await client.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    out = created.json()
    assert (out["enabled"], out["source"], out["last_job"], out["priority"]) == (
        True,
        "api",
        None,
        None,
    )
    next_run = datetime.fromisoformat(out["next_run_at"])
    assert next_run > datetime.now(UTC)
    assert next_run.astimezone(UTC).minute == 30
    assert (await client.post("/schedules", json=body)).status_code == 409

    # A tick runs (test clock at the next run): the list shows the job.
    clock = FakeClock(next_run + timedelta(seconds=1))
    assert await Scheduler(rt.schedules, rt.settings, clock).run_once() == 1
    listed = (await client.get("/schedules")).json()["items"]
    (item,) = [i for i in listed if i["name"] == "t-nightly"]
    assert item["last_tick_at"] is not None
    assert datetime.fromisoformat(item["last_tick_at"]) == next_run
    # The test clock is ahead of PostgreSQL's: the tick's job is not due yet there.
    assert item["last_job"]["status"] == "scheduled"
    job = (await client.get(f"/jobs/{item['last_job']['job_id']}")).json()
    assert (job["queue_name"], job["status"]) == (QUEUE, "scheduled")

    patched = await client.patch("/schedules/t-nightly", json={"enabled": False, "priority": 5})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["enabled"], patched.json()["priority"]) == (False, 5)
    assert patched.json()["next_run_at"] is None
    deleted = await client.delete("/schedules/t-nightly")
    assert (deleted.status_code, deleted.json()["name"]) == (200, "t-nightly")
    assert (await client.get("/schedules/t-nightly")).status_code == 404
    assert (await client.delete("/schedules/t-nightly")).status_code == 404


async def test_bad_schedules_get_a_422_naming_the_field(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await add_queue(runtime, QUEUE)
    good = {"name": "t-bad", "queue_name": QUEUE, "cron": "0 2 * * *"}
    cases = [
        ({**good, "cron": "61 * * * *"}, "cron", "Bad minute"),
        ({**good, "cron": "every day"}, "cron", "5 fields"),
        ({**good, "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({**good, "queue_name": "t-no-such-queue"}, "queue_name", "unknown queue"),
    ]
    for body, field, message in cases:
        response = await client.post("/schedules", json=body)
        assert response.status_code == 422, (body, response.text)
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", field], error
        assert message in error["msg"], error
    assert (await client.post("/schedules", json=good)).status_code == 201
    for patch, field in [
        ({"cron": "* * * *"}, "cron"),
        ({"timezone": "Nowhere"}, "timezone"),
        ({"queue_name": "t-no-such-queue"}, "queue_name"),
    ]:
        response = await client.patch("/schedules/t-bad", json=patch)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", field]
    assert (await client.get("/schedules")).json()["items"][0]["cron"] == "0 2 * * *"


async def test_a_schedule_payload_is_checked_and_sealed_like_a_job_payload(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    rt = runtime

    class Report(BaseModel):
        scope: str

    @registry.handler("t-typed", payload_model=Report)
    async def report(job: Any) -> None: ...

    await add_queue(rt, "t-typed")
    body = {"name": "t-report", "queue_name": "t-typed", "cron": "0 6 * * *"}
    bad = await client.post("/schedules", json={**body, "payload": {"scope": 42}})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"][0]["loc"] == ["body", "payload", "scope"]

    # Sensitive fields are stored encrypted, in the schedule and in each job it makes.
    rt.cipher = PayloadCipher([Fernet.generate_key().decode()], {"t-typed": ["scope"]})
    created = await client.post("/schedules", json={**body, "payload": {"scope": "vip"}})
    assert created.status_code == 201, created.text
    stored = await rt.pool.fetchval("SELECT payload FROM schedules WHERE name = 't-report'")
    assert "vip" not in str(stored)
    tick = datetime.fromisoformat(created.json()["next_run_at"])
    await Scheduler(rt.schedules, rt.settings, FakeClock(tick)).run_once()
    job_payload = await rt.pool.fetchval("SELECT payload FROM jobs WHERE queue_name = 't-typed'")
    assert "vip" not in str(job_payload)
    assert rt.cipher.decrypt("t-typed", job_payload) == {"scope": "vip"}
