"""Settings of the seed's jobs (app.handlers): email over SMTP, webhooks, circuit
breakers. Settings (app.settings) extends them; the README documents each one."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from app.settings.env import EnvSettings, InvalidSetting, SecretStr


class HandlerSettings(EnvSettings, kw_only=True):
    smtp_host: Annotated[
        str,
        Meta(
            description="SMTP server that sends email; empty: not configured (make run then "
            "starts a local sink that keeps every message in a Maildir)."
        ),
    ] = ""
    smtp_port: Annotated[int, Meta(ge=1, le=65535, description="Port of SMTP_HOST.")] = 587
    smtp_username: Annotated[str, Meta(description="SMTP AUTH user; empty: no AUTH.")] = ""
    smtp_password: Annotated[SecretStr, Meta(description="SMTP AUTH password.")] = SecretStr("")
    smtp_tls: Annotated[
        Literal["none", "starttls", "tls"],
        Meta(
            description="`starttls` (required, usually port 587), `tls` (implicit TLS, usually "
            "465) or `none` (plain text: a local relay or sink only)."
        ),
    ] = "starttls"
    smtp_timeout: Annotated[
        float, Meta(gt=0, description="Seconds an SMTP connection or command may take.")
    ] = 30.0
    email_from: Annotated[
        str,
        Meta(
            description="From address of email jobs that name none; its domain ends every "
            "Message-ID."
        ),
    ] = "hybridq@localhost"
    webhook_secrets: Annotated[
        dict[str, SecretStr],
        Meta(
            description='JSON: Standard Webhooks signing secret per endpoint name, e.g. {"crm": '
            '"whsec_<base64>"}.'
        ),
    ] = msgspec.field(default_factory=dict)
    webhook_allowed_hosts: Annotated[
        list[str],
        Meta(
            description="Webhook hosts allowed to resolve to loopback, private or link-local "
            "addresses (comma-separated); every other such address is refused."
        ),
    ] = msgspec.field(default_factory=list)
    webhook_timeout: Annotated[
        float, Meta(gt=0, description="Seconds a webhook request (connect, send, answer) may take.")
    ] = 10.0
    breaker_failure_threshold: Annotated[
        int,
        Meta(
            ge=1,
            description="Connection failures in a row that open the circuit breaker of an SMTP "
            "server or webhook host.",
        ),
    ] = 5
    breaker_open_seconds: Annotated[
        float,
        Meta(
            gt=0,
            description="Seconds an open breaker makes jobs for its destination wait before "
            "one probe is let through.",
        ),
    ] = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.webhook_allowed_hosts = [host.lower() for host in self.webhook_allowed_hosts]
        _name, address = parseaddr(self.email_from)
        if "@" not in address or not address.rsplit("@", 1)[1]:
            raise InvalidSetting(
                "email_from", "must be an email address with a domain, e.g. news@example.com"
            )
        if self.webhook_secrets:
            self._check_signing_secrets()

    def _check_signing_secrets(self) -> None:
        # Fail at start, not at the first delivery: the reference package must accept it.
        from standardwebhooks import Webhook

        for name, secret in self.webhook_secrets.items():
            try:
                Webhook(secret.get_secret_value())
            except Exception as exc:
                raise InvalidSetting(
                    "webhook_secrets", f"secret of endpoint {name!r} is not whsec_<base64>: {exc}"
                ) from None
