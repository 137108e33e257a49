"""Real PostgreSQL and Redis for every test: embedded ones unless DATABASE_URL / REDIS_URL are set.

With DATABASE_URL set, the suite creates and drops its own database `coupons_test` on that server
(it never touches the database the URL names). Isolation between tests is by truncation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiosql
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.auth.tokens import issue_token
from service.clock import FixedClock
from service.db.migrations import migrate
from service.db.repository import init_connection
from service.http.connections import make_test_server
from service.runtime.embedded import embedded_postgres, embedded_redis
from service.settings import Settings, load_settings

FIXTURES = aiosql.from_path(Path(__file__).parent / "sql" / "fixtures.sql", "asyncpg")
SECRET = "test-secret-0123456789abcdef0123456789abcdef"
SERVICE_TOKEN = "test-service-token-0123456789abcdef0123456789"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
# A fixed "now" for most tests: 2026-06-15 10:00:00 in Shanghai.
NOW = dt.datetime(2026, 6, 15, 10, 0, 0, tzinfo=SHANGHAI)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


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
            url = _with_database(external, "coupons_test")
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
        # them. tests/test_limits.py and the load tests turn it on.
        rate_limit_staff_per_minute=0,
        rate_limit_member_per_minute=0,
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@contextlib.asynccontextmanager
async def arranging_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection for arranging rows, on a database whose tables are emptied first."""
    conn = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        await FIXTURES.truncate_all(conn)
        yield conn
    finally:
        await conn.close()


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


def token_for(uniacid: int = 1, member_id: int | None = 1, *, secret: str = SECRET,
              ttl: int = 3600, staff: str = "staff-1", now: int | None = None) -> str:
    return issue_token(secret, uniacid, member_id, staff, ttl, int(now or NOW.timestamp()))


@pytest.fixture
def token() -> str:
    return token_for()


@dataclasses.dataclass
class Rows:
    """Arranges rows through the named statements of tests/sql/fixtures.sql."""

    conn: asyncpg.Connection

    async def tenant(self, uniacid: int = 1, *, transfer: bool = False, store_plugin: bool = True,
                     hotel_plugin: bool = True, near_days: int = 3) -> None:
        await FIXTURES.insert_tenant_setting(
            self.conn, uniacid=uniacid, coupon_transfer=transfer, store_plugin=store_plugin,
            hotel_plugin=hotel_plugin, near_expiration_days=near_days)

    async def member(self, uid: int = 1, uniacid: int = 1) -> int:
        await FIXTURES.insert_member(self.conn, uid=uid, uniacid=uniacid)
        return uid

    async def coupon(self, uniacid: int = 1, **fields: Any) -> int:
        values: dict[str, Any] = {
            "name": "测试券", "coupon_method": 1, "deduct": 10, "discount": 0, "enough": 0,
            "use_type": 0, "category_ids": None, "categorynames": None, "goods_ids": None,
            "goods_names": None, "storeids": None, "storenames": None, "suppliernames": None,
            "time_limit": 0, "time_days": 0, "time_start": None, "time_end": None, "total": -1,
            "money": 0, "credit": 0, "plugin_id": 0, "use_conditions": None,
        }
        unknown = set(fields) - set(values)
        assert not unknown, f"unknown coupon fields {unknown}"
        values.update(fields)
        return await FIXTURES.insert_coupon(self.conn, uniacid=uniacid, **values)

    async def member_coupon(self, coupon_id: int, *, uid: int = 1, uniacid: int = 1,
                            id: int | None = None, used: int = 0,
                            use_time: dt.datetime | None = None,
                            get_time: dt.datetime = NOW - dt.timedelta(days=1),
                            deleted: int = 0) -> int:
        return await FIXTURES.insert_member_coupon(
            self.conn, id=id, uniacid=uniacid, uid=uid, coupon_id=coupon_id, used=used,
            use_time=use_time, get_time=get_time, is_member_deleted=deleted)

    async def contact(self, external_userid: str, uid: int, *, staff: str = "staff-1",
                      uniacid: int = 1) -> None:
        await FIXTURES.insert_wecom_contact(self.conn, uniacid=uniacid,
                                            external_userid=external_userid,
                                            staff_userid=staff, uid=uid)

    async def store(self, id: int, name: str, uniacid: int = 1) -> None:
        await FIXTURES.insert_store(self.conn, id=id, uniacid=uniacid, store_name=name)

    async def goods(self, id: int, title: str, uniacid: int = 1) -> None:
        await FIXTURES.insert_goods(self.conn, id=id, uniacid=uniacid, title=title)

    async def hotel(self, id: int, name: str, uniacid: int = 1,
                    coupon_ids: tuple[int, ...] = ()) -> None:
        await FIXTURES.insert_hotel(self.conn, id=id, uniacid=uniacid, hotel_name=name)
        for coupon_id in coupon_ids:
            await FIXTURES.insert_coupon_hotel(self.conn, coupon_id=coupon_id, hotel_id=id)


@pytest.fixture
def rows(db: asyncpg.Connection) -> Rows:
    return Rows(db)
