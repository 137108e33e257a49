"""Isolation under load: many members of two tenants at once, cache on, two processes sharing
Redis (the cross-process lease), writes landing meanwhile: every response holds only its own
member's coupons. The cache key, the single flight and the lease are where one member's page
could reach another."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from tests.support.api import check_success, items_of
from tests.support.common import token_for
from tests.support.pages import settle

TENANTS = {1: range(1, 21), 2: range(1001, 1021)}


@pytest.fixture
async def population(rows) -> dict[int, set[int]]:
    """Every member holds 2-6 coupons named after them; each tenant-1 member also has a stray
    row with their uid under tenant 2 (never theirs); staff-c follows every member as wm-<uid>."""
    rnd = random.Random(7)
    owned: dict[int, set[int]] = {}
    for uniacid, uids in TENANTS.items():
        for uid in uids:
            await rows.member(uid, uniacid)
            owned[uid] = set()
            for k in range(rnd.randint(2, 6)):
                cid = await rows.coupon(uniacid, name=f"u{uid}-{k}", use_type=k % 3,
                                        coupon_method=1 + k % 2)
                owned[uid].add(await rows.member_coupon(cid, uid=uid, uniacid=uniacid,
                                                        used=int(k == 5)))
            await rows.contact(f"wm-{uid}", uid, staff="staff-c", uniacid=uniacid)
            if uniacid == 1:
                stray = await rows.coupon(2, name="stray")
                await rows.member_coupon(stray, uid=uid, uniacid=2)
    return owned


async def test_many_members_two_tenants_concurrently(make_client, settings, population, db):
    settings = dataclasses.replace(settings, rate_limit_staff_per_minute=1_000_000,
                                   rate_limit_staff_burst=100_000,
                                   rate_limit_member_per_minute=1_000_000,
                                   rate_limit_member_burst=100_000,
                                   db_pool_min_size=2, db_pool_max_size=6,
                                   # One loop runs both apps and 150 clients: a 50 ms Redis
                                   # budget would measure the loop, not Redis.
                                   redis_timeout_seconds=2.0,
                                   # 150 requests at once on 2 x 6 connections: queueing is
                                   # expected here (elsewhere it is a 503 after 1 s).
                                   db_acquire_timeout_seconds=30.0)
    # Two app instances on one Redis: two processes as far as the cache is concerned.
    apps = [await make_client(settings), await make_client(settings)]
    for client in apps:
        await settle(client, db)
    rnd = random.Random(11)
    members = [(uniacid, uid) for uniacid, uids in TENANTS.items() for uid in uids]
    outcomes: Counter[str] = Counter()
    checked = 0

    async def one(uniacid: int, uid: int) -> None:
        nonlocal checked
        client = rnd.choice(apps)
        if rnd.random() < 0.3:
            token, extra = token_for(uniacid, None, staff="staff-c"), {"user_id": f"wm-{uid}"}
        else:
            token, extra = token_for(uniacid, uid), {}
        params = {"client": "work", "type": "17", "status_request": str(rnd.choice((1, 3))),
                  "coupon_type": str(rnd.choice((0, 1))), "pagesize": "2",
                  "page": str(rnd.choice((1, 2))),
                  **extra}
        resp = await client.get("/api/v2/coupons", params=params,
                                headers={"Authorization": f"Bearer {token}"})
        body = await resp.json()
        assert resp.status == 200, body
        check_success(body)
        outcomes[resp.headers["X-Cache"]] += 1
        for item in items_of(body):
            assert item["belongs_to_coupon"]["name"].startswith(f"u{uid}-"), (uid, item)
            assert item["id"] in population[uid], (uid, item["id"])
        checked += 1

    async def writer() -> None:
        # Invalidations land while pages are read, filled and coalesced.
        for n in range(30):
            uid = members[n % len(members)][1]
            await db.execute("UPDATE yz_member_coupon SET updated_at = now() WHERE uid = $1",
                             uid)
            await asyncio.sleep(0)

    stored = REGISTRY.get_sample_value("coupons_cache_fills_total", {"result": "stored"}) or 0
    for _ in range(6):
        wave = [one(*rnd.choice(members)) for _ in range(150)]
        await asyncio.gather(writer(), *wave)
    assert checked == 900
    # The cache did its work (hits, and bursts sharing loads), so the check above covered it.
    # (How many hits depends on when the writer's invalidations land: a floor, not a figure.)
    # A Redis call that times out under this burst answers from PostgreSQL (`bypass`): a right
    # answer too, and checked like the others, so it is allowed.
    served = outcomes["hit"] + outcomes["local"] + outcomes["coalesced"]
    assert served >= 50 and outcomes["miss"] > 0, outcomes
    assert REGISTRY.get_sample_value("coupons_cache_fills_total", {"result": "stored"}) > stored
