"""The typed layer between handlers and SQL: handlers ask for a page, never see a statement."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import asyncpg
import orjson

from service.domain import TYPE_FILTERS
from service.queries import QUERIES


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
    """A tab's page as the database saw it at `now`; `member_uid` None: the contact resolves to
    no member; `member_uniacid` None: no such member."""

    member_uid: int | None
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
    uid: int
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
                                       tz="UTC", page_limit=1, page_offset=0):
        pass


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg still rolls back an open transaction before calling it; the
    default reset (`RESET ALL; UNLISTEN *; ...`) would cost a second round trip per request and
    the pool's sessions never change settings, listen or lock (LISTEN has its own connection)."""


class CouponRepository:
    def __init__(self, pool: asyncpg.Pool, display_tz: str, acquire_timeout: float) -> None:
        self._pool = pool
        self._tz = display_tz
        # Waiting for a pooled connection is bounded too: past it the caller gets a 503
        # (TimeoutError) instead of queueing behind a stuck database.
        self._acquire_timeout = acquire_timeout

    def _connection(self) -> Any:
        return self._pool.acquire(timeout=self._acquire_timeout)

    async def page(self, query: PageQuery, now: dt.datetime) -> CouponPage:
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
            "tz": self._tz,
            "page_limit": query.pagesize,
            "page_offset": (query.page - 1) * query.pagesize,
        }
        async with self._connection() as conn:
            rows = [row async for row in QUERIES.coupon_page(conn, **params)]
        head = rows[0]
        return CouponPage(
            member_uid=head["member_uid"],
            member_uniacid=head["member_uniacid"],
            coupon_transfer=head["coupon_transfer"],
            store_plugin=head["store_plugin"],
            hotel_plugin=head["hotel_plugin"],
            total=head["total"],
            rows=[r for r in rows if r["id"] is not None],
            valid_until=head["valid_until"],
        )

    async def coupon_holders(self, coupon_id: int, limit: int) -> list[int]:
        async with self._connection() as conn:
            return [r["uid"] async for r in QUERIES.coupon_holders(
                conn, coupon_id=coupon_id, max_members=limit)]

    async def use(self, member_coupon_id: int, now: dt.datetime) -> UsedCoupon:
        """Mark used exactly once; raises UseRefused otherwise."""
        async with self._connection() as conn:
            row = await QUERIES.use_member_coupon(conn, id=member_coupon_id, now=now)
            if row is not None:
                return UsedCoupon(row["id"], row["uniacid"], row["uid"], row["use_time"])
            state = await QUERIES.member_coupon_state(conn, id=member_coupon_id)
        if state is None or state["is_member_deleted"]:
            raise UseRefused("not_found")
        raise UseRefused("already_used")

    async def ping(self) -> None:
        async with self._connection() as conn:
            await QUERIES.ping(conn)
