"""Reading pages, counting the statements behind them and waiting for invalidations, for the
cache tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg

from service.keys import listener_key
from tests.support.api import PATH_SHORT, check_error, check_success, items_of


async def fetch(client, token: str, *, expected_status: int = 200,
                headers: dict[str, str] | None = None, **params: Any) -> tuple[dict, Any]:
    """GET the short route; returns (json or {}, response headers)."""
    query = {"client": "work", "type": "17", **{k: str(v) for k, v in params.items()}}
    resp = await client.get(PATH_SHORT, params=query,
                            headers={"Authorization": f"Bearer {token}", **(headers or {})})
    text = await resp.text()
    assert resp.status == expected_status, text
    if expected_status == 304:
        assert text == ""
        return {}, resp.headers
    body = json.loads(text)
    if expected_status == 200:
        check_success(body)
    else:
        check_error(body)
    return body, resp.headers


def ids(body: dict) -> list[int]:
    return [item["id"] for item in items_of(body)]


async def settle(client, db) -> None:
    """Wait (bounded) until every notification committed so far has been applied by `client`'s
    app: a barrier notification goes through the same channel, in commit order."""
    token = uuid.uuid4().hex
    await db.execute("SELECT pg_notify('coupons_invalidate', $1)", f"sync:{token}")
    async with asyncio.timeout(5):
        await client.app[listener_key].wait_synced(token)


class QueryCounter:
    """Counts the statements the app's pool runs (asyncpg query loggers on every connection)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, record: Any) -> None:
        self.queries.append(record.query)

    async def attach(self, pool: asyncpg.Pool) -> None:
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        for conn in held:
            conn.add_query_logger(self)
        for conn in held:
            await pool.release(conn)
