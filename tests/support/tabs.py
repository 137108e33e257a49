"""Reading the coupons tab as the status and type tests do: one long-lived token, the labels of
`search_array`, Shanghai wall-clock times, and one tab's items (or their ids) read through the
endpoint on real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.support.api import coupons, items_of
from tests.support.common import SHANGHAI, token_for

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
