"""`python -m service ...` as blocking subprocesses, for synchronous tests: run a command, query
the database it worked on, serve until /healthz answers and read pages over plain HTTP.
(tests/support/processes.py has the asynchronous `serve` of the black-box cache tests.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.auth.tokens import issue_token
from tests.support import processes
from tests.support.common import SECRET
from tests.support.processes import REPO, free_port, service_command

START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
# Never send 127.0.0.1 through a proxy that the environment may name.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cli_env(**settings: str) -> dict[str, str]:
    """The test run's environment without any service setting, plus the suite's AUTH_JWT_SECRET
    and `settings`."""
    return processes.cli_env(**{"AUTH_JWT_SECRET": SECRET, **settings})


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(service_command(*args), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def http_get(url: str, headers: dict[str, str] | None = None,
             timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with OPENER.open(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running {timeout}s after the signal:\n{self.output()}")


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path, *extra: str) -> Iterator[Server]:
    """`serve` on a free port, once it answers /healthz 200; killed if the test left it up."""
    port = free_port()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            service_command("serve", "--host", "127.0.0.1", "--port", str(port), *extra),
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_healthy(server)
        yield server
    finally:
        if proc.poll() is None:
            for pid in children_of(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def wait_healthy(server: Server) -> None:
    """Poll /healthz with short retries until 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, _ = http_get(server.base + "/healthz", timeout=1)
            if status == 200:
                return
            last = status
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        try:
            # Waiting on the process doubles as the pause between tries.
            code = server.proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"server exited with {code} before it was healthy:\n{server.output()}")
    pytest.fail(f"/healthz not 200 within {START_TIMEOUT}s (last: {last!r}):\n{server.output()}")


def get_coupons(server: Server, uniacid: int = 1, member: int = 1) -> dict[str, Any]:
    token = issue_token(SECRET, uniacid, member, "staff-cli", 3600, int(time.time()))
    status, body = http_get(
        server.base + "/api/v2/coupons?client=work&type=17",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert status == 200, body
    return json.loads(body)
