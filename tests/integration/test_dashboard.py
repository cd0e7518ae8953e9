"""The dashboard over HTTP (the real app, lifespan included, on real PostgreSQL and
Redis): logins and sessions, CSRF and scopes, actions written as the API writes them,
escaping, capped counts, filters and paging, the charts' history and the offline docs.
The same flows in a real browser are in tests/browser."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.fernet import Fernet

from app.dashboard import queries
from app.dashboard.history import WINDOWS, merge_wait, read_history
from app.metrics import HISTORY_RESOLUTIONS, MetricsWriter
from app.redis_batch import redis_batch
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from app.settings import Settings
from tests.support.api import ServedApp, api_only, serve_app
from tests.support.dashboard import ADMIN_KEY, API_KEYS, PRODUCER_KEY, hidden, login
from tests.support.factories import add_queue, create_job, job_status, make_failed

SECRET_FIELD_KEY = Fernet.generate_key().decode()


@pytest.fixture
async def served(settings: Settings, clean_db: None) -> AsyncIterator[ServedApp]:
    keyed = api_only(
        settings,
        auth_enabled=True,
        api_keys=API_KEYS,
        dashboard_secret="test-dashboard-secret",
        encryption_keys=[SECRET_FIELD_KEY],
        encrypted_fields={"t-secret": ["card"]},
    )
    registry = HandlerRegistry()
    for name in ("t-dash", "t-secret"):
        registry.handler(name)(_noop)
    async with serve_app(keyed, registry) as app:
        yield app


async def _noop(job: Job) -> None:
    return None


@pytest.fixture
async def admin(served: ServedApp) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A second client on the same app (its own cookies), logged in with the admin key."""
    async with _client(served) as client:
        yield client, await login(client, ADMIN_KEY)


@pytest.fixture
async def producer(served: ServedApp) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with _client(served) as client:
        yield client, await login(client, PRODUCER_KEY)


def _client(served: ServedApp, base_url: str = "http://hybridq.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=served.app), base_url=base_url)


async def logs(rt: Runtime, job_id: uuid.UUID) -> list[tuple[str, str | None, str | None]]:
    rows = await rt.pool.fetch(
        "SELECT status, actor, log_message FROM job_logs WHERE job_id = $1 ORDER BY created_at, id",
        job_id,
    )
    return [(r["status"], r["actor"], r["log_message"]) for r in rows]


# --- logging in -----------------------------------------------------------------------------


async def test_pages_need_a_login_with_a_configured_key(served: ServedApp) -> None:
    async with _client(served) as client:
        response = await client.get("/dashboard/jobs?status=failed")
        assert response.status_code == 303
        assert (
            response.headers["location"]
            == "/dashboard/login?next=/dashboard/jobs%3Fstatus%3Dfailed"
        )

        page = await client.get("/dashboard/login")
        token = hidden(page.text, "login_token")
        wrong = await client.post(
            "/dashboard/login", data={"login_token": token, "api_key": "not-a-key"}
        )
        assert wrong.status_code == 401
        assert "This API key is not valid." in wrong.text
        assert "hq_dashboard=" not in wrong.headers.get("set-cookie", "")

        # A login form posted from elsewhere (no token bound to this browser) is refused.
        async with _client(served) as stranger:
            forged = await stranger.post(
                "/dashboard/login", data={"login_token": token, "api_key": ADMIN_KEY}
            )
        assert forged.status_code == 403
        assert "hq_dashboard=" not in forged.headers.get("set-cookie", "")

        ok = await client.post(
            "/dashboard/login",
            data={"login_token": token, "api_key": ADMIN_KEY, "next": "https://evil.example/"},
        )
        assert ok.status_code == 303
        assert ok.headers["location"] == "/dashboard"  # never an open redirect
        assert (await client.get("/dashboard/jobs")).status_code == 200


async def test_the_session_cookie_is_signed_httponly_strict_and_secure_over_https(
    served: ServedApp,
) -> None:
    async with _client(served, "https://hybridq.test") as client:
        page = await client.get("/dashboard/login")
        response = await client.post(
            "/dashboard/login",
            data={"login_token": hidden(page.text, "login_token"), "api_key": PRODUCER_KEY},
        )
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("hq_dashboard=")
    )
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "secure", "max-age", "path", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "Path=/dashboard" in cookie
    assert f"Max-Age={served.app.state.settings.dashboard_session_ttl}" in cookie
    assert PRODUCER_KEY not in cookie


