"""Building the handlers' services on a test's runtime, with a test clock for the circuit
breakers (time moves when the test says, never by sleeping)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.circuit import CircuitBreakers
from app.db.suppressions import SuppressionStore
from app.handlers.events import EventStore
from app.handlers.sender import EmailSender, SmtpServer
from app.runtime import Runtime
from tests.support.tls import TlsFiles, make_tls

OPEN_SECONDS = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path)


def breakers_for(rt: Runtime, clock: Clock, threshold: int = 3) -> CircuitBreakers:
    return CircuitBreakers(
        rt.redis, rt.keys, failure_threshold=threshold, open_seconds=OPEN_SECONDS, clock=clock
    )


def sender_for(rt: Runtime, server: SmtpServer | None, clock: Clock) -> EmailSender:
    return EmailSender(
        server,
        events=EventStore(rt.pool),
        suppressions=SuppressionStore(rt.pool),
        breakers=breakers_for(rt, clock),
        default_from="Hybridq <hybridq@sender.example>",
    )


def plain(port: int) -> SmtpServer:
    return SmtpServer(host="127.0.0.1", port=port, tls="none", timeout=5)


async def events_of(rt: Runtime) -> list[tuple[str, str, int]]:
    """(event, address, attempt) of every email event, in the order they happened."""
    rows = await rt.pool.fetch(
        "SELECT event, address, attempt FROM email_events ORDER BY occurred_at, attempt"
    )
    return [(r["event"], r["address"], r["attempt"]) for r in rows]
