"""A local SMTP server for development that delivers nothing: it accepts every message
and stores it in a Maildir, logging where. `make run` starts it unless SMTP_HOST is set,
so nothing leaves the machine in development by default.

    python -m app.handlers.smtp_sink --port 1025 --maildir var/maildir

Read the messages with any Maildir reader (`mutt -f var/maildir`), or as files: one per
message under `var/maildir/new/`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from email.message import Message
from pathlib import Path

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP

log = logging.getLogger("hybridq.smtp_sink")


class LoggingMailbox(Mailbox):
    """aiosmtpd's Maildir handler, saying where each message went."""

    def handle_message(self, message: Message) -> None:
        key = self.mailbox.add(message)
        path = Path(self.mail_dir) / "new" / key
        log.info(
            "stored %s for %s (%s) in %s",
            message.get("Message-ID", "a message"),
            message.get("X-RcptTo", message.get("To", "?")),
            message.get("Subject", ""),
            path,
        )


def open_maildir(maildir: Path) -> LoggingMailbox:
    """The Maildir handler, its folders made (even in a folder that already exists)."""
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    return LoggingMailbox(maildir.resolve())


async def serve(host: str, port: int, handler: LoggingMailbox, stop: asyncio.Event) -> None:
    """Accept messages on host:port into the handler's Maildir until `stop` is set."""
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="hybridq-dev-sink"), host, port
    )
    log.info(
        "SMTP sink on %s:%d: every message is kept in %s (one file each under new/), "
        "none is delivered",
        host,
        port,
        handler.mail_dir,
    )
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.handlers.smtp_sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, default=Path("var/maildir"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    handler = open_maildir(args.maildir)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.host, args.port, handler, stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        raise SystemExit(f"SMTP sink: cannot listen on {args.host}:{args.port}: {exc}") from None


if __name__ == "__main__":
    main()
