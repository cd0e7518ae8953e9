"""Everything the dashboard reads or changes, through the service's own stores and the
API's own action code: the one place that knows where data lives, so the pages do not.

Actions go through the same functions as the API (app.api.actions.apply_action and the
bulk replay of app.api.dead_letter), so they write the same job_logs rows, job hashes,
metrics and log lines, with the actor `key:<name>` of the session's API key.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

import orjson
from fastapi import HTTPException

from app.api.actions import apply_action
from app.api.dead_letters.routes import replay_dead_letters
from app.api.dead_letters.schemas import BulkReplayIn
from app.api.pagination import decode_time_id_cursor, page_of, time_id_cursor
from app.cluster import is_cluster
from app.crypto import MARKER
from app.dashboard import queries
from app.dashboard.history import WINDOWS, Bucket, Window, read_history
from app.db.rows import JobLogRow, JobRow, QueueRow
from app.keys import PRIORITY_LEVELS
from app.observe import redis_depths
from app.runtime import Runtime

log = logging.getLogger("hybridq.dashboard")

QUEUES_MAX = 1000  # queues shown; more than this is not a deployment we draw
LOGS_MAX = 500  # timeline rows shown on a job's page
PAGE_SIZE = 50
# Statuses counted per queue on the overview (terminal ones are shown as last-hour flow).
LIVE_STATUSES = ("migrated_to_redis", "running", "failed")

Action = Literal["replay", "discard", "cancel"]


@dataclass(slots=True)
class QueueSummary:
    name: str
    default_priority: int
    is_active: bool
    queued: int
    in_redis_jobs: int
    running: int
    failed: int
    depth: dict[str, int]
    oldest_due_age: float | None
    last_hour: dict[str, int]


@dataclass(slots=True)
class Overview:
    queues: list[QueueSummary]
    totals: dict[str, int]
    capped: set[str]  # statuses whose figures are lower bounds (cap reached)
    table_by_status: dict[str, int]
    table_exact: bool
    workers_live: int | None
    queued_cap: int
    redis_error: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadField:
    name: str
    text: str  # the value as indented JSON; "" when encrypted
    encrypted: bool


@dataclass(slots=True)
class JobView:
    job: JobRow
    payload: list[PayloadField]
    logs: list[JobLogRow]
    logs_truncated: bool
    redis_state: dict[str, str]
    actions: list[Action]


@dataclass(slots=True)
class WorkerView:
    id: str
    seconds_since_beat: float
    queues: list[str]
    concurrency: int | None
    jobs: list[queries.RunningJob] = field(default_factory=list)


@dataclass(slots=True)
class Workers:
    live: list[WorkerView]
    unattended: list[queries.RunningJob]  # running with no live worker (lease will expire)
    redis_error: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """An action's result: ok, or refused with the API's status code and message."""

    ok: bool
    status_code: int = 200
    message: str = ""


class BadInput(ValueError):
    """A filter or cursor the user typed is wrong: shown on the page, 422."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def allowed_actions(status: str) -> list[Action]:
    """The actions the API accepts for a job in `status`."""
    if status == "failed":
        return ["replay", "discard"]
    if status in ("scheduled", "queued", "migrated_to_redis"):
        return ["cancel"]
    return []


def payload_fields(payload: dict[str, Any]) -> list[PayloadField]:
    """Top-level payload fields as JSON text; an encrypted one is only marked as such:
    its token never reaches the browser."""
    out = []
    for name, value in payload.items():
        if isinstance(value, dict) and set(value) == {MARKER}:
            out.append(PayloadField(name, "", True))
        else:
            out.append(
                PayloadField(name, orjson.dumps(value, option=orjson.OPT_INDENT_2).decode(), False)
            )
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


