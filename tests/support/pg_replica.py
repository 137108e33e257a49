"""A real PostgreSQL primary and a streaming standby (pgserver's binaries, unix sockets only)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from service.runtime.embedded import embedded_postgres

# Found without importing pgserver (its import warns; service.runtime.embedded imports it under
# a filter).
BIN = Path(importlib.util.find_spec("pgserver").origin).resolve().parent / "pginstall" / "bin"


def _as_postgres_user() -> dict[str, str]:
    # PostgreSQL refuses to run as root; pgserver runs its servers as the `pgserver` user.
    return {"user": "pgserver"} if os.geteuid() == 0 else {}


def _run(*args: str, timeout: float = 60) -> None:
    subprocess.run([str(BIN / args[0]), *args[1:]], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_as_postgres_user())


@contextlib.contextmanager
def primary_and_standby(directory: Path, database: str = "coupons") -> Iterator[tuple[str, str]]:
    """Yields (primary URL, standby URL); the standby streams from the primary, hot standby on.
    pg_basebackup -R writes the standby's primary_conninfo and standby.signal."""
    with embedded_postgres(directory / "primary", database=database) as primary_url:
        socket_dir = parse_qs(urlsplit(primary_url).query)["host"][0]
        standby = directory / "standby"
        standby.mkdir()
        if os.geteuid() == 0:
            shutil.chown(standby, "pgserver", "pgserver")
        standby.chmod(0o700)
        _run("pg_basebackup", "-D", str(standby), "-h", socket_dir, "-U", "postgres", "-R",
             "-X", "stream", "-c", "fast")
        # The primary keeps its socket and its lock in its data directory: the copy has them.
        for stale in standby.glob(".s.PGSQL.*"):
            stale.unlink()
        _run("pg_ctl", "-D", str(standby), "-w", "-l", str(standby / "standby.log"),
             "-o", '-h ""', "-o", f"-k {standby}", "start", timeout=30)
        try:
            yield primary_url, f"postgresql://postgres@/{database}?host={standby}"
        finally:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                _run("pg_ctl", "-D", str(standby), "-m", "immediate", "stop", timeout=30)


def stop_standby(standby_url: str) -> None:
    directory = parse_qs(urlsplit(standby_url).query)["host"][0]
    _run("pg_ctl", "-D", directory, "-m", "immediate", "stop", timeout=30)
