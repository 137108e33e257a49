"""The arrangement: the rows a run starts from, written with SQL of our own."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

import asyncpg

from tests.support.freshness.model import (
    CONTACT,
    CONTACT_STAFF,
    GOODS,
    HOTELS,
    STORES,
    TENANT1,
    TENANT2,
    UNIACID,
)


@dataclasses.dataclass
class World:
    plain: int                 # use_type 0, renamed by the coupon source
    store4: int                # use_type 4, its storenames edited by the coupon source
    hotel7: int                # use_type 7, yz_coupon_hotel -> yz_hotel names
    cond9: int                 # use_type 9, use_conditions store_ids / good_ids
    expired: int               # time_limit 1, ended long ago: the expired tab
    plain2: int                # tenant 2's
    clock: dict[int, int]      # member -> end E (unix seconds) of its clock coupon
    ends: list[int]


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def add_coupon(conn: asyncpg.Connection, uniacid: int, name: str, *, use_type: int = 0,
                     storenames: list[str] | None = None, conditions: dict | None = None,
                     time_limit: int = 0, time_start: dt.datetime | None = None,
                     time_end: dt.datetime | None = None) -> int:
    return await conn.fetchval(
        "INSERT INTO yz_coupon (uniacid, name, coupon_method, deduct, enough, use_type,"
        " storenames, use_conditions, time_limit, time_start, time_end)"
        " VALUES ($1, $2, 1, 10, 0, $3, $4, $5::jsonb, $6, $7, $8) RETURNING id",
        uniacid, name, use_type, storenames,
        None if conditions is None else json.dumps(conditions), time_limit, time_start, time_end)


async def add_member_coupon(conn: asyncpg.Connection, uid: int, coupon_id: int,
                            get_time: dt.datetime, used: int = 0) -> int:
    return await conn.fetchval(
        "INSERT INTO yz_member_coupon (uniacid, uid, coupon_id, used, use_time, get_time)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        UNIACID[uid], uid, coupon_id, used, get_time if used else None, get_time)


async def arrange(conn: asyncpg.Connection, ends: list[int]) -> World:
    now = time.time()
    await conn.execute(
        "INSERT INTO yz_tenant_setting (uniacid, coupon_transfer) VALUES (1, false), (2, true)")
    await conn.executemany("INSERT INTO yz_member (uid, uniacid) VALUES ($1, $2)",
                           list(UNIACID.items()))
    await conn.executemany("INSERT INTO yz_store (id, uniacid, store_name) VALUES ($1, 1, $2)",
                           [(STORES[0], "北门店"), (STORES[1], "南门店")])
    await conn.execute("INSERT INTO yz_goods (id, uniacid, title) VALUES ($1, 1, '招牌蛋糕')",
                       GOODS)
    await conn.executemany("INSERT INTO yz_hotel (id, uniacid, hotel_name) VALUES ($1, 1, $2)",
                           [(HOTELS[0], "湖景酒店"), (HOTELS[1], "山景酒店")])
    world = World(
        plain=await add_coupon(conn, 1, "平台券"),
        store4=await add_coupon(conn, 1, "门店券", use_type=4, storenames=["门店甲", "门店乙"]),
        hotel7=await add_coupon(conn, 1, "酒店券", use_type=7),
        cond9=await add_coupon(conn, 1, "商品和门店券", use_type=9, conditions={
            "is_all_store": 0, "store_ids": list(STORES), "is_all_good": 0,
            "good_ids": [GOODS]}),
        expired=await add_coupon(conn, 1, "过期券", time_limit=1, time_start=_ts(now - 90 * 86400),
                                 time_end=_ts(now - 30 * 86400)),
        plain2=await add_coupon(conn, 2, "二号商户券"),
        clock={}, ends=sorted(ends),
    )
    await conn.executemany("INSERT INTO yz_coupon_hotel (coupon_id, hotel_id) VALUES ($1, $2)",
                           [(world.hotel7, h) for h in HOTELS])
    for n, uid in enumerate(TENANT1):
        base = now - 3600 * (n + 2)
        for k, coupon in enumerate((world.plain, world.store4, world.hotel7, world.cond9,
                                    world.plain, world.expired)):
            await add_member_coupon(conn, uid, coupon, _ts(base + 60 * k))
        for k in range(2):
            await add_member_coupon(conn, uid, world.plain, _ts(base - 600 * (k + 1)), used=1)
    for uid in TENANT2:
        for k in range(3):
            await add_member_coupon(conn, uid, world.plain2, _ts(now - 7200 + 60 * k))
        await add_member_coupon(conn, uid, world.plain2, _ts(now - 9000), used=1)
    # The clock: one coupon per end, each held by a member of tenant 1.
    for n, end in enumerate(world.ends):
        uid = TENANT1[n % len(TENANT1)]
        coupon = await add_coupon(conn, 1, f"限时券{n}", time_limit=1,
                                  time_start=_ts(now - 86400), time_end=_ts(end))
        await add_member_coupon(conn, uid, coupon, _ts(now - 1800 + n))
        world.clock[uid] = end
    await conn.executemany(
        "INSERT INTO yz_wecom_contact (uniacid, external_userid, staff_userid, uid)"
        " VALUES (1, $1, $2, $3)", [(CONTACT, staff, TENANT1[0]) for staff in CONTACT_STAFF])
    return world
