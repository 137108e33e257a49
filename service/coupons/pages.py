"""Pages of the coupons tab: cache first, one database round trip on a miss, single flight.

The cache is used only while it is trusted (service/cache/trust.py); docs/cache.md has the
whole design.

Layers, and why each ordering is safe (the rule: no layer is refilled from a copy older than an
invalidation that the layer has already applied):
- Redis <- PostgreSQL: a miss reads the member's `gen` stamp and the tenant's token before its
  query; the fill lands only if `gen` is unchanged, and a hit serves it only while the tenant's
  token is unchanged. An invalidation replaces the stamp (or the token) after the write
  committed, so a fill that read the database before the write is refused, or never served.
- Redis <- a replica: the same, and the replica answers only once it has replayed past the
  member's fence, stored with the stamp by every invalidation (service/db/repository.py).
- local <- Redis: an invalidation is applied to Redis first and to the local layer after it
  (`invalidate_members`, `invalidate_tenant`). A lookup takes the local layer's sequence number
  before it reads Redis. If its Redis read came before the Redis invalidation, its number came
  before the local invalidation's: its fill is refused (or dropped by it); if its read came
  after, it saw the new state. The other order (local first) let a read between the two refill
  the local layer from the old Redis copy, which then stayed for the whole local TTL.
- every process: each has its own LISTEN connection, and applies every invalidation to Redis and
  then to its own local layer; a process whose listener lags serves its local copy until its own
  listener catches up (the commit-to-invalidation latency), never longer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from typing import Any
from zoneinfo import ZoneInfo

from service.cache.contacts import ContactCache, ContactKey
from service.cache.local import LocalCache
from service.cache.redis import CachedPage, CacheLagged, CacheUnavailable, PageCache
from service.cache.trust import CacheTrust
from service.coupons.errors import NotFollowing
from service.coupons.flight import SingleFlight
from service.coupons.render import RENDER_VERSION, check_member, etag_of, render_body
from service.db.repository import CouponRepository, PageQuery
from service.limits.limiter import Check, RateLimiter
from service.observe import metrics

log = logging.getLogger(__name__)

# A cross-process lease holder usually fills within a query's time; poll a few times, then read
# the database anyway (a lease is an optimisation, never a wait on a dead peer).
LEASE_POLLS = (0.005, 0.01, 0.02, 0.04)
# Local pages proven again per pipeline (two commands each), and that pipeline's bound: off the
# request path, so longer than a request's.
REPROVE_BATCH = 500
REPROVE_SECONDS = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class PageResult:
    body: bytes
    etag: str
    outcome: str  # local | hit | miss | coalesced | bypass


@dataclasses.dataclass(frozen=True, slots=True)
class PageOptions:
    """What the settings say about pages: their shape (RESPONSE_SHAPE), the display zone, the
    longest life of a cached copy, TOTAL_CAP (part of a cached page's name with RENDER_VERSION:
    everything but the query that decides its bytes), and whether to cache at all
    (CACHE_ENABLED=false: every page from PostgreSQL; the cache object still carries the rate
    limiter's calls)."""

    shape: str
    tz: ZoneInfo
    ttl_seconds: int
    total_cap: int
    enabled: bool = True

    @property
    def variant(self) -> str:
        return f"{self.shape}:{RENDER_VERSION}.{self.total_cap}"


class CouponPages:
    """The pages of the coupons tab. `local` None: no process-local layer."""

    def __init__(self, repository: CouponRepository, cache: PageCache, trust: CacheTrust,
                 limiter: RateLimiter, contacts: ContactCache, local: LocalCache | None,
                 options: PageOptions) -> None:
        self.repository = repository
        self.cache = cache
        self.trust = trust
        self.limiter = limiter
        self.contacts = contacts
        self.local = local
        self._flights = SingleFlight()
        if local is not None:
            trust.on_lost.append(local.clear)
        trust.on_lost.append(contacts.clear)
        trust.on_lost.append(self._flights.clear)
        self.enabled = options.enabled
        self.shape = options.shape
        self.variant = options.variant
        self.tz = options.tz
        self.ttl = options.ttl_seconds

    def field(self, query: PageQuery) -> str:
        return (f"{query.status}:{query.coupon_type}:{query.page}:{query.pagesize}:"
                f"{self.variant}")

    def local_page(self, uniacid: int, member_id: int, field: str,
                   now: int) -> CachedPage | None:
        """This process's copy of a page, when the cache may be used: the one lookup of the local
        layer, for `local_hit` and for `get`."""
        local = self.local
        if local is None or not self.enabled or not self.trust.usable:
            return None
        return local.get((uniacid, member_id, field), now)

    def local_hit(self, query: PageQuery, field: str, now: int,
                  staff_id: str) -> CachedPage | None:
        """The page when nothing has to be awaited first (the hot path, which cannot wait): in
        this process's layer, a staff token's contact already known, the rate limits admitted
        by this process's leased allowances. `get` answers the same page, and may wait: for the
        limiter's call of a party whose allowances ran out, or for Redis and PostgreSQL."""
        member_id = query.member_id
        if member_id is None:
            member_id = self.contacts.get((query.uniacid, query.staff_userid or "",
                                           query.external_userid or ""))
            if member_id is None:
                return None
        page = self.local_page(query.uniacid, member_id, field, now)
        if page is None:
            return None
        limiter = self.limiter
        if limiter.enabled and not limiter.spend_leases(
                limiter.checks(query.uniacid, staff_id, member_id)):
            return None
        return page

    async def get(self, query: PageQuery, now: dt.datetime, *, staff_id: str,
                  now_ms: int) -> PageResult:
        """The page for `query`, after the rate limits of `staff_id` and of the member
        (RateLimited)."""
        if query.member_id is None:
            key = (query.uniacid, query.staff_userid or "", query.external_userid or "")
            member_id = self.contacts.get(key) if self.trust.usable else None
            if member_id is None:
                await self._limit(
                    self.limiter.admit_locally(self.limiter.checks(query.uniacid, staff_id, None)),
                    now_ms)
                return await self._resolve_contact(query, key, now)
            query = dataclasses.replace(query, member_id=member_id)
        member = (query.uniacid, query.member_id)
        field = self.field(query)
        checks = self.limiter.admit_locally(
            self.limiter.checks(query.uniacid, staff_id, query.member_id))
        if not self.enabled or not self.trust.usable:
            await self._limit(checks, now_ms)
            return await self._from_database(query, now, outcome="bypass")
        local = self.local
        # Before any read: an invalidation after this point refuses the local fill.
        seq = local.seq() if local is not None else 0
        page = self.local_page(*member, field, int(now.timestamp()))
        if page is not None:
            # The parties this process holds no allowance for are counted in Redis (one round
            # trip, which also leases them allowances for their next requests).
            await self._limit(checks, now_ms)
            return PageResult(page.body, page.etag, "local")
        if not checks:
            # No limiter: a burst on one page coalesces before any Redis call (the leader reads).
            return await self._single_flight(query, member, field, now, False, seq)
        # One round trip: the limiter's calls and the page's read in one pipeline.
        def queue(pipe: Any) -> None:
            self.limiter.queue(pipe, checks, now_ms)
            self.cache.queue_read(pipe, *member, field)

        try:
            replies = await self.cache.batch(queue, RateLimiter.load)
        except CacheLagged:
            # This process's own loop was late, not Redis: shed (503), neither failing the
            # limiter open nor sending the request to PostgreSQL (service/runtime/lag.py).
            raise
        except CacheUnavailable as exc:
            self.limiter.fail_open(str(exc))
            read_failed = True
        else:
            self.limiter.decide(replies[:-2], checks)
            cached = self.cache.page_of(replies[-2:], int(now.timestamp()))
            if cached is not None:
                if local is not None:
                    local.put((*member, field), cached, seq)
                return PageResult(cached.body, cached.etag, "hit")
            read_failed = False
        return await self._single_flight(query, member, field, now, read_failed, seq)

    async def _limit(self, checks: list[Check], now_ms: int) -> None:
        """The limiter alone (no page read to share its round trip with)."""
        if not checks:
            return
        try:
            replies = await self.cache.batch(
                lambda pipe: self.limiter.queue(pipe, checks, now_ms), RateLimiter.load)
        except CacheLagged:
            raise  # shed, as in `get`
        except CacheUnavailable as exc:
            self.limiter.fail_open(str(exc))
            return
        self.limiter.decide(replies, checks)

    async def charge_limits(self, now_ms: int) -> None:
        """Send the local admissions since the last charge to Redis (service/limits/limiter.py,
        "Local admission"): one pipeline, off every request's path."""
        limiter = self.limiter
        if not limiter.owes:
            return
        owed = limiter.take_owed()
        try:
            replies = await self.cache.batch(
                lambda pipe: limiter.queue_charges(pipe, owed, now_ms,
                                                   per_key=self.cache.cluster),
                RateLimiter.load)
        except CacheUnavailable as exc:
            limiter.charges_failed(owed, str(exc))
            return
        limiter.settle_charges(owed, replies)

    async def reprove_local(self, now_s: int) -> int:
        """Prove again, against Redis, the local pages used since their last proof whose safety
        TTL is about to end (service/cache/local.py): one pipeline of page reads per
        REPROVE_BATCH pages, off every request's path. Returns how many were renewed. A failed
        read renews nothing: those entries end with their TTL, as they did before."""
        local = self.local
        if local is None or not self.enabled or not self.trust.usable:
            return 0
        renewed = 0
        due = local.due()
        cache = self.cache
        for start in range(0, len(due), REPROVE_BATCH):
            chunk = due[start:start + REPROVE_BATCH]
            # Before the read: an invalidation after this point refuses the renewal.
            seq = local.seq()

            def queue(pipe: Any, chunk: list = chunk) -> None:
                for (uniacid, member_id, field), _ in chunk:
                    cache.queue_read(pipe, uniacid, member_id, field)

            try:
                replies = await cache.batch(queue, budget=REPROVE_SECONDS)
            except CacheUnavailable:
                return renewed
            done = 0
            for n, (key, page) in enumerate(chunk):
                held = cache.page_of(replies[2 * n:2 * n + 2], now_s)
                done += local.reprove(key, page, seq, held is not None and held.etag == page.etag)
            metrics.LOCAL_REPROOFS.labels("renewed").inc(done)
            metrics.LOCAL_REPROOFS.labels("ended").inc(len(chunk) - done)
            renewed += done
        return renewed

    async def _resolve_contact(self, query: PageQuery, key: ContactKey,
                               now: dt.datetime) -> PageResult:
        """A staff token's contact not yet known here: the page's one statement resolves the
        member (and checks the follow); the mapping is remembered for the next request, whose
        page then comes from the cache. This page itself is not cached: its read did not go
        through `prepare`, so nothing could refuse a stale fill."""
        generation = self.contacts.generation
        page = await self.repository.page(query, now)
        if page.member_id is None:
            raise NotFollowing()
        check_member(page, query.uniacid)
        if self.trust.usable:
            self.contacts.put(key, page.member_id, generation)
        body = render_body(page, query, self.shape, self.tz)
        return PageResult(body, etag_of(body), "miss")

    async def _single_flight(self, query: PageQuery, member: tuple[int, int], field: str,
                             now: dt.datetime, read_failed: bool, seq: int) -> PageResult:
        return await self._flights.run(
            member, field, lambda: self._lookup(query, field, now, read_failed, seq))

    async def _lookup(self, query: PageQuery, field: str, now: dt.datetime,
                      read_failed: bool, seq: int) -> PageResult:
        # The leader reads again: a load that finished between this request's first read and
        # now has filled the page (a burst on a cold page runs one query, not one per wave).
        cached = None
        if not read_failed:
            try:
                cached = await self.cache.get(query.uniacid, query.member_id or 0, field,
                                              int(now.timestamp()))
            except CacheLagged:
                raise  # shed, as in `get`
            except CacheUnavailable:
                read_failed = True
        if read_failed:
            # A failed read loses no invalidation: answer from PostgreSQL, keep trusting.
            return await self._from_database(query, now, outcome="bypass")
        if cached is not None:
            if self.local is not None:
                self.local.put((query.uniacid, query.member_id or 0, field), cached, seq)
            return PageResult(cached.body, cached.etag, "hit")
        # Shielded task: a client that disconnects must not abort a fill half-way.
        task = asyncio.get_running_loop().create_task(
            self._load_and_fill(query, field, now, seq))
        return await asyncio.shield(task)

    async def _from_database(self, query: PageQuery, now: dt.datetime,
                             outcome: str) -> PageResult:
        page = await self.repository.page(query, now)
        check_member(page, query.uniacid)
        body = render_body(page, query, self.shape, self.tz)
        return PageResult(body, etag_of(body), outcome)

    async def _load_and_fill(self, query: PageQuery, field: str, now: dt.datetime,
                             seq: int) -> PageResult:
        member = (query.uniacid, query.member_id)
        try:
            prepared = await self.cache.prepare(*member, field)
        except CacheLagged:
            raise  # shed, as in `get`
        except CacheUnavailable:
            return await self._from_database(query, now, outcome="miss")
        if not prepared.lease:
            for delay in LEASE_POLLS:
                await asyncio.sleep(delay)
                try:
                    cached = await self.cache.get(*member, field, int(now.timestamp()))
                except CacheUnavailable:
                    break
                if cached is not None:
                    return PageResult(cached.body, cached.etag, "coalesced")
        # The member's fence: a replica may answer only once it has replayed past it.
        page = await self.repository.page(query, now, fence=prepared.fence)
        check_member(page, query.uniacid)
        body = render_body(page, query, self.shape, self.tz)
        etag = etag_of(body)
        now_s = int(now.timestamp())
        valid_until = now_s + self.ttl
        if page.valid_until is not None:
            valid_until = min(valid_until, page.valid_until)
        if valid_until > now_s and self.trust.usable:
            page_copy = CachedPage(now_s, valid_until, etag, body, prepared.tenant)
            try:
                # Whether a timed-out fill landed or not, the stamp check made it safe.
                stored = await self.cache.fill(*member, field, prepared, page_copy)
            except CacheUnavailable:
                stored = False
            if stored and self.local is not None:
                self.local.put((*member, field), page_copy, seq)
        return PageResult(body, etag, "miss")

    # Invalidation. In-flight loads first (new requests must not join a load that read the
    # database before the write), then Redis, then the local layer: the local layer is filled
    # from Redis, so it is invalidated after it (module docstring). Any failure: the cache is
    # untrusted until coverage is proven again.
    async def invalidate_members(self, uniacid: int, member_ids: list[int]) -> None:
        self._flights.drop(uniacid, set(member_ids))
        try:
            if self.enabled:
                await self.cache.invalidate_members(uniacid, member_ids)
        except CacheUnavailable:
            self.trust.lost(
                f"invalidation of {len(member_ids)} member(s) of tenant {uniacid} failed")
        finally:
            # Also when Redis failed (the loss above has emptied the layer anyway) and when the
            # call was cancelled: the local layer never keeps a page its Redis copy lost.
            if self.local is not None:
                for member_id in member_ids:
                    self.local.invalidate_member(uniacid, member_id)

    async def invalidate_tenant(self, uniacid: int) -> None:
        self._flights.drop(uniacid, None)
        try:
            if self.enabled:
                await self.cache.invalidate_tenant(uniacid)
        except CacheUnavailable:
            self.trust.lost(f"invalidation of tenant {uniacid} failed")
        finally:
            if self.local is not None:
                self.local.invalidate_tenant(uniacid)

    def adopt_epoch(self, epoch: str) -> None:
        """The keyspace this process uses from now on (service/cache/listener.py): the local layer,
        filled from another keyspace, is emptied when it changes."""
        if epoch != self.cache.epoch:
            self.cache.epoch = epoch
            if self.local is not None:
                self.local.clear()

    def forget_contact(self, key: ContactKey) -> None:
        self.contacts.forget(key)

    def forget_contacts(self, uniacid: int) -> None:
        self.contacts.forget_tenant(uniacid)
