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
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import math
import os
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import orjson
import pytest
import uvloop

from service.db.migrations import migrate
from tests.conftest import SECRET, SERVICE_TOKEN, token_for
from tests.support.processes import (
    RedisProcess,
    RestartablePostgres,
    cli_env,
    fresh_database,
    own_redis,
    restartable_postgres,
    serving,
)

ROUTE = "plugin.wechat-chat-sidebar.frontend.controller.customer.customer.couponsOfMemberByStatusV2"
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
TENANT1 = (11, 12, 13, 14, 15, 16)
TENANT2 = (21,)
UNIACID = {**dict.fromkeys(TENANT1, 1), **dict.fromkeys(TENANT2, 2)}
CONTACT = "wm_fresh"                     # the WeCom contact re-pointed between members
CONTACT_STAFF = ("staff-c1", "staff-c2")  # both follow it (one UPDATE re-points both rows)
CONTACT_TARGET = "contact"
STORES = (501, 502)
GOODS = 601
HOTELS = (701, 702)
# coupon_type -> use_types it selects (docs/CONTRACT.md), for the ones read here.
TYPE_USE: dict[int, tuple[int, ...] | None] = {0: None, 2: (4, 5), 3: (6, 7), 9: (9,)}
NEVER = math.inf
READERS_START = 0.7          # seconds from choosing the clock's ends to the first read, about

Page = tuple[Any, int, int, int, int]   # target (uid or CONTACT_TARGET), status, type, page, size
Sig = tuple[bool, int, tuple[tuple[int, str, str], ...]]


# --- the model: states read with SQL of our own, pages computed from them -------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    id: int
    used: int
    get_time: dt.datetime
    end: int | None        # unix seconds (time_limit 1), None: never expires
    name: str
    use_type: int
    api_limit: str


@dataclasses.dataclass(frozen=True, slots=True)
class State:
    members: dict[int, tuple[Row, ...]]
    transfer: dict[int, bool]
    contact: int


SNAPSHOT_ROWS = """
SELECT mc.uid, mc.id, mc.used, mc.get_time,
       CASE WHEN c.time_limit = 1 THEN floor(extract(epoch FROM c.time_end))::bigint END AS end_s,
       c.name, c.use_type,
       CASE c.use_type
         WHEN 0 THEN '商城通用'
         WHEN 4 THEN '适用于下列门店: ' || coalesce(array_to_string(c.storenames, ','), '')
         WHEN 7 THEN '适用于下列酒店: ' || coalesce((
             SELECT string_agg(h.hotel_name, ',' ORDER BY h.id)
             FROM yz_coupon_hotel AS ch JOIN yz_hotel AS h ON h.id = ch.hotel_id
             WHERE ch.coupon_id = c.id AND h.uniacid = c.uniacid), '')
         WHEN 9 THEN coalesce(nullif(concat_ws('、',
             '门店:' || (SELECT string_agg(s.store_name, ',' ORDER BY s.id) FROM yz_store AS s
                        WHERE s.uniacid = c.uniacid AND s.id IN (
                            SELECT x::bigint FROM jsonb_array_elements_text(
                                c.use_conditions -> 'store_ids') AS x)),
             '商品:' || (SELECT string_agg(g.title, ',' ORDER BY g.id) FROM yz_goods AS g
                        WHERE g.uniacid = c.uniacid AND g.id IN (
                            SELECT x::bigint FROM jsonb_array_elements_text(
                                c.use_conditions -> 'good_ids') AS x))), ''), '无适用范围')
       END AS api_limit
FROM yz_member_coupon AS mc
JOIN yz_coupon AS c ON c.id = mc.coupon_id AND c.uniacid = mc.uniacid
WHERE mc.uid = ANY($1::bigint[]) AND mc.is_member_deleted = 0
"""
SNAPSHOT_SETTINGS = """
SELECT (SELECT coupon_transfer FROM yz_tenant_setting WHERE uniacid = 1) AS t1,
       (SELECT coupon_transfer FROM yz_tenant_setting WHERE uniacid = 2) AS t2,
       (SELECT min(uid) FROM yz_wecom_contact WHERE uniacid = 1 AND external_userid = $1) AS c
"""


async def snapshot(conn: asyncpg.Connection, previous: State | None) -> State:
    rows = await conn.fetch(SNAPSHOT_ROWS, list(UNIACID))
    settings = await conn.fetchrow(SNAPSHOT_SETTINGS, CONTACT)
    grouped: dict[int, list[Row]] = {uid: [] for uid in UNIACID}
    for r in rows:
        grouped[r["uid"]].append(Row(r["id"], r["used"], r["get_time"], r["end_s"], r["name"],
                                     r["use_type"], r["api_limit"]))
    members = {}
    for uid, found in grouped.items():
        found.sort(key=lambda row: row.id)
        rows_now = tuple(found)
        # Unchanged members keep the previous tuple: the page model memoises on it.
        if previous is not None and previous.members[uid] == rows_now:
            rows_now = previous.members[uid]
        members[uid] = rows_now
    return State(members, {1: bool(settings["t1"]), 2: bool(settings["t2"])}, settings["c"])


def in_tab(row: Row, status: int, now_s: int) -> bool:
    if status == 3:
        return row.used == 1
    if row.used:
        return False
    unused = row.end is None or row.end >= now_s   # expired once now > end (whole seconds)
    return unused if status == 1 else not unused


