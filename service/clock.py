"""The one source of "now", injectable so tests can stand on an exact second."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Aware UTC datetime, whole seconds (the mall's PHP compares `time()` integers)."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)


class FixedClock:
    """A clock that stands still until moved; for tests and reproducible demos."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def now(self) -> dt.datetime:
        return self.at.astimezone(dt.UTC).replace(microsecond=0)

    def set(self, at: dt.datetime) -> None:
        self.at = at

    def advance(self, seconds: float) -> None:
        self.at += dt.timedelta(seconds=seconds)
