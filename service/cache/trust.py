"""Whether this process may use its cache now (service/cache/listener.py proves it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class CacheTrust:
    """The cache is served only while this process's LISTEN connection is confirmed alive and
    it is covered: no invalidation can have been lost since the listener proved so
    (service/cache/listener.py). A Redis failure during an invalidation, a reconnect or a
    TRUNCATE ends the coverage; until it is proven again, every request goes to PostgreSQL and
    nothing is filled."""

    def __init__(self) -> None:
        self.listener_ready = False
        self.covered = False
        self.losses = 0
        self.ready = asyncio.Event()
        self.on_lost: list[Callable[[], None]] = []

    @property
    def usable(self) -> bool:
        return self.listener_ready and self.covered

    def lost(self, reason: str, *, quiet: bool = False) -> None:
        """An invalidation may have been missed: nothing cached is trusted until coverage is
        proven again. Every hook runs (the local layer, the contact mappings, the loads in
        flight are dropped)."""
        if self.covered and not quiet:
            log.warning("cache untrusted until coverage is proven again: %s", reason)
        self.covered = False
        self.losses += 1
        self.ready.clear()
        for hook in self.on_lost:
            hook()

    def cover(self, losses_before: int) -> bool:
        """Coverage proven from a point after which no loss may have happened: the cache is
        trusted again, unless a loss came in the meantime."""
        if self.losses != losses_before:
            return False
        self.covered = True
        if self.listener_ready:
            self.ready.set()
        return True
