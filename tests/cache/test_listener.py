"""Coverage (service/cache/listener.py): a process trusts its cache only once it has proven that no
invalidation was lost, by a handover from a live listener (the cache stays warm) or, when nobody
could hand over, by one O(1) flush (a new epoch), however many processes ask at once.

Several apps in this process stand for several processes: each has its own LISTEN connection,
pools and Redis client, and they share PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from prometheus_client import REGISTRY

from service.keys import db_pool_key, listener_key, pages_key
from tests.support.api import items_of
from tests.support.common import token_for
from tests.support.pages import fetch, ids, settle


@pytest.fixture
def settings(settings):
    # The Redis layer shows what a handover passes on; a short heartbeat makes recoveries quick.
    return dataclasses.replace(settings, local_cache_enabled=False,
                               listener_heartbeat_seconds=0.2)


@pytest.fixture
async def member(rows) -> dict[str, int]:
    await rows.member(1, 1)
    cid = await rows.coupon(1, name="A")
    return {"mc1": await rows.member_coupon(cid, uid=1), "mc2": await rows.member_coupon(cid)}


def coverage(how: str) -> float:
    return REGISTRY.get_sample_value("coupons_cache_coverage_total", {"how": how}) or 0.0


async def ready(*clients) -> None:
    async with asyncio.timeout(10):
        for client in clients:
            await client.app[pages_key].trust.ready.wait()


async def test_a_cold_start_flushes_and_a_second_process_is_handed_over(member, make_client,
                                                                         settings, redis_client):
    flushes, handovers = coverage("flush"), coverage("handover")
    first = await make_client(settings)
    await ready(first)
    assert coverage("flush") == flushes + 1  # nobody to hand over from
    epoch = first.app[pages_key].cache.epoch
    assert epoch and (await redis_client.get("cp:epoch")).decode() == epoch
    _, headers = await fetch(first, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss"

    # A rolling deploy: another process starts while the first one listens all along.
    second = await make_client(settings)
    await ready(second)
    assert coverage("handover") == handovers + 1 and coverage("flush") == flushes + 1
    assert second.app[pages_key].cache.epoch == epoch
    body, headers = await fetch(second, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "hit", "the page the first process cached is served warm"
    assert sorted(ids(body)) == sorted(member.values())


async def test_a_write_while_a_process_starts_is_never_lost(member, make_client, settings, db):
    first = await make_client(settings)
    await ready(first)
    await fetch(first, token_for(), coupon_type=0)
    starting = asyncio.create_task(make_client(settings))
    # Committed while the second one connects, listens and asks for its handover.
    await db.execute("UPDATE yz_member_coupon SET used = 1 WHERE id = $1", member["mc1"])
    second = await starting
    await ready(second)
    await settle(first, db)
    await settle(second, db)
    for client in (first, second):
        body, _ = await fetch(client, token_for(), coupon_type=0)
        assert ids(body) == [member["mc2"]]


async def test_a_process_that_lost_coverage_is_handed_over_again(member, make_client, settings):
    first, second = await make_client(settings), await make_client(settings)
    await ready(first, second)
    await fetch(first, token_for(), coupon_type=0)
    flushes, handovers = coverage("flush"), coverage("handover")
    # As after a failed Redis invalidation: the loss wakes the listener, which proves
    # coverage again from the other, covered, listener.
    second.app[pages_key].trust.lost("test")
    await ready(second)
    assert coverage("handover") == handovers + 1 and coverage("flush") == flushes
    _, headers = await fetch(second, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "hit"


async def test_every_listener_dropped_at_once_costs_one_flush(member, make_client, settings,
                                                              db):
    """A PostgreSQL failover drops every LISTEN connection together: M x N processes reconnect
    at once, and exactly one of them flushes; the others are handed over from it."""
    clients = [await make_client(settings) for _ in range(4)]
    await ready(*clients)
    for client in clients:
        await fetch(client, token_for(), coupon_type=0)
    flushes = coverage("flush")
    connects = REGISTRY.get_sample_value("coupons_listener_connects_total")
    pids = [c.app[listener_key].connection.get_server_pid() for c in clients]
    await db.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
    # A write that may fall in the gap: nobody may be listening when it commits.
    await db.execute("UPDATE yz_member_coupon SET used = 1 WHERE id = $1", member["mc1"])
    async with asyncio.timeout(15):
        # Every listener has reconnected and proven coverage again (metrics: from outside).
        while REGISTRY.get_sample_value("coupons_listener_connects_total") < connects + 4:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await ready(*clients)
    assert coverage("flush") == flushes + 1
    assert len({c.app[pages_key].cache.epoch for c in clients}) == 1
    for client in clients:
        await settle(client, db)
        body, _ = await fetch(client, token_for(), coupon_type=0)
        assert ids(body) == [member["mc2"]]


async def test_a_truncate_empties_every_process_with_one_flush(member, make_client, settings,
                                                               db, rows):
    clients = [await make_client(settings) for _ in range(3)]
    await ready(*clients)
    for client in clients:
        await fetch(client, token_for(), coupon_type=0)
    old = clients[0].app[pages_key].cache.epoch
    flushes = coverage("flush")
    await db.execute("TRUNCATE yz_member_coupon")
    for client in clients:
        await settle(client, db)
    await ready(*clients)
    assert coverage("flush") == flushes + 1
    epochs = {c.app[pages_key].cache.epoch for c in clients}
    assert len(epochs) == 1 and old not in epochs
    for client in clients:
        body, _ = await fetch(client, token_for(), coupon_type=0)
        assert ids(body) == []


async def test_processes_starting_together_flush_once(member, make_client, settings):
    """Started at the same moment, nobody is covered to hand over: one of them flushes, and
    acknowledges the others' barriers, reached before it was covered, once it is."""
    flushes, handovers = coverage("flush"), coverage("handover")
    clients = await asyncio.gather(*(make_client(settings) for _ in range(3)))
    await ready(*clients)
    assert coverage("flush") == flushes + 1
    assert coverage("handover") == handovers + 2
    assert len({c.app[pages_key].cache.epoch for c in clients}) == 1


async def test_a_coupon_edit_is_applied_while_requests_hold_every_pooled_connection(
        rows, client, db, settings):
    """A coupon's edit is applied by reading its holders on the LISTEN connection, not the pool:
    with every pooled connection held (as right after a flush, when every request misses), the
    invalidation does not wait in the requests' queue, and nothing is lost."""
    await rows.member(1, 1)
    cid = await rows.coupon(1, name="A")
    await rows.member_coupon(cid, uid=1)
    await fetch(client, token_for(), coupon_type=0)
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "hit"
    pool = client.app[db_pool_key]
    held = [await pool.acquire() for _ in range(settings.db_pool_max_size)]
    try:
        await db.execute("UPDATE yz_coupon SET name = '改名了' WHERE id = $1", cid)
        async with asyncio.timeout(0.5):  # the pool's own wait is DB_ACQUIRE_TIMEOUT_SECONDS, 1 s
            await settle(client, db)
        assert client.app[pages_key].trust.usable, "the invalidation did not fail"
    finally:
        for conn in held:
            await pool.release(conn)
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss"
    assert [i["belongs_to_coupon"]["name"] for i in items_of(body)] == ["改名了"]