class Model:
    """What a page must show in a state at a given whole second, memoised."""

    def __init__(self) -> None:
        self._memo: dict[tuple, Sig] = {}

    def page(self, state: State, page: Page, now_s: int) -> Sig:
        target, status, coupon_type, number, size = page
        uid = state.contact if target == CONTACT_TARGET else target
        rows = state.members[uid]
        transfer = state.transfer[UNIACID[uid]]
        key = (id(rows), transfer, status, coupon_type, number, size, now_s)
        found = self._memo.get(key)
        if found is None:
            uses = TYPE_USE[coupon_type]
            tab = [r for r in rows if in_tab(r, status, now_s)
                   and (uses is None or r.use_type in uses)]
            tab.sort(key=lambda r: (r.get_time, r.id), reverse=True)
            lo = (number - 1) * size
            found = (transfer, len(tab),
                     tuple((r.id, r.name, r.api_limit) for r in tab[lo:lo + size]))
            self._memo[key] = found
        return found


def observed(body: bytes) -> Sig | None:
    try:
        data = orjson.loads(body)["data"]
        return (data["set"]["transfer"], data["total"],
                tuple((c["id"], c["belongs_to_coupon"]["name"], c["api_limit"])
                      for c in data["data"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


# --- the arrangement ------------------------------------------------------------------------------


@dataclasses.dataclass
class World:
    plain: int                 # use_type 0, renamed by the coupon source
    store4: int                # use_type 4, its storenames edited by the coupon source
    hotel7: int                # use_type 7, yz_coupon_hotel -> yz_hotel names
    cond9: int                 # use_type 9, use_conditions store_ids / good_ids
    expired: int               # time_limit 1, ended long ago: the expired tab
    plain2: int                # tenant 2's
    clock: dict[int, int]      # member -> end E (unix seconds) of its clock coupon
    ends: list[int]


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def add_coupon(conn: asyncpg.Connection, uniacid: int, name: str, *, use_type: int = 0,
                     storenames: list[str] | None = None, conditions: dict | None = None,
                     time_limit: int = 0, time_start: dt.datetime | None = None,
                     time_end: dt.datetime | None = None) -> int:
    return await conn.fetchval(
        "INSERT INTO yz_coupon (uniacid, name, coupon_method, deduct, enough, use_type,"
        " storenames, use_conditions, time_limit, time_start, time_end)"
        " VALUES ($1, $2, 1, 10, 0, $3, $4, $5::jsonb, $6, $7, $8) RETURNING id",
        uniacid, name, use_type, storenames,
        None if conditions is None else json.dumps(conditions), time_limit, time_start, time_end)


async def add_member_coupon(conn: asyncpg.Connection, uid: int, coupon_id: int,
                            get_time: dt.datetime, used: int = 0) -> int:
    return await conn.fetchval(
        "INSERT INTO yz_member_coupon (uniacid, uid, coupon_id, used, use_time, get_time)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        UNIACID[uid], uid, coupon_id, used, get_time if used else None, get_time)


async def arrange(conn: asyncpg.Connection, ends: list[int]) -> World:
    now = time.time()
    await conn.execute(
        "INSERT INTO yz_tenant_setting (uniacid, coupon_transfer) VALUES (1, false), (2, true)")
    await conn.executemany("INSERT INTO yz_member (uid, uniacid) VALUES ($1, $2)",
                           list(UNIACID.items()))
    await conn.executemany("INSERT INTO yz_store (id, uniacid, store_name) VALUES ($1, 1, $2)",
                           [(STORES[0], "北门店"), (STORES[1], "南门店")])
    await conn.execute("INSERT INTO yz_goods (id, uniacid, title) VALUES ($1, 1, '招牌蛋糕')",
                       GOODS)
    await conn.executemany("INSERT INTO yz_hotel (id, uniacid, hotel_name) VALUES ($1, 1, $2)",
                           [(HOTELS[0], "湖景酒店"), (HOTELS[1], "山景酒店")])
    world = World(
        plain=await add_coupon(conn, 1, "平台券"),
        store4=await add_coupon(conn, 1, "门店券", use_type=4, storenames=["门店甲", "门店乙"]),
        hotel7=await add_coupon(conn, 1, "酒店券", use_type=7),
        cond9=await add_coupon(conn, 1, "商品和门店券", use_type=9, conditions={
            "is_all_store": 0, "store_ids": list(STORES), "is_all_good": 0,
            "good_ids": [GOODS]}),
        expired=await add_coupon(conn, 1, "过期券", time_limit=1, time_start=_ts(now - 90 * 86400),
                                 time_end=_ts(now - 30 * 86400)),
        plain2=await add_coupon(conn, 2, "二号商户券"),
        clock={}, ends=sorted(ends),
    )
    await conn.executemany("INSERT INTO yz_coupon_hotel (coupon_id, hotel_id) VALUES ($1, $2)",
                           [(world.hotel7, h) for h in HOTELS])
    for n, uid in enumerate(TENANT1):
        base = now - 3600 * (n + 2)
        for k, coupon in enumerate((world.plain, world.store4, world.hotel7, world.cond9,
                                    world.plain, world.expired)):
            await add_member_coupon(conn, uid, coupon, _ts(base + 60 * k))
        for k in range(2):
            await add_member_coupon(conn, uid, world.plain, _ts(base - 600 * (k + 1)), used=1)
    for uid in TENANT2:
        for k in range(3):
            await add_member_coupon(conn, uid, world.plain2, _ts(now - 7200 + 60 * k))
        await add_member_coupon(conn, uid, world.plain2, _ts(now - 9000), used=1)
    # The clock: one coupon per end, each held by a member of tenant 1.
    for n, end in enumerate(world.ends):
        uid = TENANT1[n % len(TENANT1)]
        coupon = await add_coupon(conn, 1, f"限时券{n}", time_limit=1,
                                  time_start=_ts(now - 86400), time_end=_ts(end))
        await add_member_coupon(conn, uid, coupon, _ts(now - 1800 + n))
        world.clock[uid] = end
    await conn.executemany(
        "INSERT INTO yz_wecom_contact (uniacid, external_userid, staff_userid, uid)"
        " VALUES (1, $1, $2, $3)", [(CONTACT, staff, TENANT1[0]) for staff in CONTACT_STAFF])
    return world


# --- readers --------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Read:
    page: Page
    method: str
    s: float            # monotonic, before the request was sent
    sw: float           # time.time() then
    r: float            # monotonic, once the whole answer was read
    rw: float
    status: int
    sig: Sig | None
    cache: str | None   # X-Cache, for the report only (never judged on)


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    page: Page
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def plans(base: str, token_ttl: int) -> list[list[Request]]:
    """Per reader the requests it cycles through; each reader has a token (staff sub) of its
    own, several readers per member, every reader on few pages so that they stay hot."""
    counter = itertools.count(1)
    now = int(time.time())

    def token(uid: int | None, staff: str | None = None, uniacid: int = 1) -> dict[str, str]:
        sub = staff or f"reader-{next(counter)}"
        return {"Authorization": "Bearer " + token_for(uniacid, uid, staff=sub, ttl=token_ttl,
                                                       now=now)}

    def get(headers: dict[str, str], target: Any, coupon_type: int = 0, number: int = 1,
            size: int = 15) -> Request:
        uid = TENANT1[0] if target == CONTACT_TARGET else target
        query = {"i": UNIACID[uid], "type": 17, "route": ROUTE, "client": "work",
                 "page": number, "coupon_type": coupon_type}
        if size != 15:
            query["pagesize"] = size
        if target == CONTACT_TARGET:
            query["user_id"] = CONTACT
        return Request((target, 1, coupon_type, number, size), "GET",
                       f"{base}/addons/yun_shop/api.php?{urlencode(query)}", headers, None)

    def post(headers: dict[str, str], target: Any, status: int, coupon_type: int = 0,
             number: int = 1, size: int = 15) -> Request:
        form = {"client": "work", "type": 17, "page": number, "coupon_type": coupon_type,
                "status_request": status, "pagesize": size}
        if target == CONTACT_TARGET:
            form["user_id"] = CONTACT
        return Request((target, status, coupon_type, number, size), "POST", f"{base}/{ROUTE}",
                       {**headers, **FORM}, urlencode(form).encode())

    readers: list[list[Request]] = []
    for uid in TENANT1:
        hot, mixed, tabs = token(uid), token(uid), token(uid)
        readers.append([get(hot, uid)])
        readers.append([post(mixed, uid, 1), get(mixed, uid), post(mixed, uid, 3)])
        readers.append([get(tabs, uid, 9), post(tabs, uid, 2), get(tabs, uid, 3),
                        get(tabs, uid, 0, 2, 5), get(tabs, uid, 2)])
    one, two = token(None, CONTACT_STAFF[0]), token(None, CONTACT_STAFF[1])
    readers.append([get(one, CONTACT_TARGET)])
    readers.append([post(two, CONTACT_TARGET, 1), post(two, CONTACT_TARGET, 3)])
    for uid in TENANT2:
        other = token(uid, uniacid=2)
        readers.append([get(other, uid), post(other, uid, 3)])
    return readers


async def reader(session: aiohttp.ClientSession, requests: list[Request], reads: list[Read],
                 errors: list[tuple[float, str]], stop: asyncio.Event,
                 canon: dict[Sig, Sig]) -> None:
    for request in itertools.cycle(requests):
        if stop.is_set():
            return
        s, sw = time.monotonic(), time.time()
        try:
            async with session.request(request.method, request.url, headers=request.headers,
                                       data=request.body) as resp:
                body = await resp.read()
                status, cache = resp.status, resp.headers.get("X-Cache")
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors.append((s, type(exc).__name__))
            await asyncio.sleep(0.02)
            continue
        r, rw = time.monotonic(), time.time()
        sig = observed(body) if status == 200 else None
        if sig is not None:
            sig = canon.setdefault(sig, sig)   # one copy of each version: long runs stay small
        reads.append(Read(request.page, request.method, s, sw, r, rw, status, sig, cache))
        if status != 200:
            await asyncio.sleep(0.02)   # a 429 or a 503: no hot loop of refusals


# --- the writer -----------------------------------------------------------------------------------

# One pass of the writer's cycle; member-level sources take the next member in turn.
CYCLE = ("insert", "used", "coupon", "delete", "use_api", "setting", "insert", "store", "delete",
         "used", "contact", "insert", "hotel", "use_api", "delete", "goods")
MEMBER_SOURCES = {"insert", "used", "delete", "use_api"}


class Writer:
    """The only writer: one statement at a time, autocommit; after each commit, the state."""

    def __init__(self, url: str, base: str, world: World, seconds: float, rng: random.Random):
        self.url = url
        self.base = base
        self.world = world
        self.seconds = seconds
        self.rng = rng
        self.conn: asyncpg.Connection | None = None
        self.session: aiohttp.ClientSession | None = None
        # Index 0: the arranged state, true since before the first read.
        self.states: list[State] = []
        self.starts: list[float] = [-NEVER]
        self.commits: list[float] = [-NEVER]
        self.sources: list[str] = ["arranged"]
        self.details: list[str] = [""]
        self.failures: list[str] = []
        self.use_api_statuses: Counter[int] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.busy = asyncio.Lock()
        self.members = itertools.cycle((*TENANT1, *TENANT2))
        self.inserts = itertools.cycle((world.plain, world.cond9, world.hotel7, world.store4))
        self.renames = itertools.count(1)
        self.hotel_linked = True
        self.truncated = False
        self.t0 = 0.0

    async def connect(self) -> None:
        self.conn = await asyncpg.connect(
            self.url, server_settings={"application_name": "freshness-writer"})

    async def open(self) -> None:
        await self.connect()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.states.append(await snapshot(self.conn, None))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 5)
            if not self.conn.is_closed():
                self.conn.terminate()

    async def pause(self) -> None:
        self.gate.clear()
        async with self.busy:
            pass

    async def resume(self, reconnect: bool = False) -> None:
        if reconnect:
            old = self.conn
            if old is not None and not old.is_closed():
                old.terminate()
            await self.connect()
        self.gate.set()

    async def run(self, stop: asyncio.Event) -> None:
        self.t0 = time.monotonic()
        for source in itertools.cycle(CYCLE):
            await self.gate.wait()
            if stop.is_set():
                return
            if (not self.truncated
                    and time.monotonic() - self.t0 > 0.8 * self.seconds):
                source = "truncate"
            async with self.busy:
                if stop.is_set():
                    return
                await self.step(source)
            await asyncio.sleep(self.rng.uniform(0.04, 0.10))

    def _plan(self, source: str) -> tuple[str, str, str, tuple]:
        """(source, detail, sql or "use_api", args) for the state as it is now."""
        state = self.states[-1]
        rng = self.rng
        if source in MEMBER_SOURCES:
            uid = next(self.members)
            rows = state.members[uid]
            free = [r for r in rows if r.used == 0 and r.end is None]  # not clock, not expired
            used = [r for r in rows if r.used == 1]
            if source in ("used", "use_api") and len(free) < 3:
                source = "insert"
            elif source == "insert" and len(free) > 9:
                source = "used"
            if source == "delete":
                pool = used if len(used) > 2 else free if len(free) > 3 else []
                if not pool:
                    source = "insert"
                else:
                    victim = rng.choice(pool)
                    return (source, f"member {uid} coupon {victim.id}",
                            "DELETE FROM yz_member_coupon WHERE id = $1", (victim.id,))
            if source == "insert":
                coupon = self.world.plain2 if UNIACID[uid] == 2 else next(self.inserts)
                return (source, f"member {uid} coupon def {coupon}",
                        "INSERT INTO yz_member_coupon (uniacid, uid, coupon_id, get_time)"
                        " VALUES ($1, $2, $3, now())", (UNIACID[uid], uid, coupon))
            victim = rng.choice(free)
            if source == "use_api":
                return (source, f"member {uid} coupon {victim.id}", "use_api", (victim.id,))
            return (source, f"member {uid} coupon {victim.id}",
                    "UPDATE yz_member_coupon SET used = 1, use_time = now() WHERE id = $1",
                    (victim.id,))
        n = next(self.renames)
        if source == "coupon":
            if n % 2:
                return (source, f"name of {self.world.plain}",
                        "UPDATE yz_coupon SET name = $1, updated_at = now() WHERE id = $2",
                        (f"平台券{n}", self.world.plain))
            return (source, f"storenames of {self.world.store4}",
                    "UPDATE yz_coupon SET storenames = $1, updated_at = now() WHERE id = $2",
                    ([f"门店{n}", "门店乙"], self.world.store4))
        if source == "setting":
            return (source, "tenant 1 coupon_transfer",
                    "UPDATE yz_tenant_setting SET coupon_transfer = NOT coupon_transfer"
                    " WHERE uniacid = 1", ())
        if source == "store":
            return (source, f"store {STORES[0]}",
                    "UPDATE yz_store SET store_name = $1 WHERE id = $2", (f"北门店{n}", STORES[0]))
        if source == "goods":
            return (source, f"goods {GOODS}",
                    "UPDATE yz_goods SET title = $1 WHERE id = $2", (f"招牌蛋糕{n}", GOODS))
        if source == "hotel":
            if not self.hotel_linked:
                self.hotel_linked = True
                return (source, "yz_coupon_hotel rows again",
                        "INSERT INTO yz_coupon_hotel (coupon_id, hotel_id)"
                        " SELECT $1, unnest($2::bigint[])", (self.world.hotel7, list(HOTELS)))
            return (source, f"hotel {HOTELS[0]}",
                    "UPDATE yz_hotel SET hotel_name = $1 WHERE id = $2",
                    (f"湖景酒店{n}", HOTELS[0]))
        if source == "contact":
            others = [uid for uid in TENANT1 if uid != state.contact]
            uid = others[n % len(others)]
            return (source, f"{CONTACT} -> member {uid}",
                    "UPDATE yz_wecom_contact SET uid = $1 WHERE uniacid = 1"
                    " AND external_userid = $2", (uid, CONTACT))
        if source == "truncate":
            self.truncated = True
            self.hotel_linked = False
            return (source, "yz_coupon_hotel", "TRUNCATE yz_coupon_hotel", ())
        raise AssertionError(source)

    async def step(self, source: str) -> None:
        source, detail, sql, args = self._plan(source)
        assert self.conn is not None and self.session is not None
        start = time.monotonic()
        try:
            if sql == "use_api":
                async with self.session.post(
                        f"{self.base}/internal/member-coupons/{args[0]}/use",
                        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as resp:
                    await resp.read()
                    self.use_api_statuses[resp.status] += 1
                    if resp.status != 200:
                        self.failures.append(f"use API answered {resp.status} for {detail}")
            else:
                await self.conn.execute(sql, *args)
            commit = time.monotonic()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, aiohttp.ClientError,
                TimeoutError) as exc:
            # Whether it committed is unknown: the state says, and the commit is taken as late
            # as possible (judging can only get more lenient).
            self.failures.append(f"{source} ({detail}) failed: {type(exc).__name__}")
            if self.conn.is_closed():
                await self.connect()
            commit = None
        state = await snapshot(self.conn, self.states[-1])
        if commit is None:
            if state == self.states[-1]:
                return
            commit = time.monotonic()
        self.states.append(state)
        self.starts.append(start)
        self.commits.append(commit)
        self.sources.append(source)
        self.details.append(detail)


# --- the judge ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stale:
    read: Read
    lateness: float
    missed: str      # the source of the write (or "clock") the read did not reflect
    detail: str
    expected: Sig


class Judge:
    """See the module docstring. States j = 0..K: S_j held from the start of write j (it may be
    visible from then on) to the commit return of write j + 1 (it must be gone 100 ms later).
    The clock splits time into classes at every end E: class i is the seconds after the i-th
    end, seen from wall time E + 1 on. A contact's page is judged in two parts, each of which
    must be fresh: which member the contact was (the mapping) and that member's page."""

    def __init__(self, writer: Writer, world: World, reads: list[Read], offset: float):
        self.w = writer
        self.model = Model()
        self.states = writer.states
        self.K = len(self.states) - 1
        self.starts = writer.starts[1:]      # starts[k - 1]: write k
        self.commits = writer.commits[1:]
        self.bounds = world.ends
        self.reps = ([self.bounds[0]] + [b + 1 for b in self.bounds]) if self.bounds else [0]
        self.cls_begin = [-NEVER] + [b + 1.0 for b in self.bounds]
        self.cls_end = [b + 1.0 for b in self.bounds] + [NEVER]
        self.offset = offset                 # time.time() - time.monotonic()
        self.reads = reads
        self.pages = sorted({r.page for r in reads}, key=repr)
        # page (of a member) -> sig -> class -> ascending states
        self._index: dict[Page, dict[Sig, dict[int, list[int]]]] = {}
        # The contact: per member, the states it was that member in, and for each state the
        # first later state where it is another member.
        contacts = [state.contact for state in self.states]
        self.contact_states: dict[int, list[int]] = defaultdict(list)
        for j, uid in enumerate(contacts):
            self.contact_states[uid].append(j)
        self.contact_change: list[int | None] = [None] * len(contacts)
        following: int | None = None
        for j in range(len(contacts) - 1, -1, -1):
            self.contact_change[j] = following
            if j > 0 and contacts[j - 1] != contacts[j]:
                following = j

    def index(self, page: Page) -> dict[Sig, dict[int, list[int]]]:
        per = self._index.get(page)
        if per is None:
            per = {}
            for j, state in enumerate(self.states):
                for i, rep in enumerate(self.reps):
                    per.setdefault(self.model.page(state, page, rep), {}).setdefault(
                        i, []).append(j)
            self._index[page] = per
        return per

    def views(self, page: Page) -> list[tuple[Page, int | None]]:
        """The member pages a read of `page` may show: itself, or for the contact the same
        page of each member it may have been."""
        if page[0] != CONTACT_TARGET:
            return [(page, None)]
        return [((uid, *page[1:]), uid) for uid in TENANT1]

    def k_hi(self, read: Read) -> int:
        """The last state whose write had started before the answer arrived."""
        return bisect.bisect_left(self.starts, read.r)

    def _until(self, j: int | None) -> float:
        """When the state (or contact interval) ending before state j stopped being true:
        the commit return of write j; never, if there is no such write."""
        return NEVER if j is None or j > self.K else self.commits[j - 1]

    def lateness(self, read: Read) -> tuple[float, str, int, int] | None:
        """The most favourable reading of what `read` showed: (lateness, what made it late:
        "state" | "clock" | "contact", the write it missed (state index), the class); None if
        it matches nothing possible."""
        if read.sig is None:
            return None
        hi = self.k_hi(read)
        best = None
        for view, uid in self.views(read.page):
            per = self.index(view).get(read.sig)
            if not per:
                continue
            by_contact, contact_missed = -NEVER, 0
            if uid is not None:
                states = self.contact_states.get(uid, [])
                pos = bisect.bisect_right(states, hi) - 1
                if pos < 0:
                    continue
                change = self.contact_change[states[pos]]
                by_contact, contact_missed = read.s - self._until(change), change or 0
            for i, states in per.items():
                if self.cls_begin[i] > read.rw:
                    continue
                pos = bisect.bisect_right(states, hi) - 1
                if pos < 0:
                    continue
                j = states[pos]
                parts = ((read.s - self._until(j + 1), "state", j + 1),
                         (read.sw - self.cls_end[i], "clock", 0),
                         (by_contact, "contact", contact_missed))
                late, why, missed = max(parts, key=lambda part: part[0])
                if best is None or late < best[0]:
                    best = (late, why, missed, i)
        return best

    def reflects(self, read: Read, first_state: int, first_class: int) -> bool:
        """Whether `read` shows its page as of state `first_state` (and class `first_class`)
        or later."""
        if read.sig is None:
            return False
        hi = self.k_hi(read)
        for view, uid in self.views(read.page):
            per = self.index(view).get(read.sig)
            if not per:
                continue
            if uid is not None:
                states = self.contact_states.get(uid, [])
                pos = bisect.bisect_left(states, first_state)
                if pos == len(states) or states[pos] > hi:
                    continue
            for i, states in per.items():
                if i < first_class or self.cls_begin[i] > read.rw:
                    continue
                pos = bisect.bisect_left(states, first_state)
                if pos < len(states) and states[pos] <= hi:
                    return True
        return False

    def class_at(self, wall: float) -> int:
        return bisect.bisect_right(self.cls_begin, wall) - 1

    def judge(self) -> dict[str, Any]:
        judged, stale, unexplained = 0, [], []
        closest = -NEVER   # the latest a read judged fresh was (how near the 100 ms it came)
        for read in self.reads:
            if read.status != 200:
                continue
            judged += 1
            found = self.lateness(read)
            if found is None:
                unexplained.append(read)
                continue
            late, why, missed, i = found
            if late > GRACE:
                if why == "clock":
                    source, detail = "clock", f"end {self.bounds[i]}"
                else:
                    source, detail = self.w.sources[missed], self.w.details[missed]
                rep = self.reps[self.class_at(read.sw)]
                expected = self.model.page(self.states[self.k_hi(read)], read.page, rep)
                stale.append(Stale(read, late, source, detail, expected))
            else:
                closest = max(closest, late)
        return {"judged": judged, "stale": stale, "unexplained": unexplained,
                "closest_fresh": None if closest == -NEVER else closest}

    def visibility(self) -> dict[str, dict[str, Any]]:
        """Per source: commit-to-visible of each write, to the first affected page's first read
        that reflects it ("first") and to the last affected page's ("all")."""
        by_page: dict[Page, list[Read]] = defaultdict(list)
        for read in self.reads:
            if read.status == 200:
                by_page[read.page].append(read)
        sends: dict[Page, list[float]] = {}
        for page, reads in by_page.items():
            reads.sort(key=lambda r: r.s)
            sends[page] = [r.s for r in reads]
        out: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"events": 0, "first": [], "all": [], "unseen": 0})

        def seen(page: Page, since: float, first_state: int, first_class: int) -> float | None:
            reads = by_page.get(page, [])
            pos = bisect.bisect_left(sends.get(page, []), since)
            for read in reads[pos:]:
                if read.s > since + 10:
                    return None
                if self.reflects(read, first_state, first_class):
                    return read.s - since
            return None

        events: list[tuple[str, float, int, int, list[Page]]] = []
        for k in range(1, self.K + 1):
            commit = self.commits[k - 1]
            cls = self.class_at(commit + self.offset)
            rep = self.reps[cls]
            changed = [p for p in self.pages
                       if self.model.page(self.states[k], p, rep)
                       != self.model.page(self.states[k - 1], p, rep)]
            events.append((self.w.sources[k], commit, k, 0, changed))
        for b, end in enumerate(self.bounds):
            moment = end + 1 - self.offset
            k = bisect.bisect_left(self.commits, moment)
            changed = [p for p in self.pages
                       if self.model.page(self.states[k], p, self.reps[b])
                       != self.model.page(self.states[k], p, self.reps[b + 1])]
            events.append(("clock", moment, 0, b + 1, changed))
        last_send = max((r.s for r in self.reads), default=0.0)
        for source, moment, first_state, first_class, changed in events:
            if not changed or moment > last_send - 0.5:   # too late in the run to be seen
                continue
            times = [seen(p, moment, first_state, first_class) for p in changed]
            known = [t for t in times if t is not None]
            out[source]["events"] += 1
            if known:
                out[source]["first"].append(min(known))
            if len(known) == len(times):
                out[source]["all"].append(max(known))
            else:
                out[source]["unseen"] += len(times) - len(known)
        return out


# --- the run --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Window:
    label: str
    begin: float
    end: float
    note: str = ""


@dataclasses.dataclass
class Outcome:
    name: str
    workers: int
    wall: float
    reads: list[Read]
    errors: list[tuple[float, str]]
    writer: Writer
    world: World
    judge: Judge
    verdict: dict[str, Any]
    windows: list[Window]
    t0: float
    log: Path
    server_tail: str


def service_env(database_url: str, redis_url: str) -> dict[str, str]:
    extra = dict(item.split("=", 1) for item in EXTRA_ENV.split(",") if item)
    return cli_env(DATABASE_URL=database_url, REDIS_URL=redis_url, AUTH_JWT_SECRET=SECRET,
                   INTERNAL_SERVICE_TOKEN=SERVICE_TOKEN, APP_ENV="development",
                   CACHE_PREFIX=f"fresh{secrets.token_hex(4)}", **LIMITS, **extra)


Faults = Callable[["Run"], Awaitable[None]]


@dataclasses.dataclass
class Run:
    writer: Writer
    server_url: str
    stop: asyncio.Event
    t0: float
    seconds: float
    windows: list[Window]
    workers: int
    pg: RestartablePostgres | None = None
    redis: RedisProcess | None = None

    async def until(self, fraction: float) -> None:
        await asyncio.sleep(max(0.0, self.t0 + fraction * self.seconds - time.monotonic()))


async def scenario(name: str, database_url: str, redis_url: str, workers: int, tmp: Path, *,
                   seconds: float, clock_at: tuple[float, ...], faults: Faults | None = None,
                   pg: RestartablePostgres | None = None,
                   redis: RedisProcess | None = None) -> Outcome:
    await migrate(database_url)
    log = tmp / f"serve-{name}-{workers}.log"
    rng = random.Random(f"{name}-{workers}")
    async with serving(service_env(database_url, redis_url), log, workers=workers) as server:
        # The clock: whole-second ends chosen now, relative to time.time(), at the given
        # fractions of the run (which starts about READERS_START from now), at least 2 s ahead.
        now = time.time()
        ends = sorted({max(math.ceil(now) + 2, math.ceil(now + READERS_START + f * seconds))
                       for f in clock_at})
        setup = await asyncpg.connect(database_url,
                                      server_settings={"application_name": "freshness-setup"})
        try:
            world = await arrange(setup, ends)
        finally:
            await setup.close()
        writer = Writer(database_url, server.base, world, seconds, rng)
        reads: list[Read] = []
        errors: list[tuple[float, str]] = []
        windows: list[Window] = []
        stop = asyncio.Event()
        tasks: list[asyncio.Task] = []
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=15))
        try:
            await writer.open()
            await asyncio.sleep(0.3)   # the arrangement's notifications applied (nothing cached)
            offset = time.time() - time.monotonic()
            t0 = time.monotonic()
            run = Run(writer, server.base, stop, t0, seconds, windows, workers, pg, redis)
            token_ttl = int(seconds * 20) + 600
            canon: dict[Sig, Sig] = {}
            tasks = [asyncio.create_task(reader(session, plan, reads, errors, stop, canon))
                     for plan in plans(server.base, token_ttl)]
            tasks.append(asyncio.create_task(writer.run(stop)))
            if faults is not None:
                tasks.append(asyncio.create_task(faults(run)))
            driver = tasks[-1] if faults is not None else None
            while True:
                await asyncio.sleep(0.2)
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()
                elapsed = time.monotonic() - t0
                enough = sum(1 for r in reads if r.status == 200) >= MIN_READS
                if elapsed >= seconds * 10 or (elapsed >= seconds and enough
                                               and (driver is None or driver.done())):
                    break
            wall = time.monotonic() - t0
            stop.set()
            writer.gate.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            stop.set()
            writer.gate.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
            await writer.close()
    tail = server.output(6000)
    judge = Judge(writer, world, reads, offset)
    return Outcome(name, workers, wall, reads, errors, writer, world, judge, judge.judge(),
                   windows, t0, log, tail)


