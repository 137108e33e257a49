"""`python -m service migrate | serve | demo-data | token | dev` (contract: Operating it)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import os
import sys
import time
from collections.abc import Mapping
from urllib.parse import urlencode

from service.auth.tokens import issue_token
from service.db.migrations import migrate
from service.observe import logs
from service.runtime import server
from service.runtime.demo import load_demo_data
from service.runtime.embedded import resolved
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


# The mall profile: what the mall's own sidebar page needs (docs/CONTRACT.md).
MALL_PROFILE = {"response_shape": "paginator", "error_style": "mall"}


def dev_settings(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`make run`'s defaults, each overridden by its own environment variable: the mall profile
    (the demo page is the mall's page, and the printed curl is its request) and text logs for
    a terminal."""
    defaults = {**MALL_PROFILE, "log_format": "text"}
    return dataclasses.replace(settings, **{
        name: value for name, value in defaults.items() if not env.get(name.upper())})


def banner(settings: Settings, host: str, port: int) -> str:
    """What `dev` prints once it accepts connections: where to look, a token, a curl."""
    # Here, not at the top: service.api imports prometheus_client, which must not be imported
    # before `serve` has set the workers' multiprocess directory (service/runtime/server.py).
    from service.http.coupons import PATH_MALL_ROUTER, ROUTE_NAME

    base = f"http://{host}:{port}"
    token = _token(settings, 1, 1)
    profile = f"RESPONSE_SHAPE={settings.response_shape}, ERROR_STYLE={settings.error_style}"
    if all(getattr(settings, k) == v for k, v in MALL_PROFILE.items()):
        profile = f"the mall's ({profile})"
    # As the mall's sidebar page asks (GET through its router), for the expired tab
    # (status_request=2), where the seed's 2017 coupons are.
    query = urlencode({"i": 1, "type": 17, "route": ROUTE_NAME, "client": "work",
                       "status_request": 2, "coupon_type": 0, "page": 1})
    lines = ["", f"Serving the demo data on {base}", "", f"  profile             {profile}"]
    if settings.dev_pages:
        lines += [f"  demo sidebar page   {base}/demo/",
                  f"  API docs            {base}/docs/"]
    lines += [f"  token of member 1   {token}", "",
              "  Member 1's expired tab, the seed's six coupons:",
              f"  curl -s '{base}{PATH_MALL_ROUTER}?{query}' -H 'Authorization: Bearer {token}'",
              "", "Ctrl-C stops it. Request lines follow.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"settings: {exc}", file=sys.stderr)
        return 2
    dev = args.command == "dev"
    if dev:
        try:
            settings = dev_settings(settings, os.environ)
        except SettingsError as exc:
            print(f"settings: {exc}", file=sys.stderr)
            return 2
    logs.configure(settings)
    if args.command == "token":
        print(_token(settings, args.uniacid, args.member, args.staff, args.ttl))
        return 0
    if dev:
        # One line for the schema below, not one per migration file.
        logging.getLogger("service.db.migrations").setLevel(logging.WARNING)
    with resolved(settings) as live:
        if args.command in ("migrate", "dev"):
            applied = asyncio.run(migrate(live.database_url, display_tz=live.display_tz))
            if applied:
                log.info("schema at %s: %d migration(s) applied", applied[-1], len(applied))
            else:
                log.info("schema up to date: no migration pending")
        if args.command in ("demo-data", "dev"):
            asyncio.run(load_demo_data(live.database_url))
            log.info("demo data loaded: tenant 1 (members 1-20), tenant 2 (members 1001, 1002)")
        if args.command in ("serve", "dev"):
            # The whole set once per start; in a terminal it is a screenful: LOG_LEVEL=DEBUG.
            logs.log_settings(live, logging.DEBUG if dev else logging.INFO)
            announce = None
            if dev:
                def announce() -> None:
                    print(banner(live, args.host, args.port), flush=True)
            try:
                return server.serve(live, args.host, args.port, args.workers, announce)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                print(f"serve: {args.host}:{args.port} is already in use (another `make run`?); "
                      "choose another with --port (make run PORT=8081)", file=sys.stderr)
                return 2
    return 0
