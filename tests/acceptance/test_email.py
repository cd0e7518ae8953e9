"""The seed's jobs through the real service: `python -m app` with HANDLER_MODULES=
app.handlers, driven over HTTP, sending to an SMTP server the test runs. And the
development SMTP sink as `make run` starts it."""

from __future__ import annotations

import signal
from pathlib import Path

import aiosmtplib
import httpx

from tests.support import bounces
from tests.support.entrypoints import Launcher, wait_for_job, wait_healthy, wait_until
from tests.support.servers import free_port
from tests.support.smtp import SmtpTestServer


async def test_an_email_job_lands_in_the_smtp_server_and_a_hard_bounce_stops_the_next(
    launcher: Launcher,
) -> None:
    port = free_port()
    async with SmtpTestServer() as smtp:
        api = launcher.start(
            "api",
            ["app", "--port", str(port)],
            HANDLER_MODULES="app.handlers",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(smtp.port),
            SMTP_TLS="none",
            EMAIL_FROM="Acme <news@acme.example>",
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_healthy(client, api)
            email = {"to": "ada@example.com", "subject": "Hello", "text": "Hi Ada"}
            bad = await client.post(
                "/jobs", json={"queue_name": "email-sending", "payload": {**email, "to": "ada"}}
            )
            assert bad.status_code == 422
            assert bad.json()["detail"][0]["loc"] == ["body", "payload", "to"]

            created = await client.post(
                "/jobs", json={"queue_name": "email-sending", "payload": email}
            )
            assert created.status_code == 201, created.text
            job_id = created.json()["job_id"]
            assert (await wait_for_job(client, job_id))["status"] == "completed"
            (got,) = await smtp.wait_for(1)
            assert got.message["Message-ID"] == f"<{job_id}@acme.example>"
            assert got.message["From"] == "Acme <news@acme.example>"
            assert got.message.get_content().strip() == "Hi Ada"

            dsn = bounces.postfix_hard(got.message["Message-ID"], "ada@example.com")
            bounce = await client.post(
                "/jobs", json={"queue_name": "bounce:process", "payload": {"message": dsn}}
            )
            assert (await wait_for_job(client, bounce.json()["job_id"]))["status"] == "completed"
            (entry,) = (await client.get("/suppressions")).json()["items"]
            assert entry["address"] == "ada@example.com"

            again = await client.post(
                "/jobs",
                json={"queue_name": "email-sending", "payload": email, "max_attempts": 1},
            )
            failed = await wait_for_job(client, again.json()["job_id"])
            assert failed["status"] == "failed"
            assert "ada@example.com is on the suppression list" in failed["last_error_message"]
            assert len(smtp.received) == 1


async def test_the_development_sink_keeps_every_message_in_a_maildir(
    launcher: Launcher, tmp_path: Path
) -> None:
    port, maildir = free_port(), tmp_path / "maildir"
    sink = launcher.start(
        "sink", ["app.handlers.smtp_sink", "--port", str(port), "--maildir", str(maildir)]
    )

    async def listening() -> bool | None:
        return True if "SMTP sink on" in sink.log() else None

    await wait_until(listening, 15, "the sink to listen", interval=0.05)
    await aiosmtplib.send(
        "Subject: hi\r\nMessage-ID: <m1@test>\r\n\r\nhello\r\n",
        sender="a@example.com",
        recipients=["b@example.com"],
        hostname="127.0.0.1",
        port=port,
        start_tls=False,
    )
    (stored,) = (maildir / "new").iterdir()
    assert b"hello" in stored.read_bytes()
    assert str(stored) in sink.log()
    sink.proc.send_signal(signal.SIGTERM)
    assert await sink.exit_code(timeout=10) == 0
