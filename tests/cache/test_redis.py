"""The page cache on real Redis and PostgreSQL: hits, every invalidation source, the clock bound,
the stale-fill race, the stampede and the exactly-once use API.

The tests marked `cluster` run twice: on the session's Redis and on a real 3-master Redis Cluster
(REDIS_URL = redis+cluster://..., tests/cache/conftest.py), where a member's hash, leases and
scripts share one slot and the tenant's token lives in another slot (often on another node).
Redis failures and the LISTEN connection: test_redis_failures.py.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import os

import pytest

from service.cache.redis import CachedPage
from service.db.repository import PageQuery
from service.keys import db_pool_key, pages_key
from tests.support.api import check_error, items_of
from tests.support.common import NOW, SERVICE_TOKEN, SHANGHAI, token_for
from tests.support.pages import QueryCounter, fetch, ids, settle


@pytest.fixture
def settings(settings):
    """The Redis layer alone: the process-local layer has its own tests (test_local.py)."""
    return dataclasses.replace(settings, local_cache_enabled=False)


def long_token() -> str:
    """For tests that move the clock by days: the token's exp follows the same clock."""
    return token_for(ttl=90 * 86_400)


@pytest.fixture
async def counted(make_client, settings):
    client = await make_client(dataclasses.replace(settings, db_pool_min_size=4,
                                                   db_pool_max_size=4))
    counter = QueryCounter()
    await counter.attach(client.app[db_pool_key])
    return client, counter


# Hits ---------------------------------------------------------------------------------------

@pytest.mark.cluster
async def test_second_request_is_a_hit_without_database_query(member, counted):
    client, counter = counted
    first, h1 = await fetch(client, token_for(), coupon_type=0)
    assert h1["X-Cache"] == "miss" and len(counter.queries) == 1
    second, h2 = await fetch(client, token_for(), coupon_type=0)
    assert h2["X-Cache"] == "hit"
    assert len(counter.queries) == 1, "a hit must not touch PostgreSQL"
    assert second == first and h2["ETag"] == h1["ETag"]
    assert ids(first) == [member["mc1"], member["mc2"]]


async def test_etag_and_if_none_match(member, client):
    _, headers = await fetch(client, token_for(), coupon_type=0)
    etag = headers["ETag"]
    assert headers["Cache-Control"] == "private, no-cache"
    _, h304 = await fetch(client, token_for(), coupon_type=0, expected_status=304,
                          headers={"If-None-Match": etag})
    assert h304["ETag"] == etag
    await fetch(client, token_for(), coupon_type=0, expected_status=304,
                headers={"If-None-Match": f'"nope", W/{etag}'})
    await fetch(client, token_for(), coupon_type=0, headers={"If-None-Match": '"other"'})


async def test_pages_of_different_parameters_and_members_are_separate(member, client):
    a, _ = await fetch(client, token_for(1, 1), coupon_type=0, pagesize=1)
    b, _ = await fetch(client, token_for(1, 1), coupon_type=0, pagesize=1, page=2)
    c, hc = await fetch(client, token_for(1, 2), coupon_type=0, pagesize=1)
    assert ids(a) == [member["mc1"]] and ids(b) == [member["mc2"]]
    assert ids(c) == [member["other"]] and hc["X-Cache"] == "miss"


@pytest.mark.cluster
async def test_cached_value_is_bounded_by_ttl(member, client, redis_client):
    await fetch(client, token_for(), coupon_type=0)
    pages = client.app[pages_key]
    key = pages.cache.member_key(1, 1)
    ttl_ms = await redis_client.pttl(key)
    assert 0 < ttl_ms <= pages.ttl * 1000
    raw = await redis_client.hget(key, pages.field(
        PageQuery(1, 1, 1, 0, 1, 15)))
    cached = CachedPage.decode(raw)
    # Both coupons never expire: only the TTL bounds the page.
    assert cached.valid_until == int(NOW.timestamp()) + pages.ttl


# Invalidation sources -------------------------------------------------------------------------

