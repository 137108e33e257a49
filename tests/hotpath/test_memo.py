"""The memo of resolved requests (service/hotpath/memo.py) is keyed by the resolution's declared
inputs, and the resolution reads nothing else: each request below is resolved through a
recording request, and every input it read must be one of the memo key's. A rule added to the
resolution that read another input (a header, a cookie, the peer's address) fails here instead
of being answered from the memo for a request it does not fit."""

from __future__ import annotations

import pytest
from aiohttp import web

from service.hotpath.memo import GET_INPUTS, POST_INPUTS
from service.http.coupons import PATH_MALL_ROUTER, ROUTE_NAME, Coupons
from tests.support.api import PATH_PLUGIN, PATH_SHORT
from tests.support.common import token_for


class _Headers:
    """A request's headers that note every name read."""

    def __init__(self, headers, seen: set[str]) -> None:
        self._headers = headers
        self._seen = seen

    def get(self, name, default=None):
        self._seen.add(str(name).title())
        return self._headers.get(name, default)

    def __getitem__(self, name):
        self._seen.add(str(name).title())
        return self._headers[name]

    def __contains__(self, name) -> bool:
        self._seen.add(str(name).title())
        return name in self._headers


# What of a request each attribute reads, in the memo's terms (None: not an input of the
# request, e.g. the app it is served by, or what the handler writes).
_READS = {
    "path": "raw_path", "raw_path": "raw_path", "query": "raw_path", "rel_url": "raw_path",
    "url": "raw_path", "query_string": "raw_path", "method": None, "app": None,
    "body_exists": "body", "can_read_body": "body", "content": "body", "post": "body",
    "read": "body", "text": "body", "json": "body", "content_type": "Content-Type",
    "charset": "Content-Type", "content_length": "body",
}


class Recording:
    """A request that notes which of its inputs are read."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.seen: set[str] = set()

    def __getattr__(self, name: str):
        if name == "headers":
            return _Headers(self._request.headers, self.seen)
        if name not in _READS:
            self.seen.add(name)  # an input nobody declared: the test fails on it
        elif _READS[name] is not None:
            self.seen.add(_READS[name])
        return getattr(self._request, name)

    def __setitem__(self, key, value) -> None:  # what the resolution leaves for the log line
        self._request[key] = value

    def __getitem__(self, key):
        return self._request[key]

    def get(self, key, default=None):
        return self._request.get(key, default)


def record(monkeypatch, resolve) -> list[tuple[str, set[str]]]:
    """Every resolution from now on runs `resolve` on a recording request; what each read."""
    seen: list[tuple[str, set[str]]] = []

    async def recording_resolve(self, request, now_s):
        proxy = Recording(request)
        try:
            return await resolve(self, proxy, now_s)
        finally:
            seen.append((request.method, proxy.seen))

    monkeypatch.setattr(Coupons, "resolve", recording_resolve)
    return seen


@pytest.fixture
def recorded(monkeypatch) -> list[tuple[str, set[str]]]:
    return record(monkeypatch, Coupons.resolve)


@pytest.fixture
async def member(rows) -> None:
    await rows.member(1, 1)
    await rows.member_coupon(await rows.coupon(1))
    await rows.contact("wm-1", 1)


def _asks():
    auth = {"Authorization": f"Bearer {token_for()}"}
    staff = {"Authorization": f"Bearer {token_for(1, None)}"}
    query = {"client": "work", "type": "17", "coupon_type": "0"}
    mall = {**query, "i": "1", "route": ROUTE_NAME}
    return [
        ("GET", PATH_SHORT, {"params": query, "headers": auth}),
        ("GET", PATH_MALL_ROUTER, {"params": mall, "headers": auth}),
        ("GET", PATH_PLUGIN, {"params": {**query, "user_id": "wm-1"}, "headers": staff}),
        ("POST", PATH_PLUGIN, {"data": query, "headers": auth}),
        ("POST", PATH_SHORT, {"json": query, "headers": auth}),
        ("POST", PATH_MALL_ROUTER, {"params": {"i": "1", "route": ROUTE_NAME}, "data": query,
                                    "headers": auth}),
        # Refused ones are resolved too (and never kept): they read no more.
        ("GET", PATH_SHORT, {"params": {**query, "page": "0"}, "headers": auth}),
        ("GET", PATH_SHORT, {"params": query}),
    ]


async def test_the_resolution_reads_only_the_memo_keys_inputs(member, client, recorded):
    for method, path, kwargs in _asks():
        resp = await client.request(method, path, **kwargs)
        assert resp.status in (200, 400, 401), await resp.text()
    assert len(recorded) == len(_asks())
    for method, seen in recorded:
        allowed = GET_INPUTS if method == "GET" else POST_INPUTS
        assert seen <= allowed, (method, seen - allowed)


async def test_an_undeclared_input_would_be_caught(member, client, monkeypatch):
    """The check above can fail: a resolution that read another header is seen."""
    resolve = Coupons.resolve

    async def reads_more(self, request, now_s):
        request.headers.get("X-Forwarded-For")
        return await resolve(self, request, now_s)

    recorded = record(monkeypatch, reads_more)
    method, path, kwargs = _asks()[0]
    await client.request(method, path, **kwargs)
    [(_, seen)] = recorded
    assert "X-Forwarded-For" in seen and not seen <= GET_INPUTS
