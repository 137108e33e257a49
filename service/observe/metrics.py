"""Prometheus metrics (`GET /metrics`), safe with several worker processes.

With `serve --workers N` (N > 1) every worker writes its values to files under
`PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode; `serve` creates and empties
the directory before the workers start, see service/runtime/server.py), and whichever worker
answers a scrape merges them all: counters and histograms are summed over workers (dead ones
included, so a total never goes back), gauges per their mode below. The mode is chosen when
prometheus-client is first imported, so the variable must be set before that: `serve` does it.

Names are `coupons_*`; label values are bounded sets (routes are templates, never raw paths).
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client import multiprocess as _multiprocess

from service.observe import MULTIPROC_ENV

# The hot path is ~1 ms from Redis and a few ms from PostgreSQL; the tail up to the 5 s
# statement timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)

REQUESTS = Counter(
    "coupons_http_requests_total", "HTTP requests answered, by route template and status",
    ["route", "method", "status"])
LATENCY = Histogram(
    "coupons_http_request_duration_seconds", "Time from request start to response, by route",
    ["route"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge(
    "coupons_http_requests_in_flight", "Requests being handled now",
    multiprocess_mode="livesum")

CACHE_LOOKUPS = Counter(
    "coupons_cache_requests_total",
    "Coupon pages answered, by cache outcome (local, hit, miss, coalesced, bypass)", ["outcome"])
CACHE_FILLS = Counter(
    "coupons_cache_fills_total",
    "Pages written to Redis after a miss (result=stored), or refused because an invalidation "
    "came first (result=stale_refused)", ["result"])
CACHE_INVALIDATIONS = Counter(
    "coupons_cache_invalidations_total",
    "Invalidations applied, by source: member, coupon, tenant, truncate (database writes via "
    "NOTIFY), use_api, flush (after a (re)connect or a lost invalidation)", ["source"])
CACHE_COVERAGE = Counter(
    "coupons_cache_coverage_total",
    "Times a worker proved that no invalidation was lost and trusted its cache again: by a "
    "handover from a live listener, or by a flush (a new epoch)", ["how"])
LOCAL_CACHE_EVICTIONS = Counter(
    "coupons_local_cache_evictions_total",
    "Pages dropped from a worker's local layer to stay within LOCAL_CACHE_MAX_BYTES")
CACHE_TRUSTED = Gauge(
    "coupons_cache_trusted",
    "1 when this worker serves from the cache, 0 while it answers from PostgreSQL only",
    ["pid"], multiprocess_mode="liveall")

REDIS_ERRORS = Counter(
    "coupons_redis_errors_total",
    "Redis calls that failed (error, timeout), ran out of time while this process's own loop "
    "was late (loop_late: not counted by the breaker), or were refused by the open circuit",
    ["kind"])

LOOP_LAG = Histogram(
    "coupons_event_loop_lag_seconds",
    "How late the event loop ran a timer (sampled every 50 ms): time every ready callback waits",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
LOCAL_REPROOFS = Counter(
    "coupons_local_cache_reproofs_total",
    "Local pages in use proven again against Redis before their safety TTL ended, by result "
    "(renewed; ended: Redis no longer held the page, or an invalidation came first)",
    ["result"])
GC_PAUSE = Histogram(
    "coupons_gc_pause_seconds",
    "Collections of Python's cyclic garbage collector, by generation: each holds the event loop "
    "for its whole length",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
BOUNDS_EXTENDED = Counter(
    "coupons_time_bounds_extended_total",
    "Times a call's time bound fired late (the loop was busy) and granted one more budget "
    "instead of failing the call (service/runtime/lag.py)")
SHED = Counter(
    "coupons_http_shed_total",
    "Requests answered 503 at once because this process was past its capacity, by reason "
    "(in_flight: the admission bound; loop_late: a call's bound ran out while the loop was "
    "late)", ["reason"])

DB_POOL_IN_USE = Gauge(
    "coupons_db_pool_connections_in_use", "Pool connections checked out", ["pool"],
    multiprocess_mode="livesum")
DB_POOL_WAITING = Gauge(
    "coupons_db_pool_waiting", "Callers waiting for a pool connection", ["pool"],
    multiprocess_mode="livesum")
DB_POOL_MAX = Gauge(
    "coupons_db_pool_max_connections", "Configured pool size (summed over workers)", ["pool"],
    multiprocess_mode="livesum")
DB_READS = Counter(
    "coupons_db_page_reads_total",
    "Page queries by server: replica, or primary (reason: no_replica, replica_behind, "
    "replica_error)", ["server", "reason"])
DB_RETRIES = Counter(
    "coupons_db_read_retries_total",
    "Reads run again on another connection after theirs proved broken", ["pool"])

LISTENER_UP = Gauge(
    "coupons_listener_connected",
    "1 while this worker's LISTEN connection is connected and proven alive", ["pid"],
    multiprocess_mode="liveall")
LISTENER_CONNECTS = Counter(
    "coupons_listener_connects_total",
    "LISTEN (re)connections that went on to prove coverage (a handover or a flush)")
LISTENER_NOTIFICATIONS = Counter(
    "coupons_listener_notifications_total", "Invalidation notifications received")

RATE_LIMIT_REJECTIONS = Counter(
    "coupons_rate_limit_rejections_total",
    "Requests refused with 429 by the rate limiter, by the limit that refused them "
    "(e.g. member, staff, ip)", ["scope"])
RATE_LIMIT_FAILED_OPEN = Counter(
    "coupons_rate_limit_failed_open_total",
    "Requests let through because Redis could not decide their rate limit (fail open)")

def pid_label() -> str:
    # Resolved per call: a forked worker must not report its parent's pid.
    return str(os.getpid())


def registry() -> CollectorRegistry:
    """What a scrape reads: every worker's files in multiprocess mode, else this process."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return REGISTRY
    merged = CollectorRegistry()
    _multiprocess.MultiProcessCollector(merged, path=directory)
    return merged


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (its counters stay in the totals)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        _multiprocess.mark_process_dead(pid, directory)
