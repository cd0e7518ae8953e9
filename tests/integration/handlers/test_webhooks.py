"""Webhooks against a real HTTP receiver (uvicorn on 127.0.0.1) that checks every
signature with the Standard Webhooks reference verifier: the outcome of each answer, no
redirect to another host, and no request at all to a private address that is not
allowed."""

from __future__ import annotations

import base64
import ipaddress
import re
import uuid
from typing import Any

import pytest

from app.handlers.errors import TransientFailure
from app.handlers.payloads import WebhookPayload
from app.handlers.ssrf import is_public
from app.handlers.webhooks import WebhookDeliverer, retry_after_seconds
from app.jobs.outcomes import PermanentFailure, Snooze
from app.runtime import Runtime
from tests.integration.handlers.conftest import OPEN_SECONDS, Clock, breakers_for
from tests.support.receiver import run_receiver
from tests.support.tls import TlsFiles

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes, really").decode()
LOCAL = ("127.0.0.1", "localhost")


def deliverer(
    rt: Runtime,
    clock: Clock,
    allowed: tuple[str, ...] = LOCAL,
    timeout: float = 5,
    tls: TlsFiles | None = None,
) -> WebhookDeliverer:
    return WebhookDeliverer(
        secrets={"crm": SECRET},
        allowed_hosts=allowed,
        timeout=timeout,
        breakers=breakers_for(rt, clock),
        tls_context=tls.client_context() if tls else None,
    )


def hook(url: str, **fields: Any) -> WebhookPayload:
    return WebhookPayload.model_validate(
        {"url": url, "event": "email.sent", "data": {"id": 7}, "endpoint": "crm", **fields}
    )


async def test_a_signed_delivery_verifies_with_the_reference_verifier(
    runtime: Runtime, clock: Clock
) -> None:
    job_id = uuid.uuid4()
    async with run_receiver(SECRET) as receiver:
        await deliverer(runtime, clock).deliver(job_id, hook(receiver.url("/ok")))
    (got,) = receiver.deliveries
    assert got.verified is not None
    assert got.verified["type"] == "email.sent" and got.verified["data"] == {"id": 7}
    assert got.headers["webhook-id"] == str(job_id)
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"


async def test_https_to_a_name_connects_to_the_checked_address_and_verifies_the_name(
    runtime: Runtime, clock: Clock, tls: TlsFiles
) -> None:
    async with run_receiver(SECRET, tls) as receiver:
        await deliverer(runtime, clock, tls=tls).deliver(
            uuid.uuid4(), hook(receiver.url("/ok", host="localhost"))
        )
        with pytest.raises(TransientFailure, match="CERTIFICATE_VERIFY_FAILED"):
            await deliverer(runtime, clock).deliver(  # the system's CAs: not ours
                uuid.uuid4(), hook(receiver.url("/ok", host="localhost"))
            )
    assert [d.verified is not None for d in receiver.deliveries] == [True]


async def test_500_then_200_retries_with_the_same_id(runtime: Runtime, clock: Clock) -> None:
    job_id = uuid.uuid4()
    async with run_receiver(SECRET) as receiver:
        d = deliverer(runtime, clock)
        with pytest.raises(TransientFailure, match="answered 500"):
            await d.deliver(job_id, hook(receiver.url("/flaky")))
        await d.deliver(job_id, hook(receiver.url("/flaky")))
    assert [x.headers["webhook-id"] for x in receiver.deliveries] == [str(job_id)] * 2
    assert all(x.verified is not None for x in receiver.deliveries)


async def test_410_is_a_permanent_failure(runtime: Runtime, clock: Clock) -> None:
    async with run_receiver(SECRET) as receiver:
        with pytest.raises(PermanentFailure, match="answered 410: the endpoint is gone"):
            await deliverer(runtime, clock).deliver(uuid.uuid4(), hook(receiver.url("/gone")))


async def test_429_snoozes_for_its_retry_after(runtime: Runtime, clock: Clock) -> None:
    async with run_receiver(SECRET) as receiver:
        with pytest.raises(Snooze) as snoozed:
            await deliverer(runtime, clock).deliver(uuid.uuid4(), hook(receiver.url("/busy")))
    assert snoozed.value.seconds == 7
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == 10
    assert retry_after_seconds("soon", 0) is None


async def test_a_slow_receiver_times_out_and_repeated_timeouts_open_the_breaker(
    runtime: Runtime, clock: Clock
) -> None:
    async with run_receiver(SECRET) as receiver:
        d = deliverer(runtime, clock, timeout=0.3)
        for _ in range(3):
            with pytest.raises(TransientFailure, match="ReadTimeout"):
                await d.deliver(uuid.uuid4(), hook(receiver.url("/slow")))
        with pytest.raises(Snooze) as snoozed:
            await d.deliver(uuid.uuid4(), hook(receiver.url("/ok")))
        assert snoozed.value.seconds == OPEN_SECONDS
        clock.now += OPEN_SECONDS
        await d.deliver(uuid.uuid4(), hook(receiver.url("/ok")))  # the probe closes it
    assert receiver.paths() == ["/slow"] * 3 + ["/ok"]


async def test_redirects_are_followed_only_to_the_same_host(runtime: Runtime, clock: Clock) -> None:
    async with run_receiver(SECRET) as receiver:
        d = deliverer(runtime, clock)
        same = receiver.url("/ok")
        await d.deliver(uuid.uuid4(), hook(receiver.url(f"/moved?to={same}")))
        other = receiver.url("/ok", host="localhost")  # allowed, but another host
        with pytest.raises(PermanentFailure, match="redirect to another host not followed"):
            await d.deliver(uuid.uuid4(), hook(receiver.url(f"/moved?to={other}")))
    assert receiver.paths() == ["/moved", "/ok", "/moved"]


async def test_a_private_address_is_refused_unless_allowed(runtime: Runtime, clock: Clock) -> None:
    async with run_receiver(SECRET) as receiver:
        for host in LOCAL:
            with pytest.raises(PermanentFailure, match=re.escape("WEBHOOK_ALLOWED_HOSTS")):
                await deliverer(runtime, clock, allowed=()).deliver(
                    uuid.uuid4(), hook(receiver.url("/ok", host=host))
                )
        # Allowing one name does not allow another that resolves to the same address.
        with pytest.raises(PermanentFailure, match=re.escape("resolves to 127.0.0.1")):
            await deliverer(runtime, clock, allowed=("localhost",)).deliver(
                uuid.uuid4(), hook(receiver.url("/ok"))
            )
    assert receiver.deliveries == []


def test_which_addresses_are_public() -> None:
    refused = [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fd00:ec2::254",
        "fe80::1",
        "::ffff:127.0.0.1",
    ]
    for text in refused:
        assert not is_public(ipaddress.ip_address(text)), text
    for text in ("93.184.216.34", "2606:4700:4700::1111"):
        assert is_public(ipaddress.ip_address(text)), text


async def test_an_unknown_endpoint_is_a_permanent_failure(runtime: Runtime, clock: Clock) -> None:
    with pytest.raises(PermanentFailure, match="no signing secret for endpoint 'billing'"):
        await deliverer(runtime, clock).deliver(
            uuid.uuid4(), hook("http://127.0.0.1:9/ok", endpoint="billing")
        )
