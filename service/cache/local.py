"""A process-local page cache in front of Redis: the hot path's answer without a round trip.

It obeys the same rules as Redis: entries are dropped by this process's own LISTEN events (every
process has its own listener, so every invalidation reaches every process), each entry keeps
the page's `valid_from`/`valid_until` clock bound, a short safety TTL caps how long an entry can
outlive a missed event, and a fill that began before an invalidation is refused (an
invalidation sequence number taken before the lookup plays the role of Redis's `gen` stamp).
Bounded in bytes, least recently used out first.

The safety TTL runs from an entry's last proof against Redis: its fill, or a `reprove`. An entry
used since its last proof is proven again before the TTL ends (`due` hands it out once the TTL
has less than a quarter left, at most REPROVE_MARGIN_SECONDS, or at its first use after that;
`reprove` takes what Redis holds, read in one pipeline for hundreds of entries:
CouponPages.reprove_local), which renews the TTL only if Redis still holds the same page,
servable now. That is what a
request's own Redis hit proved when the TTL had ended (the entry was dropped and the page
refetched and put back), at a batched read's cost instead of one round trip per page: with the
sidebar's active set revisited every few seconds, those round trips were a sixth of all requests
(docs/performance.md, "The real path"). An entry not proven again by its TTL's end is dropped as
before, so the guard is the same: no entry is served longer than the TTL after Redis last showed
it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from service.cache.redis import CachedPage
from service.observe import metrics

Key = tuple[int, int, str]  # uniacid, member_id, field
Entry = tuple[CachedPage, float, bool, bool]
# Per-entry bookkeeping (its tuple, key, OrderedDict node, proof record) on top of the body,
# measured roughly.
ENTRY_OVERHEAD = 300
# An entry in use is handed out for its proof when this much of its safety TTL is left (a quarter
# of it, if less); at most this many wait for their proof at once (more are left to end).
REPROVE_MARGIN_SECONDS = 15.0
REPROVE_MAX = 20_000
# Invalidation records older than this are forgotten; a lookup that started before the oldest
# forgotten record may not fill (no lookup lasts that long: statements time out in seconds).
HISTORY_SECONDS = 60.0


class LocalCache:
    def __init__(self, max_bytes: int, ttl_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self._monotonic = monotonic
        self.margin = min(REPROVE_MARGIN_SECONDS, ttl_seconds / 4)
        # key -> (page, end of its safety TTL, used since its last proof, handed out for proof):
        # a tuple, replaced when a flag changes (once per TTL), because the collector stops
        # tracking a tuple of untracked parts, and a full collection walked every list entry.
        self._entries: collections.OrderedDict[Key, Entry] = collections.OrderedDict()
        # (end of a safety TTL, key) in the order the TTLs end: what `due` walks.
        self._proofs: collections.deque[tuple[float, Key]] = collections.deque()
        # Entries first used after `due` walked past them, handed out by the next `due`.
        self._due: list[tuple[Key, CachedPage]] = []
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
        page = entry[0]
        left = entry[1] - self._monotonic()
        if now < page.valid_from or now >= page.valid_until or left <= 0:
            self._drop(key)
            return None
        entries = self._entries
        # Asked for its proof at a first use late in the TTL (`due` walked past it unused).
        ask = left < self.margin and not entry[3] and len(self._due) < REPROVE_MAX
        if ask or not entry[2]:
            entries[key] = (page, entry[1], True, entry[3] or ask)
            if ask:
                self._due.append((key, page))
        entries.move_to_end(key)
        return page

    def put(self, key: Key, page: CachedPage, seq: int) -> bool:
        """Store unless an invalidation that concerns `key` happened after `seq`."""
        if self._invalidated_since(key, seq):
            return False
        size = len(page.body) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        now = self._monotonic()
        proofs = self._proofs
        # Records of TTLs already over go here too, so the deque stays bounded (by the puts of
        # one TTL) where nobody calls `due`.
        while proofs and proofs[0][0] <= now:
            proofs.popleft()
        expires = now + self.ttl
        self._entries[key] = (page, expires, False, False)
        proofs.append((expires, key))
        self._fields.setdefault((key[0], key[1]), set()).add(key[2])
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            metrics.LOCAL_CACHE_EVICTIONS.inc()
        return True

    def due(self) -> list[tuple[Key, CachedPage]]:
        """The entries used since their last proof whose safety TTL ends within the margin, to
        be proven again (`reprove`) before it does; each is handed out once per TTL. One not
        used yet is handed out at its first use before the TTL ends (`get`), or left to end."""
        found, self._due = self._due, []
        horizon = self._monotonic() + self.margin
        proofs, entries = self._proofs, self._entries
        while proofs and proofs[0][0] <= horizon and len(found) < REPROVE_MAX:
            expires, key = proofs.popleft()
            entry = entries.get(key)
            if entry is not None and entry[1] == expires and entry[2] and not entry[3]:
                entries[key] = (entry[0], expires, True, True)
                found.append((key, entry[0]))
        return found

    def reprove(self, key: Key, page: CachedPage, seq: int, held: bool) -> bool:
        """After Redis was read at `seq` (taken before the read): `held`, Redis holds this page
        and it may be served now, renews the entry's safety TTL, unless an invalidation that
        concerns it came after `seq`; a page Redis no longer holds is dropped at once."""
        entry = self._entries.get(key)
        if entry is None or entry[0] is not page:
            return False  # dropped or replaced since `due`
        if not held:
            self._drop(key)
            return False
        if self._invalidated_since(key, seq):
            return False
        expires = self._monotonic() + self.ttl
        self._entries[key] = (page, expires, False, False)
        self._proofs.append((expires, key))
        return True

    def _invalidated_since(self, key: Key, seq: int) -> bool:
        """Whether an invalidation that concerns `key` happened after `seq` (or may have: its
        record is forgotten)."""
        return (seq < self._floor or self._all > seq
                or self._members.get((key[0], key[1]), -1) > seq
                or self._tenants.get(key[0], -1) > seq)

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
        self._proofs.clear()
        self._due.clear()
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
