"""The handler of the chaos scenarios: records every execution (job id, attempt) in a
file per process, written before the work with an unbuffered O_APPEND write so that a
kill -9 cannot lose the record, then takes a little time so jobs are in flight."""

from __future__ import annotations

import asyncio
import os
import random

from app.registry import Job, handler

_fd: int | None = None


def _record(job: Job) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["CHAOS_RECORD_DIR"], f"{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{job.id} {job.attempt}\n".encode())


@handler("t-chaos", timeout=30)
async def chaos_job(job: Job) -> None:
    _record(job)
    if "sleep" in job.payload:
        await asyncio.sleep(float(job.payload["sleep"]))
        return
    mean = float(os.environ.get("CHAOS_HANDLER_SLEEP", "0.02"))
    await asyncio.sleep(random.uniform(0, 2 * mean))
