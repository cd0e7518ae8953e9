"""A Redis Cluster of three primaries on free ports (redis-server from Debian's package,
--cluster-enabled yes, joined by `redis-cli --cluster create`), with no persistence: a
primary that is killed and started again comes back empty, as after a crash."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import redis

from tests.support.servers import PrivateRedis, _wait, free_port


class RedisClusterGroup:
    def __init__(self, primaries: int = 3) -> None:
        self.ports = [free_port() for _ in range(primaries)]
        # The cluster bus would be port + 10000 (beyond 65535 for a high free port).
        self.bus_ports = {p: free_port() for p in self.ports}
        self.dir = Path(tempfile.mkdtemp(prefix="hq-cluster-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """One startup node; the client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _start(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        node = PrivateRedis(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(self.bus_ports[port]),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                # Without replicas, the other primaries keep serving their slots while
                # one is down (the README recommends it for that reason).
                "--cluster-require-full-coverage",
                "no",
            ],
            port=port,
            directory=str(node_dir),
        )
        node.start()
        assert node.proc is not None
        self.procs[port] = node.proc

    def start(self) -> None:
        for port in self.ports:
            self._start(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = 20) -> None:
        """Until every running primary says the cluster is ok and knows all the others."""
        _wait(self._all_ok, timeout, "the cluster to be ok")

    def _all_ok(self) -> bool:
        for port in self.procs:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                info = client.cluster("info")
                nodes = client.cluster("nodes")
            finally:
                client.close()
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(
                self.ports
            ):
                return False
            if any("fail" in str(n.get("flags", "")) for n in nodes.values()):
                return False
        return True

    def port_of(self, key: str) -> int:
        """The port of the primary that holds `key`'s slot."""
        client = redis.Redis(port=next(iter(self.procs)), socket_timeout=1)
        try:
            slot = int(client.cluster("keyslot", key))
            slots: list[Any] = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            for start, end, primary, *_replicas in slots:
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            client.close()
        raise RuntimeError(f"no node holds the slot of {key}")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2)

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed primary again, on its port and with its nodes.conf: it takes
        its slots back, empty."""
        self._start(port)
        self.wait_ok()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
