"""The application factory: synchronous and I/O-free, shared by production and tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web, web_protocol, web_server

from service.auth.tokens import TokenVerifier
from service.cache.client import connect as connect_redis
from service.cache.contacts import ContactCache
from service.cache.listener import InvalidationListener
from service.cache.local import LocalCache
from service.cache.redis import CircuitBreaker, PageCache
from service.clock import Clock, SystemClock
from service.coupons.pages import CacheTrust, CouponPages
from service.db.repository import CouponRepository, keep_session, warm_connection
from service.http import openapi
from service.http.api import setup_routes
from service.http.devpages import setup_dev_pages
from service.http.edge import SERVER_NAME, TICK_SECONDS, Deadlines, Edge
from service.http.errors import HTTP_ERRORS, envelope, internal_error, server_log, styled
from service.keys import (
    clock_key,
    db_pool_key,
    draining_key,
    limiter_key,
    listener_key,
    openapi_key,
    pages_key,
    read_pool_key,
    recorder_key,
    redis_key,
    repository_key,
    settings_key,
    verifier_key,
)
from service.limits.limiter import Rate, RateLimiter
from service.observe import metrics
from service.observe.recorder import RequestRecorder, member_hash_key
from service.runtime.tasks import setup_ticker, stop_task
from service.settings import Settings

log = logging.getLogger("service.app")


def _create_pool(settings: Settings, dsn: str) -> asyncpg.Pool:
    return asyncpg.create_pool(
        dsn,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout_seconds,
        # 0 under PgBouncer transaction pooling: a named prepared statement lives on one server
        # connection, and the next transaction may run on another (README).
        statement_cache_size=settings.db_statement_cache_size,
        # Startup parameters, so they hold for the session whatever a statement does: the
        # server cancels anything slower than the bound (a 503 for the caller).
        server_settings={
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "lock_timeout": str(settings.db_statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(settings.db_statement_timeout_ms * 5),
            "application_name": "coupons-sidebar",
        },
        init=warm_connection,
        reset=keep_session,
    )


def setup_database(app: web.Application) -> None:
    """The primary's pool, and the replica's when DATABASE_READ_URL is set (page reads only)."""

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[settings_key]

        async def close(pool: asyncpg.Pool) -> None:
            # A query still running after the shutdown grace (a shielded cache fill outlives
            # its cancelled request) must not hold the process: close, then cut.
            try:
                async with asyncio.timeout(settings.shutdown_grace_seconds):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

        async with contextlib.AsyncExitStack() as stack:
            pool = await _create_pool(settings, settings.database_url)
            stack.push_async_callback(close, pool)
            read_pool = None
            if settings.database_read_url:
                read_pool = await _create_pool(settings, settings.database_read_url)
                stack.push_async_callback(close, read_pool)
                app[read_pool_key] = read_pool
            app[db_pool_key] = pool
            for name, configured in (("primary", pool), ("replica", read_pool)):
                if configured is not None:
                    metrics.DB_POOL_MAX.labels(name).inc(settings.db_pool_max_size)
                    stack.callback(metrics.DB_POOL_MAX.labels(name).dec,
                                   settings.db_pool_max_size)
            repository = CouponRepository(pool, settings.total_cap, read_pool=read_pool,
                                          acquire_timeout=settings.db_acquire_timeout_seconds)
            app[repository_key] = repository
            # Coupon ends are stored, computed in the zone `migrate` recorded: serving with
            # another DISPLAY_TZ would put coupons in the wrong tab around midnight.
            stored_tz = await repository.display_tz()
            if stored_tz != settings.display_tz:
                raise RuntimeError(
                    f"DISPLAY_TZ is {settings.display_tz} but the database's coupon ends are in "
                    f"{stored_tz}: run `python -m service migrate`")
            yield

    app.cleanup_ctx.append(database_ctx)


def setup_redis(app: web.Application) -> None:
    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = connect_redis(app[settings_key])
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
            fence=app[repository_key].fence,
        )
        local = (LocalCache(settings.local_cache_max_bytes, settings.local_cache_ttl_seconds)
                 if settings.local_cache_enabled else None)
        pages = CouponPages(app[repository_key], cache, CacheTrust(),
                            shape=settings.response_shape, tz=settings.tz,
                            ttl_seconds=settings.cache_ttl_seconds, local=local,
                            limiter=app[limiter_key],
                            contacts=ContactCache(settings.contact_cache_size),
                            enabled=settings.cache_enabled, total_cap=settings.total_cap)
        app[pages_key] = pages
        listener = InvalidationListener(
            settings.database_listen_url or settings.database_url, pages, app[repository_key],
            heartbeat=settings.listener_heartbeat_seconds,
            holders_max=settings.coupon_holders_max,
        )
        app[listener_key] = listener
        task = asyncio.create_task(listener.run(), name="invalidation-listener")
        # Serve from PostgreSQL until the listener is up and coverage proven (a handover or a
        # flush); a short wait here lets a healthy start begin with the cache on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.readiness_timeout_seconds * 3):
                await pages.trust.ready.wait()
        try:
            yield
        finally:
            await stop_task(task)
            if listener.consumer is not None:
                await stop_task(listener.consumer)
            # Out of the registry: a process starting now does not wait for this one's
            # acknowledgement (service/listener.py).
            await listener.leave()

    app.cleanup_ctx.append(pages_ctx)


class _EnvelopeRequestHandler(web_protocol.RequestHandler):
    """aiohttp answers a malformed request (a header over the size bound, a broken request
    line, bytes that are not HTTP) itself, before the app's routes (and the edge) run: as
    plain text that quotes the offending request bytes (an Authorization header among them),
    with aiohttp's and Python's versions in `Server`. Here that answer is the contract's
    envelope, without either."""

    def __init__(self, *args: Any, error_style: str = "http", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_style = error_style  # from the app's handler_args: ERROR_STYLE

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        self.logger.warning("malformed request", exc_info=exc)  # the safe logger: kind only
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        if status >= 500:
            response = internal_error()
        else:
            field, msg = HTTP_ERRORS.get(status, ("request", "请求格式不正确"))
            response = envelope(status, msg, {field: [msg]})
        styled(response, self.error_style)
        response.headers["Server"] = SERVER_NAME
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.force_close()
        return response


# The one place aiohttp builds a connection's handler (web_server.Server.__call__) looks this
# name up at call time; aiohttp offers no option for the class.
web_server.RequestHandler = _EnvelopeRequestHandler  # type: ignore[misc]


def rate_limiter(settings: Settings) -> RateLimiter:
    def rate(per_minute: int, burst: int) -> Rate | None:
        return Rate(per_minute, burst) if per_minute > 0 else None

    return RateLimiter(
        prefix=settings.cache_prefix,
        staff=rate(settings.rate_limit_staff_per_minute, settings.rate_limit_staff_burst),
        member=rate(settings.rate_limit_member_per_minute, settings.rate_limit_member_burst),
        lease=settings.rate_limit_lease,
        lease_seconds=settings.rate_limit_lease_seconds,
    )


def handler_args(settings: Settings) -> dict[str, object]:
    """aiohttp's per-connection bounds (README "Security"): every runner of this app, the CLI's
    and the tests' alike, gets them, so a huge or idle client is cut off the same way."""
    return {
        "max_line_size": settings.http_max_line_bytes,
        "max_field_size": settings.http_max_field_bytes,
        "max_headers": settings.http_max_headers,
        "keepalive_timeout": settings.http_keepalive_seconds,
        # After a response that left body bytes unread, wait at most this long for them.
        "lingering_time": 1.0,
        "logger": server_log,
        # Read by _EnvelopeRequestHandler: the malformed-HTTP answers follow ERROR_STYLE too.
        "error_style": settings.error_style,
    }


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("create_app needs resolved DATABASE_URL and REDIS_URL")
    recorder = RequestRecorder(member_hash_key(settings.auth_jwt_secret))
    deadlines = Deadlines(settings.request_timeout_seconds)
    edge = Edge(recorder, deadlines, settings.error_style)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        handler_args=handler_args(settings),
    )
    app[settings_key] = settings
    app[recorder_key] = recorder
    app[clock_key] = clock or SystemClock()
    app[draining_key] = asyncio.Event()
    app[verifier_key] = TokenVerifier.from_settings(settings)
    app[limiter_key] = rate_limiter(settings)
    app[openapi_key] = openapi.document()
    # First: the recorder's last flush runs after every other context has closed, so that the
    # requests answered during the drain are in it too.
    setup_ticker(app, "request-recorder", settings.observe_flush_seconds, recorder.flush,
                 last=recorder.flush)
    setup_ticker(app, "request-deadlines", TICK_SECONDS,
                 lambda: deadlines.expire(time.monotonic()))
    setup_database(app)
    setup_redis(app)
    setup_pages(app)
    setup_routes(app, edge)
    if settings.dev_pages:
        setup_dev_pages(app, edge)
    edge.route(app.router, "GET", "/metrics", metrics.metrics_handler)
    edge.close(app.router)
    return app