# --- reporting ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def summarise(outcome: Outcome, allowed_503: list[Read]) -> dict[str, Any]:
    verdict = outcome.verdict
    stale: list[Stale] = verdict["stale"]
    statuses = Counter(r.status for r in outcome.reads)
    latency = {}
    for source, values in sorted(outcome.judge.visibility().items()):
        latency[source] = {
            "n": values["events"],
            "first_p50_ms": ms(percentile(values["first"], 0.5)),
            "first_p99_ms": ms(percentile(values["first"], 0.99)),
            "first_max_ms": ms(max(values["first"], default=None)),
            "all_p50_ms": ms(percentile(values["all"], 0.5)),
            "all_p99_ms": ms(percentile(values["all"], 0.99)),
            "all_max_ms": ms(max(values["all"], default=None)),
            "unseen_pages": values["unseen"],
        }
    writes = Counter(outcome.writer.sources[1:])
    return {
        "test": outcome.name, "workers": outcome.workers, "seconds": round(outcome.wall, 1),
        "reads": len(outcome.reads), "judged": verdict["judged"],
        "reads_per_s": round(len(outcome.reads) / outcome.wall),
        "stale": len(stale),
        "stale_max_ms": ms(max((s.lateness for s in stale), default=None)),
        "stale_p50_ms": ms(percentile([s.lateness for s in stale], 0.5)),
        "stale_over_150ms": sum(1 for s in stale if s.lateness > 0.150),
        "stale_by_source": {
            source: {"n": len(group), "max_ms": ms(max(x.lateness for x in group))}
            for source, group in sorted(_group(stale, lambda x: x.missed).items())},
        "fresh_latest_ms": ms(verdict["closest_fresh"]),
        "stale_by_x_cache": dict(Counter(s.read.cache for s in stale)),
        "stale_by_method": dict(Counter(s.read.method for s in stale)),
        "unexplained": len(verdict["unexplained"]),
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "allowed_503": len(allowed_503),
        "client_errors": len(outcome.errors),
        "writes": dict(sorted(writes.items())), "write_count": sum(writes.values()),
        "use_api": {str(k): v for k, v in outcome.writer.use_api_statuses.items()},
        "writer_failures": outcome.writer.failures[:10],
        "clock_ends": len(outcome.world.ends),
        "latency": latency,
        "faults": [{"label": w.label, "at_s": round(w.begin - outcome.t0, 2),
                    "lasted_s": round(w.end - w.begin, 2), "note": w.note,
                    "stale_within_3s": sum(1 for s in stale
                                           if w.begin <= s.read.s <= w.end + 3),
                    "status_503": sum(1 for r in outcome.reads if r.status == 503
                                      and r.r >= w.begin and r.s <= w.end + 3),
                    "last_503_after_end_s": max((round(r.s - w.end, 3) for r in outcome.reads
                                                 if r.status == 503 and r.r >= w.begin
                                                 and r.s <= w.end + 3), default=None)}
                   for w in outcome.windows],
    }


