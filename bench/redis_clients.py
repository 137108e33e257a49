"""Async Redis clients side by side: client CPU per round trip of the service's own Redis calls.

What it measures
----------------
Four asyncio clients, each on uvloop, against one Redis server:

- ``redis-py+hiredis``: redis-py (``redis.asyncio``) with its hiredis parser (the service's client);
- ``redis-py+python``: redis-py with its pure-Python parser (``_AsyncRESP3Parser``: redis-py 8
  speaks RESP3 by default and swaps ``_AsyncRESP2Parser`` for it under RESP3);
- ``coredis``: coredis (RESP3 only since 6.0);
- ``valkey-glide``: valkey-glide's async ``glide`` API (a Rust core over FFI; one multiplexed
  connection per server, whatever the concurrency).

Two workloads, the service's real round trips:

- ``hit``: a non-transactional pipeline of HGET ``bench:{1:42}`` ``unused:0:1:15:m`` (a 1,500-byte
  value) and GET ``bench:tg:{1}`` (16 bytes), one round trip; both replies are checked each time;
- ``script``: one EVALSHA of a Lua script (loaded once with SCRIPT LOAD) over 4 keys and 2 args
  (INCRBY each key by ARGV[1], PEXPIRE ARGV[2], return the 4 values); each reply is checked.

For each client, workload and concurrency (1: one task awaiting in sequence; 64: 64 tasks sharing
one client, with a pool of up to 64 connections, or the client's own multiplexing), it counts
``time.process_time()`` of the benchmark process (every thread of it, so glide's Rust threads
too; the Redis server is another process) over ``--count`` round trips, after a warm-up, and the
wall-clock round trips per second. The server's own CPU per round trip (INFO's used_cpu delta)
and the connections the client holds at the server (CLIENT LIST, by client name) are recorded
beside them.

Each (round, client) runs in a fresh child process (the same interpreter), and the clients take
turns round-robin in every round, starting one later each round, because this machine's speed
drifts. The report gives medians and min-max over the rounds, and each client's CPU per round
trip as a ratio to redis-py+hiredis in the same round (median and range of those ratios).

Cancellation safety: on one client per library, call ``hit`` and cancel it at several points
(before it starts; after its first step; after 1-8 loop iterations; while its request is at a
server kept busy by a 50 ms Lua loop on another connection; asyncio.wait_for with a 0-400 µs
timeout), about 220 times; after each, a fresh GET of a key whose value is unique to that
iteration must return that value (not an earlier reply: "one reply behind"). It counts the calls
that raised CancelledError, those whose cancellation was lost (a reply came back all the same),
wrong replies and errors; connections at the server before, after and once the client is
closed; the client's pool as it sees it (a slot lost with no connection behind it shows only
there); and whether a last pipeline still gets through. Five failed follow-ups in a row end the
test early (the client is stuck).

How to run
----------
From the repository root, with a venv holding every client (the project's own venv has only
redis-py; this script does not import ``service``)::

    python3 -m venv /tmp/rcvenv
    /tmp/rcvenv/bin/pip install 'redis[hiredis]==8.1.0' hiredis==3.5.0 uvloop==0.23.0 \\
        coredis==6.9.0 valkey-glide==2.6.0
    /tmp/rcvenv/bin/python bench/redis_clients.py --rounds 5 --count 20000

Options: ``--rounds``, ``--count``, ``--url`` (default ``redis://127.0.0.1:6379/0``),
``--clients`` (a subset), ``--concurrency`` (default ``1,64``), ``--cancel-iterations`` (0 skips
the test), ``--cancel-only`` (only the cancellation test, replacing that section of ``--out``),
``--out``. A client that fails to install or import is recorded with the reason, and the rest go
on. A venv with only redis-py runs the redis-py rows (``--clients redis-py+hiredis,...``).
Every key is under ``bench:`` and is deleted at the end. Results:
``bench/results/redis_clients.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CLIENTS = ("redis-py+hiredis", "redis-py+python", "coredis", "valkey-glide")
BASELINE = "redis-py+hiredis"
WORKLOADS = ("hit", "script")

PAGE_KEY = "bench:{1:42}"
PAGE_FIELD = "unused:0:1:15:m"
PAGE = random.Random(42).randbytes(1500)  # binary, with CR/LF inside: the parsers must cope
TOKEN_KEY = "bench:tg:{1}"
TOKEN = b"tok:0123456789ab"  # 16 bytes
SCRIPT_KEYS = [f"bench:s:{{1}}:{c}" for c in "abcd"]
SCRIPT_ARGS = ["1", "60000"]
SCRIPT = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return out
"""
# Keeps the server busy for ARGV[1] µs (the cancellation test's "request at a busy server").
BUSY = """
local t = redis.call('TIME')
local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
while true do
  local n = redis.call('TIME')
  if tonumber(n[1]) * 1000000 + tonumber(n[2]) >= stop then return 1 end
end
"""
CANCEL_PREFIX = "bench:cx:"
WARMUP = 2000


