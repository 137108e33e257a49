"""The sidebar's real flow: a staff token without member_id names the WeCom contact
(`user_id`, an external_userid); the member behind it is read only through a follow of that
staff member, and the in-process mapping never outlives a change to yz_wecom_contact."""

from __future__ import annotations

import dataclasses

import pytest

from service.cache.contacts import ContactCache
from service.http.coupons import PATH_MALL_ROUTER, PATH_PLUGIN
from service.keys import pages_key
from tests.support.api import coupons, items_of
from tests.support.common import token_for
from tests.support.pages import QueryCounter, settle

WM = "wmAbCdEf0123456789_-xyzXYZ"


@pytest.fixture
def settings(settings):
    """The Redis layer alone (what these tests count); the local layer has test_local.py."""
    return dataclasses.replace(settings, local_cache_enabled=False)


def staff_token(staff: str = "staff-1", uniacid: int = 1) -> str:
    return token_for(uniacid, None, staff=staff)


@pytest.fixture
async def people(rows) -> dict[str, int]:
    """Members 1 and 2 of tenant 1, member 9 of tenant 2, one coupon each; staff-1 follows
    member 1 as contact WM."""
    out = {}
    for uid, uniacid in ((1, 1), (2, 1), (9, 2)):
        await rows.member(uid, uniacid)
        cid = await rows.coupon(uniacid, name=f"m{uid}")
        out[f"mc{uid}"] = await rows.member_coupon(cid, uid=uid, uniacid=uniacid)
    await rows.contact(WM, 1)
    return out


def names(body) -> set[str]:
    return {item["belongs_to_coupon"]["name"] for item in items_of(body)}


async def fetch(client, token, expected_status=200, **params):
    return await coupons(client, token, expected_status=expected_status, coupon_type=0,
                         **params)


async def test_staff_token_reads_the_followed_contact(client, people):
    body = await fetch(client, staff_token(), user_id=WM)
    assert names(body) == {"m1"}


@pytest.mark.parametrize("where", ["form", "json", "multipart"])
async def test_user_id_in_a_post_body(client, people, where):
    body = await coupons(client, staff_token(), method="POST", body=where, user_id=WM,
                         coupon_type=0)
    assert names(body) == {"m1"}


async def test_every_route(client, people):
    for path in (PATH_PLUGIN, PATH_MALL_ROUTER):
        assert names(await coupons(client, staff_token(), path=path, user_id=WM,
                                   coupon_type=0)) == {"m1"}


async def test_a_contact_the_staff_member_does_not_follow(client, people, rows):
    await rows.contact("wm-other", 2, staff="staff-2")
    for token, user_id in ((staff_token("staff-2"), WM), (staff_token(), "wm-other"),
                           (staff_token(), "wm-nobody")):
        body = await fetch(client, token, expected_status=403, user_id=user_id)
        assert list(body["data"]["errors"]) == ["user_id"]


async def test_another_tenants_follow_is_not_this_tenants(client, people, rows):
    # staff-1 follows WM in tenant 2 as member 9; in tenant 1 WM is member 1.
    await rows.contact(WM, 9, uniacid=2)
    assert names(await fetch(client, staff_token(uniacid=2), user_id=WM)) == {"m9"}
    assert names(await fetch(client, staff_token(uniacid=1), user_id=WM)) == {"m1"}
    # A tenant-2 token on tenant 1's router form: the tenant check comes first.
    await coupons(client, staff_token(uniacid=2), expected_status=403, path=PATH_MALL_ROUTER,
                  i=1, user_id=WM)


async def test_a_follow_pointing_at_another_tenants_member(client, people, rows):
    await rows.contact("wm-stray", 9, uniacid=1)  # bad data: member 9 lives in tenant 2
    body = await fetch(client, staff_token(), expected_status=403, user_id="wm-stray")
    assert "m9" not in str(body)


async def test_a_follow_of_a_member_that_does_not_exist(client, people, rows):
    await rows.contact("wm-ghost", 404)
    await fetch(client, staff_token(), expected_status=404, user_id="wm-ghost")


async def test_two_follows_disagreeing_on_the_member_are_refused(client, people, rows):
    await rows.contact("wm-twice", 1)
    await rows.contact("wm-twice", 1)  # the same follow twice is fine
    assert names(await fetch(client, staff_token(), user_id="wm-twice")) == {"m1"}
    await rows.contact("wm-split", 1)
    await rows.contact("wm-split", 2)
    await fetch(client, staff_token(), expected_status=403, user_id="wm-split")


