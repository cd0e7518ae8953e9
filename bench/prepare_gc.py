"""`python -m bench.prepare_gc`: time JobClient/enqueue_many's preparation of a bulk call
(validation, sealing, the rows to insert) and the share of it spent in the cyclic garbage
collector, measured with gc.callbacks. No database needed.

    .venv/bin/python -m bench.prepare_gc --jobs 10000 --reps 7
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from app import producer
from bench.env import payload


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.prepare_gc", description=__doc__)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    jobs = [{"queue_name": "bench", "payload": payload(i)} for i in range(args.jobs)]
    spent = [0.0]
    started = [0.0]
    collections = [0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - started[0]
            collections[0] += 1

    gc.callbacks.append(on_gc)
    totals, in_gc, counts = [], [], []
    for _ in range(args.reps):
        spent[0], collections[0] = 0.0, 0
        t0 = time.perf_counter()
        prepared = producer._prepare(jobs, producer.MAX_PAYLOAD_BYTES, None)
        totals.append(time.perf_counter() - t0)
        in_gc.append(spent[0])
        counts.append(collections[0])
        del prepared
    gc.callbacks.remove(on_gc)
    total, collector = statistics.median(totals), statistics.median(in_gc)
    print(
        f"prepare {args.jobs:,} jobs: median {total * 1000:.1f} ms over {args.reps} reps, "
        f"of which GC {collector * 1000:.1f} ms ({collector / total:.0%}), "
        f"{statistics.median(counts):.0f} collections"
    )


if __name__ == "__main__":
    main()
