"""Logging set-up shared by the entrypoints: text or JSON lines, with the job's context.

While a worker runs or records a job, `job_context` holds its id, queue, attempt and
worker id; a filter on the handler adds them to every record, so each line about a job
says which one, whichever module (or user handler) wrote it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("job_id", "queue", "attempt", "worker_id")


@dataclass(frozen=True, slots=True)
class JobContext:
    job_id: str
    queue: str | None = None
    attempt: int | None = None
    worker_id: str | None = None


job_context: ContextVar[JobContext | None] = ContextVar("hybridq_job_context", default=None)


def set_job_context(
    job_id: uuid.UUID | str,
    queue: str | None = None,
    attempt: int | None = None,
    worker_id: str | None = None,
) -> None:
    """Bind a job to the current context (a job's own task: it ends with the task)."""
    job_context.set(JobContext(str(job_id), queue, attempt, worker_id))


@contextlib.contextmanager
def bound_job(
    job_id: uuid.UUID | str,
    queue: str | None = None,
    attempt: int | None = None,
    worker_id: str | None = None,
) -> Iterator[None]:
    """Bind a job for the lines logged inside the block only."""
    token = job_context.set(JobContext(str(job_id), queue, attempt, worker_id))
    try:
        yield
    finally:
        job_context.reset(token)


class JobContextFilter(logging.Filter):
    """Adds job_id, queue, attempt and worker_id (None outside a job) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = job_context.get()
        for name in CONTEXT_FIELDS:
            value = getattr(ctx, name) if ctx is not None else None
            if value is not None or not hasattr(record, name):
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """The classic line, followed by the job's context when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        parts = [
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        ]
        return f"{line} [{' '.join(parts)}]" if parts else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job's context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def make_handler(fmt: str = "text", stream: Any = None) -> logging.Handler:
    """A stream handler with the job-context filter and the chosen format."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Root logging for a process: LOG_LEVEL, and LOG_FORMAT `text` or `json`."""
    logging.basicConfig(level=level.upper(), handlers=[make_handler(fmt)], force=True)
