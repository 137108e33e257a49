"""Ordering (get_time, then id, descending, in every tab and across types) and paging: totals,
last pages, the default and largest page sizes, pages past the end, and both response shapes
(list and paginator) carrying identical items."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from tests.support.api import coupons, items_of
from tests.support.common import NOW
from tests.support.matrix import build_matrix
from tests.support.tabs import LABELS, TOKEN, UTC, ids_of, sh

# ---------------------------------------------------------------------------------------------
# Ordering
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
# Paging
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
