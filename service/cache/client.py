"""The Redis client from REDIS_URL: one server (`redis://`, `rediss://`, `unix://`) or a Redis
Cluster (`redis+cluster://host:port[,host:port...]`, `rediss+cluster://...`).

Both clients speak the same commands; the page cache only needs to know which one it has where
a command would cross hash slots (docs/operations.md, "Past one machine").
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.settings import Settings

AnyRedis = aioredis.Redis | RedisCluster


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """`redis+cluster://user:pw@h1:7000,h2:7001/` -> (`redis://user:pw@h1:7000/`, seeds)."""
    parts = urlsplit(url)
    scheme = parts.scheme.replace("+cluster", "")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"cluster seed {entry!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    first = hosts.split(",")[0].strip()
    netloc = f"{userinfo}@{first}" if userinfo else first
    return urlunsplit(parts._replace(scheme=scheme, netloc=netloc)), seeds


def connect(settings: Settings) -> AnyRedis:
    """A client with one bounded try per call: no silent retries, the breaker decides."""
    assert settings.redis_url is not None
    common = {
        "socket_timeout": settings.readiness_timeout_seconds,
        "socket_connect_timeout": settings.readiness_timeout_seconds,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_cluster:
        url, seeds = cluster_seeds(settings.redis_url)
        return RedisCluster.from_url(
            url,
            # Every seed, so that the client starts while any one of them answers.
            startup_nodes=[ClusterNode(host, port) for host, port in seeds[1:]],
            # Per node; a call that finds its node's pool exhausted fails fast (the breaker
            # counts it) rather than queueing behind a slow node.
            max_connections=settings.redis_max_connections,
            **{**common,
               # One more try after a MOVED/ASK (a resharding or failover: the client refreshes
               # its slot map first), never a retry storm; each call stays time-bounded.
               "retry": Retry(NoBackoff(), 1)},
        )
    # Blocking pool: a burst waits for a free connection (bounded by each call's timeout)
    # instead of opening thousands.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=None,
        **common,
    )
    return aioredis.Redis.from_pool(pool)
