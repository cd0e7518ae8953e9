"""`python -m app.migrator`: the migrator only; several may run at once safely."""

from __future__ import annotations

import argparse

from app.cli import load_settings, run, serve
from app.runtime import BackgroundServices, Runtime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.migrator", description=__doc__)
    parser.parse_args(argv)
    settings = load_settings()

    def build(rt: Runtime) -> BackgroundServices:
        return BackgroundServices(rt.migrator(), None, rt.maintenance())

    run(lambda: serve(settings, build), settings)


if __name__ == "__main__":
    main()