async def test_a_tampered_cookie_is_no_session(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = admin
    value = client.cookies["hq_dashboard"]
    client.cookies.set("hq_dashboard", value[:-3] + "abc", domain="hybridq.test", path="/dashboard")
    assert (await client.get("/dashboard")).status_code == 303


async def test_logout_ends_the_session(admin: tuple[httpx.AsyncClient, str]) -> None:
    client, csrf = admin
    assert (await client.post("/dashboard/logout", data={})).status_code == 403
    response = await client.post("/dashboard/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert (await client.get("/dashboard")).status_code == 303


# --- scopes and CSRF --------------------------------------------------------------------------


async def test_a_producer_key_sees_no_action_and_cannot_act(
    served: ServedApp, producer: tuple[httpx.AsyncClient, str]
) -> None:
    rt = served.runtime
    client, csrf = producer
    failed = await make_failed(rt, "t-dash", error="mailbox unavailable")

    for path in (f"/dashboard/jobs/{failed}", "/dashboard/dead-letters", "/dashboard/queues"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert 'method="post" action="/dashboard/jobs/' not in page.text, path
        assert 'action="/dashboard/queues/update"' not in page.text, path
    assert "mailbox unavailable" in (await client.get("/dashboard/dead-letters")).text

    # Its own session and a valid CSRF token do not make a producer key an admin.
    refused = await client.post(f"/dashboard/jobs/{failed}/replay", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert "producer scope" in refused.text
    pause = await client.post(
        "/dashboard/queues/update", data={"csrf_token": csrf, "name": "t-dash", "op": "pause"}
    )
    assert pause.status_code == 403
    assert await job_status(rt, failed) == "failed"
    assert await logs(rt, failed) == []
    assert await rt.pool.fetchval("SELECT is_active FROM job_queues WHERE name = 't-dash'")


async def test_a_post_without_this_sessions_csrf_token_changes_nothing(
    served: ServedApp,
    admin: tuple[httpx.AsyncClient, str],
    producer: tuple[httpx.AsyncClient, str],
) -> None:
    rt = served.runtime
    client, _ = admin
    job_id = await create_job(rt, "t-dash")
    for data in ({}, {"csrf_token": ""}, {"csrf_token": producer[1]}, {"csrf_token": "0" * 64}):
        response = await client.post(f"/dashboard/jobs/{job_id}/cancel", data=data)
        assert response.status_code == 403, data
        assert "CSRF" in response.text
    async with _client(served) as anonymous:
        response = await anonymous.post(f"/dashboard/jobs/{job_id}/cancel", data={})
        assert response.status_code == 403
    assert await job_status(rt, job_id) == "queued"


# --- actions ----------------------------------------------------------------------------------


async def test_actions_are_logged_with_the_keys_name_as_the_api_does(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str]
) -> None:
    rt = served.runtime
    client, csrf = admin
    failed = await make_failed(rt, "t-dash")
    queued = await create_job(rt, "t-dash")
    other = await make_failed(rt, "t-dash")

    replay = await client.post(f"/dashboard/jobs/{failed}/replay", data={"csrf_token": csrf})
    assert replay.status_code == 303
    assert replay.headers["location"] == f"/dashboard/jobs/{failed}?done=replay"
    page = await client.get(replay.headers["location"])
    assert "The job was replayed" in page.text
    assert "key:ops" in page.text  # the timeline names the actor
    assert await job_status(rt, failed) == "queued"
    assert await logs(rt, failed) == [("replayed", "key:ops", "replayed from the dashboard")]

    cancel = await client.post(f"/dashboard/jobs/{queued}/cancel", data={"csrf_token": csrf})
    assert cancel.status_code == 303
    assert await logs(rt, queued) == [("cancelled", "key:ops", "cancelled from the dashboard")]
    discard = await client.post(f"/dashboard/jobs/{other}/discard", data={"csrf_token": csrf})
    assert discard.status_code == 303
    assert await job_status(rt, other) == "discarded"

    # What the API refuses, the dashboard refuses, with the API's message.
    again = await client.post(f"/dashboard/jobs/{queued}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 409
    assert "job is cancelled: only a queued or migrated_to_redis job can be cancelled" in again.text
    missing = await client.post(f"/dashboard/jobs/{uuid.uuid4()}/replay", data={"csrf_token": csrf})
    assert missing.status_code == 404


async def test_replay_all_confirms_how_many_then_replays_that_queue_only(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str]
) -> None:
    rt = served.runtime
    client, csrf = admin
    await add_queue(rt, "t-other")
    mine = [await make_failed(rt, "t-dash") for _ in range(3)]
    theirs = await make_failed(rt, "t-other")

    confirm = await client.get("/dashboard/dead-letters/replay-all?queue_name=t-dash")
    assert confirm.status_code == 200
    count = re.search(r'<p id="replay-count">\s*(\d+) failed jobs', confirm.text)
    assert count is not None and count.group(1) == "3"
    assert "Replay 3 jobs" in confirm.text

    response = await client.post(
        "/dashboard/dead-letters/replay-all", data={"csrf_token": csrf, "queue_name": "t-dash"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/dead-letters?queue_name=t-dash&replayed=3"
    assert "Replayed 3 jobs of t-dash" in (await client.get(response.headers["location"])).text
    assert [await job_status(rt, j) for j in mine] == ["queued"] * 3
    assert await job_status(rt, theirs) == "failed"
    assert (await logs(rt, mine[0]))[-1][:2] == ("replayed", "key:ops")


async def test_queues_pause_resume_and_default_priority(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str]
) -> None:
    rt = served.runtime
    client, csrf = admin

    async def post(**data: str) -> httpx.Response:
        return await client.post("/dashboard/queues/update", data={"csrf_token": csrf, **data})

    paused = await post(name="t-dash", op="pause")
    assert paused.status_code == 303
    page = await client.get(paused.headers["location"])
    assert "t-dash: The queue is paused" in page.text
    row = re.search(r'<tr data-queue="t-dash">.*?</tr>', page.text, re.S)
    assert row is not None and "paused" in row.group(0) and "Resume" in row.group(0)
    assert not await rt.pool.fetchval("SELECT is_active FROM job_queues WHERE name = 't-dash'")
    assert (await post(name="t-dash", op="resume")).status_code == 303
    assert (await post(name="t-dash", op="priority", default_priority="40")).status_code == 303
    row_db = await rt.pool.fetchrow(
        "SELECT is_active, default_priority FROM job_queues WHERE name = 't-dash'"
    )
    assert row_db is not None
    assert (row_db["is_active"], row_db["default_priority"]) == (True, 40)

    bad = await post(name="t-dash", op="priority", default_priority="1001")
    assert bad.status_code == 422
    assert "default_priority" in bad.text
    assert (await post(name="t-nope", op="pause")).status_code == 404


# --- what a page shows ------------------------------------------------------------------------


async def test_everything_a_job_carries_is_shown_as_text(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str]
) -> None:
    rt = served.runtime
    client, _ = admin
    evil_queue = "t-<script>alert(3)</script>"
    await add_queue(rt, evil_queue)
    job_id = await create_job(rt, evil_queue, {"note": "<script>alert(1)</script>"})
    await rt.pool.execute(
        "UPDATE jobs SET status = 'failed', failed_at = now(), last_error_message = $2 "
        "WHERE id = $1",
        job_id,
        '<img src=x onerror="alert(2)"><b>bold</b>',
    )

    for path in (
        f"/dashboard/jobs/{job_id}",
        "/dashboard/dead-letters",
        "/dashboard/jobs",
        "/dashboard",
    ):
        html = (await client.get(path)).text
        assert "<script>alert" not in html, path
        assert "<img src=x" not in html, path
        assert "t-&lt;script&gt;alert(3)&lt;/script&gt;" in html, path
    job_page = (await client.get(f"/dashboard/jobs/{job_id}")).text
    assert "&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;" in job_page
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;&lt;b&gt;bold&lt;/b&gt;" in job_page


async def test_encrypted_fields_are_marked_and_never_sent(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = admin
    created = await client.post(
        "/jobs",
        json={"queue_name": "t-secret", "payload": {"card": "4111-1111", "order": 42}},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 201, created.text
    token = await served.runtime.pool.fetchval("SELECT payload->'card'->>'$encrypted' FROM jobs")
    page = (await client.get(f"/dashboard/jobs/{created.json()['job_id']}")).text
    assert re.search(
        r'<th scope="row" class="mono">card</th>\s*<td><span class="badge encrypted">', page
    )
    assert "4111-1111" not in page
    assert token not in page
    assert "42" in page


async def test_overview_counts_stop_at_their_cap(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = served.runtime
    client, _ = admin
    await add_queue(rt, "t-capped", active=False)
    for _ in range(5):
        await create_job(rt, "t-capped")
    await create_job(rt, "t-dash")
    await make_failed(rt, "t-dash")
    monkeypatch.setattr(queries, "QUEUED_CAP", 3)

    html = (await client.get("/dashboard")).text
    capped = re.search(r'<tr data-queue="t-capped">.*?</tr>', html, re.S)
    plain = re.search(r'<tr data-queue="t-dash">.*?</tr>', html, re.S)
    assert capped is not None and plain is not None
    assert 'data-col="queued">3+<' in capped.group(0)
    assert "paused" in capped.group(0)
    assert 'data-col="queued">1<' in plain.group(0)
    assert ">1</a></td>" in plain.group(0)  # one dead letter, linked
    assert "some figures reached their cap" in html


async def test_job_filters_and_cursor_pages(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str]
) -> None:
    rt = served.runtime
    client, _ = admin
    ids = {await create_job(rt, "t-dash") for _ in range(53)}
    await make_failed(rt, "t-dash")

    first = await client.get("/dashboard/jobs?queue_name=t-dash&status=queued")
    seen = set(re.findall(r'href="/dashboard/jobs/([0-9a-f-]{36})"', first.text))
    assert len(seen) == 50
    next_link = re.search(r'href="(/dashboard/jobs\?[^"]*cursor=[^"]+)" rel="next"', first.text)
    assert next_link is not None
    second = await client.get(next_link.group(1).replace("&amp;", "&"))
    rest = set(re.findall(r'href="/dashboard/jobs/([0-9a-f-]{36})"', second.text))
    assert {uuid.UUID(i) for i in seen | rest} == ids
    assert 'rel="next"' not in second.text

    future = await client.get("/dashboard/jobs?created_from=2999-01-01T00:00")
    assert "No job matches." in future.text
    bad_time = await client.get("/dashboard/jobs?created_from=yesterday")
    assert bad_time.status_code == 422
    assert "created_from: not a date and time" in bad_time.text
    bad_cursor = await client.get("/dashboard/jobs?cursor=nonsense")
    assert bad_cursor.status_code == 422
    assert "cursor: not a cursor of this list" in bad_cursor.text
    assert (await client.get("/dashboard/jobs?status=lost")).status_code == 422
    assert (await client.get(f"/dashboard/jobs/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/dashboard/jobs/not-an-id")).status_code == 404


async def test_workers_page_shows_live_workers_and_the_jobs_they_run(
    served: ServedApp, admin: tuple[httpx.AsyncClient, str]
) -> None:
    rt = served.runtime
    client, _ = admin
    started, release = asyncio.Event(), asyncio.Event()

    @rt.registry.handler("t-hold")
    async def hold(job: Job) -> None:
        started.set()
        await release.wait()

    await add_queue(rt, "t-hold")
    job_id = await create_job(rt, "t-hold")
    await rt.migrator().move_due_jobs()
    worker = rt.worker(queues=["t-hold"], concurrency=7)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        deadline = asyncio.get_running_loop().time() + 10
        while not await rt.redis.exists(rt.keys.worker_heartbeat(worker.worker_id)):
            assert asyncio.get_running_loop().time() < deadline, "no heartbeat"
            await asyncio.sleep(0.01)
        html = (await client.get("/dashboard/workers")).text
    finally:
        release.set()
        worker.stop()
        await task
    row = re.search(rf'<tr data-worker="{worker.worker_id}">.*?</tr>', html, re.S)
    assert row is not None
    assert "t-hold" in row.group(0)
    assert "1 / 7" in row.group(0)
    assert str(job_id) in row.group(0)


async def test_pages_send_security_headers_and_their_server_time(
    admin: tuple[httpx.AsyncClient, str],
) -> None:
    client, _ = admin
    for path in ("/dashboard", "/dashboard/charts", "/dashboard/queues", "/dashboard/workers"):
        response = await client.get(path)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert re.fullmatch(r"app;dur=\d+\.\d", response.headers["server-timing"])


async def test_docs_pages_load_their_assets_from_the_service(served: ServedApp) -> None:
    async with _client(served) as client:
        for path in ("/docs", "/redoc"):
            html = (await client.get(path)).text
            urls = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert urls, path
            assert all(u.startswith("/docs-assets/") for u in urls), urls
            for url in urls:
                asset = await client.get(url)
                assert asset.status_code == 200, url
                assert len(asset.content) > 1000, url
        assert "cdn" not in (await client.get("/docs")).text.lower()


async def test_history_adds_up_across_processes_and_outlives_the_api(
    settings: Settings, clean_db: None
) -> None:
    """Two writers (as two worker processes would) add to the same per-minute buckets;
    a dashboard started afterwards (an API restart) charts what they wrote."""
    keyed = api_only(settings, auth_enabled=True, api_keys=API_KEYS, dashboard_secret="x")
    async with serve_app(keyed) as first:
        rt = first.runtime
        await add_queue(rt, "t-hist")
        for writer in (MetricsWriter(rt.keys), MetricsWriter(rt.keys)):
            async with redis_batch(rt.redis) as pipe:
                writer.count(pipe, "completed", "t-hist", 20)
                writer.count(pipe, "failed", "t-hist", 2)
                writer.count(pipe, "started", "t-hist", 22)  # not kept in the history
                for seconds in (0.004, 0.004, 0.02, 3.0):
                    writer.observe(pipe, "wait_seconds", "t-hist", seconds)
        # Each resolution's buckets expire on their own (a minute boundary may have
        # passed between the writes: then there are two buckets of each).
        for resolution, ttl in HISTORY_RESOLUTIONS.items():
            pattern = rt.keys.metric_history(resolution, 0)[:-1] + "*"
            keys = [k async for k in rt.redis.scan_iter(match=pattern, count=10_000)]
            assert 1 <= len(keys) <= 2
            for key in keys:
                assert ttl - 60 < await rt.redis.ttl(key) <= ttl
        buckets = await read_history(rt.redis, rt.keys, WINDOWS["hour"])
        assert sum(b.total("completed", "t-hist") for b in buckets) == 40
        assert sum(b.total("failed", "t-hist") for b in buckets) == 4
        assert not any("started" in b.counters for b in buckets)
        assert merge_wait(buckets, "t-hist") == {"0.005": 4, "0.025": 2, "5.0": 2}

    async with serve_app(keyed) as restarted, _client(restarted) as client:
        await login(client, PRODUCER_KEY)
        for window in ("hour", "day"):
            html = (await client.get(f"/dashboard/charts?window={window}&queue=t-hist")).text
            row = re.search(r"<th scope=\"row\">t-hist</th>.*?</tr>", html, re.S)
            assert row is not None, window
            cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
            assert cells[:4] == ["0", "40", "4", "0"], window
            assert "<polyline" in html
            assert "Wait time in t-hist" in html
        assert (await client.get("/dashboard/charts?window=year")).status_code == 422
