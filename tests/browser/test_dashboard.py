"""The dashboard and the API docs in a real Chromium, against the real service, clicked
through as an operator would. Each test saves screenshots of the pages it visits in its
tmp_path (the paths are printed)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, Dialog, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import Deployment, log_in
from tests.support.dashboard import ADMIN_KEY, PRODUCER_KEY


def shot(page: Page, tmp_path: Path, name: str, *, full_page: bool = True) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, full_page=full_page)
    print(f"screenshot: {path}")


def test_admin_watches_counts_change_while_jobs_run_then_reads_a_timeline(
    deployment: Deployment, context: BrowserContext, tmp_path: Path
) -> None:
    page = context.new_page()
    log_in(page, deployment.base, ADMIN_KEY)
    row = page.locator('tr[data-queue="t-slow"]')
    expect(row.locator('[data-col="running"]')).to_have_text("0")
    completed_before = int(row.locator('[data-col="completed_hour"]').inner_text())

    ids = [deployment.create_job("t-slow", {"seconds": 3}) for _ in range(3)]

    # The page refreshes itself (no reload here): the jobs show as running, then done.
    expect(row.locator('[data-col="running"]')).to_have_text("3")
    expect(page.locator('[data-total="running"]')).to_have_text("3")
    shot(page, tmp_path, "overview-running")
    expect(row.locator('[data-col="completed_hour"]')).to_have_text(str(completed_before + 3))
    expect(row.locator('[data-col="running"]')).to_have_text("0")
    shot(page, tmp_path, "overview-done")

    # A job for the workers page below, running while the next check waits.
    running = deployment.create_job("t-slow", {"seconds": 6})
    # Pausing the auto-refresh stops the requests.
    toggle = page.get_by_role("button", name="Pause auto-refresh")
    toggle.click()
    expect(page.get_by_role("button", name="Resume auto-refresh")).to_have_attribute(
        "aria-pressed", "true"
    )
    with (
        pytest.raises(PlaywrightTimeoutError),
        page.expect_request(lambda r: r.headers.get("x-dashboard-fragment") == "1", timeout=2500),
    ):
        pass  # three refresh periods without one request
    page.get_by_role("button", name="Resume auto-refresh").click()

    # Open one of the jobs from the list and read its timeline.
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.get_by_label("Queue").select_option("t-slow")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs-table tbody tr")).to_have_count(
        4
    )  # the three, and the one still running
    page.locator(f'#jobs-table a[href="/dashboard/jobs/{ids[0]}"]').click()
    expect(page.get_by_role("heading", name=f"Job {ids[0]}")).to_be_visible()
    timeline = page.locator("#timeline tbody tr")
    expect(timeline).to_have_count(1)
    expect(timeline.first).to_contain_text("completed")
    expect(timeline.first).to_contain_text("-")  # the worker id (host-pid-suffix)
    expect(page.locator("#payload")).to_contain_text("seconds")
    shot(page, tmp_path, "job-completed")

    # The workers page: both workers, what they serve, and the job one of them runs now.
    deployment.wait_for_status(running, "running")
    page.get_by_role("link", name="Workers").click()
    workers = page.locator("#workers-table tbody tr[data-worker]")
    expect(workers).to_have_count(2)  # the API's embedded worker and python -m app.worker
    for queue in ("t-fail", "t-flaky", "t-ok", "t-slow", "t-switch"):
        expect(workers.first).to_contain_text(queue)
    expect(page.locator(f'#workers-table a[href="/dashboard/jobs/{running}"]')).to_have_count(1)
    shot(page, tmp_path, "workers")


def test_a_dead_letter_is_replayed_from_the_page_and_its_timeline_names_the_actor(
    deployment: Deployment, context: BrowserContext, tmp_path: Path
) -> None:
    flag = tmp_path / "smtp-down"
    flag.touch()
    job_id = deployment.create_job(
        "t-switch",
        {"flag": str(flag), "message": "SMTP 550 mailbox unavailable", "secret": "4111-1111"},
        max_attempts=2,
    )
    deployment.wait_for_status(job_id, "failed")

    page = context.new_page()
    log_in(page, deployment.base, ADMIN_KEY)
    page.get_by_role("link", name="Dead letters").click()
    page.get_by_label("Queue").select_option("t-switch")
    page.get_by_role("button", name="Show").click()
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_contain_text("RuntimeError: SMTP 550 mailbox unavailable")
    expect(row).to_contain_text("2 / 2")
    shot(page, tmp_path, "dead-letters")

    flag.unlink()  # the outage is over
    row.get_by_role("button", name=f"Replay job {job_id}").click()
    expect(page.get_by_role("status")).to_contain_text("The job was replayed")
    deployment.wait_for_status(job_id, "completed")
    page.reload()
    expect(page.locator(".job-head .badge")).to_have_text("completed")
    events = page.locator("#timeline tbody tr")
    expect(events).to_have_count(4)
    texts = [events.nth(i).inner_text() for i in range(4)]
    assert [t.split("\t")[1].strip() for t in texts] == [
        "failed",
        "failed",
        "replayed",
        "completed",
    ]
    assert "key:ops" in texts[2] and "replayed from the dashboard" in texts[2]
    # The encrypted field is marked, never shown.
    expect(page.locator("#payload")).to_contain_text("encrypted")
    expect(page.locator("#payload")).not_to_contain_text("4111")
    shot(page, tmp_path, "job-replayed")


def test_a_paused_queue_holds_new_jobs_until_it_is_resumed(
    deployment: Deployment, context: BrowserContext, tmp_path: Path
) -> None:
    page = context.new_page()
    log_in(page, deployment.base, ADMIN_KEY)
    page.get_by_role("link", name="Queues").click()
    page.get_by_role("button", name="Pause t-ok").click()
    expect(page.get_by_role("status")).to_contain_text("t-ok: The queue is paused")
    expect(page.locator('tr[data-queue="t-ok"] .badge')).to_have_text("paused")
    shot(page, tmp_path, "queues-paused")

    held = deployment.create_job("t-ok")
    # A job of an active queue created after it runs to the end: the migrator had its
    # chance to move the held one, and did not.
    passing = deployment.create_job("t-slow", {"seconds": 0})
    deployment.wait_for_status(passing, "completed")
    assert deployment.job(held)["status"] == "queued"
    page.get_by_role("link", name="Overview").click()
    expect(page.locator('tr[data-queue="t-ok"] [data-col="queued"]')).to_have_text("1")
    expect(page.locator('tr[data-queue="t-ok"] .badge')).to_have_text("paused")

    page.get_by_role("link", name="Queues").click()
    page.get_by_role("button", name="Resume t-ok").click()
    expect(page.locator('tr[data-queue="t-ok"] .badge')).to_have_text("active")
    deployment.wait_for_status(held, "completed")


def test_a_producer_key_is_read_only_and_its_forged_post_is_refused(
    deployment: Deployment, context: BrowserContext, tmp_path: Path
) -> None:
    flag = tmp_path / "down"
    flag.touch()
    failed = deployment.create_job("t-switch", {"flag": str(flag)}, max_attempts=1)
    deployment.wait_for_status(failed, "failed")

    page = context.new_page()
    log_in(page, deployment.base, PRODUCER_KEY)
    expect(page.locator(".who")).to_contain_text("read-only")
    for name, path in (
        ("producer-job", f"/dashboard/jobs/{failed}"),
        ("producer-dead-letters", "/dashboard/dead-letters"),
        ("producer-queues", "/dashboard/queues"),
    ):
        page.goto(deployment.base + path)
        expect(page.locator("main h1")).to_be_visible()
        expect(page.locator("main form[method=post]")).to_have_count(0)
        buttons = page.get_by_role("button", name=re.compile("Replay|Discard|Cancel|Pause|Save"))
        expect(buttons).to_have_count(0)
        shot(page, tmp_path, name)

    # The session's own CSRF token (from its logout form) does not make it an admin.
    token = page.locator('header input[name="csrf_token"]').get_attribute("value")
    assert token
    forged = page.request.post(
        f"{deployment.base}/dashboard/jobs/{failed}/replay", form={"csrf_token": token}
    )
    assert forged.status == 403
    assert deployment.job(failed)["status"] == "failed"


def test_a_post_without_the_csrf_token_is_refused(
    deployment: Deployment, context: BrowserContext
) -> None:
    later = deployment.create_job("t-ok", run_at="2999-01-01T00:00:00Z")
    page = context.new_page()
    log_in(page, deployment.base, ADMIN_KEY)
    refused = page.request.post(f"{deployment.base}/dashboard/jobs/{later}/cancel", form={})
    assert refused.status == 403
    assert "CSRF" in refused.text()
    assert deployment.job(later)["status"] == "scheduled"  # due in 2999: not cancelled
    # The same action from the page (token included) is accepted.
    page.goto(f"{deployment.base}/dashboard/jobs/{later}")
    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel this job?"
    page.get_by_role("button", name=f"Cancel job {later}").click()
    expect(page.get_by_role("status")).to_contain_text("The job was cancelled")
    assert deployment.job(later)["status"] == "cancelled"


def test_html_in_payloads_errors_and_queue_names_is_shown_as_text(
    deployment: Deployment, context: BrowserContext, tmp_path: Path
) -> None:
    evil_queue = "t-<script>alert(3)</script>"
    assert deployment.api.post("/queues", json={"name": evil_queue}).status_code == 201
    flag = tmp_path / "down"
    flag.touch()
    job_id = deployment.create_job(
        "t-switch",
        {
            "flag": str(flag),
            "message": '<img src=x onerror="alert(2)"><b>bold</b>',
            "note": "<script>alert(1)</script>",
        },
        max_attempts=1,
    )
    deployment.wait_for_status(job_id, "failed")

    page = context.new_page()
    dialogs: list[str] = []

    def opened(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", opened)
    log_in(page, deployment.base, ADMIN_KEY)
    expect(page.locator("#queue-table")).to_contain_text(evil_queue)
    page.goto(f"{deployment.base}/dashboard/jobs/{job_id}")
    expect(page.locator("#payload")).to_contain_text('"<script>alert(1)</script>"')
    expect(page.locator("#last-error")).to_have_text(
        'RuntimeError: <img src=x onerror="alert(2)"><b>bold</b>'
    )
    expect(page.locator("main img, main b")).to_have_count(0)
    shot(page, tmp_path, "job-escaped")
    page.goto(f"{deployment.base}/dashboard/dead-letters")
    expect(page.locator(f'tr[data-job="{job_id}"]')).to_contain_text("<b>bold</b>")
    page.goto(f"{deployment.base}/dashboard/jobs")
    expect(page.locator("#jobs-table")).to_contain_text("<b>bold</b>")
    assert dialogs == []
    # Only the dashboard's own script is on the pages.
    scripts = page.locator("script").evaluate_all("els => els.map(e => e.src)")
    assert scripts == [f"{deployment.base}/dashboard/static/dashboard.js"]


def _block_the_internet(context: BrowserContext) -> tuple[list[str], list[str]]:
    """Route every request: 127.0.0.1 goes through, anything else is aborted and counted."""
    local: list[str] = []
    blocked: list[str] = []

    def handle(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            local.append(url)
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**/*", handle)
    return local, blocked


def test_api_docs_render_with_no_request_leaving_the_machine(
    deployment: Deployment, context: BrowserContext, tmp_path: Path
) -> None:
    local, blocked = _block_the_internet(context)
    page = context.new_page()
    page.goto(f"{deployment.base}/docs")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible()
    assert operations.count() >= 15
    expect(
        page.locator(".opblock-summary-path", has_text="/dead-letter/{job_id}/replay")
    ).to_have_count(1)
    shot(page, tmp_path, "docs", full_page=False)

    page.goto(f"{deployment.base}/redoc")
    expect(page.get_by_role("heading", name=re.compile(r"Create a job$"))).to_be_visible()
    shot(page, tmp_path, "redoc", full_page=False)  # the whole page is 16,000 px
    assert blocked == []
    assert any("/docs-assets/swagger-ui-bundle.js" in u for u in local)
    assert any("/docs-assets/redoc.standalone.js" in u for u in local)


def test_every_page_passes_an_accessibility_check(
    deployment: Deployment, context: BrowserContext, tmp_path: Path
) -> None:
    """axe-core at "serious" and above on every page; the screenshots of each page."""
    _, blocked = _block_the_internet(context)
    some_job = deployment.create_job("t-slow", {"seconds": 0})
    deployment.wait_for_status(some_job, "completed")
    page = context.new_page()
    axe = Axe()
    problems: dict[str, list[str]] = {}

    def check(name: str) -> None:
        shot(page, tmp_path, name)
        results = axe.run(page)
        found = [(v["id"], v["impact"]) for v in results.response["violations"]]
        print(f"axe on {name}: {found or 'no violation'}")
        serious = [
            f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
            for v in results.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        if serious:
            problems[name] = serious

    page.goto(f"{deployment.base}/dashboard/login")
    check("login")
    log_in(page, deployment.base, ADMIN_KEY)
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()  # the first stop: skip to content
    pages = {
        "overview": "/dashboard",
        "charts-hour": "/dashboard/charts",
        "charts-day": "/dashboard/charts?window=day&queue=t-slow",
        "jobs": "/dashboard/jobs",
        "job": f"/dashboard/jobs/{some_job}",
        "dead-letters-page": "/dashboard/dead-letters",
        "replay-all": "/dashboard/dead-letters/replay-all?queue_name=t-switch",
        "queues": "/dashboard/queues",
        "workers-page": "/dashboard/workers",
    }
    for name, path in pages.items():
        page.goto(deployment.base + path)
        check(name)
    assert problems == {}
    assert blocked == []
