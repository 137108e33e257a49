"""The application factory: synchronous and I/O-free, shared by production and tests.

`create_app` composes the areas, each a small `setup_*` that registers its cleanup context
(opened in this order when the app starts, closed in reverse): the request recorder and the
request deadlines (observe/, http/), the database (db/), Redis and the cache with its listener
(cache/), and the routes through the edge (http/). docs/architecture.md draws the result.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from service.auth.tokens import TokenVerifier
from service.cache.setup import setup_pages, setup_redis
from service.clock import Clock, SystemClock
from service.db.pool import setup_database
from service.http import openapi
from service.http.connections import handler_args
from service.http.edge import Edge, setup_deadlines
from service.http.routes import setup_routes
from service.keys import (
    clock_key,
    draining_key,
    limiter_key,
    openapi_key,
    recorder_key,
    settings_key,
    verifier_key,
)
from service.limits import limiter
from service.observe.setup import setup_gc_pauses, setup_lag, setup_recorder
from service.settings import Settings


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("create_app needs resolved DATABASE_URL and REDIS_URL")
    app = web.Application(client_max_size=settings.max_body_bytes,
                          handler_args=handler_args(settings))
    app[settings_key] = settings
    app[clock_key] = clock or SystemClock()
    app[draining_key] = asyncio.Event()
    app[verifier_key] = TokenVerifier.from_settings(settings)
    app[limiter_key] = limiter.from_settings(settings)
    app[openapi_key] = openapi.document()
    # First: the recorder's last flush runs after every other context has closed, so that the
    # requests answered during the drain are in it too.
    setup_recorder(app)
    setup_lag(app)
    setup_gc_pauses(app)
    deadlines = setup_deadlines(app)
    setup_database(app)
    setup_redis(app)
    setup_pages(app)
    setup_routes(app, Edge(app[recorder_key], deadlines, error_style=settings.error_style,
                           max_body_bytes=settings.max_body_bytes,
                           max_in_flight=settings.max_requests_in_flight))
    return app
