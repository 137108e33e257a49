"""Every parameter's rule from the contract, and every way a body can be wrong.

Each 400 is the error envelope with a Chinese `msg` that names the parameter and `data.errors`
keyed by it; bad input is answered at the edge and never turns into a database error.
"""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import aiohttp
import pytest

from service.http.coupons import PATH_MALL_ROUTER, PATH_PLUGIN, PATH_SHORT
from tests.conftest import SECRET, token_for
from tests.helpers import check_error, coupons, items_of

CJK = re.compile(r"[\u4e00-\u9fff]")
INT_FIELDS = ("type", "page", "status_request", "coupon_type", "pagesize")
LIMIT = 64 * 1024
# Strings that are not a decimal integer, whatever int() or float() would make of them.
NOT_INTS = [
    "1.5", "1.0", "1e3", "abc", "", " 1", "1 ", "0x10", "0b1", "0o7", "1_0", "true", "false",
    "null", "NaN", "inf", "１", "٣", "--1", "+-1", "1,2", "[1]",
    "9" * 19, "1" * 100, "9" * 5000,
]
VALID = {"client": "work", "type": 17}


@pytest.fixture
async def tok(rows) -> str:
    """Member 1 of tenant 1 holding one unused mall-wide coupon (coupon_type 1)."""
    await rows.member(1, 1)
    cid = await rows.coupon(1, name="平台券", use_type=0)
    await rows.member_coupon(cid, uid=1, uniacid=1)
    return token_for(1, 1)


def assert_names(body: dict[str, Any], *fields: str) -> None:
    """A 400 whose errors are keyed by exactly `fields` and whose msg names one of them."""
    check_error(body)
    errors = body["data"]["errors"]
    assert set(errors) == set(fields), errors
    msg = body["msg"]
    assert CJK.search(msg), msg
    assert "Traceback" not in msg and "\n" not in msg
    named = [f for f in fields if re.search(rf"(?<![a-z_]){f}(?![a-z_])", msg)]
    assert named, f"msg {msg!r} names none of {fields}"
    assert msg in errors[named[0]], (msg, errors)
    for field in fields:
        for message in errors[field]:
            assert CJK.search(message) and field in message, (field, message)


async def post_raw(client, tok: str, data: Any, content_type: str | None, *,
                   path: str = PATH_SHORT, query: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None):
    hdrs = {"Authorization": f"Bearer {tok}", **(headers or {})}
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    resp = await client.post(path, params=query or {}, data=data, headers=hdrs)
    text = await resp.text()
    try:
        return resp, json.loads(text)
    except ValueError:
        return resp, {"not_json": text}


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


# --- bodies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body_kind", ["form", "multipart", "json"])
async def test_post_bodies_accepted(client, tok, body_kind):
    body = await coupons(client, tok, method="POST", body=body_kind, pagesize=2, coupon_type=0)
    assert body["data"]["per_page"] == 2
    assert [i["belongs_to_coupon"]["name"] for i in items_of(body)] == ["平台券"]


