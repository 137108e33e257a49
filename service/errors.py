"""One middleware turns every failure into the contract's error envelope."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence

import asyncpg
import orjson
from aiohttp import web

from service.keys import request_id_key

log = logging.getLogger("service.errors")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ApiError(Exception):
    """A failure the caller caused or may retry: the envelope, never logged as a bug."""

    def __init__(
        self,
        status: int,
        msg: str,
        errors: Mapping[str, Sequence[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.errors = dict(errors or {})
        self.headers = dict(headers or {})


def envelope(status: int, msg: str, errors: Mapping[str, Sequence[str]] | None = None,
             headers: Mapping[str, str] | None = None) -> web.Response:
    fields = {k: list(v) for k, v in (errors or {}).items()}
    body = {"result": 0, "msg": msg, "data": {"errors": fields}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


# Errors aiohttp raises itself (routing, body size): what the caller is told.
_HTTP_ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("request", "请求格式不正确"),
    404: ("route", "请求的接口不存在"),
    405: ("method", "请求方法不被允许"),
    413: ("body", "请求体超过 64 KiB 上限"),
}

# The database or the network to it failed: the caller may retry; nothing about it is shown.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError,
               asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
               asyncpg.TooManyConnectionsError, asyncpg.QueryCanceledError)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-ID", "")
    if not _REQUEST_ID.fullmatch(rid):
        rid = os.urandom(8).hex()
    request[request_id_key] = rid
    try:
        response = await handler(request)
    except ApiError as exc:
        response = envelope(exc.status, exc.msg, exc.errors, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        field, msg = _HTTP_ERRORS.get(exc.status, ("request", exc.reason))
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = envelope(exc.status, msg, {field: [msg]}, headers)
    except UNAVAILABLE:
        log.warning("dependency unavailable", exc_info=True, extra={"request_id": rid})
        msg = "服务暂时不可用，请稍后重试"
        response = envelope(503, msg, {"service": [msg]}, {"Retry-After": "1"})
    except Exception:
        log.exception("unhandled error request_id=%s", rid)
        response = web.Response(status=500, text="Internal Server Error")
    response.headers["X-Request-ID"] = rid
    return response
