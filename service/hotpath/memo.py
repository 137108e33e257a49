"""What a coupons request means apart from the time, resolved once and kept.

The sidebar repeats the same few requests, and parsing, validating and checking them again was
most of a local hit's own cost. A request's meaning is decided by its declared inputs alone:

- a GET: its raw path (the path and the query string) and its Authorization header;
- a POST: the same, its Content-Type (with the charset), its Content-Encoding and its body,
  when the body is small and already buffered.

The memo's key is made of exactly these (`get_key`, `post_key`); `Resolved` is what they mean
(the token's claims, whose time claims are checked on every request, and the page asked for).
tests/hotpath/test_memo.py resolves requests through a recording request and fails if
resolving one reads any other input: a rule added to the resolution that read, say, another
header, would otherwise be silently answered from the memo.
"""

from __future__ import annotations

import dataclasses

from aiohttp import hdrs, web

from service.auth.tokens import Claims
from service.compat.aiohttp import buffered_body
from service.db.repository import PageQuery

# The inputs a request's meaning may depend on (module docstring): header names, and the parts
# of the request line and body. The resolution (service/http/coupons.py) reads nothing else.
GET_INPUTS = frozenset({"raw_path", hdrs.AUTHORIZATION})
POST_INPUTS = GET_INPUTS | {hdrs.CONTENT_TYPE, hdrs.CONTENT_ENCODING, "body"}
# The sidebar POSTs a small form; a body up to this size is part of the memo's key.
BODY_BYTES = 1024
# A multipart body is read as a stream by aiohttp: it cannot be read once for the key and again
# for the parameters.
BODY_TYPES = ("application/x-www-form-urlencoded", "application/json")


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    """What a request asks for whatever the time: the token's claims (its time claims are
    checked on each request) and the page, the parameters validated."""

    claims: Claims
    query: PageQuery
    field: str  # the page's field in the member's cache entries


class ResolvedMemo(dict):
    """Resolved requests by key (`get_key`, `post_key`). Only what succeeded is kept; bounded
    (MEMO_ENTRIES keys of at most about 1.5 KiB, typically 0.6 KiB), oldest out first."""

    def __init__(self, max_entries: int = 4096) -> None:
        super().__init__()  # a dict itself: `get` is one C call on the hot path
        self.max_entries = max_entries

    def put(self, key: tuple, resolved: Resolved) -> None:
        if len(self) >= self.max_entries:
            self.pop(next(iter(self)))
        self[key] = resolved


def get_key(request: web.Request) -> tuple:
    """A GET's key: its GET_INPUTS."""
    return (request.raw_path, request.headers.get(hdrs.AUTHORIZATION))


def _small(request: web.Request) -> bool:
    """Whether a POST's body is part of its key: small, of a type read whole, all received."""
    length = request.content_length
    return (length is not None and length <= BODY_BYTES and request.content_type in BODY_TYPES
            and request.content.is_eof())


def _post_key(request: web.Request, body: bytes) -> tuple:
    return (*get_key(request), request.headers.get(hdrs.CONTENT_TYPE),
            request.headers.get(hdrs.CONTENT_ENCODING), body)


def buffered_post_key(request: web.Request) -> tuple | None:
    """A POST's key without awaiting (the edge's fast path), or None: its body not small and
    buffered, or not readable without awaiting on this aiohttp (service/compat/aiohttp.py)."""
    if not _small(request):
        return None
    body = buffered_body(request)
    return None if body is None else _post_key(request, body)


async def post_key(request: web.Request, bad_body: tuple[type[Exception], ...]) -> tuple | None:
    """A POST's key: its POST_INPUTS; None when the body is not small and buffered (then the
    request is resolved every time). A body that fails to read here (one of `bad_body`) fails
    again in the resolution, after the token's check, so the errors keep their order."""
    if not _small(request):
        return None
    # Whole in the buffer, so this cannot wait; kept by aiohttp for the resolution (post() and
    # read() reuse it).
    try:
        body = await request.read()
    except bad_body:
        return None
    return _post_key(request, body)
