"""Never stale, judged from outside: real `serve` processes under readers and one writer.

The service promises that a page read after a write committed reflects it. This is checked
black-box: `python -m service serve --workers N` (N = 1 and 2) as a subprocess, on a database of
the test's own (migrated), AUTH_JWT_SECRET / INTERNAL_SERVICE_TOKEN of the suite, APP_ENV
development, default settings otherwise (but see "Rate limits"). Readers (asyncio tasks, one
aiohttp session over 127.0.0.1, three per member so that the process-local layer stays hot)
poll the pages the writes affect as fast as they can: GETs through the mall's router
(`/addons/yun_shop/api.php?i=..&type=17&route=..&client=work`, the fast path of local hits) and
POST forms with `status_request` on the plugin route; for six members of tenant 1, one of
tenant 2, and a WeCom contact read with staff tokens (no `member_id`, `user_id=<contact>`).
One writer (one asyncpg connection, autocommit, one statement at a time, 40-100 ms apart) cycles
through every invalidation source: INSERT (get_time = now) / UPDATE used = 1 / DELETE of member
coupons; coupon definition edits (`name`, `storenames`); the tenant's `coupon_transfer`; store
and goods renames (names of a use_type 9 coupon's `use_conditions`) and hotel renames (use_type
7, yz_coupon_hotel); the contact re-pointed to another member; the use API
(`POST /internal/member-coupons/{id}/use`, its commit time = when its 200 came back); a TRUNCATE
of yz_coupon_hotel at 80 % of the run (then its rows come back); and the clock: time_limit 1
coupons whose end passes during the run.

The judge trusts nothing the service says about time (X-Cache is only reported). The writer is
the only writer, so after commit k the database is in state S_k until commit k + 1; right after
each commit the writer reads S_k with SQL of its own (not the service's statement), and a small
Python model turns a state into what each page must show: a signature of the ids in order, their
names and `api_limit`, `total` and `set.transfer`. A read sent at s (time.monotonic()) and
answered at r is fresh if it shows the page of some S_j with j at least the last write whose
commit returned before s - 100 ms and at most the last write that had started before r (a read
in flight may show either side of a write). For the clock, a coupon ending at E (a whole second)
is unused while the server's whole-second now <= E, so a read sent after E + 1 s + 100 ms on the
test's wall clock (time.time()) must show it expired, and one answered before E + 1 may not. A
contact's page is judged in two parts, both of which must be fresh: the member the contact is
(the mapping) and that member's page. A read showing only versions that stopped being true more
than 100 ms before it was sent is stale: the test fails, printing the first and the latest ones
with their lateness. A read that matches no possible version ("unexplained") fails too, as do
5xx answers and any status but 200 and 429; 429s are not judged, only counted (at most 1 %).

Rate limits stay on, as by default, but RATE_LIMIT_MEMBER_PER_MINUTE / _BURST and
RATE_LIMIT_STAFF_PER_MINUTE / _BURST are set high (LIMITS): several readers per member polling
as fast as they can (thousands of reads a second) is the point, far beyond 300/min per member.
Each run also gets a CACHE_PREFIX of its own, so nothing another test left in the session's
Redis is read.

Sizes: a case runs for FRESHNESS_SECONDS (default 12; the fault test FRESHNESS_FAULT_SECONDS,
default 16) and until FRESHNESS_READS reads (default 3000) were judged, at most ten times the
seconds. A long run: FRESHNESS_SECONDS=60 FRESHNESS_READS=100000. A summary is printed
(pytest -s) and, with FRESHNESS_REPORT=<file>, appended there as one JSON line per case: judged
and stale reads, the worst lateness, and commit-to-visible per source, p50/p99/max: "first" is
the send time of the first read of an affected page that reflects the write minus its commit
time (for the clock, minus the moment E + 1); "all" is the same for the last affected page to
show it (bounded by how often the least polled of them is read).

The fault test (FRESHNESS_FAULT_WORKERS, default "2"; "1,2" for both) runs the same readers and
writer on a PostgreSQL and a Redis of its own while, in turn: (a) Redis is killed (SIGKILL) and
started again 1.5 s later; (b) the service's LISTEN connections are terminated
(pg_terminate_backend of the backends without application_name whose last statement was LISTEN
or the listener's heartbeat `SELECT 1;`: the pool's are named coupons-sidebar); (c) PostgreSQL is
stopped (fast) and started again 1 s later, the writer paused around it so that every commit
time is known. Expected: no stale read, and no 5xx except 503s from requests in flight between
the stop and PG_503_GRACE after the start returned.

FRESHNESS_SERVICE_ENV="NAME=value,..." adds settings to the served processes (for instance
LOCAL_CACHE_ENABLED=false, to see the judge pass on the Redis layer alone).

The machinery (the model, the arrangement, the readers, the writer, the judge, a run and its
report) is in tests/support/freshness/; the knobs above are read in its knobs.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from tests.support.databases import fresh_database
from tests.support.freshness.knobs import FAULT_SECONDS, FAULT_WORKERS, PG_503_GRACE, SECONDS
from tests.support.freshness.report import report, verdict_failures
from tests.support.freshness.run import Outcome, Run, Window, run_async, scenario
from tests.support.processes import redis_process, restartable_postgres


@pytest.mark.parametrize("workers", [1, 2])
def test_reads_are_never_stale(workers: int, database_url: str, redis_url: str,
                               tmp_path: Path) -> None:
    async def main() -> Outcome:
        async with fresh_database(database_url, prefix="fresh") as url:
            return await scenario("steady", url, redis_url, workers, tmp_path, seconds=SECONDS,
                                  clock_at=_clock_fractions(SECONDS))

    outcome = run_async(main())
    summary = report(outcome, [])
    failures = verdict_failures(outcome, summary, [])
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def _clock_fractions(seconds: float) -> tuple[float, ...]:
    count = max(2, min(6, int(seconds // 5)))
    return tuple((k + 1) / (count + 1) for k in range(count))


# The service names its LISTEN connections (service/cache/listener.py, APPLICATION_NAME).
LISTENERS = """
SELECT pid, pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND application_name = 'coupons-sidebar-listener'
"""


async def faults_in_turn(run: Run) -> None:
    """(a) Redis killed, restarted 1.5 s later; (b) the LISTEN connections terminated;
    (c) PostgreSQL stopped (fast), started again 1 s later, the writer paused around it."""
    assert run.redis is not None and run.pg is not None
    await run.until(0.15)
    begin = time.monotonic()
    run.redis.kill()
    await asyncio.sleep(1.5)
    run.redis.start()
    await run.redis.wait_up()
    run.windows.append(Window("redis killed", begin, time.monotonic()))

    await run.until(0.40)
    begin = time.monotonic()
    admin = await asyncpg.connect(run.pg.url,
                                  server_settings={"application_name": "freshness-admin"})
    try:
        killed = await admin.fetch(LISTENERS)
    finally:
        await admin.close()
    run.windows.append(Window("LISTEN terminated", begin, time.monotonic(),
                              f"{sum(r['terminated'] for r in killed)} connection(s)"))
    assert sum(r["terminated"] for r in killed) == run.workers, killed

    await run.until(0.62)
    await run.writer.pause()
    begin = time.monotonic()
    await asyncio.to_thread(run.pg.stop, "fast")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(run.pg.start)
    back = time.monotonic()
    run.windows.append(Window("postgres restarted", begin, back, "down ~1 s"))
    await run.writer.resume(reconnect=True)


@pytest.mark.parametrize("workers", FAULT_WORKERS)
def test_reads_are_never_stale_through_faults(workers: int, tmp_path: Path) -> None:
    async def main() -> Outcome:
        with (restartable_postgres(tmp_path / "pg") as pg,
              redis_process(tmp_path / "redis") as redis):
            await redis.wait_up()
            return await scenario("faults", pg.url, redis.url, workers, tmp_path,
                                  seconds=FAULT_SECONDS, clock_at=(0.25, 0.45, 0.8),
                                  faults=faults_in_turn, pg=pg, redis=redis)

    outcome = run_async(main())
    restart = next(w for w in outcome.windows if w.label == "postgres restarted")
    allowed = [r for r in outcome.reads if r.status == 503
               and r.r >= restart.begin and r.s <= restart.end + PG_503_GRACE]
    summary = report(outcome, allowed)
    failures = verdict_failures(outcome, summary, allowed)
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
