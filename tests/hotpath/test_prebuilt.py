"""A local hit written as prepared bytes (service/hotpath/prebuilt.py) says exactly what
aiohttp's own response would have said, keeps the connection as aiohttp would, and is used only
where it may be."""

from __future__ import annotations

import asyncio

import pytest

from service.hotpath.prebuilt import head_parts
from tests.support.common import token_for
from tests.support.pages import fetch, settle

QUERY = "/api/v2/coupons?client=work&type=17"


def request_bytes(version: str = "1.1", extra: str = "") -> bytes:
    return (f"GET {QUERY} HTTP/{version}\r\nHost: t\r\n"
            f"Authorization: Bearer {token_for()}\r\n{extra}\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("ascii")
    status, *lines = head.rstrip("\r\n").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(": ")
        assert name.lower() not in headers, f"{name} twice"
        headers[name.lower()] = value
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


@pytest.fixture
async def hot(rows, client, db):
    """A page in the local layer: the next plain GET of it is a local hit."""
    await rows.member(1, 1)
    await rows.member_coupon(await rows.coupon(1))
    await settle(client, db)
    await fetch(client, token_for())
    _, headers = await fetch(client, token_for())
    assert headers["X-Cache"] == "local"
    return client


async def exchange(client, *requests: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """The requests pipelined on one connection, and the responses read back in order."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"".join(requests))
        await writer.drain()
        async with asyncio.timeout(10):
            return [await read_response(reader) for _ in requests]
    finally:
        writer.close()


async def test_prepared_bytes_say_what_aiohttps_response_says(hot):
    head_parts.cache_clear()
    # Two pipelined keep-alive GETs (prepared bytes), then one that closes the connection:
    # aiohttp's own response, with `Connection: close` the only header of its own.
    (s1, h1, b1), (s2, h2, b2), (s3, h3, b3) = await exchange(
        hot, request_bytes(extra="X-Request-ID: first\r\n"), request_bytes(),
        request_bytes(extra="Connection: close\r\n"))
    assert head_parts.cache_info().hits >= 1, "the keep-alive hits were prepared bytes"
    assert s1 == s2 == s3 == "HTTP/1.1 200 OK"
    assert b1 == b2 == b3
    assert h1["x-request-id"] == "first" and h2["x-request-id"] != "first"
    assert h3.pop("connection") == "close" and "connection" not in h1
    for headers in (h1, h2, h3):
        headers.pop("x-request-id")
        assert headers.pop("date").endswith(" GMT")
    assert h1 == h2 == h3
    assert h1["x-cache"] == "local" and h1["server"] == "coupons"
    assert h1["x-content-type-options"] == "nosniff"
    assert h1["cache-control"] == "private, no-cache" and h1["etag"].startswith('"')
    assert int(h1["content-length"]) == len(b1)


async def test_http_10_keep_alive_gets_aiohttps_response(hot):
    head_parts.cache_clear()
    keep = "Connection: keep-alive\r\n"
    (s1, h1, b1), (s2, h2, b2) = await exchange(
        hot, request_bytes("1.0", keep), request_bytes("1.0", keep))
    assert s1 == s2 == "HTTP/1.0 200 OK" and b1 == b2
    for headers in (h1, h2):
        assert headers["connection"].lower() == "keep-alive" and headers["x-cache"] == "local"
    assert head_parts.cache_info().currsize == 0, "never prepared bytes for HTTP/1.0"


async def test_if_none_match_still_gets_304(hot):
    _, headers = await fetch(hot, token_for())
    head_parts.cache_clear()
    _, again = await fetch(hot, token_for(), expected_status=304,
                           headers={"If-None-Match": headers["ETag"]})
    assert again["X-Cache"] == "local" and again["ETag"] == headers["ETag"]
    assert head_parts.cache_info().currsize == 0


FORM = b"client=work&type=17"


def post_bytes(extra: str = "", body: bytes = FORM) -> bytes:
    return (f"POST /api/v2/coupons HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {token_for()}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def test_a_posted_form_gets_the_same_bytes_as_aiohttps_response(hot):
    # The first POST is resolved by the handler (and kept in the memo), the second is a local
    # hit on the synchronous path as prepared bytes, the third closes: aiohttp's own response.
    (s1, h1, b1), (s2, h2, b2), (s3, h3, b3) = await exchange(
        hot, post_bytes(), post_bytes(), post_bytes("Connection: close\r\n"))
    head_parts.cache_clear()
    (s4, h4, b4), = await exchange(hot, post_bytes())
    assert head_parts.cache_info().misses == 1, "a POST's local hit is written as prepared bytes"
    assert s1 == s2 == s3 == s4 == "HTTP/1.1 200 OK"
    assert b1 == b2 == b3 == b4
    # The GET of the same page says the same.
    (_, get_headers, get_body), = await exchange(hot, request_bytes())
    assert get_body == b1
    assert h3.pop("connection") == "close"
    for headers in (h1, h2, h3, h4, get_headers):
        headers.pop("x-request-id")
        headers.pop("date")
    assert h1 == h2 == h3 == h4 == get_headers
    assert h4["x-cache"] == "local"

