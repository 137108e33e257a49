"""`make compose-check`: docker-compose.yml run for real on this machine, with podman and local
stand-ins for the official images (deploy/README.md).

It builds the stand-ins (deploy/standins/build), serves podman's Docker-compatible API on a
socket of its own, and drives docker-compose against it:
1. `up --build -d`, as the README says, then waits until every replica of `app` is healthy and
   the load balancer answers: the time to healthy;
2. the README's curl, with a token from `python -m service token` in the app container: the
   seed's six coupons in member 1's expired tab; the app's uid (not root) and its read-only root;
3. the locust profile, headless, as the first load after `up`, for LOCUST_SECONDS (30):
   requests, failures, p50 and p99;
4. a rolling restart of `app` under the same load, one replica at a time, each back to healthy
   before the next: the requests that failed meanwhile (the target is 0);
5. Redis stopped: every replica unready, and lb's unchecked fallback still reaches them (answers
   from PostgreSQL, X-Cache bypass); Redis started again;
   every published port is bound to 127.0.0.1, and none answers on the host's other addresses;
6. /metrics through the balancer (the workers' shared metrics directory on the tmpfs), then
   `stop app`: each replica exits 0 on SIGTERM;
7. the size of every image; then `down -v`, whatever happened before.

podman here has no systemd to run health checks on their interval, so this script runs them
(`podman healthcheck run`) on each container's own interval, as the engine would.

Exit status 0 only if every step passed; the figures are printed either way.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANDINS = REPO / "deploy" / "standins"
PROJECT = "couponscheck"
NEEDED = {"podman": "podman", "runc": "runc", "docker-compose": "docker-compose",
          "debootstrap": "debootstrap"}
LOCUST_SECONDS = int(os.environ.get("LOCUST_SECONDS", "30"))
LOCUST_USERS = int(os.environ.get("LOCUST_USERS", "20"))
HEALTHY_TIMEOUT = 300
SEED_IDS = [155, 150, 146, 135, 134, 12]
ROUTE = "plugin.wechat-chat-sidebar.frontend.controller.customer.customer.couponsOfMemberByStatusV2"


def say(text: str) -> None:
    print(f"compose-check: {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """docker-compose and podman, with the environment that points them at each other."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def compose(self, *args: str, check: bool = True, load: bool = False,
                timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """`load`: with the `load` profile (locust), for `run locust` and `down`."""
        profile = ["--profile", "load"] if load else []
        return subprocess.run(["docker-compose", "-p", PROJECT, *profile, *args],
                              cwd=REPO, env=self.env, text=True, check=check, timeout=timeout,
                              capture_output=True)

    def podman(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["podman", *args], env=self.env, text=True, check=check,
                              capture_output=True, timeout=120).stdout

    def containers(self, service: str | None = None) -> list[str]:
        args = ["ps", "-q"] + ([service] if service else [])
        return self.compose(*args).stdout.split()

    def inspect(self, container: str) -> dict:
        return json.loads(self.podman("inspect", container))[0]

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        return (state.get("Health") or state.get("Healthcheck") or {}).get("Status", "none")


@contextmanager
def podman_service(env: dict[str, str]) -> Iterator[str]:
    """podman's Docker API on a socket of this run's own, stopped at the end."""
    folder = tempfile.mkdtemp(prefix="compose-check-")
    path = os.path.join(folder, "podman.sock")
    log = open(os.path.join(folder, "podman.log"), "w")  # closed below
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{path}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("compose-check: podman system service did not start")
            time.sleep(0.1)
        yield f"unix://{path}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


