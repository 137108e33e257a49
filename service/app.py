"""The application factory: synchronous and I/O-free, shared by production and tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from service.api import setup_routes
from service.clock import Clock, SystemClock
from service.errors import error_middleware
from service.keys import clock_key, db_pool_key, redis_key, repository_key, settings_key
from service.repository import CouponRepository, init_connection
from service.settings import Settings


def setup_database(app: web.Application) -> None:
    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            command_timeout=settings.db_command_timeout_seconds,
            init=init_connection,
        )
        app[db_pool_key] = pool
        app[repository_key] = CouponRepository(pool, settings.display_tz)
        try:
            yield
        finally:
            await pool.close()

    app.cleanup_ctx.append(database_ctx)


def setup_redis(app: web.Application) -> None:
    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.readiness_timeout_seconds,
            socket_connect_timeout=settings.readiness_timeout_seconds,
        )
        app[redis_key] = client
        try:
            yield
        finally:
            await client.aclose()

    app.cleanup_ctx.append(redis_ctx)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # No server version on the wire; JSON is never sniffed into something executable.
    response.headers["Server"] = "coupons"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "private, no-cache"


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("create_app needs resolved DATABASE_URL and REDIS_URL")
    app = web.Application(
        middlewares=[error_middleware], client_max_size=settings.max_body_bytes
    )
    app[settings_key] = settings
    app[clock_key] = clock or SystemClock()
    app.on_response_prepare.append(_security_headers)
    setup_database(app)
    setup_redis(app)
    setup_routes(app)
    return app
