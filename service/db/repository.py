"""The typed layer between handlers and SQL: handlers ask for a page, never see a statement."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import orjson

from service.coupons.domain import TYPE_FILTERS
from service.db.queries import QUERIES
from service.observe import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# The connection, not the statement, failed. After PostgreSQL drops its backends (a restart, a
# failover, pg_terminate_backend) asyncpg may hand out a pooled connection whose FATAL message
# it has read but whose end of stream it has not yet seen: the statement then fails with
# InternalClientError ("another operation is in progress") before anything is sent. Measured
# here with a 5-connection pool, 200 rounds of "kill every backend, then 5 reads": 89% of the
# first reads failed this way or with ConnectionDoesNotExistError; one retry on another
# connection answered all of them.
BROKEN_CONNECTION = (asyncpg.InterfaceError, asyncpg.InternalClientError,
                     asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError,
                     asyncpg.CrashShutdownError,
                     ConnectionError)


@dataclasses.dataclass(frozen=True, slots=True)
class PageQuery:
    uniacid: int
    member_id: int | None  # None: resolve the member from the staff member's contact below
    status: int
    coupon_type: int
    page: int
    pagesize: int
    staff_userid: str | None = None
    external_userid: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CouponPage:
    """A tab's page as the database saw it at `now`; `member_id` None: the contact resolves to
    no member; `member_uniacid` None: no such member."""

    member_id: int | None
    member_uniacid: int | None
    coupon_transfer: bool
    store_plugin: bool
    hotel_plugin: bool
    total: int
    rows: list[asyncpg.Record]
    # First unix second at which the clock alone changes any of the member's pages; None: never.
    valid_until: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class UsedCoupon:
    id: int
    uniacid: int
    member_id: int
    use_time: dt.datetime


class UseRefused(Exception):
    """`reason` is "not_found" (absent or deleted by the member) or "already_used"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def init_connection(conn: asyncpg.Connection) -> None:
    """Every pooled connection decodes jsonb straight into Python objects (orjson)."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            schema="pg_catalog",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
        )


async def warm_connection(conn: asyncpg.Connection) -> None:
    """Prepare the hot statement once per pooled connection, so that a request never pays for
    asyncpg's type introspection or a separate Parse round trip."""
    await init_connection(conn)
    now = dt.datetime.now(dt.UTC)
    async for _ in QUERIES.coupon_page(conn, uniacid=0, member_id=0, staff_userid=None,
                                       external_userid=None, status=1, use_types=None,
                                       coupon_methods=None, near_only=False, now=now,
                                       page_limit=1, page_offset=0, total_cap=1):
        pass


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg still rolls back an open transaction before calling it; the
    default reset (`RESET ALL; UNLISTEN *; ...`) would cost a second round trip per request and
    the pool's sessions never change settings, listen or lock (LISTEN has its own connection)."""


@contextlib.asynccontextmanager
async def _acquire(pool: asyncpg.Pool, name: str,
                   wait_seconds: float | None = None) -> AsyncIterator[asyncpg.Connection]:
    """A pool connection, counted as waiting until it is handed over, then in use. Waiting is
    bounded: past `wait_seconds` the caller gets a 503 (TimeoutError) instead of queueing behind a
    stuck database."""
    waiting = metrics.DB_POOL_WAITING.labels(name)
    in_use = metrics.DB_POOL_IN_USE.labels(name)
    waiting.inc()
    try:
        conn = await pool.acquire(timeout=wait_seconds)
    finally:
        waiting.dec()
    in_use.inc()
    try:
        yield conn
    except BROKEN_CONNECTION:
        # Never back into the pool: the release hook does not probe the connection. One that
        # asyncpg already saw close has been detached from its proxy, which then refuses calls.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()
        # One broken connection mostly means the server dropped them all (a restart, a
        # failover): the pool's other idle ones are replaced on their next acquire rather than
        # each failing one request first.
        await pool.expire_connections()
        raise
    finally:
        in_use.dec()
        await pool.release(conn)


