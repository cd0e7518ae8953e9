"""Handlers for the browser tests (HANDLER_MODULES), beside tests/support/handlers.py."""

from __future__ import annotations

import os

from app.registry import Job, handler


@handler("t-switch")
def fails_while_the_flag_file_exists(job: Job) -> None:  # sync: runs in a thread
    """Fails, with the payload's message, for as long as the file it names exists: a
    test spends the attempts, fixes the "outage" by removing the file, then replays."""
    flag = job.payload.get("flag")
    if isinstance(flag, str) and os.path.exists(flag):
        raise RuntimeError(str(job.payload.get("message", "switched off")))
