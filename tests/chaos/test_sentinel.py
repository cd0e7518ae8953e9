"""Redis Sentinel: the primary is killed (-9) while 3,000 jobs flow through the API (with
its embedded migrator) and two workers; Sentinel promotes the replica and every process
follows it without a restart. Every job completes, none twice."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.support.chaos import Cluster, wait_until
from tests.support.sentinels import MASTER, SentinelGroup
from tests.support.servers import free_port

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

N = 3000


async def test_a_sentinel_failover_loses_no_job(
    database_url: str, clean_db: None, tmp_path: Path
) -> None:
    with SentinelGroup() as group:
        assert group.replica is not None
        cluster = Cluster(
            database_url,
            group.primary.url,
            tmp_path,
            extra_env={"REDIS_SENTINELS": group.addresses, "REDIS_SENTINEL_MASTER": MASTER},
        )
        try:
            ids, started = await cluster.start_jobs(N, api_port=free_port(), workers=2)
            await cluster.wait_completed(N // 3, timeout=60)
            before = await cluster.count_completed()
            group.primary.stop()  # kill -9
            killed = time.monotonic()
            cluster.fault("kill -9 the Redis primary")
            replica = group.replica.port
            await wait_until(_promoted(group, replica), 30, "Sentinel to promote the replica")
            await cluster.wait_completed(before + 50, timeout=60)
            recovered = time.monotonic() - killed
            cluster.redis_url = group.replica.url  # the new primary, for verify()
            report = await cluster.finish(ids, started, "sentinel failover")
            print(f"[sentinel failover] jobs flowing again {recovered:.1f}s after the kill")
            assert report.lost == 0 and report.completed_twice == 0
        finally:
            cluster.stop_all()


def _promoted(group: SentinelGroup, port: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return group.master_port() == port

    return check
