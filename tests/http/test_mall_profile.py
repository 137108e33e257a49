"""The mall profile (RESPONSE_SHAPE=paginator, ERROR_STYLE=mall) with requests written as the
mall's own sidebar page sends them (docs/CONTRACT.md, "The mall's sidebar page, as it
behaves"): a GET through the mall's router with page, coupon_type, client=work and type=17 only,
never status_request; the next page until page >= last_page or fewer rows than per_page."""

from __future__ import annotations

import dataclasses

import pytest

from service.clock import SystemClock
from service.http.coupons import PATH_MALL_ROUTER, ROUTE_NAME
from service.runtime.demo import load_demo_data
from tests.support.api import check_error, check_success
from tests.support.common import token_for

# Tokens are issued at the suite's fixed NOW; the service here runs on the real clock.
LONG = 3600 * 24 * 365 * 30
FORGED = "another-secret-0123456789abcdef0123456789"


@pytest.fixture
async def mall(make_client, settings, db, database_url):
    await load_demo_data(database_url)
    # The real clock: the demo's dates follow now(). Rate limits off (as in most tests): a walk
    # of every tab to its end is 40 requests within a second, not a person's pace.
    return await make_client(dataclasses.replace(
        settings, response_shape="paginator", error_style="mall"), clock=SystemClock())


async def page_as_the_mall_asks(client, token: str | None, coupon_type: int, page: int,
                                uniacid: int = 1):
    query = {"i": str(uniacid), "type": "17", "route": ROUTE_NAME, "page": str(page),
             "coupon_type": str(coupon_type), "client": "work"}
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    resp = await client.get(PATH_MALL_ROUTER, params=query, headers=headers)
    assert resp.status == 200  # whatever happened: the mall's page reads nothing else
    return resp, await resp.json()


async def walk(client, token: str, coupon_type: int) -> tuple[list[int], int, list[str]]:
    """One tab to its end by the page's rule: (ids in order, total, search_array)."""
    ids: list[int] = []
    page = 1
    while True:
        _, body = await page_as_the_mall_asks(client, token, coupon_type, page)
        assert body["result"] == 1, body
        check_success(body, shape="paginator")
        paginator = body["data"]["data"]
        assert paginator["current_page"] == page
        ids += [item["id"] for item in paginator["data"]]
        if page >= paginator["last_page"] or len(paginator["data"]) < paginator["per_page"]:
            return ids, paginator["total"], body["data"]["search_array"]
        page += 1


@pytest.mark.parametrize("member", [1, 2])
async def test_every_tab_walked_to_its_end(mall, member):
    token = token_for(1, member, ttl=LONG)
    _, _, labels = await walk(mall, token, 0)
    assert len(labels) == 11  # the tabs of status 1: the mall's page never asks for another
    seen_anywhere: set[int] = set()
    for coupon_type in range(len(labels)):
        ids, total, _ = await walk(mall, token, coupon_type)
        assert len(ids) == len(set(ids)) == total, (coupon_type, total, len(ids))
        seen_anywhere.update(ids)
    everything, total, _ = await walk(mall, token, 0)
    assert set(everything) == seen_anywhere  # every typed tab is part of 全部
    assert total == (130 if member == 2 else len(everything))
    if member == 2:
        assert len(everything) == 130




@pytest.mark.parametrize(("name", "token", "uniacid", "status"), [
    ("expired", token_for(1, 1, now=1), 1, "401"),
    ("missing", None, 1, "401"),
    ("forged", token_for(1, 1, secret=FORGED, ttl=LONG), 1, "401"),
    ("a member of another tenant", token_for(1, 1001, ttl=LONG), 1, "403"),
    ("another tenant's router", token_for(1, 1, ttl=LONG), 2, "403"),
])
async def test_refusals_reach_the_page_as_a_toast(mall, name, token, uniacid, status):
    resp, body = await page_as_the_mall_asks(mall, token, 0, 1, uniacid=uniacid)
    check_error(body)
    assert body["result"] == 0 and body["msg"], body
    assert resp.headers["X-Error-Status"] == status
