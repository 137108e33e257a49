"""Rate limits per staff member and per member, in Redis (GCRA, `service/lua/ratelimit.lua`).

Each party is one key and one script call; the calls of a request go out in the same pipeline
as the page cache's read (`CouponPages`), so a limited hit still costs one Redis round trip.
The limiter guards the service, not correctness: when Redis fails, times out or the circuit is
open it lets the request through (fails open), counts it in `failed_open` and logs at most one
line per `LOG_EVERY_SECONDS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio.client import Pipeline

from service import metrics
from service.cache import LUA_DIR
from service.errors import ApiError

log = logging.getLogger("service.limits")

LOG_EVERY_SECONDS = 10.0
SCRIPT = (LUA_DIR / "ratelimit.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    per_minute: int
    burst: int

    @property
    def interval_ms(self) -> float:
        return 60_000 / self.per_minute

    @property
    def tolerance_ms(self) -> float:
        return self.interval_ms * (self.burst - 1)


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    key: str
    rate: Rate


class RateLimiter:
    def __init__(self, *, prefix: str, staff: Rate | None, member: Rate | None) -> None:
        self.prefix = prefix
        self.staff = staff
        self.member = member
        self.failed_open = 0  # requests let through because Redis could not decide
        self.refused = 0
        self._last_log = -math.inf
        self._suppressed = 0

    @property
    def enabled(self) -> bool:
        return self.staff is not None or self.member is not None

    def checks(self, uniacid: int, staff_id: str, uid: int | None) -> list[Check]:
        """The keys one request is counted against. A member key shares the member's page hash
        slot (`{uniacid:uid}`), so a Redis Cluster runs it beside the page read."""
        found: list[Check] = []
        if self.staff is not None:
            found.append(Check(f"{self.prefix}:rl:s:{{{uniacid}:{staff_id}}}", self.staff))
        if self.member is not None and uid is not None:
            found.append(Check(f"{self.prefix}:rl:m:{{{uniacid}:{uid}}}", self.member))
        return found

    @staticmethod
    def queue(pipe: Pipeline, checks: Sequence[Check], now_ms: int) -> None:
        # EVALSHA, not redis-py's Script: in a pipeline that one asks SCRIPT EXISTS first, a
        # second round trip on every request. A NOSCRIPT reply (Redis restarted) is handled by
        # the caller with `load` and one retry.
        for check in checks:
            pipe.evalsha(SCRIPT_SHA, 1, check.key, now_ms, f"{check.rate.interval_ms:.3f}",
                         f"{check.rate.tolerance_ms:.3f}")

    @staticmethod
    async def load(client: Any) -> None:
        await client.script_load(SCRIPT)

    def decide(self, replies: Sequence[Any], checks: Sequence[Check]) -> None:
        """Raise the 429 if any party is over its rate; `Retry-After` in whole seconds."""
        refused = [(check, reply) for check, reply in zip(checks, replies, strict=True)
                   if int(reply[0]) == 0]
        if not refused:
            return
        wait_ms = max(int(float(reply[1])) for _, reply in refused)
        self.refused += 1
        for check, _ in refused:
            metrics.RATE_LIMIT_REJECTIONS.labels(
                "staff" if ":rl:s:" in check.key else "member").inc()
        retry = max(1, math.ceil(wait_ms / 1000))
        msg = "请求过于频繁，请稍后重试"
        raise ApiError(429, msg, {"request": [msg]}, {"Retry-After": str(retry)})

    def fail_open(self, reason: str) -> None:
        self.failed_open += 1
        metrics.RATE_LIMIT_FAILED_OPEN.inc()
        now = time.monotonic()
        if now - self._last_log < LOG_EVERY_SECONDS:
            self._suppressed += 1
            return
        log.warning("rate limiter failed open (%s); %d more since the last line",
                    reason, self._suppressed)
        self._last_log = now
        self._suppressed = 0
