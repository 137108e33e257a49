"""Fixtures of the CLI and `serve` tests: a fresh database of the test's own and the environment
that points `python -m service` at it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from service.db.migrations import migrate
from service.runtime.demo import load_demo_data
from tests.support.cli import cli_env
from tests.support.databases import fresh_database_sync


@pytest.fixture
def fresh_url(database_url: str) -> Iterator[str]:
    """An empty database of this test's own, on the server of `database_url`."""
    with fresh_database_sync(database_url, prefix="cli") as url:
        yield url


@pytest.fixture
def env(fresh_url: str, redis_url: str) -> dict[str, str]:
    return cli_env(DATABASE_URL=fresh_url, REDIS_URL=redis_url)


@pytest.fixture
def demo_env(fresh_url: str, env: dict[str, str]) -> dict[str, str]:
    """The fresh database migrated and holding the demo tenants."""
    asyncio.run(migrate(fresh_url))
    asyncio.run(load_demo_data(fresh_url))
    return env
