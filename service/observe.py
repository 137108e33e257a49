"""Per request: one log line and the request metrics (README "Seeing inside").

The middleware sits outside the error middleware, so it sees the final status of every
request, errors included, and the request id that the error middleware settled on.
"""

from __future__ import annotations

import asyncio
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


def member_hash_key(jwt_secret: str) -> bytes:
    """A key derived from the JWT secret: member hashes are stable across workers and restarts,
    and cannot be reversed by hashing every small integer without the secret."""
    return hmac.new(jwt_secret.encode(), b"coupons log member hash", hashlib.sha256).digest()


def member_hash(key: bytes, uniacid: int, member_id: int) -> str:
    return hmac.new(key, f"{uniacid}:{member_id}".encode(), hashlib.sha256).hexdigest()[:16]


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    # Unmatched paths share one label: a scanner must not create a series per path.
    return resource.canonical if resource is not None else "unmatched"


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
        metrics.REQUESTS.labels(route, request.method, str(status)).inc()
        metrics.LATENCY.labels(route).observe(elapsed)
        cache = response.headers.get("X-Cache") if response is not None else None
        if cache:
            metrics.CACHE_LOOKUPS.labels(cache).inc()
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
