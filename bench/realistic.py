"""The benchmark of the real path: `make bench`'s headline.

    python -m bench [--rounds 3] [--duration 8] [--members 20000] [--only NAMES]

The load is the sidebar's, as the mall sends it:
- 20,000 members of one tenant, six coupons each (bench/bigdata.py's loader), each with a staff
  token of its own (one staff member per member), so the token memo, the limiter's keys and
  the cache all see 20,000 parties;
- one tab per member: 70% unused, 15% expired, 15% used; mostly 全部, and 快过期 for a third of
  the unused; half of all requests a GET through the mall's router
  (`/addons/yun_shop/api.php?i=1&route=...`, no status_request: the unused tab, as the mall's
  page asks), the other half POST forms on the plugin route, as the seed documents;
- the project's default settings: rate limits on, the local layer on, one worker or two;
- every page warmed once, the mix sent to each service for `--settle` seconds right before its
  rounds (70, unmeasured: past the local layer's 60 s safety TTL, so that the rounds see the steady
  state and not the warm-up's pages all ending their TTL in the same minute), then wrk (`-t1`, C,
  one thread: it leaves a core to the server) sends the mix, each request drawn uniformly, or in the
  Zipf variant with a Zipf(1.0) skew over the members (a few customers are chatted with all the
  time; the member limit of 300/min then refuses the hottest with 429, which is counted apart from
  the 200s).

Against the same load, in the same round: a bare aiohttp + uvloop app that reads the body and
answers the same bytes (bench/bare.py --any-path). Variants (each a server that stays up for the
whole run; server by server, its settle and then its rounds, each round alternating the load
between bare and the service, so that each ratio is to a bare figure measured seconds before; the
2-worker figure over the 1-worker one is the ratio of their ratios):
  mix_1w, mix_2w           the mix, uniform, 1 and 2 workers (headline: mix_1w / bare)
  zipf_1w                  the mix with the Zipf skew, 1 worker
  overload_1w              the mix at 8x the connections (512), 1 worker, against bare at 512
  single_page              one member's one page over GET, rate limits off (secondary: the
                           figure this benchmark used to lead with)
For each: req/s of 2xx (goodput), p50 and p99 (wrk's, over all answers), the ratio to bare, and
from the service's /metrics over the run: the cache mix (local, hit, miss, bypass), PostgreSQL
page reads per request, 429s and 503 sheds, and 5xx other than sheds. Memory per active member:
the server's resident memory after the warm-up less before it, over the members.
Writes bench/results/realistic.json and realistic.png. Needs wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import concurrent.futures
import itertools
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import bigdata
from bench.single_page import ROOT, free_port, parse_wrk, wait_ready
from service.auth.tokens import issue_token
from service.runtime.embedded import resolved
from service.settings import load_settings

RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "mix.lua"
ROUTE = "plugin.wechat-chat-sidebar.frontend.controller.customer.customer.couponsOfMemberByStatusV2"
UNIACID = 1
ZIPF_S = 1.0
# Rate limits off: the single page is one member at full speed, which its limit would refuse.
LIMITS_OFF = {"RATE_LIMIT_STAFF_PER_MINUTE": "0", "RATE_LIMIT_MEMBER_PER_MINUTE": "0"}


def the_mix(members: int, secret: str, now: int) -> list[tuple[str, str, str, str]]:
    """(method, path, token, form body) per member: its one tab, as the module docstring says."""
    rng = random.Random(13)
    requests = []
    for member in range(1, members + 1):
        token = issue_token(secret, UNIACID, member, f"staff-{member}", 86_400, now)
        draw = rng.random()
        status = 1 if draw < 0.70 else 2 if draw < 0.85 else 3
        if status == 1:
            coupon_type = rng.choices((0, 10, 1, 2, 4, 7), (60, 30, 3, 3, 2, 2))[0]
        else:
            coupon_type = rng.choices((0, 1, 2, 7), (85, 5, 5, 5))[0]
        params = {"client": "work", "type": 17, "coupon_type": coupon_type, "page": 1}
        # Half of all requests are GETs: 5/7 of the unused tab's (70% x 5/7 = 50%).
        if status == 1 and rng.random() < 5 / 7:
            query = urllib.parse.urlencode({"i": UNIACID, "route": ROUTE, **params})
            requests.append(("GET", f"/addons/yun_shop/api.php?{query}", token, ""))
        else:
            body = urllib.parse.urlencode({**params, "status_request": status})
            requests.append(("POST", f"/{ROUTE}", token, body))
    return requests


def zipf_order(count: int, draws: int) -> list[int]:
    """`draws` 1-based request numbers, Zipf(ZIPF_S) over `count` (popularity not by id)."""
    rng = random.Random(17)
    ranks = list(range(1, count + 1))
    rng.shuffle(ranks)
    weights = list(itertools.accumulate(1 / (r ** ZIPF_S) for r in range(1, count + 1)))
    return [ranks[bisect.bisect_left(weights, rng.random() * weights[-1])] for _ in range(draws)]


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_ready(port, timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def metrics(self) -> dict[tuple[str, tuple], float]:
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[tuple[str, tuple], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    """The change of every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v - before.get(k, 0.0) for k, v in after.items()
               if k[0] == name and want <= set(k[1]))


