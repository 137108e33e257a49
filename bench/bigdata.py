"""A realistic large data set, loaded with COPY, and the query plans and times on it.

    python -m bench.bigdata load [--members 1000000] [--whales 10] [--whale-size 60000]
    python -m bench.bigdata explain

Skewed like a real mall: most members hold a handful of coupons (geometric, mean about 19), a
few "whales" hold tens of thousands. `load` replaces tenant data in the database named by
DATABASE_URL (embedded under .data/ when unset) — never point it at production.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import statistics
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosql
import asyncpg

from service.db.migrations import migrate
from service.db.queries import QUERIES
from service.db.repository import init_connection
from service.runtime.embedded import resolved
from service.settings import load_settings

# The bench's own statements, destructive, never in the service's query set.
BIG = aiosql.from_path(Path(__file__).resolve().parent / "sql" / "bigdata.sql", "asyncpg")
UNIACID = 1
CHUNK = 200_000
COLUMNS = ["id", "uniacid", "uid", "coupon_id", "used", "use_time", "get_time", "end_at"]


def coupon_rows(now: dt.datetime) -> list[tuple]:
    rows = []
    rng = random.Random(1)
    for cid in range(1, 201):
        use_type = cid % 10
        time_limit = cid % 2
        start = now - dt.timedelta(days=rng.randint(30, 700))
        end = now + dt.timedelta(days=rng.randint(-300, 300))
        rows.append((cid, UNIACID, f"券{cid}", 1 + cid % 2, 10, 0, 100, use_type,
                     time_limit, 0 if time_limit else rng.choice((0, 7, 30, 90, 365)),
                     start, end, -1))
    return rows


def member_coupon_records(members: int, whales: int, whale_size: int, now: dt.datetime,
                          coupons: list[tuple], tz: ZoneInfo, per_member: int | None = None):
    """`per_member`: exactly that many coupons each (bench/realistic.py), instead of the skew."""
    rng = random.Random(2)
    times = [now - dt.timedelta(seconds=rng.randint(0, 2 * 365 * 86_400)) for _ in range(20_000)]
    # The end the row trigger would store (triggers are off during COPY): per coupon, a fixed
    # time_end, or 23:59:59 local of the Nth day after receipt, or never.
    local_days = [t.astimezone(tz).replace(hour=23, minute=59, second=59, microsecond=0)
                  for t in times]
    specs = {row[0]: (row[8], row[9], row[11]) for row in coupons}
    whale_ids = set(range(1, whales + 1))
    next_id = 1
    for uid in range(1, members + 1):
        if uid in whale_ids:
            count = whale_size + rng.randint(0, whale_size // 2)
        elif per_member is not None:
            count = per_member
        else:
            count = min(int(rng.expovariate(1 / 19)), 400)
        for _ in range(count):
            used = 1 if rng.random() < 0.3 else 0
            at = rng.randrange(len(times))
            get_time = times[at]
            coupon_id = rng.randint(1, 200)
            time_limit, time_days, time_end = specs[coupon_id]
            if time_limit == 1:
                end_at = time_end
            elif time_days > 0:
                end_at = local_days[at] + dt.timedelta(days=time_days)
            else:
                end_at = None
            yield (next_id, UNIACID, uid, coupon_id, used, get_time if used else None,
                   get_time, end_at)
            next_id += 1


async def load(url: str, tz: str, members: int, whales: int, whale_size: int,
               per_member: int | None = None) -> None:
    await migrate(url, display_tz=tz)
    conn = await asyncpg.connect(url)
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    try:
        indexes = [r["definition"] async for r in BIG.big_index_definitions(conn)]
        await BIG.big_prepare_load(conn)
        await conn.copy_records_to_table(
            "yz_member", records=((uid, UNIACID, "") for uid in range(1, members + 1)),
            columns=["uid", "uniacid", "nickname"])
        coupons = coupon_rows(now)
        await conn.copy_records_to_table(
            "yz_coupon", records=coupons,
            columns=["id", "uniacid", "name", "coupon_method", "deduct", "discount", "enough",
                     "use_type", "time_limit", "time_days", "time_start", "time_end", "total"])
        total = 0
        batch: list[tuple] = []
        for record in member_coupon_records(members, whales, whale_size, now, coupons,
                                            ZoneInfo(tz), per_member):
            batch.append(record)
            if len(batch) >= CHUNK:
                await conn.copy_records_to_table(
                    "yz_member_coupon", records=batch,
                    columns=COLUMNS)
                total += len(batch)
                batch.clear()
                print(f"  {total:>11,} member coupons  {time.perf_counter() - started:7.1f} s",
                      flush=True)
        if batch:
            await conn.copy_records_to_table(
                "yz_member_coupon", records=batch,
                columns=COLUMNS)
            total += len(batch)
        copied = time.perf_counter() - started
        for definition in indexes:  # the migrations' own DDL, as they left it
            await conn.execute(definition)
        await BIG.big_finish_load(conn)
        await BIG.big_vacuum(conn)
        print(f"loaded {members:,} members, {total:,} member coupons: COPY {copied:.0f} s, "
              f"indexes + analyze {time.perf_counter() - started - copied:.0f} s")
    finally:
        await conn.close()


async def explain(url: str) -> list[dict]:
    conn = await asyncpg.connect(url)
    await init_connection(conn)
    now = dt.datetime.now(dt.UTC)
    results = []
    try:
        heavy = [r async for r in BIG.big_member_counts(conn)]
        typical = await BIG.big_typical_member(conn, low=15, high=25)
        subjects = [("typical", typical), ("whale", heavy[0]["uid"])]
        sql = QUERIES.coupon_page.sql
        order = QUERIES.driver_adapter.var_sorted["coupon_page"]
        for label, uid in subjects:
            held = await BIG.big_member_held(conn, uid=uid)
            for status, page in ((1, 1), (2, 1), (3, 1), (1, 50)):
                params = {"uniacid": UNIACID, "member_id": uid, "status": status,
                          "staff_userid": None, "external_userid": None,
                          "use_types": None, "coupon_methods": None, "near_only": False,
                          "now": now, "page_limit": 15, "page_offset": (page - 1) * 15,
                          "total_cap": 5000}
                args = [params[name] for name in order]
                times = []
                for _ in range(5):
                    start = time.perf_counter()
                    await conn.fetch(sql, *args)
                    times.append((time.perf_counter() - start) * 1e3)
                plan = "\n".join(r[0] for r in await conn.fetch(
                    "EXPLAIN (ANALYZE, BUFFERS) " + sql, *args))
                results.append({"member": label, "uid": uid, "coupons": held, "status": status,
                                "page": page, "median_ms": round(statistics.median(times), 2),
                                "index_range_scan": "yz_member_coupon_member_tab_idx" in plan,
                                "seq_scan_on_member_coupon":
                                    "Seq Scan on yz_member_coupon" in plan})
                print(json.dumps(results[-1]), flush=True)
                if label == "whale" and page == 1 and status in (1, 2):
                    print(plan)
    finally:
        await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("load", "explain"))
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--whales", type=int, default=10)
    parser.add_argument("--whale-size", type=int, default=60_000)
    args = parser.parse_args()
    with resolved(load_settings()) as settings:
        if args.command == "load":
            asyncio.run(load(settings.database_url, settings.display_tz, args.members,
                             args.whales, args.whale_size))
        else:
            results = asyncio.run(explain(settings.database_url))
            out = Path(__file__).resolve().parent / "results" / "bigdata_explain.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(results, indent=2))
            print(f"wrote {out}")


if __name__ == "__main__":
    main()
