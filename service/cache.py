"""The per-member page cache in Redis: final response bytes, one round trip on a hit.

Layout (README "The cache"): one hash per member, `<prefix>:{<uniacid>:<uid>}`, whose fields are
the member's cached pages (`<status>:<coupon_type>:<page>:<pagesize>:<shape>`) plus `gen`, a stamp
that every invalidation replaces with a fresh random value. A page value is
`<valid_from: 10 digits><valid_until: 10 digits><etag: 16 hex><body>`: the page is true by the
clock alone from the second it was read (`valid_from`) until `valid_until` (excluded), checked on
every hit against the app's clock (a clock stepped back does not see a page from its future).
The braces are a Redis Cluster hash tag: a member's keys and scripts share one slot.
`<prefix>:tm:{<uniacid>}` is the set of members that filled pages of a tenant, for tenant-wide
invalidation; it lives in another slot, so in a cluster it is written by its own command.
Beside `gen` the hash holds `lsn`: with a read replica, the primary's WAL position that a
replica must have replayed before its answer may fill this member's pages (service/repository.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from service import metrics

log = logging.getLogger("service.cache")

T = TypeVar("T")
LUA_DIR = Path(__file__).resolve().parent / "lua"
HEADER = 36  # 10 digits of valid_from, 10 of valid_until, 16 hex of etag


def new_stamp() -> str:
    return os.urandom(8).hex()


@dataclasses.dataclass(frozen=True, slots=True)
class CachedPage:
    valid_from: int
    valid_until: int
    etag: str
    body: bytes

    def encode(self) -> bytes:
        return b"%010d%010d" % (self.valid_from, self.valid_until) + self.etag.encode() + self.body

    @classmethod
    def decode(cls, raw: bytes) -> CachedPage:
        return cls(int(raw[:10]), int(raw[10:20]), raw[20:HEADER].decode(), raw[HEADER:])

    def fresh_at(self, now: int) -> bool:
        return self.valid_from <= now < self.valid_until


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    stamp: str
    lease: bool
    lease_token: str
    # The WAL position a replica must have replayed to serve this member (0: any).
    fence: int = 0


class CacheUnavailable(Exception):
    """Redis failed, timed out, or the circuit is open: the caller goes to PostgreSQL."""


class CircuitBreaker:
    """Stops hammering a failing Redis: after `failures` consecutive errors every call fails fast
    for `reset_seconds`, then one trial call decides."""

    def __init__(self, failures: int, reset_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._reset = reset_seconds
        self._monotonic = monotonic
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        if self._opened_at is None:
            return True
        if self._trial or self._monotonic() - self._opened_at < self._reset:
            return False
        self._trial = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        if self._trial or self._failures >= self._threshold:
            self._opened_at = self._monotonic()
        self._trial = False


class PageCache:
    """Redis operations of the page cache, each bounded in time and guarded by the breaker.

    `on_lost_invalidation` is called whenever an invalidation could not be applied: the owner
    must stop trusting the cache until `flush_all` succeeds.
    """

    # In a cluster, how many single-slot scripts one invalidation batch runs at once: enough to
    # overlap round trips, few enough to stay inside each node's connection pool.
    CLUSTER_CONCURRENCY = 16

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str, ttl_seconds: int,
                 timeout: float, lease_ms: int, breaker: CircuitBreaker,
                 fence: Callable[[], int] = lambda: 0) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        # The WAL position an invalidation stores with the new stamp (0 without a replica).
        self.fence = fence
        self.prefix = prefix
        self.ttl_ms = ttl_seconds * 1000
        self.timeout = timeout
        self.lease_ms = lease_ms
        self.breaker = breaker
        self._prepare = client.register_script((LUA_DIR / "prepare.lua").read_text())
        self._fill = client.register_script((LUA_DIR / "fill.lua").read_text())
        self._invalidate = client.register_script((LUA_DIR / "invalidate.lua").read_text())

    # Keys ------------------------------------------------------------------------------------
    def member_key(self, uniacid: int, uid: int) -> str:
        return f"{self.prefix}:{{{uniacid}:{uid}}}"

    def lease_key(self, uniacid: int, uid: int, field: str) -> str:
        return f"{self.prefix}:{{{uniacid}:{uid}}}:lease:{field}"

    def tenant_key(self, uniacid: int) -> str:
        return f"{self.prefix}:tm:{{{uniacid}}}"

    # Guarded calls ---------------------------------------------------------------------------
    async def _call(self, make: Callable[[], Awaitable[T]], budget: float | None = None) -> T:
        if not self.breaker.allow():
            metrics.REDIS_ERRORS.labels("circuit_open").inc()
            raise CacheUnavailable("circuit open")
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            # A timeout cancels the command inside redis-py, which then drops that connection
            # instead of reusing it one reply behind.
            async with asyncio.timeout(budget or self.timeout):
                result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            self._stay_cancelled(task, cancels)
            self.breaker.failure()
            metrics.REDIS_ERRORS.labels(
                "timeout" if isinstance(exc, TimeoutError) else "error").inc()
            raise CacheUnavailable(type(exc).__name__) from exc
        self._stay_cancelled(task, cancels)
        self.breaker.success()
        return result

    @staticmethod
    def _stay_cancelled(task: asyncio.Task[Any] | None, cancels: int) -> None:
        """redis-py can absorb a cancellation that lands while a pipeline finishes (the call
        then ends normally, or as a connection error: seen in the tests). A cancelled caller must
        stay cancelled: otherwise a shutdown that cancels the invalidation consumer waits on it
        forever."""
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError

    # The hot path ----------------------------------------------------------------------------
    async def batch(self, queue: Callable[[Pipeline], None],
                    reload: Callable[[aioredis.Redis], Awaitable[None]] | None = None) -> list:
        """The commands `queue` adds, in one pipeline: one round trip, bounded and guarded like
        every call. A NOSCRIPT reply (Redis restarted since the script was loaded) is answered
        by `reload` and one more try."""

        async def run() -> list:
            for attempt in range(2):
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        queue(pipe)
                        return await pipe.execute()
                except NoScriptError:
                    if attempt or reload is None:
                        raise
                    await reload(self.client)
            raise AssertionError("unreachable")

        return await self._call(run)

    async def get(self, uniacid: int, uid: int, field: str) -> CachedPage | None:
        raw = await self._call(lambda: self.client.hget(self.member_key(uniacid, uid), field))
        return None if raw is None else CachedPage.decode(raw)

    async def prepare(self, uniacid: int, uid: int, field: str) -> Prepared:
        token = new_stamp()
        tenant = self.tenant_key(uniacid)
        keys = [self.member_key(uniacid, uid), self.lease_key(uniacid, uid, field)]
        args = [new_stamp(), token, self.lease_ms, self.ttl_ms, self.fence()]

        # The member joins the tenant's set before its database read, so a tenant-wide
        # invalidation committed after that read cannot miss it.
        async def run() -> Any:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.sadd(tenant, uid)
                pipe.pexpire(tenant, self.ttl_ms * 2)
                await self._prepare(keys=keys, args=args, client=pipe)
                return (await pipe.execute())[2]

        async def run_cluster() -> Any:
            # The tenant set is in another slot: its own command first, then the member's
            # script (a cluster pipeline would not order commands across nodes).
            await self.client.sadd(tenant, uid)
            await self.client.pexpire(tenant, self.ttl_ms * 2)
            return await self._prepare(keys=keys, args=args)

        stamp, lease, fence = await self._call(run_cluster if self.cluster else run)
        return Prepared(stamp=stamp.decode(), lease=bool(lease), lease_token=token,
                        fence=int(fence))

    async def fill(self, uniacid: int, uid: int, field: str, prepared: Prepared,
                   page: CachedPage) -> bool:
        """True when stored; False when an invalidation came first (a stale fill refused)."""
        stored = await self._call(lambda: self._fill(
            keys=[self.member_key(uniacid, uid), self.lease_key(uniacid, uid, field)],
            args=[prepared.stamp, field, page.encode(), self.ttl_ms, prepared.lease_token],
        ))
        metrics.CACHE_FILLS.labels("stored" if stored else "stale_refused").inc()
        return bool(stored)

    # Invalidation ----------------------------------------------------------------------------
    async def invalidate_members(self, uniacid: int, uids: Iterable[int]) -> None:
        keys = [self.member_key(uniacid, uid) for uid in uids]
        for start in range(0, len(keys), 500):
            await self._invalidate_keys(keys[start:start + 500])

    async def _invalidate_keys(self, keys: list[str] | list[bytes]) -> None:
        fence = self.fence()

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    await self._invalidate(keys=[key], args=[new_stamp(), self.ttl_ms, fence],
                                           client=pipe)
                await pipe.execute()

        async def run_cluster() -> None:
            # One script per member (each in its own slot), a bounded number at a time; the
            # script object reloads itself on a node that lost its script cache (NOSCRIPT).
            gate = asyncio.Semaphore(self.CLUSTER_CONCURRENCY)

            async def one(key: str | bytes) -> None:
                async with gate:
                    await self._invalidate(keys=[key], args=[new_stamp(), self.ttl_ms, fence])

            await asyncio.gather(*(one(key) for key in keys))

        await self._call(run_cluster if self.cluster else run, budget=max(self.timeout, 1.0))

    async def invalidate_tenant(self, uniacid: int) -> int:
        members = await self._call(lambda: self.client.smembers(self.tenant_key(uniacid)),
                                   budget=max(self.timeout, 1.0))
        uids = [int(m) for m in members]
        await self.invalidate_members(uniacid, uids)
        return len(uids)

    async def flush_all(self) -> int:
        """Invalidate every member hash under the prefix (after a missed notification).

        In a cluster every primary holds its own part of the keyspace: each is scanned to the
        end (a SCAN sent to the cluster client would read one node only)."""
        pattern = f"{self.prefix}:{{*}}"
        count = 0
        nodes: list[Any] = [None]
        if self.cluster:
            nodes = await self._call(self._primaries, budget=max(self.timeout, 1.0))
        for node in nodes:
            cursor = 0
            while True:
                cursor, keys = await self._call(
                    lambda cursor=cursor, node=node: self._scan(cursor, pattern, node),
                    budget=max(self.timeout, 1.0),
                )
                # Only the member hashes: `lease` keys share the prefix and the braces.
                keys = [k for k in keys if k.endswith(b"}")]
                if keys:
                    await self._invalidate_keys(keys)
                    count += len(keys)
                if cursor == 0:
                    break
        return count

    async def _primaries(self) -> list[Any]:
        # The client learns the slot map on its first command: before that it knows no node,
        # and a flush over "every master" would silently cover none.
        await self.client.initialize()
        primaries = self.client.get_primaries()
        if not primaries:
            raise RedisError("the cluster has no primary")
        return primaries

    async def _scan(self, cursor: int, pattern: str, node: Any) -> tuple[int, list[bytes]]:
        if node is None:
            return await self.client.scan(cursor, match=pattern, count=1000)
        cursors, keys = await self.client.scan(cursor, match=pattern, count=1000,
                                               target_nodes=node)
        return cursors[node.name], keys
