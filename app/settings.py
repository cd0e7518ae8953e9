"""Service settings, read from environment variables (and an optional `.env` file).

Every setting is documented in the README; the environment variable is the field name in
upper case. Settings are built by the app factory and the entrypoints, never at import.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All knobs of the service. Invalid values stop start-up with a clear message."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Connections
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/hybridq",
        description="PostgreSQL DSN (postgresql://user:password@host:port/database).",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL, with DB number.")
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host:port of Redis Sentinels; when set, the primary "
        "is found through them (and followed across a failover) instead of REDIS_URL's "
        "host, whose database number, user and password still apply.",
    )
    redis_sentinel_master: str = Field(
        "mymaster", min_length=1, description="The name the Sentinels monitor the primary by."
    )
    redis_sentinel_password: str = Field(
        "", description="Password of the Sentinels themselves (not of the primary); empty: none."
    )
    redis_cluster: bool = Field(
        False,
        description="REDIS_URL is one node of a Redis Cluster (also implied by a "
        "redis+cluster:// or rediss+cluster:// URL); the client finds the others.",
    )
    redis_prefix: str = Field(
        "hq:", description="Prefix of every Redis key, so tenants and test runs can share a server."
    )
    db_pool_min_size: int = Field(2, ge=1, description="Connections a process keeps open.")
    db_pool_max_size: int = Field(10, ge=1, description="Most connections a process opens.")
    db_command_timeout: float = Field(
        10.0, gt=0, description="Seconds before a PostgreSQL statement or connect gives up."
    )
    redis_timeout: float = Field(5.0, gt=0, description="Seconds before a Redis call gives up.")

    # Handlers
    handler_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["app.handlers"],
        description="Comma-separated import paths of modules that register handlers.",
    )
    handler_timeout: float = Field(
        300.0, gt=0, description="Default seconds a handler may run before its attempt fails."
    )

    # The seed's jobs (app.handlers): email over SMTP, webhooks, circuit breakers
    smtp_host: str = Field(
        "",
        description="SMTP server that sends email; empty: not configured (make run then "
        "starts a local sink that keeps every message in a Maildir).",
    )
    smtp_port: int = Field(587, ge=1, le=65535, description="Port of SMTP_HOST.")
    smtp_username: str = Field("", description="SMTP AUTH user; empty: no AUTH.")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP AUTH password.")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "starttls",
        description="`starttls` (required, usually port 587), `tls` (implicit TLS, usually "
        "465) or `none` (plain text: a local relay or sink only).",
    )
    smtp_timeout: float = Field(
        30.0, gt=0, description="Seconds an SMTP connection or command may take."
    )
    email_from: str = Field(
        "hybridq@localhost",
        description="From address of email jobs that name none; its domain ends every Message-ID.",
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='JSON: Standard Webhooks signing secret per endpoint name, e.g. {"crm": '
        '"whsec_<base64>"}.',
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Webhook hosts allowed to resolve to loopback, private or link-local "
        "addresses (comma-separated); every other such address is refused.",
    )
    webhook_timeout: float = Field(
        10.0, gt=0, description="Seconds a webhook request (connect, send, answer) may take."
    )
    breaker_failure_threshold: int = Field(
        5,
        ge=1,
        description="Connection failures in a row that open the circuit breaker of an SMTP "
        "server or webhook host.",
    )
    breaker_open_seconds: float = Field(
        30.0,
        gt=0,
        description="Seconds an open breaker makes jobs for its destination wait before "
        "one probe is let through.",
    )

    # What the API process embeds
    embed_migrator: bool = Field(True, description="Run the migrator inside the API process.")
    embed_worker: bool = Field(True, description="Run a worker inside the API process.")

    # Worker
    worker_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Queues a worker serves (comma-separated); empty means every registered one.",
    )
    worker_concurrency: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Jobs run at once per worker (async handlers; sync "
        "ones get a thread pool of this size).",
    )
    worker_fetch_timeout: float = Field(
        1.0, gt=0, le=30, description="Seconds a blocking Redis pop waits before looking again."
    )
    visibility_timeout: float = Field(
        30.0, gt=0, description="Lease of a claimed job; renewed by heartbeat while it runs."
    )
    shutdown_grace_period: float = Field(
        30.0, ge=0, description="Seconds in-flight jobs get to finish on shutdown."
    )
    cancel_wait: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Seconds POST /jobs/{id}/cancel of a running job waits for its worker "
        "to stop it before answering 202 (request recorded).",
    )
    max_snoozes: int = Field(
        25,
        ge=0,
        description="Times a handler may snooze a job (Snooze); one more snooze fails it.",
    )

    # Retries
    backoff_base: float = Field(2.0, gt=0, description="First retry delay in seconds (2, 4, 8 …).")
    backoff_max: float = Field(3600.0, gt=0, description="Cap of the retry delay in seconds.")
    backoff_jitter: float = Field(
        0.1, ge=0, le=1, description="Fraction of the delay added or removed at random."
    )

    # Migrator
    migrator_batch_size: int = Field(
        500, ge=1, le=10_000, description="Jobs moved per transaction and Redis pipeline."
    )
    migrator_poll_interval: float = Field(
        5.0, gt=0, description="Longest sleep of the migrator when no job wakes it."
    )
    direct_push: bool = Field(
        True,
        description="Jobs created due now, in an active queue without limits, are pushed "
        "to Redis by the API (or JobClient) right after their commit instead of by the "
        "migrator: lower latency; a crash before the push costs VISIBILITY_TIMEOUT.",
    )
    redis_queue_max_depth: int = Field(
        20_000, ge=1, description="A queue with this many jobs in Redis is not filled further."
    )

    # Maintenance (runs beside every migrator)
    maintenance_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between passes of lease rescue, in-flight recovery and Redis "
        "reconciliation.",
    )
    max_stalls: int = Field(
        3,
        ge=1,
        le=100,
        description="Lease expiries (a worker died or hung) after which a job is failed as "
        "a poison pill; fewer return it to queued without spending an attempt.",
    )
    stall_requeue_spread: float = Field(
        10.0,
        ge=0,
        description="Seconds over which jobs whose lease expired are spread (a random "
        "delay per job) when they go back to queued.",
    )
    claim_lock_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a claim waits on a migrator's uncommitted move; then the "
        "copies are left to the in-flight recovery and the worker fetches on.",
    )
    move_idle_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a migrator's move transaction may stay idle (its Redis "
        "push) before PostgreSQL ends its session and releases its row locks.",
    )

    # Periodic jobs (the scheduler runs beside every migrator)
    scheduler_interval: float = Field(
        5.0,
        gt=0,
        description="Longest wait of the scheduler between passes (it wakes for the next "
        "tick; this bounds how late it sees a new or changed schedule).",
    )
    schedule_catch_up: Literal["latest", "skip"] = Field(
        "latest",
        description="After downtime: `latest` runs a schedule's latest missed tick once; "
        "`skip` passes over a tick found later than SCHEDULE_MISFIRE_GRACE.",
    )
    schedule_misfire_grace: float = Field(
        60.0,
        ge=0,
        description="Seconds after its time that a tick still counts as on time.",
    )

    # Access control
    auth_enabled: bool = Field(
        True, description="Require API keys (a start with no API_KEYS is refused)."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated name:scope:secret, scope producer or admin, secret "
        "sha256:<hex> (python -m app.api.auth hash KEY) or the key itself (development).",
    )
    metrics_public: bool = Field(
        True, description="Serve GET /metrics without a key (false: an admin key is needed)."
    )
    dashboard_secret: str = Field(
        "",
        description="Secret that signs dashboard sessions and CSRF tokens; give every API "
        "process the same one. Empty: a random one per process (sessions end at restart).",
    )
    dashboard_session_ttl: int = Field(
        28_800, ge=60, description="Seconds a dashboard login lasts."
    )
    dashboard_refresh_seconds: float = Field(
        5.0, ge=0.5, le=3600, description="Seconds between two auto-refreshes of a live page."
    )

    # Payload safety
    encryption_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated Fernet keys; the first encrypts, all decrypt (rotation).",
    )
    encrypted_fields: dict[str, list[str]] = Field(
        default_factory=dict,
        description="JSON: top-level payload fields encrypted per queue, e.g. "
        '{"email-sending": ["email_data"]}.',
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest request body (413 above it), checked before the body is parsed.",
    )
    max_json_depth: int = Field(
        32, ge=2, le=1000, description="Deepest JSON nesting accepted, checked before parsing."
    )
    max_job_request_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest body of POST /jobs (one job; 413 above it); the other routes "
        "take up to MAX_REQUEST_BYTES.",
    )
    request_body_timeout: float = Field(
        30.0, gt=0, description="Seconds a client may take to send a request body (408)."
    )

    # HTTP server (python -m app)
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request line and headers of a request, in bytes (431 above).",
    )
    max_header_count: int = Field(
        100, ge=10, description="Most header fields a request may carry (431 above)."
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection may take to send a request's line and headers, "
        "from when it opens or the request starts; then it is closed.",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle keep-alive connection stays open."
    )

    # API
    max_payload_bytes: int = Field(
        256 * 1024, ge=1, description="Largest job payload, in bytes of JSON (413 above it)."
    )
    job_hash_ttl: int = Field(
        86_400, ge=1, description="Seconds a job:<id> hash lives after a terminal state."
    )
    idempotency_key_ttl: int = Field(
        86_400,
        ge=1,
        description="Seconds an Idempotency-Key stays bound to its job; then it is free again.",
    )
    stats_timeout: float = Field(
        2.0,
        gt=0,
        description="Seconds a job count by status may take (health, queues, metrics) "
        "before estimates are shown instead.",
    )
    stats_max_age: float = Field(
        2.0,
        ge=0,
        description="Seconds the job counts by status of /metrics, /queues, "
        "/health/queues and the dashboard may be old: a process counts at most once at a "
        "time and shares the result while it is younger (0: count at every request).",
    )

    # Retention
    retention_completed: int = Field(
        7 * 86_400,
        ge=1,
        description="Seconds completed and cancelled jobs (and their logs) are kept.",
    )
    retention_failed: int = Field(
        30 * 86_400,
        ge=1,
        description="Seconds failed and discarded jobs (and their logs) are kept.",
    )
    retention_batch_size: int = Field(
        1000, ge=1, le=100_000, description="Jobs deleted per retention transaction."
    )
    retention_interval: float = Field(
        300.0, gt=0, description="Seconds between two retention passes."
    )

    # Logs
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["text", "json"] = Field(
        "text", description="`text`, or `json`: one JSON object per line."
    )

    @field_validator(
        "handler_modules",
        "worker_queues",
        "api_keys",
        "encryption_keys",
        "redis_sentinels",
        "webhook_allowed_hosts",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _lower_hosts(cls, value: list[str]) -> list[str]:
        return [host.lower() for host in value]

    @field_validator("email_from")
    @classmethod
    def _an_address(cls, value: str) -> str:
        _name, address = parseaddr(value)
        if "@" not in address or not address.rsplit("@", 1)[1]:
            raise ValueError("must be an email address with a domain, e.g. news@example.com")
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _signing_secrets(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # Fail at start, not at the first delivery: the reference package must accept it.
        from standardwebhooks import Webhook

        for name, secret in value.items():
            try:
                Webhook(secret.get_secret_value())
            except Exception as exc:
                raise ValueError(
                    f"secret of endpoint {name!r} is not whsec_<base64>: {exc}"
                ) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_dsn(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (a plain libpq DSN)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if not value.startswith(schemes):
            raise ValueError("must start with redis://, rediss:// or unix:// (or +cluster)")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{entry!r} is not host:port")
        return value

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

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
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
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The DSN spelled for SQLAlchemy's asyncpg dialect."""
        _, rest = self.database_url.split("://", 1)
        return f"postgresql+asyncpg://{rest}"
