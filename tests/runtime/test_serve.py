"""`serve` as production runs it: pre-forked workers, SIGTERM under load, metrics, request logs.

Real `python -m service serve` subprocesses on 127.0.0.1; every client loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.auth.tokens import issue_token
from tests.support.cli import STOP_TIMEOUT, Server, serving
from tests.support.common import SECRET

COUPONS = "/api/v2/coupons"
LOAD_SECONDS = 20.0  # hard bound of any client loop here

# These tests hold requests in flight with a table lock: the statement, lock and request
# bounds (1 s, 1 s and 10 s by default) must not end them first.
# A pool connection opened while the lock is held would wait on it in its warm-up: open them
# all first. Their client loops are one staff member on one member: rate limits off, or 429s.
HELD_BY_LOCKS = {"DB_STATEMENT_TIMEOUT_MS": "60000", "DB_COMMAND_TIMEOUT_SECONDS": "65",
                 "REQUEST_TIMEOUT_SECONDS": "60", "DB_ACQUIRE_TIMEOUT_SECONDS": "60",
                 "DB_POOL_MIN_SIZE": "10", "DB_POOL_MAX_SIZE": "10",
                 "RATE_LIMIT_STAFF_PER_MINUTE": "0", "RATE_LIMIT_MEMBER_PER_MINUTE": "0"}


@dataclasses.dataclass
class Outcome:
    rid: str
    sent: float
    done: float
    status: int | None = None
    error: str | None = None


def log_lines(server: Server) -> list[dict[str, Any]]:
    """The JSON lines of the server's output (every process writes one object per line)."""
    out = []
    for line in server.output().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def headers(rid: str | None = None, member: int = 1) -> dict[str, str]:
    token = issue_token(SECRET, 1, member, "staff-serve", 3600, int(time.time()))
    out = {"Authorization": f"Bearer {token}"}
    if rid:
        out["X-Request-ID"] = rid
    return out


async def get(session: aiohttp.ClientSession, server: Server, rid: str,
              **params: Any) -> Outcome:
    sent = time.time()
    query = {"client": "work", "type": "17", **{k: str(v) for k, v in params.items()}}
    try:
        async with session.get(server.base + COUPONS, params=query, headers=headers(rid)) as r:
            body = await r.json()
            outcome = Outcome(rid, sent, time.time(), status=r.status)
            if r.status == 200:
                assert body["result"] == 1
            return outcome
    except aiohttp.ClientConnectorError:
        return Outcome(rid, sent, time.time(), error="refused")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        return Outcome(rid, sent, time.time(), error=type(exc).__name__)


async def lock_waiters(conn: asyncpg.Connection) -> int:
    # The page statement's text is longer than pg_stat_activity keeps (1 kB by default): count
    # every backend of this database waiting on a lock (only the service's can be).
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()")


