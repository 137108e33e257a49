"""A local hit's whole HTTP response, written to the connection as prepared bytes.

aiohttp builds every response from a header multidict: it adds Content-Length, Date, Server and
the connection header, checks each name and value for line breaks and serialises them, then
writes headers and body. For a page held in this process that work is the same every time but
for two values (the request id and the date), and it was a quarter of a local hit: with it gone
a hit costs less than aiohttp's own bare answer. `PageBytes` keeps, per page version, the status
line and every header but those two as bytes (`head_of`), and writes head, request id, date and
body in one `transport.write`.

Only where the bytes are exactly what aiohttp would have sent: an HTTP/1.1 GET whose connection
stays open (aiohttp adds no connection header then), without `If-None-Match` (a 304 has its own
headers). Anything else gets an ordinary `web.Response` (service/api.py). Like aiohttp's writer
it waits when the connection's send buffer is full, and a connection already gone is a
ConnectionResetError, which aiohttp treats as a client that went away. It sets two fields of
aiohttp's StreamResponse that its own prepare sets (`_keep_alive`, `_body_length`): aiohttp is
pinned (pyproject.toml), and tests/test_prebuilt.py compares the result with aiohttp's own.
"""

from __future__ import annotations

import functools
import time
from email.utils import formatdate

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from service.http.edge import SERVER_NAME


@functools.lru_cache(maxsize=4096)
def page_headers(etag: str, outcome: str) -> CIMultiDictProxy[str]:
    """A page's headers, built once per page version (a web.Response copies them), with the
    ones service/edge.py would add."""
    return CIMultiDictProxy(CIMultiDict({
        "Content-Type": "application/json", "ETag": f'"{etag}"',
        "Cache-Control": "private, no-cache", "X-Cache": outcome,
        "Server": SERVER_NAME, "X-Content-Type-Options": "nosniff"}))


@functools.lru_cache(maxsize=4096)
def head_of(etag: str, outcome: str, length: int) -> bytes:
    """The status line and headers of a page version, up to the request id's value: the
    page's headers and the Content-Length aiohttp would add."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in page_headers(etag, outcome).items())
    return f"HTTP/1.1 200 OK\r\n{lines}Content-Length: {length}\r\nX-Request-ID: ".encode(
        "ascii")


@functools.lru_cache(maxsize=1)
def _date_line(second: int) -> bytes:
    return f"\r\nDate: {formatdate(second, usegmt=True)}\r\n\r\n".encode("ascii")


def date_line() -> bytes:
    """The `Date` header's line, formatted once a second."""
    return _date_line(int(time.time()))


class PageBytes(web.StreamResponse):
    """A 200 whose bytes are ready."""

    def __init__(self, head: bytes, request_id: str, body: bytes) -> None:
        super().__init__()
        self._head = head
        self._request_id = request_id
        self._page = body

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._eof_sent:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        # aiohttp keeps the connection open after this response only if it is told so, as its
        # own _prepare_headers does from request.keep_alive (true here: see the module).
        self._keep_alive = True
        transport.write(b"".join((self._head, self._request_id.encode("ascii"), date_line(),
                                  self._page)))
        self._body_length = len(self._page)
        await request.writer.drain()  # waits only when the send buffer is over its high mark
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        self._eof_sent = True