# A tiny RESP2 admin connection of our own, independent of the clients under test ----------------
class Admin:
    """Set-up, CLIENT LIST, INFO and the busy script, on a connection no client under test owns."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str) -> Admin:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1",
                                                       parts.port or 6379)
        admin = cls(reader, writer)
        if parts.password:
            await admin.call("AUTH", *([parts.username] if parts.username else []),
                             parts.password)
        db = (parts.path or "/0").lstrip("/") or "0"
        await admin.call("SELECT", db)
        await admin.call("CLIENT", "SETNAME", "bench-admin")
        return admin

    @staticmethod
    def pack(*args: Any) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def send(self, *args: Any) -> None:
        self.writer.write(self.pack(*args))

    async def reply(self) -> Any:
        line = await self.reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else (await self.reader.readexactly(n + 2))[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [await self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    async def call(self, *args: Any) -> Any:
        self.send(*args)
        return await self.reply()

    async def clients(self, name: str | None = None) -> int:
        """Connections at the server, other than this one (only those named `name`, if given)."""
        lines = (await self.call("CLIENT", "LIST")).decode().splitlines()
        lines = [ln for ln in lines if " name=bench-admin " not in f" {ln} "]
        if name is not None:
            lines = [ln for ln in lines if f" name={name} " in f" {ln} "]
        return len(lines)

    async def server_cpu(self) -> float:
        info = (await self.call("INFO", "cpu")).decode()
        fields = dict(ln.split(":", 1) for ln in info.splitlines() if ":" in ln)
        return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# The clients under test: one adapter each -----------------------------------------------------
class Adapter:
    """One client: `hit()` -> (page, token), `script()` -> 4 ints, `get(key)` -> bytes."""

    name: str
    connection_model: str

    def __init__(self, url: str, pool_size: int, client_name: str) -> None:
        self.url, self.pool_size, self.client_name = url, pool_size, client_name
        self.sha = ""
        self.busy_pending = False  # the cancellation test's busy script awaits its reply

    async def open(self) -> None: ...
    async def hit(self) -> Any: ...
    async def script(self) -> Any: ...
    async def get(self, key: str) -> Any: ...
    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        return {"connection_model": self.connection_model}

    def pool_state(self) -> dict[str, Any] | None:
        """The client's own view of its pool (what CLIENT LIST cannot show: lost slots)."""
        return None


