"""A process-local page cache in front of Redis: the hot path's answer without a round trip.

It obeys the same rules as Redis: entries are dropped by this process's own LISTEN events (every
process has its own listener, so every invalidation reaches every process), each entry keeps
the page's `valid_from`/`valid_until` clock bound, a short safety TTL caps how long an entry can
outlive a missed event, and a fill that began before an invalidation is refused (an
invalidation sequence number taken before the lookup plays the role of Redis's `gen` stamp).
Bounded in bytes, least recently used out first.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from service.cache.redis import CachedPage
from service.observe import metrics

Key = tuple[int, int, str]  # uniacid, member_id, field
# Per-entry bookkeeping (tuple, key, OrderedDict node) on top of the body, measured roughly.
ENTRY_OVERHEAD = 200
# Invalidation records older than this are forgotten; a lookup that started before the oldest
# forgotten record may not fill (no lookup lasts that long: statements time out in seconds).
HISTORY_SECONDS = 60.0


class LocalCache:
    def __init__(self, max_bytes: int, ttl_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self._monotonic = monotonic
        self._entries: collections.OrderedDict[Key, tuple[CachedPage, float]] = (
            collections.OrderedDict())
        self._fields: dict[tuple[int, int], set[str]] = {}
        self.bytes = 0
        self._seq = 0
        self._floor = 0
        self._all = 0
        self._members: dict[tuple[int, int], int] = {}
        self._tenants: dict[int, int] = {}
        self._history: collections.deque[tuple[float, int, object]] = collections.deque()

    def __len__(self) -> int:
        return len(self._entries)

    def seq(self) -> int:
        """The invalidation sequence number, taken before a lookup (a Redis read or a query):
        `put` refuses the page if an invalidation concerning it came after."""
        return self._seq

    def get(self, key: Key, now: int) -> CachedPage | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        page, expires = entry
        if now < page.valid_from or now >= page.valid_until or self._monotonic() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return page

    def put(self, key: Key, page: CachedPage, seq: int) -> bool:
        """Store unless an invalidation that concerns `key` happened after `seq`."""
        member = (key[0], key[1])
        if (seq < self._floor or self._all > seq or self._members.get(member, -1) > seq
                or self._tenants.get(key[0], -1) > seq):
            return False
        size = len(page.body) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (page, self._monotonic() + self.ttl)
        self._fields.setdefault(member, set()).add(key[2])
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            metrics.LOCAL_CACHE_EVICTIONS.inc()
        return True

    def invalidate_member(self, uniacid: int, member_id: int) -> None:
        member = (uniacid, member_id)
        self._members[member] = self._record(member)
        for field in list(self._fields.get(member, ())):
            self._drop((uniacid, member_id, field))

    def invalidate_tenant(self, uniacid: int) -> None:
        self._tenants[uniacid] = self._record(uniacid)
        for member in [m for m in self._fields if m[0] == uniacid]:
            for field in list(self._fields.get(member, ())):
                self._drop((member[0], member[1], field))

    def clear(self) -> None:
        self._all = self._record(None)
        self._entries.clear()
        self._fields.clear()
        self.bytes = 0

    def _record(self, what: object) -> int:
        self._seq += 1
        now = self._monotonic()
        self._history.append((now, self._seq, what))
        while self._history and self._history[0][0] < now - HISTORY_SECONDS:
            _, seq, old = self._history.popleft()
            self._floor = max(self._floor, seq)
            if isinstance(old, tuple) and self._members.get(old) == seq:
                del self._members[old]
            elif isinstance(old, int) and self._tenants.get(old) == seq:
                del self._tenants[old]
        return self._seq

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= len(entry[0].body) + ENTRY_OVERHEAD
        member = (key[0], key[1])
        fields = self._fields.get(member)
        if fields is not None:
            fields.discard(key[2])
            if not fields:
                del self._fields[member]
