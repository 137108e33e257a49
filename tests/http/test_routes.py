"""The three routes, their methods, the headers on every response, and the health checks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from service.app import create_app
from service.http.coupons import PATH_MALL_ROUTER, PATH_PLUGIN, PATH_SHORT, ROUTE_NAME
from service.keys import db_pool_key
from tests.support.api import PATHS, check_error, coupons, items_of
from tests.support.common import NOW, SECRET, token_for
from tests.support.pages import settle

CJK_RE = re.compile(r"[\u4e00-\u9fff]")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
LEAKS = ("Traceback", "traceback", "asyncpg", "SELECT", "select ", "File \"", SECRET)
SENDINGS = ["GET", "POST-query", "POST-form", "POST-multipart", "POST-json"]


@pytest.fixture
async def tok(rows) -> str:
    """Member 1 of tenant 1 with coupons in every tab, so that identical answers mean something."""
    await rows.member(1, 1)
    await rows.tenant(1, transfer=True)
    for n in range(4):
        cid = await rows.coupon(1, name=f"平台券{n}", use_type=0)
        await rows.member_coupon(cid, uid=1, uniacid=1)
    used = await rows.coupon(1, name="已用", use_type=2, goods_names=["商品A"])
    await rows.member_coupon(used, uid=1, uniacid=1, used=1)
    old = await rows.coupon(1, name="过期", time_limit=0, time_days=1)
    await rows.member_coupon(old, uid=1, uniacid=1,
                             get_time=NOW.replace(year=2025))
    return token_for(1, 1)


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, (leak, text[:500])


def assert_common_headers(resp: aiohttp.ClientResponse) -> None:
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert REQUEST_ID.fullmatch(resp.headers["X-Request-ID"])
    server = resp.headers.get("Server", "")
    assert "aiohttp" not in server.lower() and "python" not in server.lower()
    assert not re.search(r"\d+\.\d+", server), server


async def send(client, tok: str, path: str, sending: str, params: dict[str, Any]):
    """The same parameters, sent one of five ways; returns the JSON answer."""
    method = "GET" if sending == "GET" else "POST"
    body = {"POST-query": None, "GET": None, "POST-form": "form",
            "POST-multipart": "multipart", "POST-json": "json"}[sending]
    return await coupons(client, tok, method=method, path=path, body=body, **params)


# --- routes and ways of sending ----------------------------------------------------------------

@pytest.mark.parametrize("params", [
    {},
    {"status_request": 1, "coupon_type": 0, "pagesize": 2, "page": 2},
    {"status_request": 2, "coupon_type": 0},
    {"status_request": 3, "coupon_type": 4},
])
async def test_every_route_and_method_answers_identically(client, tok, params):
    reference = await coupons(client, tok, **params)
    assert items_of(reference)
    answers = {}
    for path in PATHS:
        for sending in SENDINGS:
            answers[(path, sending)] = await send(client, tok, path, sending, params)
    for key, answer in answers.items():
        assert answer == reference, key


async def test_identical_answers_are_not_trivially_empty(client, tok):
    body = await coupons(client, tok, path=PATH_MALL_ROUTER, method="POST", body="multipart",
                         coupon_type=0, pagesize=2, page=2)
    assert body["data"]["total"] == 4 and len(items_of(body)) == 2
    assert body["data"]["set"]["transfer"] is True
    used = await coupons(client, tok, path=PATH_PLUGIN, method="POST", body="json",
                         status_request=3, coupon_type=4)
    assert [i["belongs_to_coupon"]["name"] for i in items_of(used)] == ["已用"]



@pytest.mark.parametrize("body", ["form", "json"])
async def test_a_repeated_post_is_resolved_once_and_answered_locally(client, tok, body, db):
    """The sidebar POSTs a small form: its body is part of the key of the resolved-request
    memo, so a repeat skips parsing and validation and is a local hit; another body is
    another request."""
    headers = {"Authorization": f"Bearer {tok}"}

    def sent(**fields: int) -> dict:
        fields = {"client": "work", "type": 17, "coupon_type": 0, **fields}
        return ({"data": {k: str(v) for k, v in fields.items()}} if body == "form"
                else {"json": fields})

    send = sent(status_request=1)
    # The rows' own invalidations applied first: one arriving after the miss began would
    # (rightly) refuse its fill.
    await settle(client, db)
    first = await client.post(PATH_SHORT, headers=headers, **send)
    again = await client.post(PATH_SHORT, headers=headers, **send)
    assert first.status == again.status == 200
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("miss", "local")
    assert await first.read() == await again.read()
    other = sent(status_request=3)
    used = await client.post(PATH_SHORT, headers=headers, **other)
    assert used.status == 200
    assert [i["belongs_to_coupon"]["name"] for i in items_of(await used.json())] == ["已用"]
    # The query string says unused, the body (which wins) says used: still the used tab.
    both = await client.post(PATH_SHORT, headers=headers, params={"status_request": "1"},
                             **other)
    assert [i["belongs_to_coupon"]["name"] for i in items_of(await both.json())] == ["已用"]
    # A bad body after a good one with the same path and token: validated, not remembered.
    bad = sent(status_request=1, page=0)
    refused = await client.post(PATH_SHORT, headers=headers, **bad)
    assert refused.status == 400

async def test_mall_router_i_may_be_in_body(client, tok):
    resp = await client.post(PATH_MALL_ROUTER, params={"route": ROUTE_NAME},
                             data={"client": "work", "type": "17", "i": "1"},
                             headers={"Authorization": f"Bearer {tok}"})
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("route", [
    "plugin.other.frontend.controller.index", ROUTE_NAME + "x", ROUTE_NAME.upper(), "",
    " " + ROUTE_NAME, "couponsOfMemberByStatusV2", ROUTE_NAME.rsplit(".", 1)[0],
])
async def test_mall_router_other_route(client, tok, route):
    body = await coupons(client, tok, expected_status=404, path=PATH_MALL_ROUTER, route=route)
    assert CJK_RE.search(body["msg"])


async def test_mall_router_other_route_without_token(client, tok):
    # Another route of the mall is simply not here: 404, whoever asks.
    await coupons(client, None, expected_status=404, path=PATH_MALL_ROUTER, route="x.y.z")


async def test_mall_router_without_route(client, tok):
    await coupons(client, tok, expected_status=404, path=PATH_MALL_ROUTER, route=None)
    await coupons(client, tok, expected_status=404, path=PATH_MALL_ROUTER, route=None,
                  method="POST", body="form")


async def test_mall_router_route_only_in_body_is_not_enough(client, tok):
    resp = await client.post(PATH_MALL_ROUTER, params={"i": "1"},
                             data={"route": ROUTE_NAME, "client": "work", "type": "17"},
                             headers={"Authorization": f"Bearer {tok}"})
    assert resp.status == 404
    check_error(await resp.json())


async def test_mall_router_without_i(client, tok):
    body = await coupons(client, tok, expected_status=400, path=PATH_MALL_ROUTER, i=None)
    assert list(body["data"]["errors"]) == ["i"] and "i" in body["msg"]


@pytest.mark.parametrize("i", ["abc", "", "1.0", "0", "-1", "1e0", str(2**31), " 1"])
async def test_mall_router_bad_i(client, tok, i):
    body = await coupons(client, tok, expected_status=400, path=PATH_MALL_ROUTER, i=i)
    assert list(body["data"]["errors"]) == ["i"]


async def test_i_is_ignored_off_the_mall_router(client, tok):
    base = await coupons(client, tok)
    assert await coupons(client, tok, i="abc") == base
    assert await coupons(client, tok, path=PATH_PLUGIN, i=2) == base


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", PATHS)
async def test_other_methods_not_allowed(client, tok, method, path):
    params = {"route": ROUTE_NAME, "i": "1"} if path == PATH_MALL_ROUTER else {}
    resp = await client.request(method, path, params={**params, "client": "work", "type": "17"},
                                json={"client": "work", "type": 17},
                                headers={"Authorization": f"Bearer {tok}"})
    text = await resp.text()
    assert resp.status == 405, text
    body = json.loads(text)
    check_error(body)
    allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allow and method not in allow
    assert_common_headers(resp)
    assert_no_leak(text)


async def test_post_not_allowed_on_health(client):
    resp = await client.post("/healthz")
    assert resp.status == 405
    check_error(await resp.json())
    assert "GET" in resp.headers["Allow"]


@pytest.mark.parametrize("path", [
    "/", "/nope", "/api/v2/coupons/", "/api/v2/coupon", "/api/v1/coupons",
    "/addons/yun_shop/api.php/x", "/" + ROUTE_NAME + "/x", "/%2e%2e/etc/passwd",
    "/api/v2/COUPONS",
])
async def test_unknown_path(client, tok, path):
    resp = await client.get(path, headers={"Authorization": f"Bearer {tok}"})
    text = await resp.text()
    assert resp.status == 404, text
    body = json.loads(text)
    check_error(body)
    assert CJK_RE.search(body["msg"])
    assert_common_headers(resp)
    assert_no_leak(text)


@pytest.mark.parametrize("path", PATHS)
async def test_head_allowed(client, tok, path):
    await coupons(client, tok, method="HEAD", path=path)
    params = {"route": ROUTE_NAME, "i": "1"} if path == PATH_MALL_ROUTER else {}
    resp = await client.head(path, params={**params, "client": "work", "type": "17"},
                             headers={"Authorization": f"Bearer {tok}"})
    assert resp.status == 200
    assert await resp.read() == b""
    assert_common_headers(resp)


async def test_head_checks_auth_like_get(client, tok):
    resp = await client.head(PATH_SHORT, params={"client": "work", "type": "17"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


# --- response headers ----------------------------------------------------------------------

async def test_sane_request_id_echoed(client, tok):
    for rid in ("abc-123", "req.1_2-3", "a" * 64, "0"):
        resp = await client.get(PATH_SHORT, params={"client": "work", "type": "17"},
                                headers={"Authorization": f"Bearer {tok}", "X-Request-ID": rid})
        assert resp.status == 200
        assert resp.headers["X-Request-ID"] == rid


async def test_request_id_echoed_on_errors(client, tok):
    headers = {"X-Request-ID": "err-42"}
    for path in ("/nope", PATH_SHORT):
        resp = await client.get(path, headers=headers)
        assert resp.status in (401, 404)
        assert resp.headers["X-Request-ID"] == "err-42"
    resp = await client.get(PATH_SHORT, params={"page": "0"},
                            headers={**headers, "Authorization": f"Bearer {tok}"})
    assert resp.status == 400 and resp.headers["X-Request-ID"] == "err-42"


@pytest.mark.parametrize("rid", ["a" * 500, "a" * 65, "has spaces", "semi;colon",
                                 "<script>", "a/b", "ünï", "x\tx", "%41"])
async def test_invalid_request_id_replaced(client, tok, rid):
    resp = await client.get(PATH_SHORT, params={"client": "work", "type": "17"},
                            headers={"Authorization": f"Bearer {tok}", "X-Request-ID": rid})
    assert resp.status == 200
    got = resp.headers["X-Request-ID"]
    assert got != rid and REQUEST_ID.fullmatch(got)


async def test_request_id_generated_and_unique(client, tok):
    ids = set()
    for _ in range(5):
        resp = await client.get(PATH_SHORT, params={"client": "work", "type": "17"},
                                headers={"Authorization": f"Bearer {tok}"})
        ids.add(resp.headers["X-Request-ID"])
        assert REQUEST_ID.fullmatch(resp.headers["X-Request-ID"])
    assert len(ids) == 5


async def test_headers_on_success_and_errors(client, tok):
    requests = [
        ("GET", PATH_SHORT, {"client": "work", "type": "17"}, {"Authorization": f"Bearer {tok}"}),
        ("GET", PATH_SHORT, {"client": "work", "type": "17"}, {}),
        ("GET", PATH_SHORT, {"client": "x"}, {"Authorization": f"Bearer {tok}"}),
        ("GET", "/missing", {}, {}),
        ("DELETE", PATH_PLUGIN, {}, {}),
        ("GET", PATH_SHORT, {"client": "work", "type": "17"},
         {"Authorization": f"Bearer {token_for(1, 404)}"}),
    ]
    for method, path, params, headers in requests:
        resp = await client.request(method, path, params=params, headers=headers)
        text = await resp.text()
        assert_common_headers(resp)
        assert resp.headers["Cache-Control"] == "private, no-cache", (method, path)
        assert resp.content_type == "application/json"
        assert_no_leak(text)


async def test_headers_on_413(client, tok):
    resp = await client.post(PATH_SHORT, data=b"x" * (70 * 1024),
                             headers={"Authorization": f"Bearer {tok}",
                                      "Content-Type": "application/json"})
    assert resp.status == 413
    check_error(await resp.json())
    assert_common_headers(resp)
    assert resp.headers["Cache-Control"] == "private, no-cache"


async def test_health_headers(client):
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        assert_common_headers(resp)


# --- health ----------------------------------------------------------------------------------

async def test_healthz(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_healthz_needs_no_token_and_ignores_parameters(client):
    resp = await client.get("/healthz", params={"client": "x", "page": "0"})
    assert resp.status == 200


async def test_readyz_ok(client):
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert body["status"] == "ok"


async def test_readyz_503_when_redis_unreachable(make_client, settings, rows, tok):
    down = await make_client(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"))
    resp = await down.get("/readyz")
    text = await resp.text()
    assert resp.status == 503, text
    body = json.loads(text)
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert body["status"] != "ok"
    assert_common_headers(resp)
    assert_no_leak(text)
    assert "127.0.0.1" not in text
    # Liveness is about the process, not its dependencies.
    assert (await down.get("/healthz")).status == 200


async def test_startup_fails_clearly_when_database_unreachable(settings, clock, db):
    """The pool is created at startup: an unreachable database stops the app from starting
    (so /readyz cannot answer 503 for it); the error says what failed."""
    unreachable = dataclasses.replace(
        settings, database_url="postgresql://postgres@127.0.0.1:1/coupons_test")
    runner = web.AppRunner(create_app(unreachable, clock))
    try:
        with pytest.raises(OSError) as info:
            await runner.setup()
        assert "('127.0.0.1', 1)" in str(info.value)
    finally:
        await runner.cleanup()


async def test_readyz_503_and_coupons_503_when_database_goes_away(client, tok):
    assert (await client.get("/readyz")).status == 200
    await coupons(client, tok)
    await client.app[db_pool_key].close()
    resp = await client.get("/readyz")
    text = await resp.text()
    assert resp.status == 503, text
    body = json.loads(text)
    assert body["checks"]["database"] != "ok" and body["checks"]["redis"] == "ok"
    assert_no_leak(text)
    # A page not in the cache (the cached one stays true while the LISTEN connection lives).
    body = await coupons(client, tok, page=2, expected_status=503)
    assert CJK_RE.search(body["msg"])
    assert_no_leak(json.dumps(body, ensure_ascii=False))


async def test_database_connections_killed_then_recovered(client, tok, db):
    await coupons(client, tok)
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    # The next request may find its pooled connection dead: a 503 envelope at worst, never 500.
    resp = await client.get(PATH_SHORT, params={"client": "work", "type": "17"},
                            headers={"Authorization": f"Bearer {tok}"})
    text = await resp.text()
    assert resp.status in (200, 503), text
    assert_no_leak(text)
    check = json.loads(text)
    if resp.status == 503:
        check_error(check)
    # And the service recovers by itself.
    body = await coupons(client, tok)
    assert body["data"]["total"] == 4



async def test_reads_after_every_backend_is_killed_are_answered(client, tok, db):
    """The first reads after PostgreSQL drops its backends often meet a pooled connection
    asyncpg has not yet seen close (InternalClientError, ConnectionDoesNotExistError): they are
    read again on another connection, so a restart costs nobody a 500 or a 503. (Before that
    retry this failed on every run; tests/db/test_repository.py makes the race certain.)"""
    kill = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")
    for round_ in range(8):
        # Fill the pool: every connection is a candidate for the stale hand-out.
        await asyncio.gather(*(coupons(client, tok, page=100 * round_ + i + 50)
                               for i in range(4)))
        assert await db.fetchval(kill) >= 1
        resps = await asyncio.gather(*(client.get(PATH_SHORT, params={
            "client": "work", "type": "17", "page": str(100 * round_ + i + 1)},
            headers={"Authorization": f"Bearer {tok}"}) for i in range(4)))
        for resp in resps:
            text = await resp.text()
            assert_no_leak(text)
            assert resp.status == 200, text


# --- nothing leaks -----------------------------------------------------------------------------

async def test_no_response_leaks_internals(client, tok):
    bad = token_for(1, 1, secret="x" * 40)
    cases: list[tuple[str, str, dict[str, str], dict[str, str], bytes | None]] = [
        ("GET", PATH_SHORT, {"client": "work", "type": "17"}, {}, None),
        ("GET", PATH_SHORT, {"client": "work", "type": "17"},
         {"Authorization": f"Bearer {bad}"}, None),
        ("GET", PATH_SHORT, {"client": "work", "type": "17"},
         {"Authorization": f"Bearer {SECRET}"}, None),
        ("GET", PATH_SHORT, {"client": "work", "type": "17", "page": "1'; SELECT 1;--"},
         {"Authorization": f"Bearer {tok}"}, None),
        ("POST", PATH_SHORT, {}, {"Authorization": f"Bearer {tok}",
                                  "Content-Type": "application/json"}, b"{bad json"),
        ("POST", PATH_SHORT, {}, {"Authorization": f"Bearer {tok}",
                                  "Content-Type": "application/json"}, b"[]"),
        ("POST", PATH_SHORT, {}, {"Authorization": f"Bearer {tok}",
                                  "Content-Type": "text/plain"}, b"hello"),
        ("POST", PATH_SHORT, {}, {"Authorization": f"Bearer {tok}",
                                  "Content-Type": "application/x-www-form-urlencoded"},
         b"page=\xff"),
        ("PUT", PATH_SHORT, {}, {}, None),
        ("GET", "/nope", {}, {}, None),
        ("GET", PATH_MALL_ROUTER, {"route": ROUTE_NAME, "i": "2", "client": "work",
                                   "type": "17"}, {"Authorization": f"Bearer {tok}"}, None),
        ("GET", PATH_SHORT, {"client": "work", "type": "17"},
         {"Authorization": f"Bearer {token_for(1, 9999)}"}, None),
        ("GET", PATH_SHORT, {"client": "work", "type": "17"}, {"Authorization": f"Bearer {tok}"},
         None),
        ("GET", "/readyz", {}, {}, None),
        ("GET", "/healthz", {}, {}, None),
    ]
    for method, path, params, headers, data in cases:
        resp = await client.request(method, path, params=params, headers=headers, data=data)
        text = await resp.text()
        assert resp.status < 500, (method, path, resp.status, text)
        assert_no_leak(text)
        for value in resp.headers.values():
            assert SECRET not in value and "Traceback" not in value

