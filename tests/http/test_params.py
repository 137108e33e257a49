"""Every parameter's rule from the contract: `client` and `type`, the ranges, strict integers,
defaults and unknown parameters, several errors at once, the same rules on every route.

Each 400 is the error envelope with a Chinese `msg` that names the parameter and `data.errors`
keyed by it; bad input is answered at the edge and never turns into a database error. The ways
a body can be wrong: test_bodies.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.http.coupons import PATH_MALL_ROUTER, PATH_PLUGIN, PATH_SHORT
from tests.support.api import check_error, coupons, items_of
from tests.support.common import SECRET, token_for
from tests.support.params import VALID, assert_names

INT_FIELDS = ("type", "page", "status_request", "coupon_type", "pagesize")
# Strings that are not a decimal integer, whatever int() or float() would make of them.
NOT_INTS = [
    "1.5", "1.0", "1e3", "abc", "", " 1", "1 ", "0x10", "0b1", "0o7", "1_0", "true", "false",
    "null", "NaN", "inf", "１", "٣", "--1", "+-1", "1,2", "[1]",
    "9" * 19, "1" * 100, "9" * 5000,
]


async def get_params(http, tok: str, params: dict[str, Any], *, expected_status: int = 400,
                     path: str = PATH_SHORT) -> dict[str, Any]:
    """GET with exactly `params` (None values left out): for the `client` parameter, whose
    name the shared helper's first argument takes."""
    query = {k: str(v) for k, v in params.items() if v is not None}
    resp = await http.get(path, params=query, headers={"Authorization": f"Bearer {tok}"})
    body = await resp.json()
    assert resp.status == expected_status, body
    if expected_status != 200:
        check_error(body)
    return body


# --- client and type -------------------------------------------------------------------------

async def test_client_missing(client, tok):
    body = await get_params(client, tok, {"type": 17})
    assert_names(body, "client")


@pytest.mark.parametrize("value", ["", "Work", "WORK", " work", "work ", "wechat", "work\x00",
                                   "h5", "workwork"])
async def test_client_other_value(client, tok, value):
    body = await get_params(client, tok, {"client": value, "type": 17})
    assert_names(body, "client")


@pytest.mark.parametrize("value", [17, True, None, ["work"], {"a": "work"}])
async def test_client_non_string_in_json(client, tok, value):
    raw = json.dumps({"client": value, "type": 17}).encode()
    body = await coupons(client, tok, expected_status=400, method="POST", raw_body=raw,
                         headers={"Content-Type": "application/json"})
    assert_names(body, "client")


async def test_type_missing(client, tok):
    body = await coupons(client, tok, expected_status=400, type=None)
    assert_names(body, "type")


@pytest.mark.parametrize("value", [0, 1, 16, 18, 170, -17, "017x", "17.0"])
async def test_type_must_be_17(client, tok, value):
    body = await coupons(client, tok, expected_status=400, type=value)
    assert_names(body, "type")


async def test_type_17_as_string_and_as_json_int(client, tok):
    await coupons(client, tok, type="17")
    await coupons(client, tok, method="POST", body="json", type=17)


# --- ranges ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("page", 0), ("page", -1), ("page", 100_001), ("page", 10**9),
    ("status_request", 0), ("status_request", 4), ("status_request", -1),
    ("coupon_type", -1), ("coupon_type", 11), ("coupon_type", 100),
    ("pagesize", 0), ("pagesize", -1), ("pagesize", 51), ("pagesize", 1000),
])
async def test_out_of_range(client, tok, field, value):
    body = await coupons(client, tok, expected_status=400, **{field: value})
    assert_names(body, field)


@pytest.mark.parametrize(("field", "value"), [
    ("page", 1), ("page", 100_000),
    ("status_request", 1), ("status_request", 2), ("status_request", 3),
    ("coupon_type", 0), ("coupon_type", 10),
    ("pagesize", 1), ("pagesize", 50),
])
async def test_range_bounds_accepted(client, tok, field, value):
    body = await coupons(client, tok, **{field: value})
    data = body["data"]
    if field == "page":
        assert data["current_page"] == value
    if field == "pagesize":
        assert data["per_page"] == value
    if field == "status_request":
        assert len(data["search_array"]) == (11 if value == 1 else 10)


async def test_page_past_the_last_is_an_empty_list(client, tok):
    body = await coupons(client, tok, page=100_000, pagesize=50)
    assert items_of(body) == []
    assert body["data"]["total"] == 1 and body["data"]["last_page"] == 1
    assert body["data"]["current_page"] == 100_000


# --- strict integers -------------------------------------------------------------------------

