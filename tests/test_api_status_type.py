"""Status tabs × coupon types, time boundaries, near expiration, tenant plugins, ordering,
paging, `api_limit` and the one-round-trip promise, all through the endpoint on real PostgreSQL.

Expected results come from small hand-written tables (which tab a row belongs in, whether it is
near expiration), never from re-deriving the service's SQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

import service.keys
from tests.conftest import NOW, SHANGHAI, token_for
from tests.helpers import coupons, items_of

UTC = dt.UTC
# Long-lived: several tests move the clock days or decades past NOW.
TOKEN = token_for(1, 1, ttl=100 * 366 * 86400)
LABELS = ["全部", "平台", "门店", "酒店", "指定商品", "分类商品", "兑换券", "满减券", "折扣券",
          "平台商品和门店", "快过期"]


def sh(*parts: int) -> dt.datetime:
    """A wall-clock time in Asia/Shanghai."""
    return dt.datetime(*parts, tzinfo=SHANGHAI)


async def fetch(client, status: int = 1, coupon_type: int = 0, token: str = TOKEN,
                **params: Any) -> dict[str, Any]:
    params.setdefault("pagesize", 50)
    return await coupons(client, token, status_request=status, coupon_type=coupon_type, **params)


async def ids_of(client, status: int = 1, coupon_type: int = 0, token: str = TOKEN,
                 **params: Any) -> list[int]:
    return [item["id"] for item in items_of(await fetch(client, status, coupon_type, token,
                                                          **params))]


async def item_by_id(client, mc_id: int, status: int = 1, **params: Any) -> dict[str, Any]:
    found = [i for i in items_of(await fetch(client, status, 0, **params)) if i["id"] == mc_id]
    assert len(found) == 1, f"member coupon {mc_id} not in status {status}"
    return found[0]


# ---------------------------------------------------------------------------------------------
# 1. The status × type matrix
# ---------------------------------------------------------------------------------------------

# Timing presets at NOW = 2026-06-15 10:00:00 (Shanghai): coupon columns and the get_time.
DEFAULT_GET = sh(2026, 6, 14, 10, 0, 0)
TIMINGS: dict[str, tuple[dict[str, Any], dt.datetime]] = {
    # fixed range ending far in the future
    "FAR": ({"time_limit": 1, "time_start": sh(2026, 6, 1),
             "time_end": sh(2026, 12, 31, 23, 59, 59)}, DEFAULT_GET),
    # time_days 0: never expires
    "NEVER": ({"time_limit": 0, "time_days": 0}, sh(2025, 1, 1, 8, 0, 0)),
    # 30 days after 2026-06-10: ends 2026-07-10 23:59:59
    "DAYS_FAR": ({"time_limit": 0, "time_days": 30}, sh(2026, 6, 10, 15, 0, 0)),
    # fixed range ending in 2 days 14 hours: within the 3-day window
    "NEAR_FIXED": ({"time_limit": 1, "time_start": sh(2026, 6, 1),
                    "time_end": sh(2026, 6, 17, 23, 59, 59)}, DEFAULT_GET),
    # 2 days after 2026-06-14: ends 2026-06-16 23:59:59
    "NEAR_DAYS": ({"time_limit": 0, "time_days": 2}, sh(2026, 6, 14, 9, 0, 0)),
    # 1 day after 2026-06-14 09:00: ends today 23:59:59, although 25 hours have passed
    "NEAR_TODAY": ({"time_limit": 0, "time_days": 1}, sh(2026, 6, 14, 9, 0, 0)),
    # fixed range that ended on 2026-06-10
    "EXP_FIXED": ({"time_limit": 1, "time_start": sh(2026, 5, 1),
                   "time_end": sh(2026, 6, 10, 23, 59, 59)}, DEFAULT_GET),
    # 5 days after 2026-06-01: ended 2026-06-06 23:59:59
    "EXP_DAYS": ({"time_limit": 0, "time_days": 5}, sh(2026, 6, 1, 12, 0, 0)),
    # 1 day after 2026-06-13 20:00: ended yesterday 23:59:59 (less than 24h after receipt + 1 day)
    "EXP_YESTERDAY": ({"time_limit": 0, "time_days": 1}, sh(2026, 6, 13, 20, 0, 0)),
}


@dataclasses.dataclass(frozen=True)
class MC:
    id: int
    use_type: int
    method: int
    timing: str
    used: int = 0
    deleted: int = 0
    tab: int | None = 1  # the tab it must show in, by hand; None: never shows
    near: int = 0  # near_expiration it must show (tab 1 only)


MATRIX = [
    MC(101, 0, 1, "FAR"),
    MC(102, 0, 2, "NEAR_FIXED", near=1),
    MC(103, 0, 1, "EXP_FIXED", tab=2),
    MC(104, 0, 2, "FAR", used=1, tab=3),
    MC(105, 0, 1, "FAR", used=1, deleted=1, tab=None),
    MC(111, 1, 2, "NEVER"),
    MC(112, 1, 1, "EXP_DAYS", tab=2),
    MC(113, 1, 1, "EXP_FIXED", used=1, tab=3),
    MC(121, 2, 1, "DAYS_FAR"),
    MC(122, 2, 2, "NEAR_DAYS", near=1),
    MC(123, 2, 1, "FAR", deleted=1, tab=None),
    MC(124, 2, 2, "EXP_YESTERDAY", tab=2),
    MC(131, 3, 2, "FAR"),
    MC(132, 3, 1, "EXP_YESTERDAY", tab=2),
    MC(133, 3, 1, "NEAR_TODAY", near=1),
    MC(141, 4, 1, "FAR"),
    MC(142, 4, 2, "NEVER", used=1, tab=3),
    MC(143, 4, 2, "EXP_FIXED", tab=2),
    MC(151, 5, 2, "NEAR_FIXED", near=1),
    MC(152, 5, 1, "EXP_FIXED", tab=2),
    MC(153, 5, 1, "NEVER"),
    MC(161, 6, 1, "NEVER"),
    MC(162, 6, 2, "EXP_DAYS", tab=2),
    MC(163, 6, 2, "NEAR_TODAY", used=1, tab=3),
    MC(171, 7, 2, "FAR"),
    MC(172, 7, 1, "FAR", used=1, tab=3),
    MC(173, 7, 1, "NEAR_FIXED", near=1),
    MC(181, 8, 1, "DAYS_FAR"),
    MC(182, 8, 2, "EXP_FIXED", tab=2),
    MC(183, 8, 1, "NEAR_DAYS", near=1),
    MC(184, 8, 2, "NEAR_FIXED", deleted=1, tab=None),
    MC(191, 9, 2, "FAR"),
    MC(192, 9, 1, "NEAR_FIXED", near=1),
    MC(193, 9, 2, "EXP_FIXED", used=1, tab=3),
    MC(194, 9, 1, "EXP_FIXED", deleted=1, tab=None),
]

# The contract's coupon_type table, by hand: (use_types or None, coupon_method or None).
COUPON_TYPES: dict[int, tuple[set[int] | None, int | None]] = {
    0: (None, None), 1: ({0}, None), 2: ({4, 5}, None), 3: ({6, 7}, None), 4: ({2}, None),
    5: ({1}, None), 6: ({8}, None), 7: (None, 1), 8: (None, 2), 9: ({9}, None),
    10: (None, None),
}


def expected_ids(status: int, coupon_type: int) -> set[int]:
    use_types, method = COUPON_TYPES[coupon_type]
    out = set()
    for mc in MATRIX:
        if mc.tab != status:
            continue
        if use_types is not None and mc.use_type not in use_types:
            continue
        if method is not None and mc.method != method:
            continue
        if coupon_type == 10 and not (status == 1 and mc.near):
            continue
        out.add(mc.id)
    return out


USE_TIME = NOW - dt.timedelta(hours=2)


async def build_matrix(rows) -> None:
    await rows.member(1, 1)
    for mc in MATRIX:
        fields, get_time = TIMINGS[mc.timing]
        cid = await rows.coupon(1, use_type=mc.use_type, coupon_method=mc.method,
                                name=f"券{mc.id}", **fields)
        await rows.member_coupon(cid, id=mc.id, used=mc.used, deleted=mc.deleted,
                                 get_time=get_time, use_time=USE_TIME if mc.used else None)


def test_matrix_table_covers_every_use_type_and_method_in_every_state():
    # Guards the hand table itself: each use_type has both methods among visible rows.
    for use_type in range(10):
        methods = {mc.method for mc in MATRIX if mc.use_type == use_type and mc.tab is not None}
        assert methods == {1, 2}, use_type
    assert {mc.tab for mc in MATRIX} == {1, 2, 3, None}
    assert expected_ids(1, 10) == {102, 122, 133, 151, 173, 183, 192}
    assert expected_ids(2, 0) == {103, 112, 124, 132, 143, 152, 162, 182}
    assert expected_ids(3, 0) == {104, 113, 142, 163, 172, 193}


@pytest.mark.parametrize("coupon_type", range(11))
@pytest.mark.parametrize("status", [1, 2, 3])
async def test_status_type_matrix(client, rows, status, coupon_type):
    await build_matrix(rows)
    body = await fetch(client, status, coupon_type)
    items = items_of(body)
    want = expected_ids(status, coupon_type)
    assert {i["id"] for i in items} == want
    assert len(items) == len(want) == body["data"]["total"]
    assert body["data"]["last_page"] == 1
    assert body["data"]["search_array"] == (LABELS if status == 1 else LABELS[:10])
    if coupon_type == 10 and status in (2, 3):
        assert items == []
    by_id = {mc.id: mc for mc in MATRIX}
    for item in items:
        mc = by_id[item["id"]]
        assert item["belongs_to_coupon"]["use_type"] == mc.use_type
        assert item["belongs_to_coupon"]["coupon_method"] == mc.method
        assert item["near_expiration"] == (mc.near if status == 1 else 0)
        assert item["used"] == (1 if status == 3 else 0)
        assert item["use_time"] == (int(USE_TIME.timestamp()) if status == 3 else 0)


async def test_matrix_near_tab_in_response_order(client, rows):
    await build_matrix(rows)
    # get_time desc, then id desc: NEAR_DAYS/NEAR_TODAY rows got theirs 2026-06-14 09:00,
    # the NEAR_FIXED ones at 10:00.
    assert await ids_of(client, 1, 10) == [192, 173, 151, 102, 183, 133, 122]


# ---------------------------------------------------------------------------------------------
# 2. The end-of-day boundary, with the injectable clock
# ---------------------------------------------------------------------------------------------


async def test_fixed_end_today_moves_from_unused_to_expired_at_midnight(client, rows, clock):
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=1, time_start=sh(2026, 6, 1),
                            time_end=sh(2026, 6, 15, 23, 59, 59))
    mc = await rows.member_coupon(cid, get_time=sh(2026, 6, 2, 12, 0, 0))

    clock.set(sh(2026, 6, 15, 23, 59, 58))
    assert await ids_of(client, 1) == [mc]
    clock.set(sh(2026, 6, 15, 23, 59, 59))
    assert await ids_of(client, 1) == [mc]
    assert await ids_of(client, 1, 10) == [mc]
    assert await ids_of(client, 2) == []
    item = await item_by_id(client, mc, 1)
    assert item["near_expiration"] == 1
    assert item["time_end"] == "2026-06-15 23:59:59"
    assert item["time_start"] == "2026-06-01"

    clock.set(sh(2026, 6, 16, 0, 0, 0))
    assert await ids_of(client, 1) == []
    assert await ids_of(client, 1, 10) == []
    assert await ids_of(client, 2) == [mc]
    item = await item_by_id(client, mc, 2)
    assert item["near_expiration"] == 0
    assert item["time_end"] == "2026-06-15 23:59:59"


async def test_status_follows_clock_back_and_forth_on_the_same_client(client, rows, clock):
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=1, time_start=sh(2026, 6, 1),
                            time_end=sh(2026, 6, 15, 23, 59, 59))
    mc = await rows.member_coupon(cid)
    clock.set(sh(2026, 6, 16, 0, 0, 0))
    assert await ids_of(client, 2) == [mc]
    clock.advance(-1)
    assert await ids_of(client, 2) == []
    assert await ids_of(client, 1) == [mc]
    clock.advance(1)
    assert await ids_of(client, 1) == []


async def test_time_days_end_is_end_of_nth_day_after_receipt(client, rows, clock):
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=0, time_days=3)
    mc = await rows.member_coupon(cid, get_time=sh(2026, 6, 15, 8, 0, 0))

    item = await item_by_id(client, mc, 1)
    assert item["get_time"] == "2026-06-15 08:00:00"
    assert item["time_start"] == "2026-06-15"
    assert item["time_end"] == "2026-06-18 23:59:59"
    assert item["belongs_to_coupon"]["time_days"] == 3
    assert item["belongs_to_coupon"]["time_limit"] == 0

    clock.set(sh(2026, 6, 18, 23, 59, 59))
    assert await ids_of(client, 1) == [mc]
    clock.set(sh(2026, 6, 19, 0, 0, 0))
    assert await ids_of(client, 1) == []
    assert await ids_of(client, 2) == [mc]
    assert (await item_by_id(client, mc, 2))["time_end"] == "2026-06-18 23:59:59"


async def test_time_days_counts_days_in_shanghai_for_a_late_utc_evening_receipt(
    client, rows, clock
):
    # 2026-06-14 17:30 UTC is already 2026-06-15 01:30 in Shanghai: the day of receipt is the
    # 15th, so one day later ends 2026-06-16 23:59:59 Shanghai (not the 15th's end in UTC).
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=0, time_days=1)
    mc = await rows.member_coupon(cid, get_time=dt.datetime(2026, 6, 14, 17, 30, 0, tzinfo=UTC))

    item = await item_by_id(client, mc, 1)
    assert item["get_time"] == "2026-06-15 01:30:00"
    assert item["time_start"] == "2026-06-15"
    assert item["time_end"] == "2026-06-16 23:59:59"

    clock.set(sh(2026, 6, 16, 8, 0, 0))  # past a UTC-day end (2026-06-15 23:59:59 UTC)
    assert await ids_of(client, 1) == [mc]
    clock.set(sh(2026, 6, 16, 23, 59, 59))
    assert await ids_of(client, 1) == [mc]
    clock.set(sh(2026, 6, 17, 0, 0, 0))
    assert await ids_of(client, 1) == []
    assert await ids_of(client, 2) == [mc]


async def test_time_days_receipt_at_shanghai_midnight_and_last_second(client, rows):
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=0, time_days=2)
    first = await rows.member_coupon(cid, get_time=sh(2026, 6, 15, 0, 0, 0))
    last = await rows.member_coupon(cid, get_time=sh(2026, 6, 14, 23, 59, 59))
    a = await item_by_id(client, first, 1)
    b = await item_by_id(client, last, 1)
    assert (a["time_start"], a["time_end"]) == ("2026-06-15", "2026-06-17 23:59:59")
    assert (b["time_start"], b["time_end"]) == ("2026-06-14", "2026-06-16 23:59:59")


async def test_fixed_range_renders_in_shanghai_from_utc_instants(client, rows):
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=1,
                            time_start=dt.datetime(2026, 5, 31, 16, 0, 0, tzinfo=UTC),
                            time_end=dt.datetime(2026, 6, 30, 15, 59, 59, tzinfo=UTC))
    mc = await rows.member_coupon(cid, get_time=dt.datetime(2026, 6, 10, 20, 0, 0, tzinfo=UTC))
    item = await item_by_id(client, mc, 1)
    assert item["get_time"] == "2026-06-11 04:00:00"
    assert item["time_start"] == "2026-06-01"  # the coupon's start day, not the receipt day
    assert item["time_end"] == "2026-06-30 23:59:59"
    coupon = item["belongs_to_coupon"]
    assert coupon["time_start"] == "2026-06-01 00:00:00"
    assert coupon["time_end"] == "2026-06-30 23:59:59"
    assert coupon["time_limit"] == 1


async def test_never_expiring_coupon_renders_unlimited_and_never_expires(client, rows, clock):
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=0, time_days=0)
    mc = await rows.member_coupon(cid, get_time=sh(2020, 2, 29, 22, 15, 0))
    item = await item_by_id(client, mc, 1)
    assert item["time_end"] == "不限时间"
    assert item["time_start"] == "2020-02-29"
    assert item["near_expiration"] == 0
    clock.set(sh(2099, 12, 31, 23, 59, 59))
    assert await ids_of(client, 1) == [mc]
    assert await ids_of(client, 2) == []
    assert await ids_of(client, 1, 10) == []


# ---------------------------------------------------------------------------------------------
# 3. near_expiration
# ---------------------------------------------------------------------------------------------


async def _fixed_end(rows, end: dt.datetime, **mc_fields: Any) -> int:
    cid = await rows.coupon(1, time_limit=1, time_start=sh(2026, 1, 1), time_end=end)
    return await rows.member_coupon(cid, **mc_fields)


async def test_near_expiration_default_window_is_three_days_without_tenant_row(client, rows):
    await rows.member(1, 1)
    exact = await _fixed_end(rows, NOW + dt.timedelta(days=3))
    over = await _fixed_end(rows, NOW + dt.timedelta(days=3, seconds=1))
    soon = await _fixed_end(rows, NOW + dt.timedelta(hours=1))
    now_end = await _fixed_end(rows, NOW)
    far = await _fixed_end(rows, NOW + dt.timedelta(days=4))
    items = {i["id"]: i["near_expiration"] for i in items_of(await fetch(client, 1, 0))}
    assert items == {exact: 1, over: 0, soon: 1, now_end: 1, far: 0}
    assert set(await ids_of(client, 1, 10)) == {exact, soon, now_end}


async def test_near_expiration_uses_the_tenants_window(client, rows):
    await rows.tenant(1, near_days=5)
    await rows.member(1, 1)
    exact = await _fixed_end(rows, NOW + dt.timedelta(days=5))
    over = await _fixed_end(rows, NOW + dt.timedelta(days=5, seconds=1))
    four = await _fixed_end(rows, NOW + dt.timedelta(days=4))  # outside the default window
    items = {i["id"]: i["near_expiration"] for i in items_of(await fetch(client, 1, 0))}
    assert items == {exact: 1, over: 0, four: 1}
    assert set(await ids_of(client, 1, 10)) == {exact, four}


async def test_near_expiration_window_zero_means_only_ending_now(client, rows):
    await rows.tenant(1, near_days=0)
    await rows.member(1, 1)
    now_end = await _fixed_end(rows, NOW)
    later = await _fixed_end(rows, NOW + dt.timedelta(seconds=1))
    items = {i["id"]: i["near_expiration"] for i in items_of(await fetch(client, 1, 0))}
    assert items == {now_end: 1, later: 0}


async def test_another_tenants_window_does_not_apply(client, rows):
    await rows.tenant(2, near_days=10)
    await rows.member(1, 1)
    mc = await _fixed_end(rows, NOW + dt.timedelta(days=5))
    assert (await item_by_id(client, mc, 1))["near_expiration"] == 0
    assert await ids_of(client, 1, 10) == []


async def test_near_expiration_boundary_follows_the_clock_for_time_days(client, rows, clock):
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=0, time_days=3)
    mc = await rows.member_coupon(cid, get_time=sh(2026, 6, 15, 8, 0, 0))  # ends 06-18 23:59:59
    clock.set(sh(2026, 6, 15, 23, 59, 58))  # 3 days + 1 second before the end
    assert (await item_by_id(client, mc, 1))["near_expiration"] == 0
    assert await ids_of(client, 1, 10) == []
    clock.set(sh(2026, 6, 15, 23, 59, 59))  # exactly 3 days before
    assert (await item_by_id(client, mc, 1))["near_expiration"] == 1
    assert await ids_of(client, 1, 10) == [mc]


async def test_expired_and_used_rows_show_near_expiration_zero(client, rows):
    await rows.member(1, 1)
    expired = await _fixed_end(rows, NOW - dt.timedelta(seconds=1))
    used_soon = await _fixed_end(rows, NOW + dt.timedelta(days=1), used=1, use_time=NOW)
    used_expired = await _fixed_end(rows, NOW - dt.timedelta(days=1), used=1, use_time=NOW)
    unused_soon = await _fixed_end(rows, NOW + dt.timedelta(days=1))
    expired_items = items_of(await fetch(client, 2, 0))
    assert [(i["id"], i["near_expiration"]) for i in expired_items] == [(expired, 0)]
    used_items = items_of(await fetch(client, 3, 0))
    assert {i["id"]: i["near_expiration"] for i in used_items} == {used_soon: 0, used_expired: 0}
    assert (await item_by_id(client, unused_soon, 1))["near_expiration"] == 1
    assert await ids_of(client, 2, 10) == []
    assert await ids_of(client, 3, 10) == []
    assert await ids_of(client, 1, 10) == [unused_soon]


# ---------------------------------------------------------------------------------------------
# 4. Tenant plugins and set.transfer
# ---------------------------------------------------------------------------------------------


async def _plugin_rows(rows) -> dict[str, int]:
    """For use_types 0, 4, 5, 6, 7: one unused, one expired, one used member coupon each."""
    await rows.member(1, 1)
    out: dict[str, int] = {}
    for use_type in (0, 4, 5, 6, 7):
        cid = await rows.coupon(1, use_type=use_type, time_limit=1, time_start=sh(2026, 1, 1),
                                time_end=sh(2026, 12, 31, 23, 59, 59), storenames=["店"])
        gone = await rows.coupon(1, use_type=use_type, time_limit=1, time_start=sh(2026, 1, 1),
                                 time_end=sh(2026, 6, 1, 23, 59, 59), storenames=["店"])
        out[f"{use_type}-unused"] = await rows.member_coupon(cid)
        out[f"{use_type}-expired"] = await rows.member_coupon(gone)
        out[f"{use_type}-used"] = await rows.member_coupon(cid, used=1, use_time=NOW)
    return out


@pytest.mark.parametrize("status", [1, 2, 3])
async def test_store_plugin_off_hides_store_coupons_in_every_tab(client, rows, status):
    await rows.tenant(1, store_plugin=False, hotel_plugin=True)
    made = await _plugin_rows(rows)
    state = {1: "unused", 2: "expired", 3: "used"}[status]
    assert set(await ids_of(client, status, 0)) == {made[f"{u}-{state}"] for u in (0, 6, 7)}
    body = await fetch(client, status, 2)
    assert items_of(body) == [] and body["data"]["total"] == 0 and body["data"]["last_page"] == 1
    assert set(await ids_of(client, status, 3)) == {made[f"{u}-{state}"] for u in (6, 7)}
    assert set(await ids_of(client, status, 7)) == {made[f"{u}-{state}"] for u in (0, 6, 7)}


@pytest.mark.parametrize("status", [1, 2, 3])
async def test_hotel_plugin_off_hides_hotel_coupons_in_every_tab(client, rows, status):
    await rows.tenant(1, store_plugin=True, hotel_plugin=False)
    made = await _plugin_rows(rows)
    state = {1: "unused", 2: "expired", 3: "used"}[status]
    assert set(await ids_of(client, status, 0)) == {made[f"{u}-{state}"] for u in (0, 4, 5)}
    body = await fetch(client, status, 3)
    assert items_of(body) == [] and body["data"]["total"] == 0 and body["data"]["last_page"] == 1
    assert set(await ids_of(client, status, 2)) == {made[f"{u}-{state}"] for u in (4, 5)}


@pytest.mark.parametrize("setting", ["no row", "both on", "other tenant off"])
async def test_plugins_on_show_store_and_hotel_coupons(client, rows, setting):
    if setting == "both on":
        await rows.tenant(1, store_plugin=True, hotel_plugin=True)
    elif setting == "other tenant off":
        await rows.tenant(2, store_plugin=False, hotel_plugin=False)
    made = await _plugin_rows(rows)
    for status, state in ((1, "unused"), (2, "expired"), (3, "used")):
        assert set(await ids_of(client, status, 0)) == {
            made[f"{u}-{state}"] for u in (0, 4, 5, 6, 7)}
        assert set(await ids_of(client, status, 2)) == {made[f"{u}-{state}"] for u in (4, 5)}
        assert set(await ids_of(client, status, 3)) == {made[f"{u}-{state}"] for u in (6, 7)}


async def _use_type_9_rows(rows) -> tuple[int, int]:
    await rows.member(1, 1)
    await rows.store(1, "一号店")
    await rows.goods(10, "商品A")
    await rows.goods(11, "商品B")
    all_cid = await rows.coupon(1, use_type=9, use_conditions={
        "is_all_store": 1, "store_ids": [], "is_all_good": 1, "good_ids": []})
    some_cid = await rows.coupon(1, use_type=9, use_conditions={
        "is_all_store": 0, "store_ids": [1], "is_all_good": 0, "good_ids": [10, 11]})
    return await rows.member_coupon(all_cid), await rows.member_coupon(some_cid)


async def test_use_type_9_api_limit_drops_stores_when_store_plugin_off(client, rows):
    await rows.tenant(1, store_plugin=False)
    all_mc, some_mc = await _use_type_9_rows(rows)
    items = {i["id"]: i for i in items_of(await fetch(client, 1, 9))}
    assert set(items) == {all_mc, some_mc}  # use_type 9 itself is not hidden
    assert items[all_mc]["api_limit"] == "平台自营商品"
    assert items[some_mc]["api_limit"] == "商品:商品A,商品B"
    assert items[some_mc]["belongs_to_coupon"]["coupon_type_name"] == "商品和门店"


async def test_use_type_9_api_limit_keeps_stores_when_store_plugin_on(client, rows):
    await rows.tenant(1, store_plugin=True)
    all_mc, some_mc = await _use_type_9_rows(rows)
    items = {i["id"]: i for i in items_of(await fetch(client, 1, 9))}
    assert items[all_mc]["api_limit"] == "全部门店、平台自营商品"
    assert items[some_mc]["api_limit"] == "门店:一号店、商品:商品A,商品B"


@pytest.mark.parametrize(
    ("tenants", "expected"),
    [
        ([], False),
        ([(1, True)], True),
        ([(1, False)], False),
        ([(2, True)], False),  # another tenant's setting does not leak
        ([(1, True), (2, False)], True),
    ],
)
@pytest.mark.parametrize("status", [1, 2, 3])
async def test_set_transfer_follows_the_tenant_row(client, rows, tenants, expected, status):
    for uniacid, transfer in tenants:
        await rows.tenant(uniacid, transfer=transfer)
    await rows.member(1, 1)
    body = await fetch(client, status, 0)
    assert body["data"]["set"] == {"transfer": expected}


# ---------------------------------------------------------------------------------------------
# 5. Deleted rows, other members, other tenants
# ---------------------------------------------------------------------------------------------


async def test_deleted_rows_never_show_in_any_tab(client, rows, db):
    await rows.member(1, 1)
    far = await rows.coupon(1, use_type=0, coupon_method=1, time_limit=1, time_start=sh(2026, 1, 1),
                            time_end=sh(2026, 12, 31, 23, 59, 59))
    near = await rows.coupon(1, use_type=0, coupon_method=1, time_limit=1,
                             time_start=sh(2026, 1, 1), time_end=NOW + dt.timedelta(days=1))
    gone = await rows.coupon(1, use_type=0, coupon_method=1, time_limit=1,
                             time_start=sh(2026, 1, 1), time_end=sh(2026, 6, 1))
    far_mc = await rows.member_coupon(far)
    near_mc = await rows.member_coupon(near)
    visible = {
        1: {far_mc, near_mc},
        2: {await rows.member_coupon(gone)},
        3: {await rows.member_coupon(far, used=1, use_time=NOW)},
    }
    deleted = {
        await rows.member_coupon(far, deleted=1),
        await rows.member_coupon(near, deleted=1),
        await rows.member_coupon(gone, deleted=1),
        await rows.member_coupon(far, used=1, use_time=NOW, deleted=1),
        await rows.member_coupon(gone, used=1, use_time=NOW, deleted=1),
    }
    for status in (1, 2, 3):
        for coupon_type in range(11):
            got = set(await ids_of(client, status, coupon_type))
            assert not got & deleted, (status, coupon_type)
            if coupon_type in (0, 1, 7):
                assert got == visible[status], (status, coupon_type)
    assert await ids_of(client, 1, 10) == [near_mc]
    body = await fetch(client, 1, 0)
    assert body["data"]["total"] == 2  # deleted rows are not counted either


async def test_other_members_and_other_tenants_coupons_never_show(client, rows):
    await rows.member(1, 1)
    await rows.member(3, 1)  # same tenant, other member
    await rows.member(2, 2)  # other tenant
    end = {"time_limit": 1, "time_start": sh(2026, 1, 1), "time_end": sh(2026, 12, 31, 23, 59, 59)}
    mine = await rows.coupon(1, **end)
    theirs = await rows.coupon(2, **end)
    own = await rows.member_coupon(mine, uid=1, uniacid=1)
    own_used = await rows.member_coupon(mine, uid=1, uniacid=1, used=1, use_time=NOW)
    other_member = await rows.member_coupon(mine, uid=3, uniacid=1)
    other_member_used = await rows.member_coupon(mine, uid=3, uniacid=1, used=1, use_time=NOW)
    other_tenant = await rows.member_coupon(theirs, uid=2, uniacid=2)
    # Stray rows naming member 1 under tenant 2, or a tenant-2 coupon under tenant 1.
    stray_tenant = await rows.member_coupon(theirs, uid=1, uniacid=2)
    stray_coupon = await rows.member_coupon(theirs, uid=1, uniacid=1)

    assert await ids_of(client, 1, 0) == [own]
    assert await ids_of(client, 3, 0) == [own_used]
    assert await ids_of(client, 2, 0) == []
    assert (await fetch(client, 1, 0))["data"]["total"] == 1
    # The other rows are real and visible to their owners.
    assert await ids_of(client, 1, 0, token=token_for(1, 3)) == [other_member]
    assert await ids_of(client, 3, 0, token=token_for(1, 3)) == [other_member_used]
    assert await ids_of(client, 1, 0, token=token_for(2, 2)) == [other_tenant]
    assert stray_tenant not in await ids_of(client, 1, 0)
    assert stray_coupon not in await ids_of(client, 1, 0)


# ---------------------------------------------------------------------------------------------
# 6. Ordering
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [1, 2, 3])
async def test_order_is_get_time_desc_then_id_desc(client, rows, status):
    await rows.member(1, 1)
    if status == 2:
        cid = await rows.coupon(1, time_limit=1, time_start=sh(2026, 1, 1), time_end=sh(2026, 6, 1))
    else:
        cid = await rows.coupon(1, time_limit=0, time_days=0)
    used = 1 if status == 3 else 0
    use_time = NOW if used else None
    t_new, t_mid, t_old = sh(2026, 6, 14, 12, 0, 0), sh(2026, 6, 10, 9, 0, 0), sh(2025, 1, 1)
    # Inserted out of order, ids chosen so that id order and get_time order disagree.
    for mc_id, get_time in [
        (7, t_mid), (3, t_new), (20, t_old), (9, t_mid), (5, t_new), (8, t_mid),
        # the same instant as t_new, written in UTC: a tie with 3 and 5
        (4, dt.datetime(2026, 6, 14, 4, 0, 0, tzinfo=UTC)),
        (1, t_new + dt.timedelta(seconds=1)),
        (30, t_old - dt.timedelta(seconds=1)),
    ]:
        await rows.member_coupon(cid, id=mc_id, get_time=get_time, used=used, use_time=use_time)
    expected = [1, 5, 4, 3, 9, 8, 7, 20, 30]
    assert await ids_of(client, status, 0) == expected
    # Pages continue the same order, ties split across a page boundary included.
    pages = []
    for page in (1, 2, 3, 4, 5):
        pages += await ids_of(client, status, 0, page=page, pagesize=2)
    assert pages == expected


async def test_order_spans_statuses_and_types_consistently(client, rows):
    await rows.member(1, 1)
    store = await rows.coupon(1, use_type=4, coupon_method=2, time_limit=0, time_days=0)
    mall = await rows.coupon(1, use_type=0, coupon_method=2, time_limit=0, time_days=0)
    t = sh(2026, 6, 1, 10, 0, 0)
    await rows.member_coupon(store, id=50, get_time=t)
    await rows.member_coupon(mall, id=60, get_time=t)
    await rows.member_coupon(store, id=40, get_time=t + dt.timedelta(minutes=1))
    await rows.member_coupon(mall, id=10, get_time=t - dt.timedelta(minutes=1))
    assert await ids_of(client, 1, 0) == [40, 60, 50, 10]
    assert await ids_of(client, 1, 8) == [40, 60, 50, 10]
    assert await ids_of(client, 1, 2) == [40, 50]
    assert await ids_of(client, 1, 1) == [60, 10]


# ---------------------------------------------------------------------------------------------
# 7. Paging
# ---------------------------------------------------------------------------------------------


async def _many(rows, n: int) -> list[int]:
    """n unused never-expiring member coupons; returns their ids in response order."""
    await rows.member(1, 1)
    cid = await rows.coupon(1, time_limit=0, time_days=0)
    made = []
    for k in range(n):
        made.append(await rows.member_coupon(cid, get_time=sh(2026, 1, 1) + dt.timedelta(
            minutes=k)))
    return made[::-1]


def _page_meta(body: dict[str, Any]) -> dict[str, Any]:
    data = body["data"]
    page = data["data"] if isinstance(data["data"], dict) else data
    return {k: page[k] for k in ("current_page", "per_page", "total", "last_page")}


async def test_empty_list_has_total_zero_and_last_page_one(client, rows):
    await rows.member(1, 1)
    for status in (1, 2, 3):
        for coupon_type in (0, 10):
            body = await coupons(client, TOKEN, status_request=status, coupon_type=coupon_type)
            assert items_of(body) == []
            assert _page_meta(body) == {"current_page": 1, "per_page": 15, "total": 0,
                                        "last_page": 1}


async def test_default_pagesize_is_15(client, rows):
    expected = await _many(rows, 16)
    body = await coupons(client, TOKEN, status_request=1, coupon_type=0)
    assert [i["id"] for i in items_of(body)] == expected[:15]
    assert _page_meta(body) == {"current_page": 1, "per_page": 15, "total": 16, "last_page": 2}
    body = await coupons(client, TOKEN, status_request=1, coupon_type=0, page=2)
    assert [i["id"] for i in items_of(body)] == expected[15:]
    assert _page_meta(body) == {"current_page": 2, "per_page": 15, "total": 16, "last_page": 2}


async def test_defaults_are_status_1_and_coupon_type_1(client, rows):
    await rows.member(1, 1)
    mall = await rows.coupon(1, use_type=0)
    goods = await rows.coupon(1, use_type=2)
    a = await rows.member_coupon(mall)
    await rows.member_coupon(goods)
    await rows.member_coupon(mall, used=1, use_time=NOW)
    body = await coupons(client, TOKEN)
    assert [i["id"] for i in items_of(body)] == [a]
    assert body["data"]["search_array"] == LABELS


async def test_exact_multiple_of_pagesize(client, rows):
    expected = await _many(rows, 30)
    bodies = [await coupons(client, TOKEN, status_request=1, coupon_type=0, page=p)
              for p in (1, 2, 3)]
    assert [i["id"] for i in items_of(bodies[0])] == expected[:15]
    assert [i["id"] for i in items_of(bodies[1])] == expected[15:]
    assert items_of(bodies[2]) == []
    for page, body in enumerate(bodies, start=1):
        assert _page_meta(body) == {"current_page": page, "per_page": 15, "total": 30,
                                    "last_page": 2}


async def test_one_past_a_multiple_and_far_past_the_end(client, rows):
    expected = await _many(rows, 31)
    body = await coupons(client, TOKEN, status_request=1, coupon_type=0, page=3)
    assert [i["id"] for i in items_of(body)] == expected[30:]
    assert _page_meta(body) == {"current_page": 3, "per_page": 15, "total": 31, "last_page": 3}
    body = await coupons(client, TOKEN, status_request=1, coupon_type=0, page=100000)
    assert items_of(body) == []
    assert _page_meta(body) == {"current_page": 100000, "per_page": 15, "total": 31,
                                "last_page": 3}


async def test_pagesize_50(client, rows):
    expected = await _many(rows, 51)
    body = await coupons(client, TOKEN, status_request=1, coupon_type=0, pagesize=50)
    assert [i["id"] for i in items_of(body)] == expected[:50]
    assert _page_meta(body) == {"current_page": 1, "per_page": 50, "total": 51, "last_page": 2}
    body = await coupons(client, TOKEN, status_request=1, coupon_type=0, pagesize=50, page=2)
    assert [i["id"] for i in items_of(body)] == expected[50:]
    assert _page_meta(body) == {"current_page": 2, "per_page": 50, "total": 51, "last_page": 2}


async def test_total_counts_the_tab_not_the_page(client, rows):
    await rows.member(1, 1)
    mall = await rows.coupon(1, use_type=0)
    goods = await rows.coupon(1, use_type=2)
    for _ in range(4):
        await rows.member_coupon(mall)
    for _ in range(3):
        await rows.member_coupon(goods)
    body = await coupons(client, TOKEN, status_request=1, coupon_type=4, pagesize=2)
    assert len(items_of(body)) == 2
    assert _page_meta(body) == {"current_page": 1, "per_page": 2, "total": 3, "last_page": 2}
    body = await coupons(client, TOKEN, status_request=1, coupon_type=0, pagesize=2)
    assert _page_meta(body)["total"] == 7 and _page_meta(body)["last_page"] == 4


async def test_paginator_shape(make_client, settings, rows):
    paginator = await make_client(dataclasses.replace(settings, response_shape="paginator"))
    expected = await _many(rows, 31)

    def page_of(body):
        assert isinstance(body["data"]["data"], dict)
        return body["data"]["data"]

    body = await coupons(paginator, TOKEN, shape="paginator", status_request=1, coupon_type=0,
                         page=1)
    page = page_of(body)
    assert [i["id"] for i in page["data"]] == expected[:15]
    assert {k: page[k] for k in ("current_page", "per_page", "total", "last_page", "from", "to")
            } == {"current_page": 1, "per_page": 15, "total": 31, "last_page": 3,
                  "from": 1, "to": 15}
    assert body["data"]["set"] == {"transfer": False}
    assert body["data"]["search_array"] == LABELS

    page = page_of(await coupons(paginator, TOKEN, shape="paginator", status_request=1,
                                 coupon_type=0, page=2))
    assert (page["from"], page["to"], page["current_page"]) == (16, 30, 2)
    page = page_of(await coupons(paginator, TOKEN, shape="paginator", status_request=1,
                                 coupon_type=0, page=3))
    assert (page["from"], page["to"]) == (31, 31)
    assert [i["id"] for i in page["data"]] == expected[30:]
    page = page_of(await coupons(paginator, TOKEN, shape="paginator", status_request=1,
                                 coupon_type=0, page=4))
    assert page["data"] == []
    assert (page["total"], page["last_page"], page["current_page"]) == (31, 3, 4)
    assert (page["from"], page["to"]) == (None, None)


async def test_paginator_shape_empty(make_client, settings, rows):
    paginator = await make_client(dataclasses.replace(settings, response_shape="paginator"))
    await rows.member(1, 1)
    body = await coupons(paginator, TOKEN, shape="paginator", status_request=2, coupon_type=0)
    page = body["data"]["data"]
    assert page["data"] == []
    assert (page["total"], page["last_page"], page["per_page"], page["current_page"]) == (
        0, 1, 15, 1)
    assert body["data"]["search_array"] == LABELS[:10]


@pytest.mark.parametrize(("status", "coupon_type", "page", "pagesize"),
                         [(1, 0, 1, 15), (1, 0, 2, 7), (1, 10, 1, 50), (2, 0, 1, 50),
                          (3, 0, 1, 50), (1, 0, 9, 15)])
async def test_both_shapes_carry_identical_items(make_client, settings, rows, status,
                                                 coupon_type, page, pagesize):
    await build_matrix(rows)
    extra = await rows.coupon(1, time_limit=0, time_days=0)
    for _ in range(12):
        await rows.member_coupon(extra)
    listing = await make_client(settings)
    paginator = await make_client(dataclasses.replace(settings, response_shape="paginator"))
    params = dict(status_request=status, coupon_type=coupon_type, page=page, pagesize=pagesize)
    a = await coupons(listing, TOKEN, **params)
    b = await coupons(paginator, TOKEN, shape="paginator", **params)
    assert items_of(a) == items_of(b)
    assert _page_meta(a) == _page_meta(b)
    assert a["data"]["set"] == b["data"]["set"]
    assert a["data"]["search_array"] == b["data"]["search_array"]
    if page == 1:
        assert items_of(a)  # the comparison is not between two empty lists


# ---------------------------------------------------------------------------------------------
# 8. api_limit, coupon_type_name and money through the endpoint
# ---------------------------------------------------------------------------------------------

LIMIT_CASES = [
    ("mall", {"use_type": 0}, None, "商城通用", "平台商品"),
    ("categories", {"use_type": 1, "category_ids": ["3", "4"], "categorynames": ["服装", "鞋帽"]},
     None, "适用于下列分类: 服装,鞋帽", "分类商品"),
    ("goods", {"use_type": 2, "goods_ids": ["64", "65"], "goods_names": ["苹果", "香蕉"]},
     None, "适用于下列商品: 苹果,香蕉", "指定商品"),
    ("suppliers", {"use_type": 3, "suppliernames": ["供应商甲", "供应商乙"]},
     None, "适用于下列供应商: 供应商甲,供应商乙", "供应商商品"),
    ("stores", {"use_type": 4, "storeids": ["1", "2"], "storenames": ["东店", "西店"]},
     None, "适用于下列门店: 东店,西店", "门店商品"),
    ("one store", {"use_type": 5, "storeids": ["3"], "storenames": ["南店"]},
     None, "适用于下列门店: 南店", "门店商品"),
    ("one hotel", {"use_type": 6}, [(7, "如家")], "适用于酒店 :如家", "酒店商品"),
    ("several hotels", {"use_type": 7}, [(3, "汉庭"), (4, "全季")],
     "适用于下列酒店: 汉庭,全季", "酒店商品"),
    ("another tenant's hotel is not named", {"use_type": 7},
     [(3, "汉庭"), (8, "别家的酒店", 2), (4, "全季")], "适用于下列酒店: 汉庭,全季", "酒店商品"),
    ("exchange", {"use_type": 8, "goods_ids": ["70"], "goods_names": ["兑换商品"]},
     None, "适用于下列商品: 兑换商品", "兑换券"),
    ("9 all stores all goods",
     {"use_type": 9, "use_conditions": {"is_all_store": 1, "store_ids": [], "is_all_good": 1,
                                        "good_ids": []}},
     None, "全部门店、平台自营商品", "商品和门店"),
    ("9 some stores some goods",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [1, 2], "is_all_good": 0,
                                        "good_ids": [10, 11]}},
     None, "门店:一号店,二号店、商品:商品A,商品B", "商品和门店"),
    ("9 all stores some goods",
     {"use_type": 9, "use_conditions": {"is_all_store": 1, "store_ids": [], "is_all_good": 0,
                                        "good_ids": [10]}},
     None, "全部门店、商品:商品A", "商品和门店"),
    ("9 some stores all goods",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [2], "is_all_good": 1,
                                        "good_ids": []}},
     None, "门店:二号店、平台自营商品", "商品和门店"),
    ("9 ids as strings",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": ["1"], "is_all_good": 0,
                                        "good_ids": ["11"]}},
     None, "门店:一号店、商品:商品B", "商品和门店"),
    ("9 goods only",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [], "is_all_good": 0,
                                        "good_ids": [11]}},
     None, "商品:商品B", "商品和门店"),
    ("9 all goods only",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [], "is_all_good": 1,
                                        "good_ids": []}},
     None, "平台自营商品", "商品和门店"),
    ("9 nothing selected",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [], "is_all_good": 0,
                                        "good_ids": []}},
     None, "无适用范围", "商品和门店"),
    ("9 no conditions", {"use_type": 9, "use_conditions": None},
     None, "无适用范围", "商品和门店"),
    ("9 another tenant's store is not named",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [1, 5], "is_all_good": 1,
                                        "good_ids": []}},
     None, "门店:一号店、平台自营商品", "商品和门店"),
]


@pytest.mark.parametrize(("fields", "hotels", "api_limit", "type_name"),
                         [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES])
async def test_api_limit_and_coupon_type_name(client, rows, fields, hotels, api_limit,
                                              type_name):
    await rows.member(1, 1)
    await rows.store(1, "一号店")
    await rows.store(2, "二号店")
    await rows.store(5, "别家的店", uniacid=2)
    await rows.goods(10, "商品A")
    await rows.goods(11, "商品B")
    cid = await rows.coupon(1, **fields)
    other = await rows.coupon(1, use_type=fields["use_type"])
    for hotel_id, name, *tenant in hotels or ():
        await rows.hotel(hotel_id, name, uniacid=tenant[0] if tenant else 1, coupon_ids=(cid,))
    await rows.hotel(9, "别的券的酒店", coupon_ids=(other,))  # must not be named for cid
    mc = await rows.member_coupon(cid)
    item = await item_by_id(client, mc, 1)
    assert item["api_limit"] == api_limit
    assert item["belongs_to_coupon"]["coupon_type_name"] == type_name
    assert item["belongs_to_coupon"]["use_type"] == fields["use_type"]
    if "use_conditions" in fields:
        assert item["belongs_to_coupon"]["use_conditions"] == fields["use_conditions"]
    for key in ("category_ids", "categorynames", "goods_ids", "goods_names", "storenames"):
        assert item["belongs_to_coupon"][key] == fields.get(key)


async def test_unknown_use_type_is_enjoy_shopping(client, rows):
    await rows.member(1, 1)
    cid = await rows.coupon(1, use_type=42)
    mc = await rows.member_coupon(cid)
    item = await item_by_id(client, mc, 1)
    assert item["api_limit"] == "Enjoy shopping"
    assert item["belongs_to_coupon"]["use_type"] == 42
    for coupon_type in (1, 2, 3, 4, 5, 6, 9):
        assert await ids_of(client, 1, coupon_type) == []
    assert await ids_of(client, 1, 7) == [mc]


async def test_money_fields_have_two_decimals_and_full_item_renders(client, rows):
    await rows.member(1, 1)
    cid = await rows.coupon(
        1, name="八五折", coupon_method=2, deduct=10, discount=Decimal("8.5"), enough=100,
        money=Decimal("12.3"), credit=5, total=200, plugin_id=0, use_type=2,
        goods_ids=["64"], goods_names=["爱心值测试"], time_limit=0, time_days=1)
    mc = await rows.member_coupon(cid, id=155, get_time=sh(2026, 6, 14, 0, 0, 0))
    item = await item_by_id(client, mc, 1)
    assert item == {
        "id": 155,
        "coupon_id": cid,
        "used": 0,
        "use_time": 0,
        "get_time": "2026-06-14 00:00:00",
        "near_expiration": 1,
        "time_start": "2026-06-14",
        "time_end": "2026-06-15 23:59:59",
        "belongs_to_coupon": {
            "id": cid,
            "name": "八五折",
            "coupon_method": 2,
            "deduct": "10.00",
            "discount": "8.50",
            "enough": 100,
            "use_type": 2,
            "category_ids": None,
            "categorynames": None,
            "goods_ids": ["64"],
            "goods_names": ["爱心值测试"],
            "storenames": None,
            "time_limit": 0,
            "time_days": 1,
            "time_start": None,
            "time_end": None,
            "total": 200,
            "money": "12.30",
            "credit": 5,
            "plugin_id": 0,
            "use_conditions": None,
            "coupon_type_name": "指定商品",
        },
        "api_limit": "适用于下列商品: 爱心值测试",
    }


@pytest.mark.parametrize(("deduct", "discount", "money", "want"), [
    (10, 0, 0, ("10.00", "0.00", "0.00")),
    (Decimal("8.5"), Decimal("9.99"), Decimal("0.1"), ("8.50", "9.99", "0.10")),
    (Decimal("1234.56"), 1, Decimal("100"), ("1234.56", "1.00", "100.00")),
])
async def test_money_formatting(client, rows, deduct, discount, money, want):
    await rows.member(1, 1)
    cid = await rows.coupon(1, deduct=deduct, discount=discount, money=money)
    mc = await rows.member_coupon(cid)
    coupon = (await item_by_id(client, mc, 1))["belongs_to_coupon"]
    assert (coupon["deduct"], coupon["discount"], coupon["money"]) == want


# ---------------------------------------------------------------------------------------------
# 9. One database round trip per request
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "coupon_type", "page"), [(1, 0, 1), (2, 10, 1), (3, 2, 7)])
async def test_one_database_round_trip_per_request(make_client, settings, rows, status,
                                                   coupon_type, page):
    await build_matrix(rows)
    client = await make_client(
        dataclasses.replace(settings, db_pool_min_size=1, db_pool_max_size=1))
    # Warm up on another page: the pool's connection exists, statements are prepared, and the
    # measured request is not a cache hit.
    await fetch(client, 1, 0, page=999)
    pool = client.app[service.keys.db_pool_key]
    logged: list[str] = []

    def on_query(record) -> None:
        logged.append(record.query)

    async with pool.acquire() as conn:
        reset_query = conn.get_reset_query()
        conn.add_query_logger(on_query)
    try:
        logged.clear()  # the pool's own reset on our release above
        body = await fetch(client, status, coupon_type, page=page)
        # The pool resets a connection on release (asyncpg housekeeping, not the request's).
        queries = [q for q in logged if q != reset_query]
        assert len(queries) == 1, queries
        assert "yz_member_coupon" in queries[0]
        assert body["data"]["total"] == len(expected_ids(status, coupon_type))
    finally:
        async with pool.acquire() as conn:
            conn.remove_query_logger(on_query)
