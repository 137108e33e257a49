"""Figures for the cache: hit and miss latency, commit-to-invalidation latency, stampede count.

    python -m bench.cache_figures [--writes 300] [--requests 2000]

Runs the real app (create_app) on 127.0.0.1 against PostgreSQL and Redis (embedded unless
DATABASE_URL / REDIS_URL are set), with the demo data, and prints a table. Latencies are the
client's view over loopback, one request at a time, so they include aiohttp's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
from aiohttp import web

from service.app import create_app
from service.auth.tokens import issue_token
from service.db.migrations import migrate
from service.keys import db_pool_key, listener_key, pages_key
from service.runtime.demo import load_demo_data
from service.runtime.embedded import resolved
from service.settings import load_settings

PATH = "/api/v2/coupons"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, values: list[float]) -> dict:
    return {"what": name, "n": len(values), "p50_ms": round(pct(values, 0.5) * 1e3, 3),
            "p99_ms": round(pct(values, 0.99) * 1e3, 3), "max_ms": round(max(values) * 1e3, 3),
            "mean_ms": round(statistics.fmean(values) * 1e3, 3)}


async def measure(settings, writes: int, requests: int) -> list[dict]:
    await migrate(settings.database_url, display_tz=settings.display_tz)
    await load_demo_data(settings.database_url)
    out = await measure_redis_layer(dataclasses.replace(settings, local_cache_enabled=False),
                                    writes, requests)
    out += await measure_local_layer(settings, writes, requests)
    return out


@contextlib.asynccontextmanager
async def running(settings) -> AsyncIterator[tuple[web.Application, str, str]]:
    """The real app on a free 127.0.0.1 port: (app, its coupons URL, a token for member 2)."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        token = issue_token(settings.auth_jwt_secret, 1, 2, "bench", 3600, int(time.time()))
        yield app, f"http://127.0.0.1:{port}{PATH}", token
    finally:
        await runner.cleanup()


async def measure_local_layer(settings, writes: int, requests: int) -> list[dict]:
    """Hits from the process-local layer, and commit-to-local-invalidation: the staleness the
    local layer can add in any process (each drops its copy on its own LISTEN event)."""
    async with running(settings) as (app, url, token):
        return await _local_figures(app, url, token, settings, writes, requests)


async def _local_figures(app, url: str, token: str, settings, writes: int,
                         requests: int) -> list[dict]:
    params = {"client": "work", "type": "17", "status_request": "1", "coupon_type": "0"}
    pages = app[pages_key]
    db = await asyncpg.connect(settings.database_url)
    out = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
            async def get() -> str:
                async with s.get(url, params=params) as resp:
                    assert resp.status == 200
                    await resp.read()
                    return resp.headers["X-Cache"]

            await get()
            hits = []
            for _ in range(requests):
                start = time.perf_counter()
                assert await get() == "local"
                hits.append(time.perf_counter() - start)
            out.append(row("hit (process-local layer)", hits))
            lags = []
            for _ in range(writes):
                await get()
                assert len(pages.local) > 0
                await db.execute("UPDATE yz_member_coupon SET updated_at = now() "
                                 "WHERE id = (SELECT min(id) FROM yz_member_coupon WHERE uid = 2)")
                start = time.perf_counter()
                while len(pages.local) > 0:
                    if time.perf_counter() - start > 5:
                        raise RuntimeError("local invalidation never arrived")
                    await asyncio.sleep(0)
                lags.append(time.perf_counter() - start)
            out.append(row("commit -> local layer invalidated", lags))
    finally:
        await db.close()
    return out


async def measure_redis_layer(settings, writes: int, requests: int) -> list[dict]:
    async with running(settings) as (app, base, token):
        return await _redis_figures(app, base, token, settings, writes, requests)


async def _redis_figures(app, base: str, token: str, settings, writes: int,
                         requests: int) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"}
    params = {"client": "work", "type": "17", "status_request": "1", "coupon_type": "0"}
    out: list[dict] = []
    db = await asyncpg.connect(settings.database_url)
    pages = app[pages_key]
    try:
        async with aiohttp.ClientSession() as session:
            async def get(extra: dict | None = None) -> str:
                async with session.get(base, params={**params, **(extra or {})},
                                       headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()
                    return resp.headers["X-Cache"]

            await get()
            hits: list[float] = []
            for _ in range(requests):
                start = time.perf_counter()
                outcome = await get()
                hits.append(time.perf_counter() - start)
                assert outcome == "hit", outcome
            out.append(row("hit (Redis, one HGET)", hits))

            misses: list[float] = []
            for _ in range(min(requests, 500)):
                await pages.invalidate_members(1, [2])
                start = time.perf_counter()
                outcome = await get()
                misses.append(time.perf_counter() - start)
                assert outcome == "miss", outcome
            out.append(row("miss (one SQL round trip + fill)", misses))

            # Commit to invalidation: from the moment the writer's COMMIT returns to the moment
            # the member's stamp in Redis has changed.
            key = pages.cache.member_key(1, 2)
            redis = pages.cache.client
            lags: list[float] = []
            for _ in range(writes):
                await get()
                before = await redis.hget(key, "gen")
                await db.execute("UPDATE yz_member_coupon SET updated_at = now() "
                                 "WHERE id = (SELECT min(id) FROM yz_member_coupon WHERE uid = 2)")
                start = time.perf_counter()
                while await redis.hget(key, "gen") == before:
                    if time.perf_counter() - start > 5:
                        raise RuntimeError("invalidation never arrived")
                lags.append(time.perf_counter() - start)
            out.append(row("commit -> Redis invalidated", lags))

            # Stampede: N concurrent requests for one cold page, counting statements run.
            counted: list[str] = []
            pool = app[db_pool_key]
            held = [await pool.acquire() for _ in range(pool.get_max_size())]
            for conn in held:
                conn.add_query_logger(lambda rec: counted.append(rec.query))
            for conn in held:
                await pool.release(conn)
            token_sync = uuid.uuid4().hex
            await db.execute("SELECT pg_notify('coupons_invalidate', $1)", f"sync:{token_sync}")
            await app[listener_key].wait_synced(token_sync)
            await pages.invalidate_members(1, [2])
            counted.clear()
            outcomes = await asyncio.gather(*(get({"page": "2"}) for _ in range(200)))
            out.append({"what": "stampede: 200 concurrent cold requests", "n": 200,
                        "db_queries": len(counted),
                        "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))}})
    finally:
        await db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with resolved(load_settings()) as settings:
        settings = dataclasses.replace(settings, db_pool_max_size=4,
                                       rate_limit_staff_per_minute=0,
                                       rate_limit_member_per_minute=0)
        results = asyncio.run(measure(settings, args.writes, args.requests))
    for result in results:
        print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
