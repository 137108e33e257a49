"""A run: `serve` as a subprocess, the arrangement, the readers, the writer and, in the fault
test, the faults; its outcome, judged."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

from service.db.migrations import migrate
from tests.support.common import SECRET, SERVICE_TOKEN
from tests.support.freshness.judge import Judge
from tests.support.freshness.knobs import EXTRA_ENV, LIMITS, MIN_READS, READERS_START
from tests.support.freshness.model import Sig
from tests.support.freshness.readers import Read, plans, reader
from tests.support.freshness.world import World, arrange
from tests.support.freshness.writer import Writer
from tests.support.processes import RedisProcess, RestartablePostgres, cli_env, serving


@dataclasses.dataclass
class Window:
    label: str
    begin: float
    end: float
    note: str = ""


@dataclasses.dataclass
class Outcome:
    name: str
    workers: int
    wall: float
    reads: list[Read]
    errors: list[tuple[float, str]]
    writer: Writer
    world: World
    judge: Judge
    verdict: dict[str, Any]
    windows: list[Window]
    t0: float
    log: Path
    server_tail: str


def service_env(database_url: str, redis_url: str) -> dict[str, str]:
    extra = dict(item.split("=", 1) for item in EXTRA_ENV.split(",") if item)
    return cli_env(DATABASE_URL=database_url, REDIS_URL=redis_url, AUTH_JWT_SECRET=SECRET,
                   INTERNAL_SERVICE_TOKEN=SERVICE_TOKEN, APP_ENV="development",
                   CACHE_PREFIX=f"fresh{secrets.token_hex(4)}", **LIMITS, **extra)


Faults = Callable[["Run"], Awaitable[None]]


@dataclasses.dataclass
class Run:
    writer: Writer
    server_url: str
    stop: asyncio.Event
    t0: float
    seconds: float
    windows: list[Window]
    workers: int
    pg: RestartablePostgres | None = None
    redis: RedisProcess | None = None

    async def until(self, fraction: float) -> None:
        await asyncio.sleep(max(0.0, self.t0 + fraction * self.seconds - time.monotonic()))


async def scenario(name: str, database_url: str, redis_url: str, workers: int, tmp: Path, *,
                   seconds: float, clock_at: tuple[float, ...], faults: Faults | None = None,
                   pg: RestartablePostgres | None = None,
                   redis: RedisProcess | None = None) -> Outcome:
    await migrate(database_url)
    log = tmp / f"serve-{name}-{workers}.log"
    rng = random.Random(f"{name}-{workers}")
    async with serving(service_env(database_url, redis_url), log, workers=workers) as server:
        # The clock: whole-second ends chosen now, relative to time.time(), at the given
        # fractions of the run (which starts about READERS_START from now), at least 2 s ahead.
        now = time.time()
        ends = sorted({max(math.ceil(now) + 2, math.ceil(now + READERS_START + f * seconds))
                       for f in clock_at})
        setup = await asyncpg.connect(database_url,
                                      server_settings={"application_name": "freshness-setup"})
        try:
            world = await arrange(setup, ends)
        finally:
            await setup.close()
        writer = Writer(database_url, server.base, world, seconds, rng)
        reads: list[Read] = []
        errors: list[tuple[float, str]] = []
        windows: list[Window] = []
        stop = asyncio.Event()
        tasks: list[asyncio.Task] = []
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=15))
        try:
            await writer.open()
            await asyncio.sleep(0.3)   # the arrangement's notifications applied (nothing cached)
            offset = time.time() - time.monotonic()
            t0 = time.monotonic()
            run = Run(writer, server.base, stop, t0, seconds, windows, workers, pg, redis)
            token_ttl = int(seconds * 20) + 600
            canon: dict[Sig, Sig] = {}
            tasks = [asyncio.create_task(reader(session, plan, reads, errors, stop, canon))
                     for plan in plans(server.base, token_ttl)]
            tasks.append(asyncio.create_task(writer.run(stop)))
            if faults is not None:
                tasks.append(asyncio.create_task(faults(run)))
            driver = tasks[-1] if faults is not None else None
            while True:
                await asyncio.sleep(0.2)
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()
                elapsed = time.monotonic() - t0
                enough = sum(1 for r in reads if r.status == 200) >= MIN_READS
                if elapsed >= seconds * 10 or (elapsed >= seconds and enough
                                               and (driver is None or driver.done())):
                    break
            wall = time.monotonic() - t0
            stop.set()
            writer.gate.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            stop.set()
            writer.gate.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
            await writer.close()
    tail = server.output(6000)
    judge = Judge(writer, world, reads, offset)
    return Outcome(name, workers, wall, reads, errors, writer, world, judge, judge.judge(),
                   windows, t0, log, tail)


def run_async(coro: Awaitable[Outcome]) -> Outcome:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
