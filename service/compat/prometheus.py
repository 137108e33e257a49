"""The one module that touches prometheus-client's internals, behind a version guard.

prometheus-client has no call to observe a batch of values: `observe_many` adds a batch to a
histogram as one increment per bucket, through the fields `Histogram.observe` itself uses
(`_upper_bounds`, `_buckets`, `_sum`). On a version it was not tested with (TESTED), or a
histogram without those fields, it observes each value through the public API, and says so
once. tests/compat/test_prometheus.py compares both ways' buckets.
"""

from __future__ import annotations

import bisect
import importlib.metadata
import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

TESTED = frozenset({"0.26.0"})
VERSION = importlib.metadata.version("prometheus-client")
SUPPORTED = VERSION in TESTED
if not SUPPORTED:
    log.warning("prometheus-client %s was not tested with this service: latencies are observed "
                "one by one (service/compat/prometheus.py)", VERSION)


def observe_many(histogram: Any, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for each value."""
    bounds = getattr(histogram, "_upper_bounds", None) if SUPPORTED else None
    if bounds is None:
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    histogram._sum.inc(sum(values))
    for bucket, n in zip(histogram._buckets, counts, strict=True):
        if n:
            bucket.inc(n)
