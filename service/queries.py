"""The named SQL statements of `sql/queries/*.sql`, loaded once by aiosql."""

from __future__ import annotations

from pathlib import Path

import aiosql

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
QUERIES = aiosql.from_path(SQL_DIR / "queries", "asyncpg")
