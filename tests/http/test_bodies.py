"""Every way a body can be wrong, and every way it can be right: form, multipart and JSON bodies
over the query string, malformed and unsupported bodies, the 64 KiB limit (with and without
Content-Length, once inflated), repeated keys and compressed bodies.

Each refusal is the error envelope with a Chinese `msg`; the parameters' own rules:
test_params.py.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import aiohttp
import pytest

from service.http.coupons import PATH_SHORT
from tests.support.api import check_error, coupons, items_of
from tests.support.params import CJK, VALID, assert_names

LIMIT = 64 * 1024


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
