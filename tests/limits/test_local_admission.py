"""Local admission (service/limits/limiter.py): a party's requests are admitted without a Redis
round trip and charged to Redis afterwards, and the limits still hold to within
RATE_LIMIT_LOCAL_ADMITS requests per party and process. Two apps on one Redis stand for two
processes; the app clock is frozen, so nothing refills while a test runs."""

from __future__ import annotations

import dataclasses

import pytest
import redis.asyncio as aioredis

from service.keys import clock_key, pages_key
from tests.support.common import token_for

L = 4  # RATE_LIMIT_LOCAL_ADMITS in these tests
BURST = 3


@pytest.fixture
def settings(settings):
    # Member 1 may make BURST requests and then one a minute; staff limits far away. Charges are
    # sent by the tests themselves (charge()), and by the ticker at most once a second.
    return dataclasses.replace(
        settings, rate_limit_staff_per_minute=100_000, rate_limit_staff_burst=10_000,
        rate_limit_member_per_minute=1, rate_limit_member_burst=BURST,
        rate_limit_lease=1, rate_limit_local_admits=L, rate_limit_charge_seconds=1.0)


@pytest.fixture
async def people(rows) -> None:
    await rows.member(1, 1)
    await rows.member_coupon(await rows.coupon(1, name="m1"), uid=1)


async def status_of(client, token: str) -> int:
    resp = await client.get("/api/v2/coupons", params={"client": "work", "type": "17"},
                            headers={"Authorization": f"Bearer {token}"})
    await resp.read()
    if resp.status == 429:
        assert int(resp.headers["Retry-After"]) >= 1
    return resp.status


async def charge(client) -> None:
    await client.app[pages_key].charge_limits(client.app[clock_key].now_ms())


async def evalsha_calls(redis_client: aioredis.Redis) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_admitted_without_a_round_trip_then_charged(make_client, settings, people,
                                                          redis_client):
    await redis_client.flushdb()
    client = await make_client(settings)
    assert await status_of(client, token_for(1, 1)) == 200  # a miss: the page's own scripts
    await charge(client)  # (its first call also loads the script: NOSCRIPT, then again)
    before = await evalsha_calls(redis_client)
    assert await status_of(client, token_for(1, 1)) == 200
    assert await evalsha_calls(redis_client) == before, "no limiter call on the request path"
    await charge(client)
    # One call for both parties; both requests are counted: 2 intervals of 60 s on the
    # member's TAT.
    assert await evalsha_calls(redis_client) == before + 1
    assert 60_000 < await redis_client.pttl("cp:rl:m:{1:1}") <= 120_000


async def test_the_bound_holds_across_processes(make_client, settings, people, redis_client):
    """Whatever the interleaving of requests and charges, member 1 gets at most BURST requests
    plus L per process; once charged, every process refuses it without asking Redis."""
    await redis_client.flushdb()
    apps = [await make_client(settings), await make_client(settings)]
    statuses = []
    for n in range(40):
        statuses.append(await status_of(apps[n % 2], token_for(1, 1)))
        if n % 7 == 6:
            await charge(apps[n % 2])
    for app in apps:
        await charge(app)
    admitted = statuses.count(200)
    assert BURST <= admitted <= BURST + 2 * L, statuses
    assert set(statuses) <= {200, 429}
    before = await evalsha_calls(redis_client)
    assert [await status_of(app, token_for(1, 1)) for app in apps for _ in range(3)] == [429] * 6
    assert await evalsha_calls(redis_client) == before, "refused here, from the last charge"


async def test_past_l_unconfirmed_the_party_waits_for_redis(make_client, settings, people,
                                                           redis_client):
    """Without any charge, one process admits L on its own; the next request goes to Redis's
    exact check, which has counted none of them yet and admits up to the burst, then refuses."""
    await redis_client.flushdb()
    client = await make_client(settings)
    statuses = [await status_of(client, token_for(1, 1)) for _ in range(L + BURST + 2)]
    assert statuses == [200] * (L + BURST) + [429, 429]
