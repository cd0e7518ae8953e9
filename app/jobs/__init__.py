"""The domain: what a job is, its limits and validation, its statuses and transitions,
and the outcomes a handler may report. No web framework and no database driver here:
the API, the producer library and the worker all build on this package."""
