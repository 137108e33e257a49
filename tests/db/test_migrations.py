"""`migrate()` on a fresh, empty database of its own, on the same server as `database_url`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service.db.migrations import MIGRATIONS_DIR, MigrationError, discover, migrate
from tests.support.databases import CONTRACT_COLUMNS, fresh_database


@pytest.fixture
async def fresh_url(database_url: str) -> AsyncIterator[str]:
    async with fresh_database(database_url, prefix="mig") as url:
        yield url


@pytest.fixture
async def conn(fresh_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_url)
    try:
        yield connection
    finally:
        await connection.close()


async def recorded(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    return [(r["version"], r["checksum"]) for r in rows]


async def table_exists(conn: asyncpg.Connection, name: str) -> bool:
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{name}")


def repo_versions() -> list[str]:
    return [p.stem for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]


# --- the repository's migrations ------------------------------------------------------------------


async def test_fresh_database_is_empty(conn: asyncpg.Connection) -> None:
    for table in (*CONTRACT_COLUMNS, "schema_migrations"):
        assert not await table_exists(conn, table)


async def test_migrate_applies_every_file_once_in_order(fresh_url, conn) -> None:
    versions = repo_versions()
    assert versions, "sql/migrations has no files"
    assert [m.version for m in discover()] == versions

    applied = await migrate(fresh_url)

    assert applied == versions
    checksums = [hashlib.sha256((MIGRATIONS_DIR / f"{v}.sql").read_bytes()).hexdigest()
                 for v in versions]
    assert await recorded(conn) == list(zip(versions, checksums, strict=True))
    for table in CONTRACT_COLUMNS:
        assert await table_exists(conn, table), table


async def test_second_run_applies_nothing(fresh_url, conn) -> None:
    first = await migrate(fresh_url)
    before = await conn.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY 1")

    assert await migrate(fresh_url) == []

    after = await conn.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY 1")
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    assert [r["version"] for r in after] == first


async def test_concurrent_runs_both_succeed_and_record_each_version_once(fresh_url, conn) -> None:
    results = await asyncio.gather(*(migrate(fresh_url) for _ in range(3)))

    versions = repo_versions()
    # Exactly one runner applied each version; the others found it done.
    assert sorted(v for result in results for v in result) == versions
    counts = await conn.fetch("SELECT version, count(*) AS n FROM schema_migrations GROUP BY 1")
    assert {r["version"]: r["n"] for r in counts} == dict.fromkeys(versions, 1)
    for table in CONTRACT_COLUMNS:
        assert await table_exists(conn, table), table
    # The session lock is released: nobody holds the migration lock afterwards.
    held = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    assert held == 0


async def test_schema_gives_every_non_contract_column_a_default(fresh_url, conn) -> None:
    await migrate(fresh_url)
    rows = await conn.fetch(
        """
        SELECT table_name::text AS table_name, column_name::text AS column_name
        FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = ANY($1::text[])
          AND is_nullable = 'NO' AND column_default IS NULL
          AND is_identity = 'NO' AND is_generated = 'NEVER'
        """,
        list(CONTRACT_COLUMNS),
    )
    missing = sorted(
        (r["table_name"], r["column_name"])
        for r in rows
        if r["column_name"] not in CONTRACT_COLUMNS[r["table_name"]]
    )
    assert missing == []
    # And every contract column exists.
    present = await conn.fetch(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = ANY($1::text[])",
        list(CONTRACT_COLUMNS),
    )
    have: dict[str, set[str]] = {}
    for r in present:
        have.setdefault(r["t"], set()).add(r["c"])
    for table, columns in CONTRACT_COLUMNS.items():
        assert columns <= have.get(table, set()), (table, columns - have.get(table, set()))


async def test_writer_knowing_only_contract_columns_can_insert(fresh_url, conn) -> None:
    await migrate(fresh_url)
    coupon = await conn.fetchrow(
        "INSERT INTO yz_coupon (uniacid, name) VALUES (1, '只知道名字') RETURNING *"
    )
    assert coupon["id"] is not None
    assert coupon["created_at"] is not None and coupon["updated_at"] is not None
    member_coupon = await conn.fetchrow(
        """
        INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, used, use_time, get_time,
                                      is_member_deleted, created_at, updated_at)
        VALUES (9001, 1, 7, $1, 0, NULL, now(), 0, now(), now())
        RETURNING *
        """,
        coupon["id"],
    )
    assert member_coupon["id"] == 9001 and member_coupon["coupon_id"] == coupon["id"]
    # Without an id: the table gives one.
    generated = await conn.fetchval(
        "INSERT INTO yz_member_coupon (uniacid, uid, coupon_id, used, get_time, "
        "is_member_deleted) VALUES (1, 7, $1, 0, now(), 0) RETURNING id",
        coupon["id"],
    )
    assert generated is not None and generated != 9001
    # The other contract tables, each with the fewest columns a writer would name.
    await conn.execute("INSERT INTO yz_member (uid, uniacid) VALUES (7, 1)")
    await conn.execute("INSERT INTO yz_tenant_setting (uniacid) VALUES (1)")
    await conn.execute("INSERT INTO yz_store (uniacid, store_name) VALUES (1, '南山店')")
    await conn.execute("INSERT INTO yz_goods (uniacid, title) VALUES (1, '保温杯')")
    await conn.execute("INSERT INTO yz_hotel (uniacid, hotel_name) VALUES (1, '海景酒店')")
    await conn.execute("INSERT INTO yz_coupon_hotel (coupon_id, hotel_id) VALUES ($1, 1)",
                       coupon["id"])
    setting = await conn.fetchrow("SELECT * FROM yz_tenant_setting WHERE uniacid = 1")
    # The contract's "tenant without settings" defaults.
    assert (setting["coupon_transfer"], setting["store_plugin"], setting["hotel_plugin"],
            setting["near_expiration_days"]) == (False, True, True, 3)


# --- the runner, on a directory of the test's own ---------------------------------------------


def write(directory: Path, name: str, sql: str) -> Path:
    path = directory / name
    path.write_text(sql, encoding="utf-8")
    return path


async def test_files_are_applied_in_name_order_and_only_sql(fresh_url, conn, tmp_path) -> None:
    write(tmp_path, "0010_third.sql", "ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 3;")
    write(tmp_path, "0002_second.sql", "ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 2;")
    write(tmp_path, "0001_first.sql", "CREATE TABLE t (a int);")
    write(tmp_path, "README.md", "not a migration")
    write(tmp_path, "0003_draft.sql.bak", "this is not SQL at all")

    assert await migrate(fresh_url, directory=tmp_path) == [
        "0001_first", "0002_second", "0010_third",
    ]
    await conn.execute("INSERT INTO t (a) VALUES (1)")
    assert tuple(await conn.fetchrow("SELECT a, b, c FROM t")) == (1, 2, 3)


async def test_new_file_is_applied_on_next_run(fresh_url, conn, tmp_path) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE t (a int);")
    assert await migrate(fresh_url, directory=tmp_path) == ["0001_first"]
    write(tmp_path, "0002_second.sql", "CREATE TABLE u (b int);")
    assert await migrate(fresh_url, directory=tmp_path) == ["0002_second"]
    assert [v for v, _ in await recorded(conn)] == ["0001_first", "0002_second"]


async def test_file_edited_after_it_was_applied_raises(fresh_url, conn, tmp_path) -> None:
    original = "CREATE TABLE t (a int);"
    path = write(tmp_path, "0001_first.sql", original)
    assert await migrate(fresh_url, directory=tmp_path) == ["0001_first"]

    path.write_text("CREATE TABLE t (a bigint);", encoding="utf-8")
    write(tmp_path, "0002_second.sql", "CREATE TABLE u (b int);")
    with pytest.raises(MigrationError, match="0001_first"):
        await migrate(fresh_url, directory=tmp_path)

    # Nothing after the changed file ran, and the record still holds the original checksum.
    assert not await table_exists(conn, "u")
    assert await recorded(conn) == [
        ("0001_first", hashlib.sha256(original.encode()).hexdigest())
    ]
    # The lock was released: with the file restored, a new run proceeds.
    path.write_text(original, encoding="utf-8")
    assert await asyncio.wait_for(migrate(fresh_url, directory=tmp_path), 10) == ["0002_second"]


async def test_failing_migration_leaves_nothing_and_is_not_recorded(
    fresh_url, conn, tmp_path
) -> None:
    write(tmp_path, "0001_ok.sql", "CREATE TABLE ok (a int);")
    bad = write(
        tmp_path,
        "0002_bad.sql",
        "CREATE TABLE half (a int);\nINSERT INTO ok VALUES (1);\nSELECT 1 / 0;\n",
    )
    write(tmp_path, "0003_later.sql", "CREATE TABLE later (a int);")

    with pytest.raises(asyncpg.PostgresError):
        await migrate(fresh_url, directory=tmp_path)

    assert await table_exists(conn, "ok")
    assert await conn.fetchval("SELECT count(*) FROM ok") == 0
    assert not await table_exists(conn, "half")
    assert not await table_exists(conn, "later")
    assert [v for v, _ in await recorded(conn)] == ["0001_ok"]

    # Fixed, it applies on the next run (the lock was released), and so does what follows it.
    bad.write_text("CREATE TABLE half (a int);\nINSERT INTO ok VALUES (1);\n", encoding="utf-8")
    assert await asyncio.wait_for(migrate(fresh_url, directory=tmp_path), 10) == [
        "0002_bad", "0003_later",
    ]
    assert await table_exists(conn, "half") and await table_exists(conn, "later")
    assert await conn.fetchval("SELECT count(*) FROM ok") == 1


async def test_concurrent_runs_on_own_directory_apply_each_file_once(
    fresh_url, conn, tmp_path
) -> None:
    # Not idempotent on purpose: a second application would fail or double the rows.
    write(tmp_path, "0001_create.sql", "CREATE TABLE counter (n int);")
    write(tmp_path, "0002_insert.sql", "INSERT INTO counter VALUES (1);")
    results = await asyncio.gather(*(migrate(fresh_url, directory=tmp_path) for _ in range(4)))
    assert sorted(v for r in results for v in r) == ["0001_create", "0002_insert"]
    assert await conn.fetchval("SELECT count(*) FROM counter") == 1
