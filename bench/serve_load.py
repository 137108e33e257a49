"""Throughput of `serve --workers N` on cache hits, as a client on the same machine sees it.

    python -m bench.serve_load [--workers 1 2] [--seconds 10] [--concurrency 32] [--wrk]

Starts PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL are set), migrates, loads
the demo data, then for each worker count runs `python -m service serve` on 127.0.0.1 and a
bounded aiohttp client loop against it (one page of member 1 per request, keep-alive), then
SIGTERMs it. With --wrk the client is wrk (C, one thread), far lighter than the Python one.
The client shares the machine's cores with the server: read the figures as a comparison
between worker counts, not as the server's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import aiohttp

from service.auth.tokens import issue_token
from service.db.migrations import migrate
from service.runtime.demo import load_demo_data
from service.runtime.embedded import resolved
from service.settings import load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(base: str, token: str, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    params = {"client": "work", "type": "17", "status_request": "1", "coupon_type": "0"}
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    async with session.get(base + "/api/v2/coupons", params=params,
                                           headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(one() for _ in range(concurrency)))
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "rps": round(n / seconds), "errors": errors,
            "p50_ms": round(latencies[n // 2] * 1e3, 2),
            "p99_ms": round(latencies[int(n * 0.99)] * 1e3, 2)}


def load_wrk(base: str, token: str, seconds: float, concurrency: int) -> dict:
    url = base + "/api/v2/coupons?client=work&type=17&status_request=1&coupon_type=0"
    out = subprocess.run(
        [shutil.which("wrk") or "wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s",
         "--latency", "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": round(rps), "errors": int(non_2xx.group(1)) if non_2xx else 0,
            "p50_ms": round(float(p50.group(1)) * scale[p50.group(2)], 2),
            "p99_ms": round(float(p99.group(1)) * scale[p99.group(2)], 2)}


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(base + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("server not ready")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--wrk", action="store_true", help="use wrk as the client")
    args = parser.parse_args()
    with resolved(load_settings()) as settings:
        asyncio.run(migrate(settings.database_url))
        asyncio.run(load_demo_data(settings.database_url))
        token = issue_token(settings.auth_jwt_secret, 1, 1, "bench", 3600, int(time.time()))
        env = {**os.environ, "DATABASE_URL": settings.database_url,
               "REDIS_URL": settings.redis_url}
        for workers in args.workers:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers",
                 str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                asyncio.run(wait_ready(base))
                if args.wrk:
                    result = load_wrk(base, token, args.seconds, args.concurrency)
                else:
                    result = asyncio.run(load(base, token, args.seconds, args.concurrency))
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=60)
            print({"workers": workers, **result, "exit": code}, flush=True)


if __name__ == "__main__":
    main()