class HealthChecks(threading.Thread):
    """Runs each container's health check on its own interval: what the engine does where
    systemd runs its timers, and podman cannot here."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stopping = threading.Event()
        self.due: dict[str, float] = {}
        self.intervals: dict[str, float | None] = {}

    def run(self) -> None:
        # Once a second: each podman call costs this 2-core machine tens of ms of CPU.
        while not self.stopping.wait(1.0):
            try:
                running = self.stack.podman(
                    "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                    check=False).split()
            except subprocess.TimeoutExpired:
                continue
            now = time.monotonic()
            for container in running:
                if self.due.get(container, 0) > now:
                    continue
                interval = self.interval(container)
                self.due[container] = now + (interval or 3600)
                if interval:
                    self.stack.podman("healthcheck", "run", container, check=False)

    def interval(self, container: str) -> float | None:
        if container in self.intervals:
            return self.intervals[container]
        try:
            check = self.stack.inspect(container)["Config"].get("Healthcheck") or {}
        except (subprocess.CalledProcessError, json.JSONDecodeError, IndexError):
            return None
        every = None
        if check.get("Test") and check["Test"][0] != "NONE":
            every = (check.get("Interval") or 30_000_000_000) / 1e9
        self.intervals[container] = every
        return every

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def wait_until(condition, deadline: float, what: str) -> None:
    """Poll `condition` every 250 ms until it holds; past `deadline` (monotonic), fail naming
    `what`."""
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.25)


def in_rotation(stack: Stack) -> list[dict[str, str]]:
    """lb's checked servers of `app` that are UP (the unchecked fallbacks aside)."""
    return [row for row in balancer(stack)
            if row["svname"].startswith("app") and row["status"] == "UP"]


def wait_healthy(stack: Stack, base: str, started: float) -> float:
    deadline = started + HEALTHY_TIMEOUT
    while time.monotonic() < deadline:
        apps = stack.containers("app")
        if apps and all(stack.health(c) == "healthy" for c in apps):
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
        time.sleep(0.5)
    raise AssertionError(f"the stack was not healthy within {HEALTHY_TIMEOUT} s")


def readme_curl(stack: Stack, base: str) -> tuple[list[int], str]:
    """The README's compose curl, as written there, with the token it says how to get: the ids
    it answered, and that token."""
    token = stack.compose("exec", "-T", "app", "python", "-m", "service", "token",
                          "--uniacid", "1", "--member", "1").stdout.strip()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"""^curl -s '(http://localhost:8080/addons/[^']+)' """
                      r"""-H "Authorization: Bearer \$TOKEN"$""", readme, re.M)
    assert match, "the README has no compose curl (curl -s 'http://localhost:8080/addons/...')"
    url = match.group(1).replace("http://localhost:8080", base)
    out = subprocess.run(["curl", "-s", "--fail", url, "-H", f"Authorization: Bearer {token}"],
                         text=True, capture_output=True, check=True, timeout=30).stdout
    body = json.loads(out)
    assert body["result"] == 1, body
    return [item["id"] for item in body["data"]["data"]["data"]], token


def without_redis(stack: Stack, base: str, token: str) -> list[str]:
    """Redis stopped: every replica's /readyz fails and lb takes them all out of rotation; its
    unchecked fallback servers still reach them, and they answer from PostgreSQL. Then Redis
    back, and both replicas back in rotation."""
    stack.compose("stop", "-t", "2", "redis")
    try:
        wait_until(lambda: not in_rotation(stack), time.monotonic() + 30,
                   "lb kept a replica in rotation without Redis")
        url = f"{base}/api/v2/coupons?status_request=2&type=17&client=work&page=1"
        outcomes = []
        for _ in range(5):
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    body = json.loads(resp.read())
                    ok = body.get("result") == 1
                    outcomes.append(f"{resp.status if ok else 'result 0'} "
                                    f"{resp.headers.get('X-Cache')}")
            except OSError as exc:
                outcomes.append(f"{getattr(exc, 'code', type(exc).__name__)}")
        return outcomes
    finally:
        stack.compose("start", "redis")
        replicas = len(stack.containers("app"))
        wait_until(lambda: len(in_rotation(stack)) >= replicas, time.monotonic() + 60,
                   "the replicas did not come back into rotation")


def app_confinement(stack: Stack) -> tuple[int, bool]:
    """The app's uid, and whether its root file system is mounted writable (read_only: it must
    not be; the uid alone could not write to / anyway, so the mount itself is read)."""
    probe = ("import os\n"
             "root = [l.split()[3] for l in open('/proc/self/mounts') if l.split()[1] == '/']\n"
             "print(os.getuid(), 'rw' in root[-1].split(','))")
    out = stack.compose("exec", "-T", "app", "python", "-c", probe).stdout.split()
    return int(out[0]), out[1] == "True"


