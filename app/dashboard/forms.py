"""The dashboard's forms (POST): log in and out, and the actions of an admin key.

Every one checks its CSRF token first (403 without it), then the session (403 without
one), then the scope (403 for a producer key): a forged or cross-site POST changes
nothing. A done action redirects (303) to the page it came from, which says what
happened; a refused one shows the API's own message with its status (404 or 409).
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from app.dashboard.pages import parse_job_id
from app.dashboard.session import Viewer
from app.dashboard.views import DashboardError, DataDep, render, secure, sessions_of

log = logging.getLogger("hybridq.dashboard")

router = APIRouter(prefix="/dashboard", include_in_schema=False)

NextField = Annotated[str, Form(max_length=500)]


def _safe_next(target: str) -> str:
    """Only a dashboard path: never an open redirect to another site."""
    if target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


def _redirect(url: str) -> Response:
    return secure(RedirectResponse(url, status_code=303))


async def acting_viewer(request: Request, form: FormData) -> Viewer:
    """The admin behind a state-changing form, or a 403 saying why not."""
    sessions = sessions_of(request)
    viewer = sessions.viewer(request)
    token = form.get("csrf_token")
    if viewer is None:
        raise DashboardError(403, "Not logged in", "Log in to the dashboard first.")
    if not isinstance(token, str) or not sessions.csrf_ok(viewer, token):
        raise DashboardError(
            403, "Refused", "This form has no valid CSRF token: reload the page and try again."
        )
    if not viewer.can_act:
        raise DashboardError(
            403,
            "Read-only key",
            f"The key {viewer.name!r} has the producer scope: it may look, not act.",
        )
    return viewer


# --- log in / out -----------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/dashboard") -> HTMLResponse:
    return login_form(request, next_url=_safe_next(next))


def login_form(request: Request, *, next_url: str, error: str | None = None) -> HTMLResponse:
    sessions = sessions_of(request)
    nonce, token = sessions.login_form(request)
    context = {
        "page": "login",
        "login_token": token,
        "next": next_url,
        "error": error,
        "auth_enabled": sessions.auth.enabled,
    }
    response = render(request, "login.html", context, status_code=401 if error else 200)
    sessions.set_login_cookie(request, response, nonce)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    sessions = sessions_of(request)
    next_url = _safe_next(str(form.get("next") or "/dashboard"))
    token = form.get("login_token")
    if not isinstance(token, str) or not sessions.login_token_ok(request, token):
        raise DashboardError(
            403, "Refused", "The login form expired or did not come from this page: try again."
        )
    key = None
    if sessions.auth.enabled:
        presented = form.get("api_key")
        key = sessions.identify(presented if isinstance(presented, str) else "")
        if key is None:
            return login_form(request, next_url=next_url, error="This API key is not valid.")
    response = _redirect(next_url)
    sessions.start(request, response, key)
    log.info("dashboard login: %s", f"key:{key.name}" if key else "anonymous (auth disabled)")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    sessions = sessions_of(request)
    viewer = sessions.viewer(request)
    token = form.get("csrf_token")
    if viewer is not None and (not isinstance(token, str) or not sessions.csrf_ok(viewer, token)):
        raise DashboardError(403, "Refused", "This form has no valid CSRF token.")
    response = _redirect("/dashboard/login")
    sessions.end(response)
    return response


# --- actions ----------------------------------------------------------------------------


@router.post("/jobs/{job_id}/{action}")
async def job_action(request: Request, job_id: str, action: str, data: DataDep) -> Response:
    viewer = await acting_viewer(request, await request.form())
    if action not in ("cancel", "replay", "discard"):
        raise DashboardError(404, "No such action", "Jobs can be cancelled, replayed or discarded.")
    ident = parse_job_id(job_id)
    outcome = await data.act(action, ident, viewer.actor)  # type: ignore[arg-type]
    if not outcome.ok:
        title = "No such job" if outcome.status_code == 404 else "Not possible now"
        raise DashboardError(outcome.status_code, title, outcome.message)
    return _redirect(f"/dashboard/jobs/{ident}?done={action}")


@router.post("/dead-letters/replay-all")
async def replay_all(request: Request, data: DataDep) -> Response:
    form = await request.form()
    viewer = await acting_viewer(request, form)
    queue = form.get("queue_name")
    if not isinstance(queue, str) or not queue or len(queue) > 100:
        raise DashboardError(422, "Choose a queue", "queue_name: give the queue to replay.")
    n = await data.replay_all(queue, viewer.actor)
    return _redirect(f"/dashboard/dead-letters?queue_name={quote(queue, safe='')}&replayed={n}")


@router.post("/queues/update")
async def update_queue(request: Request, data: DataDep) -> Response:
    form = await request.form()
    await acting_viewer(request, form)
    name, op = form.get("name"), form.get("op")
    if not isinstance(name, str) or not name:
        raise DashboardError(422, "Choose a queue", "name: give the queue to change.")
    if op == "pause":
        row, done = await data.update_queue(name, is_active=False), "paused"
    elif op == "resume":
        row, done = await data.update_queue(name, is_active=True), "resumed"
    elif op == "priority":
        raw = form.get("default_priority")
        try:
            priority = int(str(raw))
        except ValueError:
            priority = -1
        if not 0 <= priority <= 1000:
            raise DashboardError(
                422, "Bad priority", "default_priority: a whole number from 0 to 1000."
            )
        row, done = await data.update_queue(name, default_priority=priority), "priority"
    else:
        raise DashboardError(422, "Unknown change", "op must be pause, resume or priority.")
    if row is None:
        raise DashboardError(404, "No such queue", f"No queue is named {name!r}.")
    return _redirect(f"/dashboard/queues?done={done}&name={quote(name, safe='')}")
