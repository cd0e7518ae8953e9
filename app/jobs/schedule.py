"""What a periodic job's schedule is: a cron expression read in a time zone, and the
ticks it makes. The expression is read by cronsim (Debian cron's semantics, including
its behaviour across DST changes: a daily time that falls in a skipped hour runs once
just after the gap, one in a repeated hour runs once, at its first occurrence); the time
zones are the IANA database's (zoneinfo). Every tick is an aware datetime in UTC.

cronsim and zoneinfo are imported where a schedule is read, not with this module: a
worker or migrator process that has no schedule never loads them (its memory).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

CRON_MAX = 200
SCHEDULE_NAME_MAX = 100
# cronsim reads 5 fields (minute hour day month weekday), or 6 with seconds first.
CRON_FIELDS = (5, 6)


def check_cron(expression: str) -> str:
    """The expression, stripped, or ValueError saying what is wrong with it."""
    expression = " ".join(expression.split())
    if not expression or len(expression) > CRON_MAX:
        raise ValueError(f"a cron expression is 1-{CRON_MAX} characters")
    if len(expression.split(" ")) not in CRON_FIELDS:
        raise ValueError(
            "a cron expression has 5 fields (minute hour day month weekday), or 6 with "
            "seconds first"
        )
    from cronsim import CronSim, CronSimError

    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression: {exc}") from None
    return expression


def check_timezone(name: str) -> str:
    """The IANA time zone name, or ValueError if there is no such zone."""
    from zoneinfo import ZoneInfoNotFoundError

    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)") from None
    return name


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    from zoneinfo import ZoneInfo

    if not name or len(name) > 100:
        raise ValueError("time zone name")
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression in a time zone."""

    expression: str
    timezone: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expression", check_cron(self.expression))
        check_timezone(self.timezone)
        object.__setattr__(self, "_zone", zone(self.timezone))

    def latest(self, now: datetime) -> datetime | None:
        """The last tick at or before `now` (UTC), None if there is none in 50 years."""
        from cronsim import CronSim

        local = now.astimezone(self._zone)
        # cronsim's reverse walk starts strictly before its start, at whole seconds.
        start = local.replace(microsecond=0) + timedelta(seconds=1)
        return _first(CronSim(self.expression, start, reverse=True))

    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after `moment` (UTC)."""
        from cronsim import CronSim

        local = moment.astimezone(self._zone).replace(microsecond=0)
        return _first(CronSim(self.expression, local))


def _first(ticks: Any) -> datetime | None:
    try:
        tick: datetime = next(ticks)
    except StopIteration:
        return None
    return tick.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule declared in code (`@handler(..., cron=...)` or `periodic`): each tick
    of `cron` creates one job of `queue_name` with this payload."""

    name: str
    queue_name: str
    cron: Cron
    payload: dict[str, Any]
    priority: int | None = None  # None: the queue's default_priority
    max_attempts: int = 3
