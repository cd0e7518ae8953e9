"""The job state machine in one table: every status a job can have, and every change of
status, with who makes it and the one statement that makes it.

`jobs.status` in PostgreSQL is the truth. Every transition below is a single
conditional statement (`WHERE ... AND status = <expected>`), so two actors can never
both win. tests/integration/test_transitions.py runs each statement against a job in
every status and fails if it makes a change this table does not list, or if a
statement that writes `jobs.status` is missing here; the README's lifecycle table is
`lifecycle_markdown()` (a test keeps the two equal).

`None` as a source is a job that does not exist yet; as a target, one that is gone.
A job written `queued` with a later run_at is stored `scheduled` (a trigger): a retry,
a snooze or a stall's spread delay lands in `scheduled`, and in `queued` only when it is
due at once (a zero delay), which the table does not list twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from app.jobs.model import JobStatus

JOB_STATUSES: Final[tuple[JobStatus, ...]] = (
    "queued",
    "migrated_to_redis",
    "running",
    "completed",
    "failed",
    "cancelled",
    "discarded",
    "scheduled",
)
# `scheduled` is a job not yet due (run_at in the future): a trigger on `jobs`
# (migration 0005) turns a row written as `queued` with a future run_at into `scheduled`,
# whichever statement writes it, so `queued` always means due. The migrator promotes it.
# `failed` is the dead-letter state; an operator may replay it (-> queued) or discard it
# (-> `discarded`, kept for the record until retention deletes it).
TERMINAL_STATUSES: Final[tuple[JobStatus, ...]] = ("completed", "failed", "cancelled", "discarded")

Actor = Literal["producer", "migrator", "worker", "maintenance", "operator"]


@dataclass(frozen=True, slots=True)
class Transition:
    source: JobStatus | None
    target: JobStatus | None
    actor: Actor
    statement: str  # "module:NAME" of the SQL constant under app.db
    when: str


def _t(
    source: JobStatus | None, target: JobStatus | None, actor: Actor, statement: str, when: str
) -> Transition:
    return Transition(source, target, actor, statement, when)


TRANSITIONS: Final = (
    _t(None, "queued", "producer", "inserts:INSERT_ONE_JOB", "a job is created (one)"),
    _t(None, "queued", "producer", "inserts:INSERT_JOBS", "jobs are created (a batch)"),
    _t(None, "queued", "producer", "inserts:INSERT_KEYED_JOBS", "created with idempotency keys"),
    _t(None, "queued", "maintenance", "schedules:FIRE_TICK", "a schedule's tick is due"),
    _t(None, "scheduled", "producer", "inserts:INSERT_ONE_JOB", "created, run_at in the future"),
    _t(None, "scheduled", "producer", "inserts:INSERT_JOBS", "created, run_at in the future"),
    _t(
        None,
        "scheduled",
        "producer",
        "inserts:INSERT_KEYED_JOBS",
        "created with keys, run_at in the future",
    ),
    _t(
        None,
        "migrated_to_redis",
        "producer",
        "inserts:INSERT_ONE_JOB",
        "created due now in a queue without limits: pushed by its producer (app.direct)",
    ),
    _t(
        None,
        "migrated_to_redis",
        "producer",
        "inserts:INSERT_JOBS",
        "created due now in a queue without limits: pushed by its producer (app.direct)",
    ),
    _t(
        None,
        "migrated_to_redis",
        "producer",
        "inserts:INSERT_KEYED_JOBS",
        "created with keys, due now, no limits: pushed by its producer (app.direct)",
    ),
    _t("scheduled", "queued", "migrator", "hot:PROMOTE_DUE_JOBS", "its run_at has come"),
    _t("queued", "migrated_to_redis", "migrator", "hot:MOVE_DUE_JOBS", "due: pushed to Redis"),
    _t(
        "queued",
        "migrated_to_redis",
        "migrator",
        "limits:MOVE_LIMITED_JOBS",
        "due, within the queue's limits",
    ),
    _t(
        "queued",
        "migrated_to_redis",
        "migrator",
        "limits:MOVE_KEYED_JOBS",
        "due, within the limits and its key's",
    ),
    _t("migrated_to_redis", "running", "worker", "hot:CLAIM_JOBS", "popped and claimed"),
    _t("running", "completed", "worker", "hot:COMPLETE_JOBS", "the handler returned"),
    _t("running", "scheduled", "worker", "hot:FAIL_JOBS", "attempt failed, attempts left"),
    _t("running", "failed", "worker", "hot:FAIL_JOBS", "attempt failed, none left"),
    _t("running", "queued", "worker", "hot:RELEASE_JOBS", "handed back on shutdown"),
    _t(
        "running",
        "failed",
        "worker",
        "outcomes:PERMANENT_FAIL_JOBS",
        "the handler raised PermanentFailure",
    ),
    _t("running", "scheduled", "worker", "outcomes:SNOOZE_JOBS", "the handler snoozed"),
    _t("running", "cancelled", "worker", "outcomes:CANCEL_RUNNING_JOBS", "stopped on a cancel"),
    _t("running", "failed", "worker", "outcomes:SNOOZE_JOBS", "snoozed past MAX_SNOOZES"),
    _t(
        "running",
        "scheduled",
        "maintenance",
        "recovery:RESCUE_EXPIRED_LEASES",
        "lease expired: a stall, attempt not spent",
    ),
    _t(
        "running",
        "failed",
        "maintenance",
        "recovery:RESCUE_EXPIRED_LEASES",
        "stalled MAX_STALLS times: a poison pill",
    ),
    _t(
        "migrated_to_redis",
        "queued",
        "maintenance",
        "recovery:REQUEUE_MIGRATED_BEFORE",
        "Redis lost its data",
    ),
    _t(
        "migrated_to_redis",
        "queued",
        "maintenance",
        "recovery:REQUEUE_QUEUES_MIGRATED_BEFORE",
        "a Redis Cluster shard lost its data",
    ),
    _t("failed", "queued", "operator", "actions:REPLAY_JOB", "replay of one dead letter"),
    _t("failed", "queued", "operator", "actions:REPLAY_DEAD_LETTERS", "replay of a queue's"),
    _t("failed", "discarded", "operator", "actions:DISCARD_JOB", "discard of a dead letter"),
    _t("queued", "cancelled", "operator", "actions:CANCEL_JOB", "cancel before it is moved"),
    _t("migrated_to_redis", "cancelled", "operator", "actions:CANCEL_JOB", "cancel before a claim"),
    _t(
        "running",
        "cancelled",
        "maintenance",
        "cancels:CANCEL_ABANDONED",
        "cancel asked, its worker died",
    ),
    _t(
        "queued",
        "cancelled",
        "maintenance",
        "cancels:CANCEL_ABANDONED",
        "cancel asked, handed back",
    ),
    _t(
        "migrated_to_redis",
        "cancelled",
        "maintenance",
        "cancels:CANCEL_ABANDONED",
        "cancel asked, handed back, moved",
    ),
    _t("scheduled", "cancelled", "operator", "actions:CANCEL_JOB", "cancel before it is due"),
    _t("completed", None, "maintenance", "retention:DELETE_OLD_JOBS", "past RETENTION_COMPLETED"),
    _t("cancelled", None, "maintenance", "retention:DELETE_OLD_JOBS", "past RETENTION_COMPLETED"),
    _t("failed", None, "maintenance", "retention:DELETE_OLD_JOBS", "past RETENTION_FAILED"),
    _t("discarded", None, "maintenance", "retention:DELETE_OLD_JOBS", "past RETENTION_FAILED"),
)


# Statements that write `jobs` without changing a status (the test checks they do not).
STATUS_PRESERVING: Final = {
    "hot:RENEW_LEASES": "extends the leases a worker still holds",
    "inserts:RELEASE_EXPIRED_KEYS": "unbinds idempotency keys past their window",
    "cancels:REQUEST_CANCEL": "records a cancel of a running job for its worker",
}


def transitions_of(statement: str) -> list[Transition]:
    return [t for t in TRANSITIONS if t.statement == statement]


def lifecycle_markdown() -> str:
    """The table of TRANSITIONS as the README shows it."""
    lines = [
        "| From | To | By | When | Statement (`app/db/`) |",
        "|---|---|---|---|---|",
    ]
    for t in TRANSITIONS:
        module, name = t.statement.split(":")
        lines.append(
            f"| {t.source or '(new)'} | {t.target or '(deleted)'} | {t.actor} | {t.when} "
            f"| `{module}.py` `{name}` |"
        )
    return "\n".join(lines) + "\n"
