"""`python -m tests.support.fault_migrator --commit-delay S`: the migrator entrypoint with
a fault-injection hook (seconds between its Redis push and its commit), so a test can
kill it inside the crash window. Production code never reads this hook from settings."""

from __future__ import annotations

import argparse

from app.cli import load_settings, run, serve
from app.runtime import BackgroundServices, Runtime


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fault_migrator")
    parser.add_argument("--commit-delay", type=float, required=True)
    args = parser.parse_args()
    settings = load_settings()

    def build(rt: Runtime) -> BackgroundServices:
        return BackgroundServices(rt.migrator(commit_delay=args.commit_delay), None)

    run(lambda: serve(settings, build), settings)


if __name__ == "__main__":
    main()