def locust(stack: Stack, seconds: int) -> dict:
    """The locust profile, headless, from inside the stack's network; its --json statistics."""
    result = stack.compose(
        "run", "--rm", "--no-deps", "locust", "-f", "/mnt/locust/locustfile.py",
        "--host", "http://lb:8080", "--headless", "-u", str(LOCUST_USERS), "-r", "10",
        "-t", f"{seconds}s", "--json", "--only-summary", "--stop-timeout", "10",
        check=False, load=True, timeout=seconds + 180)
    stats = _json_list(result.stdout)
    if stats is None:
        raise AssertionError(f"locust printed no statistics (exit {result.returncode}): "
                             f"{result.stderr[-2000:]}")
    requests = sum(s["num_requests"] for s in stats)
    failures = sum(s["num_failures"] for s in stats)
    times: dict[float, int] = {}
    for entry in stats:
        for ms, count in entry["response_times"].items():
            times[float(ms)] = times.get(float(ms), 0) + count
    errors = {}
    for line in result.stderr.splitlines():
        if "Error report" in line or re.match(r"^\s*\d+\s+\S", line):
            errors[line.strip()] = True
    return {"requests": requests, "failures": failures, "p50_ms": _percentile(times, 0.50),
            "p99_ms": _percentile(times, 0.99), "rps": round(requests / seconds, 1),
            "errors": list(errors)[:10] if failures else []}


def _json_list(text: str) -> list | None:
    start = text.find("[")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError:
            start = text.find("[", start + 1)
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict) \
                and "num_requests" in value[0]:
            return value
        start = text.find("[", start + 1)
    return None


def _percentile(histogram: dict[float, int], q: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= q * total:
            return ms
    return max(histogram)


def rolling_restart(stack: Stack) -> tuple[dict, list[float]]:
    """Each replica of `app` restarted in turn (SIGTERM: drain, finish, exit), the next only once
    the one before is healthy again, while locust runs; the failures locust saw."""
    apps = stack.containers("app")
    seconds = max(LOCUST_SECONDS, 25 * len(apps) + 10)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(locust(stack, seconds)))
    runner.start()
    time.sleep(5)  # the users are up and running before the first replica goes
    took = []
    for container in apps:
        started = time.monotonic()
        stack.podman("restart", "--time", "30", container)
        # Healthy again means a check that passed after this start: the status itself may
        # still read "healthy" from before the restart.
        deadline = started + 120
        wait_until(lambda c=container: passed_since_start(stack.inspect(c)["State"]), deadline,
                   f"replica {container[:12]} was not healthy again in 120 s")
        # ... and back in the balancer's rotation, at its new address, before the next goes.
        address = ip_of(stack.inspect(container))
        wait_until(lambda a=address: any(row["addr"].split(":")[0] == a
                                          for row in in_rotation(stack)), deadline,
                   f"lb did not put {container[:12]} ({address}) back")
        took.append(round(time.monotonic() - started, 1))
    runner.join()
    if not outcome:
        raise AssertionError("the locust run under the restart printed nothing")
    return outcome, took


def ip_of(inspected: dict) -> str:
    networks = inspected["NetworkSettings"].get("Networks") or {}
    return next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))


def balancer(stack: Stack) -> list[dict[str, str]]:
    """lb's servers of the backend `app` (deploy/haproxy.cfg, :8404/stats, not published: read
    at lb's address on the stack's network, which the host reaches)."""
    lb = stack.containers("lb")[0]
    url = f"http://{ip_of(stack.inspect(lb))}:8404/stats;csv"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return []
    header, *rows = text.lstrip("# ").splitlines()
    names = header.split(",")
    servers = [dict(zip(names, row.split(","), strict=False)) for row in rows]
    return [s for s in servers if s["pxname"] == "app" and s["svname"] not in ("FRONTEND",
                                                                               "BACKEND")]