@pytest.mark.parametrize("value", NOT_INTS, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize("field", INT_FIELDS)
async def test_not_an_int_in_query(client, tok, field, value):
    body = await coupons(client, tok, expected_status=400, **{field: value})
    assert_names(body, field)


@pytest.mark.parametrize("value", ["1.5", "1e3", "abc", "", " 1", "1 ", "0x10", "true",
                                   "\t2", "2\n", "9" * 19], ids=repr)
@pytest.mark.parametrize("body_kind", ["form", "multipart", "json"])
async def test_not_an_int_in_body(client, tok, body_kind, value):
    body = await coupons(client, tok, expected_status=400, method="POST", body=body_kind,
                         page=value)
    assert_names(body, "page")


@pytest.mark.parametrize("value", [1.5, 1.0, 2.0, 1e3, True, False, None, [1], {"v": 1},
                                   10**30, -(10**30), 2**63, "1.5"],
                         ids=repr)
@pytest.mark.parametrize("field", INT_FIELDS)
async def test_not_an_int_in_json(client, tok, field, value):
    payload = {**VALID, field: value}
    raw = json.dumps(payload).encode()
    body = await coupons(client, tok, expected_status=400, method="POST", raw_body=raw,
                         headers={"Content-Type": "application/json"})
    assert_names(body, field)


async def test_json_null_is_an_error_not_the_default(client, tok):
    raw = json.dumps({"client": "work", "type": 17, "page": None}).encode()
    body = await coupons(client, tok, expected_status=400, method="POST", raw_body=raw,
                         headers={"Content-Type": "application/json"})
    assert_names(body, "page")


@pytest.mark.parametrize(("value", "expected"), [("2", 2), ("02", 2), ("+2", 2)])
async def test_decimal_digit_strings_accepted(client, tok, value, expected):
    body = await coupons(client, tok, page=value)
    assert body["data"]["current_page"] == expected


async def test_json_ints_and_digit_strings_accepted(client, tok):
    body = await coupons(client, tok, method="POST", body="json", page=3, pagesize="7",
                         status_request=1, coupon_type=0)
    assert body["data"]["current_page"] == 3 and body["data"]["per_page"] == 7


# --- defaults and unknown parameters ---------------------------------------------------------

async def test_defaults_visible_in_response(client, tok, rows):
    # Besides the mall-wide unused coupon: a used one (status 3) and a goods coupon (type 4).
    used = await rows.coupon(1, name="已使用", use_type=0)
    await rows.member_coupon(used, uid=1, uniacid=1, used=1)
    goods = await rows.coupon(1, name="指定商品券", use_type=2, goods_names=["商品"])
    await rows.member_coupon(goods, uid=1, uniacid=1)
    body = await coupons(client, tok)
    data = body["data"]
    assert data["current_page"] == 1  # page 1
    assert data["per_page"] == 15  # pagesize 15
    assert len(data["search_array"]) == 11  # status 1: the unused tab has 快过期
    names = [item["belongs_to_coupon"]["name"] for item in items_of(body)]
    assert names == ["平台券"]  # status 1 (not used), coupon_type 1 (use_type 0 only)
    explicit = await coupons(client, tok, page=1, pagesize=15, status_request=1, coupon_type=1)
    assert explicit == body


async def test_unknown_parameters_are_ignored(client, tok, rows):
    await rows.member(2, 1)
    other = await rows.coupon(1, name="别人的券")
    await rows.member_coupon(other, uid=2, uniacid=1)
    base = await coupons(client, tok)
    noisy = await coupons(client, tok, foo="bar", uid=2, member_id=2, uniacid=2, sort="x;DROP",
                          per_page=1, limit=1, offset=5, route="x", i="abc")
    assert noisy == base
    json_noisy = await coupons(client, tok, method="POST", body="json", member_id=2,
                               nested={"a": [1, 2]}, flag=True)
    assert json_noisy == base


async def test_several_errors_all_reported(client, tok):
    body = await get_params(client, tok, {"client": "x", "type": 1, "page": 0,
                                          "status_request": 9, "coupon_type": 99, "pagesize": 0})
    assert_names(body, "client", "type", "page", "status_request", "coupon_type", "pagesize")


async def test_several_errors_in_json_body(client, tok):
    raw = json.dumps({"type": "17", "page": 1.5, "pagesize": True}).encode()
    body = await coupons(client, tok, expected_status=400, method="POST", raw_body=raw,
                         headers={"Content-Type": "application/json"})
    assert_names(body, "client", "page", "pagesize")


async def test_error_names_the_mall_router_tenant(client, tok):
    body = await coupons(client, tok, expected_status=400, path=PATH_MALL_ROUTER, i="x",
                         pagesize=99)
    assert_names(body, "i", "pagesize")


@pytest.mark.parametrize("path", [PATH_PLUGIN, PATH_MALL_ROUTER])
async def test_rules_are_the_same_on_every_route(client, tok, path):
    body = await coupons(client, tok, expected_status=400, path=path, pagesize=51, page="1.5")
    assert_names(body, "page", "pagesize")


# --- bad input never hurts the service -------------------------------------------------------

async def test_bad_input_never_reaches_the_database(client, tok):
    evil = ["1; DROP TABLE yz_member_coupon", "1' OR '1'='1", "1)--", "$1", "\x00", "%00",
            "９", "1/*", "1e999", "-9223372036854775809", "99999999999999999999"]
    responses = []
    for value in evil:
        for field in INT_FIELDS:
            responses.append(await coupons(client, tok, expected_status=400, **{field: value}))
        responses.append(await get_params(client, tok, {"client": value, "type": 17}))
        responses.append(await coupons(client, tok, expected_status=400, method="POST",
                                       body="json", page=value))
    for body in responses:
        text = json.dumps(body, ensure_ascii=False)
        for leak in ("Traceback", "asyncpg", "SELECT", "psql", "postgres", SECRET):
            assert leak not in text
    # The service and its pool still answer a valid request with the member's coupon.
    body = await coupons(client, tok, coupon_type=0)
    assert [i["belongs_to_coupon"]["name"] for i in items_of(body)] == ["平台券"]


async def test_largest_values_reach_the_database_without_error(client, tok):
    body = await coupons(client, tok, page=100_000, pagesize=50, coupon_type=10,
                         status_request=3)
    assert items_of(body) == [] and body["data"]["total"] == 0


async def test_memoised_validation_keeps_types_apart(client, db, rows):
    """A valid `page=1` must not make `true` or `1.0` valid for the next caller."""
    await rows.member(1, 1)
    token = token_for()
    await coupons(client, token, method="POST", body="json", page=1)
    for bad in (True, 1.0):
        body = await coupons(client, token, method="POST", body="json", page=bad,
                             expected_status=400)
        assert "page" in body["data"]["errors"]
