"""The real entrypoints, as a user runs them, driven over HTTP:

- embedded: `python -m app --port <port>`, migrator and worker inside the API process;
- scaled out: the API with EMBED_MIGRATOR=false EMBED_WORKER=false, beside
  `python -m app.worker` and `python -m app.migrator`.

Jobs complete, retry and fail as GET /jobs/{id} shows them; SIGTERM stops every process
with exit code 0, after the job in flight has completed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.entrypoints import (
    Launcher,
    Service,
    wait_for_job,
    wait_healthy,
    wait_until,
)
from tests.support.servers import free_port

# Seconds a process may take from SIGTERM to its exit (a job in flight takes 1 s of it).
EXIT_BOUND = 10.0


@dataclass(slots=True)
class Deployment:
    client: httpx.AsyncClient
    services: list[Service]
    runs_jobs: Service  # the process whose worker runs the jobs


@pytest.fixture(params=["embedded", "scaled_out"])
async def deployment(
    request: pytest.FixtureRequest, launcher: Launcher
) -> AsyncIterator[Deployment]:
    port = free_port()
    argv = ["app", "--port", str(port)]
    if request.param == "embedded":
        api = launcher.start("api", argv)
        services = [api]
        runs_jobs = api
    else:
        api = launcher.start("api", argv, EMBED_MIGRATOR="false", EMBED_WORKER="false")
        runs_jobs = launcher.start("worker", ["app.worker"])
        services = [api, runs_jobs, launcher.start("migrator", ["app.migrator"])]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        await wait_healthy(client, api)
        yield Deployment(client=client, services=services, runs_jobs=runs_jobs)


async def create_job(client: httpx.AsyncClient, queue_name: str, **fields: Any) -> str:
    response = await client.post("/jobs", json={"queue_name": queue_name, "payload": {}, **fields})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def stop_all(services: list[Service]) -> dict[str, int]:
    """SIGTERM every process at once (as a deploy does); their exit codes by name."""
    for service in services:
        service.sigterm()
    return {s.name: await s.exit_code(timeout=EXIT_BOUND) for s in services}


async def attempts_logged(database_url: str, job_id: str) -> list[tuple[int, str]]:
    """The job's audit trail in job_logs: (attempt_number, status), in order."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT attempt_number, status FROM job_logs WHERE job_id = $1::uuid "
            "ORDER BY attempt_number, finished_at",
            job_id,
        )
        return [(r["attempt_number"], r["status"]) for r in rows]
    finally:
        await conn.close()


async def test_jobs_complete_retry_and_fail_then_sigterm_exits_0(
    deployment: Deployment, database_url: str
) -> None:
    client = deployment.client
    ok = await create_job(client, "t-ok")
    flaky = await create_job(client, "t-flaky")
    failing = await create_job(client, "t-fail", max_attempts=2)

    done = await wait_for_job(client, ok)
    assert done["status"] == "completed"
    assert done["attempt_count"] == 1
    assert done["completed_at"] is not None
    assert done["failed_at"] is None
    assert done["last_error_message"] is None
    # The job ran in the process meant to run it (worker ids embed the pid).
    assert f"-{deployment.runs_jobs.proc.pid}-" in done["worker_id"]

    retried = await wait_for_job(client, flaky)
    assert retried["status"] == "completed"
    assert retried["attempt_count"] == 2
    assert retried["last_error_message"] is None
    assert await attempts_logged(database_url, flaky) == [(1, "failed"), (2, "completed")]

    failed = await wait_for_job(client, failing)
    assert failed["status"] == "failed"
    assert failed["attempt_count"] == 2
    assert failed["failed_at"] is not None
    assert failed["completed_at"] is None
    assert failed["last_error_message"] == "RuntimeError: attempt 2 fails on purpose"
    assert await attempts_logged(database_url, failing) == [(1, "failed"), (2, "failed")]

    # The real-time state in Redis follows PostgreSQL's (written just after it).
    for job_id, status in ((ok, "completed"), (failing, "failed")):

        async def redis_agrees(job_id: str = job_id, status: str = status) -> bool | None:
            body = (await client.get(f"/jobs/{job_id}")).json()
            return True if body["redis_status"] == status else None

        await wait_until(redis_agrees, 5, f"redis_status {status} for {job_id}")

    assert await stop_all(deployment.services) == {s.name: 0 for s in deployment.services}


async def test_sigterm_lets_the_job_in_flight_complete_then_exits_0(
    deployment: Deployment, database_url: str
) -> None:
    client = deployment.client
    job_id = await create_job(client, "t-slow", payload={"seconds": 1.0})
    await wait_for_job(client, job_id, ("running",))

    stopped_at = datetime.now(UTC)
    codes = await stop_all(deployment.services)

    assert codes == {s.name: 0 for s in deployment.services}
    conn = await asyncpg.connect(database_url)
    try:
        job = await conn.fetchrow(
            "SELECT status, attempt_count, completed_at FROM jobs WHERE id = $1::uuid", job_id
        )
    finally:
        await conn.close()
    assert job is not None
    assert job["status"] == "completed"
    assert job["attempt_count"] == 1
    assert job["completed_at"] > stopped_at  # it really was in flight at the SIGTERM
    assert await attempts_logged(database_url, job_id) == [(1, "completed")]


@pytest.mark.parametrize("deployment", ["embedded"], indirect=True)
async def test_time_from_post_to_completed_as_a_polling_client_sees_it(
    deployment: Deployment,
) -> None:
    """Measured, not asserted: the median of 20 jobs run one after another."""
    client = deployment.client
    await wait_for_job(client, await create_job(client, "t-ok"))  # warm up the pools

    seen, stored = [], []
    for _ in range(20):
        started = time.perf_counter()
        job_id = await create_job(client, "t-ok")
        body = await wait_for_job(client, job_id, interval=0.001)
        seen.append(1000 * (time.perf_counter() - started))
        assert body["status"] == "completed"
        # The same span as PostgreSQL recorded it, without the client's HTTP round trips.
        created = datetime.fromisoformat(body["created_at"])
        stored.append(
            1000 * (datetime.fromisoformat(body["completed_at"]) - created).total_seconds()
        )

    print(
        f"\nPOST /jobs -> completed, as a client polling GET /jobs/{{id}} sees it, {len(seen)} "
        f"jobs: median {statistics.median(seen):.1f} ms (min {min(seen):.1f}, max "
        f"{max(seen):.1f}); created_at -> completed_at: median {statistics.median(stored):.1f} ms"
    )
    assert await stop_all(deployment.services) == {"api": 0}
