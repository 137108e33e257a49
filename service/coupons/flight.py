"""Single flight: concurrent lookups of one page share one (at most one query for any burst on a
cold page). A lookup whose leader is cancelled is looked up again by a waiter; an invalidation
drops the flights of the members it concerns, so that no new request joins a lookup that read
the database before the write."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar


class _Result(Protocol):
    outcome: str


R = TypeVar("R", bound=_Result)
Member = tuple[int, int]  # uniacid, member_id


class LeaderGone(Exception):
    """The request doing a lookup for others was cancelled: the others look it up again."""


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[Member, dict[str, asyncio.Future]] = {}

    async def run(self, member: Member, field: str, lookup: Callable[[], Awaitable[R]]) -> R:
        """`lookup()`'s result, shared with every concurrent caller for the same page (theirs
        with the outcome `coalesced`)."""
        while True:
            fields = self._flights.setdefault(member, {})
            leader = fields.get(field)
            if leader is None:
                break
            try:
                result = await asyncio.shield(leader)
            except LeaderGone:
                continue  # the leader was cancelled: look it up again
            return dataclasses.replace(result, outcome="coalesced")
        leader = asyncio.get_running_loop().create_future()
        fields[field] = leader
        try:
            result = await lookup()
        except asyncio.CancelledError:
            leader.set_exception(LeaderGone())
            raise
        except BaseException as exc:
            leader.set_exception(exc)
            raise
        else:
            leader.set_result(result)
            return result
        finally:
            if fields.get(field) is leader:
                del fields[field]
                if not fields and self._flights.get(member) is fields:
                    del self._flights[member]
            leader.exception()  # mark retrieved: there may be no waiters

    def drop(self, uniacid: int, member_ids: set[int] | None) -> None:
        """Forget the flights of these members of the tenant (None: all of the tenant's)."""
        for key in list(self._flights):
            if key[0] == uniacid and (member_ids is None or key[1] in member_ids):
                del self._flights[key]

    def clear(self) -> None:
        self._flights.clear()
