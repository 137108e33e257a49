"""The knobs of the freshness tests (the environment sets the sizes of a run) and the bounds the
judge holds the service to. tests/cache/test_freshness.py's docstring says what each means."""

from __future__ import annotations

import os

GRACE = 0.100                # a read sent this long after a commit must reflect it
PG_503_GRACE = 0.5           # 503s allowed until this long after PostgreSQL is back
SECONDS = float(os.environ.get("FRESHNESS_SECONDS", "12"))
FAULT_SECONDS = float(os.environ.get("FRESHNESS_FAULT_SECONDS", "16"))
FAULT_WORKERS = [int(n) for n in os.environ.get("FRESHNESS_FAULT_WORKERS", "2").split(",")]
MIN_READS = int(os.environ.get("FRESHNESS_READS", "3000"))
REPORT = os.environ.get("FRESHNESS_REPORT")
# More settings for the served processes, "NAME=value,NAME=value" (e.g. to check the judge
# against LOCAL_CACHE_ENABLED=false).
EXTRA_ENV = os.environ.get("FRESHNESS_SERVICE_ENV", "")
LIMITS = {
    "RATE_LIMIT_MEMBER_PER_MINUTE": "6000000", "RATE_LIMIT_MEMBER_BURST": "100000",
    "RATE_LIMIT_STAFF_PER_MINUTE": "6000000", "RATE_LIMIT_STAFF_BURST": "100000",
}
READERS_START = 0.7          # seconds from choosing the clock's ends to the first read, about
