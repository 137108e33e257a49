"""(d)'s ceiling: a bare aiohttp + uvloop app that runs the service's page statement through
asyncpg on every request (the same pool size, codecs and parameters as the service), renders
nothing and answers the cached page's bytes. What no implementation that reads each page from
PostgreSQL with this statement can beat on this machine."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import asyncpg
from aiohttp import web

from bench.bare import serve
from service.db.queries import QUERIES
from service.db.repository import warm_connection
from service.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/v2/coupons")
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--member", type=int, default=2)
    args = parser.parse_args()
    body = args.body.read_bytes()
    settings = load_settings()
    pool_key = web.AppKey("pool_key", asyncpg.Pool)

    async def pool_ctx(app: web.Application):
        app[pool_key] = await asyncpg.create_pool(
            args.database_url, min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size, init=warm_connection)
        yield
        await app[pool_key].close()

    # The bench's request: tenant 1, the token's member, unused, every type, page 1.
    params = {"uniacid": 1, "member_id": args.member, "staff_userid": None,
              "external_userid": None, "status": 1, "use_types": None, "coupon_methods": None,
              "near_only": False, "page_limit": 15, "page_offset": 0,
              "total_cap": settings.total_cap}

    async def handler(request: web.Request) -> web.Response:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        async with request.app[pool_key].acquire() as conn:
            rows = [row async for row in QUERIES.coupon_page(conn, now=now, **params)]
        assert rows
        return web.Response(body=body, content_type="application/json")

    serve(args.port, args.path, handler, pool_ctx)


if __name__ == "__main__":
    main()
