"""The one source of "now", injectable so tests can stand on an exact second."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Aware UTC datetime, whole seconds (the mall's PHP compares `time()` integers)."""
        ...

    def now_ms(self) -> int:
        """Unix milliseconds of the same clock (the rate limiter needs finer steps)."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FixedClock:
    """A clock that stands still until moved; for tests and reproducible demos."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def now(self) -> dt.datetime:
        return self.at.astimezone(dt.UTC).replace(microsecond=0)

    def now_ms(self) -> int:
        return int(self.at.timestamp() * 1000)

    def set(self, at: dt.datetime) -> None:
        self.at = at

    def advance(self, seconds: float) -> None:
        self.at += dt.timedelta(seconds=seconds)