class RedisPy(Adapter):
    """redis.asyncio as the service builds it (service/cache/client.py): a BlockingConnectionPool,
    no retries; RESP3 (redis-py 8's default)."""

    connection_model = "pool: one connection per in-flight call (BlockingConnectionPool, max 64)"

    def __init__(self, *args: Any, hiredis: bool) -> None:
        super().__init__(*args)
        self.hiredis = hiredis

    async def open(self) -> None:
        import redis.asyncio as aioredis
        from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.utils import HIREDIS_AVAILABLE

        if self.hiredis and not HIREDIS_AVAILABLE:
            raise RuntimeError("hiredis is not importable")
        self.parser_class = _AsyncHiredisParser if self.hiredis else _AsyncRESP3Parser
        self.pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=self.pool_size, timeout=None,
            parser_class=self.parser_class, client_name=self.client_name,
            socket_timeout=5.0, socket_connect_timeout=5.0, retry=Retry(NoBackoff(), 0))
        self.client = aioredis.Redis.from_pool(self.pool)
        conn = await self.pool.get_connection()
        try:
            await conn.connect()
            self.parser_used = type(conn._parser).__name__
            self.protocol = conn.protocol
        finally:
            await self.pool.release(conn)

    async def hit(self) -> Any:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(PAGE_KEY, PAGE_FIELD)
            pipe.get(TOKEN_KEY)
            return await pipe.execute()

    async def script(self) -> Any:
        return await self.client.evalsha(self.sha, 4, *SCRIPT_KEYS, *SCRIPT_ARGS)

    async def get(self, key: str) -> Any:
        return await self.client.get(key)

    async def close(self) -> None:
        await self.client.aclose()
        await self.pool.disconnect()

    def pool_state(self) -> dict[str, Any] | None:
        return {"max": self.pool_size,
                "checked_out": len(getattr(self.pool, "_in_use_connections", ()))}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "parser": self.parser_used, "protocol": self.protocol}


class Coredis(Adapter):
    """coredis.Redis with a pool of at most 64 (coredis multiplexes calls over its connections),
    no retries, RESP3."""

    connection_model = ("pool of up to 64 connections, each multiplexed (a reader task per "
                        "connection; a command releases its connection once written)")

    async def open(self) -> None:
        import coredis
        from coredis.retry import NoRetryPolicy

        self.stack = contextlib.AsyncExitStack()
        client = coredis.Redis.from_url(
            self.url, max_connections=self.pool_size, client_name=self.client_name,
            decode_responses=False, stream_timeout=5.0, connect_timeout=5.0,
            retry_policy=NoRetryPolicy())
        # coredis 6: the client is an async context manager (its anyio task group) and must be
        # used as one.
        self.client = await self.stack.enter_async_context(client)

    async def hit(self) -> Any:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(PAGE_KEY, PAGE_FIELD)
            pipe.get(TOKEN_KEY)
        return pipe.results

    async def script(self) -> Any:
        return await self.client.evalsha(self.sha, keys=SCRIPT_KEYS, args=SCRIPT_ARGS)

    async def get(self, key: str) -> Any:
        return await self.client.get(key)

    async def close(self) -> None:
        await self.stack.aclose()

    def pool_state(self) -> dict[str, Any] | None:
        # Idle, the queue holds one entry per slot: a connection or a placeholder for one.
        return {"max": self.pool_size,
                "free_slots": len(self.client.connection_pool._available_connections)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "protocol": 3}


class Glide(Adapter):
    """valkey-glide's GlideClient: a Rust core (tokio threads) over FFI, one multiplexed
    connection, RESP3; `hit` is a non-atomic Batch, `script` invoke_script (EVALSHA)."""

    connection_model = "one multiplexed connection (Rust core), whatever the concurrency"

    async def open(self) -> None:
        from glide import (
            GlideClient,
            GlideClientConfiguration,
            Logger,
            LogLevel,
            NodeAddress,
            Script,
        )

        Logger.set_logger_config(LogLevel.ERROR)
        parts = urlsplit(self.url)
        db = int((parts.path or "/0").lstrip("/") or 0)
        config = GlideClientConfiguration(
            [NodeAddress(parts.hostname or "127.0.0.1", parts.port or 6379)],
            database_id=db, client_name=self.client_name, request_timeout=5000)
        self.client = await GlideClient.create(config)
        self.script_obj = Script(SCRIPT)

    async def hit(self) -> Any:
        from glide import Batch

        batch = Batch(is_atomic=False)
        batch.hget(PAGE_KEY, PAGE_FIELD)
        batch.get(TOKEN_KEY)
        return await self.client.exec(batch, raise_on_error=True)

    async def script(self) -> Any:
        return await self.client.invoke_script(self.script_obj, keys=SCRIPT_KEYS,
                                               args=SCRIPT_ARGS)

    async def get(self, key: str) -> Any:
        return await self.client.get(key)

    async def close(self) -> None:
        await self.client.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "protocol": 3}


