"""Real PostgreSQL and Redis for every test: embedded ones unless DATABASE_URL / REDIS_URL are set.

With DATABASE_URL set, the suite creates and drops its own database `coupons_test` on that server
(it never touches the database the URL names). Isolation between tests is by truncation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.clock import FixedClock
from service.db.migrations import migrate
from service.http.connections import make_test_server
from service.runtime.embedded import embedded_postgres, embedded_redis
from service.settings import Settings, load_settings
from tests.support.common import NOW, SECRET, SERVICE_TOKEN, token_for
from tests.support.databases import with_database
from tests.support.processes import RedisProcess, redis_process
from tests.support.rows import FIXTURES, Rows, arranging_connection


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs with --strict-markers (pyproject.toml): every marker is registered here.
    config.addinivalue_line(
        "markers",
        "cluster: a cache test that runs twice, on the session's Redis and on a real 3-master "
        "Redis Cluster (tests/cache/conftest.py parametrises it over `redis_kind`; "
        "tests/cache/ only)")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if external:
            async def recreate() -> None:
                conn = await asyncpg.connect(external)
                try:
                    await FIXTURES.drop_test_database(conn)
                    await FIXTURES.create_test_database(conn)
                finally:
                    await conn.close()

            asyncio.run(recreate())
            url = with_database(external, "coupons_test")
        else:
            url = stack.enter_context(
                embedded_postgres(tmp_path_factory.mktemp("pg"), database="coupons_test")
            )
        asyncio.run(migrate(url))
        yield url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    with embedded_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return load_settings(
        env={},
        database_url=database_url,
        redis_url=redis_url,
        auth_jwt_secret=SECRET,
        internal_service_token=SERVICE_TOKEN,
        db_pool_min_size=1,
        db_pool_max_size=4,
        # Most tests hammer one member on a clock that stands still: the limiter would refuse
        # them. tests/limits/test_limiter.py and the load tests turn it on.
        rate_limit_staff_per_minute=0,
        rate_limit_member_per_minute=0,
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    async with arranging_connection(database_url) as conn:
        yield conn


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own (not the session's), that it may kill and start again."""
    with redis_process(tmp_path / "own-redis") as server:
        yield server


@pytest.fixture
def make_client(aiohttp_client, db, clock):
    """Build a test client for any settings (response shape, pool size...)."""

    async def build(settings: Settings, **kwargs: Any) -> TestClient:
        # As `python -m service serve` runs it: a client that hangs up cancels its handler.
        app = create_app(settings, kwargs.get("clock", clock))
        return await aiohttp_client(make_test_server(app, handler_cancellation=True))

    return build


@pytest.fixture
async def client(make_client, settings: Settings) -> TestClient:
    return await make_client(settings)


@pytest.fixture
def token() -> str:
    return token_for()


@pytest.fixture
def rows(db: asyncpg.Connection) -> Rows:
    return Rows(db)
