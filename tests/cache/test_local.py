"""The process-local layer: the same invalidation rules as Redis, bounded in bytes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
from prometheus_client import REGISTRY

from service.cache.local import ENTRY_OVERHEAD, LocalCache
from service.cache.redis import CachedPage
from service.keys import clock_key, listener_key, pages_key, redis_key
from tests.support.common import NOW, SERVICE_TOKEN, token_for
from tests.support.pages import fetch, ids, settle

T = int(NOW.timestamp())


def page(body: bytes = b"x", valid_from: int = T, valid_until: int = T + 60) -> CachedPage:
    return CachedPage(valid_from, valid_until, "e" * 16, body)


class FakeMonotonic:
    """A monotonic clock a test can move (the safety TTL is monotonic time, not the app clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The structure alone ---------------------------------------------------------------------------

def test_put_get_and_clock_bounds():
    cache = LocalCache(10_000, 5.0)
    assert cache.put((1, 1, "f"), page(), cache.seq())
    assert cache.get((1, 1, "f"), T).body == b"x"
    assert cache.get((1, 1, "f"), T - 1) is None, "a clock stepped back sees no future page"
    assert cache.put((1, 1, "f"), page(), cache.seq())
    assert cache.get((1, 1, "f"), T + 60) is None, "valid_until is excluded"
    assert len(cache) == 0 and cache.bytes == 0


def test_safety_ttl_is_monotonic():
    clock = FakeMonotonic()
    cache = LocalCache(10_000, 5.0, monotonic=clock)
    cache.put((1, 1, "f"), page(), cache.seq())
    clock.now += 4.9
    assert cache.get((1, 1, "f"), T) is not None
    clock.now += 0.2
    assert cache.get((1, 1, "f"), T) is None


def test_fill_started_before_an_invalidation_is_refused():
    cache = LocalCache(10_000, 5.0)
    stamp = cache.seq()
    cache.invalidate_member(1, 1)
    assert not cache.put((1, 1, "f"), page(), stamp)
    assert cache.put((1, 2, "f"), page(), stamp), "another member is not concerned"
    stamp = cache.seq()
    cache.invalidate_tenant(1)
    assert not cache.put((1, 3, "f"), page(), stamp)
    assert cache.put((2, 3, "f"), page(), stamp)
    stamp = cache.seq()
    cache.clear()
    assert not cache.put((3, 3, "f"), page(), stamp)
    assert cache.put((3, 3, "f"), page(), cache.seq())


def test_invalidations_drop_entries():
    cache = LocalCache(100_000, 5.0)
    for uniacid, uid, field in ((1, 1, "a"), (1, 1, "b"), (1, 2, "a"), (2, 1, "a")):
        cache.put((uniacid, uid, field), page(), cache.seq())
    cache.invalidate_member(1, 1)
    assert cache.get((1, 1, "a"), T) is None and cache.get((1, 1, "b"), T) is None
    assert cache.get((1, 2, "a"), T) is not None
    cache.invalidate_tenant(1)
    assert cache.get((1, 2, "a"), T) is None and cache.get((2, 1, "a"), T) is not None
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def evictions() -> float:
    return REGISTRY.get_sample_value("coupons_local_cache_evictions_total") or 0.0


def test_bounded_in_bytes_lru_out_first():
    body = b"y" * 800
    size = len(body) + ENTRY_OVERHEAD
    cache = LocalCache(size * 3, 5.0)
    evicted = evictions()
    for n in range(3):
        cache.put((1, n, "f"), page(body), cache.seq())
    assert cache.get((1, 0, "f"), T) is not None  # now the most recently used
    cache.put((1, 3, "f"), page(body), cache.seq())
    assert cache.get((1, 1, "f"), T) is None, "the least recently used went out"
    assert cache.get((1, 0, "f"), T) is not None
    assert cache.bytes <= size * 3 and evictions() == evicted + 1
    assert not cache.put((1, 9, "f"), page(b"z" * size * 4), cache.seq()), "too big to keep"


def test_forgotten_history_refuses_very_old_lookups():
    clock = FakeMonotonic()
    cache = LocalCache(10_000, 5.0, monotonic=clock)
    stamp = cache.seq()
    cache.invalidate_member(1, 1)
    clock.now += 61
    cache.invalidate_member(2, 2)  # records are pruned on the next invalidation
    assert not cache.put((1, 1, "f"), page(), stamp), "the record is gone: refuse, not guess"
    assert cache.put((1, 1, "f"), page(), cache.seq())


# Proven again before the safety TTL ends ------------------------------------------------------

def test_an_entry_in_use_is_due_before_its_ttl_ends_and_renewed_by_its_proof():
    clock = FakeMonotonic()
    cache = LocalCache(10_000, 60.0, monotonic=clock)
    for field in ("early", "late", "idle"):
        cache.put((1, 1, field), page(), cache.seq())
    assert cache.get((1, 1, "early"), T) is not None
    clock.now += 44.0
    assert cache.due() == [], "not before the last quarter of the TTL"
    clock.now += 2.0
    assert [key for key, _ in cache.due()] == [(1, 1, "early")], "used since its fill"
    assert cache.due() == [], "handed out once"
    assert cache.get((1, 1, "late"), T) is not None  # a first use after `due` walked past it
    assert cache.get((1, 1, "late"), T) is not None
    due = dict(cache.due())
    assert list(due) == [(1, 1, "late")]
    for key, held in due.items():
        assert cache.reprove(key, held, cache.seq(), held=True)
    clock.now += 20.0  # past the first TTL's end: served on the renewed one
    assert cache.get((1, 1, "late"), T) is not None
    assert cache.get((1, 1, "early"), T) is None, "handed out, never proven: it ends"
    assert cache.get((1, 1, "idle"), T) is None, "never used: left to end"
    clock.now += 40.5  # the renewed TTL ends too: nothing proved it again
    assert cache.get((1, 1, "late"), T) is None


def test_proof_records_stay_bounded_without_anyone_asking():
    clock = FakeMonotonic()
    cache = LocalCache(10_000_000, 5.0, monotonic=clock)
    for n in range(1000):
        cache.put((1, n, "f"), page(), cache.seq())
        clock.now += 0.1
    assert len(cache._proofs) <= 51, "records of TTLs already over are dropped on put"


def test_a_proof_read_before_an_invalidation_renews_nothing():
    clock = FakeMonotonic()
    cache = LocalCache(10_000, 60.0, monotonic=clock)
    for member_id in (1, 2):
        cache.put((1, member_id, "f"), page(), cache.seq())
    clock.now += 50.0
    for member_id in (1, 2):
        cache.get((1, member_id, "f"), T)
    due = dict(cache.due())
    seq = cache.seq()  # the proof's read starts...
    cache.invalidate_member(1, 1)  # ...an invalidation lands, and the next put refills member 1
    cache.put((1, 1, "f"), page(b"new"), cache.seq())
    assert not cache.reprove((1, 1, "f"), due[(1, 1, "f")], seq, held=True), "replaced"
    assert cache.reprove((1, 2, "f"), due[(1, 2, "f")], seq, held=True), "another member"
    cache.invalidate_member(1, 2)
    cache.put((1, 2, "f"), page(), cache.seq())
    cache.get((1, 2, "f"), T)
    stale = cache.seq()
    cache.invalidate_tenant(1)
    assert cache.put((1, 2, "f"), fresh := page(b"again"), cache.seq())
    assert not cache.reprove((1, 2, "f"), fresh, stale, held=True), \
        "the read began before the tenant's invalidation"


def test_a_page_redis_no_longer_holds_is_dropped_at_once():
    clock = FakeMonotonic()
    cache = LocalCache(10_000, 60.0, monotonic=clock)
    cache.put((1, 1, "f"), page(), cache.seq())
    clock.now += 50.0
    cache.get((1, 1, "f"), T)
    [(key, held)] = cache.due()
    assert not cache.reprove(key, held, cache.seq(), held=False)
    assert cache.get(key, T) is None and len(cache) == 0 and cache.bytes == 0


# In the app ------------------------------------------------------------------------------------

@pytest.fixture
async def member(rows):
    await rows.member(1, 1)
    cid = await rows.coupon(1, name="A")
    return await rows.member_coupon(cid)


async def test_second_request_is_a_local_hit(member, client):
    _, h1 = await fetch(client, token_for(), coupon_type=0)
    _, h2 = await fetch(client, token_for(), coupon_type=0)
    _, h3 = await fetch(client, token_for(), coupon_type=0)
    assert (h1["X-Cache"], h2["X-Cache"], h3["X-Cache"]) == ("miss", "local", "local")
    assert h1["ETag"] == h2["ETag"] == h3["ETag"]


async def test_redis_hit_fills_the_local_layer(member, make_client, settings):
    first = await make_client(settings)
    # Another process's view: same Redis, its own empty local layer. Started first: every
    # process flushes Redis when its listener starts.
    second = await make_client(settings)
    await fetch(first, token_for(), coupon_type=0)  # fills Redis
    _, h1 = await fetch(second, token_for(), coupon_type=0)
    _, h2 = await fetch(second, token_for(), coupon_type=0)
    assert (h1["X-Cache"], h2["X-Cache"]) == ("hit", "local")


async def test_a_write_in_sql_reaches_every_process(member, make_client, settings, db):
    a = await make_client(settings)
    b = await make_client(settings)
    for client in (a, b):
        await fetch(client, token_for(), coupon_type=0)
        _, headers = await fetch(client, token_for(), coupon_type=0)
        assert headers["X-Cache"] == "local"
    await db.execute("UPDATE yz_member_coupon SET used = 1 WHERE id = $1", member)
    for client in (a, b):
        await settle(client, db)
        body, headers = await fetch(client, token_for(), coupon_type=0)
        assert ids(body) == [] and headers["X-Cache"] != "local"


async def test_use_api_drops_the_local_page_before_answering(member, client):
    await fetch(client, token_for(), coupon_type=0)
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "local"
    resp = await client.post(f"/internal/member-coupons/{member}/use",
                             headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    assert resp.status == 200
    body, headers = await fetch(client, token_for(), coupon_type=0)
    assert ids(body) == [] and headers["X-Cache"] == "miss"


async def test_local_page_obeys_the_clock(rows, client, clock):
    await rows.member(1, 1)
    end = NOW + dt.timedelta(seconds=30)
    cid = await rows.coupon(1, time_limit=1, time_start=NOW - dt.timedelta(days=1), time_end=end)
    mc = await rows.member_coupon(cid)
    await settle(client, rows.conn)
    long_token = token_for(ttl=86_400)
    await fetch(client, long_token, coupon_type=0)
    clock.set(end)
    body, headers = await fetch(client, long_token, coupon_type=0)
    assert headers["X-Cache"] == "local" and ids(body) == [mc]
    clock.set(end + dt.timedelta(seconds=1))
    body, headers = await fetch(client, long_token, coupon_type=0)
    assert headers["X-Cache"] == "miss" and ids(body) == []


async def test_lost_trust_clears_the_local_layer(member, client):
    await fetch(client, token_for(), coupon_type=0)
    pages = client.app[pages_key]
    assert len(pages.local) == 1
    pages.trust.lost("test")
    assert len(pages.local) == 0
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "bypass"
    # The listener proves coverage again at once (alone here: a flush, a new epoch).
    async with asyncio.timeout(5):
        await pages.trust.ready.wait()
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss"


async def test_caches_off_reads_postgresql_every_time(member, make_client, settings):
    client = await make_client(dataclasses.replace(settings, cache_enabled=False))
    for _ in range(3):
        body, headers = await fetch(client, token_for(), coupon_type=0)
        assert headers["X-Cache"] == "bypass" and ids(body) == [member]
    assert client.app[listener_key] is not None


async def test_a_read_inside_an_invalidation_cannot_refill_the_local_layer(member, client, db,
                                                                           monkeypatch):
    """The race a black-box test found: the local layer used to be dropped first and Redis
    invalidated after; a read in between refilled the local layer from the old Redis copy, which
    then stayed for the local TTL. Here such a read is made certain: it runs inside the Redis
    invalidation, before Redis applies it. Afterwards no layer may serve the old page."""
    pages = client.app[pages_key]
    token = token_for()
    await fetch(client, token, coupon_type=0)
    _, headers = await fetch(client, token, coupon_type=0)
    assert headers["X-Cache"] == "local"
    seen = []
    real = pages.cache.invalidate_members

    async def with_a_read_first(uniacid, uids):
        body, headers = await fetch(client, token, coupon_type=0)  # still the old state
        seen.append((ids(body), headers["X-Cache"]))
        await real(uniacid, uids)

    monkeypatch.setattr(pages.cache, "invalidate_members", with_a_read_first)
    await db.execute("UPDATE yz_member_coupon SET used = 1 WHERE id = $1", member)
    await settle(client, db)
    body, headers = await fetch(client, token, coupon_type=0)
    assert (ids(body), headers["X-Cache"]) == ([], "miss")
    assert [page for page, _ in seen] == [[member]]  # the read in between saw the old state


async def test_a_used_page_is_proven_against_redis_and_dropped_once_redis_lost_it(member,
                                                                                  client):
    """With the app's Redis: a local page in use is renewed by its proof, past the TTL's first
    end; once its Redis copy is gone behind this process's back (an invalidation it missed), the
    next proof drops it, within the TTL, as the TTL's end would have."""
    pages = client.app[pages_key]
    now_s = client.app[clock_key].now_ms() // 1000
    for _ in range(2):
        _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "local"
    moved = FakeMonotonic()
    moved.now = pages.local._monotonic()
    pages.local._monotonic = moved  # the safety TTL's time, moved by the test
    moved.now += pages.local.ttl - 5
    _, headers = await fetch(client, token_for(), coupon_type=0)  # a use late in the TTL
    assert headers["X-Cache"] == "local"
    assert await pages.reprove_local(now_s) == 1
    moved.now += 10  # past the TTL of the fill
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "local"
    await client.app[redis_key].delete(pages.cache.member_key(1, 1))
    moved.now += pages.local.ttl - 15  # 10 s left of the renewed TTL
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "local"
    assert await pages.reprove_local(now_s) == 0
    _, headers = await fetch(client, token_for(), coupon_type=0)
    assert headers["X-Cache"] == "miss"
