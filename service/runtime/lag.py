"""The event loop's own lateness: measured, and kept out of the time bounds of calls.

A call bounded by `asyncio.timeout(0.05)` fails once 50 ms of wall time have passed, whoever
spent them. Under load the usual culprit is this process's own loop: with tens of requests of
half a millisecond of CPU each queued in it, a reply that reached the socket after 0.3 ms waits
for the loop to read it, and a timer that comes due in the same turn cancels a call whose answer
was already there. Redis did not fail; counting it as a failure opens the breaker, fails the
rate limiter open and sends the request to PostgreSQL, at the moment the service can least
afford any of it (issue 13: 0.38 PostgreSQL reads per request on a warm cache at 512
connections).

`Bound` tells the two causes apart by the one thing the loop cannot hide: how late its own timer
fired. A timer that fires on time means the dependency is slow (`TimeoutError`, `lagged`
False: the breaker counts it). A timer that fires late means the loop was busy, so the call gets
one more budget of time instead of being cancelled, up to `cap` in all; if it still has no
answer then, the bound ends with `lagged` True and the caller sheds the request (503) instead of
blaming the dependency. `LagMonitor` measures the lateness itself, for /metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

from service.observe import metrics

# A timer this much past its time (or this share of its budget, if more) was held up by the
# loop, not by the call: uvloop's timers are good to a millisecond when the loop is idle.
LATE_SECONDS = 0.002
LATE_SHARE = 0.2


class Overloaded(Exception):
    """This process is past its capacity: the request is shed (503 with Retry-After) rather than
    queued, failed open or sent to PostgreSQL."""


class Bound:
    """`asyncio.timeout(budget)` that grants one more budget each time its timer fires late,
    up to `cap` seconds in all. `lagged`: the bound ran out while the loop itself was late."""

    __slots__ = ("_due", "_handle", "_loop", "_start", "_timeout", "budget", "cap", "lagged")

    def __init__(self, budget: float, cap: float) -> None:
        self.budget = budget
        self.cap = max(cap, budget)
        self.lagged = False

    async def __aenter__(self) -> Bound:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        self._start = loop.time()
        self._due = self._start + self.budget
        self._handle = loop.call_at(self._due, self._fire)
        return self

    def _fire(self) -> None:
        now = self._loop.time()
        late = now - self._due > max(LATE_SECONDS, self.budget * LATE_SHARE)
        if late and now + self.budget <= self._start + self.cap:
            metrics.BOUNDS_EXTENDED.inc()
            self._due = now + self.budget
            self._handle = self._loop.call_at(self._due, self._fire)
            return
        self.lagged = late
        # Expire now: asyncio.Timeout cancels the task and turns the cancel into TimeoutError.
        self._timeout.reschedule(now)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        self._handle.cancel()
        return await self._timeout.__aexit__(kind, exc, tb)


class LagMonitor:
    """Sleeps `interval` over and over and records how much later than asked it woke: the time
    a ready callback waits for the loop (coupons_event_loop_lag_seconds). `worst` is the largest
    lateness of the last `window` wakes."""

    def __init__(self, interval: float = 0.05, window: int = 20) -> None:
        self.interval = interval
        self.window = window
        self.recent: list[float] = []

    @property
    def worst(self) -> float:
        return max(self.recent, default=0.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            late = max(0.0, loop.time() - asked)
            metrics.LOOP_LAG.observe(late)
            self.recent.append(late)
            if len(self.recent) > self.window:
                del self.recent[0]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LagMonitor]:
        task = asyncio.get_running_loop().create_task(self.run(), name="loop-lag-monitor")
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
