"""Workers: pop, claim, run, record."""

from app.worker.runner import Worker, make_worker_id

__all__ = ["Worker", "make_worker_id"]
