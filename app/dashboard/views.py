"""Rendering of the dashboard's pages: the templates (Jinja2, autoescaping on, so
everything a job carries is shown as text), their filters, the security headers every
page gets, and who is looking (the session) as FastAPI dependencies."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from app.dashboard.data import DashboardData
from app.dashboard.session import Sessions, Viewer
from app.runtime import Runtime
from app.settings import Settings

NONE = "\N{EN DASH}"  # shown for an empty value

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# No inline script or style, nothing from another origin, no framing: a payload that
# slipped past escaping still could not run.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

NAV = (
    ("overview", "Overview", "/dashboard"),
    ("charts", "Charts", "/dashboard/charts"),
    ("jobs", "Jobs", "/dashboard/jobs"),
    ("dead", "Dead letters", "/dashboard/dead-letters"),
    ("queues", "Queues", "/dashboard/queues"),
    ("workers", "Workers", "/dashboard/workers"),
)


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form."""


class DashboardError(Exception):
    """A page answered with an error status and a message, as HTML."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message


# --- filters ------------------------------------------------------------------------


def number(value: int | float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,}"


def capped(value: int, cap: int) -> str:
    """A count read up to `cap` rows: more than the cap shows as "cap+"."""
    return f"{cap:,}+" if value > cap else f"{value:,}"


def duration(seconds: float | None) -> str:
    """Seconds as a person reads them: 4.2 ms, 1.5 s, 12 s, 3 min 4 s, 2 h 5 min, 3 d 2 h."""
    if seconds is None or math.isnan(seconds):
        return NONE
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def when(value: datetime | None) -> str:
    if value is None:
        return NONE
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def query(params: dict[str, Any]) -> str:
    """A query string of the non-empty parameters."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


templates.env.filters.update(number=number, capped=capped, duration=duration, when=when, iso=iso)
templates.env.globals.update(query=query, nav=NAV)


# --- dependencies -----------------------------------------------------------------------


def _mark_start(request: Request) -> None:
    """When the page's work began (the first dependency), for Server-Timing."""
    if getattr(request.state, "dashboard_started", None) is None:
        request.state.dashboard_started = time.perf_counter()


async def get_data(request: Request) -> DashboardData:
    _mark_start(request)
    runtime: Runtime = request.app.state.runtime
    return DashboardData(runtime)


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.dashboard_sessions
    return sessions


async def get_viewer(request: Request) -> Viewer:
    _mark_start(request)
    viewer = sessions_of(request).viewer(request)
    if viewer is None:
        raise LoginRequired()
    return viewer


DataDep = Annotated[DashboardData, Depends(get_data)]
ViewerDep = Annotated[Viewer, Depends(get_viewer)]


# --- rendering --------------------------------------------------------------------------


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    viewer: Viewer | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The page, with the security headers and its server time (Server-Timing)."""
    settings: Settings = request.app.state.settings
    refresh = f"{settings.dashboard_refresh_seconds:g}"
    response = templates.TemplateResponse(
        request,
        template,
        {"viewer": viewer, "refresh_seconds": refresh, **context},
        status_code=status_code,
    )
    secure(response)
    started = getattr(request.state, "dashboard_started", None)
    if started is not None:
        elapsed = 1000 * (time.perf_counter() - started)
        response.headers["Server-Timing"] = f"app;dur={elapsed:.1f}"
    return response


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
