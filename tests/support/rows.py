"""Rows arranged for a test, through the named statements of tests/support/sql/fixtures.sql, on a
database whose tables are emptied first (isolation between tests is by truncation)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosql
import asyncpg

from service.db.repository import init_connection
from tests.support.common import NOW

FIXTURES = aiosql.from_path(Path(__file__).parent / "sql" / "fixtures.sql", "asyncpg")


@contextlib.asynccontextmanager
async def arranging_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection for arranging rows, on a database whose tables are emptied first."""
    conn = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        await FIXTURES.truncate_all(conn)
        yield conn
    finally:
        await conn.close()


@dataclasses.dataclass
class Rows:
    """Arranges rows through the named statements of tests/support/sql/fixtures.sql."""

    conn: asyncpg.Connection

    async def tenant(self, uniacid: int = 1, *, transfer: bool = False, store_plugin: bool = True,
                     hotel_plugin: bool = True, near_days: int = 3) -> None:
        await FIXTURES.insert_tenant_setting(
            self.conn, uniacid=uniacid, coupon_transfer=transfer, store_plugin=store_plugin,
            hotel_plugin=hotel_plugin, near_expiration_days=near_days)

    async def member(self, uid: int = 1, uniacid: int = 1) -> int:
        await FIXTURES.insert_member(self.conn, uid=uid, uniacid=uniacid)
        return uid

    async def coupon(self, uniacid: int = 1, **fields: Any) -> int:
        values: dict[str, Any] = {
            "name": "测试券", "coupon_method": 1, "deduct": 10, "discount": 0, "enough": 0,
            "use_type": 0, "category_ids": None, "categorynames": None, "goods_ids": None,
            "goods_names": None, "storeids": None, "storenames": None, "suppliernames": None,
            "time_limit": 0, "time_days": 0, "time_start": None, "time_end": None, "total": -1,
            "money": 0, "credit": 0, "plugin_id": 0, "use_conditions": None,
        }
        unknown = set(fields) - set(values)
        assert not unknown, f"unknown coupon fields {unknown}"
        values.update(fields)
        return await FIXTURES.insert_coupon(self.conn, uniacid=uniacid, **values)

    async def member_coupon(self, coupon_id: int, *, uid: int = 1, uniacid: int = 1,
                            id: int | None = None, used: int = 0,
                            use_time: dt.datetime | None = None,
                            get_time: dt.datetime = NOW - dt.timedelta(days=1),
                            deleted: int = 0) -> int:
        return await FIXTURES.insert_member_coupon(
            self.conn, id=id, uniacid=uniacid, uid=uid, coupon_id=coupon_id, used=used,
            use_time=use_time, get_time=get_time, is_member_deleted=deleted)

    async def contact(self, external_userid: str, uid: int, *, staff: str = "staff-1",
                      uniacid: int = 1) -> None:
        await FIXTURES.insert_wecom_contact(self.conn, uniacid=uniacid,
                                            external_userid=external_userid,
                                            staff_userid=staff, uid=uid)

    async def store(self, id: int, name: str, uniacid: int = 1) -> None:
        await FIXTURES.insert_store(self.conn, id=id, uniacid=uniacid, store_name=name)

    async def goods(self, id: int, title: str, uniacid: int = 1) -> None:
        await FIXTURES.insert_goods(self.conn, id=id, uniacid=uniacid, title=title)

    async def hotel(self, id: int, name: str, uniacid: int = 1,
                    coupon_ids: tuple[int, ...] = ()) -> None:
        await FIXTURES.insert_hotel(self.conn, id=id, uniacid=uniacid, hotel_name=name)
        for coupon_id in coupon_ids:
            await FIXTURES.insert_coupon_hotel(self.conn, coupon_id=coupon_id, hotel_id=id)
