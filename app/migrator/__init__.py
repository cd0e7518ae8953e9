"""The migrator: PostgreSQL -> Redis for due jobs."""

from app.migrator.mover import Migrator

__all__ = ["Migrator"]
