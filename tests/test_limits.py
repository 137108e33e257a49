"""Rate limits per staff member and per member (GCRA in Redis, on the app's clock): 429 with
Retry-After and the envelope; NOSCRIPT handled; a failing Redis never blocks (fails open,
counted, logged once)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import redis.asyncio as aioredis

from service.keys import limiter_key
from tests.conftest import token_for
from tests.helpers import check_error
from tests.test_cache import own_redis, wait_redis  # noqa: F401 (fixture)


@pytest.fixture
def settings(settings):
    """The Redis layer alone (what these tests count); the local layer has test_localcache.py."""
    return dataclasses.replace(settings, local_cache_enabled=False)


@pytest.fixture
async def people(rows) -> None:
    for uid in range(1, 8):
        await rows.member(uid, 1)
        cid = await rows.coupon(1, name=f"m{uid}")
        await rows.member_coupon(cid, uid=uid)


def limited(settings, **overrides):
    values = {"rate_limit_staff_per_minute": 600, "rate_limit_staff_burst": 100,
              "rate_limit_member_per_minute": 60, "rate_limit_member_burst": 3}
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
    assert client.app[limiter_key].refused == 3


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
    assert 0 < await redis_client.pttl("cp:rl:m:{1:1}") <= 1000
    assert 0 < await redis_client.pttl("cp:rl:s:{1:staff-1}") <= 100


async def test_script_flushed_is_reloaded(make_client, settings, people, redis_client):
    await redis_client.flushdb()
    client = await make_client(limited(settings))
    assert (await get(client, token_for(1, 1)))[0] == 200
    await redis_client.script_flush()
    statuses = [(await get(client, token_for(1, 1)))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert client.app[limiter_key].failed_open == 0


async def test_a_limited_hit_is_two_scripts_and_one_read(make_client, settings, people,
                                                               own_redis):  # noqa: F811
    await wait_redis(own_redis.url)
    client = await make_client(limited(settings, redis_url=own_redis.url,
                                       rate_limit_member_burst=50))
    admin = aioredis.Redis.from_url(own_redis.url)
    try:
        await get(client, token_for(1, 1))
        status, _, headers = await get(client, token_for(1, 1))
        assert headers["X-Cache"] == "hit"
        before = await admin.info("commandstats")
        status, _, headers = await get(client, token_for(1, 1))
        after = await admin.info("commandstats")
        assert status == 200 and headers["X-Cache"] == "hit"

        def calls(stats: dict, name: str) -> int:
            return stats.get(f"cmdstat_{name}", {}).get("calls", 0)

        # The two limiter scripts and the page read, sent together by one pipeline; no
        # SCRIPT EXISTS/LOAD round trip before them.
        assert calls(after, "evalsha") - calls(before, "evalsha") == 2
        assert calls(after, "hget") - calls(before, "hget") == 1
        assert calls(after, "script") == calls(before, "script")
        assert calls(after, "eval") == calls(before, "eval")
    finally:
        await admin.aclose()


async def test_redis_down_fails_open_counted_and_logged_once(make_client, settings, people,
                                                             own_redis, caplog):  # noqa: F811
    await wait_redis(own_redis.url)
    client = await make_client(limited(settings, redis_url=own_redis.url,
                                       rate_limit_member_burst=1))
    assert (await get(client, token_for(1, 1)))[0] == 200
    assert (await get(client, token_for(1, 1)))[0] == 429
    own_redis.stop()
    caplog.set_level(logging.WARNING, logger="service.limits")
    statuses = [(await get(client, token_for(1, 1)))[0] for _ in range(20)]
    assert statuses == [200] * 20, "a failing Redis never blocks the endpoint"
    limiter = client.app[limiter_key]
    assert limiter.failed_open == 20
    lines = [r for r in caplog.records if r.name == "service.limits"]
    assert len(lines) == 1 and "failed open" in lines[0].getMessage()


def test_refusals_are_counted_by_scope_in_metrics():
    """The 429 of each party shows in coupons_rate_limit_rejections_total{scope}."""
    from service import metrics
    from service.errors import ApiError
    from service.limits import Check, Rate, RateLimiter

    before_m = metrics.RATE_LIMIT_REJECTIONS.labels("member")._value.get()
    before_s = metrics.RATE_LIMIT_REJECTIONS.labels("staff")._value.get()
    checks = [Check("cp:rl:s:{1:staff}", Rate(60, 1)), Check("cp:rl:m:{1:7}", Rate(60, 1))]
    limiter = RateLimiter.__new__(RateLimiter)
    limiter.refused = 0
    with pytest.raises(ApiError) as refused:
        limiter.decide([[1, 0], [0, 2500]], checks)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "3"
    assert metrics.RATE_LIMIT_REJECTIONS.labels("member")._value.get() == before_m + 1
    assert metrics.RATE_LIMIT_REJECTIONS.labels("staff")._value.get() == before_s
