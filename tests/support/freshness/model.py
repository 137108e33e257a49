"""The model: states read with SQL of our own (not the service's statement), and what a page
must show in a state at a given whole second."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import asyncpg
import orjson

ROUTE = "plugin.wechat-chat-sidebar.frontend.controller.customer.customer.couponsOfMemberByStatusV2"
TENANT1 = (11, 12, 13, 14, 15, 16)
TENANT2 = (21,)
UNIACID = {**dict.fromkeys(TENANT1, 1), **dict.fromkeys(TENANT2, 2)}
CONTACT = "wm_fresh"                     # the WeCom contact re-pointed between members
CONTACT_STAFF = ("staff-c1", "staff-c2")  # both follow it (one UPDATE re-points both rows)
CONTACT_TARGET = "contact"
STORES = (501, 502)
GOODS = 601
HOTELS = (701, 702)
# coupon_type -> use_types it selects (docs/CONTRACT.md), for the ones read here.
TYPE_USE: dict[int, tuple[int, ...] | None] = {0: None, 2: (4, 5), 3: (6, 7), 9: (9,)}
NEVER = math.inf

Page = tuple[Any, int, int, int, int]   # target (uid or CONTACT_TARGET), status, type, page, size
Sig = tuple[bool, int, tuple[tuple[int, str, str], ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    id: int
    used: int
    get_time: dt.datetime
    end: int | None        # unix seconds (time_limit 1), None: never expires
    name: str
    use_type: int
    api_limit: str


@dataclasses.dataclass(frozen=True, slots=True)
class State:
    members: dict[int, tuple[Row, ...]]
    transfer: dict[int, bool]
    contact: int


SNAPSHOT_ROWS = """
SELECT mc.uid, mc.id, mc.used, mc.get_time,
       CASE WHEN c.time_limit = 1 THEN floor(extract(epoch FROM c.time_end))::bigint END AS end_s,
       c.name, c.use_type,
       CASE c.use_type
         WHEN 0 THEN '商城通用'
         WHEN 4 THEN '适用于下列门店: ' || coalesce(array_to_string(c.storenames, ','), '')
         WHEN 7 THEN '适用于下列酒店: ' || coalesce((
             SELECT string_agg(h.hotel_name, ',' ORDER BY h.id)
             FROM yz_coupon_hotel AS ch JOIN yz_hotel AS h ON h.id = ch.hotel_id
             WHERE ch.coupon_id = c.id AND h.uniacid = c.uniacid), '')
         WHEN 9 THEN coalesce(nullif(concat_ws('、',
             '门店:' || (SELECT string_agg(s.store_name, ',' ORDER BY s.id) FROM yz_store AS s
                        WHERE s.uniacid = c.uniacid AND s.id IN (
                            SELECT x::bigint FROM jsonb_array_elements_text(
                                c.use_conditions -> 'store_ids') AS x)),
             '商品:' || (SELECT string_agg(g.title, ',' ORDER BY g.id) FROM yz_goods AS g
                        WHERE g.uniacid = c.uniacid AND g.id IN (
                            SELECT x::bigint FROM jsonb_array_elements_text(
                                c.use_conditions -> 'good_ids') AS x))), ''), '无适用范围')
       END AS api_limit
FROM yz_member_coupon AS mc
JOIN yz_coupon AS c ON c.id = mc.coupon_id AND c.uniacid = mc.uniacid
WHERE mc.uid = ANY($1::bigint[]) AND mc.is_member_deleted = 0
"""
SNAPSHOT_SETTINGS = """
SELECT (SELECT coupon_transfer FROM yz_tenant_setting WHERE uniacid = 1) AS t1,
       (SELECT coupon_transfer FROM yz_tenant_setting WHERE uniacid = 2) AS t2,
       (SELECT min(uid) FROM yz_wecom_contact WHERE uniacid = 1 AND external_userid = $1) AS c
"""


async def snapshot(conn: asyncpg.Connection, previous: State | None) -> State:
    rows = await conn.fetch(SNAPSHOT_ROWS, list(UNIACID))
    settings = await conn.fetchrow(SNAPSHOT_SETTINGS, CONTACT)
    grouped: dict[int, list[Row]] = {uid: [] for uid in UNIACID}
    for r in rows:
        grouped[r["uid"]].append(Row(r["id"], r["used"], r["get_time"], r["end_s"], r["name"],
                                     r["use_type"], r["api_limit"]))
    members = {}
    for uid, found in grouped.items():
        found.sort(key=lambda row: row.id)
        rows_now = tuple(found)
        # Unchanged members keep the previous tuple: the page model memoises on it.
        if previous is not None and previous.members[uid] == rows_now:
            rows_now = previous.members[uid]
        members[uid] = rows_now
    return State(members, {1: bool(settings["t1"]), 2: bool(settings["t2"])}, settings["c"])


def in_tab(row: Row, status: int, now_s: int) -> bool:
    if status == 3:
        return row.used == 1
    if row.used:
        return False
    unused = row.end is None or row.end >= now_s   # expired once now > end (whole seconds)
    return unused if status == 1 else not unused


class Model:
    """What a page must show in a state at a given whole second, memoised."""

    def __init__(self) -> None:
        self._memo: dict[tuple, Sig] = {}

    def page(self, state: State, page: Page, now_s: int) -> Sig:
        target, status, coupon_type, number, size = page
        uid = state.contact if target == CONTACT_TARGET else target
        rows = state.members[uid]
        transfer = state.transfer[UNIACID[uid]]
        key = (id(rows), transfer, status, coupon_type, number, size, now_s)
        found = self._memo.get(key)
        if found is None:
            uses = TYPE_USE[coupon_type]
            tab = [r for r in rows if in_tab(r, status, now_s)
                   and (uses is None or r.use_type in uses)]
            tab.sort(key=lambda r: (r.get_time, r.id), reverse=True)
            lo = (number - 1) * size
            found = (transfer, len(tab),
                     tuple((r.id, r.name, r.api_limit) for r in tab[lo:lo + size]))
            self._memo[key] = found
        return found


def observed(body: bytes) -> Sig | None:
    try:
        data = orjson.loads(body)["data"]
        return (data["set"]["transfer"], data["total"],
                tuple((c["id"], c["belongs_to_coupon"]["name"], c["api_limit"])
                      for c in data["data"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
