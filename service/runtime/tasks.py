"""Background tasks of the app: started and stopped by single-yield cleanup contexts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task) -> None:
    """Cancel `task` and wait for it to end. A cancellation can be swallowed inside a library
    call (Python 3.11's asyncio.timeout loses one that races its own expiry), after which the
    task would wait on its queue forever and hang shutdown: cancel again until it is done."""
    task.cancel()
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if not done:
            task.cancel()
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s ended with %s", task.get_name(),
                    type(task.exception()).__name__)


async def every(seconds: float, work: Callable[[], Awaitable[object]], what: str) -> None:
    """`work()` every `seconds`, for a task of its own; a failure is logged, never the end of it
    (the next tick tries again)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception as exc:
            log.warning("%s failed: %s", what, type(exc).__name__)


def setup_ticker(app: web.Application, name: str, seconds: float, tick: Callable[[], object],
                 last: Callable[[], object] | None = None) -> None:
    """`tick()` every `seconds` while the app runs, then `last()` once, after the tasks."""

    async def run() -> None:
        while True:
            await asyncio.sleep(seconds)
            tick()

    async def ticker_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name=name)
        try:
            yield
        finally:
            await stop_task(task)
            if last is not None:
                last()

    app.cleanup_ctx.append(ticker_ctx)