def _group(items: list[Stale], key: Callable[[Stale], str]) -> dict[str, list[Stale]]:
    groups: dict[str, list[Stale]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups


def show(summary: dict[str, Any], outcome: Outcome) -> str:
    lines = [f"\nfreshness [{summary['test']}, workers={summary['workers']}]: "
             f"{summary['judged']} judged reads in {summary['seconds']} s "
             f"({summary['reads_per_s']}/s), {summary['write_count']} writes, "
             f"{summary['stale']} stale (max {summary['stale_max_ms']} ms, "
             f"p50 {summary['stale_p50_ms']} ms, {summary['stale_over_150ms']} over 150 ms), "
             f"{summary['unexplained']} unexplained, fresh reads showed versions superseded "
             f"at most {summary['fresh_latest_ms']} ms before they were sent, "
             f"statuses {summary['status']}, "
             f"allowed 503 {summary['allowed_503']}, client errors {summary['client_errors']}"]
    if summary["stale"]:
        lines.append(f"  stale by missed source {summary['stale_by_source']}, "
                     f"by X-Cache {summary['stale_by_x_cache']}, "
                     f"by method {summary['stale_by_method']}")
    lines.append("  commit-to-visible, ms (first affected page / all affected pages):")
    for source, v in summary["latency"].items():
        lines.append(f"    {source:9} n={v['n']:4}  first p50 {v['first_p50_ms']} "
                     f"p99 {v['first_p99_ms']} max {v['first_max_ms']}  |  all p50 "
                     f"{v['all_p50_ms']} p99 {v['all_p99_ms']} max {v['all_max_ms']}"
                     + (f"  unseen pages {v['unseen_pages']}" if v["unseen_pages"] else ""))
    for fault in summary["faults"]:
        lines.append(f"  fault {fault['label']} at {fault['at_s']} s for {fault['lasted_s']} s"
                     f" ({fault['note']}): {fault['stale_within_3s']} stale within 3 s, "
                     f"{fault['status_503']} 503s (the last sent "
                     f"{fault['last_503_after_end_s']} s after the fault's end)")
    return "\n".join(lines)


def describe_stale(outcome: Outcome, stale: list[Stale], limit: int = 4) -> str:
    """The first stale reads, then the latest ones."""
    first = sorted(stale, key=lambda x: x.read.s)[:limit]
    worst = [x for x in sorted(stale, key=lambda x: -x.lateness) if x not in first][:limit]
    out = []
    for s in first + worst:
        r = s.read
        out.append(f"  {r.method} {r.page} sent at {r.s - outcome.t0:.3f} s, "
                   f"{s.lateness * 1000:.0f} ms late, missed {s.missed} ({s.detail}), "
                   f"X-Cache {r.cache}\n    showed   {_short(r.sig)}"
                   f"\n    expected {_short(s.expected)}")
    return "\n".join(out)


def _short(sig: Sig | None) -> str:
    if sig is None:
        return "None"
    transfer, total, items = sig
    return f"transfer={transfer} total={total} " + ", ".join(
        f"{i}:{n}:{a}" for i, n, a in items)[:300]


def report(outcome: Outcome, allowed_503: list[Read]) -> dict[str, Any]:
    summary = summarise(outcome, allowed_503)
    print(show(summary, outcome))
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as out:
            out.write(json.dumps(summary, ensure_ascii=False) + "\n")
    return summary


def verdict_failures(outcome: Outcome, summary: dict[str, Any],
                     allowed_503: list[Read]) -> list[str]:
    failures = []
    verdict = outcome.verdict
    stale: list[Stale] = verdict["stale"]
    if stale:
        failures.append(f"{len(stale)} stale reads (more than {GRACE * 1000:.0f} ms after a "
                        f"commit, not reflecting it), worst {summary['stale_max_ms']} ms; "
                        f"the first ones, then the latest:\n{describe_stale(outcome, stale)}")
    if verdict["unexplained"]:
        shown = "\n".join(f"  {r.method} {r.page} at {r.s - outcome.t0:.3f} s: {_short(r.sig)}"
                          for r in verdict["unexplained"][:5])
        failures.append(f"{len(verdict['unexplained'])} reads matching no state:\n{shown}")
    allowed = {id(r) for r in allowed_503}
    bad = [r for r in outcome.reads if r.status not in (200, 429) and id(r) not in allowed]
    if bad:
        failures.append(f"{len(bad)} answers neither 200 nor 429 (nor an allowed 503): "
                        f"{dict(Counter(r.status for r in bad))}, the first at "
                        f"{bad[0].s - outcome.t0:.3f} s; server log {outcome.log}:\n"
                        f"{outcome.server_tail[-2000:]}")
    if verdict["judged"] < MIN_READS:
        failures.append(f"only {verdict['judged']} judged reads (at least {MIN_READS} wanted)")
    if summary["status"].get("429", 0) > 0.01 * len(outcome.reads):
        failures.append(f"too many 429s: {summary['status']['429']} of {len(outcome.reads)}")
    if len(outcome.errors) > 0.01 * len(outcome.reads):
        failures.append(f"{len(outcome.errors)} client errors: "
                        f"{Counter(e for _, e in outcome.errors)}")
    if outcome.writer.failures:
        failures.append(f"writer: {outcome.writer.failures[:5]}")
    missing = ({*CYCLE, "truncate"} - set(summary["writes"])) | (
        set() if "clock" in summary["latency"] else {"clock"})
    if missing:
        failures.append(f"sources never written (or never observable): {sorted(missing)}")
    return failures


def run_async(coro: Awaitable[Outcome]) -> Outcome:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# --- the tests ------------------------------------------------------------------------------------


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


# The service names its LISTEN connections (service/listener.py, APPLICATION_NAME).
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
        with restartable_postgres(tmp_path / "pg") as pg, own_redis(tmp_path / "redis") as redis:
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
