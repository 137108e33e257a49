"""Warm deploys, from outside: `serve` processes replaced one at a time, as a rolling deploy or
a restart does, keep the cache warm (a handover, service/cache/listener.py), and only a start with
nobody listening flushes.

Real `python -m service serve` subprocesses on a database of the test's own and the session's
Redis (a CACHE_PREFIX of the test's own); what a page came from is read from X-Cache, and the
flushes from each process's /metrics."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import aiohttp
import pytest

from service.db.migrations import migrate
from tests.support.common import SECRET, SERVICE_TOKEN, token_for
from tests.support.databases import fresh_database
from tests.support.processes import cli_env, serving
from tests.support.rows import Rows, arranging_connection

MEMBERS = 100
# Three tabs of each member: 300 pages.
TABS = ((1, 0), (1, 1), (3, 0))
ROUTE = "/api/v2/coupons"


@pytest.fixture
async def database(database_url: str):
    async with fresh_database(database_url, prefix="rolling") as url:
        await migrate(url)
        async with arranging_connection(url) as conn:
            rows = Rows(conn)
            cid = await rows.coupon(1, name="滚动")
            for uid in range(1, MEMBERS + 1):
                await rows.member(uid, 1)
                await rows.member_coupon(cid, uid=uid)
                await rows.member_coupon(cid, uid=uid, used=1)
        yield url


def env(database: str, redis_url: str, prefix: str) -> dict[str, str]:
    # The default settings, rate limits on: each member is read by a staff member of its own.
    return cli_env(DATABASE_URL=database, REDIS_URL=redis_url, AUTH_JWT_SECRET=SECRET,
                   INTERNAL_SERVICE_TOKEN=SERVICE_TOKEN, CACHE_PREFIX=prefix)


async def read_all(base: str) -> list[str]:
    """Every page once; their X-Cache."""
    outcomes = []
    async with aiohttp.ClientSession() as session:
        for uid in range(1, MEMBERS + 1):
            token = token_for(1, uid, ttl=10 ** 9, staff=f"staff-{uid}")
            headers = {"Authorization": f"Bearer {token}"}
            for status, coupon_type in TABS:
                params = {"client": "work", "type": "17", "status_request": str(status),
                          "coupon_type": str(coupon_type)}
                async with session.get(base + ROUTE, params=params, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    outcomes.append(resp.headers["X-Cache"])
    return outcomes


async def flushes(base: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as resp:
        text = await resp.text()
    found = re.search(r'^coupons_cache_coverage_total\{how="flush"\} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def warm(outcomes: list[str]) -> float:
    return sum(o in ("local", "hit") for o in outcomes) / len(outcomes)


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_rolling_restart_keeps_the_cache_warm(database, redis_url, tmp_path: Path,
                                                      workers):
    settings = env(database, redis_url, f"roll{secrets.token_hex(4)}")
    async with serving(settings, tmp_path / "old.log", workers=workers) as old:
        assert await flushes(old.base) >= 1  # the first start: nobody to hand over from
        await read_all(old.base)
        assert warm(await read_all(old.base)) == 1.0
        # The new process comes up beside the old one, which listens all along.
        async with serving(settings, tmp_path / "new.log", workers=workers) as new:
            outcomes = await read_all(new.base)
            print(f"rolling restart, {workers} worker(s): {warm(outcomes):.1%} of "
                  f"{len(outcomes)} warm pages served from the cache by the new process")
            assert await flushes(new.base) == 0, "handed over, never flushed"
            assert warm(outcomes) >= 0.99, outcomes
            old.stop()  # the old one goes; the new one serves on
            assert warm(await read_all(new.base)) == 1.0
            # And the old one restarted beside the new: warm again.
            async with serving(settings, tmp_path / "again.log", workers=workers) as again:
                assert warm(await read_all(again.base)) >= 0.99
                assert await flushes(again.base) == 0