@pytest.mark.cluster
async def test_write_in_sql_to_member_coupon_invalidates_that_member_only(member, client, db):
    await fetch(client, token_for(1, 1), coupon_type=0)
    await fetch(client, token_for(1, 2), coupon_type=0)
    await db.execute("UPDATE yz_member_coupon SET used = 1 WHERE id = $1", member["mc1"])
    await settle(client, db)
    body, headers = await fetch(client, token_for(1, 1), coupon_type=0)
    assert headers["X-Cache"] == "miss" and ids(body) == [member["mc2"]]
    _, other = await fetch(client, token_for(1, 2), coupon_type=0)
    assert other["X-Cache"] == "hit"


@pytest.mark.cluster
@pytest.mark.parametrize("statement", [
    "INSERT INTO yz_member_coupon (uniacid, uid, coupon_id, get_time) VALUES (1, 1, $1, now())",
    "DELETE FROM yz_member_coupon WHERE uid = 1 AND coupon_id = $1",
    "UPDATE yz_member_coupon SET is_member_deleted = 1 WHERE uid = 1 AND coupon_id = $1",
])
async def test_insert_delete_and_member_delete_invalidate(member, client, db, statement):
    first, _ = await fetch(client, token_for(), coupon_type=0)
    await db.execute(statement, member["c1"])
    await settle(client, db)
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss" and ids(body) != ids(first)


@pytest.mark.cluster
async def test_coupon_definition_edit_invalidates_every_holder(member, client, db, rows):
    await rows.member(3, 1)
    c3 = await rows.coupon(1, name="C")
    await rows.member_coupon(c3, uid=3)
    await settle(client, db)
    for uid in (1, 2, 3):
        await fetch(client, token_for(1, uid), coupon_type=0)
    await db.execute("UPDATE yz_coupon SET name = '改名了' WHERE id = $1", member["c1"])
    await settle(client, db)
    for uid in (1, 2):
        body, headers = await fetch(client, token_for(1, uid), coupon_type=0)
        assert headers["X-Cache"] == "miss"
        assert "改名了" in [i["belongs_to_coupon"]["name"] for i in items_of(body)]
    _, untouched = await fetch(client, token_for(1, 3), coupon_type=0)
    assert untouched["X-Cache"] == "hit"


@pytest.mark.cluster
async def test_tenant_setting_edit_invalidates_the_whole_tenant(member, client, db, rows):
    await rows.member(9, 2)
    c9 = await rows.coupon(2)
    await rows.member_coupon(c9, uid=9, uniacid=2)
    await settle(client, db)
    for uniacid, uid in ((1, 1), (1, 2), (2, 9)):
        body, _ = await fetch(client, token_for(uniacid, uid), coupon_type=0)
        assert body["data"]["set"]["transfer"] is False
    await db.execute("INSERT INTO yz_tenant_setting (uniacid, coupon_transfer) VALUES (1, true)")
    await settle(client, db)
    for uid in (1, 2):
        body, headers = await fetch(client, token_for(1, uid), coupon_type=0)
        assert headers["X-Cache"] == "miss" and body["data"]["set"]["transfer"] is True
    _, other_tenant = await fetch(client, token_for(2, 9), coupon_type=0)
    assert other_tenant["X-Cache"] == "hit"


@pytest.mark.cluster
async def test_store_name_edit_invalidates_the_tenant(client, db, rows):
    await rows.member(1, 1)
    await rows.store(7, "旧店名")
    cid = await rows.coupon(1, use_type=9, use_conditions={"store_ids": [7], "is_all_good": 1})
    await rows.member_coupon(cid)
    await settle(client, db)
    body, _ = await fetch(client, token_for(), coupon_type=0)
    assert items_of(body)[0]["api_limit"] == "门店:旧店名、平台自营商品"
    await db.execute("UPDATE yz_store SET store_name = '新店名' WHERE id = 7")
    await settle(client, db)
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss"
    assert items_of(body)[0]["api_limit"] == "门店:新店名、平台自营商品"


async def test_commit_to_invalidation_is_fast(member, client, db):
    """Every write below must be invalidated; the figure is reported, not asserted tightly."""
    latencies = []
    loop = asyncio.get_running_loop()
    for n in range(30):
        await fetch(client, token_for(), coupon_type=0)
        start = loop.time()
        await db.execute("UPDATE yz_member_coupon SET updated_at = now() WHERE id = $1",
                         member["mc1"])
        await settle(client, db)
        latencies.append(loop.time() - start)
        _, headers = await fetch(client, token_for(), coupon_type=0)
        assert headers["X-Cache"] == "miss", f"write {n} was not invalidated"
    latencies.sort()
    assert latencies[-1] < 1.0, latencies


