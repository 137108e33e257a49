"""Per request: one log line and the request metrics (README "Seeing inside").

The middleware sits outside the error middleware, so it sees the final status of every
request, errors included, and the request id that the error middleware settled on.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import time

from aiohttp import web

from service import metrics
from service.keys import member_hash_key_key, principal_key, request_id_key

log = logging.getLogger("service.access")

# The status logged and counted for a request whose handler was cancelled (its client went
# away, or the shutdown grace ran out): nginx's "client closed request".
CANCELLED = 499
# Any other method a client invents is counted as OTHER: label values stay a bounded set.
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})


def member_hash_key(jwt_secret: str) -> bytes:
    """A key derived from the JWT secret: member hashes are stable across workers and restarts,
    and cannot be reversed by hashing every small integer without the secret."""
    return hmac.new(jwt_secret.encode(), b"coupons log member hash", hashlib.sha256).digest()


@functools.lru_cache(maxsize=16384)
def member_hash(key: bytes, uniacid: int, member_id: int) -> str:
    # Memoised: one HMAC per request was a tenth of a cached answer's cost.
    return hmac.new(key, f"{uniacid}:{member_id}".encode(), hashlib.sha256).hexdigest()[:16]


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    # Unmatched paths share one label: a scanner must not create a series per path.
    return resource.canonical if resource is not None else "unmatched"


@functools.lru_cache(maxsize=4096)
def _series(route: str, method: str, status: int, cache: str | None):
    """The labelled series of one kind of request, looked up once: `labels()` takes a lock and
    validates its arguments on every call, a third of the metrics' cost per request. The label
    sets are bounded (route templates, methods, statuses, cache outcomes)."""
    return (metrics.REQUESTS.labels(route, method, str(status)),
            metrics.LATENCY.labels(route),
            metrics.CACHE_LOOKUPS.labels(cache) if cache else None)


@web.middleware
async def observe_middleware(request: web.Request, handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    metrics.IN_FLIGHT.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CANCELLED
        raise
    finally:
        metrics.IN_FLIGHT.dec()
        elapsed = time.perf_counter() - start
        route = route_of(request)
        cache = response.headers.get("X-Cache") if response is not None else None
        method = request.method if request.method in METHODS else "OTHER"
        counter, histogram, outcome = _series(route, method, status, cache)
        counter.inc()
        histogram.observe(elapsed)
        if outcome is not None:
            outcome.inc()
        fields = {
            "method": request.method,
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "cache": cache,
            "tenant": None,
            "member": None,
        }
        principal = request.get(principal_key)
        if principal is not None:
            fields["tenant"] = principal.uniacid
            fields["member"] = member_hash(request.app[member_hash_key_key],
                                           principal.uniacid, principal.member_id)
        log.info("request", extra={"request_id": request.get(request_id_key),
                                   "fields": fields})