def status_deltas(after: dict, before: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in after.items():
        if name == "coupons_http_requests_total":
            status = dict(labels)["status"]
            out[status] = out.get(status, 0) + value - before.get((name, labels), 0.0)
    return {k: v for k, v in out.items() if v}


def run_wrk(url: str, duration: int, connections: int, script_args: list[str]) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
         "-s", str(LUA), url, "--", *script_args],
        capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    result = parse_wrk(out)
    total = int(re_search(r"(\d+) requests in", out))
    result["requests"] = total
    result["goodput_rps"] = (total - result["non_2xx"]) / duration
    return result


def settle(servers: list[Server], seconds: int, connections: int,
           script_args: list[str]) -> dict[str, dict[str, int]]:
    """The mix on these services at once for `seconds`, unmeasured: the rounds then see each
    server's steady state rather than the warm-up's wave of pages, all filled within a minute,
    whose local safety TTL ends together (docs/performance.md, "The real path"). Returns each
    server's cache mix over it."""
    if seconds <= 0 or not servers:
        return {}
    print(f"settling for {seconds} s (the mix, unmeasured) ...", flush=True)
    befores = [server.metrics() for server in servers]
    with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda server: run_wrk(server.url, seconds, connections, script_args),
                      servers))
    mixes = {}
    for server, before in zip(servers, befores, strict=True):
        after = server.metrics()
        mixes[server.name] = {o: int(delta(after, before, "coupons_cache_requests_total",
                                           outcome=o))
                              for o in ("local", "hit", "miss", "coalesced", "bypass")}
        print(f"settled {server.name}: cache {mixes[server.name]}", flush=True)
    return mixes


def re_search(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"wrk printed no {pattern!r}: {text[-500:]}")
    return match.group(1)


async def warm(url: str, requests: list[tuple[str, str, str, str]]) -> dict[int, int]:
    """Every request once (the pages' first fills), 16 at a time: the statuses seen."""
    statuses: dict[int, int] = {}
    queue = list(requests)
    async with aiohttp.ClientSession() as session:
        async def one() -> None:
            while queue:
                method, path, token, body = queue.pop()
                headers = {"Authorization": f"Bearer {token}"}
                if method == "POST":
                    headers["Content-Type"] = "application/x-www-form-urlencoded"
                async with session.request(method, url + path, headers=headers,
                                           data=body or None) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        await asyncio.gather(*(one() for _ in range(16)))
    return statuses