def passed_since_start(state: dict) -> bool:
    health = state.get("Health") or state.get("Healthcheck") or {}
    started = state.get("StartedAt", "")
    # RFC 3339 times of one engine, to the nanosecond: compare them as instants.
    return state.get("Running", False) and any(
        entry.get("ExitCode") == 0 and _instant(entry.get("Start", "")) > _instant(started)
        for entry in health.get("Log") or [])


def _instant(text: str) -> float:
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not match:
        return 0.0
    whole = datetime.datetime.fromisoformat(match.group(1) + match.group(3).replace("Z", "+00:00"))
    return whole.timestamp() + float("0." + (match.group(2) or "0"))


def published_ports(stack: Stack) -> list[str]:
    """Every published port of the stack: "host_ip:host_port->container_port"."""
    out = []
    for container in stack.containers():
        ports = stack.inspect(container)["NetworkSettings"].get("Ports") or {}
        for inner, bindings in ports.items():
            for binding in bindings or []:
                out.append(f"{binding['HostIp'] or '0.0.0.0'}:{binding['HostPort']}->{inner}")
    return out


def reachable_beyond_loopback(published: list[str]) -> list[str]:
    """Each published port tried on this host's other addresses: none may answer."""
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                               check=False).stdout.split()
    answered = []
    for address in (a for a in addresses if ":" not in a and not a.startswith("127.")):
        for port in (p.split("->")[0].rsplit(":", 1)[1] for p in published):
            try:
                with socket.create_connection((address, int(port)), timeout=1):
                    answered.append(f"{address}:{port}")
            except OSError:
                pass
    return answered


def metrics_samples(base: str) -> int:
    """The coupons_ samples of /metrics through lb (one replica's workers, merged by
    prometheus-client from the multiprocess directory on the read-only image's tmpfs)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(1 for line in text.splitlines() if line.startswith("coupons_"))


def stop_codes(stack: Stack) -> list[int]:
    """`compose stop app`: SIGTERM, drain, finish, and each replica's exit code (0 wanted)."""
    apps = stack.containers("app")
    stack.compose("stop", "-t", "30", "app")
    return [stack.inspect(c)["State"]["ExitCode"] for c in apps]


def image_sizes(stack: Stack, images: dict[str, str]) -> dict[str, str]:
    sizes = {}
    for name in [*images.values(), "coupons-sidebar:local"]:
        size = stack.podman("image", "inspect", "--format", "{{.Size}}", name, check=False).strip()
        sizes[name] = f"{int(size) / 1e6:.0f} MB" if size.isdigit() else "?"
    return sizes


