"""compat/prometheus.py: a batch observed as one increment per bucket gives the buckets and sum
that observing each value through prometheus-client's public API gives; on a version it was not
tested with it takes that public path."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from service.compat import prometheus

VALUES = [0.0001, 0.0004, 0.0009, 0.003, 0.003, 0.02, 0.3, 2.0, 30.0]


def _samples(histogram: Histogram) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in histogram.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def _histogram(name: str) -> Histogram:
    return Histogram(name, "test", buckets=(0.0005, 0.001, 0.01, 0.1, 1.0),
                     registry=CollectorRegistry())


def test_a_batch_is_what_each_observation_would_be(monkeypatch) -> None:
    one_by_one, batched, fallback = (_histogram(n) for n in ("one", "batch", "fallback"))
    for value in VALUES:
        one_by_one.observe(value)
    prometheus.observe_many(batched, VALUES)
    monkeypatch.setattr(prometheus, "SUPPORTED", False)
    prometheus.observe_many(fallback, VALUES)

    def renamed(histogram: Histogram, name: str) -> dict:
        return {(k[0].replace(name, "h"), k[1]): v for k, v in _samples(histogram).items()}

    assert renamed(batched, "batch") == renamed(one_by_one, "one")
    assert renamed(fallback, "fallback") == renamed(one_by_one, "one")
