"""The edge (service/http/edge.py): every route passes it, the fast path records its requests as the
others, and the request bound (REQUEST_TIMEOUT_SECONDS) is kept by `Deadlines`: a request past
it is answered 503; a client's or a shutdown's cancellation is never turned into one."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import asyncpg
import pytest
from aiohttp import web

from service.app import create_app
from service.http.edge import TICK_SECONDS, Deadlines, Edge
from service.http.health import healthz as coupons_handler
from service.keys import pages_key, recorder_key
from service.observe.recorder import UNMATCHED, RequestRecorder
from tests.support.api import check_error, coupons
from tests.support.common import token_for
from tests.support.pages import fetch, settle


def test_every_route_passes_the_edge(settings) -> None:
    app = create_app(settings)
    routes = list(app.router.routes())
    labels = {route.handler.edge_route for route in routes}  # AttributeError: one escaped
    assert {"/api/v2/coupons", "/metrics", "/healthz", UNMATCHED} <= labels
    # The catch-all is last: a route behind it would never be reached, so adding one fails.
    assert routes[-1].handler.edge_route == UNMATCHED and routes[-1].method == "*"
    edge = Edge(RequestRecorder(b"k"), Deadlines(1))
    router = web.Application().router
    edge.close(router)
    with pytest.raises(RuntimeError):
        edge.route(router, "GET", "/late", coupons_handler)


async def test_a_local_hit_is_recorded_like_any_request(rows, client, db, caplog) -> None:
    await rows.member(1, 1)
    await rows.member_coupon(await rows.coupon(1))
    # The rows' own invalidations applied first: none may drop the copy the next request fills.
    await settle(client, db)
    await fetch(client, token_for())
    caplog.set_level("INFO", logger="service.access")
    _, headers = await fetch(client, token_for(), headers={"X-Request-ID": "edge-local-1"})
    assert headers["X-Cache"] == "local" and headers["X-Request-ID"] == "edge-local-1"
    assert headers["Server"] == "coupons" and headers["Cache-Control"] == "private, no-cache"
    client.app[recorder_key].flush()
    [line] = [r.fields for r in caplog.records if getattr(r, "request_id", "") == "edge-local-1"]
    assert (line["route"], line["method"], line["status"], line["cache"], line["uniacid"]) == (
        "/api/v2/coupons", "GET", 200, "local", 1)
    assert line["duration_ms"] >= 0 and line["member"]


async def parked() -> None:
    await asyncio.Event().wait()


async def test_expire_cancels_only_the_overdue() -> None:
    deadlines = Deadlines(10)
    old, young = asyncio.create_task(parked()), asyncio.create_task(parked())
    await asyncio.sleep(0)
    deadlines.enter(old, 100.0)
    deadlines.enter(young, 105.0)
    assert deadlines.expire(109.9) == 0
    assert deadlines.expire(110.0) == 1
    assert deadlines.expire(111.0) == 0, "an expired task is cancelled once"
    with pytest.raises(asyncio.CancelledError):
        await old
    assert deadlines.timed_out(old)
    assert not young.done()
    deadlines.leave(old)
    deadlines.leave(young)
    young.cancel()
    assert deadlines.expire(1e9) == 0, "left: never cancelled"


async def test_timed_out_withdraws_only_its_own_cancellation() -> None:
    deadlines = Deadlines(1)
    seen: list[bool] = []

    async def request() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.enter(task, 0.0)
        try:
            await parked()
        except asyncio.CancelledError:
            seen.append(deadlines.timed_out(task))
            if not seen[-1]:
                raise
        finally:
            deadlines.leave(task)

    # The deadline's cancellation: withdrawn, the request goes on to answer 503.
    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    deadlines.expire(5.0)
    await task
    assert seen == [True] and not task.cancelled() and task.cancelling() == 0

    # A client that went away: not ours, it propagates.
    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [True, False]

    # Both at once (the shutdown's cancel lands beside the deadline's): still a cancellation.
    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    deadlines.expire(5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [True, False, False]


async def test_a_request_past_the_bound_is_answered_503(make_client, settings, rows,
                                                        database_url):
    await rows.member(1, 1)
    await rows.tenant(1)
    await rows.member_coupon(await rows.coupon(1))
    # The database bounds far away, so only the request bound can end the wait.
    client = await make_client(dataclasses.replace(
        settings, request_timeout_seconds=0.2, db_statement_timeout_ms=30_000,
        db_command_timeout_seconds=30.0))
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE yz_member_coupon IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            body = await coupons(client, token_for(), expected_status=503)
            waited = time.monotonic() - started
        check_error(body)
        # Past the bound, by at most a tick (plus slack for a loaded machine): never the 30 s
        # the statement itself was allowed.
        assert 0.2 <= waited <= 0.2 + TICK_SECONDS + 3.0, waited
    finally:
        await locker.close()
    # The pool's connection was not lost to the cancelled statement: the next one answers.
    body = await coupons(client, token_for())
    assert body["data"]["total"] == 1


async def test_every_outcome_is_recorded_also_as_prepared_bytes(rows, client, db, caplog) -> None:
    """A miss and a Redis hit answered by the handler over keep-alive are prepared bytes too:
    their outcome (which is in the bytes, not in the response's headers) still reaches the log
    line and coupons_cache_requests_total."""
    await rows.member(1, 1)
    await rows.member_coupon(await rows.coupon(1))
    await settle(client, db)
    caplog.set_level("INFO", logger="service.access")
    client.app[pages_key].local.clear()  # no local copy: the handler's path
    seen = []
    for rid in ("edge-miss", "edge-hit"):
        _, headers = await fetch(client, token_for(), headers={"X-Request-ID": rid})
        seen.append(headers["X-Cache"])
        client.app[pages_key].local.clear()
    client.app[recorder_key].flush()
    logged = {getattr(r, "request_id", ""): r.fields["cache"] for r in caplog.records
              if r.name == "service.access"}
    assert seen == ["miss", "hit"]
    assert (logged["edge-miss"], logged["edge-hit"]) == ("miss", "hit")


async def test_past_the_admission_bound_a_request_is_shed_at_once(aiohttp_client) -> None:
    """MAX_REQUESTS_IN_FLIGHT: with one page request waiting, the next is answered 503 with
    Retry-After and the envelope at once, routes without `admit` are not counted, and once the
    first is answered the next is admitted again."""
    release = asyncio.Event()

    async def waiting(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"result": 1, "msg": "", "data": {}})

    app = web.Application()
    edge = Edge(RequestRecorder(b"k"), Deadlines(10), max_in_flight=1)
    edge.route(app.router, "GET", "/page", waiting, admit=True)
    edge.route(app.router, "GET", "/health", coupons_handler)
    edge.close(app.router)
    client = await aiohttp_client(app)
    first = asyncio.create_task(client.get("/page"))
    while edge.admitted < 1:  # noqa: ASYNC110 (the first request reaching its handler)
        await asyncio.sleep(0.001)
    shed = await client.get("/page")
    check_error(await shed.json())
    assert shed.status == 503 and int(shed.headers["Retry-After"]) >= 1
    assert (await client.get("/health")).status == 200
    release.set()
    assert (await first).status == 200
    assert edge.admitted == 0
    assert (await client.get("/page")).status == 200
