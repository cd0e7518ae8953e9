"""Handlers: one per queue, registered with a decorator from the user's own modules.

    from app.registry import handler, Job

    @handler("email-sending", timeout=30)
    async def send_email(job: Job) -> None:
        ...

A handler may be `async def` or a plain function (run in a thread so it cannot block the
event loop). With `cron=` (and `timezone=`, `payload=`) the queue also gets a periodic
job: each tick creates one job (see app.jobs.schedule); `periodic` declares more. An
exception fails the attempt; so does running past the timeout. Delivery is at least
once: use `job.id` and `job.attempt` to make the handler idempotent.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from app.jobs.schedule import SCHEDULE_NAME_MAX, Cron, ScheduleSpec

if TYPE_CHECKING:
    # Only a handler module that declares a payload model loads pydantic: a worker
    # whose handlers declare none does not (its memory).
    from pydantic import BaseModel

QUEUE_NAME_MAX = 100
# Seconds each shutdown hook may take before the process goes on closing without it.
SHUTDOWN_HOOK_TIMEOUT = 10.0

log = logging.getLogger("hybridq.registry")
ShutdownHook = Callable[[], Awaitable[None]]


class CancelFlag:
    """Raised by the worker when the job is cancelled while it runs; read by the
    handler, possibly from its thread (one attribute write: atomic, and far cheaper to
    make per job than a threading.Event)."""

    __slots__ = ("requested",)

    def __init__(self) -> None:
        self.requested = False


@dataclass(frozen=True, slots=True)
class Job:
    """What a handler receives."""

    id: uuid.UUID
    queue_name: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    priority: int
    # Set by the worker when the job is cancelled while it runs (POST /jobs/{id}/cancel).
    cancel_flag: CancelFlag = field(default_factory=CancelFlag, repr=False, compare=False)

    @property
    def cancel_requested(self) -> bool:
        """True once the job was asked to stop: a sync handler should check it and
        return; an async handler is cancelled (asyncio.CancelledError) instead."""
        return self.cancel_flag.requested


HandlerFunc = Callable[[Job], Awaitable[Any]] | Callable[[Job], Any]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Handler:
    queue_name: str
    func: Callable[[Job], Any]
    timeout: float | None
    is_async: bool
    payload_model: type[BaseModel] | None = None


class HandlerRegistry:
    """Maps queue names to handlers."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._schedules: dict[str, ScheduleSpec] = {}
        self._on_shutdown: list[ShutdownHook] = []

    def handler(
        self,
        queue_name: str,
        *,
        timeout: float | None = None,
        payload_model: type[BaseModel] | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        payload: dict[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Decorator: register `func` as the handler of `queue_name`.

        `timeout` (seconds) overrides the HANDLER_TIMEOUT setting for this queue.
        `payload_model` (a pydantic model) is the queue's payload schema: a job whose
        payload does not match it is rejected when it is created (422), not discovered
        by a worker later. `cron` (read in `timezone`) makes the queue periodic: a
        schedule named after the queue creates one job with `payload` per tick.
        """
        validate_queue_name(queue_name)
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        if cron is not None:
            self.periodic(queue_name, queue_name, cron=cron, timezone=timezone, payload=payload)

        def register(func: F) -> F:
            existing = self._handlers.get(queue_name)
            if existing is not None and existing.func is not func:
                raise ValueError(f"queue {queue_name!r} already has a handler: {existing.func!r}")
            self._handlers[queue_name] = Handler(
                queue_name=queue_name,
                func=func,
                timeout=timeout,
                is_async=inspect.iscoroutinefunction(func),
                payload_model=payload_model,
            )
            return func

        return register

    def periodic(
        self,
        name: str,
        queue_name: str,
        *,
        cron: str,
        timezone: str = "UTC",
        payload: dict[str, Any] | None = None,
        priority: int | None = None,
        max_attempts: int = 3,
    ) -> None:
        """Declare a schedule in code: each tick of `cron` (read in `timezone`) creates
        one job of `queue_name`. Every process stores its declarations at start (the
        schedule `name` is updated if it changed); ValueError names a bad argument."""
        validate_queue_name(queue_name)
        if not name or len(name) > SCHEDULE_NAME_MAX or any(c.isspace() for c in name):
            raise ValueError(f"schedule name must be 1-{SCHEDULE_NAME_MAX} characters, no spaces")
        spec = ScheduleSpec(
            name=name,
            queue_name=queue_name,
            cron=Cron(cron, timezone),
            payload=dict(payload or {}),
            priority=priority,
            max_attempts=max_attempts,
        )
        existing = self._schedules.get(name)
        if existing is not None and existing != spec:
            raise ValueError(f"schedule {name!r} is already declared differently")
        self._schedules[name] = spec

    def on_shutdown(self, hook: ShutdownHook) -> ShutdownHook:
        """Decorator: await `hook` (an async function of no arguments) when the process's
        services have stopped, in their event loop, before the service closes its own
        pools: to close what handlers opened for themselves (a pool, a client). Each hook
        runs once per stop, even if another failed, for at most SHUTDOWN_HOOK_TIMEOUT s."""
        if not inspect.iscoroutinefunction(hook):
            raise TypeError(f"a shutdown hook must be an async function: {hook!r}")
        if hook not in self._on_shutdown:
            self._on_shutdown.append(hook)
        return hook

    async def shut_down(self) -> None:
        """Await every shutdown hook, in the order they were registered; a failure or a
        timeout is logged, and the next hook runs."""
        for hook in self._on_shutdown:
            try:
                await asyncio.wait_for(hook(), SHUTDOWN_HOOK_TIMEOUT)
            except Exception:
                log.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))

    def schedules(self) -> list[ScheduleSpec]:
        """The schedules declared in code."""
        return [self._schedules[n] for n in sorted(self._schedules)]

    def get(self, queue_name: str) -> Handler | None:
        return self._handlers.get(queue_name)

    def queue_names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, queue_name: object) -> bool:
        return queue_name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


def validate_queue_name(name: str) -> None:
    """Queue names are 1-100 printable characters without whitespace."""
    if not name or len(name) > QUEUE_NAME_MAX:
        raise ValueError(f"queue name must be 1-{QUEUE_NAME_MAX} characters")
    if any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError("queue name must not contain whitespace or control characters")


# The registry the `handler` decorator fills; the app and entrypoints read it after
# importing HANDLER_MODULES.
default_registry = HandlerRegistry()
handler = default_registry.handler
periodic = default_registry.periodic
on_shutdown = default_registry.on_shutdown


def load_handler_modules(modules: Iterable[str]) -> None:
    """Import each module so that its decorators register handlers."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise RuntimeError(f"HANDLER_MODULES: cannot import {name!r}: {exc}") from exc
