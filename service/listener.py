"""The LISTEN side of invalidation: one dedicated connection per process, never from the pool.

NOTIFY has no replay: whatever was written while this connection was down (or could not be
proven alive) is unknown, so every (re)connect is followed by a full flush before the cache is
trusted again, and LISTEN is issued before that flush so nothing falls between the two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import asyncpg

from service import metrics
from service.pages import CouponPages
from service.queries import QUERIES
from service.repository import CouponRepository

log = logging.getLogger("service.listener")

CHANNEL = "coupons_invalidate"
# Payload kinds (sql/migrations/0002_invalidation_triggers.sql) -> the metric's source label.
SOURCES = {"m": "member", "c": "coupon", "t": "tenant", "*": "truncate"}


class InvalidationListener:
    def __init__(self, dsn: str, pages: CouponPages, repository: CouponRepository, *,
                 heartbeat: float, holders_max: int) -> None:
        self.dsn = dsn
        self.pages = pages
        self.repository = repository
        self.heartbeat = heartbeat
        self.holders_max = holders_max
        self.queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        self.connection: asyncpg.Connection | None = None
        self.consumer: asyncio.Task | None = None
        self.applied = 0
        self.connects = 0  # successful connect + LISTEN + flush rounds
        self._progress = asyncio.Condition()
        self._synced: list[str] = []
        # Seconds from notification receipt to its Redis invalidation done (for the README).
        self.latencies: list[float] = []

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        metrics.LISTENER_NOTIFICATIONS.inc()
        self.queue.put_nowait((payload, time.perf_counter()))

    def _report(self) -> None:
        """This worker's listener and cache state, for /metrics (every heartbeat and change)."""
        pid = metrics.pid_label()
        metrics.LISTENER_UP.labels(pid).set(1 if self.pages.trust.listener_ready else 0)
        metrics.CACHE_TRUSTED.labels(pid).set(1 if self.pages.trust.usable else 0)

    async def _flush(self) -> None:
        # A flush stands in for notifications that may have been missed: its fence must be
        # past any write they could have carried.
        await self.repository.refresh_fence()
        if await self.pages.flush_all():
            metrics.CACHE_INVALIDATIONS.labels("flush").inc()

    async def run(self) -> None:
        """Connect, listen, flush, then prove the connection alive every heartbeat; forever."""
        consumer = asyncio.create_task(self._consume(), name="invalidation-consumer")
        self.consumer = consumer
        backoff = 0.05
        try:
            while True:
                conn: asyncpg.Connection | None = None
                lost = asyncio.Event()
                try:
                    conn = await asyncpg.connect(self.dsn, timeout=self.heartbeat * 5)
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await conn.add_listener(CHANNEL, self._on_notify)
                    self.connection = conn
                    self.pages.trust.listener_ready = True
                    await self._flush()
                    metrics.LISTENER_CONNECTS.inc()
                    self._report()
                    async with self._progress:
                        self.connects += 1
                        self._progress.notify_all()
                    backoff = 0.05
                    while not lost.is_set():
                        try:
                            await asyncio.wait_for(lost.wait(), self.heartbeat)
                        except TimeoutError:
                            pass
                        if lost.is_set():
                            break
                        async with asyncio.timeout(self.heartbeat):
                            await QUERIES.ping(conn)
                        if self.pages.trust.flush_pending:
                            await self._flush()
                        self._report()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("LISTEN connection lost or unconfirmed: %s", type(exc).__name__)
                finally:
                    self.pages.trust.listener_ready = False
                    self.pages.trust.lost("LISTEN connection down")
                    self._report()
                    self.connection = None
                    if conn is not None:
                        conn.terminate()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        finally:
            # One cancel, no await: a cleanup that awaited here could itself be cut short by a
            # repeated cancel of this task; the app's cleanup makes sure the consumer ends.
            consumer.cancel()

    async def _consume(self) -> None:
        while True:
            payload, received = await self.queue.get()
            try:
                await self.apply(payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("invalidation %.80r failed: %s", payload, type(exc).__name__)
                self.pages.trust.lost("an invalidation failed")
            else:
                self.latencies.append(time.perf_counter() - received)
                del self.latencies[:-10_000]
            async with self._progress:
                self.applied += 1
                self._progress.notify_all()

    async def wait_applied(self, count: int) -> None:
        """Until `count` notifications have been handled (tests and benchmarks wait on it)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.applied >= count)

    async def wait_connects(self, count: int) -> None:
        """Until the listener has (re)connected and flushed `count` times in all."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.connects >= count)

    async def wait_synced(self, token: str) -> None:
        """Until the barrier `NOTIFY coupons_invalidate, 'sync:<token>'` has been handled: every
        notification committed before it has then been applied (one connection delivers them
        in commit order, and they are applied in order)."""
        async with self._progress:
            await self._progress.wait_for(lambda: token in self._synced)

    async def apply(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        source = SOURCES.get(kind)
        if source is not None:
            # The write has committed (NOTIFY is delivered after commit): a fence taken now is
            # past it.
            await self.repository.refresh_fence()
            metrics.CACHE_INVALIDATIONS.labels(source).inc()
        if kind == "m":
            uniacid, uid = (int(x) for x in rest.split(":"))
            await self.pages.invalidate_members(uniacid, [uid])
        elif kind == "t":
            await self.pages.invalidate_tenant(int(rest))
        elif kind == "c":
            uniacid, coupon_id = (int(x) for x in rest.split(":"))
            holders = await self.repository.coupon_holders(coupon_id, self.holders_max + 1)
            if len(holders) > self.holders_max:
                await self.pages.invalidate_tenant(uniacid)
            else:
                await self.pages.invalidate_members(uniacid, holders)
        elif kind == "w":
            # A follow changed (sql/migrations/0004): `w:<uniacid>:<json [staff, contact]>`, or
            # `w:<uniacid>` for a bulk write. Only the in-process mapping depends on it: pages are
            # keyed by member, and a page is reached through the mapping.
            uniacid, _, pair = rest.partition(":")
            if pair:
                staff, external = json.loads(pair)
                self.pages.forget_contact((int(uniacid), staff, external))
            else:
                self.pages.forget_contacts(int(uniacid))
        elif kind == "*":
            await self.pages.flush_all()
        elif kind == "sync":
            self._synced.append(rest)
            del self._synced[:-100]
        else:
            log.warning("unknown invalidation payload %.80r", payload)
