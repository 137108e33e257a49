"""ERROR_STYLE: `http` answers each error with its own status; `mall` answers every error
envelope with HTTP 200 and `result: 0` (the mall's pages show `msg` only on a 200), keeping the
headers, while the metrics and the access log record the real outcome."""

from __future__ import annotations

import dataclasses
import json
import logging

import asyncpg
import pytest
from prometheus_client import REGISTRY

from service.coupons import pages
from service.http.coupons import PATH_MALL_ROUTER, PATH_SHORT, ROUTE_NAME
from service.keys import recorder_key
from tests.support.api import check_error, check_success
from tests.support.common import token_for
from tests.support.live import raw

QUERY = {"client": "work", "type": "17"}


@pytest.fixture
async def people(rows) -> None:
    await rows.tenant(1)
    await rows.member(1, 1)
    await rows.member(7, 2)  # a member of another tenant
    await rows.member_coupon(await rows.coupon(1))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# (name, how to ask, the real status, a header the error carries)
CASES = [
    ("bad parameter", dict(path=PATH_SHORT, params={**QUERY, "page": "0"},
                           headers=auth(token_for())), 400, None),
    ("missing token", dict(path=PATH_SHORT, params=QUERY), 401, "WWW-Authenticate"),
    ("expired token", dict(path=PATH_SHORT, params=QUERY, headers=auth(token_for(now=1))),
     401, "WWW-Authenticate"),
    ("forged token", dict(path=PATH_SHORT, params=QUERY, headers=auth(token_for(
        secret="forged-secret-0123456789abcdef0123456789"))), 401, "WWW-Authenticate"),
    ("another tenant's member", dict(path=PATH_SHORT, params=QUERY,
                                     headers=auth(token_for(1, 7))), 403, None),
    ("i is not the token's tenant", dict(path=PATH_MALL_ROUTER, params={
        **QUERY, "route": ROUTE_NAME, "i": "2"}, headers=auth(token_for())), 403, None),
    ("no such member", dict(path=PATH_SHORT, params=QUERY, headers=auth(token_for(1, 99))),
     404, None),
    ("unknown path", dict(path="/nope", headers=auth(token_for())), 404, None),
    ("another route on api.php", dict(path=PATH_MALL_ROUTER, params={
        **QUERY, "route": "member.index", "i": "1"}, headers=auth(token_for())), 404, None),
    ("method", dict(method="PUT", path=PATH_SHORT), 405, "Allow"),
    ("body too large", dict(method="POST", path=PATH_SHORT, data=b"x" * 70_000,
                            headers=auth(token_for())), 413, None),
]


@pytest.mark.parametrize("style", ["http", "mall"])
@pytest.mark.parametrize(("name", "ask", "status", "header"), CASES, ids=[c[0] for c in CASES])
async def test_every_error_in_both_styles(make_client, settings, people, style, name, ask,
                                          status, header):
    client = await make_client(dataclasses.replace(settings, error_style=style))
    ask = dict(ask)
    resp = await client.request(ask.pop("method", "GET"), ask.pop("path"), **ask)
    body = await resp.json()
    check_error(body)
    if style == "http":
        assert resp.status == status, body
        assert "X-Error-Status" not in resp.headers
    else:
        assert resp.status == 200, body
        assert resp.headers["X-Error-Status"] == str(status)
    assert body["msg"]
    if header is not None:
        assert resp.headers[header]
    assert resp.headers["X-Request-ID"] and resp.headers["Server"] == "coupons"


async def test_mall_style_keeps_retry_after_of_a_429(make_client, settings, people):
    client = await make_client(dataclasses.replace(
        settings, error_style="mall", rate_limit_member_per_minute=60,
        rate_limit_member_burst=1, rate_limit_lease=1, local_cache_enabled=False,
        # The second request refused by Redis's exact check, not after local admission.
        rate_limit_local_admits=0))
    first = await client.get(PATH_SHORT, params={**QUERY, "page": "2"},
                             headers=auth(token_for()))
    check_success(await first.json())
    resp = await client.get(PATH_SHORT, params=QUERY, headers=auth(token_for()))
    body = await resp.json()
    check_error(body)
    assert resp.status == 200 and resp.headers["X-Error-Status"] == "429"
    assert int(resp.headers["Retry-After"]) >= 1 and body["msg"]


async def test_mall_style_503_of_a_locked_database(make_client, settings, people,
                                                   database_url):
    client = await make_client(dataclasses.replace(settings, error_style="mall"))
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE yz_member_coupon IN ACCESS EXCLUSIVE MODE")
            resp = await client.get(PATH_SHORT, params={**QUERY, "page": "3"},
                                    headers=auth(token_for()))
            body = await resp.json()
    finally:
        await locker.close()
    check_error(body)
    assert resp.status == 200 and resp.headers["X-Error-Status"] == "503"
    assert resp.headers["Retry-After"] == "1"


@pytest.mark.parametrize("style", ["http", "mall"])
async def test_malformed_http_follows_the_style(make_client, settings, style):
    client = await make_client(dataclasses.replace(settings, error_style=style))
    data = await raw(client.host, client.port, b"GET /api/v2/coupons HTTP/1.1\r\nHost: x\r\nX-Big: "
                     + b"a" * 9000 + b"\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    # HTTP/1.0 or 1.1: aiohttp answers a request line it could not parse in 1.0.
    status = head.split(b" ", 2)[1]
    assert status == (b"200" if style == "mall" else b"400"), head[:40]
    assert (b"x-error-status: 4" in head.lower()) == (style == "mall")
    check_error(json.loads(body))


@pytest.mark.parametrize("style", ["http", "mall"])
async def test_a_bug_is_an_envelope_too(make_client, settings, people, monkeypatch, caplog,
                                        style):
    """An unexpected failure (here: rendering raises) is logged by kind and place and answered
    with the envelope (500, or 200 under `mall`), nothing of the failure in it."""
    def broken(*args, **kwargs):
        raise ZeroDivisionError("secret detail")

    monkeypatch.setattr(pages, "render_body", broken)
    client = await make_client(dataclasses.replace(settings, error_style=style))
    resp = await client.get(PATH_SHORT, params=QUERY, headers=auth(token_for()))
    text = await resp.text()
    check_error(json.loads(text))
    assert resp.status == (200 if style == "mall" else 500)
    assert "secret detail" not in text and "ZeroDivision" not in text
    assert any("ZeroDivisionError" in r.getMessage() for r in caplog.records
               if r.levelno >= logging.ERROR)


def _count(status: str) -> float:
    return REGISTRY.get_sample_value("coupons_http_requests_total", {
        "route": PATH_SHORT, "method": "GET", "status": status}) or 0.0


async def test_metrics_and_the_access_log_keep_the_real_status(make_client, settings, people,
                                                               caplog):
    client = await make_client(dataclasses.replace(settings, error_style="mall"))
    caplog.set_level(logging.INFO, logger="service.access")
    before = (_count("401"), _count("200"))
    resp = await client.get(PATH_SHORT, params=QUERY)
    assert resp.status == 200 and resp.headers["X-Error-Status"] == "401"
    client.app[recorder_key].flush()
    assert (_count("401"), _count("200")) == (before[0] + 1, before[1])
    [line] = [r for r in caplog.records if r.name == "service.access"
              and r.request_id == resp.headers["X-Request-ID"]]
    assert line.fields["status"] == 401
