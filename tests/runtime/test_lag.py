"""service/runtime/lag.py on a real event loop: a bound whose timer fires late (the loop was
blocked, as under load) does not fail a call whose answer is there; one that fires on time does;
and the monitor sees the loop's lateness."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from service.runtime.lag import Bound, LagMonitor


def block_loop_every(seconds: float, pause: float) -> asyncio.Task[None]:
    """A task that holds the loop for `seconds` of CPU-bound work, then yields for `pause` (0:
    it runs again in the loop's next turn): a loop with too many requests queued in it."""

    async def hog() -> None:
        while True:
            time.sleep(seconds)  # noqa: ASYNC251 (deliberately blocking: the loop is late)
            await asyncio.sleep(pause)

    return asyncio.get_running_loop().create_task(hog())


async def answer_after(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "answer"


@pytest.fixture
def echo_port() -> Iterator[int]:
    """An echo server in a thread of its own: it answers at once, whatever the loop is doing,
    as Redis does (the lateness is all the loop's)."""
    server = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(64):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stopping.set()
    thread.join(timeout=5)
    server.close()


@pytest.fixture
async def echo(echo_port: int) -> AsyncIterator[tuple[asyncio.StreamReader,
                                                       asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    yield reader, writer
    writer.close()
    await writer.wait_closed()


async def round_trips(echo, bound, calls: int = 20) -> int:
    """`calls` round trips to the echo server, each under `bound()` (a 50 ms budget), the loop
    held for 80 ms right after the request is sent (as a busy loop holds it): the reply is in
    the socket before the loop looks again, and the timer is due in that same turn. How many
    timed out. A timed-out round trip's reply is read before the next, as redis-py's dropped
    connection would."""
    reader, writer = echo
    failed = 0
    for _ in range(calls):
        writer.write(b"x")
        try:
            async with bound():
                time.sleep(0.08)  # noqa: ASYNC251 (deliberately blocking: the loop is late)
                assert await reader.readexactly(1) == b"x"
        except TimeoutError:
            failed += 1
            await reader.readexactly(1)
    return failed


async def test_an_answer_that_waited_for_a_blocked_loop_is_not_a_timeout(echo) -> None:
    assert await round_trips(echo, lambda: Bound(0.05, 0.5)) == 0


async def test_plain_timeout_fails_the_same_calls(echo) -> None:
    """The case above is a real one: asyncio.timeout cancels every answer that had arrived,
    because its timer runs in the turn that reads the reply, before the task resumes."""
    assert await round_trips(echo, lambda: asyncio.timeout(0.05)) == 20


async def test_a_slow_answer_on_a_responsive_loop_times_out_on_time() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError):
        async with Bound(0.05, 0.5) as bound:
            await answer_after(10)
    assert not bound.lagged, "a timer that fired on time blames the call"
    assert loop.time() - start < 0.3


async def test_no_answer_on_a_blocked_loop_ends_at_the_cap_as_lagged() -> None:
    hog = block_loop_every(0.08, 0.001)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        with pytest.raises(TimeoutError):
            async with Bound(0.05, 0.5) as bound:
                await answer_after(10)
    finally:
        hog.cancel()
        await asyncio.gather(hog, return_exceptions=True)
    assert bound.lagged, "out of time while the loop was late: the loop's fault"
    assert 0.45 <= loop.time() - start < 1.0


async def test_an_outer_cancel_still_cancels() -> None:
    async def bounded() -> None:
        async with Bound(1.0, 5.0):
            await answer_after(10)

    task = asyncio.create_task(bounded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_monitor_sees_a_blocked_loop() -> None:
    monitor = LagMonitor(interval=0.01, window=50)
    async with monitor.running():
        await asyncio.sleep(0.05)
        quiet = monitor.worst
        time.sleep(0.15)  # noqa: ASYNC251 (deliberately blocking)
        await asyncio.sleep(0.03)
        assert monitor.worst >= 0.1
    assert quiet < 0.05
