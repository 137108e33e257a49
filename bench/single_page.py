"""One benchmark run: the ceiling and the service's three cache modes, in turn, repeated.

    python -m bench.single_page [--rounds 3] [--duration 10] [--connections 64] [--workers-scaling]

(a) bare aiohttp + uvloop answering the same bytes as a cached page (the ceiling here);
(b) the service on hot hits (process-local cache); (c) the service on Redis hits (local layer
off); (d) the service with every cache off (each request from PostgreSQL); (e) (d)'s ceiling:
bare aiohttp running the same page statement per request, rendering nothing; and (b) again with
the rate limiter on (limits too high to refuse: what the limiter's leases cost a hit). One
worker each, the same load generator (wrk, one thread, so it leaves a core to the server), the
variants in turn and the whole round repeated: this machine drifts, so the medians of the
rounds are what count. Every server runs for the whole benchmark (idle while another is
measured), so that a round's variants are measured seconds apart.
Prints req/s, p50, p99 (medians of the rounds) and the ratios to (a): the median of each
round's ratio (the headline: (a) ran beside the variant in the same round) and the ratio of the
medians; writes bench/results/latest.json and .png.
PostgreSQL and Redis are embedded unless DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from service.auth.tokens import issue_token
from service.db.migrations import migrate
from service.runtime.demo import load_demo_data
from service.runtime.embedded import resolved
from service.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
QUERY = "client=work&type=17&status_request=1&coupon_type=0&page=1"
PATH = "/api/v2/coupons"

VARIANTS = {
    "a_bare": {},
    "b_local_hits": {},
    "c_redis_hits": {"LOCAL_CACHE_ENABLED": "false"},
    "d_no_cache": {"CACHE_ENABLED": "false"},
    # (d)'s ceiling: bare aiohttp running the same statement per request, rendering nothing.
    "e_bare_statement": {},
}
# (b) with the rate limiter on, as deployed, but never refusing: what its leases cost a hit.
LIMITS_ON = {"RATE_LIMIT_STAFF_PER_MINUTE": "100000000", "RATE_LIMIT_STAFF_BURST": "1000000",
             "RATE_LIMIT_MEMBER_PER_MINUTE": "100000000", "RATE_LIMIT_MEMBER_BURST": "1000000"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} never became ready")


def fetch(port: int, token: str) -> tuple[bytes, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}?{QUERY}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read(), resp.headers.get("X-Cache", "")


def parse_wrk(out: str) -> dict:
    def ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
        return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def run_wrk(port: int, token: str, duration: int, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}{PATH}?{QUERY}"],
        capture_output=True, text=True, check=True, timeout=duration + 30).stdout
    return parse_wrk(out)


def start(variant: str, env: dict, body_file: Path,
          workers: int = 1) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if variant == "a_bare":
        cmd = [sys.executable, "-m", "bench.bare", "--port", str(port), "--body", str(body_file)]
    elif variant == "e_bare_statement":
        cmd = [sys.executable, "-m", "bench.bare_db", "--port", str(port), "--body",
               str(body_file), "--database-url", env["DATABASE_URL"]]
    else:
        cmd = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--workers", str(workers)]
    extra = LIMITS_ON if variant == "b_local_hits_limits_on" else VARIANTS.get(variant, {})
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, **extra},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def median_of(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    rps = [summary[n]["rps"] for n in names]
    fig, ax = plt.subplots(figsize=(12.5, 5))
    palette = ["#888", "#2a7", "#27a", "#a72", "#c96", "#6c9", "#7a2"]
    # "b_local_hits_limits_on" and its neighbours would overlap on one line.
    labels = [name.replace("_", "\n", 1).replace("_", " ") for name in names]
    bars = ax.bar(labels, rps, color=palette[: len(names)])
    for bar, name in zip(bars, names, strict=True):
        s = summary[name]
        ax.annotate(f"{s['rps']:.0f}/s\n×{s['ratio_to_a']:.2f}\np99 {s['p99_ms']:.1f} ms",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("requests/s (median of rounds)")
    ax.set_title("coupons endpoint, one worker, wrk -c64 (ratios to the bare aiohttp ceiling)")
    ax.set_ylim(0, max(rps) * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers-scaling", action="store_true",
                        help="also measure (b) with 2 workers")
    parser.add_argument("--only", default="",
                        help="comma-separated variants to run (a_bare always runs)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    RESULTS.mkdir(exist_ok=True)
    with resolved(load_settings()) as settings:
        asyncio.run(migrate(settings.database_url, display_tz=settings.display_tz))
        asyncio.run(load_demo_data(settings.database_url))
        # One staff member on one member at full speed: rate limits off but in the variant
        # that turns them on too high to refuse (their refusals are tested in
        # tests/limits/test_limiter.py), request logs as configured.
        env = {**os.environ, "DATABASE_URL": settings.database_url,
               "REDIS_URL": settings.redis_url, "AUTH_JWT_SECRET": settings.auth_jwt_secret,
               "RATE_LIMIT_STAFF_PER_MINUTE": "0", "RATE_LIMIT_MEMBER_PER_MINUTE": "0"}
        token = issue_token(settings.auth_jwt_secret, 1, 2, "bench", 86_400, int(time.time()))
        proc, port = start("b_local_hits", env, Path("/dev/null"))
        try:
            body, _ = fetch(port, token)
        finally:
            stop(proc)
        body_file = RESULTS / "page.json"
        body_file.write_bytes(body)
        variants = [*VARIANTS, "b_local_hits_limits_on"]
        if args.workers_scaling:
            variants.append("b_local_hits_2_workers")
        if args.only:
            wanted = {"a_bare", *args.only.split(",")}
            variants = [v for v in variants if v in wanted]
        rounds: dict[str, list[dict]] = {v: [] for v in variants}
        # Every variant's server runs for the whole benchmark and the rounds only alternate the
        # load: (a) and the variant after it are measured seconds apart, not a restart apart,
        # so they share a phase of the machine's drift.
        servers: dict[str, tuple[subprocess.Popen, int]] = {}
        try:
            for variant in variants:
                workers = 2 if variant.endswith("2_workers") else 1
                servers[variant] = start(variant.removesuffix("_2_workers"), env, body_file,
                                         workers)
            outcomes = {}
            for variant, (_, port) in servers.items():
                for _ in range(3):  # warm: fills the caches, prepares statements
                    got, outcomes[variant] = fetch(port, token)
                    assert got == body, "every variant must answer the same bytes"
            for n in range(args.rounds):
                for variant, (_, port) in servers.items():
                    result = run_wrk(port, token, args.duration, args.connections)
                    result["outcome"] = outcomes[variant]
                    rounds[variant].append(result)
                    print(f"round {n + 1} {variant:24} {result['rps']:9.0f} req/s  "
                          f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                          f"x-cache={result['outcome']} non2xx={result['non_2xx']}",
                          flush=True)
        finally:
            for proc, _ in servers.values():
                stop(proc)
    # The ratio of each round, then their median: (a) and the variant ran seconds apart, so a
    # phase of the machine's drift that slows one round mostly cancels out of its ratio. The
    # ratio of the medians is printed beside it.
    base = rounds["a_bare"]
    base_rps = median_of(base, "rps")
    summary = {v: {"rps": median_of(r, "rps"), "p50_ms": median_of(r, "p50_ms"),
                   "p99_ms": median_of(r, "p99_ms"),
                   "ratio_to_a": statistics.median(
                       x["rps"] / a["rps"] for x, a in zip(r, base, strict=True)),
                   "p99_to_a": statistics.median(
                       x["p99_ms"] / a["p99_ms"] for x, a in zip(r, base, strict=True)),
                   "ratio_of_medians": median_of(r, "rps") / base_rps}
               for v, r in rounds.items()}
    print(f"\n{'variant':26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x (a)':>8}{'p99/a':>8}"
          f"{'medians':>9}")
    for variant, s in summary.items():
        print(f"{variant:26}{s['rps']:9.0f}{s['p50_ms']:9.2f}{s['p99_ms']:9.2f}"
              f"{s['ratio_to_a']:8.2f}{s['p99_to_a']:8.2f}{s['ratio_of_medians']:9.2f}")
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "params": vars(args), "summary": summary, "rounds": rounds}
    (RESULTS / "latest.json").write_text(json.dumps(out, indent=2))
    plot(summary, RESULTS / "latest.png")
    print(f"\nwrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.png'}")


if __name__ == "__main__":
    main()
