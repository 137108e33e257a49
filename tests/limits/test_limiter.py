"""Rate limits per staff member and per member (GCRA in Redis, on the app's clock): 429 with
Retry-After and the envelope; NOSCRIPT handled; a failing Redis never blocks (fails open,
counted, logged once)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from service.limits.limiter import Rate, RateLimited, RateLimiter
from tests.support.api import check_error
from tests.support.common import token_for
from tests.support.pages import settle


@pytest.fixture
def settings(settings):
    """The Redis layer alone (what these tests count); the process-local layer has its own tests
    (tests/cache/test_local.py)."""
    return dataclasses.replace(settings, local_cache_enabled=False)


@pytest.fixture
async def people(rows) -> None:
    for uid in range(1, 8):
        await rows.member(uid, 1)
        cid = await rows.coupon(1, name=f"m{uid}")
        await rows.member_coupon(cid, uid=uid)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def limited(settings, **overrides):
    values = {"rate_limit_staff_per_minute": 600, "rate_limit_staff_burst": 100,
              "rate_limit_member_per_minute": 60, "rate_limit_member_burst": 3,
              # Leases that outlive any test: their expiry is tested apart, on a fake clock.
              "rate_limit_lease": 4, "rate_limit_lease_seconds": 600.0,
              # Exact decisions per request: local admission's looser bound has its own tests
              # (test_local_admission.py).
              "rate_limit_local_admits": 0}
    values.update(overrides)
    return dataclasses.replace(settings, **values)


async def get(client, token: str, **params) -> tuple[int, dict, dict]:
    query = {"client": "work", "type": "17", **{k: str(v) for k, v in params.items()}}
    resp = await client.get("/api/v2/coupons", params=query,
                            headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    return resp.status, body, resp.headers


async def test_member_burst_then_429_then_refill_on_the_clock(make_client, settings, people,
                                                              clock, redis_client):
    await redis_client.flushdb()
    client = await make_client(limited(settings))
    refused = sample("coupons_rate_limit_rejections_total", scope="member")
    statuses = [(await get(client, token_for(1, 1)))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    status, body, headers = await get(client, token_for(1, 1))
    assert status == 429 and headers["Retry-After"] == "1"
    check_error(body)
    assert list(body["data"]["errors"]) == ["request"]
    # Another member is not limited by member 1's rate.
    assert (await get(client, token_for(1, 2)))[0] == 200
    clock.advance(1)  # 60/min: one more request per second
    assert [(await get(client, token_for(1, 1)))[0] for _ in range(2)] == [200, 429]
    assert sample("coupons_rate_limit_rejections_total", scope="member") == refused + 3


async def test_member_limit_is_shared_by_every_staff_member(make_client, settings, people,
                                                            redis_client):
    await redis_client.flushdb()
    client = await make_client(limited(settings))
    statuses = [(await get(client, token_for(1, 1, staff=f"s{n}")))[0] for n in range(4)]
    assert statuses == [200, 200, 200, 429]


async def test_staff_limit_across_members(make_client, settings, people, redis_client, clock):
    await redis_client.flushdb()
    client = await make_client(limited(settings, rate_limit_staff_per_minute=6,
                                       rate_limit_staff_burst=5))
    statuses = [(await get(client, token_for(1, uid)))[0] for uid in range(1, 8)]
    assert statuses == [200] * 5 + [429] * 2
    status, _, headers = await get(client, token_for(1, 7))
    assert status == 429 and headers["Retry-After"] == "10"  # 6/min: one per 10 s
    # Another staff member of the same tenant has their own budget.
    assert (await get(client, token_for(1, 7, staff="other")))[0] == 200
    clock.advance(10)
    assert (await get(client, token_for(1, 7)))[0] == 200


async def test_staff_token_contact_flow_is_limited_too(make_client, settings, people, rows,
                                                       redis_client):
    await redis_client.flushdb()
    await rows.contact("wm1", 1)
    client = await make_client(limited(settings, rate_limit_staff_per_minute=6,
                                       rate_limit_staff_burst=2))
    token = token_for(1, None)
    statuses = [(await get(client, token, user_id="wm1"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_keys_expire_when_the_bucket_is_full_again(make_client, settings, people,
                                                         redis_client):
    await redis_client.flushdb()
    client = await make_client(limited(settings))
    await get(client, token_for(1, 1))
    keys = sorted(k.decode() for k in await redis_client.keys("cp:rl:*"))
    assert keys == ["cp:rl:m:{1:1}", "cp:rl:s:{1:staff-1}"]
    # The staff member leased 4 allowances; the member's burst of 3 has no upper half to lease
    # from, so it took its one. Each key lives until that many intervals have passed.
    assert 0 < await redis_client.pttl("cp:rl:m:{1:1}") <= 1000
    assert 300 < await redis_client.pttl("cp:rl:s:{1:staff-1}") <= 400


async def test_script_flushed_is_reloaded(make_client, settings, people, redis_client):
    await redis_client.flushdb()
    client = await make_client(limited(settings))
    failed_open = sample("coupons_rate_limit_failed_open_total")
    assert (await get(client, token_for(1, 1)))[0] == 200
    await redis_client.script_flush()
    statuses = [(await get(client, token_for(1, 1)))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert sample("coupons_rate_limit_failed_open_total") == failed_open


async def test_leased_hits_skip_the_scripts_then_one_pipeline_renews(
        make_client, settings, people, own_redis, db):
    await own_redis.wait_up()
    client = await make_client(limited(settings, redis_url=own_redis.url,
                                       rate_limit_member_burst=50))
    await settle(client, db)  # the rows' invalidations first: they would refuse the fill
    admin = aioredis.Redis.from_url(own_redis.url)

    def calls(stats: dict, name: str) -> int:
        return stats.get(f"cmdstat_{name}", {}).get("calls", 0)

    try:
        # A miss: both parties lease 4 allowances, this request spends one of each.
        await get(client, token_for(1, 1))
        before = await admin.info("commandstats")
        for _ in range(3):
            status, _, headers = await get(client, token_for(1, 1))
            assert status == 200 and headers["X-Cache"] == "hit"
        leased = await admin.info("commandstats")
        # Three hits on the leases: the page reads only.
        assert calls(leased, "evalsha") == calls(before, "evalsha")
        assert calls(leased, "hget") - calls(before, "hget") == 3
        status, _, headers = await get(client, token_for(1, 1))
        after = await admin.info("commandstats")
        assert status == 200 and headers["X-Cache"] == "hit"
        # The leases used up: the two limiter scripts and the page read, sent together by one
        # pipeline; no SCRIPT EXISTS/LOAD round trip before them.
        assert calls(after, "evalsha") - calls(leased, "evalsha") == 2
        assert calls(after, "hget") - calls(leased, "hget") == 1
        assert calls(after, "script") == calls(before, "script")
        assert calls(after, "eval") == calls(before, "eval")
    finally:
        await admin.aclose()


async def test_two_workers_leasing_never_pass_more_than_the_burst(make_client, settings,
                                                                  people, redis_client):
    """Each allowance is counted in Redis when it is leased: two processes (two apps on one
    Redis) taking turns get exactly the burst between them, then 429s."""
    await redis_client.flushdb()
    overrides = {"rate_limit_member_burst": 10, "rate_limit_member_per_minute": 1}
    first = await make_client(limited(settings, **overrides))
    second = await make_client(limited(settings, **overrides))
    statuses = []
    for _ in range(8):
        for client in (first, second):
            statuses.append((await get(client, token_for(1, 1)))[0])
    assert statuses.count(200) == 10 and statuses.count(429) == 6
    assert statuses[:8] == [200] * 8, "the first leases cover four turns each"


async def test_a_local_hit_with_limits_on_needs_no_round_trip(make_client, settings, people,
                                                              own_redis, db):
    await own_redis.wait_up()
    client = await make_client(dataclasses.replace(
        limited(settings, redis_url=own_redis.url, rate_limit_member_burst=50),
        local_cache_enabled=True))
    await settle(client, db)  # the rows' invalidations first: they would refuse the fill
    admin = aioredis.Redis.from_url(own_redis.url)
    try:
        await get(client, token_for(1, 1))
        before = await admin.info("commandstats")
        outcomes = [(await get(client, token_for(1, 1)))[2]["X-Cache"] for _ in range(3)]
        after = await admin.info("commandstats")
        assert outcomes == ["local"] * 3
        total = sum(v.get("calls", 0) for v in after.values()) - sum(
            v.get("calls", 0) for v in before.values())
        assert total == 1, "only the INFO command itself"
    finally:
        await admin.aclose()


async def test_redis_down_fails_open_counted_and_logged_once(make_client, settings, people,
                                                             own_redis, caplog):
    await own_redis.wait_up()
    client = await make_client(limited(settings, redis_url=own_redis.url,
                                       rate_limit_member_burst=1))
    assert (await get(client, token_for(1, 1)))[0] == 200
    assert (await get(client, token_for(1, 1)))[0] == 429
    own_redis.kill()
    caplog.set_level(logging.WARNING, logger="service.limits.limiter")
    failed_open = sample("coupons_rate_limit_failed_open_total")
    statuses = [(await get(client, token_for(1, 1)))[0] for _ in range(20)]
    assert statuses == [200] * 20, "a failing Redis never blocks the endpoint"
    assert sample("coupons_rate_limit_failed_open_total") == failed_open + 20
    lines = [r for r in caplog.records if r.name == "service.limits.limiter"]
    assert len(lines) == 1 and "failed open" in lines[0].getMessage()


def test_refusals_are_counted_by_scope_in_metrics():
    """The 429 of each party shows in coupons_rate_limit_rejections_total{scope}."""
    from prometheus_client import REGISTRY

    from service.limits.limiter import Check, Rate, RateLimiter

    def rejections(scope: str) -> float:
        return REGISTRY.get_sample_value("coupons_rate_limit_rejections_total",
                                         {"scope": scope}) or 0.0

    before_m, before_s = rejections("member"), rejections("staff")
    checks = [Check("cp:rl:s:{1:staff}", Rate(60, 1)), Check("cp:rl:m:{1:7}", Rate(60, 1))]
    limiter = RateLimiter(prefix="cp", staff=Rate(60, 1), member=Rate(60, 1))
    with pytest.raises(RateLimited) as refused:
        limiter.decide([[1, 0], [0, 2500]], checks)
    assert refused.value.retry_after == 3
    assert rejections("member") == before_m + 1
    assert rejections("staff") == before_s


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_leases_are_spent_once_each_and_expire() -> None:
    clock = FakeMonotonic()
    limiter = RateLimiter(prefix="t", staff=Rate(600, 10), member=Rate(60, 10), lease=4,
                          lease_seconds=1.0, monotonic=clock)
    checks = limiter.checks(1, "s", 2)
    assert limiter.admit_locally(checks) == checks and not limiter.has_leases(checks)
    # Redis granted the staff member 4 (this request's and 3 more), the member only 1.
    limiter.decide([[4, 0], [1, 0]], checks)
    assert not limiter.has_leases(checks), "the member holds none"
    assert limiter.admit_locally(checks) == [checks[1]]
    limiter.decide([[2, 0]], [checks[1]])
    assert limiter.has_leases(checks)
    assert limiter.admit_locally(checks) == []
    # The member's spare is gone; the staff member spends the third of its three spares.
    assert limiter.admit_locally(checks) == [checks[1]]
    assert limiter.admit_locally([checks[0]]) == [checks[0]], "all four spent"
    limiter.decide([[4, 0]], [checks[0]])
    clock.now += 1.0
    assert not limiter.has_leases([checks[0]])
    assert limiter.admit_locally([checks[0]]) == [checks[0]], "expired: unused ones are lost"


async def test_a_party_below_its_rate_is_never_refused_however_many_workers_lease(
        redis_client) -> None:
    """Four workers; one member asking at 80% of its rate, three requests at once every 0.75 s
    (a tab opened and scrolled), each to the next worker. A worker sees the member less often
    than its lease lasts, so it leases again each time, and the three allowances it leaves
    unused are counted in Redis all the same. Leases come only from the upper half of the
    burst, so that waste cannot take the allowances the member's own requests need: no 429 in
    ten minutes of its clock."""
    await RateLimiter.load(redis_client)
    clock = FakeMonotonic()
    prefix = f"lease{id(clock)}"
    workers = [RateLimiter(prefix=prefix, staff=None, member=Rate(300, 30), lease=4,
                           lease_seconds=0.5, monotonic=clock) for _ in range(4)]
    refused = asked = 0
    for n in range(4 * 600):  # 4 a second (the rate is 5), 600 s
        clock.now = 100.0 + (n // 3) * 0.75
        worker = workers[n % 4]
        checks = worker.admit_locally(worker.checks(1, "s", 7))
        if not checks:
            continue
        pipe = redis_client.pipeline(transaction=False)
        worker.queue(pipe, checks, int(clock.now * 1000))
        asked += 1
        try:
            worker.decide(await pipe.execute(), checks)
        except RateLimited:
            refused += 1
    assert refused == 0
    assert asked == 4 * 600, "every request found its worker's lease expired"


def test_concurrent_leases_add_up() -> None:
    """Requests that all found the lease spent each took allowances from Redis, all counted
    there: none may be lost here."""
    limiter = RateLimiter(prefix="t", staff=Rate(600, 100), member=None, lease=4,
                          monotonic=FakeMonotonic())
    checks = limiter.checks(1, "s", None)
    for _ in range(3):
        limiter.decide([[4, 0]], checks)
    spent = 0
    while not limiter.admit_locally(checks):
        spent += 1
    assert spent == 9


def test_a_lease_of_one_is_a_call_per_request() -> None:
    limiter = RateLimiter(prefix="t", staff=Rate(600, 10), member=None, lease=1)
    checks = limiter.checks(1, "s", 2)
    limiter.decide([[1, 0]], checks)
    assert limiter.admit_locally(checks) == checks


def test_refused_raises_429_and_leases_nothing() -> None:
    limiter = RateLimiter(prefix="t", staff=Rate(600, 10), member=Rate(60, 10), lease=4)
    checks = limiter.checks(1, "s", 2)
    with pytest.raises(RateLimited) as info:
        limiter.decide([[4, 0], [0, 2500]], checks)
    assert info.value.retry_after == 3
    assert limiter.has_leases([checks[0]]) and not limiter.has_leases([checks[1]])


def test_spend_leases_is_all_or_nothing() -> None:
    limiter = RateLimiter(prefix="t", staff=Rate(600, 10), member=Rate(60, 10), lease=4,
                          monotonic=FakeMonotonic())
    checks = limiter.checks(1, "s", 2)
    limiter.decide([[2, 0]], [checks[0]])  # the staff member holds one spare, the member none
    assert not limiter.spend_leases(checks)
    assert limiter.has_leases([checks[0]]), "nothing spent when one party holds none"
    limiter.decide([[2, 0]], [checks[1]])
    assert limiter.spend_leases(checks)
    assert not limiter.has_leases([checks[0]]) and not limiter.has_leases([checks[1]])
