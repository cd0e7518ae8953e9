"""Handlers for the seed's queues, used by `make run` until you point HANDLER_MODULES at
your own modules. They log what they would do; replace them with real work."""

from __future__ import annotations

import logging

from app.registry import Job, handler

log = logging.getLogger("hybridq.handlers")


@handler("email-sending", timeout=60)
async def send_email(job: Job) -> None:
    log.info("would send email for job %s (attempt %d): %s", job.id, job.attempt, job.payload)


@handler("warmup:process")
async def process_warmup(job: Job) -> None:
    log.info("would process warm-up for job %s", job.id)


@handler("bounce:process")
async def process_bounce(job: Job) -> None:
    log.info("would process bounce for job %s", job.id)


@handler("webhook:process")
async def process_webhook(job: Job) -> None:
    log.info("would deliver webhook for job %s", job.id)


@handler("analytics:daily-aggregate")
@handler("analytics:campaign-aggregate")
@handler("analytics:billing-calculate")
async def aggregate_analytics(job: Job) -> None:
    log.info("would aggregate analytics for job %s on %s", job.id, job.queue_name)
