"""The coupon tab's business rules: tabs, types, labels and how one coupon is rendered.

Pure functions over plain values; the SQL in `sql/queries/coupons.sql` applies the same status
and end-time rules in the database, and these render what it returns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

STATUS_UNUSED, STATUS_EXPIRED, STATUS_USED = 1, 2, 3
STATUSES = (STATUS_UNUSED, STATUS_EXPIRED, STATUS_USED)
COUPON_TYPE_NEAR_EXPIRATION = 10

SEARCH_LABELS = (
    "全部", "平台", "门店", "酒店", "指定商品", "分类商品",
    "兑换券", "满减券", "折扣券", "平台商品和门店", "快过期",
)  # fmt: skip
NEVER_EXPIRES = "不限时间"

COUPON_TYPE_NAMES = {
    0: "平台商品", 1: "分类商品", 2: "指定商品", 3: "供应商商品", 4: "门店商品",
    5: "门店商品", 6: "酒店商品", 7: "酒店商品", 8: "兑换券", 9: "商品和门店",
}  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class TypeFilter:
    """What one `coupon_type` tab selects; None means "any"."""

    use_types: tuple[int, ...] | None = None
    coupon_methods: tuple[int, ...] | None = None
    near_only: bool = False


TYPE_FILTERS: Mapping[int, TypeFilter] = {
    0: TypeFilter(),
    1: TypeFilter(use_types=(0,)),
    2: TypeFilter(use_types=(4, 5)),
    3: TypeFilter(use_types=(6, 7)),
    4: TypeFilter(use_types=(2,)),
    5: TypeFilter(use_types=(1,)),
    6: TypeFilter(use_types=(8,)),
    7: TypeFilter(coupon_methods=(1,)),
    8: TypeFilter(coupon_methods=(2,)),
    9: TypeFilter(use_types=(9,)),
    10: TypeFilter(near_only=True),
}


def search_array(status: int) -> list[str]:
    """The tab labels: "快过期" only makes sense for coupons that can still be used."""
    labels = SEARCH_LABELS if status == STATUS_UNUSED else SEARCH_LABELS[:-1]
    return list(labels)


def last_page(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))


_CENTS = Decimal("0.01")


def money(value: Decimal | int | float | None) -> str:
    # The columns are numeric(14, 2): formatting alone gives the same digits as quantizing
    # first (both round half to even), at a third of the cost.
    if type(value) is Decimal:
        return f"{value:.2f}"
    return f"{Decimal(value or 0).quantize(_CENTS):.2f}"


# isoformat, then cut: strftime was half of a rendered coupon's cost (five dates each).
def fmt_datetime(value: dt.datetime | None, tz: ZoneInfo) -> str | None:
    return None if value is None else value.astimezone(tz).isoformat(" ", "seconds")[:19]


def fmt_date(value: dt.datetime | None, tz: ZoneInfo) -> str | None:
    return None if value is None else value.astimezone(tz).date().isoformat()


def _names(values: Sequence[str] | None) -> str:
    return ",".join(v for v in values or () if v is not None)


def _truthy(value: Any) -> bool:
    # The mall writes these flags as 1/0, "1"/"0" or true/false.
    return value not in (None, False, 0, "0", "", "false")


def use_conditions_limit(
    conditions: Mapping[str, Any] | None,
    store_names: Sequence[str] | None,
    goods_titles: Sequence[str] | None,
    store_plugin: bool,
) -> str:
    """`api_limit` of a "goods and stores" coupon (use_type 9), from its `use_conditions`."""
    if not isinstance(conditions, Mapping):
        return "无适用范围"
    parts: list[str] = []
    if store_plugin:
        if _truthy(conditions.get("is_all_store")):
            parts.append("全部门店")
        elif store_names:
            parts.append("门店:" + _names(store_names))
    if _truthy(conditions.get("is_all_good")):
        parts.append("平台自营商品")
    elif goods_titles:
        parts.append("商品:" + _names(goods_titles))
    return "、".join(parts) if parts else "无适用范围"


def api_limit(row: Mapping[str, Any], store_plugin: bool) -> str:
    """The one-line "where can it be used" text, by `use_type`."""
    use_type = row["use_type"]
    if use_type == 0:
        return "商城通用"
    if use_type == 1:
        return "适用于下列分类: " + _names(row["categorynames"])
    if use_type in (2, 8):
        return "适用于下列商品: " + _names(row["goods_names"])
    if use_type == 3:
        return "适用于下列供应商: " + _names(row["suppliernames"])
    if use_type in (4, 5):
        return "适用于下列门店: " + _names(row["storenames"])
    if use_type == 6:
        hotels = row["hotel_names"] or ()
        return "适用于酒店 :" + (hotels[0] if hotels else "")
    if use_type == 7:
        return "适用于下列酒店: " + _names(row["hotel_names"])
    if use_type == 9:
        return use_conditions_limit(
            row["use_conditions"],
            row["condition_store_names"],
            row["condition_goods_titles"],
            store_plugin,
        )
    return "Enjoy shopping"


def _str_list(values: Sequence[Any] | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def render_coupon(row: Mapping[str, Any], tz: ZoneInfo, store_plugin: bool) -> dict[str, Any]:
    """One member coupon, exactly in the seed's field order and formats."""
    start_source = row["time_start"] if row["time_limit"] == 1 else row["get_time"]
    use_time = row["use_time"]
    return {
        "id": row["id"],
        "coupon_id": row["coupon_id"],
        "used": int(row["used"]),
        "use_time": int(use_time.timestamp()) if use_time is not None else 0,
        "get_time": fmt_datetime(row["get_time"], tz),
        "near_expiration": 1 if row["near"] else 0,
        "time_start": fmt_date(start_source or row["get_time"], tz),
        "time_end": fmt_datetime(row["end_at"], tz) or NEVER_EXPIRES,
        "belongs_to_coupon": {
            "id": row["coupon_id"],
            "name": row["name"],
            "coupon_method": row["coupon_method"],
            "deduct": money(row["deduct"]),
            "discount": money(row["discount"]),
            "enough": row["enough"],
            "use_type": row["use_type"],
            "category_ids": _str_list(row["category_ids"]),
            "categorynames": _str_list(row["categorynames"]),
            "goods_ids": _str_list(row["goods_ids"]),
            "goods_names": _str_list(row["goods_names"]),
            "storenames": _str_list(row["storenames"]),
            "time_limit": row["time_limit"],
            "time_days": row["time_days"],
            "time_start": fmt_datetime(row["time_start"], tz),
            "time_end": fmt_datetime(row["time_end"], tz),
            "total": row["coupon_total"],
            "money": money(row["money"]),
            "credit": row["credit"],
            "plugin_id": row["plugin_id"],
            "use_conditions": row["use_conditions"],
            "coupon_type_name": COUPON_TYPE_NAMES.get(row["use_type"], ""),
        },
        "api_limit": api_limit(row, store_plugin),
    }
