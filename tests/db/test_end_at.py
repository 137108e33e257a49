"""Stored coupon ends (0004): maintained for any writer, recomputed when a coupon changes, in
the zone `migrate` recorded; and the capped total."""

from __future__ import annotations

import dataclasses
import datetime as dt

import asyncpg
import pytest
from aiohttp import web

from service.app import create_app
from service.db.migrations import migrate
from service.db.queries import QUERIES
from tests.support.api import coupons, items_of
from tests.support.common import NOW, SHANGHAI, token_for
from tests.support.pages import settle

LONG = 90 * 86_400


async def end_of(db: asyncpg.Connection, member_coupon_id: int) -> dt.datetime | None:
    return await db.fetchval("SELECT end_at FROM yz_member_coupon WHERE id = $1",
                             member_coupon_id)


async def test_a_raw_insert_gets_its_end(db, rows):
    fixed_end = dt.datetime(2026, 7, 1, 12, 0, tzinfo=SHANGHAI)
    fixed = await rows.coupon(1, time_limit=1, time_start=NOW, time_end=fixed_end)
    days = await rows.coupon(1, time_limit=0, time_days=2)
    forever = await rows.coupon(1, time_limit=0, time_days=0)
    late_evening_utc = dt.datetime(2026, 6, 14, 17, 30, tzinfo=dt.UTC)  # 01:30 on the 15th, +08
    a = await rows.member_coupon(fixed)
    b = await rows.member_coupon(days, get_time=late_evening_utc)
    c = await rows.member_coupon(forever)
    assert await end_of(db, a) == fixed_end
    assert await end_of(db, b) == dt.datetime(2026, 6, 17, 23, 59, 59, tzinfo=SHANGHAI)
    assert await end_of(db, c) is None


async def test_a_writer_cannot_set_a_wrong_end(db, rows):
    cid = await rows.coupon(1, time_limit=0, time_days=1)
    mc = await rows.member_coupon(cid, get_time=NOW)
    await db.execute("UPDATE yz_member_coupon SET end_at = '2000-01-01' WHERE id = $1", mc)
    assert await end_of(db, mc) == dt.datetime(2026, 6, 16, 23, 59, 59, tzinfo=SHANGHAI)


async def test_member_row_before_its_coupon(db, rows):
    await db.execute(
        "INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, get_time) "
        "VALUES (500, 1, 1, 900, $1)", NOW)
    assert await end_of(db, 500) is None
    await db.execute(
        "INSERT INTO yz_coupon (id, uniacid, name, time_limit, time_days) "
        "VALUES (900, 1, 'late', 0, 3)")
    assert await end_of(db, 500) == dt.datetime(2026, 6, 18, 23, 59, 59, tzinfo=SHANGHAI)


async def test_coupon_validity_change_moves_holders_between_tabs(client, db, rows, clock):
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=1, time_start=NOW - dt.timedelta(days=9),
                            time_end=NOW - dt.timedelta(days=1))
    mc = await rows.member_coupon(cid)
    await settle(client, db)
    token = token_for(ttl=LONG)
    expired = await coupons(client, token, status_request=2, coupon_type=0)
    assert [i["id"] for i in items_of(expired)] == [mc]
    await db.execute("UPDATE yz_coupon SET time_end = $1 WHERE id = $2",
                     NOW + dt.timedelta(days=30), cid)
    await settle(client, db)
    unused = await coupons(client, token, status_request=1, coupon_type=0)
    assert [i["id"] for i in items_of(unused)] == [mc]
    assert items_of(unused)[0]["time_end"] == (NOW + dt.timedelta(days=30)).strftime(
        "%Y-%m-%d %H:%M:%S")
    expired = await coupons(client, token, status_request=2, coupon_type=0)
    assert items_of(expired) == []


async def test_migrate_records_the_zone_and_the_app_refuses_another(database_url, db, rows,
                                                                     settings):
    cid = await rows.coupon(1, time_limit=0, time_days=1)
    mc = await rows.member_coupon(cid, get_time=dt.datetime(2026, 6, 14, 20, 0, tzinfo=dt.UTC))
    # 04:00 on the 15th in Shanghai, 20:00 on the 14th in UTC: the day differs.
    assert await end_of(db, mc) == dt.datetime(2026, 6, 16, 23, 59, 59, tzinfo=SHANGHAI)
    try:
        await migrate(database_url, display_tz="UTC")
        assert await QUERIES.display_tz(db) == "UTC"
        assert await end_of(db, mc) == dt.datetime(2026, 6, 15, 23, 59, 59, tzinfo=dt.UTC)
        runner = web.AppRunner(create_app(settings))  # settings say Asia/Shanghai
        with pytest.raises(RuntimeError, match="run `python -m service migrate`"):
            await runner.setup()
        await runner.cleanup()
    finally:
        await migrate(database_url, display_tz="Asia/Shanghai")
    assert await end_of(db, mc) == dt.datetime(2026, 6, 16, 23, 59, 59, tzinfo=SHANGHAI)


async def test_total_is_exact_up_to_the_cap(make_client, settings, rows):
    await rows.member(1, 1)
    cid = await rows.coupon(1)
    ids = [await rows.member_coupon(cid, get_time=NOW - dt.timedelta(hours=n))
           for n in range(7)]
    client = await make_client(dataclasses.replace(settings, total_cap=5))
    body = await coupons(client, token_for(), coupon_type=0, pagesize=2)
    assert body["data"]["total"] == 5 and body["data"]["last_page"] == 3
    page4 = await coupons(client, token_for(), coupon_type=0, pagesize=2, page=4)
    assert [i["id"] for i in items_of(page4)] == [ids[6]], "rows past the cap still page"
    exact = await make_client(dataclasses.replace(settings, total_cap=7))
    body = await coupons(exact, token_for(), coupon_type=0, pagesize=2)
    assert body["data"]["total"] == 7 and body["data"]["last_page"] == 4
