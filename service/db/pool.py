"""The database pools of the app: the primary's, and the replica's when DATABASE_READ_URL is
set (page reads only), opened and closed by a cleanup context."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from service.db.repository import CouponRepository, keep_session, warm_connection
from service.keys import db_pool_key, read_pool_key, repository_key, settings_key
from service.observe import metrics
from service.settings import Settings


def _create_pool(settings: Settings, dsn: str) -> asyncpg.Pool:
    return asyncpg.create_pool(
        dsn,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout_seconds,
        # 0 under PgBouncer transaction pooling: a named prepared statement lives on one server
        # connection, and the next transaction may run on another (docs/operations.md, "PgBouncer").
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
