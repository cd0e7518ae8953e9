"""The browser tests: the real service (`python -m app` with its embedded migrator and
worker, plus a `python -m app.worker` process) started once per module, and Debian's
Chromium driven by Playwright (no browser download: executable_path is the system one).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis
from cryptography.fernet import Fernet
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.conftest import REDIS_URL, RUN_ID
from tests.support.dashboard import ADMIN_KEY, API_KEYS
from tests.support.entrypoints import Service, service_env
from tests.support.servers import free_port

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STEP = 15_000  # ms any one thing on a page may take (expect's timeout)


@dataclass(slots=True)
class Deployment:
    base: str
    api: httpx.Client  # the HTTP API with the admin key, to make jobs as a producer would
    services: list[Service]

    def create_job(self, queue: str, payload: dict[str, Any] | None = None, **fields: Any) -> str:
        body = {"queue_name": queue, "payload": payload or {}, **fields}
        response = self.api.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.api.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for_status(self, job_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        """Poll the API until the job is in one of `statuses`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.job(job_id)
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {body['status']}, not {statuses}")
            time.sleep(0.05)


async def _reset(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("TRUNCATE jobs, job_logs CASCADE")
        await conn.execute(
            "DELETE FROM job_queues WHERE name LIKE 't-%'; UPDATE job_queues SET is_active = true"
        )
    finally:
        await conn.close()


def _wait_healthy(base: str, services: list[Service], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for service in services:
            if service.proc.poll() is not None:
                raise AssertionError(f"{service.name} exited early:\n{service.log()}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the API did not become ready in {timeout:g}s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def deployment(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    asyncio.run(_reset(database_url))
    prefix = f"hqtest:{RUN_ID}:browser-{uuid.uuid4().hex[:6]}:"
    port = free_port()
    env = service_env(
        database_url,
        REDIS_URL,
        prefix,
        AUTH_ENABLED="true",
        API_KEYS=",".join(API_KEYS),
        DASHBOARD_SECRET="browser-test-secret",
        DASHBOARD_REFRESH_SECONDS="1",
        MIGRATOR_POLL_INTERVAL="0.5",  # a resumed queue moves at once (no NOTIFY on resume)
        HANDLER_MODULES="tests.support.handlers,tests.support.dashboard_handlers",
        ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ENCRYPTED_FIELDS=orjson.dumps({"t-switch": ["secret"]}).decode(),
    )
    log_dir = tmp_path_factory.mktemp("browser-services")
    api = Service("api", ["app", "--port", str(port)], env, log_dir)
    services = [api]
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, services)  # the API made the queues before the worker starts
        services.append(Service("worker", ["app.worker"], env, log_dir))
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        ) as client:
            yield Deployment(base=base, api=client, services=services)
    finally:
        for service in services:
            service.kill()
            print(f"----- {service.name} (exit {service.proc.returncode}) -----")
            print(service.log()[-5000:])
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    expect.set_options(timeout=STEP)
    with sync_playwright() as playwright:
        yield _launch(playwright)


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(STEP)
    try:
        yield ctx
    finally:
        ctx.close()


def log_in(page: Page, base: str, key: str) -> None:
    """Log in as a person does: the form has the focus, type the key, press Enter."""
    page.goto(f"{base}/dashboard")
    expect(page).to_have_url(f"{base}/dashboard/login?next=/dashboard")
    expect(page.locator("#api_key")).to_be_focused()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/dashboard")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
