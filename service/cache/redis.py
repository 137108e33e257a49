"""The per-member page cache in Redis: final response bytes, one round trip on a hit.

Layout (docs/cache.md): one hash per member, `<prefix>:<epoch>:{<uniacid>:<member_id>}`, whose
fields are the member's cached pages (`<status>:<coupon_type>:<page>:<pagesize>:<shape>`) plus
`gen`, a stamp that every invalidation of the member replaces with a fresh random value. A page
value is `<valid_from: 10 digits><valid_until: 10 digits><etag: 16 hex><tenant token: 16 hex>
<body>`: the page is true by the clock alone from the second it was read (`valid_from`) until
`valid_until` (excluded), checked on every hit against the app's clock (a clock stepped back
does not see a page from its future), and only while the tenant's token `<prefix>:tg:{<uniacid>}`
is still the one the page was read under (a tenant-wide change replaces it: one command, however
many members the tenant has, and an evicted token costs misses, never a stale page).
The braces are a Redis Cluster hash tag: a member's keys and scripts share one slot.
Beside `gen` the hash holds `lsn`: with a read replica, the primary's WAL position that a
replica must have replayed before its answer may fill this member's pages
(service/db/repository.py).

The epoch is this process's keyspace, chosen by service/cache/listener.py when it proves that no
invalidation was lost (a handover from a live listener, or a flush): a flush is a new epoch, O(1)
whatever the number of cached members. `<prefix>:epoch` holds the newest flushed epoch,
`<prefix>:ack:<token>` a live listener's acknowledgement of a barrier, `<prefix>:listeners` the
registry of covered listeners.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from service.observe import metrics
from service.runtime.lag import Bound, Overloaded

log = logging.getLogger(__name__)

T = TypeVar("T")
LUA_DIR = Path(__file__).resolve().parent / "lua"
# 10 digits of valid_from, 10 of valid_until, 16 hex of etag, 16 hex of the tenant token.
HEADER = 52
# How long a barrier's acknowledgement and a tenant token live (ms); a token is refreshed by
# every miss that reads it, so it outlives the pages stored under it.
ACK_TTL_MS = 30_000
# A call's bound grows by one budget each time its timer fires late (the loop was busy, not
# Redis), by this much in all (service/runtime/lag.py): a request's call waits at most 0.75 s at
# REDIS_TIMEOUT_SECONDS 0.25, an invalidation's 1.5 s.
LAG_ALLOWANCE_SECONDS = 0.5


def new_stamp() -> str:
    return os.urandom(8).hex()


class CachedPage(NamedTuple):
    """A cached page and its bounds. A tuple of ints, strings and bytes, which the cyclic
    garbage collector stops tracking: the local layer holds tens of thousands of them, and
    every full collection walked each one (docs/performance.md, "The real path")."""

    valid_from: int
    valid_until: int
    etag: str
    body: bytes
    tenant: str = "0" * 16  # the tenant's token the page was read under

    def encode(self) -> bytes:
        return (b"%010d%010d" % (self.valid_from, self.valid_until) + self.etag.encode()
                + self.tenant.encode() + self.body)

    @classmethod
    def decode(cls, raw: bytes) -> CachedPage | None:
        """None for a value this version cannot read (an older layout): a miss."""
        if len(raw) < HEADER or not raw[:20].isdigit():
            return None
        return cls(int(raw[:10]), int(raw[10:20]), raw[20:36].decode(), raw[HEADER:],
                   raw[36:HEADER].decode())

    def fresh_at(self, now: int) -> bool:
        return self.valid_from <= now < self.valid_until

    def valid(self, now: int, tenant: bytes | None) -> bool:
        """True by the clock at `now` and read under the tenant's current token (the value of
        its key: `<token>:<fence>`)."""
        return (self.valid_from <= now < self.valid_until and tenant is not None
                and tenant[:16].decode() == self.tenant)


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    stamp: str
    lease: bool
    lease_token: str
    # The WAL position a replica must have replayed to serve this member (0: any).
    fence: int = 0
    tenant: str = "0" * 16  # the tenant's token, read before the database
    epoch: str = ""  # the keyspace the stamp belongs to: the fill goes there, whatever happens


class CacheUnavailable(Exception):
    """Redis failed, timed out, or the circuit is open: the caller goes to PostgreSQL."""


class CacheLagged(CacheUnavailable, Overloaded):
    """A call ran out of time while this process's own event loop was late (its timers fired
    late, service/runtime/lag.py): not Redis's failure. Where a failure loses nothing (a read),
    the request is shed (503); where it might (an invalidation), it counts as unavailable."""


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

    `epoch` is the keyspace this process reads, fills and invalidates (None until the listener
    has proven, once, that no invalidation was lost: service/cache/listener.py).
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
        self.epoch: str | None = None
        self._prepare = client.register_script((LUA_DIR / "prepare.lua").read_text())
        self._fill = client.register_script((LUA_DIR / "fill.lua").read_text())
        self._invalidate = client.register_script((LUA_DIR / "invalidate.lua").read_text())
        self._tenant = client.register_script((LUA_DIR / "tenant.lua").read_text())
        self._claim = client.register_script((LUA_DIR / "epoch.lua").read_text())
        self._listeners = client.register_script((LUA_DIR / "listeners.lua").read_text())

    # Keys ------------------------------------------------------------------------------------
    def member_key(self, uniacid: int, member_id: int, epoch: str | None = None) -> str:
        return f"{self.prefix}:{epoch or self.epoch}:{{{uniacid}:{member_id}}}"

    def lease_key(self, uniacid: int, member_id: int, field: str, epoch: str | None = None) -> str:
        return f"{self.prefix}:{epoch or self.epoch}:{{{uniacid}:{member_id}}}:lease:{field}"

    def tenant_key(self, uniacid: int) -> str:
        return f"{self.prefix}:tg:{{{uniacid}}}"

    @property
    def epoch_key(self) -> str:
        return f"{self.prefix}:epoch"

    def ack_key(self, token: str) -> str:
        return f"{self.prefix}:ack:{token}"

    @property
    def listeners_key(self) -> str:
        return f"{self.prefix}:listeners"

    # Guarded calls ---------------------------------------------------------------------------
    async def _call(self, make: Callable[[], Awaitable[T]], budget: float | None = None) -> T:
        if not self.breaker.allow():
            metrics.REDIS_ERRORS.labels("circuit_open").inc()
            raise CacheUnavailable("circuit open")
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        budget = budget or self.timeout
        bound = Bound(budget, budget + LAG_ALLOWANCE_SECONDS)
        try:
            # A timeout cancels the command inside redis-py, which then drops that connection
            # instead of reusing it one reply behind.
            async with bound:
                result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            self._stay_cancelled(task, cancels)
            if bound.lagged:
                # Out of time because this process's loop was late, not Redis: the breaker
                # does not count it, and the caller sheds rather than blaming Redis.
                metrics.REDIS_ERRORS.labels("loop_late").inc()
                raise CacheLagged("the event loop was late") from exc
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
                    reload: Callable[[aioredis.Redis], Awaitable[None]] | None = None,
                    budget: float | None = None) -> list:
        """The commands `queue` adds, in one pipeline: one round trip, bounded (by `budget`,
        else REDIS_TIMEOUT_SECONDS) and guarded like every call. A NOSCRIPT reply (Redis
        restarted since the script was loaded) is answered by `reload` and one more try."""

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

        return await self._call(run, budget)

    def queue_read(self, pipe: Pipeline, uniacid: int, member_id: int, field: str) -> None:
        """A page's read, two replies (`page_of` decodes them): the page, the tenant's token."""
        pipe.hget(self.member_key(uniacid, member_id), field)
        pipe.get(self.tenant_key(uniacid))

    @staticmethod
    def page_of(replies: list, now: int) -> CachedPage | None:
        """The page of `queue_read`'s replies, if it may be served at `now`."""
        raw, tenant = replies
        page = None if raw is None else CachedPage.decode(raw)
        return page if page is not None and page.valid(now, tenant) else None

    async def get(self, uniacid: int, member_id: int, field: str, now: int) -> CachedPage | None:
        """The page, if one may be served at `now` (the clock and the tenant's token)."""
        replies = await self.batch(lambda pipe: self.queue_read(pipe, uniacid, member_id, field))
        return self.page_of(replies, now)

    async def prepare(self, uniacid: int, member_id: int, field: str) -> Prepared:
        epoch = self.epoch
        if epoch is None:
            raise CacheUnavailable("no epoch")
        token = new_stamp()
        keys = [self.member_key(uniacid, member_id, epoch),
                self.lease_key(uniacid, member_id, field, epoch)]
        args = [new_stamp(), token, self.lease_ms, self.ttl_ms, self.fence()]
        tenant_keys = [self.tenant_key(uniacid)]
        tenant_args = [new_stamp(), self.ttl_ms * 2, self.fence()]

        async def run() -> Any:
            async with self.client.pipeline(transaction=False) as pipe:
                await self._prepare(keys=keys, args=args, client=pipe)
                await self._tenant(keys=tenant_keys, args=tenant_args, client=pipe)
                (stamp, lease, fence), tenant = await pipe.execute()
                return stamp, lease, fence, tenant

        async def run_cluster() -> Any:
            # The tenant's token is in another slot: its own script (each reloads itself after
            # a NOSCRIPT, which a cluster pipeline would not).
            tenant = await self._tenant(keys=tenant_keys, args=tenant_args)
            stamp, lease, fence = await self._prepare(keys=keys, args=args)
            return stamp, lease, fence, tenant

        stamp, lease, fence, tenant = await self._call(run_cluster if self.cluster else run)
        token_part, _, tenant_fence = tenant.decode().partition(":")
        # A replica must have replayed past both the member's and the tenant's last
        # invalidation (service/db/repository.py).
        return Prepared(stamp=stamp.decode(), lease=bool(lease), lease_token=token,
                        fence=max(int(fence), int(tenant_fence or 0)), tenant=token_part,
                        epoch=epoch)

    async def fill(self, uniacid: int, member_id: int, field: str, prepared: Prepared,
                   page: CachedPage) -> bool:
        """True when stored; False when an invalidation came first (a stale fill refused). The
        page goes to the keyspace it was prepared in, whatever this process uses by now."""
        epoch = prepared.epoch
        page = page._replace(tenant=prepared.tenant)
        stored = await self._call(lambda: self._fill(
            keys=[self.member_key(uniacid, member_id, epoch),
                  self.lease_key(uniacid, member_id, field, epoch)],
            args=[prepared.stamp, field, page.encode(), self.ttl_ms, prepared.lease_token],
        ))
        metrics.CACHE_FILLS.labels("stored" if stored else "stale_refused").inc()
        return bool(stored)

    # Invalidation ----------------------------------------------------------------------------
    async def invalidate_members(self, uniacid: int, member_ids: Iterable[int]) -> None:
        if self.epoch is None:
            return  # no keyspace read yet: nothing of ours to invalidate
        keys = [self.member_key(uniacid, member_id) for member_id in member_ids]
        for start in range(0, len(keys), 500):
            await self._invalidate_keys(keys[start:start + 500])

    async def _invalidate_keys(self, keys: list[str]) -> None:
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

            async def one(key: str) -> None:
                async with gate:
                    await self._invalidate(keys=[key], args=[new_stamp(), self.ttl_ms, fence])

            await asyncio.gather(*(one(key) for key in keys))

        await self._call(run_cluster if self.cluster else run, budget=max(self.timeout, 1.0))

    async def invalidate_tenant(self, uniacid: int) -> None:
        """Every page of the tenant, in every epoch, at once: a new token, with the fence past
        the write (a replica behind it serves none of the tenant's misses)."""
        value = f"{new_stamp()}:{self.fence()}"
        await self._call(lambda: self.client.set(self.tenant_key(uniacid), value,
                                                 px=self.ttl_ms * 2),
                         budget=max(self.timeout, 1.0))

    # Coverage: service/cache/listener.py -------------------------------------------------------
    # Not on the request path: a wider bound than a request's Redis call.
    def _slow(self, make: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return self._call(make, budget=max(self.timeout, 1.0))

    async def current_epoch(self) -> str:
        """The newest flushed epoch ('' if none was ever claimed here)."""
        raw = await self._slow(lambda: self.client.get(self.epoch_key))
        return raw.decode() if raw is not None else ""

    async def claim_epoch(self, expected: str) -> tuple[str, bool]:
        """A new epoch if the newest is still `expected`: (the newest now, whether it is ours)."""
        epoch, claimed = await self._slow(lambda: self._claim(
            keys=[self.epoch_key], args=[expected, new_stamp()]))
        return epoch.decode(), bool(claimed)

    async def acknowledge(self, token: str, epoch: str) -> None:
        await self._slow(lambda: self.client.set(self.ack_key(token), epoch, px=ACK_TTL_MS))

    async def acknowledgement(self, token: str) -> str | None:
        raw = await self._slow(lambda: self.client.get(self.ack_key(token)))
        return raw.decode() if raw is not None else None

    async def listeners_alive(self, window_ms: int, alive: str = "", gone: str = "") -> int:
        """Record `alive` as a covered listener now and drop `gone`; how many others are."""
        return int(await self._slow(lambda: self._listeners(
            keys=[self.listeners_key], args=[window_ms, alive, gone])))
