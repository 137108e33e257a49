"""The request recorder: a batch becomes the same metrics and the same JSON lines as one record
per request would have given."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY

from service.compat import logging as compat_logging
from service.observe.logs import JsonFormatter
from service.observe.recorder import MAX_PENDING, RequestRecorder, member_hash, member_hash_key

ROUTE = "/test/observe"
KEY = member_hash_key("k" * 40)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextlib.contextmanager
def json_stream() -> Iterator[io.StringIO]:
    """The JSON set-up `logs.configure` makes, on a buffer instead of stderr. Entered in the
    test's body: pytest adds its capture handlers to the root logger when the call begins."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, compat_logging._installed)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    compat_logging._installed = handler
    try:
        yield stream
    finally:
        root.handlers[:], level, compat_logging._installed = saved
        root.setLevel(level)


def test_a_batch_is_counted_once_per_request() -> None:
    recorder = RequestRecorder(KEY)
    before = {
        "ok": sample("coupons_http_requests_total", route=ROUTE, method="GET", status="200"),
        "other": sample("coupons_http_requests_total", route=ROUTE, method="OTHER",
                        status="405"),
        "count": sample("coupons_http_request_duration_seconds_count", route=ROUTE),
        "fast": sample("coupons_http_request_duration_seconds_bucket", route=ROUTE, le="0.001"),
        "local": sample("coupons_cache_requests_total", outcome="local"),
    }
    for _ in range(5):
        recorder.add(1.0, "r", "GET", ROUTE, 200, 0.0004, "local", 1, 2)
    recorder.add(1.0, "r", "BREW", ROUTE, 405, 0.02, None, None, None)
    # Nothing is counted before the flush...
    assert sample("coupons_http_requests_total", route=ROUTE, method="GET",
                  status="200") == before["ok"]
    recorder.flush()
    # ...and everything after it, each request once.
    assert sample("coupons_http_requests_total", route=ROUTE, method="GET",
                  status="200") == before["ok"] + 5
    assert sample("coupons_http_requests_total", route=ROUTE, method="OTHER",
                  status="405") == before["other"] + 1
    assert sample("coupons_http_request_duration_seconds_count",
                  route=ROUTE) == before["count"] + 6
    assert sample("coupons_http_request_duration_seconds_bucket", route=ROUTE,
                  le="0.001") == before["fast"] + 5
    assert sample("coupons_cache_requests_total", outcome="local") == before["local"] + 5
    recorder.flush()
    assert sample("coupons_http_request_duration_seconds_count",
                  route=ROUTE) == before["count"] + 6, "a batch is flushed once"


def test_in_flight_is_published_on_flush() -> None:
    recorder = RequestRecorder(KEY)
    recorder.in_flight = 3
    recorder.flush()
    assert sample("coupons_http_requests_in_flight") == 3
    recorder.in_flight = 0
    recorder.flush()
    assert sample("coupons_http_requests_in_flight") == 0


def test_json_lines_match_the_formatter() -> None:
    recorder = RequestRecorder(KEY)
    wall = 1781488800.25
    recorder.add(wall, "rid-1", "GET", ROUTE, 200, 0.0012345, "local", 1, 2)
    recorder.add(wall + 1.5, None, "POST", "unmatched", 404, 0.002, None, None, None)
    with json_stream() as stream:
        recorder.flush()
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]

    # What one record through logging and JsonFormatter gives for the same request.
    record = logging.getLogger("service.access").makeRecord(
        "service.access", logging.INFO, __file__, 0, "request", (), None,
        extra={"request_id": "rid-1", "fields": {
            "method": "GET", "route": ROUTE, "status": 200, "duration_ms": 1.234,
            "cache": "local", "uniacid": 1, "member": member_hash(KEY, 1, 2)}})
    record.created = wall
    assert first == json.loads(JsonFormatter().format(record))
    assert first["ts"] == "2026-06-15T02:00:00.250+00:00"
    assert list(first) == ["ts", "level", "logger", "msg", "pid", "request_id", "method",
                           "route", "status", "duration_ms", "cache", "uniacid", "member"]
    assert second["ts"] == "2026-06-15T02:00:01.750+00:00" and "request_id" not in second
    assert second["member"] is None and second["status"] == 404


def test_without_the_json_handler_lines_go_through_logging(caplog) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    recorder = RequestRecorder(KEY)
    recorder.add(1.0, "rid-2", "GET", ROUTE, 200, 0.001, "hit", 1, 2)
    recorder.flush()
    [record] = [r for r in caplog.records if r.name == "service.access"]
    assert record.getMessage() == "request" and record.request_id == "rid-2"
    assert record.fields["cache"] == "hit" and record.fields["member"] == member_hash(KEY, 1, 2)


def test_a_full_batch_is_flushed_at_once() -> None:
    recorder = RequestRecorder(KEY)
    with json_stream() as stream:
        for n in range(MAX_PENDING - 1):
            recorder.add(1.0, f"r{n}", "GET", ROUTE, 200, 0.001, None, None, None)
        assert stream.getvalue() == ""
        recorder.add(1.0, "last", "GET", ROUTE, 200, 0.001, None, None, None)
        assert len(stream.getvalue().splitlines()) == MAX_PENDING


def test_lines_of_one_kind_carry_each_request_s_own_tenant_and_member() -> None:
    """The line's layout is kept per kind of request, not per member: each line still names
    its own tenant and member, and a tenant without a member is written as null."""
    recorder = RequestRecorder(KEY)
    people = [(1, 2), (1, 3), (40, 2), (7, None)]
    for uniacid, member_id in people:
        recorder.add(1781488800.0, "rid", "GET", ROUTE, 200, 0.001, "hit", uniacid, member_id)
    with json_stream() as stream:
        recorder.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["uniacid"], line["member"]) for line in lines] == [
        (1, member_hash(KEY, 1, 2)), (1, member_hash(KEY, 1, 3)), (40, member_hash(KEY, 40, 2)),
        (7, None)]
    assert len({line["member"] for line in lines}) == 4


async def test_a_collection_of_the_garbage_collector_is_timed(client) -> None:
    """Each collection of the cyclic collector while the app runs is in
    coupons_gc_pause_seconds, by generation (a full one holds the loop for its length)."""
    import gc

    before = sample("coupons_gc_pause_seconds_count", generation="2")
    gc.collect()
    assert sample("coupons_gc_pause_seconds_count", generation="2") == before + 1
