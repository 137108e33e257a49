"""Seeing inside: metrics, the request recorder, logging."""

# Where N > 1 workers share their metrics; set by `serve` before prometheus-client is imported
# (service/runtime/server.py), read by service/observe/metrics.py.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
