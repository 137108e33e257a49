"""The named SQL statements of `sql/queries/*.sql`, loaded once by aiosql."""

from __future__ import annotations

import aiosql

from service.resources import SQL_DIR

QUERIES = aiosql.from_path(SQL_DIR / "queries", "asyncpg")
