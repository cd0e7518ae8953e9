"""`python -m app`: serve the API (with embedded migrator and worker unless disabled)."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

import uvicorn

from app.cli import load_settings
from app.main import build_authenticator
from app.server import server_options


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # Fail before uvicorn starts, with the setting named, rather than with a traceback.
    settings = load_settings()
    try:
        build_authenticator(settings)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    # uvicorn stops gracefully on SIGTERM (the lifespan lets in-flight jobs finish), then
    # restores the handler it found and raises the signal again, so that the process
    # would end "killed by SIGTERM" (exit 143). The handler it finds is this one: a
    # graceful stop exits 0, as the worker and migrator entrypoints do.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "app.main:factory",
        factory=True,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=60,
        log_level="info",
        **server_options(settings),  # limits on request heads, idle connections
    )


if __name__ == "__main__":
    main()
