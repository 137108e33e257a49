"""One middleware turns every failure into the contract's error envelope."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from service.keys import request_id_key

log = logging.getLogger("service.errors")


class _SafeServerLog(logging.LoggerAdapter):
    """aiohttp's connection-level logger (malformed HTTP, a client gone mid-response): its
    records would carry a stack trace and the parser's message, which may quote request bytes.
    Only the exception's kind is kept."""

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None,
            **kwargs: Any) -> None:
        if isinstance(exc_info, BaseException):
            kind = type(exc_info).__name__
        elif exc_info:
            kind = "exception"
        else:
            kind = ""
        if self.isEnabledFor(level):
            self.logger.log(level, "http connection error %s", kind)

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, exc_info=exc_info)


server_log = _SafeServerLog(logging.getLogger("service.http"), {})


def where(exc: BaseException) -> str:
    """The innermost frame of `exc` as `file:line`: where to look, without a stack trace (whose
    locals and SQL text must not reach a log)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"

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
HTTP_ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("request", "请求格式不正确"),
    404: ("route", "请求的接口不存在"),
    405: ("method", "请求方法不被允许"),
    413: ("body", "请求体超过 64 KiB 上限"),
}
UNAVAILABLE_MSG = "服务暂时不可用，请稍后重试"

# The database or the network to it failed: the caller may retry; nothing about it is shown.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError,
               asyncpg.InterfaceError, asyncpg.InternalClientError,
               asyncpg.OperatorInterventionError,
               asyncpg.TooManyConnectionsError, asyncpg.LockNotAvailableError)


def error_middleware_for(request_timeout: float):
    """The one error middleware; `request_timeout` bounds a whole request (503 past it)."""

    @web.middleware
    async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
        rid = request.headers.get("X-Request-ID", "")
        if not _REQUEST_ID.fullmatch(rid):
            rid = os.urandom(8).hex()
        request[request_id_key] = rid
        try:
            async with asyncio.timeout(request_timeout):
                response = await handler(request)
        except ApiError as exc:
            response = envelope(exc.status, exc.msg, exc.errors, exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            field, msg = HTTP_ERRORS.get(exc.status, ("request", exc.reason))
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = envelope(exc.status, msg, {field: [msg]}, headers)
        except UNAVAILABLE as exc:
            # The kind only: a driver's message may quote a statement or a host.
            log.warning("dependency unavailable request_id=%s kind=%s at=%s", rid,
                        type(exc).__name__, where(exc))
            response = envelope(503, UNAVAILABLE_MSG, {"service": [UNAVAILABLE_MSG]},
                                {"Retry-After": "1"})
        except Exception as exc:
            log.error("unhandled error request_id=%s kind=%s at=%s", rid, type(exc).__name__,
                      where(exc))
            response = web.Response(status=500, text="Internal Server Error")
        response.headers["X-Request-ID"] = rid
        return response

    return error_middleware
