"""A page's answer, built once per page version: the headers, and for a keep-alive GET the whole
response as prepared bytes.

aiohttp builds every response from a header multidict: it adds Content-Length, Date, Server and
the connection header, checks each name and value for line breaks and serialises them, then
writes headers and body. For a page that work is the same every time but for two values (the
request id and the date), and it was a quarter of a local hit: with it gone a hit costs less
than aiohttp's own bare answer. `head_of` keeps, per page version, the status line and every
header but those two as bytes, and service/compat/aiohttp.py's `PageBytes` writes head, request
id, date and body in one `transport.write`.

Only where the bytes are exactly what aiohttp would have sent: an HTTP/1.1 GET whose connection
stays open (aiohttp adds no connection header then), without `If-None-Match` (a 304 has its own
headers). Anything else gets a `PageResponse`, aiohttp's own. tests/hotpath/test_prebuilt.py
checks that the bytes carry exactly the headers aiohttp's response to the same request does.

Both kinds of answer are complete: they carry every header the edge would add
(service/http/edge.py leaves a `COMPLETE` response as it is).
"""

from __future__ import annotations

import functools
import time
from email.utils import formatdate

from aiohttp import HttpVersion11, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from service.compat.aiohttp import PageBytes
from service.http.headers import CACHE_CONTROL, COMMON, PRIVATE, X_CACHE, X_REQUEST_ID


class PageResponse(web.Response):
    """A page (or its 304) as aiohttp's own response, every header in place."""


COMPLETE = (PageResponse, PageBytes)


def outcome_of(response: web.StreamResponse) -> str | None:
    """A response's cache outcome (X-Cache), for the request's log line and metrics."""
    if isinstance(response, PageBytes):
        return response.outcome
    return response.headers.get(X_CACHE)


@functools.lru_cache(maxsize=4096)
def page_headers(etag: str, outcome: str) -> CIMultiDictProxy[str]:
    """A page's headers, built once per page version (a web.Response copies them), with the ones
    the edge would add."""
    return CIMultiDictProxy(CIMultiDict({
        hdrs.CONTENT_TYPE: "application/json", hdrs.ETAG: f'"{etag}"', CACHE_CONTROL: PRIVATE,
        X_CACHE: outcome, **COMMON}))


@functools.lru_cache(maxsize=4096)
def head_of(etag: str, outcome: str, length: int) -> bytes:
    """The status line and headers of a page version, up to the request id's value: the page's
    headers and the Content-Length aiohttp would add."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in page_headers(etag, outcome).items())
    return f"HTTP/1.1 200 OK\r\n{lines}Content-Length: {length}\r\nX-Request-ID: ".encode(
        "ascii")


@functools.lru_cache(maxsize=1)
def _date_line(second: int) -> bytes:
    return f"\r\nDate: {formatdate(second, usegmt=True)}\r\n\r\n".encode("ascii")


def date_line() -> bytes:
    """The `Date` header's line, formatted once a second."""
    return _date_line(int(time.time()))


def etag_matches(header: str, etag: str) -> bool:
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return etag in candidates or "*" in candidates


def page_answer(request: web.Request, rid: str, body: bytes, etag: str, outcome: str,
                prepared: bool) -> web.StreamResponse:
    """The answer for a page, whichever layer it came from; `prepared`: prepared bytes allowed
    (the hot path is on, and service/compat/aiohttp.py supports this aiohttp)."""
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match is None:
        if (prepared and request.method == "GET" and request.version == HttpVersion11
                and request.keep_alive):
            return PageBytes(head_of(etag, outcome, len(body)), rid, body, date_line, outcome)
        response = PageResponse(body=body, headers=page_headers(etag, outcome))
    elif etag_matches(if_none_match, f'"{etag}"'):
        headers = CIMultiDict(page_headers(etag, outcome))
        del headers[hdrs.CONTENT_TYPE]
        response = PageResponse(status=304, headers=headers)
    else:
        response = PageResponse(body=body, headers=page_headers(etag, outcome))
    response.headers[X_REQUEST_ID] = rid
    return response


