"""`python -m service migrate | serve | demo-data | token | dev` (contract: Operating it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import shlex
import signal
import socket
import sys
import time

from aiohttp import web

from service.auth import issue_token
from service.demo import load_demo_data
from service.embedded import resolved
from service.migrations import migrate
from service.settings import Settings, SettingsError, load_settings

log = logging.getLogger("service")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply sql/migrations to DATABASE_URL")
    sub.add_parser("demo-data", help="load the demo tenants (uniacid 1 and 2)")
    for name, helptext in (("serve", "serve until SIGTERM/SIGINT"),
                           ("dev", "migrate, load demo data, print a curl, then serve")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8080)
        p.add_argument("--workers", type=int, default=1)
    token = sub.add_parser("token", help="print a staff token for a local try")
    token.add_argument("--uniacid", type=int, required=True)
    token.add_argument("--member", type=int, required=True)
    token.add_argument("--staff", default="demo-staff")
    token.add_argument("--ttl", type=int, default=86_400, help="lifetime in seconds")
    return parser


def _token(settings: Settings, uniacid: int, member: int, staff: str = "demo-staff",
           ttl: int = 86_400) -> str:
    return issue_token(settings.auth_jwt_secret, uniacid, member, staff, ttl, int(time.time()))


def _try_it(settings: Settings, host: str, port: int) -> str:
    token = _token(settings, 1, 1)
    url = (f"http://{host}:{port}/plugin.wechat-chat-sidebar.frontend.controller.customer."
           "customer.couponsOfMemberByStatusV2")
    return (f"curl -s -X POST {shlex.quote(url)} -H 'Authorization: Bearer {token}' "
            "-d client=work -d type=17 -d status_request=1 -d coupon_type=0 -d page=1")


def _run_worker(settings: Settings, sock: socket.socket | None, host: str, port: int) -> None:
    from service.app import create_app

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        uvloop = None
    # The per-connection bounds (header line and field sizes, header count, keep-alive) are the
    # app's `handler_args` (service.app.handler_args), which AppRunner hands to every
    # connection's handler: this runner, the tests' and any other get the same ones.
    web.run_app(
        create_app(settings),
        sock=sock,
        host=None if sock else host,
        port=None if sock else port,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
        keepalive_timeout=settings.http_keepalive_seconds,
        # A client that hangs up stops its request's work (loads and fills are shielded).
        handler_cancellation=True,
        loop=uvloop.new_event_loop() if uvloop else None,
    )


def _serve(settings: Settings, host: str, port: int, workers: int) -> int:
    log.info("settings %s", settings.masked())
    if workers < 1:
        raise SystemExit("serve: --workers must be at least 1")
    if workers == 1:
        _run_worker(settings, None, host, port)
        return 0
    # Pre-fork: one listening socket shared by N processes, each with its own loop and pools;
    # the kernel hands each connection to whichever worker accepts first.
    sock = socket.create_server((host, port), backlog=1024)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_run_worker, args=(settings, sock, host, port))
             for _ in range(workers)]
    for proc in procs:
        proc.start()

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # A worker that dies on its own takes the others down: the supervisor (compose, systemd)
    # restarts the whole service rather than running on with fewer workers unnoticed.
    while any(proc.is_alive() for proc in procs):
        multiprocessing.connection.wait([p.sentinel for p in procs if p.is_alive()])
        if not stopping and any(not p.is_alive() for p in procs):
            log.error("a worker exited unexpectedly; stopping the others")
            forward(signal.SIGTERM, None)
    for proc in procs:
        proc.join()
    sock.close()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        print(_token(settings, args.uniacid, args.member, args.staff, args.ttl))
        return 0
    with resolved(settings) as live:
        if args.command in ("migrate", "dev"):
            applied = asyncio.run(migrate(live.database_url))
            log.info("migrations applied: %s", applied or "none pending")
        if args.command in ("demo-data", "dev"):
            asyncio.run(load_demo_data(live.database_url))
            log.info("demo data loaded: tenant 1 (members 1-20), tenant 2 (members 1001, 1002)")
        if args.command == "dev":
            print("\nReady. Try it:\n\n  " + _try_it(live, args.host, args.port) + "\n",
                  flush=True)
        if args.command in ("serve", "dev"):
            return _serve(live, args.host, args.port, args.workers)
    return 0