# The clock ------------------------------------------------------------------------------------

async def test_cached_page_stops_at_end_of_day(client, rows, clock):
    await rows.member(1, 1)
    end = dt.datetime(2026, 6, 15, 23, 59, 59, tzinfo=SHANGHAI)
    cid = await rows.coupon(1, time_limit=1, time_start=NOW - dt.timedelta(days=3), time_end=end)
    mc = await rows.member_coupon(cid)
    await settle(client, rows.conn)
    clock.set(end - dt.timedelta(seconds=1))
    body, headers = await fetch(client, long_token(), coupon_type=0)
    assert ids(body) == [mc] and headers["X-Cache"] == "miss"
    clock.set(end)
    body, headers = await fetch(client, long_token(), coupon_type=0)
    assert ids(body) == [mc] and headers["X-Cache"] == "hit"
    clock.set(end + dt.timedelta(seconds=1))
    body, headers = await fetch(client, long_token(), coupon_type=0)
    assert ids(body) == [] and headers["X-Cache"] == "miss"
    expired, _ = await fetch(client, long_token(), coupon_type=0, status_request=2)
    assert ids(expired) == [mc]


async def test_cached_page_stops_when_near_expiration_starts(client, rows, clock):
    await rows.member(1, 1)
    end = NOW + dt.timedelta(days=3, seconds=10)  # near from NOW + 10 s (3-day window)
    cid = await rows.coupon(1, time_limit=1, time_start=NOW - dt.timedelta(days=1), time_end=end)
    await rows.member_coupon(cid)
    await settle(client, rows.conn)
    # A coupon on another page still bounds this page: the near flag of any coupon can move rows.
    body, _ = await fetch(client, long_token(), coupon_type=0)
    assert items_of(body)[0]["near_expiration"] == 0
    clock.set(NOW + dt.timedelta(seconds=9))
    body, headers = await fetch(client, long_token(), coupon_type=0)
    assert headers["X-Cache"] == "hit" and items_of(body)[0]["near_expiration"] == 0
    clock.set(NOW + dt.timedelta(seconds=10))
    body, headers = await fetch(client, long_token(), coupon_type=0)
    assert headers["X-Cache"] == "miss" and items_of(body)[0]["near_expiration"] == 1


async def test_a_coupon_expiring_bounds_every_page_of_the_member(client, rows, clock):
    await rows.member(1, 1)
    soon = await rows.coupon(1, time_limit=1, time_start=NOW - dt.timedelta(days=9),
                             time_end=NOW + dt.timedelta(days=10))
    await rows.member_coupon(soon)
    await settle(client, rows.conn)
    await fetch(client, long_token(), coupon_type=0, status_request=3)  # the used tab
    clock.set(NOW + dt.timedelta(days=7))  # the coupon turns near-expiring: a new moment
    _, headers = await fetch(client, long_token(), coupon_type=0, status_request=3)
    assert headers["X-Cache"] == "miss"


# Race and stampede ------------------------------------------------------------------------------

@pytest.mark.cluster
async def test_fill_prepared_before_an_invalidation_is_refused(member, client):
    pages = client.app[pages_key]
    cache = pages.cache
    prepared = await cache.prepare(1, 1, "x")
    await cache.invalidate_members(1, [1])
    page = CachedPage(int(NOW.timestamp()), int(NOW.timestamp()) + 60, "0" * 16, b"stale")
    assert await cache.fill(1, 1, "x", prepared, page) is False
    now = int(NOW.timestamp())
    assert await cache.get(1, 1, "x", now) is None
    fresh = await cache.prepare(1, 1, "x")
    assert await cache.fill(1, 1, "x", fresh, page) is True
    assert (await cache.get(1, 1, "x", now)).body == b"stale"