class DashboardData:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # --- overview -------------------------------------------------------------------

    async def queue_rows(self) -> list[QueueRow]:
        return await self.rt.queues.list_queues(after=None, limit=QUEUES_MAX)

    async def overview(self) -> Overview:
        rows = await self.queue_rows()
        names = [q.name for q in rows]
        pool = self.rt.pool
        # Independent reads, each on its own pooled connection: the page waits for the
        # slowest, not for their sum.
        (queued, migrated, running, failed, ages, table), live = await asyncio.gather(
            asyncio.gather(
                queries.queued_per_queue(pool, names),
                queries.status_by_queue(pool, "migrated_to_redis"),
                queries.status_by_queue(pool, "running"),
                queries.status_by_queue(pool, "failed"),
                self.rt.listings.oldest_due_ages(names),
                self._table_by_status(),
            ),
            self._redis_overview(names),
        )
        per_status = dict(zip(LIVE_STATUSES, (migrated, running, failed), strict=True))
        depths, hour, workers_live, redis_error = live
        summaries = []
        for q in rows:
            summaries.append(
                QueueSummary(
                    name=q.name,
                    default_priority=q.default_priority,
                    is_active=q.is_active,
                    queued=queued.get(q.name, 0),
                    in_redis_jobs=per_status["migrated_to_redis"].by_queue.get(q.name, 0),
                    running=per_status["running"].by_queue.get(q.name, 0),
                    failed=per_status["failed"].by_queue.get(q.name, 0),
                    depth=depths.get(q.name, dict.fromkeys(PRIORITY_LEVELS, 0)),
                    oldest_due_age=ages.get(q.name),
                    last_hour={
                        c: sum(b.total(c, q.name) for b in hour)
                        for c in ("created", "completed", "failed", "dead_lettered")
                    },
                )
            )
        totals = {
            "queued": sum(s.queued for s in summaries),
            "in_redis": sum(sum(s.depth.values()) for s in summaries),
            "running": sum(s.running for s in summaries),
            "failed": sum(s.failed for s in summaries),
        }
        for counter in ("created", "completed", "failed", "dead_lettered"):
            totals[f"{counter}_hour"] = sum(s.last_hour[counter] for s in summaries)
        capped = {s for s, c in per_status.items() if c.capped}
        if any(n > queries.QUEUED_CAP for n in queued.values()):
            capped.add("queued")
        return Overview(
            queues=summaries,
            totals=totals,
            capped=capped,
            table_by_status=table[0],
            table_exact=table[1],
            workers_live=workers_live,
            queued_cap=queries.QUEUED_CAP,
            redis_error=redis_error,
        )

    async def _redis_overview(
        self, names: list[str]
    ) -> tuple[dict[str, dict[str, int]], list[Bucket], int | None, str | None]:
        """Redis depths, the last hour's history and live workers; with Redis down,
        nothing of them and the error (PostgreSQL's figures still stand)."""
        redis, keys = self.rt.redis, self.rt.keys
        try:
            since = time.time() - self.rt.settings.visibility_timeout
            depths, hour, live = await asyncio.gather(
                redis_depths(redis, keys, names),
                read_history(redis, keys, WINDOWS["hour"]),
                redis.zcount(keys.workers_index(), since, "+inf"),
            )
        except Exception as exc:
            return {}, [], None, _error(exc)
        return depths, hour, int(live), None

    async def _table_by_status(self) -> tuple[dict[str, int], bool]:
        """Jobs by status in the whole table: exact while the table is small (the
        process's shared snapshot, app.counts_cache), else the planner's estimates (as of
        the last ANALYZE)."""
        if await queries.table_rows_estimate(self.rt.pool) >= queries.EXACT_TOTALS_BELOW:
            return await queries.estimate_by_status(self.rt.pool), False
        counts = (await self.rt.counts.get()).counts
        return counts.by_status, counts.exact

    # --- charts ---------------------------------------------------------------------

    async def history(self, window: Window) -> list[Bucket]:
        return await read_history(self.rt.redis, self.rt.keys, window)

    # --- jobs -----------------------------------------------------------------------

    async def jobs(
        self,
        *,
        queue_name: str | None,
        status: str | None,
        created_from: datetime | None,
        created_to: datetime | None,
        cursor: str | None,
    ) -> tuple[list[JobRow], str | None]:
        rows = await self.rt.listings.list_jobs(
            queue_name=queue_name,
            status=status,
            created_from=created_from,
            created_to=created_to,
            after=self._cursor(cursor),
            limit=PAGE_SIZE + 1,
        )
        items, last = page_of(rows, PAGE_SIZE)
        return items, time_id_cursor(last.created_at, last.id) if last else None

    @staticmethod
    def _cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
        try:
            return decode_time_id_cursor(cursor or None)
        except Exception as exc:  # the API's FieldError
            raise BadInput(
                "cursor", "not a cursor of this list: start from the first page"
            ) from exc

    async def job(self, job_id: uuid.UUID) -> JobView | None:
        job = await self.rt.store.get_job(job_id)
        if job is None:
            return None
        logs = await self.rt.listings.list_job_logs(job_id, after=None, limit=LOGS_MAX + 1) or []
        try:
            raw = await self.rt.redis.hgetall(self.rt.keys.job(str(job_id)))
            state = {_text(k): _text(v) for k, v in raw.items()}
        except Exception:
            state = {}  # Redis is a cache here
        return JobView(
            job=job,
            payload=payload_fields(job.payload),
            logs=logs[:LOGS_MAX],
            logs_truncated=len(logs) > LOGS_MAX,
            redis_state=state,
            actions=allowed_actions(job.status),
        )

    # --- dead letters -----------------------------------------------------------------

    async def dead_letters(
        self, *, queue_name: str | None, cursor: str | None
    ) -> tuple[list[JobRow], str | None]:
        rows = await self.rt.listings.list_dead_letters(
            queue_name=queue_name,
            failed_since=None,
            after=self._cursor(cursor),
            limit=PAGE_SIZE + 1,
        )
        items, last = page_of(rows, PAGE_SIZE)
        if last is None or last.failed_at is None:
            return items, None
        return items, time_id_cursor(last.failed_at, last.id)

    async def dead_letter_count(self, queue_name: str) -> int:
        """Failed jobs of the queue, at most DEAD_LETTERS_CAP + 1."""
        return await queries.dead_letters_in_queue(self.rt.pool, queue_name)

    # --- workers --------------------------------------------------------------------

    async def workers(self) -> Workers:
        running = await queries.running_jobs(self.rt.pool)
        redis, keys = self.rt.redis, self.rt.keys
        live: list[WorkerView] = []
        try:
            now = time.time()
            since = now - self.rt.settings.visibility_timeout
            # (member, score) pairs with withscores; redis-py's annotation is a union.
            entries = cast(
                list[tuple[bytes, float]],
                await redis.zrangebyscore(
                    keys.workers_index(), since, "+inf", start=0, num=QUEUES_MAX, withscores=True
                ),
            )
            ids = [_text(member) for member, _ in entries]
            names = [keys.worker_heartbeat(i) for i in ids]
            beats = await _mget(redis, names) if ids else []
            for worker_id, (_, score), beat in zip(ids, entries, beats, strict=True):
                info = _beat_info(beat)
                live.append(
                    WorkerView(
                        id=worker_id,
                        seconds_since_beat=max(0.0, now - float(score)),
                        queues=list(info.get("queues", [])),
                        concurrency=info.get("concurrency"),
                    )
                )
        except Exception as exc:
            return Workers(live=[], unattended=running, redis_error=_error(exc))
        by_id = {w.id: w for w in live}
        unattended = []
        for job in running:
            worker = by_id.get(job.worker_id or "")
            if worker is None:
                unattended.append(job)
            else:
                worker.jobs.append(job)
        return Workers(live=live, unattended=unattended)

    # --- actions --------------------------------------------------------------------

    async def act(self, action: Action, job_id: uuid.UUID, actor: str) -> Outcome:
        reason = {
            "replay": "replayed from the dashboard",
            "discard": "discarded from the dashboard",
            "cancel": "cancelled from the dashboard",
        }[action]
        try:
            await apply_action(self.rt, action, job_id, reason=reason, actor=actor)
        except HTTPException as exc:  # 404 or 409, with the API's own message
            return Outcome(False, exc.status_code, str(exc.detail))
        return Outcome(True)

    async def replay_all(self, queue_name: str, actor: str) -> int:
        body = BulkReplayIn(queue_name=queue_name, reason="replayed from the dashboard (all)")
        result = await replay_dead_letters(body, self.rt, actor)
        return result.replayed

    async def update_queue(
        self, name: str, *, is_active: bool | None = None, default_priority: int | None = None
    ) -> QueueRow | None:
        return await self.rt.queues.update_queue(name, default_priority, is_active)


def _beat_info(beat: bytes | str | None) -> dict[str, Any]:
    """The heartbeat's value: JSON with queues and concurrency (older workers wrote a
    bare timestamp: nothing to show then)."""
    if beat is None:
        return {}
    try:
        info = orjson.loads(beat)
    except orjson.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


async def _mget(redis: Any, names: list[str]) -> list[Any]:
    """MGET; on a Redis Cluster one per shard (the keys are in different slots)."""
    if is_cluster(redis):
        return list(await redis.mget_nonatomic(names))
    return list(await redis.mget(names))
