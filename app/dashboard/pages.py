"""The dashboard's pages (GET): overview, charts, jobs, a job, dead letters, queues,
workers. Each needs a session; producer and admin keys see the same pages, and only an
admin's carry the forms that act."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.dashboard.charts import history_charts
from app.dashboard.data import BadInput
from app.dashboard.history import WINDOWS
from app.dashboard.queries import DEAD_LETTERS_CAP
from app.dashboard.views import DashboardError, DataDep, ViewerDep, render
from app.jobs.transitions import JOB_STATUSES

router = APIRouter(prefix="/dashboard", include_in_schema=False)

# Notices shown after an action (the redirect names one; nothing typed is reflected).
DONE = {
    "replay": "The job was replayed: it is queued again.",
    "discard": "The job was discarded.",
    "cancel": "The job was cancelled.",
    "paused": "The queue is paused: the migrator moves none of its jobs until it is resumed.",
    "resumed": "The queue is resumed.",
    "priority": "The default priority is saved (for jobs created from now on).",
}

Text = Annotated[str | None, Query(max_length=200)]


def _notice(done: str | None) -> str | None:
    return DONE.get(done or "")


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, viewer: ViewerDep, data: DataDep) -> HTMLResponse:
    ov = await data.overview()
    # The auto-refresh asks for the live part alone.
    fragment = request.headers.get("x-dashboard-fragment") == "1"
    template = "_overview_live.html" if fragment else "overview.html"
    return render(request, template, {"page": "overview", "ov": ov}, viewer=viewer)


@router.get("/charts", response_class=HTMLResponse)
async def charts(
    request: Request,
    viewer: ViewerDep,
    data: DataDep,
    window: Text = "hour",
    queue: Text = None,
) -> HTMLResponse:
    chosen = WINDOWS.get(window or "hour")
    if chosen is None:
        raise DashboardError(422, "Unknown window", f"window must be one of {', '.join(WINDOWS)}")
    buckets = await data.history(chosen)
    names = [q.name for q in await data.queue_rows()]
    built = history_charts(chosen, buckets, queue or None)
    context = {
        "page": "charts",
        "h": built,
        "windows": WINDOWS,
        "queue": queue or "",
        "names": names,
    }
    return render(request, "charts.html", context, viewer=viewer)


def _when(field: str, value: str | None) -> datetime | None:
    """A time typed in the filter form (datetime-local, read as UTC) or ISO 8601."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(field, "not a date and time (YYYY-MM-DD HH:MM, UTC)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.get("/jobs", response_class=HTMLResponse)
async def jobs(
    request: Request,
    viewer: ViewerDep,
    data: DataDep,
    queue_name: Text = None,
    status: Text = None,
    created_from: Text = None,
    created_to: Text = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    filters = {
        "queue_name": queue_name or "",
        "status": status or "",
        "created_from": created_from or "",
        "created_to": created_to or "",
    }
    context: dict[str, Any] = {
        "page": "jobs",
        "filters": filters,
        "statuses": JOB_STATUSES,
        "names": [q.name for q in await data.queue_rows()],
        "items": [],
        "next_cursor": None,
        "error": None,
        "cursor": cursor or "",
    }
    try:
        if status and status not in JOB_STATUSES:
            raise BadInput("status", f"must be one of {', '.join(JOB_STATUSES)}")
        items, next_cursor = await data.jobs(
            queue_name=queue_name or None,
            status=status or None,
            created_from=_when("created_from", created_from),
            created_to=_when("created_to", created_to),
            cursor=cursor,
        )
    except BadInput as exc:
        context["error"] = exc
        return render(request, "jobs.html", context, viewer=viewer, status_code=422)
    context.update(items=items, next_cursor=next_cursor)
    return render(request, "jobs.html", context, viewer=viewer)


def parse_job_id(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise DashboardError(404, "No such job", "This is not a job id.") from None


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job(
    request: Request, job_id: str, viewer: ViewerDep, data: DataDep, done: Text = None
) -> HTMLResponse:
    view = await data.job(parse_job_id(job_id))
    if view is None:
        raise DashboardError(
            404, "No such job", "No job has this id (retention may have deleted it)."
        )
    context = {"page": "jobs", "v": view, "notice": _notice(done)}
    return render(request, "job.html", context, viewer=viewer)


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters(
    request: Request,
    viewer: ViewerDep,
    data: DataDep,
    queue_name: Text = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    done: Text = None,
    replayed: Annotated[int | None, Query(ge=0)] = None,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "page": "dead",
        "queue_name": queue_name or "",
        "names": [q.name for q in await data.queue_rows()],
        "notice": _notice(done),
        "replayed": replayed,
        "error": None,
        "items": [],
        "next_cursor": None,
        "cursor": cursor or "",
    }
    try:
        items, next_cursor = await data.dead_letters(queue_name=queue_name or None, cursor=cursor)
    except BadInput as exc:
        context["error"] = exc
        return render(request, "dead_letters.html", context, viewer=viewer, status_code=422)
    context.update(items=items, next_cursor=next_cursor)
    return render(request, "dead_letters.html", context, viewer=viewer)


@router.get("/dead-letters/replay-all", response_class=HTMLResponse)
async def confirm_replay_all(
    request: Request, viewer: ViewerDep, data: DataDep, queue_name: Text = None
) -> HTMLResponse:
    if not queue_name:
        raise DashboardError(422, "Choose a queue", "Replay all needs a queue: pick one first.")
    count = await data.dead_letter_count(queue_name)
    context = {"page": "dead", "queue_name": queue_name, "count": count, "cap": DEAD_LETTERS_CAP}
    return render(request, "replay_all.html", context, viewer=viewer)


@router.get("/queues", response_class=HTMLResponse)
async def queues(
    request: Request, viewer: ViewerDep, data: DataDep, done: Text = None, name: Text = None
) -> HTMLResponse:
    context = {
        "page": "queues",
        "queues": await data.queue_rows(),
        "notice": _notice(done),
        "changed": name or "",
    }
    return render(request, "queues.html", context, viewer=viewer)


@router.get("/workers", response_class=HTMLResponse)
async def workers(request: Request, viewer: ViewerDep, data: DataDep) -> HTMLResponse:
    info = await data.workers()
    fragment = request.headers.get("x-dashboard-fragment") == "1"
    template = "_workers_live.html" if fragment else "workers.html"
    return render(request, template, {"page": "workers", "w": info}, viewer=viewer)