async def _post_over_query(client, tok, data=None, json_body=None):
    resp = await client.post(
        PATH_SHORT,
        params={"client": "nope", "type": "1", "page": "abc", "pagesize": "5"},
        data=data, json=json_body, headers={"Authorization": f"Bearer {tok}"},
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_form_body_overrides_query(client, tok):
    body = await _post_over_query(client, tok, data={"client": "work", "type": "17",
                                                     "page": "1", "pagesize": "2"})
    assert body["data"]["per_page"] == 2 and body["data"]["current_page"] == 1


async def test_multipart_body_overrides_query(client, tok):
    form = aiohttp.FormData()
    for key, value in {"client": "work", "type": "17", "page": "1", "pagesize": "3"}.items():
        form.add_field(key, value)
    form._is_multipart = True
    body = await _post_over_query(client, tok, data=form)
    assert body["data"]["per_page"] == 3


async def test_json_body_overrides_query(client, tok):
    body = await _post_over_query(client, tok, json_body={"client": "work", "type": 17,
                                                          "page": 1, "pagesize": 4})
    assert body["data"]["per_page"] == 4


async def test_body_supplements_query(client, tok):
    resp, body = await post_raw(client, tok, b"pagesize=6", "application/x-www-form-urlencoded",
                                query={"client": "work", "type": "17", "page": "2"})
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 6 and body["data"]["current_page"] == 2


async def test_bad_body_value_is_not_rescued_by_query(client, tok):
    resp, body = await post_raw(client, tok, b'{"pagesize": "abc"}', "application/json",
                                query={"client": "work", "type": "17", "pagesize": "5"})
    assert resp.status == 400
    assert_names(body, "pagesize")


@pytest.mark.parametrize("raw", [
    b'{"client": "work",', b"{client: work}", b"{'client': 'work'}", b'{"a": 1} x',
    b"\xff\xfe{}", b'{"client": "work", "type": 17,}', b"NaN", b"\x00",
], ids=repr)
async def test_malformed_json(client, tok, raw):
    resp, body = await post_raw(client, tok, raw, "application/json",
                                query={"client": "work", "type": "17"})
    assert resp.status == 400
    check_error(body)
    assert "body" in body["data"]["errors"] and CJK.search(body["msg"])
    assert "JSON" in body["msg"]


@pytest.mark.parametrize("raw", [b"[1, 2]", b'[{"client": "work", "type": 17}]', b'"work"',
                                 b"17", b"null", b"true"], ids=repr)
async def test_json_body_not_an_object(client, tok, raw):
    resp, body = await post_raw(client, tok, raw, "application/json; charset=utf-8",
                                query={"client": "work", "type": "17"})
    assert resp.status == 400
    check_error(body)
    assert list(body["data"]["errors"]) == ["body"] and CJK.search(body["msg"])


async def test_invalid_form_encoding(client, tok):
    resp, body = await post_raw(client, tok, b"client=work&type=17&page=\xff\xfe",
                                "application/x-www-form-urlencoded",
                                query={"client": "work", "type": "17"})
    assert resp.status == 400
    check_error(body)
    assert list(body["data"]["errors"]) == ["body"] and CJK.search(body["msg"])


async def test_form_with_unknown_charset(client, tok):
    """A form body declaring a charset nobody knows is a bad request, not a crash."""
    resp, body = await post_raw(client, tok, b"client=work&type=17",
                                "application/x-www-form-urlencoded; charset=no-such-charset")
    assert resp.status == 400, await resp.text()
    check_error(body)


def _multipart(boundary: str, *parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, value, ctype in parts:
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def test_multipart_field_with_invalid_utf8(client, tok):
    raw = _multipart("bnd", ("client", b"work", None), ("type", b"17", None),
                     ("page", b"\xff\xfe", None))
    resp, body = await post_raw(client, tok, raw, "multipart/form-data; boundary=bnd")
    assert resp.status == 400, body
    check_error(body)


async def test_multipart_field_with_unknown_charset(client, tok):
    """A part declaring a charset nobody knows is a bad request, not a crash."""
    raw = _multipart("bnd", ("client", b"work", "text/plain; charset=no-such-charset"),
                     ("type", b"17", None))
    resp, body = await post_raw(client, tok, raw, "multipart/form-data; boundary=bnd")
    assert resp.status == 400, body
    check_error(body)


async def test_multipart_built_by_hand_accepted(client, tok):
    raw = _multipart("bnd", ("client", b"work", None), ("type", b"17", "text/plain"),
                     ("pagesize", b"7", "text/plain; charset=utf-8"))
    resp, body = await post_raw(client, tok, raw, "multipart/form-data; boundary=bnd")
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 7


async def test_multipart_without_boundary(client, tok):
    resp = await client.post(PATH_SHORT, data=b"--x\r\n\r\n",
                             headers={"Authorization": f"Bearer {tok}",
                                      "Content-Type": "multipart/form-data"})
    assert resp.status == 400, await resp.text()
    check_error(await resp.json())


async def test_multipart_with_wrong_boundary(client, tok):
    raw = (b"--other\r\nContent-Disposition: form-data; name=\"client\"\r\n\r\nwork\r\n"
           b"--other--\r\n")
    resp, body = await post_raw(client, tok, raw, "multipart/form-data; boundary=expected",
                                query={"client": "work", "type": "17"})
    assert resp.status == 400
    check_error(body)
    assert "body" in body["data"]["errors"]


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/xml",
                                   "application/octet-stream", "application/jsonx",
                                   "text/json", "image/png"])
async def test_unsupported_content_type_with_body(client, tok, ctype):
    raw = b'{"client": "work", "type": 17}'
    if ctype is None:
        resp = await client.post(PATH_SHORT, params=VALID, data=raw,
                                 headers={"Authorization": f"Bearer {tok}"})
        body = await resp.json()
    else:
        resp, body = await post_raw(client, tok, raw, ctype,
                                    query={"client": "work", "type": "17"})
    assert resp.status == 400
    check_error(body)
    assert list(body["data"]["errors"]) == ["body"] and CJK.search(body["msg"])


@pytest.mark.parametrize("ctype", ["application/json", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=abc", "text/plain",
                                   "application/xml", None])
async def test_empty_body_with_any_content_type(client, tok, ctype):
    resp, body = await post_raw(client, tok, b"", ctype,
                                query={"client": "work", "type": "17", "pagesize": "9"})
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 9


async def test_whitespace_json_body_is_empty(client, tok):
    resp, body = await post_raw(client, tok, b"  \r\n ", "application/json",
                                query={"client": "work", "type": "17", "pagesize": "8"})
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 8


def _json_of_size(size: int) -> bytes:
    head = b'{"client": "work", "type": 17, "pad": "'
    tail = b'"}'
    raw = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(raw) == size
    return raw


async def test_body_of_exactly_64_kib_is_accepted(client, tok):
    resp, body = await post_raw(client, tok, _json_of_size(LIMIT), "application/json")
    assert resp.status == 200, body


@pytest.mark.parametrize("ctype", ["application/json", "application/x-www-form-urlencoded",
                                   "text/plain"])
