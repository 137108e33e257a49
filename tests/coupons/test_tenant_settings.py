"""A tenant's settings through the endpoint: the store and hotel plugins hide their coupons in
every tab and drop stores from use_type 9's `api_limit`; `set.transfer` follows the tenant's row,
and no other tenant's."""

from __future__ import annotations

import pytest

from tests.support.api import items_of
from tests.support.common import NOW
from tests.support.tabs import fetch, ids_of, sh

# ---------------------------------------------------------------------------------------------
# Tenant plugins and set.transfer
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
