"""The handlers of the seed's queues, registered when `HANDLER_MODULES` names
`app.handlers`. Each is a few lines: parse the payload with its model (the same model
that refuses bad jobs at POST /jobs), hand it to its service, and let the service say
the outcome: return (done), PermanentFailure (no more attempts), Snooze (again later,
no attempt spent) or any other exception (the attempt failed, retried with backoff).
"""

from __future__ import annotations

from app.handlers.analytics import BILLING, CAMPAIGN, DAILY
from app.handlers.context import WARMUP_TIMEOUT, context
from app.handlers.payloads import (
    BillingPayload,
    BouncePayload,
    CampaignAggregatePayload,
    DailyAggregatePayload,
    EmailPayload,
    WarmupPayload,
    WebhookPayload,
    parse,
)
from app.registry import Job, handler


@handler("email-sending", payload_model=EmailPayload)
async def send_email(job: Job) -> None:
    """One email to one recipient over SMTP (app.handlers.sender)."""
    ctx = await context()
    payload = parse(EmailPayload, job.payload)
    await ctx.sender.send(ctx.sender.compose(job.id, job.attempt, payload))


@handler("bounce:process", payload_model=BouncePayload)
async def process_bounce(job: Job) -> None:
    """Record a DSN's bounces; suppress hard-bounced addresses (app.handlers.bounces)."""
    ctx = await context()
    await ctx.bounces.process(job.id, job.attempt, parse(BouncePayload, job.payload).message)


@handler("webhook:process", payload_model=WebhookPayload)
async def deliver_webhook(job: Job) -> None:
    """POST a signed event (app.handlers.webhooks)."""
    ctx = await context()
    await ctx.webhooks.deliver(job.id, parse(WebhookPayload, job.payload))


@handler("warmup:process", timeout=WARMUP_TIMEOUT, payload_model=WarmupPayload)
async def process_warmup(job: Job) -> None:
    """Today's warm-up messages of one mailbox (app.handlers.warmup)."""
    ctx = await context()
    await ctx.warmup.run(job.id, job.attempt, parse(WarmupPayload, job.payload))


# Yesterday's (UTC) daily aggregates, every night: a periodic job (app.jobs.schedule).
@handler(DAILY, payload_model=DailyAggregatePayload, cron="30 0 * * *", payload={})
@handler(CAMPAIGN, payload_model=CampaignAggregatePayload)
@handler(BILLING, payload_model=BillingPayload)
async def run_analytics(job: Job) -> None:
    """Aggregate the email events, tracked in analytics_jobs (app.handlers.analytics)."""
    ctx = await context()
    await ctx.analytics.run(job)
