"""The cache's parts for the app: the Redis client, the page cache and its layers, the pages
service, and the LISTEN task that keeps them true; each a single-yield cleanup context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from service.cache.client import connect as connect_redis
from service.cache.contacts import ContactCache
from service.cache.listener import InvalidationListener
from service.cache.local import LocalCache
from service.cache.redis import CircuitBreaker, PageCache
from service.cache.trust import CacheTrust
from service.coupons.pages import CouponPages, PageOptions
from service.keys import (
    clock_key,
    limiter_key,
    listener_key,
    pages_key,
    redis_key,
    repository_key,
    settings_key,
)
from service.runtime.tasks import every, stop_task

log = logging.getLogger(__name__)

# Connections each worker opens to Redis before it serves: a connection's setup (DNS, TCP,
# the client's handshake) inside a request's Redis bound was the first load's failure after a
# start (deploy/README.md), and more are opened on demand up to REDIS_MAX_CONNECTIONS.
WARM_CONNECTIONS = 8


async def warm(client: Any, connections: int, seconds: float) -> None:
    """Open `connections` pooled connections at once (one PING each), within `seconds`; a Redis
    that is down now only leaves them to be opened later (the breaker handles it)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            await asyncio.gather(*(client.ping() for _ in range(connections)))


def setup_redis(app: web.Application) -> None:
    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]
        client = connect_redis(settings)
        app[redis_key] = client
        if not settings.redis_cluster:
            await warm(client, min(WARM_CONNECTIONS, settings.redis_max_connections),
                       settings.readiness_timeout_seconds)
        try:
            yield
        finally:
            await client.aclose()

    app.cleanup_ctx.append(redis_ctx)


# How often the local pages about to end their safety TTL are proven again (service/cache/local.py).
REPROVE_EVERY_SECONDS = 1.0


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
            fence=app[repository_key].fence,
        )
        local = (LocalCache(settings.local_cache_max_bytes, settings.local_cache_ttl_seconds)
                 if settings.local_cache_enabled else None)
        options = PageOptions(shape=settings.response_shape, tz=settings.tz,
                              ttl_seconds=settings.cache_ttl_seconds,
                              total_cap=settings.total_cap, enabled=settings.cache_enabled)
        pages = CouponPages(app[repository_key], cache, CacheTrust(), app[limiter_key],
                            ContactCache(settings.contact_cache_size), local, options)
        app[pages_key] = pages
        listener = InvalidationListener(
            settings.database_listen_url or settings.database_url, pages, app[repository_key],
            heartbeat=settings.listener_heartbeat_seconds,
            holders_max=settings.coupon_holders_max,
        )
        app[listener_key] = listener
        task = asyncio.create_task(listener.run(), name="invalidation-listener")
        clock = app[clock_key]
        charges = asyncio.create_task(
            every(settings.rate_limit_charge_seconds,
                  lambda: pages.charge_limits(clock.now_ms()), "rate limit charge"),
            name="rate-limit-charges")
        reproofs = asyncio.create_task(
            every(REPROVE_EVERY_SECONDS, lambda: pages.reprove_local(clock.now_ms() // 1000),
                  "local cache reproof"),
            name="local-cache-reproofs")
        # Serve from PostgreSQL until the listener is up and coverage proven (a handover or a
        # flush); a short wait here lets a healthy start begin with the cache on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.readiness_timeout_seconds * 3):
                await pages.trust.ready.wait()
        try:
            yield
        finally:
            await stop_task(reproofs)
            await stop_task(charges)
            await pages.charge_limits(clock.now_ms())  # the drain's, too
            await stop_task(task)
            if listener.consumer is not None:
                await stop_task(listener.consumer)
            # Out of the registry: a process starting now does not wait for this one's
            # acknowledgement (service/cache/listener.py).
            await listener.leave()

    app.cleanup_ctx.append(pages_ctx)