@pytest.mark.cluster
async def test_interleaved_writers_and_readers_never_read_stale(member, client, db):
    """Readers hammer the page while a writer flips coupons; after each write's invalidation has
    been applied, every read must show that write."""
    flips = [member["mc1"], member["mc2"]] * 6
    stop = asyncio.Event()
    reads = 0

    async def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            await fetch(client, token_for(), coupon_type=0, status_request=3)
            reads += 1

    readers = [asyncio.create_task(reader()) for _ in range(8)]
    try:
        used: set[int] = set()
        for mc in flips:
            if mc in used:
                await db.execute("UPDATE yz_member_coupon SET used = 0 WHERE id = $1", mc)
                used.discard(mc)
            else:
                await db.execute("UPDATE yz_member_coupon SET used = 1 WHERE id = $1", mc)
                used.add(mc)
            await settle(client, db)
            for _ in range(3):
                body, _ = await fetch(client, token_for(), coupon_type=0, status_request=3)
                assert set(ids(body)) == used, "stale page after invalidation"
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert reads > 0


@pytest.mark.cluster
async def test_stampede_of_200_cold_requests_runs_one_query(member, counted):
    client, counter = counted
    results = await asyncio.gather(*(fetch(client, token_for(), coupon_type=0)
                                     for _ in range(200)))
    outcomes = [headers["X-Cache"] for _, headers in results]
    assert len(counter.queries) == 1, collections.Counter(outcomes)
    # Late arrivals find the page filled: a hit. Nobody else reads the database.
    assert outcomes.count("miss") == 1, outcomes
    assert outcomes.count("coalesced") + outcomes.count("hit") == 199, outcomes
    assert all(body == results[0][0] for body, _ in results)


@pytest.mark.cluster
async def test_cross_process_lease(member, client):
    cache = client.app[pages_key].cache
    first = await cache.prepare(1, 1, "f")
    second = await cache.prepare(1, 1, "f")
    assert first.lease and not second.lease
    now = int(NOW.timestamp())
    await cache.fill(1, 1, "f", first, CachedPage(now, now + 60, "a" * 16, b"x"))
    third = await cache.prepare(1, 1, "f")
    assert third.lease, "a fill releases its lease"


# The use API -----------------------------------------------------------------------------------

async def use(client, mc_id: int, token: str = SERVICE_TOKEN, expected_status: int = 200) -> dict:
    resp = await client.post(f"/internal/member-coupons/{mc_id}/use",
                             headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    assert resp.status == expected_status, body
    if expected_status != 200:
        check_error(body)
    return body


async def test_use_is_exactly_once_under_50_concurrent_calls(member, client, db):
    results = await asyncio.gather(*(client.post(
        f"/internal/member-coupons/{member['mc1']}/use",
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) for _ in range(50)))
    statuses = sorted(r.status for r in results)
    assert statuses == [200] + [409] * 49
    row = await db.fetchrow("SELECT used, use_time FROM yz_member_coupon WHERE id = $1",
                            member["mc1"])
    assert row["used"] == 1 and row["use_time"] == NOW


@pytest.mark.cluster
async def test_use_invalidates_before_it_answers(member, client):
    body, _ = await fetch(client, token_for(), coupon_type=0)
    assert member["mc1"] in ids(body)
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "hit"
    answer = await use(client, member["mc1"])
    assert answer["data"]["used"] == 1 and answer["data"]["use_time"] == int(NOW.timestamp())
    # No waiting for the notification: the page is already gone from Redis.
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss" and member["mc1"] not in ids(body)
    used, _ = await fetch(client, token_for(), coupon_type=0, status_request=3)
    assert ids(used) == [member["mc1"]] and items_of(used)[0]["use_time"] == int(NOW.timestamp())


async def test_use_refusals(member, client, db):
    await use(client, member["mc1"], token=token_for(), expected_status=401)
    await use(client, member["mc1"], token="", expected_status=401)
    await use(client, 999_999, expected_status=404)
    await db.execute("UPDATE yz_member_coupon SET is_member_deleted = 1 WHERE id = $1",
                     member["mc2"])
    await use(client, member["mc2"], expected_status=404)
    await use(client, 99_999_999_999_999_999_999, expected_status=400)
    await use(client, member["mc1"])
    await use(client, member["mc1"], expected_status=409)


def test_no_sleeps_needed_for_env() -> None:
    assert os.environ.get("PYTEST_CURRENT_TEST")
