"""The application factory: synchronous and I/O-free, shared by production and tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.api import setup_routes
from service.cache import CircuitBreaker, PageCache
from service.clock import Clock, SystemClock
from service.errors import error_middleware
from service.keys import (
    clock_key,
    db_pool_key,
    listener_key,
    pages_key,
    redis_key,
    repository_key,
    settings_key,
)
from service.listener import InvalidationListener
from service.localcache import LocalCache
from service.pages import CacheTrust, CouponPages
from service.repository import CouponRepository, keep_session, warm_connection
from service.settings import Settings


def setup_database(app: web.Application) -> None:
    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            command_timeout=settings.db_command_timeout_seconds,
            init=warm_connection,
            reset=keep_session,
        )
        app[db_pool_key] = pool
        repository = CouponRepository(pool, settings.total_cap)
        app[repository_key] = repository
        # Coupon ends are stored, computed in the zone `migrate` recorded: serving with another
        # DISPLAY_TZ would put coupons in the wrong tab around midnight.
        stored_tz = await repository.display_tz()
        if stored_tz != settings.display_tz:
            await pool.close()
            raise RuntimeError(f"DISPLAY_TZ is {settings.display_tz} but the database's coupon "
                               f"ends are in {stored_tz}: run `python -m service migrate`")
        try:
            yield
        finally:
            await pool.close()

    app.cleanup_ctx.append(database_ctx)


def setup_redis(app: web.Application) -> None:
    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]
        # Blocking pool: a burst waits for a free connection (bounded by each call's timeout)
        # instead of opening thousands.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=None,
            socket_timeout=settings.readiness_timeout_seconds,
            socket_connect_timeout=settings.readiness_timeout_seconds,
            # No silent retries: each call has one bounded try; the breaker decides what next.
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis.from_pool(pool)
        app[redis_key] = client
        try:
            yield
        finally:
            await client.aclose()

    app.cleanup_ctx.append(redis_ctx)


def setup_pages(app: web.Application) -> None:
    """The cache and the pages service, then the LISTEN task that keeps the cache true."""

    async def pages_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]
        cache = PageCache(
            app[redis_key],
            prefix=settings.cache_prefix,
            ttl_seconds=settings.cache_ttl_seconds,
            timeout=settings.redis_timeout_seconds,
            lease_ms=settings.cache_lease_ms,
            breaker=CircuitBreaker(settings.redis_breaker_failures,
                                   settings.redis_breaker_reset_seconds),
        )
        local = (LocalCache(settings.local_cache_max_bytes, settings.local_cache_ttl_seconds)
                 if settings.local_cache_enabled else None)
        pages = CouponPages(app[repository_key], cache if settings.cache_enabled else None,
                            CacheTrust(), shape=settings.response_shape, tz=settings.tz,
                            ttl_seconds=settings.cache_ttl_seconds, local=local)
        app[pages_key] = pages
        listener = InvalidationListener(
            settings.database_url, pages, app[repository_key],
            heartbeat=settings.listener_heartbeat_seconds,
            holders_max=settings.coupon_holders_max,
        )
        app[listener_key] = listener
        task = asyncio.create_task(listener.run(), name="invalidation-listener")
        # Serve from PostgreSQL until the listener is up and the cache flushed; a short wait
        # here lets a healthy start begin with the cache on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.readiness_timeout_seconds * 3):
                await pages.trust.ready.wait()
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(pages_ctx)


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
    setup_pages(app)
    setup_routes(app)
    return app
