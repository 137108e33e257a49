"""Ordered SQL migrations under `sql/migrations/`, applied once each, safe to run concurrently.

No maintained migration tool speaks asyncpg without an ORM (alembic needs SQLAlchemy, yoyo and
dbmate bring their own drivers or binaries), and the job is small: a table of applied versions,
a session advisory lock so that two `migrate` runs serialise, one transaction per file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import asyncpg

from service.db.queries import QUERIES
from service.resources import SQL_DIR

log = logging.getLogger(__name__)

MIGRATIONS_DIR = SQL_DIR / "migrations"
# An arbitrary constant of this project: pg_advisory_lock's key space is shared by all users.
LOCK_KEY = 7_301_557_101



@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class MigrationError(RuntimeError):
    pass


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = sorted(directory.glob("*.sql"))
    return [Migration(version=p.stem, path=p) for p in found]


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR,
                  display_tz: str = "Asia/Shanghai") -> list[str]:
    """Apply every pending migration in order; returns the versions applied by this call.
    Then make `display_tz` the zone of the stored coupon ends (recomputed if it changed)."""
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        # Session lock, held across the per-file transactions: a second runner waits here and
        # then finds everything applied.
        await QUERIES.migrations_lock(conn, key=LOCK_KEY)
        try:
            await QUERIES.create_migrations_table(conn)
            rows = [row async for row in QUERIES.applied_migrations(conn)]
            done = {r["version"]: r["checksum"] for r in rows}
            for migration in discover(directory):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version} changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await QUERIES.record_migration(
                        conn, version=migration.version, checksum=migration.checksum
                    )
                log.info("applied migration %s", migration.version)
                applied_now.append(migration.version)
            if directory == MIGRATIONS_DIR:
                async with conn.transaction():
                    if await QUERIES.set_display_tz(conn, tz=display_tz):
                        await QUERIES.recompute_ends(conn)
                        log.info("display zone is now %s: coupon ends recomputed", display_tz)
        finally:
            await QUERIES.migrations_unlock(conn, key=LOCK_KEY)
    finally:
        await conn.close()
    return applied_now
