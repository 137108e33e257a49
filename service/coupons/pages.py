"""Pages of the coupons tab: cache first, one database round trip on a miss, single flight.

Trust: the cache is served only while this process's LISTEN connection is confirmed alive and
it is covered: no invalidation can have been lost since the listener proved so, by a handover
from a live listener or by a flush (service/listener.py). A Redis failure during an
invalidation, a reconnect or a TRUNCATE ends the coverage; until it is proven again, every
request goes to PostgreSQL and nothing is filled.

Layers, and why each ordering is safe (the rule: no layer is refilled from a copy older than an
invalidation that the layer has already applied):
- Redis <- PostgreSQL: a miss reads the member's `gen` stamp and the tenant's token before its
  query; the fill lands only if `gen` is unchanged, and a hit serves it only while the tenant's
  token is unchanged. An invalidation replaces the stamp (or the token) after the write
  committed, so a fill that read the database before the write is refused, or never served.
- Redis <- a replica: the same, and the replica answers only once it has replayed past the
  member's fence, stored with the stamp by every invalidation (service/repository.py).
- local <- Redis: an invalidation is applied to Redis first and to the local layer after it
  (`invalidate_members`, `invalidate_tenant`). A lookup takes its local stamp before it reads
  Redis. If its Redis read came before the Redis invalidation, its stamp came before the local
  one: its fill is refused (or dropped by it); if its read came after, it saw the new state. The
  other order (local first) let a read between the two refill the local layer from the old Redis
  copy, which then stayed for the whole local TTL.
- every process: each has its own LISTEN connection, and applies every invalidation to Redis and
  then to its own local layer; a process whose listener lags serves its local copy until its own
  listener catches up (the commit-to-invalidation latency), never longer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from service.cache.contacts import ContactCache, ContactKey
from service.cache.local import LocalCache
from service.cache.redis import CachedPage, CacheUnavailable, PageCache
from service.coupons import domain
from service.db.repository import CouponPage, CouponRepository, PageQuery
from service.http.errors import ApiError
from service.limits.limiter import Check, RateLimiter

log = logging.getLogger("service.pages")

# A cross-process lease holder usually fills within a query's time; poll a few times, then read
# the database anyway (a lease is an optimisation, never a wait on a dead peer).
LEASE_POLLS = (0.005, 0.01, 0.02, 0.04)


@dataclasses.dataclass(frozen=True, slots=True)
class PageResult:
    body: bytes
    etag: str
    outcome: str  # local | hit | miss | coalesced | bypass


class LeaderGone(Exception):
    """The request doing a lookup for others was cancelled: the others look it up again."""


class CacheTrust:
    """Whether the cache may be used now; see the module docstring."""

    def __init__(self) -> None:
        self.listener_ready = False
        self.covered = False
        self.losses = 0
        self.ready = asyncio.Event()
        self.on_lost: list[Callable[[], None]] = []

    @property
    def usable(self) -> bool:
        return self.listener_ready and self.covered

    def lost(self, reason: str, *, quiet: bool = False) -> None:
        """An invalidation may have been missed: nothing cached is trusted until coverage is
        proven again. Every hook runs (the local layer, the contact mappings, the loads in
        flight are dropped)."""
        if self.covered and not quiet:
            log.warning("cache untrusted until coverage is proven again: %s", reason)
        self.covered = False
        self.losses += 1
        self.ready.clear()
        for hook in self.on_lost:
            hook()

    def cover(self, losses_before: int) -> bool:
        """Coverage proven from a point after which no loss may have happened: the cache is
        trusted again, unless a loss came in the meantime."""
        if self.losses != losses_before:
            return False
        self.covered = True
        if self.listener_ready:
            self.ready.set()
        return True


# The version of what a page's bytes look like for the same rows: the renderer (service/domain.py
# and `render_body`) and the page statement (sql/queries/coupons.sql). It is part of every cached
# page's name, with the settings that shape the bytes (RESPONSE_SHAPE, TOTAL_CAP), so that a
# process of a new version, handed a warm cache by the old one (service/listener.py), never
# serves a page the old code rendered. tests/test_render_version.py fails when the bytes change
# and this does not.
RENDER_VERSION = 2


def render_body(page: CouponPage, query: PageQuery, shape: str, tz: ZoneInfo) -> bytes:
    items = [domain.render_coupon(row, tz, page.store_plugin) for row in page.rows]
    last = domain.last_page(page.total, query.pagesize)
    data: dict[str, Any] = {"set": {"transfer": page.coupon_transfer}}
    if shape == "paginator":
        offset = (query.page - 1) * query.pagesize
        data["data"] = {
            "current_page": query.page,
            "data": items,
            "per_page": query.pagesize,
            "total": page.total,
            "last_page": last,
            "from": offset + 1 if items else None,
            "to": offset + len(items) if items else None,
        }
        data["search_array"] = domain.search_array(query.status)
    else:
        data["data"] = items
        data["search_array"] = domain.search_array(query.status)
        data.update(current_page=query.page, per_page=query.pagesize, total=page.total,
                    last_page=last)
    return orjson.dumps({"result": 1, "msg": "", "data": data})


def etag_of(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def check_member(page: CouponPage, uniacid: int) -> None:
    if page.member_uniacid is None:
        raise ApiError(404, "会员不存在", {"member_id": ["会员不存在"]})
    if page.member_uniacid != uniacid:
        msg = "该会员不属于当前商户"
        raise ApiError(403, msg, {"member_id": [msg]})


def not_following() -> ApiError:
    msg = "参数 user_id 不是当前员工的外部联系人"
    return ApiError(403, msg, {"user_id": [msg]})


class CouponPages:
    """`enabled` False: every page from PostgreSQL (CACHE_ENABLED=false; the cache object
    still carries the rate limiter's calls). `local` None: no process-local layer."""

    def __init__(self, repository: CouponRepository, cache: PageCache, trust: CacheTrust, *,
                 shape: str, tz: ZoneInfo, ttl_seconds: int, limiter: RateLimiter,
                 contacts: ContactCache, local: LocalCache | None = None,
                 enabled: bool = True, total_cap: int = 0) -> None:
        self.repository = repository
        self.cache = cache
        self.trust = trust
        self.limiter = limiter
        self.contacts = contacts
        self.local = local
        self.enabled = enabled
        if local is not None:
            trust.on_lost.append(local.clear)
        trust.on_lost.append(contacts.clear)
        trust.on_lost.append(self._inflight_clear)
        self.shape = shape
        # Everything but the query that decides a page's bytes (RENDER_VERSION above).
        self.variant = f"{shape}:{RENDER_VERSION}.{total_cap}"
        self.tz = tz
        self.ttl = ttl_seconds
        self._inflight: dict[tuple[int, int], dict[str, asyncio.Future[PageResult]]] = {}
        self.stats = {"local": 0, "hit": 0, "miss": 0, "coalesced": 0, "bypass": 0,
                      "stale_fill_refused": 0, "fills": 0}

    def field(self, query: PageQuery) -> str:
        return (f"{query.status}:{query.coupon_type}:{query.page}:{query.pagesize}:"
                f"{self.variant}")

    def local_hit(self, query: PageQuery, field: str, now: int,
                  staff_id: str) -> CachedPage | None:
        """This process's copy of the page when nothing has to be awaited first: caching on and
        trusted, a staff token's contact already known, the rate limits admitted by this
        process's leased allowances. Exactly what `get` would answer (it serves this layer
        first too), without a coroutine."""
        local = self.local
        if local is None or not self.enabled or not self.trust.usable:
            return None
        uid = query.member_id
        if uid is None:
            uid = self.contacts.get((query.uniacid, query.staff_userid or "",
                                     query.external_userid or ""))
            if uid is None:
                return None
        page = local.get((query.uniacid, uid, field), now)
        if page is None:
            return None
        limiter = self.limiter
        if limiter.enabled:
            checks = limiter.checks(query.uniacid, staff_id, uid)
            if not limiter.spend_leases(checks):
                return None
        self.stats["local"] += 1
        return page

    async def get(self, query: PageQuery, now: dt.datetime, *, staff_id: str,
                  now_ms: int) -> PageResult:
        """The page for `query`, after the rate limits of `staff_id` and of the member (429)."""
        if query.member_id is None:
            key = (query.uniacid, query.staff_userid or "", query.external_userid or "")
            uid = self.contacts.get(key) if self.trust.usable else None
            if uid is None:
                await self._limit(
                    self.limiter.admit_locally(self.limiter.checks(query.uniacid, staff_id, None)),
                    now_ms)
                return await self._resolve_contact(query, key, now)
            query = dataclasses.replace(query, member_id=uid)
        member = (query.uniacid, query.member_id)
        field = self.field(query)
        checks = self.limiter.admit_locally(
            self.limiter.checks(query.uniacid, staff_id, query.member_id))
        if not self.enabled or not self.trust.usable:
            await self._limit(checks, now_ms)
            return await self._from_database(query, now, outcome="bypass")
        local = self.local
        # Before any read: an invalidation after this point refuses the local fill.
        stamp = local.stamp() if local is not None else 0
        if local is not None:
            page = local.get((*member, field), int(now.timestamp()))
            if page is not None:
                # The parties this process holds no allowance for are counted in Redis (one
                # round trip, which also leases them allowances for their next requests).
                await self._limit(checks, now_ms)
                self.stats["local"] += 1
                return PageResult(page.body, page.etag, "local")
        if not checks:
            # No limiter: a burst on one page coalesces before any Redis call (the leader reads).
            return await self._single_flight(query, member, field, now, False, stamp)
        # One round trip: the limiter's calls and the page's read in one pipeline.
        def queue(pipe: Any) -> None:
            self.limiter.queue(pipe, checks, now_ms)
            self.cache.queue_read(pipe, *member, field)

        try:
            replies = await self.cache.batch(queue, RateLimiter.load)
        except CacheUnavailable as exc:
            self.limiter.fail_open(str(exc))
            read_failed = True
        else:
            self.limiter.decide(replies[:-2], checks)
            cached = self.cache.page_of(replies[-2:], int(now.timestamp()))
            if cached is not None:
                self.stats["hit"] += 1
                if local is not None:
                    local.put((*member, field), cached, stamp)
                return PageResult(cached.body, cached.etag, "hit")
            read_failed = False
        return await self._single_flight(query, member, field, now, read_failed, stamp)

    async def _limit(self, checks: list[Check], now_ms: int) -> None:
        """The limiter alone (no page read to share its round trip with)."""
        if not checks:
            return
        try:
            replies = await self.cache.batch(
                lambda pipe: self.limiter.queue(pipe, checks, now_ms), RateLimiter.load)
        except CacheUnavailable as exc:
            self.limiter.fail_open(str(exc))
            return
        self.limiter.decide(replies, checks)

    async def _resolve_contact(self, query: PageQuery, key: ContactKey,
                               now: dt.datetime) -> PageResult:
        """A staff token's contact not yet known here: the page's one statement resolves the
        member (and checks the follow); the mapping is remembered for the next request, whose
        page then comes from the cache. This page itself is not cached: its read did not go
        through `prepare`, so nothing could refuse a stale fill."""
        generation = self.contacts.generation
        page = await self.repository.page(query, now)
        if page.member_uid is None:
            raise not_following()
        check_member(page, query.uniacid)
        if self.trust.usable:
            self.contacts.put(key, page.member_uid, generation)
        body = render_body(page, query, self.shape, self.tz)
        self.stats["miss"] += 1
        return PageResult(body, etag_of(body), "miss")

    async def _single_flight(self, query: PageQuery, member: tuple[int, int], field: str,
                             now: dt.datetime, read_failed: bool, stamp: int) -> PageResult:
        fields = self._inflight.setdefault(member, {})
        leader = fields.get(field)
        if leader is not None:
            # Someone is already loading this page: wait for their answer (at most one query
            # for any burst on a cold page).
            self.stats["coalesced"] += 1
            try:
                result = await asyncio.shield(leader)
            except LeaderGone:
                return await self._single_flight(query, member, field, now, read_failed, stamp)
            return dataclasses.replace(result, outcome="coalesced")
        leader = asyncio.get_running_loop().create_future()
        fields[field] = leader
        try:
            result = await self._lookup(query, field, now, read_failed, stamp)
        except asyncio.CancelledError:
            leader.set_exception(LeaderGone())
            raise
        except BaseException as exc:
            leader.set_exception(exc)
            raise
        else:
            leader.set_result(result)
            return result
        finally:
            if fields.get(field) is leader:
                del fields[field]
                if not fields and self._inflight.get(member) is fields:
                    del self._inflight[member]
            leader.exception()  # mark retrieved: there may be no waiters

    async def _lookup(self, query: PageQuery, field: str, now: dt.datetime,
                      read_failed: bool, stamp: int) -> PageResult:
        # The leader reads again: a load that finished between this request's first read and
        # now has filled the page (a burst on a cold page runs one query, not one per wave).
        cached = None
        if not read_failed:
            try:
                cached = await self.cache.get(query.uniacid, query.member_id or 0, field,
                                              int(now.timestamp()))
            except CacheUnavailable:
                read_failed = True
        if read_failed:
            # A failed read loses no invalidation: answer from PostgreSQL, keep trusting.
            return await self._from_database(query, now, outcome="bypass")
        if cached is not None:
            self.stats["hit"] += 1
            if self.local is not None:
                self.local.put((query.uniacid, query.member_id or 0, field), cached, stamp)
            return PageResult(cached.body, cached.etag, "hit")
        self.stats["miss"] += 1
        # Shielded task: a client that disconnects must not abort a fill half-way.
        task = asyncio.get_running_loop().create_task(
            self._load_and_fill(query, field, now, stamp))
        return await asyncio.shield(task)

    async def _from_database(self, query: PageQuery, now: dt.datetime,
                             outcome: str) -> PageResult:
        page = await self.repository.page(query, now)
        check_member(page, query.uniacid)
        body = render_body(page, query, self.shape, self.tz)
        if outcome == "bypass":
            self.stats["bypass"] += 1
        return PageResult(body, etag_of(body), outcome)

    async def _load_and_fill(self, query: PageQuery, field: str, now: dt.datetime,
                             stamp: int) -> PageResult:
        member = (query.uniacid, query.member_id)
        try:
            prepared = await self.cache.prepare(*member, field)
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
            else:
                self.stats["fills" if stored else "stale_fill_refused"] += 1
            if stored and self.local is not None:
                self.local.put((*member, field), page_copy, stamp)
        return PageResult(body, etag, "miss")

    # Invalidation. In-flight loads first (new requests must not join a load that read the
    # database before the write), then Redis, then the local layer: the local layer is filled
    # from Redis, so it is invalidated after it (module docstring). Any failure: the cache is
    # untrusted until coverage is proven again.
    def _drop_inflight(self, uniacid: int, uids: set[int] | None) -> None:
        for key in list(self._inflight):
            if key[0] == uniacid and (uids is None or key[1] in uids):
                del self._inflight[key]

    def _inflight_clear(self) -> None:
        self._inflight.clear()

    async def invalidate_members(self, uniacid: int, uids: list[int]) -> None:
        self._drop_inflight(uniacid, set(uids))
        try:
            if self.enabled:
                await self.cache.invalidate_members(uniacid, uids)
        except CacheUnavailable:
            self.trust.lost(f"invalidation of {len(uids)} member(s) of tenant {uniacid} failed")
        finally:
            # Also when Redis failed (the loss above has emptied the layer anyway) and when the
            # call was cancelled: the local layer never keeps a page its Redis copy lost.
            if self.local is not None:
                for uid in uids:
                    self.local.invalidate_member(uniacid, uid)

    async def invalidate_tenant(self, uniacid: int) -> None:
        self._drop_inflight(uniacid, None)
        try:
            if self.enabled:
                await self.cache.invalidate_tenant(uniacid)
        except CacheUnavailable:
            self.trust.lost(f"invalidation of tenant {uniacid} failed")
        finally:
            if self.local is not None:
                self.local.invalidate_tenant(uniacid)

    def adopt_epoch(self, epoch: str) -> None:
        """The keyspace this process uses from now on (service/listener.py): the local layer,
        filled from another keyspace, is emptied when it changes."""
        if epoch != self.cache.epoch:
            self.cache.epoch = epoch
            if self.local is not None:
                self.local.clear()

    def forget_contact(self, key: ContactKey) -> None:
        self.contacts.forget(key)

    def forget_contacts(self, uniacid: int) -> None:
        self.contacts.forget_tenant(uniacid)
