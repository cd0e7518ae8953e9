"""`python -m app.db.setup`: create the database if missing, then `alembic upgrade head`.

A one-shot step before the service starts (`make run`, the compose `migrate` service).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from alembic.config import Config

from alembic import command
from app.cli import load_settings

ROOT = Path(__file__).resolve().parents[2]


def split_dsn(dsn: str) -> tuple[str, str]:
    """(DSN of the maintenance database `postgres`, name of the target database)."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError("DATABASE_URL names no database")
    return urlunsplit(parts._replace(path="/postgres")), name


async def create_database(dsn: str) -> bool:
    """Create the DSN's database unless it exists; True if it was created."""
    admin_dsn, name = split_dsn(dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"CREATE DATABASE {quoted}")
        return True
    finally:
        await conn.close()


def alembic_config(sqlalchemy_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url.replace("%", "%%"))
    return cfg


def upgrade(sqlalchemy_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(sqlalchemy_url), revision)


def main() -> None:
    settings = load_settings()
    try:
        created = asyncio.run(create_database(settings.database_url))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: cannot reach PostgreSQL at DATABASE_URL: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    if created:
        print(f"created database {split_dsn(settings.database_url)[1]}")
    upgrade(settings.sqlalchemy_url)


if __name__ == "__main__":
    main()