VARIANTS = ("mix_1w", "mix_2w", "zipf_1w", "overload_1w", "single_page")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--settle", type=int, default=70,
                        help="seconds of the mix, unmeasured, after the warm-up (0: none)")
    parser.add_argument("--only", default="", help="comma-separated variants (default: all)")
    parser.add_argument("--env", action="append", default=[],
                        help="NAME=VALUE for the service's variants (a lever measured alone)")
    parser.add_argument("--label", default="", help="names this run's result file")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if not args.only or v in args.only.split(",")]
    RESULTS.mkdir(exist_ok=True)
    work = RESULTS / "realistic-inputs"
    work.mkdir(exist_ok=True)
    with resolved(load_settings()) as settings:
        print(f"loading {args.members:,} members, 6 coupons each ...", flush=True)
        asyncio.run(bigdata.load(settings.database_url, settings.display_tz, args.members,
                                 0, 0, per_member=6))
        requests = the_mix(args.members, settings.auth_jwt_secret, int(time.time()))
        mix_file = work / "requests.tsv"
        mix_file.write_text("".join(f"{m}\t{p}\t{t}\t{b}\n" for m, p, t, b in requests))
        order_file = work / "zipf.txt"
        order_file.write_text("".join(f"{i}\n" for i in zipf_order(len(requests), 200_000)))
        # The single page and the bare app's bytes: the first 全部 tab over GET that shows
        # coupons (a typical page of the mix; an empty tab would flatter the bare app).
        candidates = [r for r in requests if r[0] == "GET" and "coupon_type=0&" in r[1]]
        extra = dict(item.split("=", 1) for item in args.env)
        env = {**os.environ, "DATABASE_URL": settings.database_url,
               "REDIS_URL": settings.redis_url, "AUTH_JWT_SECRET": settings.auth_jwt_secret,
               **extra}
        servers: dict[str, Server] = {}
        memory: dict[str, float] = {}
        warmed: dict[str, dict[int, int]] = {}
        try:
            def service(name: str, workers: int, more: dict[str, str] | None = None) -> None:
                port = free_port()
                servers[name] = Server(name, [sys.executable, "-m", "service", "serve",
                                              "--host", "127.0.0.1", "--port", str(port),
                                              "--workers", str(workers)],
                                       {**env, **(more or {})}, port)

            needs = {"svc_1w": any(v in variants for v in ("mix_1w", "zipf_1w",
                                                            "overload_1w")),
                     "svc_2w": "mix_2w" in variants, "svc_single": "single_page" in variants}
            if needs["svc_1w"]:
                service("svc_1w", 1)
            if needs["svc_2w"]:
                service("svc_2w", 2)
            if needs["svc_single"]:
                service("svc_single", 1, LIMITS_OFF)
            first = next(iter(servers.values()))
            for candidate in candidates:
                request = urllib.request.Request(
                    first.url + candidate[1],
                    headers={"Authorization": f"Bearer {candidate[2]}"})
                with urllib.request.urlopen(request, timeout=10) as resp:
                    body = resp.read()
                if json.loads(body)["data"]["total"]:
                    single = [candidate]
                    break
            single_file = work / "single.tsv"
            single_file.write_text("".join(f"{m}\t{p}\t{t}\t{b}\n" for m, p, t, b in single))
            body_file = work / "page.json"
            body_file.write_bytes(body)
            port = free_port()
            servers["bare"] = Server("bare", [sys.executable, "-m", "bench.bare", "--port",
                                              str(port), "--body", str(body_file),
                                              "--any-path"], env, port)
            for name, server in servers.items():
                if name in ("svc_1w", "svc_2w"):
                    before = server.rss_bytes()
                    warmed[name] = asyncio.run(warm(server.url, requests))
                    memory[name] = (server.rss_bytes() - before) / len(requests)
                    print(f"warmed {name}: statuses {warmed[name]}, "
                          f"{memory[name]:.0f} bytes per active member", flush=True)
            settled: dict[str, dict[str, int]] = {}
            plan = {
                "mix_1w": ("svc_1w", args.connections, [str(mix_file)]),
                "mix_2w": ("svc_2w", args.connections, [str(mix_file)]),
                "zipf_1w": ("svc_1w", args.connections, [str(mix_file), str(order_file)]),
                "overload_1w": ("svc_1w", args.connections * 8, [str(mix_file)]),
                "single_page": ("svc_single", args.connections, [str(single_file)]),
            }
            rounds: dict[str, list[dict]] = {v: [] for v in variants}
            # Server by server: its settle, then all its rounds. A server left idle while the
            # others are measured sees its pages in use end their local TTL unused (the 2-worker
            # server, idle for 4 of 5 variants, went from 0.71 to 0.39 of bare over 3 rounds),
            # which no deployment serving its active set sees.
            blocks = [(name, [v for v in variants if plan[v][0] == name])
                      for name in ("svc_1w", "svc_2w", "svc_single")]
            for name, block in blocks:
                if not block:
                    continue
                if name != "svc_single":
                    settled.update(settle([servers[name]], args.settle, args.connections,
                                          [str(mix_file)]))
                for n, variant in itertools.product(range(args.rounds), block):
                    name, connections, script = plan[variant]
                    bare = run_wrk(servers["bare"].url, args.duration, connections, script)
                    server = servers[name]
                    before = server.metrics()
                    result = run_wrk(server.url, args.duration, connections, script)
                    after = server.metrics()
                    answered = result["requests"] or 1
                    result.update({
                        "bare": bare,
                        "ratio": result["goodput_rps"] / bare["goodput_rps"],
                        "p99_ratio": result["p99_ms"] / bare["p99_ms"],
                        "cache": {o: delta(after, before, "coupons_cache_requests_total",
                                           outcome=o)
                                  for o in ("local", "hit", "miss", "coalesced", "bypass")},
                        "db_reads_per_request":
                            delta(after, before, "coupons_db_page_reads_total") / answered,
                        "statuses": status_deltas(after, before),
                        "shed": delta(after, before, "coupons_http_shed_total"),
                        "redis_timeouts": delta(after, before, "coupons_redis_errors_total",
                                                kind="timeout"),
                        "failed_open": delta(after, before,
                                             "coupons_rate_limit_failed_open_total"),
                        # Full collections in the round and the loop time they held.
                        "gc_full": delta(after, before, "coupons_gc_pause_seconds_count",
                                         generation="2"),
                        "gc_full_seconds": delta(after, before, "coupons_gc_pause_seconds_sum",
                                                 generation="2"),
                    })
                    rounds[variant].append(result)
                    print(f"round {n + 1} {variant:12} {result['goodput_rps']:8.0f} 2xx/s  "
                          f"bare {bare['goodput_rps']:8.0f}  x{result['ratio']:.2f}  "
                          f"p50 {result['p50_ms']:.2f} p99 {result['p99_ms']:.1f} ms "
                          f"(bare {bare['p99_ms']:.1f})  statuses {result['statuses']}  "
                          f"cache {dict((k, int(v)) for k, v in result['cache'].items() if v)}"
                          f"  db/req {result['db_reads_per_request']:.4f}"
                          f"  full gc {result['gc_full']:.0f} ({result['gc_full_seconds']:.2f} s)",
                          flush=True)
        finally:
            for server in servers.values():
                server.stop()
    summary = {}
    for variant, rs in rounds.items():
        summary[variant] = {
            "goodput_rps": statistics.median(r["goodput_rps"] for r in rs),
            "bare_rps": statistics.median(r["bare"]["goodput_rps"] for r in rs),
            "ratio": statistics.median(r["ratio"] for r in rs),
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "bare_p99_ms": statistics.median(r["bare"]["p99_ms"] for r in rs),
            "p99_ratio": statistics.median(r["p99_ratio"] for r in rs),
            "db_reads_per_request": statistics.median(r["db_reads_per_request"] for r in rs),
            "cache": {o: sum(r["cache"][o] for r in rs) for o in rs[0]["cache"]},
            "statuses": {s: sum(r["statuses"].get(s, 0) for r in rs)
                         for s in sorted({s for r in rs for s in r["statuses"]})},
        }
    if "mix_1w" in summary and "mix_2w" in summary:
        # Each a ratio to bare in its own round: the two servers are measured minutes apart.
        summary["mix_2w"]["over_1w"] = summary["mix_2w"]["ratio"] / summary["mix_1w"]["ratio"]
    if "overload_1w" in summary and "mix_1w" in summary:
        summary["overload_1w"]["goodput_vs_normal"] = (summary["overload_1w"]["ratio"]
                                                       / summary["mix_1w"]["ratio"])
    print(f"\n{'variant':13}{'2xx/s':>9}{'bare':>9}{'x bare':>8}{'p50':>8}{'p99':>8}"
          f"{'bare p99':>9}{'db/req':>8}  cache mix, statuses")
    for variant, s in summary.items():
        cache = {k: int(v) for k, v in s["cache"].items() if v}
        print(f"{variant:13}{s['goodput_rps']:9.0f}{s['bare_rps']:9.0f}{s['ratio']:8.2f}"
              f"{s['p50_ms']:8.2f}{s['p99_ms']:8.1f}{s['bare_p99_ms']:9.1f}"
              f"{s['db_reads_per_request']:8.4f}  {cache} {s['statuses']}")
    for variant in ("mix_2w", "overload_1w"):
        if variant in summary:
            for key in ("over_1w", "goodput_vs_normal"):
                if key in summary[variant]:
                    print(f"{variant} {key}: {summary[variant][key]:.2f}")
    for name, per in memory.items():
        print(f"memory per active member ({name}): {per:.0f} bytes")
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "params": vars(args), "summary": summary, "memory_per_member": memory,
           "warm_statuses": warmed, "settle": settled, "rounds": rounds}
    stem = f"realistic{'-' + args.label if args.label else ''}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2, default=str))
    plot(summary, RESULTS / f"{stem}.png")
    print(f"\nwrote {RESULTS / (stem + '.json')} and .png")


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(11, 5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [summary[n]["bare_rps"] for n in names], 0.4,
           color="#999", label="bare aiohttp, same load")
    bars = ax.bar([x + 0.2 for x in xs], [summary[n]["goodput_rps"] for n in names], 0.4,
                  color="#2a7", label="the service (2xx)")
    for bar, name in zip(bars, names, strict=True):
        s = summary[name]
        ax.annotate(f"x{s['ratio']:.2f}\np99 {s['p99_ms']:.0f} ms\n"
                    f"db/req {s['db_reads_per_request']:.3f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("requests/s (median of rounds)")
    ax.set_title("the sidebar's mix: 20,000 members, own tokens, GET + POST, limits on")
    ax.legend()
    ax.set_ylim(0, max(max(summary[n]["bare_rps"], summary[n]["goodput_rps"])
                       for n in names) * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