def main() -> int:
    missing = [pkg for cmd, pkg in NEEDED.items() if shutil.which(cmd) is None]
    if missing:
        print("compose-check needs Debian's " + ", ".join(missing) + ": apt-get install -y "
              + " ".join(missing), file=sys.stderr)
        return 2
    # One check at a time on a machine: they share the project name, and one's `down -v`
    # would remove the network another is creating.
    lock = open(os.path.join(tempfile.gettempdir(), "coupons-compose-check.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("compose-check: another compose check is running here", file=sys.stderr)
        return 2
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get(
        "CONTAINERS_CONF", str(STANDINS / "containers.conf"))}
    figures: dict[str, object] = {}
    failed: list[str] = []
    started = time.monotonic()
    say("building the stand-in images (deploy/standins/build)")
    built = subprocess.run([str(STANDINS / "build")], env=env, text=True, check=True,
                           capture_output=True, timeout=1200)
    images = dict(line.split("=", 1) for line in built.stdout.split())
    figures["stand-ins built in"] = f"{time.monotonic() - started:.0f} s"
    ports = {name: str(free_port()) for name in
             ("APP_PORT", "POSTGRES_PORT", "REDIS_PORT", "LOCUST_PORT")}
    base = f"http://127.0.0.1:{ports['APP_PORT']}"
    with podman_service(env) as docker_host:
        stack = Stack({**env, **images, **ports, "DOCKER_HOST": docker_host})
        checks = HealthChecks(stack)
        checks.start()
        try:
            stack.compose("down", "-v", "--remove-orphans", check=False, load=True)
            say("docker-compose up --build -d")
            up_started = time.monotonic()
            up = stack.compose("up", "--build", "-d", check=False)
            if up.returncode != 0:
                raise AssertionError(f"compose up failed: {up.stderr[-3000:]}")
            figures["up (build included) to healthy"] = \
                f"{wait_healthy(stack, base, up_started):.1f} s"
            say("the README's curl")
            ids, token = readme_curl(stack, base)
            figures["README curl: expired tab of member 1"] = ids
            if not set(SEED_IDS) <= set(ids) or [i for i in ids if i in SEED_IDS] != SEED_IDS:
                failed.append(f"the README's curl did not show the seed's six: {ids}")
            user, writable = app_confinement(stack)
            figures["app: uid, root file system writable"] = [user, writable]
            if user == 0 or writable:
                failed.append(f"app runs as uid {user}, root writable: {writable}")
            # The first load after `up`, judged: it is the one that once met Redis calls
            # timing out on a late event loop and on new connections (deploy/README.md,
            # "The first load after up").
            say(f"locust, headless, {LOCUST_USERS} users for {LOCUST_SECONDS} s")
            load = locust(stack, LOCUST_SECONDS)
            figures["locust"] = load
            if load["failures"] or not load["requests"]:
                failed.append(f"locust: {load['failures']} failures of {load['requests']}")
            say("a rolling restart of app under load")
            restart, took = rolling_restart(stack)
            figures["rolling restart: locust"] = restart
            figures["rolling restart: seconds per replica"] = took
            if restart["failures"]:
                failed.append(f"{restart['failures']} requests failed during the restart")
            say("Redis stopped: every replica unready, lb's fallback still reaches the service")
            outcomes = without_redis(stack, base, token)
            figures["Redis stopped: answers through lb (status, X-Cache)"] = outcomes
            if any(o != "200 bypass" for o in outcomes):
                failed.append(f"with Redis stopped, lb answered {outcomes}")
            published = published_ports(stack)
            figures["published"] = published
            if any(not p.startswith("127.0.0.1:") for p in published):
                failed.append(f"a port is published beyond 127.0.0.1: {published}")
            reachable = reachable_beyond_loopback(published)
            figures["published ports answering on another address"] = reachable
            if reachable:
                failed.append(f"published ports answer beyond 127.0.0.1: {reachable}")
            say("metrics through lb, then a stop of app")
            samples = metrics_samples(base)
            figures["/metrics: coupons_ samples (workers' shared directory on the tmpfs)"] = samples
            if not samples:
                failed.append("/metrics had no coupons_ samples")
            codes = stop_codes(stack)
            figures["app stopped (SIGTERM): exit codes"] = codes
            if any(code != 0 for code in codes):
                failed.append(f"a replica did not exit 0 on SIGTERM: {codes}")
            figures["image sizes"] = image_sizes(stack, images)
        except (AssertionError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", None) or ""
            failed.append(f"{type(exc).__name__}: {exc} {detail[-2000:]}")
            logs = stack.compose("logs", "--no-color", "--tail", "40", check=False)
            print(logs.stdout[-8000:], file=sys.stderr)
        finally:
            if failed:
                logs = stack.compose("logs", "--no-color", "--tail", "60", "lb", check=False)
                print(logs.stdout[-6000:], file=sys.stderr)
                # The replicas' warnings and every /readyz that was not a quick 200.
                logs = stack.compose("logs", "--no-color", "app", check=False)
                for line in logs.stdout.splitlines():
                    if '"WARNING"' in line or '"ERROR"' in line or (
                            '"/readyz"' in line and '"status":200' not in line):
                        print(line[:400], file=sys.stderr)
            if os.environ.get("COMPOSE_CHECK_KEEP") == "1":
                say(f"left up (COMPOSE_CHECK_KEEP=1): DOCKER_HOST={docker_host}, project "
                    f"{PROJECT}, {base}; Enter takes it down")
                input()
            checks.stop()
            say("docker-compose down -v")
            stack.compose("down", "-v", "--remove-orphans", check=False, load=True)
    figures["whole check"] = f"{time.monotonic() - started:.0f} s"
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    for failure in failed:
        print(f"compose-check FAILED: {failure}", file=sys.stderr)
    if not failed:
        say("passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
