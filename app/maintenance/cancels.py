"""Cancels no worker will carry out: a running job asked to stop whose worker died
before it could (its lease expired), or one handed back to the queue before its worker
saw the request. They end `cancelled` instead of running again. Runs before the lease
rescue in each pass, so a dead worker's cancelled job is not retried first."""

from __future__ import annotations

from app.db.cancels import CancelStore
from app.settings import Settings

BATCH = 1000


class AbandonedCancels:
    name = "abandoned-cancels"

    def __init__(self, store: CancelStore, settings: Settings) -> None:
        self.store = store
        self.interval = settings.maintenance_interval

    async def run_once(self) -> int:
        """One bounded pass; how many jobs it cancelled."""
        return await self.store.cancel_abandoned(BATCH)
