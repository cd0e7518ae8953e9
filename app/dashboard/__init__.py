"""The browser dashboard at /dashboard: server-rendered pages over the same stores and
API keys as the HTTP API (see README, "Dashboard")."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from app.api.auth import Authenticator
from app.dashboard import forms, pages
from app.dashboard.session import Sessions
from app.dashboard.views import HERE, DashboardError, LoginRequired, render, secure
from app.settings import Settings


def install_dashboard(app: FastAPI, settings: Settings, authenticator: Authenticator) -> None:
    """Mount the dashboard's pages, forms and static files on `app`."""
    app.state.dashboard_sessions = Sessions(
        settings.dashboard_secret, settings.dashboard_session_ttl, authenticator
    )
    app.mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    app.include_router(forms.router)
    app.include_router(pages.router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return secure(RedirectResponse(f"/dashboard/login?next={_quote(target)}", status_code=303))

    @app.exception_handler(DashboardError)
    async def _error(request: Request, exc: DashboardError) -> Response:
        viewer = app.state.dashboard_sessions.viewer(request)
        context = {"page": "error", "title": exc.title, "message": exc.message}
        return render(request, "error.html", context, viewer=viewer, status_code=exc.status_code)


def _quote(target: str) -> str:
    from urllib.parse import quote

    return quote(target, safe="/")
