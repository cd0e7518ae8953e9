"""The analytics statements: each run's row in analytics_jobs, and the aggregates computed
from email_events. Each aggregate replaces the rows of its period (delete, then insert
from the events) in one transaction under an advisory lock of that period, so a run is
idempotent and two runs of the same period never interleave."""

from __future__ import annotations

from typing import Final

# The counts of one group of email events (a fragment of the statements below).
EVENT_COUNTS: Final = """count(*) FILTER (WHERE event = 'sent'),
       count(*) FILTER (WHERE event = 'deferred'),
       count(*) FILTER (WHERE event = 'failed'),
       count(*) FILTER (WHERE event = 'bounced' AND bounce_type = 'hard'),
       count(*) FILTER (WHERE event = 'bounced' AND bounce_type = 'soft'),
       count(*) FILTER (WHERE event = 'suppressed')"""

# --- analytics_jobs: one row per job (its id), the status of its latest attempt ---------

RUN_STARTED: Final = """
INSERT INTO analytics_jobs (id, job_type, status, payload, priority, queued_at)
VALUES ($1, $2, 'processing', $3, $4,
        COALESCE((SELECT created_at FROM jobs WHERE id = $1), now()))
ON CONFLICT (id) DO UPDATE
SET status = 'processing', payload = EXCLUDED.payload, processed_at = NULL,
    error_message = NULL
"""

RUN_COMPLETED: Final = """
UPDATE analytics_jobs
SET status = 'completed', processed_at = now(), error_message = NULL
WHERE id = $1
"""

RUN_FAILED: Final = """
UPDATE analytics_jobs
SET status = 'failed', processed_at = now(), error_message = $2
WHERE id = $1
"""

# Serialises the runs of one period (released at the commit).
LOCK_PERIOD: Final = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"

# --- per campaign and UTC day ($1: the day) ----------------------------------------------

DELETE_DAILY: Final = "DELETE FROM email_daily_stats WHERE day = $1"

INSERT_DAILY: Final = f"""
INSERT INTO email_daily_stats
    (day, campaign_id, sent, deferred, failed, bounced, soft_bounced, suppressed)
SELECT $1::date, COALESCE(campaign_id, ''),
       {EVENT_COUNTS}
FROM email_events
WHERE occurred_at >= ($1::date)::timestamp AT TIME ZONE 'UTC'
  AND occurred_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
GROUP BY COALESCE(campaign_id, '')
"""

# --- per campaign, over its whole life ($1: one campaign, or NULL for every one) ----------

DELETE_CAMPAIGNS: Final = """
DELETE FROM email_campaign_stats WHERE $1::text IS NULL OR campaign_id = $1
"""

INSERT_CAMPAIGNS: Final = f"""
INSERT INTO email_campaign_stats
    (campaign_id, sent, deferred, failed, bounced, soft_bounced, suppressed,
     first_event_at, last_event_at)
SELECT campaign_id,
       {EVENT_COUNTS},
       min(occurred_at), max(occurred_at)
FROM email_events
WHERE campaign_id IS NOT NULL AND ($1::text IS NULL OR campaign_id = $1)
GROUP BY campaign_id
"""

# --- per account and calendar month ($1: its first day; $2: one account, or NULL) ---------

DELETE_BILLING: Final = """
DELETE FROM billing_usage WHERE month = $1 AND ($2::text IS NULL OR account_id = $2)
"""

# Messages accepted by the SMTP server: one `sent` event per message (its dedupe key).
INSERT_BILLING: Final = """
INSERT INTO billing_usage (account_id, month, messages_sent)
SELECT account_id, $1::date, count(*)
FROM email_events
WHERE event = 'sent' AND account_id IS NOT NULL
  AND ($2::text IS NULL OR account_id = $2)
  AND occurred_at >= ($1::date)::timestamp AT TIME ZONE 'UTC'
  AND occurred_at < ($1::date + interval '1 month') AT TIME ZONE 'UTC'
GROUP BY account_id
"""
