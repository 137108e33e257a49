"""Every failure as the contract's error envelope (service/http/edge.py applies it to every
route): the one place where a failure becomes an HTTP status. `answer_for` maps the domain's
refusals (the coupons' pages, the rate limiter, the use API, tokens) by the table `REFUSALS`,
the HTTP layer's own errors (ApiError: a parameter, a body) as they are, and anything else as a
dependency that is down (503) or a bug (500)."""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from service.auth.tokens import Unauthorized
from service.coupons.errors import MemberElsewhere, MemberNotFound, NotFollowing
from service.db.repository import UseRefused
from service.http.headers import COMMON
from service.limits.limiter import RateLimited
from service.observe import metrics
from service.runtime.lag import Overloaded

log = logging.getLogger(__name__)


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


class Envelope(web.Response):
    """A response carrying the error envelope: the one kind ERROR_STYLE may restyle."""


def bad_request(field: str, msg: str) -> ApiError:
    return ApiError(400, msg, {field: [msg]})


def envelope(status: int, msg: str, errors: Mapping[str, Sequence[str]] | None = None,
             headers: Mapping[str, str] | None = None) -> Envelope:
    fields = {k: list(v) for k, v in (errors or {}).items()}
    body = {"result": 0, "msg": msg, "data": {"errors": fields}}
    return Envelope(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


# Under ERROR_STYLE=mall the error's own status travels in this header (the HTTP status is 200).
X_ERROR_STATUS = "X-Error-Status"


def styled(response: web.StreamResponse, style: str) -> web.StreamResponse:
    """The response as ERROR_STYLE sends it. `mall`: an error envelope goes out as HTTP 200 (its
    body says `result: 0`), as the mall's own endpoints answer, because the mall's pages show
    `msg` only on a 200 and nothing at all otherwise. Every header stays (Retry-After,
    WWW-Authenticate, Allow), and the error's status is kept in X-Error-Status. Callers record
    the status they saw before this: metrics and logs keep the real outcome."""
    if style == "mall" and isinstance(response, Envelope) and response.status >= 400:
        response.headers[X_ERROR_STATUS] = str(response.status)
        response.set_status(200)
    return response


# Errors aiohttp raises itself (routing, body size): what the caller is told.
HTTP_ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("request", "请求格式不正确"),
    404: ("route", "请求的接口不存在"),
    405: ("method", "请求方法不被允许"),
    413: ("body", "请求体超过大小上限"),
}
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="coupons"'}


def _refusal(exc: Exception) -> tuple[int, str, str, dict[str, str] | None]:
    """(status, field, message, headers) of a domain refusal."""
    if isinstance(exc, Unauthorized):
        return 401, "authorization", exc.msg, _CHALLENGE
    if isinstance(exc, MemberNotFound):
        return 404, "member_id", "会员不存在", None
    if isinstance(exc, MemberElsewhere):
        return 403, "member_id", "该会员不属于当前商户", None
    if isinstance(exc, NotFollowing):
        return 403, "user_id", "参数 user_id 不是当前员工的外部联系人", None
    if isinstance(exc, RateLimited):
        return 429, "request", "请求过于频繁，请稍后重试", {"Retry-After": str(exc.retry_after)}
    assert isinstance(exc, UseRefused)
    if exc.reason == "already_used":
        return 409, "id", "该优惠券已使用", None
    return 404, "id", "优惠券不存在", None


REFUSALS = (Unauthorized, MemberNotFound, MemberElsewhere, NotFollowing, RateLimited,
            UseRefused)
UNAVAILABLE_MSG = "服务暂时不可用，请稍后重试"
INTERNAL_MSG = "服务内部错误，请稍后重试"

# The database or the network to it failed: the caller may retry; nothing about it is shown.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError,
               asyncpg.InterfaceError, asyncpg.InternalClientError,
               asyncpg.OperatorInterventionError,
               asyncpg.TooManyConnectionsError, asyncpg.LockNotAvailableError)


def answer_for(exc: Exception, rid: str, max_body_bytes: int) -> web.Response:
    """The response for a failure the handler raised; a bug is logged (kind and place only)."""
    if isinstance(exc, ApiError):
        return envelope(exc.status, exc.msg, exc.errors, exc.headers)
    if isinstance(exc, REFUSALS):
        status, field, msg, headers = _refusal(exc)
        return envelope(status, msg, {field: [msg]}, headers)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        field, msg = HTTP_ERRORS.get(exc.status, ("request", exc.reason))
        if exc.status == 413:
            msg = f"请求体超过 {_size(max_body_bytes)} 上限"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return envelope(exc.status, msg, {field: [msg]}, headers)
    if isinstance(exc, Overloaded):
        # Past capacity: shed at once, expected under overload, so not logged per request.
        metrics.SHED.labels("loop_late").inc()
        return unavailable()
    log_failure(exc, rid)
    if isinstance(exc, UNAVAILABLE):
        return unavailable()
    return internal_error()


def _size(nbytes: int) -> str:
    return f"{nbytes // 1024} KiB" if nbytes % 1024 == 0 else f"{nbytes} 字节"


def log_failure(exc: Exception, rid: str) -> None:
    """A failure that is not the caller's: its kind and place only (a driver's message may
    quote a statement or a host)."""
    if isinstance(exc, UNAVAILABLE):
        log.warning("dependency unavailable request_id=%s kind=%s at=%s", rid,
                    type(exc).__name__, where(exc))
    else:
        log.error("unhandled error request_id=%s kind=%s at=%s", rid, type(exc).__name__,
                  where(exc))


def malformed(style: str) -> Callable[[int], Envelope]:
    """The answer to HTTP that never reached a route (service/compat/aiohttp.py): the envelope
    of the parser's status, in ERROR_STYLE, quoting nothing of the request and naming no
    version."""

    def answer(status: int) -> Envelope:
        if status >= 500:
            response = internal_error()
        else:
            field, msg = HTTP_ERRORS.get(status, ("request", "请求格式不正确"))
            response = envelope(status, msg, {field: [msg]})
        styled(response, style)
        response.headers.update(COMMON)
        return response

    return answer


def unavailable() -> Envelope:
    return envelope(503, UNAVAILABLE_MSG, {"service": [UNAVAILABLE_MSG]}, {"Retry-After": "1"})


def internal_error() -> Envelope:
    """A bug's answer: the envelope with nothing of the failure in it (the log has its kind and
    place), so that even this reaches the mall's page as a message."""
    return envelope(500, INTERNAL_MSG, {"service": [INTERNAL_MSG]})


class _RequestIds:
    """16 hex digits: a random per-process prefix and a counter. Unique across workers and
    restarts without a system call per request (os.urandom was 0.8 µs of a 40 µs hit)."""

    def __init__(self) -> None:
        self.renew()
        # A forked worker must not count on from its parent's prefix.
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = os.urandom(4).hex()
        self.count = itertools.count()


_ids = _RequestIds()


def request_id_of(header: str | None) -> str:
    """The caller's X-Request-ID if it is sane, else a new one."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return f"{_ids.prefix}{next(_ids.count) & 0xFFFFFFFF:08x}"
