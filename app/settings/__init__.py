"""Service settings, read from environment variables (and an optional `.env` file).

Every setting is documented in the README; the environment variable is the field name in
upper case (read case-insensitively). Settings are built by the app factory and the
entrypoints, never at import:

    Settings()                       # the environment (and .env), validated
    Settings(worker_concurrency=8)   # the same with overrides, validated as a whole
    settings.replace(max_snoozes=2)  # a validated copy (the environment is not read again)

An invalid value raises SettingsError naming the variable. msgspec validates them, not
pydantic (app.settings.env): a worker or migrator process never loads pydantic.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from app.settings.env import InvalidSetting, SecretStr, SettingField, SettingsError
from app.settings.env import setting_fields as _fields_of
from app.settings.handlers import HandlerSettings

__all__ = ["SecretStr", "SettingField", "Settings", "SettingsError", "setting_fields"]


class Settings(HandlerSettings, kw_only=True):
    """All knobs of the service (those of the seed's handlers: HandlerSettings). Invalid
    values stop start-up with a clear message."""

    # Connections
    database_url: Annotated[
        str, Meta(description="PostgreSQL DSN (postgresql://user:password@host:port/database).")
    ] = "postgresql://postgres@127.0.0.1:5432/hybridq"
    redis_url: Annotated[str, Meta(description="Redis URL, with DB number.")] = (
        "redis://127.0.0.1:6379/0"
    )
    redis_sentinels: Annotated[
        list[str],
        Meta(
            description="Comma-separated host:port of Redis Sentinels; when set, the primary "
            "is found through them (and followed across a failover) instead of REDIS_URL's "
            "host, whose database number, user and password still apply."
        ),
    ] = msgspec.field(default_factory=list)
    redis_sentinel_master: Annotated[
        str, Meta(min_length=1, description="The name the Sentinels monitor the primary by.")
    ] = "mymaster"
    redis_sentinel_password: Annotated[
        str,
        Meta(description="Password of the Sentinels themselves (not of the primary); empty: none."),
    ] = ""
    redis_cluster: Annotated[
        bool,
        Meta(
            description="REDIS_URL is one node of a Redis Cluster (also implied by a "
            "redis+cluster:// or rediss+cluster:// URL); the client finds the others."
        ),
    ] = False
    redis_prefix: Annotated[
        str,
        Meta(description="Prefix of every Redis key, so tenants and test runs can share a server."),
    ] = "hq:"
    db_pool_min_size: Annotated[
        int, Meta(ge=1, description="Connections a process keeps open.")
    ] = 2
    db_pool_max_size: Annotated[
        int, Meta(ge=1, description="Most connections a process opens.")
    ] = 10
    db_command_timeout: Annotated[
        float, Meta(gt=0, description="Seconds before a PostgreSQL statement or connect gives up.")
    ] = 10.0
    redis_timeout: Annotated[
        float, Meta(gt=0, description="Seconds before a Redis call gives up.")
    ] = 5.0

    # Handlers
    handler_modules: Annotated[
        list[str],
        Meta(description="Comma-separated import paths of modules that register handlers."),
    ] = msgspec.field(default_factory=lambda: ["app.handlers"])
    handler_timeout: Annotated[
        float, Meta(gt=0, description="Default seconds a handler may run before its attempt fails.")
    ] = 300.0

    # What the API process embeds
    embed_migrator: Annotated[
        bool, Meta(description="Run the migrator inside the API process.")
    ] = True
    embed_worker: Annotated[bool, Meta(description="Run a worker inside the API process.")] = True

    # Worker
    worker_queues: Annotated[
        list[str],
        Meta(
            description="Queues a worker serves (comma-separated); empty means every "
            "registered one."
        ),
    ] = msgspec.field(default_factory=list)
    worker_concurrency: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="Jobs run at once per worker (async handlers; sync "
            "ones get a thread pool of this size).",
        ),
    ] = 50
    worker_fetch_timeout: Annotated[
        float,
        Meta(gt=0, le=30, description="Seconds a blocking Redis pop waits before looking again."),
    ] = 1.0
    visibility_timeout: Annotated[
        float, Meta(gt=0, description="Lease of a claimed job; renewed by heartbeat while it runs.")
    ] = 30.0
    shutdown_grace_period: Annotated[
        float, Meta(ge=0, description="Seconds in-flight jobs get to finish on shutdown.")
    ] = 30.0
    cancel_wait: Annotated[
        float,
        Meta(
            ge=0,
            le=60,
            description="Seconds POST /jobs/{id}/cancel of a running job waits for its worker "
            "to stop it before answering 202 (request recorded).",
        ),
    ] = 2.0
    max_snoozes: Annotated[
        int,
        Meta(
            ge=0, description="Times a handler may snooze a job (Snooze); one more snooze fails it."
        ),
    ] = 25

    # Retries
    backoff_base: Annotated[
        float, Meta(gt=0, description="First retry delay in seconds (2, 4, 8 …).")
    ] = 2.0
    backoff_max: Annotated[float, Meta(gt=0, description="Cap of the retry delay in seconds.")] = (
        3600.0
    )
    backoff_jitter: Annotated[
        float, Meta(ge=0, le=1, description="Fraction of the delay added or removed at random.")
    ] = 0.1

    # Migrator
    migrator_batch_size: Annotated[
        int, Meta(ge=1, le=10_000, description="Jobs moved per transaction and Redis pipeline.")
    ] = 500
    migrator_poll_interval: Annotated[
        float, Meta(gt=0, description="Longest sleep of the migrator when no job wakes it.")
    ] = 5.0
    direct_push: Annotated[
        bool,
        Meta(
            description="Jobs created due now, in an active queue without limits, are pushed "
            "to Redis by the API (or JobClient) right after their commit instead of by the "
            "migrator: lower latency; a crash before the push costs VISIBILITY_TIMEOUT."
        ),
    ] = True
    redis_queue_max_depth: Annotated[
        int, Meta(ge=1, description="A queue with this many jobs in Redis is not filled further.")
    ] = 20_000

    # Maintenance (runs beside every migrator)
    maintenance_interval: Annotated[
        float,
        Meta(
            gt=0,
            description="Seconds between passes of lease rescue, in-flight recovery and Redis "
            "reconciliation.",
        ),
    ] = 1.0
    max_stalls: Annotated[
        int,
        Meta(
            ge=1,
            le=100,
            description="Lease expiries (a worker died or hung) after which a job is failed as "
            "a poison pill; fewer return it to queued without spending an attempt.",
        ),
    ] = 3
    stall_requeue_spread: Annotated[
        float,
        Meta(
            ge=0,
            description="Seconds over which jobs whose lease expired are spread (a random "
            "delay per job) when they go back to queued.",
        ),
    ] = 10.0
    claim_lock_timeout: Annotated[
        float,
        Meta(
            gt=0,
            description="Seconds a claim waits on a migrator's uncommitted move; then the "
            "copies are left to the in-flight recovery and the worker fetches on.",
        ),
    ] = 5.0
    move_idle_timeout: Annotated[
        float,
        Meta(
            gt=0,
            description="Seconds a migrator's move transaction may stay idle (its Redis "
            "push) before PostgreSQL ends its session and releases its row locks.",
        ),
    ] = 10.0

    # Periodic jobs (the scheduler runs beside every migrator)
    scheduler_interval: Annotated[
        float,
        Meta(
            gt=0,
            description="Longest wait of the scheduler between passes (it wakes for the next "
            "tick; this bounds how late it sees a new or changed schedule).",
        ),
    ] = 5.0
    schedule_catch_up: Annotated[
        Literal["latest", "skip"],
        Meta(
            description="After downtime: `latest` runs a schedule's latest missed tick once; "
            "`skip` passes over a tick found later than SCHEDULE_MISFIRE_GRACE."
        ),
    ] = "latest"
    schedule_misfire_grace: Annotated[
        float, Meta(ge=0, description="Seconds after its time that a tick still counts as on time.")
    ] = 60.0

    # Access control
    auth_enabled: Annotated[
        bool, Meta(description="Require API keys (a start with no API_KEYS is refused).")
    ] = True
    api_keys: Annotated[
        list[str],
        Meta(
            description="Comma-separated name:scope:secret, scope producer or admin, secret "
            "sha256:<hex> (python -m app.api.auth hash KEY) or the key itself (development)."
        ),
    ] = msgspec.field(default_factory=list)
    metrics_public: Annotated[
        bool, Meta(description="Serve GET /metrics without a key (false: an admin key is needed).")
    ] = True
    dashboard_secret: Annotated[
        str,
        Meta(
            description="Secret that signs dashboard sessions and CSRF tokens; give every API "
            "process the same one. Empty: a random one per process (sessions end at restart)."
        ),
    ] = ""
    dashboard_session_ttl: Annotated[
        int, Meta(ge=60, description="Seconds a dashboard login lasts.")
    ] = 28_800
    dashboard_refresh_seconds: Annotated[
        float,
        Meta(ge=0.5, le=3600, description="Seconds between two auto-refreshes of a live page."),
    ] = 5.0

    # Payload safety
    encryption_keys: Annotated[
        list[str],
        Meta(
            description="Comma-separated Fernet keys; the first encrypts, all decrypt (rotation)."
        ),
    ] = msgspec.field(default_factory=list)
    encrypted_fields: Annotated[
        dict[str, list[str]],
        Meta(
            description="JSON: top-level payload fields encrypted per queue, e.g. "
            '{"email-sending": ["email_data"]}.'
        ),
    ] = msgspec.field(default_factory=dict)
    max_request_bytes: Annotated[
        int,
        Meta(
            ge=1024,
            description="Largest request body (413 above it), checked before the body is parsed.",
        ),
    ] = 8 * 1024 * 1024
    max_json_depth: Annotated[
        int,
        Meta(ge=2, le=1000, description="Deepest JSON nesting accepted, checked before parsing."),
    ] = 32
    max_job_request_bytes: Annotated[
        int,
        Meta(
            ge=1024,
            description="Largest body of POST /jobs (one job; 413 above it); the other routes "
            "take up to MAX_REQUEST_BYTES.",
        ),
    ] = 1024 * 1024
    request_body_timeout: Annotated[
        float, Meta(gt=0, description="Seconds a client may take to send a request body (408).")
    ] = 30.0

    # HTTP server (python -m app)
    max_header_bytes: Annotated[
        int,
        Meta(
            ge=1024,
            description="Largest request line and headers of a request, in bytes (431 above).",
        ),
    ] = 16 * 1024
    max_header_count: Annotated[
        int, Meta(ge=10, description="Most header fields a request may carry (431 above).")
    ] = 100
    header_timeout: Annotated[
        float,
        Meta(
            gt=0,
            description="Seconds a connection may take to send a request's line and headers, "
            "from when it opens or the request starts; then it is closed.",
        ),
    ] = 10.0
    keep_alive_timeout: Annotated[
        int, Meta(ge=1, description="Seconds an idle keep-alive connection stays open.")
    ] = 5

    # API
    max_payload_bytes: Annotated[
        int, Meta(ge=1, description="Largest job payload, in bytes of JSON (413 above it).")
    ] = 256 * 1024
    job_hash_ttl: Annotated[
        int, Meta(ge=1, description="Seconds a job:<id> hash lives after a terminal state.")
    ] = 86_400
    idempotency_key_ttl: Annotated[
        int,
        Meta(
            ge=1,
            description="Seconds an Idempotency-Key stays bound to its job; then it is free again.",
        ),
    ] = 86_400
    stats_timeout: Annotated[
        float,
        Meta(
            gt=0,
            description="Seconds a job count by status may take (health, queues, metrics) "
            "before estimates are shown instead.",
        ),
    ] = 2.0
    stats_max_age: Annotated[
        float,
        Meta(
            ge=0,
            description="Seconds the job counts by status of /metrics, /queues, "
            "/health/queues and the dashboard may be old: a process counts at most once at a "
            "time and shares the result while it is younger (0: count at every request).",
        ),
    ] = 2.0

    # Retention
    retention_completed: Annotated[
        int,
        Meta(ge=1, description="Seconds completed and cancelled jobs (and their logs) are kept."),
    ] = 7 * 86_400
    retention_failed: Annotated[
        int, Meta(ge=1, description="Seconds failed and discarded jobs (and their logs) are kept.")
    ] = 30 * 86_400
    retention_batch_size: Annotated[
        int, Meta(ge=1, le=100_000, description="Jobs deleted per retention transaction.")
    ] = 1000
    retention_interval: Annotated[
        float, Meta(gt=0, description="Seconds between two retention passes.")
    ] = 300.0

    # Logs
    log_level: Annotated[str, Meta(description="DEBUG, INFO, WARNING or ERROR.")] = "INFO"
    log_format: Annotated[
        Literal["text", "json"], Meta(description="`text`, or `json`: one JSON object per line.")
    ] = "text"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            raise InvalidSetting(
                "database_url", "must start with postgresql:// (a plain libpq DSN)"
            )
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if not self.redis_url.startswith(schemes):
            raise InvalidSetting(
                "redis_url", "must start with redis://, rediss:// or unix:// (or +cluster)"
            )
        for entry in self.redis_sentinels:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidSetting("redis_sentinels", f"{entry!r} is not host:port")
        self._consistent()

    def _consistent(self) -> None:
        if self.cluster_mode and (self.redis_sentinels or "{" in self.redis_prefix):
            raise ValueError("Redis Cluster takes no sentinels, nor braces in redis_prefix")
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("db_pool_min_size must not exceed db_pool_max_size")
        if self.backoff_base > self.backoff_max:
            raise ValueError("backoff_base must not exceed backoff_max")
        if self.encrypted_fields and not self.encryption_keys:
            raise ValueError("encrypted_fields needs encryption_keys")
        if self.worker_fetch_timeout >= self.visibility_timeout:
            raise ValueError("worker_fetch_timeout must be shorter than visibility_timeout")

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(e.rpartition(":")[0], int(e.rpartition(":")[2])) for e in self.redis_sentinels]

    @property
    def cluster_mode(self) -> bool:
        return self.redis_cluster or self.redis_url.split("://", 1)[0].endswith("+cluster")

    @property
    def redis_node_url(self) -> str:
        """REDIS_URL without the `+cluster` of its scheme."""
        return self.redis_url.replace("+cluster://", "://", 1)

    @property
    def sqlalchemy_url(self) -> str:
        """The DSN spelled for SQLAlchemy's asyncpg dialect."""
        _, rest = self.database_url.split("://", 1)
        return f"postgresql+asyncpg://{rest}"


def setting_fields() -> list[SettingField]:
    """Every setting with its default and description (the README documents them)."""
    return _fields_of(Settings)
