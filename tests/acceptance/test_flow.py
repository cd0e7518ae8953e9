"""Cancelling running jobs and handler outcomes with real processes: the API, a
`python -m app.worker` and a `python -m app.migrator`, driven over HTTP. The handlers
(tests/support/handlers.py) leave files as the ground truth of what they saw."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.entrypoints import Launcher, Service, wait_for_job, wait_healthy
from tests.support.servers import free_port


@pytest.fixture
async def api(launcher: Launcher) -> AsyncIterator[tuple[httpx.AsyncClient, list[Service]]]:
    port = free_port()
    api = launcher.start(
        "api", ["app", "--port", str(port)], EMBED_MIGRATOR="false", EMBED_WORKER="false"
    )
    services = [
        api,
        launcher.start("worker", ["app.worker"]),
        launcher.start("migrator", ["app.migrator"]),
    ]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        await wait_healthy(client, api)
        yield client, services


async def create(client: httpx.AsyncClient, queue: str, **fields: Any) -> str:
    response = await client.post("/jobs", json={"queue_name": queue, "payload": {}, **fields})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def logged(database_url: str, job_id: str) -> list[tuple[str, int, str | None]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT status, attempt_number, actor FROM job_logs WHERE job_id = $1::uuid "
            "ORDER BY created_at",
            job_id,
        )
        return [(r["status"], r["attempt_number"], r["actor"]) for r in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("queue", "marker"), [("t-long-async", "cancelled"), ("t-long-sync", "flagged")]
)
async def test_cancel_stops_a_long_handler_and_no_completion_follows(
    api: tuple[httpx.AsyncClient, list[Service]],
    database_url: str,
    tmp_path: Path,
    queue: str,
    marker: str,
) -> None:
    client, services = api
    job_id = await create(client, queue, payload={"dir": str(tmp_path)})
    await wait_for_job(client, job_id, ("running",))

    response = await client.post(f"/jobs/{job_id}/cancel", params={"reason": "wrong list"})
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["outcome"]) == ("cancelled", "stopped")
    assert (tmp_path / f"{job_id}.{marker}").exists(), "the handler saw the cancel"

    # Queued jobs are cancelled as before: a job due in an hour.
    later = await create(client, "t-ok", run_at="2999-01-01T00:00:00Z")
    queued = await client.post(f"/jobs/{later}/cancel")
    assert (queued.status_code, queued.json()["outcome"]) == (200, "cancelled")

    # Stop every process: whatever was pending is recorded; nothing completed the job.
    for service in services:
        service.sigterm()
    assert [await s.exit_code(timeout=15) for s in services] == [0, 0, 0]
    assert await logged(database_url, job_id) == [
        ("cancel_requested", 1, "anonymous"),
        ("cancelled", 1, "anonymous"),
    ]


def runs_recorded(directory: Path, job_id: str) -> int:
    return len(list(directory.glob(f"{job_id}.run*")))


async def test_permanent_failure_and_snoozes(
    api: tuple[httpx.AsyncClient, list[Service]], database_url: str, tmp_path: Path
) -> None:
    client, _services = api
    gone = await create(client, "t-gone", max_attempts=5)
    snoozing = await create(client, "t-snooze", payload={"dir": str(tmp_path)}, max_attempts=2)

    failed = await wait_for_job(client, gone)
    assert (failed["status"], failed["attempt_count"]) == ("failed", 1)
    assert failed["last_error_message"] == "PermanentFailure: endpoint gone (410)"
    assert [s for s, _, _ in await logged(database_url, gone)] == ["failed"]

    done = await wait_for_job(client, snoozing)
    assert (done["status"], done["attempt_count"], done["snooze_count"]) == ("completed", 1, 3)
    assert runs_recorded(tmp_path, snoozing) == 4
    assert [(s, a) for s, a, _ in await logged(database_url, snoozing)] == [
        ("snoozed", 1),
        ("snoozed", 1),
        ("snoozed", 1),
        ("completed", 1),
    ]
