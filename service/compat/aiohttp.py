"""The one module that touches aiohttp's internals, behind a version guard.

Three things aiohttp offers no public way to do:

1. **A connection's answer to malformed HTTP.** aiohttp answers a request it cannot parse (a
   header over the bound, a broken request line, bytes that are not HTTP) itself, before any
   route runs: as plain text that quotes the offending bytes (an Authorization header among
   them), with aiohttp's and Python's versions in `Server`. `runner(app, answer=...)` is an
   AppRunner whose connections answer with `answer(status)` instead (the contract's envelope,
   service/http/errors.py). Only the runners made here do: other aiohttp servers in the
   process are untouched (no import-time change to aiohttp).
2. **A response written as prepared bytes** (`PageBytes`, service/hotpath/prebuilt.py): it sets
   the two fields of StreamResponse that aiohttp's own `prepare` sets (`_keep_alive`,
   `_body_length`) and reads `_eof_sent`.
3. **A small body read without awaiting** (`buffered_body`, for the POST fast path in
   service/http/coupons.py): aiohttp's `read()` is a coroutine even when the whole body is
   already in the buffer, and a coroutine per POST was most of what kept a POST's local hit off
   the synchronous path. It takes the buffer with the public `read_nowait` and keeps it where
   `read()` looks first (`_read_bytes`), so `read()`, `post()` and `json()` still see the body.

On an aiohttp version these were not tested with (TESTED), none is used, and that is logged once:
the runner is aiohttp's own (malformed HTTP gets aiohttp's plain-text answer), pages are answered by
aiohttp's own response objects (`PREPARED_BYTES` is False), and a POST's body is read by aiohttp's
own `read()` on the handler's path (`buffered_body` answers None). tests/compat/ check both against
aiohttp's own output on the tested version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web, web_protocol, web_server

log = logging.getLogger(__name__)

TESTED = frozenset({"3.14.5"})
SUPPORTED = aiohttp.__version__ in TESTED
if not SUPPORTED:
    log.warning("aiohttp %s was not tested with this service: malformed HTTP is answered by "
                "aiohttp itself and pages without prepared bytes (service/compat/aiohttp.py)",
                aiohttp.__version__)
# Whether pages may be written as prepared bytes on this aiohttp.
PREPARED_BYTES = SUPPORTED

Answer = Callable[[int], web.StreamResponse]


class _Handler(web_protocol.RequestHandler):
    """A connection's handler whose answer to malformed HTTP is the server's `answer`."""

    answer: Answer

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        self.logger.warning("malformed request", exc_info=exc)  # the safe logger: kind only
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        response = self.answer(status)
        response.force_close()
        return response


class _Server(web_server.Server):
    """aiohttp's connection factory, building `_Handler`s (the one place aiohttp builds a
    connection's handler is Server.__call__, from its own fields)."""

    answer: Answer

    def __call__(self) -> web_protocol.RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler.answer = self.answer
        return handler


class _Runner(web.AppRunner):
    def __init__(self, app: web.Application, *, answer: Answer, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._answer = answer

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        # The app made a plain Server from its handler_args (the bounds): the same object, as
        # the subclass whose connections answer malformed HTTP.
        server.__class__ = _Server
        server.answer = self._answer
        return server


def runner(app: web.Application, *, answer: Answer, **kwargs: Any) -> web.AppRunner:
    """An AppRunner for `app` whose connections answer malformed HTTP with `answer(status)`
    (aiohttp's own runner on an aiohttp version not tested)."""
    if SUPPORTED:
        return _Runner(app, answer=answer, **kwargs)
    return web.AppRunner(app, **kwargs)


class PageBytes(web.StreamResponse):
    """A 200 whose bytes are ready: `head` (the status line and headers up to the request id's
    value), the request id, the date line (`date_line()`) and the body, in one write. Like
    aiohttp's writer it waits when the connection's send buffer is full, and a connection
    already gone is a ConnectionResetError, which aiohttp treats as a client that went away."""

    def __init__(self, head: bytes, request_id: str, body: bytes,
                 date_line: Callable[[], bytes], outcome: str) -> None:
        super().__init__()
        self.outcome = outcome  # its X-Cache, which is in the bytes, not in `headers`
        self._head = head
        self._request_id = request_id
        self._page = body
        self._date_line = date_line

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._eof_sent:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        # aiohttp keeps the connection open after this response only if it is told so, as its
        # own _prepare_headers does from request.keep_alive (true here: prebuilt.page_answer).
        self._keep_alive = True
        transport.write(b"".join((self._head, self._request_id.encode("ascii"),
                                  self._date_line(), self._page)))
        self._body_length = len(self._page)
        await request.writer.drain()  # waits only when the send buffer is over its high mark
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        self._eof_sent = True


def buffered_body(request: web.BaseRequest) -> bytes | None:
    """The request's whole body if aiohttp has all of it in the buffer already, taken without
    awaiting and kept for `read()`; None if it has not (or on an aiohttp not tested), and then
    the body is left where it was for `read()` to await."""
    if not SUPPORTED:
        return None
    body = request._read_bytes
    if body is not None:
        return body
    content = request.content
    # is_eof: the parser has fed the last byte, so the buffer holds the whole (decoded) body.
    if not content.is_eof():
        return None
    try:
        body = content.read_nowait(-1)
    except Exception:  # a broken body: `read()` raises it again, in its place
        return None
    request._read_bytes = body
    return body


def test_server(app: web.Application, *, answer: Answer, **kwargs: Any) -> Any:
    """aiohttp's TestServer for `app`, serving through `runner` as `serve` does (the tests'
    servers: tests/conftest.py)."""
    from aiohttp.test_utils import TestServer

    class _TestServer(TestServer):
        async def _make_runner(self, **runner_kwargs: Any) -> web.AppRunner:
            return runner(self.app, answer=answer, **runner_kwargs)

    return _TestServer(app, **kwargs)
