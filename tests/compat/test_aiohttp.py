"""compat/aiohttp.py: only the service's own runners answer malformed HTTP with the envelope
(no import-time change reaches another aiohttp server in the process); on an aiohttp version not
tested, the stock runner and aiohttp's own page responses are used, and pages stay right."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from aiohttp import web

from service.app import create_app
from service.compat import aiohttp as compat
from service.http.connections import make_runner
from tests.support.api import check_error, coupons, items_of
from tests.support.common import token_for
from tests.support.live import free_port, raw

LONG_HEADER = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"


async def _serve(runner: web.AppRunner) -> int:
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return port


async def test_another_aiohttp_server_in_the_process_is_untouched(settings, db) -> None:
    ours = make_runner(create_app(settings))
    other = web.AppRunner(web.Application())
    try:
        ours_answer = await raw("127.0.0.1", await _serve(ours), LONG_HEADER)
        other_answer = await raw("127.0.0.1", await _serve(other), LONG_HEADER)
    finally:
        await ours.cleanup()
        await other.cleanup()
    head, _, body = ours_answer.partition(b"\r\n\r\n")
    check_error(json.loads(body))
    assert b"Server: coupons" in head
    # aiohttp's own answer, as any other aiohttp server in the process gives it.
    assert b"application/json" not in other_answer.split(b"\r\n\r\n")[0]
    assert b"Bad Request" in other_answer


async def test_an_untested_aiohttp_gets_aiohttp_s_own_answers(make_client, settings, rows,
                                                              monkeypatch) -> None:
    await rows.member(1, 1)
    mc = await rows.member_coupon(await rows.coupon(1))
    monkeypatch.setattr(compat, "SUPPORTED", False)
    monkeypatch.setattr(compat, "PREPARED_BYTES", False)
    assert type(compat.runner(web.Application(), answer=lambda status: web.Response())) is \
        web.AppRunner
    for hot in (True, False):
        client = await make_client(dataclasses.replace(settings, hot_path_enabled=hot))
        for _ in range(3):  # a miss, then local hits: every one a right page
            body = await coupons(client, token_for(), coupon_type=0)
            assert [i["id"] for i in items_of(body)] == [mc]


def _posted(chunks: list[bytes], eof: bool) -> web.Request:
    """A real aiohttp request whose body stream has been fed `chunks` (and its end, if `eof`)."""
    from unittest import mock

    from aiohttp import streams
    from aiohttp.test_utils import make_mocked_request

    payload = streams.StreamReader(mock.Mock(_reading_paused=False), 2**16,
                                   loop=asyncio.get_running_loop())
    for chunk in chunks:
        payload.feed_data(chunk)
    if eof:
        payload.feed_eof()
    length = str(sum(map(len, FORM_PARTS)))
    return make_mocked_request(
        "POST", "/api/v2/coupons", payload=payload,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Length": length})


FORM_PARTS = [b"client=wo", b"rk&type=17"]


async def test_a_buffered_body_is_taken_without_awaiting_and_kept_for_read() -> None:
    request = _posted(FORM_PARTS, eof=True)
    assert compat.buffered_body(request) == b"client=work&type=17"
    assert compat.buffered_body(request) == b"client=work&type=17"  # kept, not taken twice
    assert await request.read() == b"client=work&type=17"
    assert dict(await request.post()) == {"client": "work", "type": "17"}


async def test_a_body_still_arriving_is_left_for_read_to_await() -> None:
    request = _posted(FORM_PARTS[:1], eof=False)
    assert compat.buffered_body(request) is None
    request.content.feed_data(FORM_PARTS[1])
    request.content.feed_eof()
    assert await request.read() == b"client=work&type=17", "nothing was taken from the stream"


async def test_an_untested_aiohttp_reads_bodies_only_its_own_way(monkeypatch) -> None:
    monkeypatch.setattr(compat, "SUPPORTED", False)
    request = _posted(FORM_PARTS, eof=True)
    assert compat.buffered_body(request) is None
    assert await request.read() == b"client=work&type=17"
