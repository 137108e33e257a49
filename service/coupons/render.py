"""A page's bytes: the coupons of a tab rendered in the contract's shape (RESPONSE_SHAPE)."""

from __future__ import annotations

import hashlib
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from service.coupons import domain
from service.coupons.errors import MemberElsewhere, MemberNotFound
from service.db.repository import CouponPage, PageQuery

# The version of what a page's bytes look like for the same rows: the renderer
# (service/coupons/domain.py and `render_body`) and the page statement (sql/queries/coupons.sql).
# It is part of every cached page's name, with the settings that shape the bytes
# (RESPONSE_SHAPE, TOTAL_CAP), so that a process of a new version, handed a warm cache by the old
# one (service/cache/listener.py), never serves a page the old code rendered.
# tests/coupons/test_render_version.py fails when the bytes change and this does not.
RENDER_VERSION = 2


def render_body(page: CouponPage, query: PageQuery, shape: str, tz: ZoneInfo) -> bytes:
    items = [domain.render_coupon(row, tz, page.store_plugin) for row in page.rows]
    last = domain.last_page(page.total, query.pagesize)
    data: dict[str, Any] = {"set": {"transfer": page.coupon_transfer}}
    if shape == "paginator":
        offset = (query.page - 1) * query.pagesize
        data["data"] = {
            "current_page": query.page,
            "data": items,
            "per_page": query.pagesize,
            "total": page.total,
            "last_page": last,
            "from": offset + 1 if items else None,
            "to": offset + len(items) if items else None,
        }
        data["search_array"] = domain.search_array(query.status)
    else:
        data["data"] = items
        data["search_array"] = domain.search_array(query.status)
        data.update(current_page=query.page, per_page=query.pagesize, total=page.total,
                    last_page=last)
    return orjson.dumps({"result": 1, "msg": "", "data": data})


def etag_of(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def check_member(page: CouponPage, uniacid: int) -> None:
    """The page's member exists and is the caller's tenant's."""
    if page.member_uniacid is None:
        raise MemberNotFound()
    if page.member_uniacid != uniacid:
        raise MemberElsewhere()