async def _read(pool: asyncpg.Pool, name: str, wait_seconds: float | None,
                work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """`work` on a pool connection, once more on another if the first one proved broken. Only
    for reads: a write whose connection broke may have committed."""
    try:
        async with _acquire(pool, name, wait_seconds) as conn:
            return await work(conn)
    except BROKEN_CONNECTION as exc:
        log.info("%s connection broken (%s), reading again on another", name,
                 type(exc).__name__)
        metrics.DB_RETRIES.labels(name).inc()
    async with _acquire(pool, name, wait_seconds) as conn:
        return await work(conn)


async def _page_rows(conn: asyncpg.Connection, params: dict[str, Any]) -> list[asyncpg.Record]:
    return [row async for row in QUERIES.coupon_page(conn, **params)]


class CouponRepository:
    """Page reads go to the replica when one is configured and has replayed far enough
    (`fence`); everything else, and every read the replica cannot serve, to the primary.

    The fence closes the stale-set race across replication lag: an invalidation stores, with
    the member's new stamp, a WAL position of the primary taken after the write committed
    (`refresh_fence`, called by the listener before it applies a notification and by `use`
    after its write). A miss reads that position with the stamp (PageCache.prepare) and uses the
    replica only if the replica has replayed at least that far, so whatever it fills has seen
    every write whose invalidation came before. Without a replica the fence stays 0 and costs
    nothing.
    """

    def __init__(self, pool: asyncpg.Pool, total_cap: int,
                 read_pool: asyncpg.Pool | None = None,
                 acquire_timeout: float | None = None) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout
        self._read_pool = read_pool
        self._total_cap = total_cap
        self._fence = 0

    def fence(self) -> int:
        """The newest primary WAL position this process has seen after a write (0: none)."""
        return self._fence

    async def refresh_fence(self, conn: asyncpg.Connection | None = None) -> int:
        """Move the fence to the primary's current WAL position (only with a replica)."""
        if self._read_pool is None:
            return 0
        if conn is None:
            lsn = await _read(self._pool, "primary", self._acquire_timeout,
                              QUERIES.primary_wal_lsn)
        else:
            lsn = await QUERIES.primary_wal_lsn(conn)
        self._fence = max(self._fence, lsn)
        return self._fence

    async def page(self, query: PageQuery, now: dt.datetime,
                   fence: int | None = None) -> CouponPage:
        """`fence`: the member's (from the cache); None: this process's, the safe default."""
        kind = TYPE_FILTERS[query.coupon_type]
        params: dict[str, Any] = {
            "uniacid": query.uniacid,
            "member_id": query.member_id,
            "staff_userid": query.staff_userid,
            "external_userid": query.external_userid,
            "status": query.status,
            "use_types": list(kind.use_types) if kind.use_types is not None else None,
            "coupon_methods": (
                list(kind.coupon_methods) if kind.coupon_methods is not None else None
            ),
            "near_only": kind.near_only,
            "now": now,
            "page_limit": query.pagesize,
            "page_offset": (query.page - 1) * query.pagesize,
            "total_cap": self._total_cap,
        }
        rows = None
        if self._read_pool is None:
            metrics.DB_READS.labels("primary", "no_replica").inc()
        else:
            rows = await self._replica_page(params, self._fence if fence is None else fence)
        if rows is None:
            rows = await _read(self._pool, "primary", self._acquire_timeout,
                               lambda conn: _page_rows(conn, params))
        head = rows[0]
        return CouponPage(
            member_id=head["member_id"],
            member_uniacid=head["member_uniacid"],
            coupon_transfer=head["coupon_transfer"],
            store_plugin=head["store_plugin"],
            hotel_plugin=head["hotel_plugin"],
            total=head["total"],
            rows=[r for r in rows if r["id"] is not None],
            valid_until=head["valid_until"],
        )

    async def _replica_page(self, params: dict[str, Any],
                            fence: int) -> list[asyncpg.Record] | None:
        """The page from the replica, or None when it is behind the fence or failing."""
        assert self._read_pool is not None
        try:
            async with _acquire(self._read_pool, "replica", self._acquire_timeout) as conn:
                # Its own statement, before the page's: a statement's snapshot is taken before
                # it runs, so a position read inside it could be newer than what it sees.
                replayed = await QUERIES.replica_replayed_lsn(conn)
                # NULL: not in recovery (a primary given as the replica) is never behind.
                if replayed is not None and replayed < fence:
                    metrics.DB_READS.labels("primary", "replica_behind").inc()
                    return None
                rows = await _page_rows(conn, params)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                asyncpg.InternalClientError) as exc:
            log.warning("replica read failed, reading the primary: %s", type(exc).__name__)
            metrics.DB_READS.labels("primary", "replica_error").inc()
            return None
        metrics.DB_READS.labels("replica", "").inc()
        return rows

    async def coupon_holders(self, coupon_id: int, limit: int,
                             conn: asyncpg.Connection | None = None) -> list[int]:
        """`conn`: a connection of the caller's own (the listener's), else one from the pool."""
        async def holders(conn: asyncpg.Connection) -> list[int]:
            return [r["uid"] async for r in QUERIES.coupon_holders(
                conn, coupon_id=coupon_id, max_members=limit)]
        if conn is not None:
            return await holders(conn)
        return await _read(self._pool, "primary", self._acquire_timeout, holders)

    async def use(self, member_coupon_id: int, now: dt.datetime) -> UsedCoupon:
        """Mark used exactly once; raises UseRefused otherwise."""
        async with _acquire(self._pool, "primary", self._acquire_timeout) as conn:
            row = await QUERIES.use_member_coupon(conn, id=member_coupon_id, now=now)
            if row is not None:
                # Committed: the invalidation that follows must carry a fence past it.
                await self.refresh_fence(conn)
                return UsedCoupon(row["id"], row["uniacid"], row["uid"], row["use_time"])
            state = await QUERIES.member_coupon_state(conn, id=member_coupon_id)
        if state is None or state["is_member_deleted"]:
            raise UseRefused("not_found")
        raise UseRefused("already_used")

    async def display_tz(self) -> str:
        return await _read(self._pool, "primary", self._acquire_timeout, QUERIES.display_tz)

    async def ping(self) -> None:
        async with _acquire(self._pool, "primary", self._acquire_timeout) as conn:
            await QUERIES.ping(conn)