async def test_member_token_ignores_user_id(client, people):
    body = await fetch(client, token_for(1, 2), user_id=WM)
    assert names(body) == {"m2"}


@pytest.mark.parametrize("user_id", ["", " wm", "wm x", "wm\n", "好", "x" * 129])
async def test_bad_user_id(client, people, user_id):
    body = await fetch(client, staff_token(), expected_status=400, user_id=user_id)
    assert list(body["data"]["errors"]) == ["user_id"]


async def test_mapping_learnt_in_one_statement_then_pages_cached(make_client, settings, people):
    client = await make_client(dataclasses.replace(settings, db_pool_min_size=4,
                                                   db_pool_max_size=4))
    counter = QueryCounter()
    await counter.attach(client.app[__import__("service.keys").keys.db_pool_key])
    first = await fetch(client, staff_token(), user_id=WM)
    assert len(counter.queries) == 1, "the lookup rides in the page's one statement"
    resp = await client.get("/api/v2/coupons", params={
        "client": "work", "type": "17", "coupon_type": "0", "user_id": WM},
        headers={"Authorization": f"Bearer {staff_token()}"})
    assert resp.headers["X-Cache"] == "miss"  # first page read through the member's key
    resp = await client.get("/api/v2/coupons", params={
        "client": "work", "type": "17", "coupon_type": "0", "user_id": WM},
        headers={"Authorization": f"Bearer {staff_token()}"})
    assert resp.headers["X-Cache"] == "hit" and len(counter.queries) == 2
    assert names(await resp.json()) == names(first)
    # ...under the member's own key: the member-id token now hits the same page.
    resp = await client.get("/api/v2/coupons", params={
        "client": "work", "type": "17", "coupon_type": "0"},
        headers={"Authorization": f"Bearer {token_for(1, 1)}"})
    assert resp.headers["X-Cache"] == "hit"


async def test_unfollow_is_seen_at_once(client, people, db):
    for _ in range(2):
        assert names(await fetch(client, staff_token(), user_id=WM)) == {"m1"}
    assert len(client.app[pages_key].contacts) == 1
    await db.execute("DELETE FROM yz_wecom_contact WHERE external_userid = $1", WM)
    await settle(client, db)
    assert len(client.app[pages_key].contacts) == 0
    await fetch(client, staff_token(), expected_status=403, user_id=WM)


async def test_repointed_follow_is_seen_at_once(client, people, db):
    assert names(await fetch(client, staff_token(), user_id=WM)) == {"m1"}
    assert names(await fetch(client, staff_token(), user_id=WM)) == {"m1"}
    await db.execute("UPDATE yz_wecom_contact SET uid = 2 WHERE external_userid = $1", WM)
    await settle(client, db)
    assert names(await fetch(client, staff_token(), user_id=WM)) == {"m2"}


@pytest.mark.parametrize("statement", [
    "TRUNCATE yz_wecom_contact",
    # Over 1000 follows in one statement: one tenant-wide message.
    "INSERT INTO yz_wecom_contact (uniacid, external_userid, staff_userid, uid) "
    "SELECT 1, 'bulk' || g, 'staff-9', 1 FROM generate_series(1, 1001) AS g",
])
async def test_bulk_and_truncate_forget_the_mappings(client, people, db, statement):
    # The rows `people` wrote notify too: once they are applied, the lookup below is the last
    # word on the mapping (else an invalidation landing during it refuses to store it).
    await settle(client, db)
    await fetch(client, staff_token(), user_id=WM)
    assert len(client.app[pages_key].contacts) == 1
    await db.execute(statement)
    await settle(client, db)
    assert len(client.app[pages_key].contacts) == 0


def test_a_lookup_that_started_before_an_invalidation_is_not_stored() -> None:
    cache = ContactCache(max_entries=2)
    before = cache.generation
    cache.forget((1, "s", "x"))
    assert cache.put((1, "s", "wm"), 1, before) is False and cache.get((1, "s", "wm")) is None
    assert cache.put((1, "s", "wm"), 1, cache.generation) is True
    for n in range(3):  # bounded: the least recently used goes
        cache.put((1, "s", f"e{n}"), n, cache.generation)
    assert len(cache) == 2 and cache.get((1, "s", "wm")) is None