async def test_body_over_64_kib_with_content_length(client, tok, ctype):
    raw = _json_of_size(LIMIT + 1) if ctype == "application/json" else b"a=" + b"x" * LIMIT
    resp, body = await post_raw(client, tok, raw, ctype)
    assert resp.status == 413
    check_error(body)
    assert CJK.search(body["msg"])


async def test_multipart_body_over_64_kib(client, tok):
    form = aiohttp.FormData()
    form.add_field("client", "work")
    form.add_field("type", "17")
    form.add_field("pad", "x" * (LIMIT + 10))
    form._is_multipart = True
    resp = await client.post(PATH_SHORT, data=form, headers={"Authorization": f"Bearer {tok}"})
    assert resp.status == 413
    check_error(await resp.json())


@pytest.mark.parametrize("ctype", ["application/json", "application/x-www-form-urlencoded",
                                   "text/plain"])
async def test_body_over_64_kib_chunked(client, tok, ctype):
    async def chunks():
        yield b'{"client": "work", "type": 17, "pad": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    resp = await client.post(PATH_SHORT, data=chunks(),
                             headers={"Authorization": f"Bearer {tok}", "Content-Type": ctype})
    assert resp.status == 413
    check_error(await resp.json())


async def test_small_chunked_json_body_accepted(client, tok):
    async def chunks():
        yield b'{"client": "work",'
        yield b' "type": 17, "pagesize": 4}'

    resp = await client.post(PATH_SHORT, data=chunks(),
                             headers={"Authorization": f"Bearer {tok}",
                                      "Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["data"]["per_page"] == 4


async def test_repeated_query_keys_last_wins(client, tok):
    resp = await client.get(
        PATH_SHORT,
        params=[("client", "nope"), ("client", "work"), ("type", "17"),
                ("pagesize", "abc"), ("pagesize", "3"), ("page", "1"), ("page", "2")],
        headers={"Authorization": f"Bearer {tok}"},
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 3 and body["data"]["current_page"] == 2


async def test_repeated_query_keys_last_wins_even_when_last_is_bad(client, tok):
    resp = await client.get(
        PATH_SHORT, params=[("client", "work"), ("type", "17"), ("page", "2"), ("page", "0")],
        headers={"Authorization": f"Bearer {tok}"},
    )
    assert resp.status == 400
    assert_names(await resp.json(), "page")


async def test_repeated_form_keys_last_wins(client, tok):
    resp, body = await post_raw(client, tok,
                                b"client=work&type=17&pagesize=50&pagesize=4&page=x&page=1",
                                "application/x-www-form-urlencoded")
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 4


async def test_repeated_multipart_keys_last_wins(client, tok):
    form = aiohttp.FormData()
    for key, value in [("client", "work"), ("type", "17"), ("pagesize", "x"),
                       ("pagesize", "5")]:
        form.add_field(key, value)
    form._is_multipart = True
    resp = await client.post(PATH_SHORT, data=form, headers={"Authorization": f"Bearer {tok}"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 5


async def test_repeated_json_keys_last_wins(client, tok):
    resp, body = await post_raw(client, tok,
                                b'{"client": "work", "type": 17, "pagesize": 50, "pagesize": 6}',
                                "application/json")
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 6


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


# --- compressed bodies -----------------------------------------------------------------------

async def test_gzip_json_body_accepted(client, tok):
    raw = gzip.compress(b'{"client": "work", "type": 17, "pagesize": 3}')
    resp, body = await post_raw(client, tok, raw, "application/json",
                                headers={"Content-Encoding": "gzip"})
    assert resp.status == 200, body
    assert body["data"]["per_page"] == 3


async def test_gzip_body_over_64_kib_once_inflated(client, tok):
    """The limit is on the body the service reads: a small gzip that inflates to 1 MiB is 413."""
    raw = gzip.compress(_json_of_size(1 << 20))
    assert len(raw) < LIMIT
    resp, body = await post_raw(client, tok, raw, "application/json",
                                headers={"Content-Encoding": "gzip"})
    assert resp.status == 413, body
    check_error(body)


@pytest.mark.parametrize("ctype", ["application/json", "application/x-www-form-urlencoded",
                                   "text/plain"])
async def test_corrupt_gzip_body(client, tok, ctype):
    """A body that is not what its Content-Encoding says is a bad request, not a crash."""
    resp, body = await post_raw(client, tok, b"client=work&type=17", ctype,
                                query={"client": "work", "type": "17"},
                                headers={"Content-Encoding": "gzip", "Connection": "close"})
    assert resp.status == 400, body
    check_error(body)


async def test_memoised_validation_keeps_types_apart(client, db, rows):
    """A valid `page=1` must not make `true` or `1.0` valid for the next caller."""
    await rows.member(1, 1)
    token = token_for()
    await coupons(client, token, method="POST", body="json", page=1)
    for bad in (True, 1.0):
        body = await coupons(client, token, method="POST", body="json", page=bad,
                             expected_status=400)
        assert "page" in body["data"]["errors"]
