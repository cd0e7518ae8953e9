"""The maintenance runner is a service: it runs until stopped, even with no tasks."""

from __future__ import annotations

import asyncio

from app.maintenance import Maintenance


async def test_without_tasks_it_runs_until_stopped() -> None:
    maintenance = Maintenance([])
    task = asyncio.create_task(maintenance.run())
    await asyncio.sleep(0.05)
    assert not task.done()  # `python -m app.migrator` would otherwise exit at once
    maintenance.stop()
    await asyncio.wait_for(task, 1)
