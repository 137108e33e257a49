"""Status tabs × coupon types through the endpoint on real PostgreSQL: the hand-written matrix
(tests/support/matrix.py) of every use_type and method in every state, deleted rows and other
members' and tenants' rows, and the one-round-trip promise.

Expected results come from small hand-written tables (which tab a row belongs in, whether it is
near expiration), never from re-deriving the service's SQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

import service.keys
from tests.support.api import items_of
from tests.support.common import NOW, token_for
from tests.support.matrix import MATRIX, USE_TIME, build_matrix, expected_ids
from tests.support.tabs import LABELS, fetch, ids_of, sh

# ---------------------------------------------------------------------------------------------
# The status × type matrix
# ---------------------------------------------------------------------------------------------


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
# Deleted rows, other members, other tenants
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
# One database round trip per request
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
