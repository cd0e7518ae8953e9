"""The job routes: create (one or a batch), read (status, list, timeline), cancel."""

from fastapi import APIRouter

from app.api.jobs import cancel, create, read

router = APIRouter()
# Order matters where paths overlap: /jobs/batch before /jobs/{job_id}.
for module in (create, read, cancel):
    router.include_router(module.router)
