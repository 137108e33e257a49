"""`demo-data`: the demo tenants of `sql/demo/demo_data.sql`, loaded in one transaction."""

from __future__ import annotations

import asyncpg

from service.resources import SQL_DIR

DEMO_SQL = SQL_DIR / "demo" / "demo_data.sql"


async def load_demo_data(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(DEMO_SQL.read_text(encoding="utf-8"))
    finally:
        await conn.close()
