"""Every typed application key, in one place; each is named after its variable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

if TYPE_CHECKING:
    pass

settings_key = web.AppKey("settings_key", "Settings")
clock_key = web.AppKey("clock_key", "Clock")
db_pool_key = web.AppKey("db_pool_key", asyncpg.Pool)
# A Redis or a RedisCluster client (service/redis_client.py).
redis_key = web.AppKey("redis_key", aioredis.Redis)
repository_key = web.AppKey("repository_key", "CouponRepository")
request_id_key = web.RequestKey("request_id_key", str)
pages_key = web.AppKey("pages_key", "CouponPages")
listener_key = web.AppKey("listener_key", "InvalidationListener")
read_pool_key = web.AppKey("read_pool_key", asyncpg.Pool)
# Set when the process received SIGTERM: /readyz answers 503 from then on.
draining_key = web.AppKey("draining_key", "asyncio.Event")
recorder_key = web.AppKey("recorder_key", "RequestRecorder")
principal_key = web.RequestKey("principal_key", "Principal")
# What the edge's fast path resolved for a GET whose page it did not hold (service/api.py).
local_miss_key = web.RequestKey("local_miss_key", tuple)
verifier_key = web.AppKey("verifier_key", "TokenVerifier")
limiter_key = web.AppKey("limiter_key", "RateLimiter")
openapi_key = web.AppKey("openapi_key", bytes)
resolved_key = web.AppKey("resolved_key", "ResolvedMemo")
