"""What aiohttp needs per connection: the bounds every runner of the app applies, and a runner
whose connections answer malformed HTTP with the contract's envelope (service/compat/aiohttp.py).
`serve` and the tests' servers use both, so a huge, idle or malformed client is met the same
way everywhere."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.compat import aiohttp as compat
from service.http.errors import malformed, server_log
from service.keys import settings_key
from service.settings import Settings


def handler_args(settings: Settings) -> dict[str, object]:
    """aiohttp's per-connection bounds (docs/security.md, "Bounds"): every runner of this app,
    the CLI's and the tests' alike, gets them, so a huge or idle client is cut off the same
    way."""
    return {
        "max_line_size": settings.http_max_line_bytes,
        "max_field_size": settings.http_max_field_bytes,
        "max_headers": settings.http_max_headers,
        "keepalive_timeout": settings.http_keepalive_seconds,
        # After a response that left body bytes unread, wait at most this long for them.
        "lingering_time": 1.0,
        "logger": server_log,
    }


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """An AppRunner for `app` whose connections answer malformed HTTP in its ERROR_STYLE."""
    return compat.runner(app, answer=malformed(app[settings_key].error_style), **kwargs)


def make_test_server(app: web.Application, **kwargs: Any) -> Any:
    """The same, as aiohttp's TestServer (for the tests' clients)."""
    return compat.test_server(app, answer=malformed(app[settings_key].error_style), **kwargs)
