"""A page's answer: the headers, built once per page version, and for a keep-alive GET or POST the
whole response as prepared bytes.

aiohttp builds every response from a header multidict: it adds Content-Length, Date, Server and
the connection header, checks each name and value for line breaks and serialises them, then
writes headers and body. For a page that work is the same every time but for two values (the
request id and the date), and it was a quarter of a local hit: with it gone a hit costs less
than aiohttp's own bare answer. `head_of` gives a page version's status line and every header
but those two as bytes (joined from parts kept per cache outcome, the ETag and the length put in
between), and service/compat/aiohttp.py's `PageBytes` writes head, request id, date and body in
one `transport.write`.

Only where the bytes are exactly what aiohttp would have sent: an HTTP/1.1 GET or POST whose
connection stays open (aiohttp adds no connection header then), without `If-None-Match` (a 304 has
its own headers). Anything else gets a `PageResponse`, aiohttp's own. tests/hotpath/test_prebuilt.py
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
# A HEAD's answer has no body; a 200 to a GET or a POST has the same bytes.
PREPARED_METHODS = frozenset({"GET", "POST"})


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


# Stands in for a page's ETag while the fixed parts of its head are cut (no ETag holds it).
_ETAG = "\x00"


@functools.lru_cache(maxsize=16)
def head_parts(outcome: str) -> tuple[bytes, bytes]:
    """The fixed parts of a page's head for an outcome: up to the ETag's value, and from after
    it up to Content-Length's value. Only the ETag and the length differ between page versions,
    and a memo per page version missed on nearly every page with 20,000 active members."""
    lines = "".join(f"{name}: {value}\r\n"
                    for name, value in page_headers(_ETAG, outcome).items())
    before, after = f"HTTP/1.1 200 OK\r\n{lines}Content-Length: ".encode("ascii").split(
        _ETAG.encode("ascii"))
    return before, after


def head_of(etag: str, outcome: str, length: int) -> bytes:
    """The status line and headers of a page version, up to the request id's value: the page's
    headers and the Content-Length aiohttp would add (an ETag is 16 hex digits: service/cache)."""
    before, after = head_parts(outcome)
    return b"".join((before, etag.encode("ascii"), after, b"%d\r\nX-Request-ID: " % length))


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
        if (prepared and request.method in PREPARED_METHODS and request.version == HttpVersion11
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


