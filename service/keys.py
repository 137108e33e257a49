"""Every typed application and request key, in one place; each is named after its variable."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from service.auth.tokens import Principal, TokenVerifier

# Imported where they are defined (their modules import these keys' users, not this module):
# typed with the real classes, which import nothing from here.
from service.cache.listener import InvalidationListener
from service.clock import Clock
from service.coupons.pages import CouponPages
from service.db.repository import CouponRepository
from service.limits.limiter import RateLimiter
from service.observe.recorder import RequestRecorder
from service.runtime.lag import LagMonitor
from service.settings import Settings

settings_key = web.AppKey("settings_key", Settings)
clock_key = web.AppKey("clock_key", Clock)
db_pool_key = web.AppKey("db_pool_key", asyncpg.Pool)
read_pool_key = web.AppKey("read_pool_key", asyncpg.Pool)
# A Redis or a RedisCluster client (service/cache/client.py).
redis_key = web.AppKey("redis_key", aioredis.Redis)
repository_key = web.AppKey("repository_key", CouponRepository)
pages_key = web.AppKey("pages_key", CouponPages)
listener_key = web.AppKey("listener_key", InvalidationListener)
# Set when the process received SIGTERM: /readyz answers 503 from then on.
draining_key = web.AppKey("draining_key", asyncio.Event)
recorder_key = web.AppKey("recorder_key", RequestRecorder)
lag_key = web.AppKey("lag_key", LagMonitor)
verifier_key = web.AppKey("verifier_key", TokenVerifier)
limiter_key = web.AppKey("limiter_key", RateLimiter)
openapi_key = web.AppKey("openapi_key", bytes)
request_id_key = web.RequestKey("request_id_key", str)
principal_key = web.RequestKey("principal_key", Principal)
