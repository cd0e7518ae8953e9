"""Every Redis key the service uses, in one place, under one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

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


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds Redis key names under `prefix`."""

    prefix: str = ""

    def queue_list(self, queue_name: str, level: str) -> str:
        """`queue:<name>:high`, `queue:<name>` or `queue:<name>:low`."""
        base = f"{self.prefix}queue:{queue_name}"
        if level == "normal":
            return base
        if level in ("high", "low"):
            return f"{base}:{level}"
        raise ValueError(f"unknown priority level {level!r}")

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

    def fetch_order(self, queue_names: list[str]) -> list[str]:
        """Keys for a multi-key pop: every queue's high list, then normal, then low."""
        return [self.queue_list(q, level) for level in PRIORITY_LEVELS for q in queue_names]

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

    def epoch_marker(self) -> str:
        """Marker the migrator writes; its absence means Redis lost its data."""
        return f"{self.prefix}epoch"

    def circuit(self, kind: str, target: str) -> str:
        """Hash of one circuit breaker (`kind` is `smtp` or `webhook`; `target` the
        server's host:port), shared by every process."""
        return f"{self.prefix}circuit:{kind}:{target}"

    def circuits_index(self) -> str:
        """Set of the breakers not known healthy (`<kind>:<target>`), so health reads
        them without a scan."""
        return f"{self.prefix}circuits"

    def warmup_lock(self, mailbox: str) -> str:
        """Held while a warm-up job sends for `mailbox`: one run per mailbox at a time."""
        return f"{self.prefix}warmup:lock:{mailbox}"
