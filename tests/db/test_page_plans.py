"""`coupon_page` answers the same under either kind of plan PostgreSQL may use for it.

asyncpg prepares the statement once per connection; PostgreSQL plans its first five executions
with the parameters' values (custom plans), then usually switches to one generic plan. The two
fold the status and filter parameters differently (a custom plan turns the end test into a
condition an index can answer), so every tab, type filter and page is compared row for row, on a
member whose rows cover each case the filters separate, with a plugin off and a page past the
end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from service.coupons.domain import TYPE_FILTERS
from service.db.queries import QUERIES
from service.db.repository import init_connection
from tests.support.common import NOW, SHANGHAI

PAGES = ((15, 0), (2, 2), (3, 9), (15, 30))  # (limit, offset); the last is past the end


def sh(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=SHANGHAI)


async def _connection(url: str, mode: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await init_connection(conn)
    await conn.execute(f"SET plan_cache_mode = {mode}")
    return conn


@pytest.fixture
async def modes(database_url: str, db) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    conns = {mode: await _connection(database_url, mode)
             for mode in ("force_custom_plan", "force_generic_plan")}
    try:
        yield conns
    finally:
        for conn in conns.values():
            await conn.close()


async def _page(conn: asyncpg.Connection, **params: Any) -> list[tuple]:
    return [tuple(r.items()) async for r in QUERIES.coupon_page(conn, **params)]


async def test_custom_and_generic_plans_return_the_same_rows(modes, rows):
    await rows.tenant(1, store_plugin=False, hotel_plugin=True, near_days=5)
    await rows.member(1, 1)
    timings = [
        {"time_limit": 1, "time_start": sh(2026, 1, 1), "time_end": sh(2026, 12, 31, 23, 59, 59)},
        {"time_limit": 1, "time_start": sh(2026, 1, 1), "time_end": sh(2026, 6, 1)},  # expired
        {"time_limit": 1, "time_start": sh(2026, 1, 1), "time_end": sh(2026, 6, 17)},  # near
        {"time_limit": 1, "time_start": sh(2026, 1, 1), "time_end": NOW},  # ends right now
        {"time_limit": 0, "time_days": 0},  # never ends
        {"time_limit": 0, "time_days": 2},
    ]
    coupons = [await rows.coupon(1, use_type=use_type, coupon_method=1 + n % 2, **timing)
               for n, (use_type, timing) in enumerate(
                   (u, t) for u in (0, 1, 2, 4, 6, 8, 9) for t in timings)]
    stray = await rows.coupon(2)
    hour = dt.timedelta(hours=1)
    for n, cid in enumerate(coupons):
        # Pairs share a get_time, so the id breaks the tie.
        got = NOW - (n // 2) * hour
        await rows.member_coupon(cid, get_time=got)
        if n % 3 == 0:
            await rows.member_coupon(cid, get_time=got, used=1, use_time=NOW - hour)
        if n % 5 == 0:
            await rows.member_coupon(cid, get_time=got, deleted=1)
    await rows.member_coupon(stray)  # a coupon of another tenant under tenant 1

    base = {"uniacid": 1, "member_id": 1, "staff_userid": None, "external_userid": None,
            "now": NOW, "total_cap": 20}
    seen_items = 0
    for status in (1, 2, 3):
        for kind in TYPE_FILTERS.values():
            for limit, offset in PAGES:
                params = dict(base, status=status,
                              use_types=list(kind.use_types) if kind.use_types else None,
                              coupon_methods=(list(kind.coupon_methods)
                                              if kind.coupon_methods else None),
                              near_only=kind.near_only, page_limit=limit, page_offset=offset)
                custom = await _page(modes["force_custom_plan"], **params)
                generic = await _page(modes["force_generic_plan"], **params)
                assert custom == generic, (status, kind, limit, offset)
                seen_items += sum(dict(r)["id"] is not None for r in custom)
    assert seen_items > 0
