"""A Redis primary, its replica and three Sentinels on free ports (redis-server from
Debian's package, run with --sentinel), for failover tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.support.servers import PrivateRedis, _wait, free_port

MASTER = "mymaster"


class SentinelGroup:
    def __init__(self) -> None:
        self.primary = PrivateRedis()
        self.replica: PrivateRedis | None = None
        self.ports = [free_port() for _ in range(3)]
        self.dir = Path(tempfile.mkdtemp(prefix="hq-sentinel-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        self.primary.start()
        self.replica = PrivateRedis(["--replicaof", "127.0.0.1", str(self.primary.port)])
        self.replica.start()
        for port in self.ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            self.procs.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        _wait(self.replicated, 20, "the replica in sync")
        _wait(lambda: self.master_port() == self.primary.port, 20, "sentinels to agree")

    def replicated(self) -> bool:
        assert self.replica is not None
        client = redis.Redis(port=self.replica.port, socket_timeout=1)
        try:
            info = client.info("replication")
        finally:
            client.close()
        return bool(info.get("master_link_status") == "up")

    def master_port(self) -> int | None:
        """The primary's port as the first Sentinel that answers sees it."""
        for port in self.ports:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                address = client.sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if isinstance(address, tuple):
                return int(address[1])
        return None

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
        self.primary.stop()
        if self.replica is not None:
            self.replica.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