async def wait_for(predicate, within: float, what: str) -> None:
    """Poll a bounded readiness condition."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {within}s")
        await asyncio.sleep(0.02)


async def test_sigterm_under_load_loses_no_accepted_request(
    demo_env: dict[str, str], fresh_url: str, tmp_path: Path
) -> None:
    # Long enough that a loaded 2-core CI machine still sees /readyz turn 503 inside it.
    drain = 3.0
    env_ = {**demo_env, **HELD_BY_LOCKS, "SHUTDOWN_DRAIN_SECONDS": str(drain),
            "SHUTDOWN_GRACE_SECONDS": "10",
            "LOG_FORMAT": "json"}
    steady: list[Outcome] = []
    with serving(env_, tmp_path / "server.log", "--workers", "2") as server:
        admin = await asyncpg.connect(fresh_url)
        locker = await asyncpg.connect(fresh_url)
        # Fresh connections per request: the loops also exercise accept() through the drain.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        try:
            # Both workers up (their pools are warm: the lock below would stall a start).
            await wait_for(lambda: listeners_connected(session, server, 2), 15,
                           "both workers started")
            # The steady page is cached first, so that steady requests never touch the table
            # that the slow ones will wait on.
            assert (await get(session, server, "warm", coupon_type=0)).status == 200
            stop = asyncio.Event()
            deadline = time.monotonic() + LOAD_SECONDS

            async def client_loop(n: int) -> None:
                i = 0
                while not stop.is_set() and time.monotonic() < deadline:
                    outcome = await get(session, server, f"steady-{n}-{i}", coupon_type=0)
                    steady.append(outcome)
                    i += 1
                    if outcome.error == "refused":
                        return  # the server is gone: a client (or balancer) stops here

            loops = [asyncio.create_task(client_loop(n)) for n in range(4)]
            await wait_for(lambda: _true(len(steady) >= 20), 10, "steady traffic")

            # Requests in flight at SIGTERM: uncached pages whose query waits on a lock we hold.
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE yz_member_coupon IN ACCESS EXCLUSIVE MODE")
            slow = [asyncio.create_task(get(session, server, f"slow-{k}", coupon_type=k))
                    for k in range(1, 7)]
            await wait_for(lambda: _ge(lock_waiters(admin), 6), 10, "6 queries waiting")

            term_at = time.time()
            server.proc.send_signal(signal.SIGTERM)
            # /readyz turns 503 at once, while the listener still accepts (the drain).
            ready: list[int] = []

            async def readyz_503() -> bool:
                async with session.get(server.base + "/readyz") as r:
                    ready.append(r.status)
                    return r.status == 503

            await wait_for(readyz_503, drain * 0.9, "/readyz 503 after SIGTERM")
            assert time.time() - term_at < drain, "503 must come before the listener closes"

            # Then the listener closes: a new connection is refused.
            async def refused() -> bool:
                try:
                    async with session.get(server.base + "/healthz"):
                        return False
                except aiohttp.ClientConnectorError:
                    return True

            await wait_for(refused, drain + 5, "listener closed")
            closed_at = time.time()
            assert closed_at - term_at >= drain * 0.9
            # The slow requests were accepted before SIGTERM and are still in flight.
            assert not any(task.done() for task in slow)
            await transaction.rollback()
            finished = await asyncio.gather(*slow)
            stop.set()
            await asyncio.gather(*loops)
        finally:
            await session.close()
            await locker.close()
            await admin.close()
        assert server.wait_exit(STOP_TIMEOUT) == 0, server.output()

    # In flight at SIGTERM, still in flight when the listener closed: every one answered 200.
    assert [o.status for o in finished] == [200] * 6, finished
    assert all(o.sent < term_at < closed_at < o.done for o in finished)

    lines = log_lines(server)
    logged = {line["request_id"]: line for line in lines if line.get("msg") == "request"}
    answered = [o for o in steady if o.status is not None]
    failed = [o for o in steady if o.status is None]
    # Every answer a 200, also the ones during the drain; none refused before the close.
    assert {o.status for o in answered} == {200}
    assert [o for o in answered if term_at < o.sent < closed_at - 0.1], "served while draining"
    assert all(o.done >= term_at + drain * 0.9 for o in failed), failed
    # A failed request never reached a handler: the server has no line for it. A request the
    # server accepted was answered, and the client saw that answer.
    assert not [o for o in failed if o.rid in logged], failed
    for o in answered:
        assert logged[o.rid]["status"] == 200
    # The slow ones are logged by the worker that finished them, after the close.
    assert all(logged[f"slow-{k}"]["status"] == 200 for k in range(1, 7))
    stops = [line for line in lines if line.get("msg") == "listener closed; finishing requests "
                                                         "in flight"]
    assert len(stops) == 2, "each worker closed its listener"
    print(f"\nSIGTERM under load: {len(answered)} answered (all 200), "
          f"{sum(term_at < o.sent < closed_at for o in answered)} during the {drain}s drain, "
          f"{len(failed)} not accepted after the close ({sorted({o.error for o in failed})}), "
          f"6/6 in-flight finished {max(o.done for o in finished) - closed_at:.3f}s after it")


async def test_grace_bounds_a_request_that_never_finishes(
    demo_env: dict[str, str], fresh_url: str, tmp_path: Path
) -> None:
    env_ = {**demo_env, **HELD_BY_LOCKS, "SHUTDOWN_GRACE_SECONDS": "1", "LOG_FORMAT": "json"}
    with serving(env_, tmp_path / "server.log") as server:
        admin = await asyncpg.connect(fresh_url)
        locker = await asyncpg.connect(fresh_url)
        session = aiohttp.ClientSession()
        transaction = locker.transaction()
        try:
            await transaction.start()
            await locker.execute("LOCK TABLE yz_member_coupon IN ACCESS EXCLUSIVE MODE")
            stuck = asyncio.create_task(get(session, server, "stuck", coupon_type=3))
            await wait_for(lambda: _ge(lock_waiters(admin), 1), 10, "the query waiting")
            start = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(server.wait_exit, STOP_TIMEOUT)
            elapsed = time.monotonic() - start
            outcome = await stuck
        finally:
            await transaction.rollback()
            await session.close()
            await locker.close()
            await admin.close()
    assert code == 0, server.output()
    # One grace for the handler, one for the pool: never the query's own (unbounded) wait.
    assert 1.0 <= elapsed < 6.0, elapsed
    assert outcome.status is None and outcome.error is not None
    logged = [line for line in log_lines(server) if line.get("request_id") == "stuck"]
    assert logged and logged[0]["status"] == 499


async def listeners_connected(session: aiohttp.ClientSession, server: Server,
                              workers: int) -> bool:
    """Every worker has started: its LISTEN connection is up (it reports on /metrics)."""
    async with session.get(server.base + "/metrics") as r:
        samples = scrape(await r.text())
    return sum(v for (name, _), v in samples.items()
               if name == "coupons_listener_connected") == workers


async def _true(value: bool) -> bool:
    return value


async def _ge(count, minimum: int) -> bool:
    return await count >= minimum


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_two_workers_one_metrics_view_and_json_request_logs(
    demo_env: dict[str, str], fresh_url: str, tmp_path: Path
) -> None:
    env_ = {**demo_env, **HELD_BY_LOCKS, "LOG_FORMAT": "json"}
    with serving(env_, tmp_path / "server.log", "--workers", "2") as server:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as session:
            # Both workers' listeners up before counting (each reports on its heartbeat).
            await wait_for(lambda: listeners_connected(session, server, 2), 15,
                           "both listeners connected")
            outcomes = [await get(session, server, f"m-{i}", coupon_type=i % 3)
                        for i in range(30)]
            assert {o.status for o in outcomes} == {200}
            db = await asyncpg.connect(fresh_url)
            try:
                await db.execute("UPDATE yz_member_coupon SET updated_at = now() "
                                 "WHERE uniacid = 1 AND uid = 1")
            finally:
                await db.close()

            async def invalidated() -> bool:
                async with session.get(server.base + "/metrics") as r:
                    samples = scrape(await r.text())
                return value(samples, "coupons_cache_invalidations_total", source="member") >= 2

            await wait_for(invalidated, 10, "the write invalidated by both workers")

            async def all_recorded() -> bool:
                # Each worker writes its request counts every OBSERVE_FLUSH_SECONDS.
                async with session.get(server.base + "/metrics") as r:
                    samples = scrape(await r.text())
                return value(samples, "coupons_http_requests_total", route="/api/v2/coupons",
                             method="GET", status="200") == 30

            await wait_for(all_recorded, 10, "both workers' request counts flushed")
            # Several scrapes land on either worker; each shows the sum over both.
            pages = []
            for _ in range(6):
                async with session.get(server.base + "/metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain")
                    pages.append(scrape(await r.text()))
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit(STOP_TIMEOUT) == 0, server.output()

    route = "/api/v2/coupons"
    for samples in pages:
        assert value(samples, "coupons_http_requests_total", route=route, method="GET",
                     status="200") == 30
        assert value(samples, "coupons_http_request_duration_seconds_count", route=route) == 30
        hits = value(samples, "coupons_cache_requests_total", outcome="hit")
        local = value(samples, "coupons_cache_requests_total", outcome="local")
        misses = value(samples, "coupons_cache_requests_total", outcome="miss")
        coalesced = value(samples, "coupons_cache_requests_total", outcome="coalesced")
        assert local + hits + misses + coalesced == 30 and 3 <= misses <= 6
        assert value(samples, "coupons_cache_fills_total", result="stored") == misses
        assert value(samples, "coupons_db_pool_max_connections", pool="primary") == 20
        assert value(samples, "coupons_db_pool_connections_in_use", pool="primary") == 0
        assert value(samples, "coupons_db_page_reads_total", server="primary",
                     reason="no_replica") == misses
        assert value(samples, "coupons_listener_connects_total") == 2
        assert value(samples, "coupons_cache_invalidations_total", source="member") == 2
        trusted = [v for (name, _), v in samples.items() if name == "coupons_cache_trusted"]
        assert trusted == [1.0, 1.0]

    output = server.output()
    lines = log_lines(server)
    assert lines and len(lines) == len(output.strip().splitlines()), "every line is JSON"
    requests = {line["request_id"]: line for line in lines if line.get("msg") == "request"}
    first = requests["m-0"]
    assert first["route"] == route and first["method"] == "GET" and first["status"] == 200
    assert first["cache"] == "miss" and first["uniacid"] == 1
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    # The member as a keyed hash: stable, 16 hex digits, never the id itself.
    assert len(first["member"]) == 16 and int(first["member"], 16) >= 0
    assert {requests[f"m-{i}"]["member"] for i in range(30)} == {first["member"]}
    # From Redis, or from the local layer if the same worker served this page before.
    assert requests["m-3"]["cache"] in ("hit", "local")
    # Started together, the workers flushed once and share one epoch: a second flush (one
    # worker read the epoch after the other had claimed it) split the cache between them.
    trusted_lines = [line for line in lines if line.get("msg", "").startswith("cache trusted:")]
    assert sorted(line["pid"] for line in trusted_lines) == sorted(
        {line["pid"] for line in trusted_lines}), "each worker trusted its cache once"
    assert len({line["epoch"] for line in trusted_lines}) == 1, trusted_lines
    assert sorted(line["msg"] for line in trusted_lines) == [
        "cache trusted: flush", "cache trusted: handover"]
    # Secrets never reach the log: not the JWT secret, not a token, not the service token.
    assert SECRET not in output and "Bearer" not in output and "eyJ" not in output
    settings_lines = [line for line in lines if line.get("msg") == "effective settings"]
    assert len(settings_lines) == 1, "logged once, by the parent, at start"
    logged_settings = settings_lines[0]["settings"]
    assert logged_settings["auth_jwt_secret"] == "***"
    assert logged_settings["shutdown_grace_seconds"] == 10.0


def test_rate_limit_counter_is_defined() -> None:
    """The rate limiter increments it; here, that it exists with its label and counts."""
    from prometheus_client import REGISTRY

    from service.observe import metrics

    name, labels = "coupons_rate_limit_rejections_total", {"scope": "member"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    metrics.RATE_LIMIT_REJECTIONS.labels("member").inc()
    assert REGISTRY.get_sample_value(name, labels) == before + 1
