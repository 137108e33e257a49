"""Which member a staff member's WeCom contact is, remembered in process for staff tokens.

A sidebar request with a staff token names the contact (`external_userid`); the member behind it
decides the page cache key, so it must be known before the one Redis read of a hit. The mapping
is learnt from the page's own SQL statement (which checks the follow) and kept here, bounded
(LRU) and dropped by the `w:` notifications of `yz_wecom_contact` (sql/migrations/0004).

A lookup that read the database before an invalidation must not store its answer after it (the
same stale-set race as the page cache): every invalidation bumps `generation`, and `put` takes the
generation read before the query and stores only if it is unchanged. Only hits are remembered:
a refused follow is asked again each time (rate limits bound how often).
"""

from __future__ import annotations

from collections import OrderedDict

ContactKey = tuple[int, str, str]  # uniacid, staff_userid, external_userid


class ContactCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.generation = 0
        self._map: OrderedDict[ContactKey, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._map)

    def get(self, key: ContactKey) -> int | None:
        member_id = self._map.get(key)
        if member_id is not None:
            self._map.move_to_end(key)
        return member_id

    def put(self, key: ContactKey, member_id: int, generation: int) -> bool:
        if generation != self.generation:
            return False
        self._map[key] = member_id
        self._map.move_to_end(key)
        while len(self._map) > self.max_entries:
            self._map.popitem(last=False)
        return True

    def forget(self, key: ContactKey) -> None:
        self.generation += 1
        self._map.pop(key, None)

    def forget_tenant(self, uniacid: int) -> None:
        self.generation += 1
        for key in [k for k in self._map if k[0] == uniacid]:
            del self._map[key]

    def clear(self) -> None:
        self.generation += 1
        self._map.clear()
