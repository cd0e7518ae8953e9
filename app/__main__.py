"""`python -m app`: serve the API (with embedded migrator and worker unless disabled)."""

from __future__ import annotations

import argparse

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(
        "app.main:factory",
        factory=True,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=60,
        log_level="info",
    )


if __name__ == "__main__":
    main()
