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
    member_id: int
    status: int
    coupon_type: int
    page: int
    pagesize: int


@dataclasses.dataclass(frozen=True, slots=True)
class CouponPage:
    """A tab's page as the database saw it at `now`; `member_uniacid` None: no such member."""

    member_uniacid: int | None
    coupon_transfer: bool
    store_plugin: bool
    hotel_plugin: bool
    total: int
    rows: list[asyncpg.Record]


async def init_connection(conn: asyncpg.Connection) -> None:
    """Every pooled connection decodes jsonb straight into Python objects (orjson)."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            schema="pg_catalog",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
        )


class CouponRepository:
    def __init__(self, pool: asyncpg.Pool, display_tz: str) -> None:
        self._pool = pool
        self._tz = display_tz

    async def page(self, query: PageQuery, now: dt.datetime) -> CouponPage:
        kind = TYPE_FILTERS[query.coupon_type]
        params: dict[str, Any] = {
            "uniacid": query.uniacid,
            "member_id": query.member_id,
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
        async with self._pool.acquire() as conn:
            rows = [row async for row in QUERIES.coupon_page(conn, **params)]
        head = rows[0]
        return CouponPage(
            member_uniacid=head["member_uniacid"],
            coupon_transfer=head["coupon_transfer"],
            store_plugin=head["store_plugin"],
            hotel_plugin=head["hotel_plugin"],
            total=head["total"],
            rows=[r for r in rows if r["id"] is not None],
        )

    async def ping(self) -> None:
        async with self._pool.acquire() as conn:
            await QUERIES.ping(conn)
