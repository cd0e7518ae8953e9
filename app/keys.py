"""Every Redis key the service uses, in one place, under one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import quote

# Priority thresholds from the seed: a lower number is more urgent.
HIGH_PRIORITY_MAX: Final = 50
NORMAL_PRIORITY_MAX: Final = 150

PRIORITY_LEVELS: Final = ("high", "normal", "low")


def priority_level(priority: int) -> str:
    """The priority list a job belongs to: `high` (<= 50), `normal` (<= 150) or `low`."""
    if priority <= HIGH_PRIORITY_MAX:
        return "high"
    if priority <= NORMAL_PRIORITY_MAX:
        return "normal"
    return "low"


# A queue name goes into its keys percent-encoded: everything but ASCII letters, digits,
# `_`, `.`, `-` and `~` becomes %XX (UTF-8). The encoding is injective and never
# produces `{`, `}` or `:`, so no queue name can reach another queue's keys, and the
# braces around it are a Redis Cluster hash tag: a queue's lists, its in-flight record
# and its wake-up marker all live in one slot.
# Cached: every job's keys are built from its queue's name (urllib's quote is pure Python).
@lru_cache(maxsize=4096)
def encode_queue_name(queue_name: str) -> str:
    """The queue name as it appears in Redis keys (percent-encoded, see above)."""
    return quote(queue_name, safe="")


LEVEL_CODES: Final = {"high": "h", "normal": "n", "low": "l"}


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds Redis key names under `prefix`. With `cluster` (Redis Cluster), keys that
    one script touches together share a hash tag: the circuit breakers' `{circuits}`."""

    prefix: str = ""
    cluster: bool = False

    def _queue(self, queue_name: str) -> str:
        return f"{self.prefix}queue:{{{encode_queue_name(queue_name)}}}"

    def queue_list(self, queue_name: str, level: str) -> str:
        """`queue:{<encoded name>}:high`, `:normal` or `:low`."""
        if level not in LEVEL_CODES:
            raise ValueError(f"unknown priority level {level!r}")
        return f"{self._queue(queue_name)}:{level}"

    def route(self, queue_name: str, priority: int) -> str:
        """The one routing function: the Redis list a job of this priority is pushed to."""
        return self.queue_list(queue_name, priority_level(priority))

    def queue_lists(self, queue_name: str) -> tuple[str, str, str]:
        """The three lists of a queue, most urgent first."""
        return (
            self.queue_list(queue_name, "high"),
            self.queue_list(queue_name, "normal"),
            self.queue_list(queue_name, "low"),
        )

    def inflight(self, queue_name: str) -> str:
        """Sorted set of the queue's popped messages not yet done, scored by the time (ms,
        Redis clock) of their pop or of their worker's last heartbeat."""
        return f"{self._queue(queue_name)}:inflight"

    def wake_marker(self, queue_name: str) -> str:
        """Sorted set of at most one member, present while the queue's lists may hold
        jobs: idle workers block on it (BZPOPMIN) instead of on the lists."""
        return f"{self._queue(queue_name)}:marker"

    def script_keys(self, queue_name: str) -> tuple[str, str, str, str, str]:
        """A queue's keys in the order its scripts take them (the pop, the in-flight
        recovery, the direct push): high, normal, low, in-flight, wake-up marker."""
        return (
            *self.queue_lists(queue_name),
            self.inflight(queue_name),
            self.wake_marker(queue_name),
        )

    def queue_epoch(self, queue_name: str) -> str:
        """Redis Cluster only: the queue's loss marker (as `epoch`, per queue): in the
        queue's slot, so it goes when the shard holding the queue loses its data."""
        return f"{self._queue(queue_name)}:epoch"

    def legacy_queue_lists(self, queue_name: str) -> tuple[str, str, str]:
        """The lists of the key format before issue 11 (`queue:<name>:high`,
        `queue:<name>`, `queue:<name>:low`), drained once by maintenance."""
        base = f"{self.prefix}queue:{queue_name}"
        return (f"{base}:high", base, f"{base}:low")

    def job(self, job_id: str) -> str:
        """`job:<id>`: hash of the job's real-time state."""
        return f"{self.prefix}job:{job_id}"

    def worker_heartbeat(self, worker_id: str) -> str:
        """One key per live worker, with a TTL."""
        return f"{self.prefix}worker:{worker_id}"

    def worker_heartbeat_pattern(self) -> str:
        return f"{self.prefix}worker:*"

    def workers_index(self) -> str:
        """Sorted set of worker ids scored by last heartbeat (health reads it, no scan)."""
        return f"{self.prefix}workers"

    def metric_counter(self, name: str) -> str:
        """Hash of a counter's totals: one field per queue (HINCRBY, shared by processes)."""
        return f"{self.prefix}metrics:counter:{name}"

    def metric_histogram(self, name: str) -> str:
        """Hash of a histogram: fields `<queue>|<bucket bound>`, `<queue>|sum`, `<queue>|count`."""
        return f"{self.prefix}metrics:histogram:{name}"

    def metric_history(self, resolution: int, bucket_start: int) -> str:
        """Hash of the counters and wait-time buckets of one time bucket (`resolution`
        seconds starting at epoch second `bucket_start`), with a TTL: the charts' history."""
        return f"{self.prefix}metrics:history:{resolution}:{bucket_start}"

    def cancel_channel(self) -> str:
        """Pub/sub channel on which the API names a running job to stop (its id)."""
        return f"{self.prefix}cancel"

    def cancel_ack_channel(self, job_id: str) -> str:
        """Pub/sub channel on which a worker says it stopped the job (cancelled)."""
        return f"{self.prefix}cancelled:{job_id}"

    def epoch_marker(self) -> str:
        """Marker the maintenance writes once every migrated job is in Redis; its absence
        means Redis lost its data."""
        return f"{self.prefix}epoch"

    def circuit(self, kind: str, target: str) -> str:
        """Hash of one circuit breaker (`kind` is `smtp` or `webhook`; `target` the
        server's host:port), shared by every process."""
        if self.cluster:
            return f"{self.prefix}circuit:{{circuits}}:{kind}:{target}"
        return f"{self.prefix}circuit:{kind}:{target}"

    def circuits_index(self) -> str:
        """Set of the breakers not known healthy (`<kind>:<target>`), so health reads
        them without a scan."""
        return f"{self.prefix}circuits" + (":{circuits}" if self.cluster else "")

    def warmup_lock(self, mailbox: str) -> str:
        """Held while a warm-up job sends for `mailbox`: one run per mailbox at a time."""
        return f"{self.prefix}warmup:lock:{mailbox}"

    def legacy_drain(self) -> str:
        """Sorted set holding messages taken from legacy lists until they are re-pushed."""
        return f"{self.prefix}legacy:draining"
