"""FastAPI dependencies, declared once as Annotated aliases.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread pool,
a thread hop per dependency per request on the hottest route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.jobs.created import CreatedCounter
from app.api.jobs.creation import GroupCommit
from app.runtime import Runtime
from app.settings import Settings

# Who an operator's action is attributed to in job_logs.actor when no API key named it.
DEFAULT_ACTOR = "anonymous"


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_actor(request: Request) -> str:
    actor: str = getattr(request.state, "actor", None) or DEFAULT_ACTOR
    return actor


async def get_group_commit(request: Request) -> GroupCommit:
    """The app's group commit, built and closed by the lifespan (app.main)."""
    group: GroupCommit = request.app.state.group_commit
    return group


async def get_created_counter(request: Request) -> CreatedCounter:
    """The app's counter of created jobs (app.api.jobs.created), built by the lifespan."""
    counter: CreatedCounter = request.app.state.created_counter
    return counter


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ActorDep = Annotated[str, Depends(get_actor)]
GroupCommitDep = Annotated[GroupCommit, Depends(get_group_commit)]
CreatedCounterDep = Annotated[CreatedCounter, Depends(get_created_counter)]
