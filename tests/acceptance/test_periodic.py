"""Periodic jobs with real processes: three `python -m app.migrator` processes run the
scheduler at once on a one-second schedule, and every tick makes exactly one job; a
migrator started after downtime makes one job for the missed ticks, not one per tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.support.entrypoints import Launcher, wait_until

EVERY_SECOND = "t-every-second"
EVERY_MINUTE = "t-every-minute"


async def run_ats(conn: asyncpg.Connection, schedule: str) -> list[datetime]:
    """The due times (= ticks) of the jobs a schedule made, one entry per job."""
    rows = await conn.fetch(
        "SELECT j.run_at FROM jobs j WHERE j.id IN "
        "(SELECT job_id FROM schedule_ticks WHERE schedule_name = $1) ORDER BY 1",
        schedule,
    )
    return [r["run_at"] for r in rows]


async def test_three_migrators_make_one_job_per_tick_and_one_after_downtime(
    launcher: Launcher, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO job_queues (name) VALUES ('t-ok') ON CONFLICT DO NOTHING")
        await conn.execute(
            "INSERT INTO schedules (name, queue_name, cron) VALUES ($1, 't-ok', '* * * * * *')",
            EVERY_SECOND,
        )
        migrators = [launcher.start(f"migrator-{i}", ["app.migrator"]) for i in range(3)]

        async def six_ticks() -> bool | None:
            return True if len(await run_ats(conn, EVERY_SECOND)) >= 6 else None

        await wait_until(six_ticks, 30, "six ticks of the one-second schedule")
        for m in migrators:
            m.sigterm()
        assert [await m.exit_code(timeout=10) for m in migrators] == [0, 0, 0]

        ticks = await run_ats(conn, EVERY_SECOND)
        # One job per tick: no tick has two jobs, every tick is a whole second.
        assert len(ticks) == len(set(ticks)) >= 6
        assert all(t.microsecond == 0 for t in ticks)
        made = sum(m.log().count(f"schedule {EVERY_SECOND}: tick") for m in migrators)
        assert made == len(ticks), "each job was made (and logged) by exactly one migrator"

        # Downtime: no migrator runs while ticks pass. The per-minute schedule is made as
        # if its last tick ran two hours ago: 120 ticks missed.
        two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
        await conn.execute(
            "INSERT INTO schedules (name, queue_name, cron, ticks_from, last_tick) "
            "VALUES ($1, 't-ok', '* * * * *', $2, $2)",
            EVERY_MINUTE,
            two_hours_ago,
        )
        restart = datetime.now(UTC)
        migrator = launcher.start("migrator-restarted", ["app.migrator"])

        async def caught_up() -> bool | None:
            minute = await run_ats(conn, EVERY_MINUTE)
            second = [t for t in await run_ats(conn, EVERY_SECOND) if t > ticks[-1]]
            return True if minute and len(second) >= 2 else None

        await wait_until(caught_up, 30, "the restarted migrator's first ticks")
        migrator.sigterm()
        assert await migrator.exit_code(timeout=10) == 0

        minute_ticks = await run_ats(conn, EVERY_MINUTE)
        # One catch-up job for the missed ticks: the latest, due at the restart's minute
        # (and at most the next minute's on-time job if the clock crossed one since).
        assert 1 <= len(minute_ticks) <= 2, minute_ticks
        assert restart - timedelta(minutes=1) < minute_ticks[0] <= restart + timedelta(seconds=30)
        if len(minute_ticks) == 2:
            assert minute_ticks[1] - minute_ticks[0] == timedelta(minutes=1)
        every_second = await run_ats(conn, EVERY_SECOND)
        assert len(every_second) == len(set(every_second))
    finally:
        await conn.close()
