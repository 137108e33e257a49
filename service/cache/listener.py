"""The LISTEN side of invalidation: one dedicated connection per process, never from the pool.

NOTIFY has no replay: whatever was committed while no listener was connected is unknown. A
process may trust its cache only while it is *covered*: every notification committed so far was
applied, to the keyspace (epoch) it reads, by someone. After every (re)connect, and after any
loss (a Redis failure during an invalidation, a TRUNCATE), it proves coverage again:

1. LISTEN first: from then on this connection receives every notification, in commit order.
2. Send a barrier, `sync:<token>`, through the same channel. When this process's consumer
   reaches its own barrier, every notification committed before the barrier has been delivered
   to every listener that was connected then, and has been applied by every covered one.
3. A handover: a covered listener that reaches the barrier acknowledges it in Redis with its
   epoch (it has applied everything before the barrier to that keyspace). This process adopts
   that epoch, and applies everything after the barrier itself: nothing is lost, the cache
   stays warm (a rolling deploy, a process restarted, a single dropped connection).
4. A flush, only when nobody acknowledged within ACK_WAIT_SECONDS (a cold start, every listener
   down at once, Redis lost): a new epoch, claimed only if the newest epoch is still the one
   read at the barrier (service/cache/lua/epoch.lua). A claim that finds a newer epoch means someone
   flushed after this process's LISTEN: it asks again with a new barrier, which that flusher,
   covered by then, acknowledges. So M x N processes reconnecting at once cause one flush. A
   flush is O(1): pages of an older epoch are never read again.

The barrier is handled by the consumer itself, in stream order, so the epoch in use changes at
a well-defined point of the notification stream: everything before it is covered by the
acknowledging listener (or by the new, empty keyspace), everything after it by this one.

Acknowledging late: a listener that reaches another's barrier before it is covered itself keeps
the token, and acknowledges it the moment it is covered. That is as safe as acknowledging on
time: once covered, everything committed before its own coverage point has been applied to its
epoch (by the listener that handed over to it) or does not matter to it (a flush's keyspace is
new), and the barrier's owner applies everything after its barrier itself. So processes that
start together are covered together, without waiting out ACK_WAIT_SECONDS.
Covered listeners keep a heartbeat in Redis (service/cache/lua/listeners.lua), so that a process
with nobody to hand over from does not wait for an acknowledgement.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import socket
import time

import asyncpg

from service.cache.redis import CacheUnavailable, new_stamp
from service.coupons.pages import CouponPages
from service.db.queries import QUERIES
from service.db.repository import CouponRepository
from service.observe import metrics
from service.runtime.lag import Bound

log = logging.getLogger(__name__)

CHANNEL = "coupons_invalidate"
# The LISTEN connection's name in pg_stat_activity (the pools' is "coupons-sidebar").
APPLICATION_NAME = "coupons-sidebar-listener"
# Payload kinds (sql/migrations/0002_invalidation_triggers.sql) -> the metric's source label.
SOURCES = {"m": "member", "c": "coupon", "t": "tenant", "*": "truncate"}
# How long a process waits for a live listener to acknowledge its barrier before it flushes. A
# covered listener acknowledges within its consumer's lag (milliseconds); waiting is only worth
# it while the registry says some listener is alive.
ACK_WAIT_SECONDS = 1.0
ACK_POLL_SECONDS = 0.01


class InvalidationListener:
    def __init__(self, dsn: str, pages: CouponPages, repository: CouponRepository, *,
                 heartbeat: float, holders_max: int) -> None:
        self.dsn = dsn
        self.pages = pages
        self.repository = repository
        self.heartbeat = heartbeat
        self.holders_max = holders_max
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.connection: asyncpg.Connection | None = None
        # One query at a time on the LISTEN connection: the heartbeat's, a barrier's, a
        # coupon's holders (`_holders`).
        self._queries = asyncio.Lock()
        self.consumer: asyncio.Task | None = None
        self._connect_counted = False
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_stamp()[:8]}"
        # A registry entry older than this is a listener gone (3 missed heartbeats).
        self.window_ms = max(1000, int(self.heartbeat * 3000))
        self._progress = asyncio.Condition()
        self._synced: list[str] = []
        # This process's barriers in flight: token -> (resolved once the consumer handled it,
        # the newest epoch it was sent after).
        self._barriers: dict[str, tuple[asyncio.Future[None], str]] = {}
        # Others' barriers reached while this listener was not covered: acknowledged once it
        # is (module docstring, "Acknowledging late").
        self._unacknowledged: collections.deque[str] = collections.deque(maxlen=256)
        self._wake = asyncio.Event()
        pages.trust.on_lost.append(self._wake.set)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        metrics.LISTENER_NOTIFICATIONS.inc()
        self.queue.put_nowait(payload)

    def _report(self) -> None:
        """This worker's listener and cache state, for /metrics (every heartbeat and change)."""
        pid = metrics.pid_label()
        metrics.LISTENER_UP.labels(pid).set(1 if self.pages.trust.listener_ready else 0)
        metrics.CACHE_TRUSTED.labels(pid).set(1 if self.pages.trust.usable else 0)

    async def run(self) -> None:
        """Connect, listen, prove coverage, then prove the connection alive every heartbeat (and
        coverage again after any loss); forever."""
        consumer = asyncio.create_task(self._consume(), name="invalidation-consumer")
        self.consumer = consumer
        backoff = 0.05
        try:
            while True:
                conn: asyncpg.Connection | None = None
                lost = asyncio.Event()
                stopping = False
                try:
                    conn = await asyncpg.connect(
                        self.dsn, timeout=self.heartbeat * 5,
                        server_settings={"application_name": APPLICATION_NAME})
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    # The epoch before LISTEN: a flush by anyone after this read makes this
                    # process's claim fail, so it asks that flusher for a handover instead of
                    # flushing again (two epochs at once would split the cache between them).
                    before = await self._newest_epoch()
                    await conn.add_listener(CHANNEL, self._on_notify)
                    self.connection = conn
                    self._connect_counted = False
                    self.pages.trust.listener_ready = True
                    # A wake is cleared before the work it asks for, never after: one set during
                    # that work (a flush race lost in _prove: "ask again at once") must end the
                    # next wait at once, not a heartbeat later.
                    self._wake.clear()
                    await self._cover(conn, before)
                    self._report()
                    backoff = 0.05
                    while not lost.is_set():
                        waits = {asyncio.ensure_future(lost.wait()),
                                 asyncio.ensure_future(self._wake.wait())}
                        try:
                            await asyncio.wait(waits, timeout=self.heartbeat,
                                               return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            for waiting in waits:
                                waiting.cancel()
                        if lost.is_set():
                            break
                        self._wake.clear()
                        # A ping that came back while the loop was busy is not a dead
                        # connection: losing it would flush every worker's cache under load.
                        async with self._queries, Bound(self.heartbeat, self.heartbeat * 5):
                            await QUERIES.ping(conn)
                        if not self.pages.trust.covered:
                            await self._cover(conn)
                        else:
                            await self._alive()
                        self._report()
                except asyncio.CancelledError:
                    stopping = True
                    raise
                except Exception as exc:
                    log.warning("LISTEN connection lost or unconfirmed: %s", type(exc).__name__)
                finally:
                    self.pages.trust.listener_ready = False
                    self.pages.trust.lost("LISTEN connection down", quiet=stopping)
                    self._report()
                    self.connection = None
                    if conn is not None:
                        conn.terminate()
                await self.leave()  # (not reached when cancelled: the app's cleanup leaves)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        finally:
            # One cancel, no await: a cleanup that awaited here could itself be cut short by a
            # repeated cancel of this task; the app's cleanup makes sure the consumer ends.
            consumer.cancel()

    async def _alive(self) -> None:
        """This covered listener's heartbeat in the registry."""
        try:
            await self.pages.cache.listeners_alive(self.window_ms, alive=self.id)
        except CacheUnavailable:
            pass  # the registry only saves others a wait; Redis failing is handled elsewhere

    async def leave(self) -> None:
        """Out of the registry (at shutdown): nobody waits for this listener's acknowledgement."""
        try:
            await self.pages.cache.listeners_alive(self.window_ms, gone=self.id)
        except CacheUnavailable:
            pass

    async def _newest_epoch(self) -> str | None:
        try:
            return await self.pages.cache.current_epoch()
        except CacheUnavailable:
            return None  # read again at the barrier; Redis failing is handled there

    async def _cover(self, conn: asyncpg.Connection, expected: str | None = None) -> None:
        """Send a barrier and wait until the consumer has handled it (module docstring, 2-4);
        the trust says whether it proved coverage. Bounded: the heartbeat tries again.
        `expected`: the newest epoch read before this barrier (before LISTEN on a connect); a
        flush claims a new epoch only if it is still the newest."""
        if not self.pages.enabled:
            # CACHE_ENABLED=false: nothing is cached, nothing can be stale.
            if self.pages.trust.cover(self.pages.trust.losses) and not self._connect_counted:
                self._connect_counted = True
                metrics.LISTENER_CONNECTS.inc()
            return
        if expected is None:
            expected = await self._newest_epoch()
            if expected is None:
                log.warning("coverage not proven (CacheUnavailable); trying again")
                return
        token = new_stamp()
        handled = asyncio.get_running_loop().create_future()
        self._barriers[token] = (handled, expected)
        try:
            async with self._queries:
                await QUERIES.notify_barrier(conn, payload=f"sync:{token}")
            async with asyncio.timeout(ACK_WAIT_SECONDS + self.heartbeat * 5):
                await handled
        except TimeoutError:
            log.warning("coverage barrier not handled in time; trying again")
        finally:
            self._barriers.pop(token, None)

    async def _barrier(self, token: str) -> None:
        """A barrier reached by the consumer: this process's own (prove coverage), or another's
        (acknowledge it, if covered)."""
        trust = self.pages.trust
        mine = self._barriers.get(token)
        if mine is None:
            if trust.usable and self.pages.cache.epoch is not None:
                await self.pages.cache.acknowledge(token, self.pages.cache.epoch)
            else:
                self._unacknowledged.append(token)
            return
        handled, expected = mine
        try:
            if not trust.covered:
                await self._prove(token, expected)
        finally:
            if not handled.done():
                handled.set_result(None)

    async def _prove(self, token: str, expected: str) -> None:
        trust = self.pages.trust
        cache = self.pages.cache
        losses = trust.losses
        started = time.perf_counter()
        try:
            # The fence of a process that trusts the cache again must be past any write whose
            # notification it may have missed (service/db/repository.py).
            await self.repository.refresh_fence()
            epoch = None
            # (This listener's own entry, from before its loss, goes: it cannot acknowledge.)
            if await cache.listeners_alive(self.window_ms, gone=self.id) > 0:
                deadline = time.monotonic() + ACK_WAIT_SECONDS
                while epoch is None and time.monotonic() < deadline:
                    epoch = await cache.acknowledgement(token)
                    if epoch is None:
                        await asyncio.sleep(ACK_POLL_SECONDS)
            how = "handover"
            if epoch is None:
                epoch, claimed = await cache.claim_epoch(expected)
                if not claimed:
                    # Flushed by another process after this one's LISTEN: that process is
                    # covered now and acknowledges the next barrier, sent at once.
                    log.info("another process flushed; asking for a handover again")
                    self._wake.set()
                    return
                how = "flush"
        except (CacheUnavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("coverage not proven (%s); trying again", type(exc).__name__)
            return
        self.pages.adopt_epoch(epoch)
        if trust.cover(losses):
            metrics.CACHE_COVERAGE.labels(how).inc()
            if how == "flush":
                metrics.CACHE_INVALIDATIONS.labels("flush").inc()
            if not self._connect_counted:  # the first coverage on this connection
                self._connect_counted = True
                metrics.LISTENER_CONNECTS.inc()
            await self._alive()
            while self._unacknowledged and trust.usable:
                await cache.acknowledge(self._unacknowledged.popleft(), epoch)
            log.info("cache trusted: %s", how, extra={"fields": {
                "epoch": epoch, "ms": round((time.perf_counter() - started) * 1000, 1)}})

    async def _consume(self) -> None:
        trust = self.pages.trust
        while True:
            payload = await self.queue.get()
            losses = trust.losses
            try:
                await self.apply(payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("invalidation %.80r failed: %s", payload, type(exc).__name__)
                trust.lost("an invalidation failed")
            if trust.losses != losses:
                # Out of the registry at once: when every process lost coverage together (a
                # TRUNCATE, Redis failing for all), none waits for another's acknowledgement.
                await self.leave()

    async def wait_synced(self, token: str) -> None:
        """The documented seam of the barriers: until `NOTIFY coupons_invalidate,
        'sync:<token>'`, sent by anyone, has been handled here. Every notification committed
        before it has then been applied by this process (one connection delivers them in commit
        order, and they are applied in order). Coverage uses the same barriers; the tests and
        the benchmarks use this to wait for a write's invalidation without sleeping."""
        async with self._progress:
            await self._progress.wait_for(lambda: token in self._synced)

    async def _holders(self, coupon_id: int) -> list[int]:
        """A coupon's holders (up to holders_max + 1), read on the LISTEN connection: in the
        pool the read queued behind the requests, and right after a flush or a PostgreSQL
        restart, when every request misses, a coupon's edit waited there past the 100 ms the
        freshness test allows. The LISTEN connection is the one known to be up (it delivered
        the notification); its queries take turns (`_queries`)."""
        conn = self.connection
        if conn is None:
            return await self.repository.coupon_holders(coupon_id, self.holders_max + 1)
        async with self._queries, asyncio.timeout(self.heartbeat * 5):
            return await self.repository.coupon_holders(coupon_id, self.holders_max + 1,
                                                         conn=conn)

    async def apply(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        source = SOURCES.get(kind)
        if source is not None:
            # The write has committed (NOTIFY is delivered after commit): a fence taken now is
            # past it.
            await self.repository.refresh_fence()
            metrics.CACHE_INVALIDATIONS.labels(source).inc()
        if kind == "m":
            uniacid, member_id = (int(x) for x in rest.split(":"))
            await self.pages.invalidate_members(uniacid, [member_id])
        elif kind == "t":
            await self.pages.invalidate_tenant(int(rest))
        elif kind == "c":
            uniacid, coupon_id = (int(x) for x in rest.split(":"))
            holders = await self._holders(coupon_id)
            if len(holders) > self.holders_max:
                await self.pages.invalidate_tenant(uniacid)
            else:
                await self.pages.invalidate_members(uniacid, holders)
        elif kind == "w":
            # A follow changed (sql/migrations/0005): `w:<uniacid>:<json [staff, contact]>`, or
            # `w:<uniacid>` for a bulk write. Only the in-process mapping depends on it: pages are
            # keyed by member, and a page is reached through the mapping.
            uniacid, _, pair = rest.partition(":")
            if pair:
                staff, external = json.loads(pair)
                self.pages.forget_contact((int(uniacid), staff, external))
            else:
                self.pages.forget_contacts(int(uniacid))
        elif kind == "*":
            # Every table may have been emptied: no page of this keyspace may be served again.
            # Every process receives it and stops trusting; the first to prove coverage again
            # flushes (a new epoch), the others take it over from it.
            self.pages.trust.lost("a table was truncated")
        elif kind == "sync":
            try:
                await self._barrier(rest)
            except CacheUnavailable:
                pass  # an acknowledgement not given: the barrier's owner flushes instead
            async with self._progress:
                self._synced.append(rest)
                del self._synced[:-100]
                self._progress.notify_all()
        else:
            log.warning("unknown invalidation payload %.80r", payload)
