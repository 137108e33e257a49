"""DATABASE_READ_URL on a real streaming standby: page reads go to the replica only when it has
replayed past the member's last invalidation; writes, LISTEN and migrations stay on the primary.

Replay is paused on the standby (pg_wal_replay_pause) to make it lag by as much as a test needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from service.app import create_app
from service.db.migrations import migrate
from service.http.connections import make_test_server
from service.keys import read_pool_key
from service.settings import Settings
from tests.support.common import NOW, SERVICE_TOKEN, token_for
from tests.support.pages import fetch, ids, settle
from tests.support.pg_replica import primary_and_standby, stop_standby
from tests.support.rows import Rows, arranging_connection


async def _migrated(primary_url: str, standby_url: str) -> None:
    """The schema on the primary, and replayed by the standby: the app's replica pool prepares
    the page statement when it connects, which needs the tables there."""
    await migrate(primary_url)
    primary = await asyncpg.connect(primary_url)
    standby = await asyncpg.connect(standby_url)
    try:
        await caught_up(primary, standby)
    finally:
        await primary.close()
        await standby.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with primary_and_standby(tmp_path) as urls:
        asyncio.run(_migrated(*urls))
        yield urls


@pytest.fixture
async def primary(pair) -> AsyncIterator[asyncpg.Connection]:
    async with arranging_connection(pair[0]) as conn:
        yield conn


@pytest.fixture
async def standby(pair) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pair[1])
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def replica_client(aiohttp_client, settings: Settings, pair, clock, primary):
    # The Redis layer alone, as in tests/cache/test_redis.py: hits must be Redis hits.
    settings = dataclasses.replace(settings, database_url=pair[0], database_read_url=pair[1],
                                   local_cache_enabled=False)
    return await aiohttp_client(make_test_server(create_app(settings, clock)))


def reads(server: str, reason: str) -> float:
    return REGISTRY.get_sample_value("coupons_db_page_reads_total",
                                     {"server": server, "reason": reason}) or 0.0


async def caught_up(primary: asyncpg.Connection, standby: asyncpg.Connection) -> None:
    """Bounded wait until the standby has replayed everything the primary has written."""
    target = await primary.fetchval("SELECT pg_current_wal_insert_lsn()")
    async with asyncio.timeout(10):
        # PostgreSQL offers no event for "replayed up to"; poll the bounded condition.
        while await standby.fetchval(  # noqa: ASYNC110
                "SELECT pg_last_wal_replay_lsn() < $1::pg_lsn", target):
            await asyncio.sleep(0.02)


async def test_a_lagging_replica_never_serves_what_an_invalidation_replaced(
    replica_client, primary, standby
):
    client = replica_client
    rows = Rows(primary)
    await rows.member(1, 1)
    mc1 = await rows.member_coupon(await rows.coupon(1, name="A"))
    mc2 = await rows.member_coupon(await rows.coupon(1, name="B"),
                                   get_time=rows_time(days_ago=2))
    await settle(client, primary)
    await caught_up(primary, standby)

    before = reads("replica", "")
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss" and ids(body) == [mc1, mc2]
    assert reads("replica", "") == before + 1, "a caught-up replica serves the miss"

    # The replica stops replaying; a write lands on the primary and is invalidated.
    await standby.execute("SELECT pg_wal_replay_pause()")
    await primary.execute("UPDATE yz_member_coupon SET used = 1 WHERE id = $1", mc1)
    await settle(client, primary)
    stale = await standby.fetchval("SELECT used FROM yz_member_coupon WHERE id = $1", mc1)
    assert stale == 0, "the standby really is behind"

    behind = reads("primary", "replica_behind")
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss" and ids(body) == [mc2], "never the replica's old page"
    assert reads("primary", "replica_behind") == behind + 1
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "hit"

    # The use API: its write and its invalidation carry the fence too.
    resp = await client.post(f"/internal/member-coupons/{mc2}/use",
                             headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    assert resp.status == 200, await resp.text()
    body, _ = await fetch(client, token_for(), coupon_type=0)
    assert ids(body) == []
    used, _ = await fetch(client, token_for(), coupon_type=0, status_request=3)
    assert sorted(ids(used)) == sorted([mc1, mc2])

    # Replay resumes: once past the fence, misses go to the replica again.
    await standby.execute("SELECT pg_wal_replay_resume()")
    await caught_up(primary, standby)
    await primary.execute("UPDATE yz_member_coupon SET updated_at = now() WHERE id = $1", mc1)
    await settle(client, primary)
    await caught_up(primary, standby)
    before = reads("replica", "")
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss" and ids(body) == []
    assert reads("replica", "") == before + 1


async def test_a_lagging_replica_never_serves_a_tenant_change(replica_client, primary,
                                                               standby):
    """A tenant-wide change replaces the tenant's token with the fence past it: no member's
    miss is read from a replica that has not replayed the change."""
    client = replica_client
    rows = Rows(primary)
    await rows.tenant(1, transfer=False)
    await rows.member(1, 1)
    await rows.member_coupon(await rows.coupon(1, name="A"))
    await settle(client, primary)
    await caught_up(primary, standby)
    body, _ = await fetch(client, token_for(), coupon_type=0)
    assert body["data"]["set"]["transfer"] is False
    await standby.execute("SELECT pg_wal_replay_pause()")
    await primary.execute("UPDATE yz_tenant_setting SET coupon_transfer = true WHERE uniacid = 1")
    await settle(client, primary)
    behind = reads("primary", "replica_behind")
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss" and body["data"]["set"]["transfer"] is True
    assert reads("primary", "replica_behind") == behind + 1
    await standby.execute("SELECT pg_wal_replay_resume()")


async def test_a_replica_that_is_down_means_reads_from_the_primary(
    replica_client, primary, pair
):
    client = replica_client
    rows = Rows(primary)
    await rows.member(1, 1)
    mc = await rows.member_coupon(await rows.coupon(1))
    await settle(client, primary)
    assert client.app[read_pool_key] is not None
    stop_standby(pair[1])
    failed = reads("primary", "replica_error")
    body, _ = await fetch(client, token_for(), coupon_type=0)
    assert ids(body) == [mc]
    assert reads("primary", "replica_error") == failed + 1
    # Readiness follows the primary and Redis: the replica is an optimisation.
    resp = await client.get("/readyz")
    assert resp.status == 200


def rows_time(days_ago: int):
    import datetime as dt

    return NOW - dt.timedelta(days=days_ago)
