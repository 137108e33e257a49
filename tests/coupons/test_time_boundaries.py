"""Time boundaries through the endpoint, on the injectable clock: a coupon's end of day moving it
from the unused to the expired tab, `time_days` counted in Shanghai days after receipt, the
rendered times, and near expiration (the tenant's window, its boundary, used and expired rows).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.support.api import items_of
from tests.support.common import NOW
from tests.support.tabs import UTC, fetch, ids_of, item_by_id, sh

# ---------------------------------------------------------------------------------------------
# The end-of-day boundary, with the injectable clock
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
# near_expiration
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
