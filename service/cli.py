"""`python -m service migrate | serve | demo-data | token | dev` (contract: Operating it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
import time

from service import logs, server
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
    token.add_argument("--member", type=int, default=None,
                       help="the member; omitted: a staff token for the sidebar's contact flow "
                            "(the request then names user_id)")
    token.add_argument("--staff", default="demo-staff")
    token.add_argument("--ttl", type=int, default=86_400, help="lifetime in seconds")
    return parser


def _token(settings: Settings, uniacid: int, member: int | None, staff: str = "demo-staff",
           ttl: int = 86_400) -> str:
    return issue_token(settings.auth_jwt_secret, uniacid, member, staff, ttl, int(time.time()))


def _try_it(settings: Settings, host: str, port: int) -> str:
    token = _token(settings, 1, 1)
    url = (f"http://{host}:{port}/plugin.wechat-chat-sidebar.frontend.controller.customer."
           "customer.couponsOfMemberByStatusV2")
    return (f"curl -s -X POST {shlex.quote(url)} -H 'Authorization: Bearer {token}' "
            "-d client=work -d type=17 -d status_request=1 -d coupon_type=0 -d page=1")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"settings: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings)
    if args.command == "token":
        print(_token(settings, args.uniacid, args.member, args.staff, args.ttl))
        return 0
    with resolved(settings) as live:
        if args.command in ("migrate", "dev"):
            applied = asyncio.run(migrate(live.database_url, display_tz=live.display_tz))
            log.info("migrations applied: %s", applied or "none pending")
        if args.command in ("demo-data", "dev"):
            asyncio.run(load_demo_data(live.database_url))
            log.info("demo data loaded: tenant 1 (members 1-20), tenant 2 (members 1001, 1002)")
        if args.command == "dev":
            print("\nReady. Try it:\n\n  " + _try_it(live, args.host, args.port) + "\n",
                  flush=True)
        if args.command in ("serve", "dev"):
            logs.log_settings(live)
            return server.serve(live, args.host, args.port, args.workers)
    return 0
