"""The writer: the only one, one statement at a time, autocommit; after each commit it reads
the state with SQL of its own."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter

import aiohttp
import asyncpg

from tests.support.common import SERVICE_TOKEN
from tests.support.freshness.model import (
    CONTACT,
    GOODS,
    HOTELS,
    NEVER,
    STORES,
    TENANT1,
    TENANT2,
    UNIACID,
    State,
    snapshot,
)
from tests.support.freshness.world import World

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
