"""Health routes: liveness, readiness, the queue health report."""
