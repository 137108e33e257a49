"""Running the app: one process, or a pre-forked parent and N workers on one listening socket.

Why a pre-fork on one shared socket (docs/operations.md, "Process model"): the parent binds once
and forks; every worker accepts from the same kernel queue. When a worker stops accepting (it is
draining) the connections still queued are taken by the others; with SO_REUSEPORT each worker
has its own queue, and the connections queued on a closing one are reset. gunicorn's aiohttp
worker would do the same pre-fork with its own config, signals and timeouts on top of ours, for
nothing we need.

A worker's stop, on SIGTERM or SIGINT:
1. `/readyz` answers 503 at once (a load balancer stops sending), while everything else is still
   served for SHUTDOWN_DRAIN_SECONDS (0 by default: nobody polls readiness locally);
2. the listener closes (new connections: refused once no worker listens);
3. requests in flight finish, for at most SHUTDOWN_GRACE_SECONDS (then they are cancelled);
4. the pools and the LISTEN connection close (the app's cleanup contexts); exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from service.observe import MULTIPROC_ENV
from service.settings import Settings

log = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# How long the parent waits past a worker's own bounds before it kills it.
KILL_MARGIN_SECONDS = 5.0


def _loop_factory():
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop.new_event_loop


async def serve_app(app: web.Application, settings: Settings, *,
                    sock: socket.socket | None = None, host: str | None = None,
                    port: int | None = None, stop: asyncio.Event | None = None,
                    on_listening: Callable[[], None] | None = None) -> None:
    """Serve `app` until SIGTERM/SIGINT (or `stop`), then drain and stop as the module says."""
    from service.http.connections import make_runner
    from service.keys import draining_key

    # The per-connection bounds (header sizes and count, keep-alive) come from the app's
    # handler_args (service/http/connections.py); a client that hangs up stops its request's
    # work (loads and fills are shielded).
    runner = make_runner(app, access_log=None, handle_signals=False,
                         shutdown_timeout=settings.shutdown_grace_seconds,
                         handler_cancellation=True)
    await runner.setup()  # the cleanup contexts start: pools, Redis, the LISTEN task
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    # Held back since the process started (run_worker): a signal that came during start-up is
    # delivered now, to the handler above, and becomes an orderly stop.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        if sock is not None:
            site: web.BaseSite = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        log.info("listening", extra={"fields": {"address": site.name}})
        if on_listening is not None:
            on_listening()
        await stop.wait()
        app[draining_key].set()
        log.info("draining: /readyz answers 503",
                 extra={"fields": {"drain_seconds": settings.shutdown_drain_seconds}})
        if settings.shutdown_drain_seconds:
            await asyncio.sleep(settings.shutdown_drain_seconds)
        await site.stop()
        log.info("listener closed; finishing requests in flight",
                 extra={"fields": {"grace_seconds": settings.shutdown_grace_seconds}})
    finally:
        # Idle keep-alive connections close, handlers in flight get the grace period, then the
        # cleanup contexts close the pools. The handlers stay: a second SIGTERM during the grace
        # changes nothing (the parent enforces the hard limit).
        await runner.cleanup()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("stopped")


# The cyclic collector's thresholds in a worker (Python's: 700, 10, 10). A request makes a few
# dozen short-lived containers that outlive 64 requests in flight, so at 700 allocations per
# young collection they were promoted to the oldest generation by the thousand, and a full
# collection, which walks every live cache and memo entry, ran every 6 s for about 300 ms: the
# realistic mix's p99 (docs/performance.md, "The real path"). Young collections every 50,000
# net allocations let them die young; the refcounts free nearly everything anyway.
GC_THRESHOLDS = (50_000, 20, 20)


def run_worker(settings: Settings, sock: socket.socket | None, host: str, port: int,
               on_listening: Callable[[], None] | None = None) -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    # Until serve_app listens for them, a stop signal would kill the process mid-start.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    from service.app import create_app

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve_app(create_app(settings), settings, sock=sock, host=host, port=port,
                             on_listening=on_listening))


@contextlib.contextmanager
def _metrics_dir():
    """PROMETHEUS_MULTIPROC_DIR for the workers: the operator's (emptied of a previous run's
    files, which would otherwise add to the totals) or a temporary one removed at exit."""
    given = os.environ.get(MULTIPROC_ENV)
    if "prometheus_client" in sys.modules and not given:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory "
                           "was set: the workers' metrics would not be shared")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="coupons-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def serve(settings: Settings, host: str, port: int, workers: int,
          on_listening: Callable[[], None] | None = None) -> int:
    """`on_listening` runs once connections are accepted (queued, with N > 1 workers)."""
    if workers < 1:
        raise SystemExit("serve: --workers must be at least 1")
    if workers == 1:
        run_worker(settings, None, host, port, on_listening)
        return 0
    with _metrics_dir():
        return _prefork(settings, host, port, workers, on_listening)


def _prefork(settings: Settings, host: str, port: int, workers: int,
             on_listening: Callable[[], None] | None = None) -> int:
    sock = socket.create_server((host, port), backlog=1024)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=run_worker, args=(settings, sock, host, port),
                         name=f"worker-{n}") for n in range(workers)]
    for proc in procs:
        proc.start()
    # The parent never accepts: once every worker has closed its copy, the socket is gone and
    # new connections are refused rather than left in a queue nobody reads.
    sock.close()
    log.info("workers started", extra={"fields": {"workers": [p.pid for p in procs]}})
    if on_listening is not None:
        on_listening()  # the socket was bound before the fork: connections queue until then

    stopping_since: float | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping_since
        if stopping_since is None:
            stopping_since = time.monotonic()
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # A worker past its drain and twice its grace (aiohttp waits once for handlers, once more
    # after cancelling them) is stuck: kill it rather than hang the deployment.
    limit = (settings.shutdown_drain_seconds + 2 * settings.shutdown_grace_seconds
             + KILL_MARGIN_SECONDS)
    from service.observe import metrics

    reaped: set[int] = set()
    while any(proc.is_alive() for proc in procs):
        multiprocessing.connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=1.0)
        for proc in procs:
            if not proc.is_alive() and proc.pid not in reaped and proc.pid is not None:
                reaped.add(proc.pid)
                metrics.mark_process_dead(proc.pid)
        # A worker that dies on its own takes the others down: the supervisor (compose,
        # systemd) restarts the whole service rather than running on with fewer workers.
        if stopping_since is None and any(not p.is_alive() for p in procs):
            log.error("a worker exited unexpectedly; stopping the others")
            forward(signal.SIGTERM, None)
        if stopping_since is not None and time.monotonic() - stopping_since > limit:
            for proc in procs:
                if proc.is_alive():
                    log.error("worker %s did not stop in time; killing it", proc.pid)
                    proc.kill()
    for proc in procs:
        proc.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    log.info("stopped", extra={"fields": {"exit_codes": [p.exitcode for p in procs]}})
    return 1 if failed else 0
