"""SQL injection strings in every parameter, header and token claim: harmless. Every statement
is parameterised (sql/queries/*.sql through aiosql); here that is checked from the outside:
no 5xx, nobody else's rows, every table intact."""

from __future__ import annotations

import json

import jwt
import pytest

from service.http.coupons import PATH_MALL_ROUTER, PATH_SHORT, ROUTE_NAME
from tests.support.api import check_error, items_of
from tests.support.common import NOW, SECRET, token_for

PAYLOADS = [
    "' OR '1'='1",
    "1 OR 1=1",
    "1; DROP TABLE yz_member_coupon; --",
    "1' UNION SELECT uid, uniacid, nickname FROM yz_member --",
    "1)) OR ((1=1",
    "$1",
    ":member_id",
    "%' OR uid IS NOT NULL --",
    "\\'; TRUNCATE yz_wecom_contact; --",
    "1/**/OR/**/1=1",
    "' || pg_sleep(5) || '",
    "wm'; UPDATE yz_wecom_contact SET uid = 2; --",
]
PARAMS = ["client", "type", "page", "status_request", "coupon_type", "pagesize", "user_id",
          "i", "route"]
TABLES = ["yz_member", "yz_member_coupon", "yz_coupon", "yz_wecom_contact",
          "yz_tenant_setting"]


@pytest.fixture
async def arranged(rows) -> dict[str, int]:
    await rows.tenant(1)
    await rows.member(1, 1)
    await rows.member(2, 1)
    mine = await rows.coupon(1, name="mine")
    theirs = await rows.coupon(1, name="theirs")
    await rows.member_coupon(mine, uid=1)
    await rows.member_coupon(theirs, uid=2)
    await rows.contact("wm-1", 1)
    return {"mine": mine}


async def counts(db) -> dict[str, int]:
    # Table names from the fixed list above, never from input.
    return {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


def assert_harmless(status: int, text: str) -> None:
    assert status < 500, text
    assert "theirs" not in text
    if status != 200:
        check_error(json.loads(text))


async def test_payloads_in_every_parameter_on_get_and_json_post(client, arranged, db):
    before = await counts(db)
    staff = token_for(1, None)
    for payload in PAYLOADS:
        for name in PARAMS:
            path = PATH_MALL_ROUTER if name in ("i", "route") else PATH_SHORT
            base = {"client": "work", "type": "17"}
            if path == PATH_MALL_ROUTER:
                base |= {"route": ROUTE_NAME, "i": "1"}
            token = staff if name == "user_id" else token_for(1, 1)
            for method in ("GET", "POST"):
                params = {**base, name: payload}
                kwargs = ({"params": params} if method == "GET"
                          else {"params": base, "json": params})
                resp = await client.request(method, path,
                                            headers={"Authorization": f"Bearer {token}"},
                                            **kwargs)
                text = await resp.text()
                assert_harmless(resp.status, text)
                if name == "user_id":
                    assert resp.status in (400, 403), text  # a string, never a query
                elif name == "route":
                    # The router reads `route` from the query string only.
                    assert resp.status == (404 if method == "GET" else 200), text
                else:
                    assert resp.status in (400, 403), text
    assert await counts(db) == before


async def test_payloads_as_body_keys_and_form_values(client, arranged, db):
    before = await counts(db)
    for payload in PAYLOADS:
        resp = await client.post(PATH_SHORT, data={"client": "work", "type": "17",
                                                   payload: payload, "coupon_type": "0"},
                                 headers={"Authorization": f"Bearer {token_for(1, 1)}"})
        body = await resp.json()
        assert resp.status == 200  # unknown keys are ignored
        assert [i["belongs_to_coupon"]["name"] for i in items_of(body)] == ["mine"]
    assert await counts(db) == before


@pytest.mark.parametrize("header", ["Authorization", "X-Request-ID", "If-None-Match",
                                    "Content-Type", "Cookie", "Accept-Language", "Referer",
                                    "X-Forwarded-For", "User-Agent"])
async def test_payloads_in_headers(client, arranged, db, header):
    before = await counts(db)
    for payload in PAYLOADS:
        headers = {"Authorization": f"Bearer {token_for(1, 1)}", header: payload}
        if header == "Authorization":
            headers[header] = f"Bearer {payload}"
        resp = await client.post(PATH_SHORT, params={"client": "work", "type": "17",
                                                     "coupon_type": "0"},
                                 data=b"", headers=headers)
        text = await resp.text()
        assert_harmless(resp.status, text)
        assert resp.status == (401 if header == "Authorization" else 200), text
        assert resp.headers["X-Request-ID"] != payload
        assert payload not in text
    assert await counts(db) == before


async def test_payloads_in_signed_claims_are_data(client, arranged, db, rows):
    """A correctly signed token whose staff id is an injection string: it reaches SQL only as a
    bound value. A follow recorded under that very string works, and nothing else does."""
    before = await counts(db)
    now = int(NOW.timestamp())
    for payload in PAYLOADS:
        token = jwt.encode({"uniacid": 1, "sub": payload, "iat": now, "exp": now + 60},
                           SECRET, algorithm="HS256")
        resp = await client.get(PATH_SHORT, params={"client": "work", "type": "17",
                                                    "user_id": "wm-1"},
                                headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 403, await resp.text()
    assert await counts(db) == before
    evil = PAYLOADS[0]
    await rows.contact("wm-1", 1, staff=evil)
    token = jwt.encode({"uniacid": 1, "sub": evil, "iat": now, "exp": now + 60}, SECRET,
                       algorithm="HS256")
    resp = await client.get(PATH_SHORT, params={"client": "work", "type": "17",
                                                "coupon_type": "0", "user_id": "wm-1"},
                            headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    assert [i["belongs_to_coupon"]["name"] for i in items_of(await resp.json())] == ["mine"]


async def test_payload_in_the_use_path(client, arranged, db):
    before = await counts(db)
    for payload in ("1 OR 1=1", "1;DROP TABLE yz_member", "1'--"):
        resp = await client.post(f"/internal/member-coupons/{payload}/use")
        assert resp.status == 404  # the route takes digits only
    assert await counts(db) == before
