"""Does a flood of large hostile bodies stall the API's event loop?

Starts a real `python -m app` (embedded migrator and worker, auth on, heartbeats every
0.2 s), then sends CONCURRENCY requests at a time, back to back for SECONDS, each an
8 MB JSON body (`nested`: `[[[...]]]`; `flat`: `[[],[],...]`), without an API key (or
with one: --with-key, to /jobs/batch). Meanwhile a separate process probes GET /health
every 10 ms, and this one reads the worker's heartbeat from Redis every 10 ms.

Prints /health latency (p50, p99, max), the longest gap between two heartbeats (the
interval is 0.2 s: a gap well above it means the loop stalled), and the answers.

    .venv/bin/python -m bench.body_flood --database-url postgresql://postgres@127.0.0.1/hq_flood
    .venv/bin/python -m bench.body_flood ... --app-dir /path/to/another/checkout  # compare
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import itertools
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
KEY = "flood-producer-key"
HEARTBEAT_INTERVAL = 0.2  # VISIBILITY_TIMEOUT / 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body_of(shape: str, size: int) -> bytes:
    if shape == "nested":
        return b"[" * (size // 2) + b"]" * (size // 2)
    return b"[" + b"[]," * (size // 3 - 1) + b"[]]"


def probe_health(port: int, stop_at: float, out: Connection) -> None:
    """In its own process: GET /health every 10 ms on one keep-alive connection."""
    latencies: list[float] = []
    errors = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        try:
            conn.request("GET", "/health")
            conn.getresponse().read()
            latencies.append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(0.01)
    out.send((latencies, errors))


def request_of(body: bytes, path: str, with_key: bool) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: flood\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        + (f"Authorization: Bearer {KEY}\r\n" if with_key else "")
        + "\r\n"
    ).encode()
    return head + body


async def send_one(port: int, request: bytes) -> str:
    """One request (the whole body is sent, as a client that does not read early
    would); its status code, or what went wrong before one came back."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return type(exc).__name__
    try:
        writer.write(request)
        await writer.drain()
        status = await reader.readline()
        return status.split(b" ")[1].decode() if status else "closed"
    except OSError as exc:
        return type(exc).__name__
    finally:
        writer.close()


async def flood(
    port: int, request: bytes, concurrency: int, stop_at: float
) -> collections.Counter[str]:
    answers: collections.Counter[str] = collections.Counter()

    async def one_client() -> None:
        while time.monotonic() < stop_at:
            answers[await send_one(port, request)] += 1

    if concurrency:
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    else:  # the baseline: probes alone, for the machine's own noise
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
    return answers


def watch_heartbeats(redis_url: str, prefix: str, stop_at: float, out: Connection) -> None:
    """In its own process: the times of the embedded worker's heartbeats (its score in
    the workers index is the time of its last beat), read every 10 ms."""
    client = redis.Redis.from_url(redis_url)
    beats: list[float] = []
    while time.monotonic() < stop_at:
        scores: list[tuple[bytes, float]] = client.zrange(
            f"{prefix}workers", 0, -1, withscores=True
        )
        if scores:
            latest = max(score for _, score in scores)
            if not beats or latest != beats[-1]:
                beats.append(latest)
        time.sleep(0.01)
    client.close()
    if beats:  # the silence after the last beat counts too
        beats.append(max(beats[-1], time.time()))
    out.send([b - a for a, b in itertools.pairwise(beats)])


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"python -m app exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit("python -m app did not start")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: int) -> float:
    """Nearest-rank percentile: a value that was measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Figures:
    answers: collections.Counter[str]
    cpu: float
    latencies_ms: list[float]
    probe_errors: int
    heartbeat_gaps: list[float]


async def measure(
    args: argparse.Namespace, port: int, prefix: str, proc: subprocess.Popen[bytes]
) -> Figures:
    await wait_healthy(port, proc, 30)
    await asyncio.sleep(1.0)  # a few heartbeats before the flood
    request = request_of(body_of(args.shape, args.size), args.path, args.with_key)
    stop_at = time.monotonic() + args.seconds
    health_in, health_out = multiprocessing.Pipe(duplex=False)
    beats_in, beats_out = multiprocessing.Pipe(duplex=False)
    watchers = [
        multiprocessing.Process(target=probe_health, args=(port, stop_at, health_out)),
        multiprocessing.Process(
            target=watch_heartbeats, args=(args.redis_url, prefix, stop_at, beats_out)
        ),
    ]
    for watcher in watchers:
        watcher.start()
    # The flood runs at the lowest priority: on a small machine the hostile clients
    # must not take the CPU the API and the probes need, or we would measure them.
    os.nice(19)
    cpu_before = cpu_seconds(proc.pid)
    answers = await flood(port, request, args.concurrency, stop_at)
    cpu = cpu_seconds(proc.pid) - cpu_before
    latencies, errors = health_in.recv()
    gaps = beats_in.recv()
    for watcher in watchers:
        watcher.join()
    return Figures(answers, cpu, [x * 1000 for x in latencies], errors, gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", required=True, help="created and migrated if missing")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--app-dir", default=str(ROOT), help="the checkout to run")
    parser.add_argument("--shape", choices=["nested", "flat"], default="nested")
    parser.add_argument("--size", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--with-key", action="store_true", help="send a producer key")
    parser.add_argument("--path", default="/jobs")
    args = parser.parse_args()

    prefix = f"hqflood:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        REDIS_PREFIX=prefix,
        AUTH_ENABLED="true",
        API_KEYS=f"flood:producer:{KEY}",
        VISIBILITY_TIMEOUT=str(HEARTBEAT_INTERVAL * 3),
        WORKER_FETCH_TIMEOUT="0.1",
        PYTHONPATH=args.app_dir,
    )
    subprocess.run(
        [sys.executable, "-m", "app.db.setup"],
        env=env,
        cwd=args.app_dir,
        check=True,
        capture_output=True,
    )
    log_path = Path(tempfile.gettempdir()) / f"body_flood_{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)],
            env=env,
            cwd=args.app_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            figures = asyncio.run(measure(args, port, prefix, proc))
        finally:
            proc.terminate()
            proc.wait(30)
            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()
    ms, gaps = figures.latencies_ms, figures.heartbeat_gaps
    print(f"app: {args.app_dir} (log: {log_path})")
    print(
        f"flood: {args.concurrency} concurrent POST {args.path}, {args.shape} body of "
        f"{args.size} bytes, {'with' if args.with_key else 'without'} a key, "
        f"{args.seconds:g} s; answers: {dict(figures.answers)}"
    )
    print(f"API process: {figures.cpu:.1f} s of CPU during the flood")
    print(
        f"/health: {len(ms)} probes, {figures.probe_errors} errors; p50 {pct(ms, 50):.1f} ms, "
        f"p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms"
    )
    if gaps:
        print(
            f"heartbeats: {len(gaps) + 1} (every {HEARTBEAT_INTERVAL:g} s); longest gap "
            f"{max(gaps):.2f} s; gaps over {2 * HEARTBEAT_INTERVAL:g} s: "
            f"{sum(g > 2 * HEARTBEAT_INTERVAL for g in gaps)}"
        )
    else:
        print("heartbeats: none seen")


if __name__ == "__main__":
    main()
