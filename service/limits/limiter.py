"""Rate limits per staff member and per member, in Redis (GCRA, `service/limits/ratelimit.lua`).

Each party is one key and one script call; the calls of a request go out in the same pipeline
as the page cache's read (`CouponPages`). A call takes up to `lease` allowances at once: the
process keeps the ones beyond its own request for `lease_seconds` and admits the party's next
requests from them without Redis, so a local hit needs no round trip at all most of the time.
Every allowance is counted in Redis when it is taken, so the limits still hold across workers:
never more requests than the rate allows. The script leases spares only out of the upper half
of a party's burst, so the spares that expire unused cost at most half the burst, never the
rate: a party below its rate is never refused. `lease` 1 is one call per request.
Local admission (`local_admits` L > 0, the default): a party this process holds no lease for is
admitted at once, without Redis, and charged afterwards: every `charge` (50 ms) sends what each
party was admitted since, in one pipeline of `charge.lua` calls of up to CHARGE_BATCH parties
each (one per party on a Redis Cluster), off the request path. Redis counts every request so
charged in the same GCRA, and a party that the charge finds over its limit is refused here,
without Redis, until its next request would fit. A process admits at most L requests per party
that Redis has not yet counted; past that, the party's requests wait for Redis as above. So the
limits hold to within L requests per party and process: across P processes (workers times
hosts) a party gets at most P x L requests beyond what the GCRA allows, at any moment
(tests/limits/test_local_admission.py holds it).
The limiter guards the service, not correctness: when Redis fails, times out or the circuit is
open it lets the request through (fails open), counts it in
`coupons_rate_limit_failed_open_total` and logs at most one line per `LOG_EVERY_SECONDS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio.client import Pipeline

from service.observe import metrics
from service.settings import Settings

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 10.0
# Leases of parties that did not come back are dropped when there are this many.
MAX_LEASES = 8192
# Parties per charge call: one script call of about a millisecond in Redis at most.
CHARGE_BATCH = 500
SCRIPT = (Path(__file__).resolve().parent / "ratelimit.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
CHARGE = (Path(__file__).resolve().parent / "charge.lua").read_text()
CHARGE_SHA = hashlib.sha1(CHARGE.encode()).hexdigest()


class RateLimited(Exception):
    """A party is over its rate: retry after this many whole seconds (at least 1)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


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
    def __init__(self, *, prefix: str, staff: Rate | None, member: Rate | None,
                 lease: int = 1, lease_seconds: float = 1.0, local_admits: int = 0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self.staff = staff
        self.member = member
        self.lease = lease
        self.lease_seconds = lease_seconds
        self._monotonic = monotonic
        # key -> (allowances left, until when): what Redis granted beyond the request that took
        # them. Bounded by the parties active within lease_seconds (dropped when used up).
        self._leases: dict[str, tuple[int, float]] = {}
        # Local admission (module docstring): per party, the requests admitted here and not yet
        # sent to Redis, those not yet counted there (sent or not), and until when the last
        # charge said the party is over its limit. Bounded by the parties active within a
        # charge interval, and by MAX_LEASES for the refusals.
        self.local_admits = local_admits
        self._owed: dict[str, list] = {}  # key -> [check, n]
        self._unconfirmed: dict[str, int] = {}
        self._refused: dict[str, float] = {}
        self._last_log = -math.inf
        self._suppressed = 0

    @property
    def enabled(self) -> bool:
        return self.staff is not None or self.member is not None

    def checks(self, uniacid: int, staff_id: str, member_id: int | None) -> list[Check]:
        """The keys one request is counted against. A member key shares the member's page hash
        slot (`{uniacid:member_id}`), so a Redis Cluster runs it beside the page read."""
        found: list[Check] = []
        if self.staff is not None:
            found.append(Check(f"{self.prefix}:rl:s:{{{uniacid}:{staff_id}}}", self.staff))
        if self.member is not None and member_id is not None:
            found.append(Check(f"{self.prefix}:rl:m:{{{uniacid}:{member_id}}}", self.member))
        return found

    def has_leases(self, checks: Sequence[Check]) -> bool:
        """Whether every party of `checks` holds a live allowance in this process."""
        now = self._monotonic()
        for check in checks:
            held = self._leases.get(check.key)
            if held is None or held[1] <= now:
                return False
        return True

    def spend_leases(self, checks: Sequence[Check]) -> bool:
        """Every party admitted here, by a leased allowance or by local admission, if each
        can be; else nothing spent (the caller goes on to `admit_locally` and Redis)."""
        now = self._monotonic()
        leases = self._leases
        limit = self.local_admits
        for check in checks:
            held = leases.get(check.key)
            if held is not None and held[1] > now:
                continue
            if not limit or self._unconfirmed.get(check.key, 0) >= limit or (
                    self._refused and self._refused.get(check.key, 0.0) > now):
                return False
        for check in checks:
            held = leases.get(check.key)
            if held is not None and held[1] > now:
                if held[0] <= 1:
                    del leases[check.key]
                else:
                    leases[check.key] = (held[0] - 1, held[1])
            else:
                self._owe(check)
        return True

    def admit_locally(self, checks: Sequence[Check]) -> list[Check]:
        """Spend this process's leased allowances and local admissions: the checks that still
        need Redis. RateLimited if the last charge found a party over its limit."""
        now = self._monotonic()
        if self._refused:
            self._refuse_known(checks, now)
        if self.lease <= 1:
            remaining = list(checks)
        else:
            remaining = []
            for check in checks:
                held = self._leases.get(check.key)
                if held is None or held[1] <= now:
                    if held is not None:
                        del self._leases[check.key]
                    remaining.append(check)
                elif held[0] <= 1:
                    del self._leases[check.key]
                else:
                    self._leases[check.key] = (held[0] - 1, held[1])
        limit = self.local_admits
        if not limit or not remaining:
            return remaining
        waiting = []
        for check in remaining:
            if self._unconfirmed.get(check.key, 0) < limit:
                self._owe(check)
            else:
                waiting.append(check)  # L not yet counted by Redis: this one waits for it
        return waiting

    def _owe(self, check: Check) -> None:
        owed = self._owed.get(check.key)
        if owed is None:
            self._owed[check.key] = [check, 1]
        else:
            owed[1] += 1
        self._unconfirmed[check.key] = self._unconfirmed.get(check.key, 0) + 1

    def _refuse_known(self, checks: Sequence[Check], now: float) -> None:
        waits = [self._refused.get(check.key, 0.0) - now for check in checks]
        if max(waits) <= 0:
            return
        for check, wait in zip(checks, waits, strict=True):
            if wait > 0:
                metrics.RATE_LIMIT_REJECTIONS.labels(
                    "staff" if ":rl:s:" in check.key else "member").inc()
        raise RateLimited(max(1, math.ceil(max(waits))))

    # Local admission's charges ----------------------------------------------------------------
    @property
    def owes(self) -> bool:
        return bool(self._owed)

    def take_owed(self) -> list[tuple[Check, int]]:
        """What this process admitted since the last charge, per party (now being sent)."""
        owed, self._owed = self._owed, {}
        return [(check, n) for check, n in owed.values()]

    def queue_charges(self, pipe: Pipeline, owed: Sequence[tuple[Check, int]], now_ms: int,
                      *, per_key: bool = False) -> None:
        """`owed` charged in calls of CHARGE_BATCH parties (`per_key`: one each, as a Redis
        Cluster needs): one command packed and parsed instead of one per party, which was a
        sixth of a worker's time at 2,000 requests/s of 20,000 parties."""
        size = 1 if per_key else CHARGE_BATCH
        for at in range(0, len(owed), size):
            batch = owed[at:at + size]
            args: list[Any] = [now_ms]
            for check, n in batch:
                args += (f"{check.rate.interval_ms:.3f}", f"{check.rate.tolerance_ms:.3f}", n)
            pipe.evalsha(CHARGE_SHA, len(batch), *(check.key for check, _ in batch), *args)

    def settle_charges(self, owed: Sequence[tuple[Check, int]], replies: Sequence[Any]) -> None:
        """Redis counted them: parties over their limit are refused here until they fit."""
        now = self._monotonic()
        if len(self._refused) >= MAX_LEASES:
            self._refused = {k: v for k, v in self._refused.items() if v > now}
        waits = [wait for reply in replies for wait in reply]
        for (check, n), wait in zip(owed, waits, strict=True):
            self._confirmed(check.key, n)
            if int(wait) > 0:
                self._refused[check.key] = now + int(wait) / 1000
            elif self._refused:
                self._refused.pop(check.key, None)

    def charges_failed(self, owed: Sequence[tuple[Check, int]], reason: str) -> None:
        """Redis could not count them: they stay admitted (the limiter fails open)."""
        for check, n in owed:
            self._confirmed(check.key, n)
        self.fail_open(reason)

    def _confirmed(self, key: str, n: int) -> None:
        left = self._unconfirmed.get(key, 0) - n
        if left > 0:
            self._unconfirmed[key] = left
        else:
            self._unconfirmed.pop(key, None)

    def queue(self, pipe: Pipeline, checks: Sequence[Check], now_ms: int) -> None:
        # EVALSHA, not redis-py's Script: in a pipeline that one asks SCRIPT EXISTS first, a
        # second round trip on every request. A NOSCRIPT reply (Redis restarted) is handled by
        # the caller with `load` and one retry.
        for check in checks:
            pipe.evalsha(SCRIPT_SHA, 1, check.key, now_ms, f"{check.rate.interval_ms:.3f}",
                         f"{check.rate.tolerance_ms:.3f}", self.lease)

    @staticmethod
    async def load(client: Any) -> None:
        await client.script_load(SCRIPT)
        await client.script_load(CHARGE)

    def decide(self, replies: Sequence[Any], checks: Sequence[Check]) -> None:
        """Raise RateLimited if any party is over its rate."""
        refused = []
        until = None
        for check, reply in zip(checks, replies, strict=True):
            granted = int(reply[0])
            if granted == 0:
                refused.append((check, reply))
            elif granted > 1:
                if until is None:
                    now = self._monotonic()
                    until = now + self.lease_seconds
                    if len(self._leases) >= MAX_LEASES:
                        self._leases = {k: v for k, v in self._leases.items() if v[1] > now}
                # Added to what is left: concurrent requests that all found the lease spent
                # each took one from Redis, and none of those may be lost (they are counted).
                held = self._leases.get(check.key)
                left = held[0] if held is not None and held[1] > until - self.lease_seconds \
                    else 0
                self._leases[check.key] = (left + granted - 1, until)
        if not refused:
            return
        wait_ms = max(int(float(reply[1])) for _, reply in refused)
        for check, _ in refused:
            metrics.RATE_LIMIT_REJECTIONS.labels(
                "staff" if ":rl:s:" in check.key else "member").inc()
        raise RateLimited(max(1, math.ceil(wait_ms / 1000)))

    def fail_open(self, reason: str) -> None:
        metrics.RATE_LIMIT_FAILED_OPEN.inc()
        now = time.monotonic()
        if now - self._last_log < LOG_EVERY_SECONDS:
            self._suppressed += 1
            return
        log.warning("rate limiter failed open (%s); %d more since the last line",
                    reason, self._suppressed)
        self._last_log = now
        self._suppressed = 0


def from_settings(settings: Settings) -> RateLimiter:
    def rate(per_minute: int, burst: int) -> Rate | None:
        return Rate(per_minute, burst) if per_minute > 0 else None

    return RateLimiter(
        prefix=settings.cache_prefix,
        staff=rate(settings.rate_limit_staff_per_minute, settings.rate_limit_staff_burst),
        member=rate(settings.rate_limit_member_per_minute, settings.rate_limit_member_burst),
        lease=settings.rate_limit_lease,
        lease_seconds=settings.rate_limit_lease_seconds,
        local_admits=settings.rate_limit_local_admits,
    )
