"""The app served on 127.0.0.1 from a thread of its own, for blocking clients (schemathesis,
a browser driver)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

from aiohttp import web

from service.app import create_app
from service.clock import Clock
from service.http.connections import make_runner
from service.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(settings: Settings, clock: Clock | None = None) -> Iterator[str]:
    """The app on its own loop in a thread, as `serve` runs it; yields its base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = make_runner(create_app(settings, clock), handler_cancellation=True)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="live-server", daemon=True)
    thread.start()
    assert started.wait(30), "server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


async def raw(host: str, port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Bytes sent as they are on a connection of its own; what came back until the server
    closed it (malformed or slow HTTP, which no client library sends)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            return await reader.read()
    finally:
        writer.close()
