"""Per request: one log line and the request metrics (README "Seeing inside"), in batches.

A hot hit costs this process well under 100 µs; a log record through `logging` (LogRecord,
formatter, a write and a flush) cost 13 µs of it and the metric calls 3 µs more. So a request
only appends a tuple here; every OBSERVE_FLUSH_SECONDS (service/app.py runs the tick), before
a scrape of this process and at shutdown, the batch becomes counter increments (one per kind
of request), histogram buckets and log lines written in one call. What that costs: a request's
line and counts appear up to that late, and a worker killed with SIGKILL loses its last batch
(SIGTERM flushes).
"""

from __future__ import annotations

import bisect
import collections
import functools
import hashlib
import hmac
import logging
import os

import orjson

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


@functools.lru_cache(maxsize=16384)
def member_hash(key: bytes, uniacid: int, member_id: int) -> str:
    # Memoised: one HMAC per request was a tenth of a cached answer's cost.
    return hmac.new(key, f"{uniacid}:{member_id}".encode(), hashlib.sha256).hexdigest()[:16]


# The route label of every path no route matches (service/edge.py).
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


def _observe_all(histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for each value, as one increment per bucket. prometheus-client
    has no batch call; this uses the fields `observe` itself uses (the version is pinned, and
    tests/test_observe.py compares the buckets)."""
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    histogram._sum.inc(sum(values))
    for bucket, n in zip(histogram._buckets, counts, strict=True):
        if n:
            bucket.inc(n)


# "000" to "999": the milliseconds of a time and of a duration, without a format spec per line.
_DIGITS3 = tuple(f"{n:03d}" for n in range(1000))


@functools.lru_cache(maxsize=1024)
def _json(text: str | None) -> str:
    # Request ids are new each time, but methods, routes, outcomes and member hashes repeat.
    return orjson.dumps(text).decode()


class RequestRecorder:
    """The requests of one process since the last flush."""

    def __init__(self, hash_key: bytes) -> None:
        self.hash_key = hash_key
        self.in_flight = 0
        # (wall time, request id, method, route, status, seconds, cache, tenant, member id)
        self._pending: list[tuple] = []

    def add(self, wall: float, rid: str | None, method: str, route: str, status: int,
            elapsed: float, cache: str | None, tenant: int | None,
            member_id: int | None) -> None:
        self._pending.append((wall, rid, method, route, status, elapsed, cache, tenant,
                              member_id))
        if len(self._pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        metrics.IN_FLIGHT.set(self.in_flight)
        batch, self._pending = self._pending, []
        if not batch:
            return
        sink = logs.json_sink(log)
        kinds: collections.Counter[tuple] = collections.Counter()
        latencies: dict[str, list[float]] = collections.defaultdict(list)
        if sink is not None:
            logs.write(sink, self._json_lines(batch, kinds, latencies))
        else:
            self._count(batch, kinds, latencies)
            if log.isEnabledFor(logging.INFO):
                for _, rid, method, route, status, elapsed, cache, tenant, member_id in batch:
                    log.info("request", extra={"request_id": rid, "fields": {
                        "method": method, "route": route, "status": status,
                        "duration_ms": round(elapsed * 1e6) / 1000, "cache": cache,
                        "tenant": tenant, "member": self._member(tenant, member_id)}})
        for (route, method, status, cache), n in kinds.items():
            counter, outcome = _series(route, method if method in METHODS else "OTHER",
                                       status, cache)
            counter.inc(n)
            if outcome is not None:
                outcome.inc(n)
        for route, values in latencies.items():
            _observe_all(_latency(route), values)

    @staticmethod
    def _count(batch: list[tuple], kinds: collections.Counter[tuple],
               latencies: dict[str, list[float]]) -> None:
        for _, _, method, route, status, elapsed, cache, _, _ in batch:
            kinds[(route, method, status, cache)] += 1
            latencies[route].append(elapsed)

    def _member(self, tenant: int | None, member_id: int | None) -> str | None:
        if tenant is None or member_id is None:
            return None
        return member_hash(self.hash_key, tenant, member_id)

    def _json_lines(self, batch: list[tuple], kinds: collections.Counter[tuple],
                    latencies: dict[str, list[float]]) -> str:
        """The lines JsonFormatter writes for `logger.info("request", extra=...)`, from parts
        built once per kind of line (a dict and orjson per line cost three times as much); the
        batch is counted in the same pass. Only the time, the request id and the duration
        differ between most lines of a batch."""
        lines = []
        template = self._template
        digits = _DIGITS3
        second, prefix = -1, ""
        for wall, rid, method, route, status, elapsed, cache, tenant, member_id in batch:
            head, middle, tail, kind = template(rid is not None, method, route, status, cache,
                                                tenant, member_id)
            kinds[kind] += 1
            latencies[route].append(elapsed)
            whole = int(wall)
            if whole != second:
                second, prefix = whole, logs.timestamp.second(whole)
            # Whole microseconds, written as milliseconds: a float's repr was a fifth of a line.
            ms, us = divmod(round(elapsed * 1e6), 1000)
            if rid is None:
                lines.append(f'{{"ts":"{prefix}.{digits[int((wall - whole) * 1000)]}{head}'
                             f'{ms}.{digits[us]}{tail}')
            else:
                # A request id is always [A-Za-z0-9._-] (errors.request_id_of): no escaping.
                lines.append(f'{{"ts":"{prefix}.{digits[int((wall - whole) * 1000)]}{head}'
                             f'{rid}{middle}{ms}.{digits[us]}{tail}')
        return "".join(lines)

    @functools.lru_cache(maxsize=16384)  # noqa: B019 - one recorder per app, never freed early
    def _template(self, has_rid: bool, method: str, route: str, status: int, cache: str | None,
                  tenant: int | None, member_id: int | None) -> tuple[str, str, str, tuple]:
        """A kind of line, cut where the time's milliseconds, the request id and the duration
        go: (after the milliseconds up to the request id, after the request id up to the
        duration, after the duration, the kind's metric labels); without a request id the
        first two are one."""
        member = self._member(tenant, member_id)
        head = (f'+00:00","level":"INFO","logger":{_json(log.name)},"msg":"request",'
                f'"pid":{os.getpid()}')
        before = (f',"method":{_json(method)},"route":{_json(route)},"status":{status}'
                  ',"duration_ms":')
        tail = (f',"cache":{_json(cache)},"tenant":{"null" if tenant is None else tenant}'
                f',"member":{"null" if member is None else _json(member)}}}\n')
        kind = (route, method, status, cache)
        if has_rid:
            return head + ',"request_id":"', '"' + before, tail, kind
        return head + before, "", tail, kind