def make_adapter(name: str, url: str, pool_size: int) -> Adapter:
    client_name = "bench-" + name.replace("+", "-")
    if name == "redis-py+hiredis":
        return RedisPy(url, pool_size, client_name, hiredis=True)
    if name == "redis-py+python":
        return RedisPy(url, pool_size, client_name, hiredis=False)
    if name == "coredis":
        return Coredis(url, pool_size, client_name)
    if name == "valkey-glide":
        return Glide(url, pool_size, client_name)
    raise ValueError(name)


def versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("redis", "hiredis", "coredis", "valkey-glide", "uvloop", "anyio"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def hit_ok(replies: Any) -> bool:
    return (replies is not None and len(replies) == 2 and replies[0] == PAGE
            and replies[1] == TOKEN)


def script_ok(reply: Any) -> bool:
    # Atomic: the 4 keys were incremented together, so the 4 values are equal.
    return (reply is not None and len(reply) == 4 and isinstance(reply[0], int)
            and reply[0] > 0 and reply[0] == reply[1] == reply[2] == reply[3])


# The child: one client, every workload and concurrency ------------------------------------------
async def drive(op: Any, check: Any, concurrency: int, count: int) -> tuple[int, int]:
    """`count` round trips (rounded up to a multiple of `concurrency`) from `concurrency` tasks;
    returns (round trips, wrong replies)."""
    per = -(-count // concurrency)
    bad = 0

    async def worker() -> None:
        nonlocal bad
        for _ in range(per):
            if not check(await op()):
                bad += 1

    if concurrency == 1:
        await worker()
    else:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per * concurrency, bad


async def child_measure(args: argparse.Namespace) -> dict[str, Any]:
    admin = await Admin.connect(args.url)
    adapter = make_adapter(args.child, args.url, 64)
    adapter.sha = args.sha
    await adapter.open()
    out: dict[str, Any] = {"client": args.child, "describe": adapter.describe(),
                           "versions": versions(), "measures": {}}
    try:
        for workload in WORKLOADS:
            op = adapter.hit if workload == "hit" else adapter.script
            check = hit_ok if workload == "hit" else script_ok
            for concurrency in args.concurrency:
                await drive(op, check, concurrency, WARMUP)  # connections, caches, code paths
                gc.collect()
                server0 = await admin.server_cpu()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                n, bad = await drive(op, check, concurrency, args.count)
                cpu1, wall1 = time.process_time(), time.perf_counter()
                server1 = await admin.server_cpu()
                out["measures"][f"{workload}/c{concurrency}"] = {
                    "round_trips": n,
                    "wrong_replies": bad,
                    "cpu_us_per_rt": (cpu1 - cpu0) / n * 1e6,
                    "rt_per_s": n / (wall1 - wall0),
                    "server_cpu_us_per_rt": (server1 - server0) / n * 1e6,
                    "server_connections": await admin.clients(adapter.client_name),
                    "os_threads": len(os.listdir("/proc/self/task")),
                }
    finally:
        await adapter.close()
        await admin.close()
    return out


async def cancel_once(adapter: Adapter, admin: Admin, mode: str,
                      rng: random.Random) -> tuple[str, Any]:
    """Start `hit` and cancel it at the point `mode` names. Returns (outcome, detail):
    "cancelled" (raised CancelledError, or TimeoutError from wait_for); "absorbed" (task.cancel()
    was accepted, the task not done, yet the call returned a reply: the cancellation was lost);
    "done_first" (the reply came before the cancel: task.cancel() returned False);
    "in_time" (wait_for: the call beat its timeout); "late" (wait_for: a reply, though its
    timeout had passed: that cancellation was absorbed too); "error" (any other exception)."""
    loop = asyncio.get_running_loop()
    accepted: list[bool] = []
    try:
        if mode == "wait_for":
            timeout = rng.uniform(0, 400e-6)
            started = time.perf_counter()
            result = await asyncio.wait_for(adapter.hit(), timeout=timeout)
            # A reply after the deadline: wait_for's timeout fired (the timer runs between the
            # call's steps) and cancelled the call, which returned a reply anyway.
            late = time.perf_counter() - started > timeout
            return ("late" if late else "in_time"), result
        if mode == "in_flight":
            admin.send("EVAL", BUSY, 0, 50_000)  # the server busy for 50 ms
            adapter.busy_pending = True
            await asyncio.sleep(0.002)  # ... already running when our request arrives
        task = loop.create_task(adapter.hit())
        if mode == "immediate":
            accepted.append(task.cancel())  # before the task's first step
        elif mode == "call_soon":
            loop.call_soon(lambda: accepted.append(task.cancel()))  # after its first step
        elif mode.startswith("yields_"):
            for _ in range(int(mode.split("_")[1])):
                await asyncio.sleep(0)
            accepted.append(task.cancel())
        elif mode == "in_flight":
            await asyncio.sleep(0.005)  # written; the reply is ~45 ms away
            accepted.append(task.cancel())
        result = await task
        return ("absorbed" if any(accepted) else "done_first"), result
    except (asyncio.CancelledError, TimeoutError):
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise  # our own cancellation, not the one under test
        return "cancelled", None
    except Exception as exc:  # counted and reported
        return "error", f"{type(exc).__name__}: {exc}"[:200]


OUTCOME_KEYS = ("n", "cancelled", "absorbed", "done_first", "in_time", "late", "errors",
                "wrong_replies", "followup_errors")


def cancel_plan(iterations: int) -> list[str]:
    modes = (["immediate"] * 2 + ["call_soon"] * 2 + ["yields_1", "yields_2", "yields_3",
             "yields_5", "yields_8"] * 1 + ["in_flight"] * 4 + ["wait_for"] * 6)
    # 19 per cycle, interleaved so that each mode follows every other.
    plan: list[str] = []
    while len(plan) < iterations:
        plan.extend(modes)
    rng = random.Random(7)
    plan = plan[:iterations]
    rng.shuffle(plan)
    return plan


async def child_cancel(args: argparse.Namespace) -> dict[str, Any]:
    admin = await Admin.connect(args.url)
    rng = random.Random(11)
    plan = cancel_plan(args.cancel_iterations)
    values = {i: f"v{i}:{rng.getrandbits(64):016x}".encode() for i in range(len(plan))}
    for i, value in values.items():
        admin.send("SET", f"{CANCEL_PREFIX}{i}", value, "EX", 600)
    for _ in values:
        await admin.reply()
    before_total = await admin.clients()
    adapter = make_adapter(args.child, args.url, 64)
    await adapter.open()
    out: dict[str, Any] = {"client": args.child, "iterations": len(plan), "modes": {}}
    wrong_samples: list[str] = []
    error_samples: dict[str, int] = {}
    first_failure: int | None = None
    stuck_after: int | None = None
    consecutive = 0
    try:
        for _ in range(20):
            assert hit_ok(await adapter.hit())
        connected = await admin.clients(adapter.client_name)
        connected_total = await admin.clients()
        for i, mode in enumerate(plan):
            m = out["modes"].setdefault(mode, dict.fromkeys(OUTCOME_KEYS, 0))
            m["n"] += 1
            adapter.busy_pending = False
            outcome, detail = await cancel_once(adapter, admin, mode, rng)
            if outcome == "error":
                m["errors"] += 1
                error_samples[f"call: {detail}"] = error_samples.get(f"call: {detail}", 0) + 1
            else:
                m[outcome] += 1
                if outcome != "cancelled" and not hit_ok(detail):
                    m["wrong_replies"] += 1
                    wrong_samples.append(f"{mode}: the call itself got {str(detail)[:60]}")
            key = f"{CANCEL_PREFIX}{i}"
            failed = outcome == "error"
            try:
                got = await asyncio.wait_for(adapter.get(key), 3.0)
                if got != values[i]:
                    failed = True
                    m["wrong_replies"] += 1
                    if isinstance(got, bytes) and got == PAGE:
                        what = "the page (one reply behind)"
                    else:
                        what = repr(got)[:60]
                    wrong_samples.append(f"{mode}: GET {key} got {what}")
            except Exception as exc:  # counted and reported
                failed = True
                m["followup_errors"] += 1
                text = f"follow-up GET: {type(exc).__name__}: {exc}"[:200]
                error_samples[text] = error_samples.get(text, 0) + 1
            if adapter.busy_pending:
                await admin.reply()  # the busy script's own reply
            if failed and first_failure is None:
                first_failure = i + 1
            consecutive = consecutive + 1 if failed else 0
            if consecutive >= 5:  # the client is stuck: stop rather than wait on each one
                stuck_after = i + 1
                break
        await asyncio.sleep(0.5)
        after = await admin.clients(adapter.client_name)
        after_total = await admin.clients()
        pool = adapter.pool_state()
        # Still usable at the end? (a pipeline needs a connection of its own from the pool)
        usable_error = None
        try:
            usable = hit_ok(await asyncio.wait_for(adapter.hit(), 3.0))
        except Exception as exc:  # counted and reported
            usable, usable_error = False, f"{type(exc).__name__}: {exc}"[:200]
    finally:
        await adapter.close()
    await asyncio.sleep(0.5)
    closed_total = await admin.clients()
    await admin.close()
    totals = {k: sum(m[k] for m in out["modes"].values()) for k in OUTCOME_KEYS}
    out.update({
        "totals": totals,
        "connections": {"before_client": before_total, "client_after_warmup": connected,
                        "client_after_cancellations": after,
                        "all_after_warmup": connected_total, "all_after_cancellations":
                        after_total, "all_after_close": closed_total,
                        "leaked": max(0, after - connected),
                        "left_open_after_close": max(0, closed_total - before_total)},
        "first_failure_at_iteration": first_failure,
        "stopped_stuck_after_iteration": stuck_after,
        "pool_after": pool,
        "usable_after": usable,
        "usable_after_error": usable_error,
        "wrong_samples": wrong_samples[:10],
        "error_samples": error_samples,
    })
    return out


def run_child(args: argparse.Namespace) -> None:
    import uvloop

    async def main() -> dict[str, Any]:
        if args.cancel_iterations and args.mode == "cancel":
            return await child_cancel(args)
        return await child_measure(args)

    try:
        result = uvloop.run(main())
    except BaseException as exc:  # the parent records why
        result = {"client": args.child, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-2000:]}
    print(json.dumps(result))


# The parent: set-up, rounds, the report -------------------------------------------------------
async def setup_keys(url: str) -> tuple[str, str]:
    admin = await Admin.connect(url)
    await cleanup(admin)
    await admin.call("HSET", PAGE_KEY, PAGE_FIELD, PAGE)
    await admin.call("SET", TOKEN_KEY, TOKEN)
    sha = (await admin.call("SCRIPT", "LOAD", SCRIPT)).decode()
    info = (await admin.call("INFO", "server")).decode()
    server = dict(ln.split(":", 1) for ln in info.splitlines() if ":" in ln)
    await admin.close()
    return sha, server.get("redis_version", "?")


async def cleanup(admin: Admin) -> int:
    deleted, cursor = 0, b"0"
    while True:
        cursor, keys = await admin.call("SCAN", cursor, "MATCH", "bench:*", "COUNT", 1000)
        if keys:
            deleted += await admin.call("UNLINK", *keys)
        if cursor in (b"0", 0):
            return deleted


async def cleanup_url(url: str) -> int:
    admin = await Admin.connect(url)
    try:
        return await cleanup(admin)
    finally:
        await admin.close()


def spawn(args: argparse.Namespace, client: str, mode: str, sha: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", client, "--mode", mode,
           "--url", args.url, "--count", str(args.count), "--sha", sha,
           "--concurrency", ",".join(map(str, args.concurrency)),
           "--cancel-iterations", str(args.cancel_iterations)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"client": client, "error": "timed out after 600 s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"client": client,
                "error": f"no result (exit {proc.returncode}): {proc.stderr[-1500:]}"}
    return json.loads(lines[-1])


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "rounds": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=20_000,
                        help="round trips per client, workload and concurrency")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--cancel-iterations", type=int, default=220,
                        help="cancellations per client (0: skip the test)")
    parser.add_argument("--cancel-only", action="store_true",
                        help="run only the cancellation test and replace that section of --out")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "redis_clients.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="measure", help=argparse.SUPPRESS)
    parser.add_argument("--sha", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must point at this machine (loopback)")
    if args.child:
        run_child(args)
        return

    clients = [c for c in args.clients.split(",") if c]
    started = time.time()
    sha, redis_version = asyncio.run(setup_keys(args.url))
    unavailable: dict[str, str] = {}
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    describe: dict[str, Any] = {}
    child_versions: dict[str, Any] = {}
    try:
        for rnd in range(0 if args.cancel_only else args.rounds):
            order = clients[rnd % len(clients):] + clients[:rnd % len(clients)]
            for client in order:
                if client in unavailable:
                    continue
                result = spawn(args, client, "measure", sha)
                if "error" in result:
                    unavailable[client] = result["error"]
                    print(f"round {rnd + 1}: {client} failed: {result['error']}", flush=True)
                    continue
                describe[client] = result["describe"]
                child_versions = result["versions"]
                result["round"] = rnd
                runs[client].append(result)
                brief = "  ".join(f"{k} {v['cpu_us_per_rt']:.1f}us {v['rt_per_s']:,.0f}/s"
                                  for k, v in result["measures"].items())
                print(f"round {rnd + 1} {client:18} {brief}", flush=True)
        cancellation: dict[str, Any] = {}
        if args.cancel_iterations:
            for client in clients:
                if client in unavailable:
                    continue
                cancellation[client] = spawn(args, client, "cancel", sha)
                c = cancellation[client]
                print(f"cancel {client:18} {c.get('totals', c.get('error'))} "
                      f"{c.get('connections', '')} usable after: {c.get('usable_after')} "
                      f"{c.get('usable_after_error') or ''}", flush=True)
    finally:
        deleted = asyncio.run(cleanup_url(args.url))
    now = datetime.now(UTC).strftime("%Y-%m-%d")
    command = "python bench/redis_clients.py " + " ".join(sys.argv[1:])
    if args.cancel_only:
        report = json.loads(args.out.read_text()) if args.out.exists() else {}
        report["cancellation"] = cancellation
        report["cancellation_run"] = {"date": now, "command": command,
                                      "python": platform.python_version(),
                                      "versions": versions()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote the cancellation section of {args.out}")
        return

    results: dict[str, Any] = {}
    for client in clients:
        if not runs[client]:
            continue
        results[client] = {}
        for key in runs[client][0]["measures"]:
            rows = [r["measures"][key] for r in runs[client]]
            ratios = []
            for r in runs[client]:
                base = next((b for b in runs.get(BASELINE, []) if b["round"] == r["round"]),
                            None)
                if base is not None:
                    ratios.append(r["measures"][key]["cpu_us_per_rt"]
                                  / base["measures"][key]["cpu_us_per_rt"])
            results[client][key] = {
                "cpu_us_per_rt": summary([x["cpu_us_per_rt"] for x in rows]),
                "ratio_to_redis_py_hiredis": summary(ratios) if ratios else None,
                "rt_per_s": summary([x["rt_per_s"] for x in rows]),
                "server_cpu_us_per_rt": summary([x["server_cpu_us_per_rt"] for x in rows]),
                "server_connections": max(x["server_connections"] for x in rows),
                "os_threads": max(x["os_threads"] for x in rows),
                "wrong_replies": sum(x["wrong_replies"] for x in rows),
                "round_trips": rows[0]["round_trips"],
            }
    report = {
        "what": "client CPU (process_time) per Redis round trip, async clients on uvloop",
        "date": now,
        "command": command,
        "settings": {"rounds": args.rounds, "count": args.count, "url": args.url,
                     "concurrency": args.concurrency, "warmup": WARMUP,
                     "cancel_iterations": args.cancel_iterations,
                     "page_bytes": len(PAGE), "token_bytes": len(TOKEN)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "redis_server": redis_version},
        "versions": child_versions,
        "clients": {c: {"describe": describe.get(c), "unavailable": unavailable.get(c)}
                    for c in clients},
        "results": results,
        "cancellation": cancellation,
        "keys_deleted_at_end": deleted,
        "elapsed_s": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({report['elapsed_s']} s)")


if __name__ == "__main__":
    main()
