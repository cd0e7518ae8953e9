"""The third outcome of a handler, beside PermanentFailure and Snooze (app.jobs.outcomes):
a transient failure. It is an ordinary exception: the attempt fails and the job is
retried with backoff while attempts remain."""

from __future__ import annotations


class TransientFailure(Exception):
    """Not delivered this time (an SMTP 4xx, a connection error, a timeout, an HTTP 5xx):
    the attempt fails and the job is retried with backoff."""
