"""Delivering one webhook (`webhook:process`): an HTTP POST signed per the Standard
Webhooks specification, with the reference package (`standardwebhooks`).

Headers: `webhook-id` (the job id: the same on every attempt, so receivers deduplicate),
`webhook-timestamp` (seconds), `webhook-signature` (`v1,<base64 HMAC-SHA256 of
id.timestamp.body>` with the endpoint's secret). Body: `{"type", "timestamp", "data"}`.

Outcomes: 2xx completes. 5xx, timeouts and connection errors fail the attempt (retried
with backoff; timeouts and connection errors count for the host's circuit breaker, and
an open breaker makes jobs wait). 408 and 429 wait for their Retry-After (snooze), or
fail the attempt without one. 410 and every other 4xx are permanent failures. A
redirect to another host is never followed (a 307/308 to the same host is, up to 3
times; any other 3xx is a permanent failure naming where it points). Addresses are
checked against SSRF before connecting (app.handlers.ssrf), and the request connects to
the checked address itself.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NoReturn

import httpx
import orjson
from standardwebhooks import Webhook

from app.circuit import CircuitBreakers
from app.handlers.errors import TransientFailure
from app.handlers.payloads import WebhookPayload
from app.handlers.ssrf import BlockedAddress, resolve
from app.jobs.outcomes import PermanentFailure, Snooze

log = logging.getLogger("hybridq.handlers.webhooks")

MAX_REDIRECTS = 3
# A Retry-After further away than this is cut to it: the job looks again then.
RETRY_AFTER_MAX = 3600.0
USER_AGENT = "hybridq-webhooks/1"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class WebhookDeliverer:
    """Signs and POSTs webhooks; one fresh connection per delivery, to the address that
    was checked (no connection pool could carry a request to another host's address)."""

    def __init__(
        self,
        *,
        secrets: Mapping[str, str],
        allowed_hosts: Collection[str],
        timeout: float,
        breakers: CircuitBreakers,
        tls_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signers = {name: Webhook(secret) for name, secret in secrets.items()}
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.timeout = timeout
        self.breakers = breakers
        self.tls_context = tls_context or ssl.create_default_context()
        self.clock = clock

    async def deliver(self, job_id: uuid.UUID, payload: WebhookPayload) -> None:
        """POST the event; raise what the job's outcome must be (see the module doc)."""
        signer = self.signers.get(payload.endpoint)
        if signer is None:
            raise PermanentFailure(
                f"no signing secret for endpoint {payload.endpoint!r} (WEBHOOK_SECRETS)"
            )
        url = httpx.URL(str(payload.url))
        target = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        wait = await self.breakers.wait_time("webhook", target, probe_seconds=self.timeout * 2)
        if wait:
            raise Snooze(wait, f"circuit breaker of webhook host {target} is open")

        now = datetime.now(UTC)
        body = orjson.dumps({"type": payload.event, "timestamp": now, "data": payload.data})
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": str(job_id),
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(str(job_id), now, body.decode()),
        }
        for _hop in range(MAX_REDIRECTS + 1):
            response = await self._post(url, target, body, headers)
            if response.status_code not in (307, 308):
                break
            url = self._same_host_redirect(url, response)
        else:
            raise PermanentFailure(f"more than {MAX_REDIRECTS} redirects")
        await self._judge(response, url)

    async def _post(
        self, url: httpx.URL, target: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await resolve(url.host, port, self.allowed_hosts)
        except BlockedAddress as exc:
            raise PermanentFailure(str(exc)) from None
        except OSError as exc:
            raise TransientFailure(f"cannot resolve {url.host}: {exc}") from None
        # Connect to a checked address (the next one if it refuses); the name still
        # drives Host, SNI and the certificate check.
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        async with httpx.AsyncClient(
            timeout=self.timeout, verify=self.tls_context, trust_env=False
        ) as client:
            for index, address in enumerate(addresses):
                request = client.build_request(
                    "POST",
                    url.copy_with(host=str(address)),
                    content=body,
                    headers={**headers, "host": url.netloc.decode("ascii")},
                    extensions=extensions,
                )
                try:
                    # The answer's body is not read: only its status and headers matter.
                    response = await client.send(request, stream=True)
                    await response.aclose()
                    break
                except httpx.ConnectError as exc:
                    if index + 1 < len(addresses):
                        continue
                    await self._unreachable(url, target, exc)
                except httpx.TransportError as exc:
                    await self._unreachable(url, target, exc)
        await self.breakers.record_success("webhook", target)
        return response

    async def _unreachable(self, url: httpx.URL, target: str, exc: Exception) -> NoReturn:
        """The request failed in transport: count it for the breaker, fail the attempt."""
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        await self.breakers.record_failure("webhook", target, detail)
        raise TransientFailure(f"webhook to {url.host} failed: {detail}") from None

    @staticmethod
    def _same_host_redirect(url: httpx.URL, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise PermanentFailure(f"{response.status_code} redirect without a Location")
        next_url = url.join(location)
        if next_url.host != url.host or next_url.scheme not in ("http", "https"):
            raise PermanentFailure(
                f"redirect to another host not followed: {response.status_code} to {next_url}"
            )
        return next_url

    async def _judge(self, response: httpx.Response, url: httpx.URL) -> None:
        status = response.status_code
        if 200 <= status < 300:
            log.info("webhook delivered to %s (%d)", url.host, status)
            return
        what = f"{url} answered {status}"
        if status in (408, 429):
            seconds = retry_after_seconds(response.headers.get("retry-after"), self.clock())
            if seconds is not None:
                raise Snooze(min(seconds, RETRY_AFTER_MAX), f"{what}; Retry-After {seconds:g}s")
            raise TransientFailure(what)
        if 300 <= status < 400:
            where = response.headers.get("location", "nowhere")
            raise PermanentFailure(f"{what} (redirect to {where} not followed: update the URL)")
        if status == 410:
            raise PermanentFailure(f"{what}: the endpoint is gone")
        if 400 <= status < 500:
            raise PermanentFailure(what)
        raise TransientFailure(what)
