"""The pure business rules of service/coupons/domain.py: tabs, pages, money, times, limits,
rendering."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.coupons.domain import (
    COUPON_TYPE_NAMES,
    NEVER_EXPIRES,
    SEARCH_LABELS,
    STATUS_EXPIRED,
    STATUS_UNUSED,
    STATUS_USED,
    TYPE_FILTERS,
    TypeFilter,
    api_limit,
    fmt_date,
    fmt_datetime,
    last_page,
    money,
    render_coupon,
    search_array,
    use_conditions_limit,
)
from tests.support.api import COUPON_KEYS, ITEM_KEYS, SEED

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC = dt.UTC
CST = dt.timezone(dt.timedelta(hours=8))

# --- tabs -----------------------------------------------------------------------------------------


def test_search_array_unused_has_eleven_labels_ending_with_near_expiration() -> None:
    labels = search_array(STATUS_UNUSED)
    assert len(labels) == 11
    assert labels[-1] == "快过期"
    assert labels == ["全部", "平台", "门店", "酒店", "指定商品", "分类商品", "兑换券", "满减券",
                      "折扣券", "平台商品和门店", "快过期"]
    assert labels == SEED["data"]["search_array"]


@pytest.mark.parametrize("status", [STATUS_EXPIRED, STATUS_USED])
def test_search_array_expired_and_used_have_ten_labels(status: int) -> None:
    labels = search_array(status)
    assert len(labels) == 10
    assert "快过期" not in labels
    assert labels == search_array(STATUS_UNUSED)[:10]


def test_search_array_returns_a_fresh_list() -> None:
    labels = search_array(STATUS_UNUSED)
    labels.append("x")
    labels[0] = "changed"
    assert search_array(STATUS_UNUSED)[0] == "全部"
    assert len(search_array(STATUS_UNUSED)) == 11
    assert SEARCH_LABELS[0] == "全部"


def test_type_filters_cover_every_coupon_type() -> None:
    assert sorted(TYPE_FILTERS) == list(range(11))
    assert len(SEARCH_LABELS) == len(TYPE_FILTERS)


@pytest.mark.parametrize(
    ("coupon_type", "expected"),
    [
        (0, TypeFilter()),
        (1, TypeFilter(use_types=(0,))),
        (2, TypeFilter(use_types=(4, 5))),
        (3, TypeFilter(use_types=(6, 7))),
        (4, TypeFilter(use_types=(2,))),
        (5, TypeFilter(use_types=(1,))),
        (6, TypeFilter(use_types=(8,))),
        (7, TypeFilter(coupon_methods=(1,))),
        (8, TypeFilter(coupon_methods=(2,))),
        (9, TypeFilter(use_types=(9,))),
        (10, TypeFilter(near_only=True)),
    ],
)
def test_type_filter_matches_contract(coupon_type: int, expected: TypeFilter) -> None:
    assert TYPE_FILTERS[coupon_type] == expected


def test_coupon_type_names_by_use_type() -> None:
    assert COUPON_TYPE_NAMES == {
        0: "平台商品", 1: "分类商品", 2: "指定商品", 3: "供应商商品", 4: "门店商品",
        5: "门店商品", 6: "酒店商品", 7: "酒店商品", 8: "兑换券", 9: "商品和门店",
    }  # fmt: skip


# --- pages and money ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "per_page", "expected"),
    [
        (0, 15, 1),  # an empty list still has one page
        (1, 15, 1),
        (14, 15, 1),
        (15, 15, 1),  # exact multiple: no extra empty page
        (16, 15, 2),
        (30, 15, 2),
        (31, 15, 3),
        (50, 50, 1),
        (51, 50, 2),
        (7, 1, 7),
        (100000, 1, 100000),
    ],
)
def test_last_page(total: int, per_page: int, expected: int) -> None:
    assert last_page(total, per_page) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("10"), "10.00"),
        (Decimal("10.00"), "10.00"),
        (Decimal("8.5"), "8.50"),
        (8.5, "8.50"),
        (9.5, "9.50"),
        (None, "0.00"),
        (0, "0.00"),
        (Decimal("0"), "0.00"),
        (100, "100.00"),
        (Decimal("1234567.89"), "1234567.89"),
        (0.1, "0.10"),
    ],
)
def test_money(value: Any, expected: str) -> None:
    assert money(value) == expected


# --- times ----------------------------------------------------------------------------------------


def test_fmt_datetime_and_date_cross_utc_midnight_into_next_day() -> None:
    # 16:30 UTC on Jan 1st is 00:30 on Jan 2nd in Shanghai (UTC+8).
    value = dt.datetime(2024, 1, 1, 16, 30, 0, tzinfo=UTC)
    assert fmt_datetime(value, SHANGHAI) == "2024-01-02 00:30:00"
    assert fmt_date(value, SHANGHAI) == "2024-01-02"
    # ...and the same instant shown in UTC stays on Jan 1st.
    assert fmt_datetime(value, ZoneInfo("UTC")) == "2024-01-01 16:30:00"
    assert fmt_date(value, ZoneInfo("UTC")) == "2024-01-01"


def test_fmt_datetime_just_before_shanghai_midnight() -> None:
    value = dt.datetime(2024, 1, 1, 15, 59, 59, tzinfo=UTC)
    assert fmt_datetime(value, SHANGHAI) == "2024-01-01 23:59:59"
    assert fmt_date(value, SHANGHAI) == "2024-01-01"


def test_fmt_across_year_end_and_from_other_offsets() -> None:
    value = dt.datetime(2025, 12, 31, 16, 0, 0, tzinfo=UTC)
    assert fmt_datetime(value, SHANGHAI) == "2026-01-01 00:00:00"
    assert fmt_date(value, SHANGHAI) == "2026-01-01"
    # An aware value in another zone: same instant, same text.
    ny = value.astimezone(ZoneInfo("America/New_York"))
    assert fmt_datetime(ny, SHANGHAI) == "2026-01-01 00:00:00"


def test_fmt_none_is_none() -> None:
    assert fmt_datetime(None, SHANGHAI) is None
    assert fmt_date(None, SHANGHAI) is None


# --- api_limit ------------------------------------------------------------------------------------


def limit_row(use_type: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "use_type": use_type, "categorynames": None, "goods_names": None, "suppliernames": None,
        "storenames": None, "hotel_names": None, "use_conditions": None,
        "condition_store_names": None, "condition_goods_titles": None,
    }  # fmt: skip
    row.update(fields)
    return row


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (limit_row(0), "商城通用"),
        (limit_row(1, categorynames=["服装", "鞋靴"]), "适用于下列分类: 服装,鞋靴"),
        (limit_row(2, goods_names=["保温杯", "雨伞"]), "适用于下列商品: 保温杯,雨伞"),
        (limit_row(3, suppliernames=["优选供应商"]), "适用于下列供应商: 优选供应商"),
        (limit_row(4, storenames=["南山店", "福田店"]), "适用于下列门店: 南山店,福田店"),
        (limit_row(5, storenames=["南山店"]), "适用于下列门店: 南山店"),
        (limit_row(6, hotel_names=["海景酒店"]), "适用于酒店 :海景酒店"),
        (limit_row(7, hotel_names=["海景酒店", "山景酒店"]), "适用于下列酒店: 海景酒店,山景酒店"),
        (limit_row(8, goods_names=["保温杯"]), "适用于下列商品: 保温杯"),
        (
            limit_row(9, use_conditions={"is_all_store": 0, "store_ids": [1, 2],
                                         "is_all_good": 1, "good_ids": []},
                      condition_store_names=["南山店", "福田店"]),
            "门店:南山店,福田店、平台自营商品",
        ),
        (limit_row(10), "Enjoy shopping"),
        (limit_row(42), "Enjoy shopping"),
        (limit_row(-1), "Enjoy shopping"),
    ],
)
def test_api_limit_by_use_type(row: dict[str, Any], expected: str) -> None:
    assert api_limit(row, store_plugin=True) == expected


@pytest.mark.parametrize("hotels", [None, []])
def test_api_limit_one_hotel_coupon_without_hotel(hotels: list[str] | None) -> None:
    assert api_limit(limit_row(6, hotel_names=hotels), store_plugin=True) == "适用于酒店 :"


def test_api_limit_one_hotel_coupon_shows_only_the_first_hotel() -> None:
    row = limit_row(6, hotel_names=["海景酒店", "山景酒店"])
    assert api_limit(row, store_plugin=True) == "适用于酒店 :海景酒店"


@pytest.mark.parametrize(
    ("use_type", "field", "prefix"),
    [
        (1, "categorynames", "适用于下列分类: "),
        (2, "goods_names", "适用于下列商品: "),
        (3, "suppliernames", "适用于下列供应商: "),
        (4, "storenames", "适用于下列门店: "),
        (5, "storenames", "适用于下列门店: "),
        (7, "hotel_names", "适用于下列酒店: "),
        (8, "goods_names", "适用于下列商品: "),
    ],
)
def test_api_limit_with_no_names_keeps_the_prefix(use_type: int, field: str, prefix: str) -> None:
    assert api_limit(limit_row(use_type, **{field: None}), store_plugin=True) == prefix
    assert api_limit(limit_row(use_type, **{field: []}), store_plugin=True) == prefix
    # A NULL element of a text[] is skipped, not printed as "None".
    assert api_limit(limit_row(use_type, **{field: ["A", None, "B"]}), store_plugin=True) == (
        prefix + "A,B"
    )


def test_api_limit_of_store_coupon_ignores_store_plugin_flag() -> None:
    # Hiding store coupons when the plugin is off is the query's job; the text is the same.
    row = limit_row(4, storenames=["南山店"])
    assert api_limit(row, store_plugin=False) == "适用于下列门店: 南山店"


def test_api_limit_use_type_9_follows_store_plugin() -> None:
    row = limit_row(9, use_conditions={"is_all_store": 1, "is_all_good": 0, "good_ids": [1]},
                    condition_goods_titles=["保温杯"])
    assert api_limit(row, store_plugin=True) == "全部门店、商品:保温杯"
    assert api_limit(row, store_plugin=False) == "商品:保温杯"


# --- use_conditions_limit (use_type 9) ------------------------------------------------------------


@pytest.mark.parametrize("conditions", [None, "not an object", [1, 2], 7])
def test_use_conditions_missing_or_not_an_object(conditions: Any) -> None:
    assert use_conditions_limit(conditions, ["南山店"], ["保温杯"], True) == "无适用范围"


@pytest.mark.parametrize(
    "conditions",
    [
        {},
        {"is_all_store": 0, "store_ids": [], "is_all_good": 0, "good_ids": []},
        {"is_all_store": "0", "store_ids": [], "is_all_good": "0", "good_ids": []},
        {"is_all_store": False, "is_all_good": False},
        {"is_all_store": "", "is_all_good": None},
        {"is_all_store": "false", "is_all_good": "false"},
    ],
)
def test_use_conditions_all_false(conditions: dict[str, Any]) -> None:
    assert use_conditions_limit(conditions, None, None, True) == "无适用范围"
    assert use_conditions_limit(conditions, [], [], True) == "无适用范围"


@pytest.mark.parametrize("flag", ["1", 1, True])
def test_use_conditions_all_stores(flag: Any) -> None:
    conditions = {"is_all_store": flag, "store_ids": [], "is_all_good": flag, "good_ids": []}
    assert use_conditions_limit(conditions, ["南山店"], None, True) == "全部门店、平台自营商品"
    conditions["is_all_good"] = 0
    assert use_conditions_limit(conditions, None, ["保温杯", "雨伞"], True) == (
        "全部门店、商品:保温杯,雨伞"
    )


def test_use_conditions_named_stores() -> None:
    conditions = {"is_all_store": 0, "store_ids": [1, 2], "is_all_good": 1, "good_ids": []}
    assert use_conditions_limit(conditions, ["A", "B"], None, True) == "门店:A,B、平台自营商品"


def test_use_conditions_all_goods_wins_over_goods_titles() -> None:
    conditions = {"is_all_store": 0, "is_all_good": "1", "good_ids": [1, 2]}
    assert use_conditions_limit(conditions, None, ["x", "y"], True) == "平台自营商品"


def test_use_conditions_goods_titles() -> None:
    conditions = {"is_all_store": 0, "is_all_good": 0, "good_ids": [1, 2]}
    assert use_conditions_limit(conditions, None, ["x", "y"], True) == "商品:x,y"


def test_use_conditions_store_names_and_goods_titles() -> None:
    conditions = {"is_all_store": 0, "store_ids": [1], "is_all_good": 0, "good_ids": [1, 2]}
    assert use_conditions_limit(conditions, ["A"], ["x", "y"], True) == "门店:A、商品:x,y"


@pytest.mark.parametrize("flag", ["1", 1, True])
def test_use_conditions_store_plugin_off_drops_the_store_part(flag: Any) -> None:
    conditions = {"is_all_store": flag, "store_ids": [1], "is_all_good": 1}
    assert use_conditions_limit(conditions, ["A", "B"], None, False) == "平台自营商品"
    conditions = {"is_all_store": 0, "store_ids": [1], "is_all_good": 0, "good_ids": [1]}
    assert use_conditions_limit(conditions, ["A", "B"], ["x"], False) == "商品:x"
    # Only stores, and the plugin off: nothing left.
    conditions = {"is_all_store": flag, "store_ids": [1], "is_all_good": 0}
    assert use_conditions_limit(conditions, ["A"], None, False) == "无适用范围"


# --- render_coupon --------------------------------------------------------------------------------


def coupon_row(**fields: Any) -> dict[str, Any]:
    """A row as `coupon_page` returns it, for seed item 155 unless told otherwise."""
    row: dict[str, Any] = {
        "id": 155, "coupon_id": 5, "used": 0, "use_time": None,
        "get_time": dt.datetime(2017, 9, 26, 0, 0, tzinfo=CST),
        "end_at": dt.datetime(2017, 9, 27, 23, 59, 59, tzinfo=CST), "near": False,
        "name": "优惠券测试", "coupon_method": 1, "deduct": Decimal("10.00"),
        "discount": Decimal("0.00"), "enough": 100, "use_type": 0, "category_ids": None,
        "categorynames": None, "goods_ids": ["64"], "goods_names": ["爱心值测试"],
        "storenames": None, "suppliernames": None, "time_limit": 0, "time_days": 1,
        "time_start": dt.datetime(2017, 9, 26, 0, 0, tzinfo=CST),
        "time_end": dt.datetime(2017, 10, 3, 0, 0, tzinfo=CST), "coupon_total": -1,
        "money": Decimal("0.00"), "credit": 0, "plugin_id": 0, "use_conditions": None,
        "hotel_names": None, "condition_store_names": None, "condition_goods_titles": None,
    }  # fmt: skip
    row.update(fields)
    return row


def test_render_coupon_reproduces_seed_item_155() -> None:
    item = render_coupon(coupon_row(), SHANGHAI, store_plugin=True)
    assert item == SEED["data"]["data"][0]


def test_render_coupon_reproduces_seed_item_12() -> None:
    # Stored in UTC, as PostgreSQL returns timestamptz: the display zone decides the text.
    to_utc = lambda d: d.astimezone(UTC)  # noqa: E731
    row = coupon_row(
        id=12, coupon_id=4, name="12", enough=0, goods_ids=None, goods_names=None, time_days=10,
        coupon_total=0,
        get_time=to_utc(dt.datetime(2017, 8, 16, tzinfo=CST)),
        end_at=to_utc(dt.datetime(2017, 8, 26, 23, 59, 59, tzinfo=CST)),
        time_start=to_utc(dt.datetime(2017, 8, 16, tzinfo=CST)),
        time_end=to_utc(dt.datetime(2017, 8, 23, tzinfo=CST)),
    )
    assert render_coupon(row, SHANGHAI, store_plugin=True) == SEED["data"]["data"][-1]


def test_render_coupon_field_order_equals_seed() -> None:
    item = render_coupon(coupon_row(use_type=9, use_conditions={"is_all_good": 1}), SHANGHAI, True)
    assert list(item) == ITEM_KEYS
    assert list(item["belongs_to_coupon"]) == COUPON_KEYS


def test_render_coupon_use_time_unix_seconds_or_zero() -> None:
    used_at = dt.datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    item = render_coupon(coupon_row(used=1, use_time=used_at), SHANGHAI, True)
    assert item["used"] == 1
    assert item["use_time"] == 1709294400
    assert isinstance(item["use_time"], int)
    # The display zone does not change a unix timestamp.
    assert render_coupon(coupon_row(used=1, use_time=used_at), ZoneInfo("UTC"), True)[
        "use_time"
    ] == 1709294400
    unused = render_coupon(coupon_row(use_time=None), SHANGHAI, True)
    assert unused["use_time"] == 0 and unused["used"] == 0


def test_render_coupon_never_expiring() -> None:
    item = render_coupon(coupon_row(end_at=None, time_days=0, time_end=None), SHANGHAI, True)
    assert item["time_end"] == NEVER_EXPIRES == "不限时间"
    assert item["belongs_to_coupon"]["time_end"] is None


def test_render_coupon_time_start_from_coupon_when_fixed_range() -> None:
    row = coupon_row(
        time_limit=1,
        time_start=dt.datetime(2026, 5, 31, 16, 0, 0, tzinfo=UTC),  # 2026-06-01 00:00 Shanghai
        get_time=dt.datetime(2026, 6, 10, 3, 0, 0, tzinfo=UTC),
        end_at=dt.datetime(2026, 6, 30, 15, 59, 59, tzinfo=UTC),
    )
    item = render_coupon(row, SHANGHAI, True)
    assert item["time_start"] == "2026-06-01"
    assert item["get_time"] == "2026-06-10 11:00:00"
    assert item["time_end"] == "2026-06-30 23:59:59"


def test_render_coupon_time_start_from_get_time_when_days_after_receipt() -> None:
    row = coupon_row(
        time_limit=0,
        time_start=dt.datetime(2026, 5, 31, 16, 0, 0, tzinfo=UTC),
        get_time=dt.datetime(2026, 6, 9, 17, 30, 0, tzinfo=UTC),  # 2026-06-10 01:30 Shanghai
    )
    assert render_coupon(row, SHANGHAI, True)["time_start"] == "2026-06-10"


def test_render_coupon_fixed_range_without_start_falls_back_to_get_time() -> None:
    row = coupon_row(time_limit=1, time_start=None,
                     get_time=dt.datetime(2026, 6, 9, 17, 30, 0, tzinfo=UTC))
    item = render_coupon(row, SHANGHAI, True)
    assert item["time_start"] == "2026-06-10"
    assert item["belongs_to_coupon"]["time_start"] is None


def test_render_coupon_values_and_types() -> None:
    row = coupon_row(
        near=True, coupon_method=2, deduct=None, discount=Decimal("8.5"), money=Decimal("3"),
        use_type=1, category_ids=[11, 12], categorynames=["服装", "鞋靴"], goods_ids=None,
        goods_names=None, storenames=["南山店"],
    )
    item = render_coupon(row, SHANGHAI, True)
    coupon = item["belongs_to_coupon"]
    assert item["near_expiration"] == 1
    assert coupon["id"] == item["coupon_id"] == 5
    assert coupon["deduct"] == "0.00"
    assert coupon["discount"] == "8.50"
    assert coupon["money"] == "3.00"
    assert coupon["category_ids"] == ["11", "12"]
    assert coupon["categorynames"] == ["服装", "鞋靴"]
    assert coupon["goods_ids"] is None
    assert coupon["storenames"] == ["南山店"]
    assert coupon["coupon_type_name"] == "分类商品"
    assert item["api_limit"] == "适用于下列分类: 服装,鞋靴"


def test_render_coupon_unknown_use_type() -> None:
    item = render_coupon(coupon_row(use_type=12), SHANGHAI, True)
    assert item["api_limit"] == "Enjoy shopping"
    assert item["belongs_to_coupon"]["coupon_type_name"] == ""


def test_render_coupon_use_conditions_passed_through_and_limited() -> None:
    conditions = {"is_all_store": 1, "store_ids": [], "is_all_good": 0, "good_ids": [1, 2]}
    row = coupon_row(use_type=9, use_conditions=conditions,
                     condition_goods_titles=["保温杯", "雨伞"])
    on = render_coupon(row, SHANGHAI, store_plugin=True)
    off = render_coupon(row, SHANGHAI, store_plugin=False)
    assert on["belongs_to_coupon"]["use_conditions"] == conditions
    assert on["belongs_to_coupon"]["coupon_type_name"] == "商品和门店"
    assert on["api_limit"] == "全部门店、商品:保温杯,雨伞"
    assert off["api_limit"] == "商品:保温杯,雨伞"


def test_render_coupon_in_another_display_zone() -> None:
    item = render_coupon(coupon_row(), ZoneInfo("UTC"), True)
    assert item["get_time"] == "2017-09-25 16:00:00"
    assert item["time_start"] == "2017-09-25"
    assert item["time_end"] == "2017-09-27 15:59:59"
