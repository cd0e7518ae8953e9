"""A worker or migrator process loads neither the web stack nor pydantic unless a
handler module it is given needs them: memory is what scaling out costs, and pydantic
alone is about 9 MiB of a worker's ~40. Run as a user runs them (`python -m app.worker`,
`python -m app.migrator`) with handlers that declare no payload model; each prints the
modules it loaded when it exits (tests.support.imports_probe)."""

from __future__ import annotations

import json

from tests.support.entrypoints import Launcher, Service, wait_until

# Packages only the API (or a handler that asks for them) needs.
NOT_IN_A_WORKER = {
    "pydantic",
    "pydantic_core",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "httpx",
    "jinja2",
    "uuid_utils",  # ids of new jobs: the API and JobClient insert, a worker does not
}
# redis-py imports the top-level `cryptography` package to see whether it is installed;
# Fernet (ENCRYPTION_KEYS) is what would cost.
NOT_IN_A_WORKER_MODULES = {
    "cryptography.fernet",
    "cryptography.hazmat",
    "app.api",
    "app.dashboard",
    "app.counts_cache",
    "app.db.listings",
    "app.db.inserts",
    "app.jobs.request",
}


def loaded_modules(service: Service) -> set[str]:
    lines = [line for line in service.log().splitlines() if line.startswith("LOADED ")]
    assert len(lines) == 1, service.log()
    return set(json.loads(lines[0].removeprefix("LOADED ")))


def assert_lean(modules: set[str], other_role: tuple[str, ...]) -> None:
    """No web stack, no pydantic, no API-only module, and nothing of the other role
    (a worker does not load the migrator's code, nor a migrator the worker's)."""
    packages = {m.split(".")[0] for m in modules}
    assert "app.runtime" in modules  # the probe saw a real start
    assert packages & NOT_IN_A_WORKER == set()
    assert modules & NOT_IN_A_WORKER_MODULES == set()
    assert {m for m in modules if m.startswith(other_role)} == set()


async def test_a_worker_loads_no_web_stack_nor_pydantic(launcher: Launcher) -> None:
    worker = launcher.start("worker", ["tests.support.imports_probe", "app.worker", "--burst"])
    assert await worker.exit_code(timeout=30) == 0, worker.log()
    assert_lean(loaded_modules(worker), other_role=("app.migrator", "app.maintenance"))


async def test_a_migrator_loads_no_web_stack_nor_pydantic(launcher: Launcher) -> None:
    migrator = launcher.start("migrator", ["tests.support.imports_probe", "app.migrator"])

    async def started() -> bool | None:
        assert migrator.proc.poll() is None, migrator.log()
        return True if "migrator started" in migrator.log() else None

    await wait_until(started, 30, "the migrator to start")
    migrator.sigterm()
    assert await migrator.exit_code(timeout=30) == 0, migrator.log()
    assert_lean(loaded_modules(migrator), other_role=("app.worker",))
