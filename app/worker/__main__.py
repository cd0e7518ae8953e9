"""`python -m app.worker`: workers only, to scale out. SIGTERM stops it gracefully."""

from __future__ import annotations

import argparse

from app.cli import load_settings, run, serve
from app.runtime import BackgroundServices, Runtime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.worker", description=__doc__)
    parser.add_argument(
        "--queues", help="comma-separated queues to serve (default: WORKER_QUEUES, else all)"
    )
    parser.add_argument(
        "--concurrency", type=int, help="jobs run at once (default: WORKER_CONCURRENCY)"
    )
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {}
    if args.queues:
        overrides["worker_queues"] = args.queues
    if args.concurrency is not None:
        if args.concurrency < 1:
            parser.error("--concurrency must be at least 1")
        overrides["worker_concurrency"] = args.concurrency
    settings = load_settings(**overrides)

    def build(rt: Runtime) -> BackgroundServices:
        try:
            worker = rt.worker(burst=args.burst)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from exc
        return BackgroundServices(None, worker)

    run(lambda: serve(settings, build), settings)


if __name__ == "__main__":
    main()
