"""The per-member page cache in Redis: final response bytes, one round trip on a hit.

Layout (README "The cache"): one hash per member, `<prefix>:{<uniacid>:<uid>}`, whose fields are
the member's cached pages (`<status>:<coupon_type>:<page>:<pagesize>:<shape>`) plus `gen`, a stamp
that every invalidation replaces with a fresh random value. A page value is
`<valid_from: 10 digits><valid_until: 10 digits><etag: 16 hex><body>`: the page is true by the
clock alone from the second it was read (`valid_from`) until `valid_until` (excluded), checked on
every hit against the app's clock (a clock stepped back does not see a page from its future).
The braces are a Redis Cluster hash tag: a member's keys and scripts share one slot.
`<prefix>:tm:{<uniacid>}` is the set of members that filled pages of a tenant, for tenant-wide
invalidation.
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
from redis.exceptions import NoScriptError, RedisError

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

    def __init__(self, client: aioredis.Redis, *, prefix: str, ttl_seconds: int,
                 timeout: float, lease_ms: int, breaker: CircuitBreaker) -> None:
        self.client = client
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
            raise CacheUnavailable("circuit open")
        try:
            # A timeout cancels the command inside redis-py, which then drops that connection
            # instead of reusing it one reply behind.
            async with asyncio.timeout(budget or self.timeout):
                result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            raise CacheUnavailable(type(exc).__name__) from exc
        self.breaker.success()
        return result

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

        async def run() -> Any:
            # The member joins the tenant's set before its database read, so a tenant-wide
            # invalidation committed after that read cannot miss it.
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.sadd(tenant, uid)
                pipe.pexpire(tenant, self.ttl_ms * 2)
                await self._prepare(
                    keys=[self.member_key(uniacid, uid), self.lease_key(uniacid, uid, field)],
                    args=[new_stamp(), token, self.lease_ms, self.ttl_ms],
                    client=pipe,
                )
                return await pipe.execute()

        result = await self._call(run)
        stamp, lease = result[2]
        return Prepared(stamp=stamp.decode(), lease=bool(lease), lease_token=token)

    async def fill(self, uniacid: int, uid: int, field: str, prepared: Prepared,
                   page: CachedPage) -> bool:
        """True when stored; False when an invalidation came first (a stale fill refused)."""
        stored = await self._call(lambda: self._fill(
            keys=[self.member_key(uniacid, uid), self.lease_key(uniacid, uid, field)],
            args=[prepared.stamp, field, page.encode(), self.ttl_ms, prepared.lease_token],
        ))
        return bool(stored)

    # Invalidation ----------------------------------------------------------------------------
    async def invalidate_members(self, uniacid: int, uids: Iterable[int]) -> None:
        uids = list(uids)
        for start in range(0, len(uids), 500):
            batch = uids[start:start + 500]

            async def run(batch: list[int] = batch) -> None:
                async with self.client.pipeline(transaction=False) as pipe:
                    for uid in batch:
                        await self._invalidate(keys=[self.member_key(uniacid, uid)],
                                               args=[new_stamp(), self.ttl_ms], client=pipe)
                    await pipe.execute()

            await self._call(run, budget=max(self.timeout, 1.0))

    async def invalidate_tenant(self, uniacid: int) -> int:
        members = await self._call(lambda: self.client.smembers(self.tenant_key(uniacid)),
                                   budget=max(self.timeout, 1.0))
        uids = [int(m) for m in members]
        await self.invalidate_members(uniacid, uids)
        return len(uids)

    async def flush_all(self) -> int:
        """Invalidate every member hash under the prefix (after a missed notification)."""
        pattern = f"{self.prefix}:{{*}}"
        count = 0
        cursor = 0
        while True:
            cursor, keys = await self._call(
                lambda cursor=cursor: self.client.scan(cursor, match=pattern, count=1000),
                budget=max(self.timeout, 1.0),
            )
            if keys:
                async def run(keys: list[bytes] = keys) -> None:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for key in keys:
                            await self._invalidate(keys=[key], args=[new_stamp(), self.ttl_ms],
                                                   client=pipe)
                        await pipe.execute()

                await self._call(run, budget=max(self.timeout, 1.0))
                count += len(keys)
            if cursor == 0:
                return count
