"""Bounded everything: a slow database answers 503 fast, clients that hang up leak nothing, a
slow or huge client is cut off, and nothing secret or internal reaches a response or a log."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from service.keys import db_pool_key, redis_key
from tests.support.api import PATH_SHORT, check_error, check_success, items_of
from tests.support.common import SECRET, SERVICE_TOKEN, token_for
from tests.support.live import raw


@pytest.fixture
async def people(rows) -> dict[int, int]:
    out = {}
    for uid in (1, 2):
        await rows.member(uid, 1)
        cid = await rows.coupon(1, name=f"m{uid}")
        out[uid] = await rows.member_coupon(cid, uid=uid)
    return out


def query(**params) -> dict[str, str]:
    return {"client": "work", "type": "17", **{k: str(v) for k, v in params.items()}}


def auth(uid: int = 1) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(1, uid)}"}


# A slow database ---------------------------------------------------------------------------------

async def test_locked_table_answers_503_within_two_seconds(client, people, database_url):
    """An ACCESS EXCLUSIVE lock makes every page query wait: the statement and lock bounds end
    them, waiters for a pooled connection give up, and nobody waits long."""
    locker = await asyncpg.connect(database_url)
    pool = client.app[db_pool_key]
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE yz_member_coupon IN ACCESS EXCLUSIVE MODE")

        async def one(n: int) -> tuple[int, float, dict, dict]:
            start = time.perf_counter()
            # Distinct pages: each is a cold miss (no single flight between them).
            resp = await client.get(PATH_SHORT, params=query(page=n + 1), headers=auth())
            return resp.status, time.perf_counter() - start, await resp.json(), resp.headers

        started = time.perf_counter()
        results = await asyncio.gather(*(one(n) for n in range(3 * pool.get_max_size())))
        total = time.perf_counter() - started
        await tx.rollback()
    finally:
        await locker.close()
    for status, elapsed, body, headers in results:
        assert status == 503, body
        check_error(body)
        assert headers["Retry-After"] == "1" and elapsed < 2.5, elapsed
    assert total < 3.0, total
    # Lock gone: the same pool answers at once, every connection back.
    resp = await client.get(PATH_SHORT, params=query(coupon_type=0), headers=auth())
    assert resp.status == 200
    assert [i["id"] for i in items_of(await resp.json())] == [people[1]]
    assert pool.get_idle_size() == pool.get_size()


# Clients that hang up ----------------------------------------------------------------------------

async def test_1000_requests_cancelled_mid_flight_leak_nothing(client, people):
    """Against the live server (handler cancellation on, as `serve` runs it): requests are cut
    at every stage, from before the request line is sent to while the query runs."""
    pool = client.app[db_pool_key]
    url = client.make_url(PATH_SHORT)
    async with aiohttp.ClientSession() as session:

        async def cut(n: int) -> None:
            params = query(page=n % 7 + 1, coupon_type=n % 11, pagesize=n % 3 + 1)
            task = asyncio.create_task(session.get(url, params=params, headers=auth(n % 2 + 1)))
            for _ in range(n % 40):  # cut after a varying number of loop turns
                await asyncio.sleep(0)
            task.cancel()
            result = await asyncio.gather(task, return_exceptions=True)
            if not isinstance(result[0], BaseException):
                result[0].release()

        for start in range(0, 1000, 50):
            await asyncio.gather(*(cut(n) for n in range(start, start + 50)))
    redis_pool = client.app[redis_key].connection_pool
    async with asyncio.timeout(10):
        # Neither pool offers an event for "all released"; the shielded loads and fills finish
        # on their own, then every connection must be back.
        while (pool.get_idle_size() != pool.get_size()  # noqa: ASYNC110
               or redis_pool._in_use_connections):
            await asyncio.sleep(0.01)
    assert pool.get_size() <= pool.get_max_size()
    for uid in (1, 2):
        for page in (1, 2):
            resp = await client.get(PATH_SHORT, params=query(coupon_type=0, page=page),
                                    headers=auth(uid))
            body = await resp.json()
            assert resp.status == 200
            check_success(body)
            assert [i["id"] for i in items_of(body)] == ([people[uid]] if page == 1 else [])


# Slow and huge clients ----------------------------------------------------------------------------

async def test_a_trickled_body_gets_408_and_frees_the_connection(make_client, settings, people):
    client = await make_client(dataclasses.replace(settings, body_timeout_seconds=0.3))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        token = token_for()
        writer.write(f"POST {PATH_SHORT}?client=work&type=17 HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        await writer.drain()
        start = time.perf_counter()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            rest = await reader.read(4096)
        elapsed = time.perf_counter() - start
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert 0.25 < elapsed < 2.0, elapsed
    body = json.loads(rest)
    check_error(body)
    assert list(body["data"]["errors"]) == ["body"]


async def test_trickled_headers_are_cut_off_by_the_keepalive_bound(make_client, settings):
    client = await make_client(dataclasses.replace(settings, http_keepalive_seconds=0.5))
    start = time.perf_counter()
    # Half a request, then nothing (slowloris): the server closes the connection.
    data = await raw(client.host, client.port,
                     f"GET {PATH_SHORT} HTTP/1.1\r\nHost: x\r\nX-Slow: a".encode())
    assert data == b"" and time.perf_counter() - start < 3.0


@pytest.mark.parametrize("request_bytes", [
    # One header value over 8190 bytes.
    b"GET /api/v2/coupons HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    # A request line (URL) over 8190 bytes.
    b"GET /api/v2/coupons?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    # More than 64 headers.
    b"GET /api/v2/coupons HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: v\r\n" % n for n in range(80)) + b"\r\n",
    # Not HTTP at all; a header with a NUL in it.
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    b"GET /api/v2/coupons HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
], ids=["header-value", "request-line", "header-count", "tls-hello", "nul"])
async def test_malformed_or_oversized_requests(client, request_bytes, caplog):
    caplog.set_level(logging.DEBUG)
    data = await raw(client.host, client.port, request_bytes)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), data[:80]
    head_text = head.decode("latin-1").lower()
    assert "server: coupons" in head_text and "aiohttp" not in head_text
    assert "python" not in head_text and "x-content-type-options: nosniff" in head_text
    check_error(json.loads(body))  # the contract's envelope, quoting nothing of the request
    assert b"aaaa" not in body and b"X-A" not in body and b"Traceback" not in data
    for record in caplog.records:
        assert record.exc_info is None and record.exc_text is None, record.getMessage()
        assert "Traceback" not in record.getMessage()


# Nothing secret or internal in a response or a log ----------------------------------------------

def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    user, _, host = netloc.rpartition("@")
    user = user.split(":", 1)[0] or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


async def test_no_token_trace_sql_or_password_in_responses_or_logs(make_client, settings,
                                                                   people, caplog,
                                                                   database_url):
    password = "dsn-Pa55word-never-shown"
    client = await make_client(dataclasses.replace(
        settings, database_url=with_password(database_url, password)))
    caplog.set_level(logging.DEBUG)
    good = token_for(1, 1)
    foreign = token_for(1, 1, secret="another-secret-0123456789abcdef0123456789")
    expired = token_for(1, 1, now=0)
    texts: list[str] = []

    async def call(method: str, path: str, **kwargs) -> None:
        resp = await client.request(method, path, **kwargs)
        texts.append(f"{resp.status} {dict(resp.headers)} {await resp.text()}")

    for token in (foreign, expired, good + "x", "' OR 1=1 --", SECRET, SERVICE_TOKEN):
        await call("GET", PATH_SHORT, params=query(), headers={"Authorization": f"Bearer {token}"})
    await call("GET", PATH_SHORT, params=query(page="1; DROP TABLE yz_member"), headers=auth())
    await call("POST", PATH_SHORT, params=query(), data=b"{bad json", headers={
        **auth(), "Content-Type": "application/json"})
    await call("POST", PATH_SHORT, data=b"x" * 70_000, headers=auth())
    await call("POST", "/internal/member-coupons/1/use", headers=auth())
    await call("DELETE", PATH_SHORT, headers=auth())
    await call("GET", "/nope", headers=auth())
    # A database failure: the lock makes the query give up (lock_timeout) -> 503.
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE yz_member_coupon IN ACCESS EXCLUSIVE MODE")
            await call("GET", PATH_SHORT, params=query(page=3), headers=auth())
    finally:
        await locker.close()
    assert texts[-1].startswith("503")
    logs = [(r.getMessage(), r.exc_info, r.exc_text) for r in caplog.records]
    assert any("dependency unavailable" in m for m, _, _ in logs)
    secrets = (good, foreign, expired, SECRET, SERVICE_TOKEN, password)
    for text in texts + [m for m, _, _ in logs]:
        for secret in secrets:
            assert secret not in text
        for leak in ("Traceback", "SELECT", "yz_member_coupon AS", "asyncpg", 'File "'):
            assert leak not in text, text[:300]
    assert all(exc_info is None and exc_text is None for _, exc_info, exc_text in logs)


async def test_security_headers_on_every_kind_of_response(client, people, make_client,
                                                          settings):
    resp_ok = await client.get(PATH_SHORT, params=query(), headers=auth())
    etag = resp_ok.headers["ETag"]
    responses = [
        resp_ok,
        await client.get(PATH_SHORT, params=query(), headers={**auth(), "If-None-Match": etag}),
        await client.get(PATH_SHORT, params=query()),
        await client.get(PATH_SHORT, params=query(page=0), headers=auth()),
        await client.get(PATH_SHORT, params=query(), headers=auth(99)),
        await client.put(PATH_SHORT),
        await client.post(PATH_SHORT, data=b"x" * 70_000, headers=auth()),
        await client.get("/healthz"),
        await client.get("/readyz"),
        await client.get("/openapi.json"),
    ]
    statuses = [r.status for r in responses]
    assert statuses == [200, 304, 401, 400, 404, 405, 413, 200, 200, 200]
    for resp in responses:
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Server"] == "coupons"
        assert "X-Request-ID" in resp.headers
