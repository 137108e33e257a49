"""Per request: one log line and the request metrics (docs/operations.md, "Metrics", "Logs"),
in batches.

A hot hit costs this process well under 100 µs; a log record through `logging` (LogRecord,
formatter, a write and a flush) cost 13 µs of it and the metric calls 3 µs more. So a request
only appends a tuple here; every OBSERVE_FLUSH_SECONDS (service/app.py runs the tick), before
a scrape of this process and at shutdown, the batch becomes counter increments (one per kind
of request), histogram buckets and log lines written in one call. What that costs: a request's
line and counts appear up to that late, and a worker killed with SIGKILL loses its last batch
(SIGTERM flushes).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import logging
import os

import orjson

from service.compat import logging as compat_logging
from service.compat.prometheus import observe_many
from service.observe import logs, metrics

log = logging.getLogger("service.access")

# The status logged and counted for a request whose handler was cancelled (its client went
# away, or the shutdown grace ran out): nginx's "client closed request".
CANCELLED = 499
# Any other method a client invents is counted as OTHER: label values stay a bounded set.
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
# A batch is written in one go, holding the loop: bounded so that it costs about a
# millisecond (not the 12 ms seen at p99 with 0.25 s of requests at 10k/s).
MAX_PENDING = 256


def member_hash_key(jwt_secret: str) -> bytes:
    """A key derived from the JWT secret: member hashes are stable across workers and restarts,
    and cannot be reversed by hashing every small integer without the secret."""
    return hmac.new(jwt_secret.encode(), b"coupons log member hash", hashlib.sha256).digest()


def member_hash(key: bytes, uniacid: int, member_id: int) -> str:
    return hmac.new(key, f"{uniacid}:{member_id}".encode(), hashlib.sha256).hexdigest()[:16]


# The route label of every path no route matches (service/http/edge.py).
UNMATCHED = "unmatched"


@functools.lru_cache(maxsize=4096)
def _series(route: str, method: str, status: int, cache: str | None):
    """The labelled series of one kind of request, looked up once: `labels()` takes a lock and
    validates its arguments on every call. The label sets are bounded (route templates,
    methods, statuses, cache outcomes)."""
    return (metrics.REQUESTS.labels(route, method, str(status)),
            metrics.CACHE_LOOKUPS.labels(cache) if cache else None)


@functools.lru_cache(maxsize=256)
def _latency(route: str):
    return metrics.LATENCY.labels(route)


# "000" to "999": the milliseconds of a time and of a duration, without a format spec per line.
_DIGITS3 = tuple(f"{n:03d}" for n in range(1000))


# Values no request line can hold, standing in for the parts of a line that change from one
# request to the next while the line's layout is read off JsonFormatter (`_template`).
_RID = "RequestIdPlaceholder0123456789"
_DURATION = 987654.321
_WALL = 1_000_000_000.0  # JsonFormatter writes it as 2001-09-09T01:46:40.000+00:00
_TENANT = 918_273_645_546_372_819
_MEMBER = "MemberHashPlaceholder"


class RequestRecorder:
    """The requests of one process since the last flush."""

    def __init__(self, hash_key: bytes, memo_entries: int = 16384) -> None:
        self.hash_key = hash_key
        # Memoised for the active members (MEMO_ENTRIES; about 200 bytes each): one HMAC per
        # request was a tenth of a cached answer's cost, and a memo smaller than the active set
        # (it was 16,384 against the benchmark's 20,000 members) misses nearly every time.
        self._hash = functools.lru_cache(maxsize=memo_entries)(
            functools.partial(member_hash, hash_key))
        self.in_flight = 0
        # (wall time, request id, method, route, status, seconds, cache, uniacid, member id)
        self._pending: list[tuple] = []

    def add(self, wall: float, rid: str | None, method: str, route: str, status: int,
            elapsed: float, cache: str | None, uniacid: int | None,
            member_id: int | None) -> None:
        self._pending.append((wall, rid, method, route, status, elapsed, cache, uniacid,
                              member_id))
        if len(self._pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        metrics.IN_FLIGHT.set(self.in_flight)
        batch, self._pending = self._pending, []
        if not batch:
            return
        sink = compat_logging.json_sink(log, logs.JsonFormatter)
        kinds: collections.Counter[tuple] = collections.Counter()
        latencies: dict[str, list[float]] = collections.defaultdict(list)
        if sink is not None:
            compat_logging.write(sink, self._json_lines(batch, kinds, latencies))
        else:
            self._count(batch, kinds, latencies)
            if log.isEnabledFor(logging.INFO):
                for _, rid, method, route, status, elapsed, cache, uniacid, member_id in batch:
                    log.info("request", extra=self._extra(
                        rid, method, route, status, round(elapsed * 1e6) / 1000, cache,
                        uniacid, member_id))
        for (route, method, status, cache), n in kinds.items():
            counter, outcome = _series(route, method if method in METHODS else "OTHER",
                                       status, cache)
            counter.inc(n)
            if outcome is not None:
                outcome.inc(n)
        for route, values in latencies.items():
            observe_many(_latency(route), values)

    @staticmethod
    def _count(batch: list[tuple], kinds: collections.Counter[tuple],
               latencies: dict[str, list[float]]) -> None:
        for _, _, method, route, status, elapsed, cache, _, _ in batch:
            kinds[(route, method, status, cache)] += 1
            latencies[route].append(elapsed)

    def _member(self, uniacid: int | None, member_id: int | None) -> str | None:
        if uniacid is None or member_id is None:
            return None
        return self._hash(uniacid, member_id)

    def _extra(self, rid: str | None, method: str, route: str, status: int, duration_ms: float,
               cache: str | None, uniacid: int | None, member_id: int | None) -> dict:
        """A request line's record fields: the one definition of what the line says."""
        return {"request_id": rid, "fields": {
            "method": method, "route": route, "status": status, "duration_ms": duration_ms,
            "cache": cache, "uniacid": uniacid, "member": self._member(uniacid, member_id)}}

    def _json_lines(self, batch: list[tuple], kinds: collections.Counter[tuple],
                    latencies: dict[str, list[float]]) -> str:
        """The lines JsonFormatter writes for these requests' records (`_extra`), from parts
        made once per kind of line (`_template`): a record and orjson per line cost three times
        as much. The batch is counted in the same pass. Only the time, the request id and the
        duration differ between most lines of a batch."""
        lines = []
        template = self._template
        digits = _DIGITS3
        second, prefix = -1, ""
        member = self._member
        for wall, rid, method, route, status, elapsed, cache, uniacid, member_id in batch:
            start, head, middle, (t1, t2, t3), kind = template(
                rid is not None, method, route, status, cache, uniacid is None,
                member_id is None)
            # The tenant and the member's hash go in the tail (both JSON-safe: an int, hex).
            tail = (f"{t1}{'' if uniacid is None else uniacid}{t2}"
                    f"{member(uniacid, member_id) or ''}{t3}")
            kinds[kind] += 1
            latencies[route].append(elapsed)
            whole = int(wall)
            if whole != second:
                second, prefix = whole, logs.timestamp.second(whole)
            # Whole microseconds, written as milliseconds: a float's repr was a fifth of a line.
            ms, us = divmod(round(elapsed * 1e6), 1000)
            stamp = f"{start}{prefix}.{digits[int((wall - whole) * 1000)]}"
            if rid is None:
                lines.append(f"{stamp}{head}{ms}.{digits[us]}{tail}")
            else:
                # A request id is always [A-Za-z0-9._-] (errors.request_id_of): no escaping.
                lines.append(f"{stamp}{head}{rid}{middle}{ms}.{digits[us]}{tail}")
        return "".join(lines)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one recorder per app, never freed early
    def _template(self, has_rid: bool, method: str, route: str, status: int, cache: str | None,
                  no_tenant: bool, no_member: bool
                  ) -> tuple[str, str, str, tuple[str, str, str], tuple]:
        """A kind of line, read off JsonFormatter's own output for a record of this kind (so the
        layout is defined once, there), cut where the time's milliseconds, the request id, the
        duration, the tenant and the member's hash go: (before the time, after the time's
        milliseconds up to the request id, after the request id up to the duration, the tail
        after the duration cut around the tenant and the member's hash, the kind's metric
        labels); without a request id the second and third are one, and a tenant or member that
        is null is part of the tail. Not per member: a key per member made a memo that missed
        on nearly every line with 20,000 active members (docs/performance.md)."""
        extra = self._extra(_RID if has_rid else None, method, route, status, _DURATION, cache,
                            None if no_tenant else _TENANT, None if no_member else 0)
        fields = extra["fields"]
        if not no_member:
            fields["member"] = _MEMBER
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None,
                                extra=extra)
        record.created, record.process = _WALL, os.getpid()
        line = logs.JsonFormatter().format(record) + "\n"
        stamp = logs.timestamp(_WALL)  # "2001-09-09T01:46:40.000+00:00"
        start, _, rest = line.partition(stamp.removesuffix(".000+00:00"))
        rest = rest.removeprefix(".000")
        before, _, tail = rest.partition(orjson.dumps(_DURATION).decode())
        t1, t2 = "", tail
        if not no_tenant:
            t1, _, t2 = tail.partition(str(_TENANT))
        t3 = ""
        if not no_member:
            t2, _, t3 = t2.partition(f'"{_MEMBER}"')
            t2, t3 = t2 + '"', '"' + t3
        kind = (route, method, status, cache)
        if has_rid:
            head, _, middle = before.partition(_RID)
            return start, head, middle, (t1, t2, t3), kind
        return start, before, "", (t1, t2, t3), kind

