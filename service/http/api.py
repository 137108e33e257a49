"""The HTTP edge: routes, parameter parsing and the response envelope."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import orjson
from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from marshmallow import Schema, ValidationError
from multidict import MultiDictProxy

from service.auth.tokens import Claims, Principal, TokenVerifier, authenticate_service
from service.clock import Clock
from service.coupons.pages import CouponPages
from service.db.repository import PageQuery, UseRefused
from service.hotpath.prebuilt import PageBytes, head_of, page_headers
from service.http.edge import X_REQUEST_ID, Edge
from service.http.errors import ApiError
from service.http.schemas import COUPONS_SCHEMA, MALL_ROUTER_SCHEMA, first_message
from service.keys import (
    clock_key,
    draining_key,
    local_miss_key,
    openapi_key,
    pages_key,
    principal_key,
    redis_key,
    repository_key,
    resolved_key,
    settings_key,
    verifier_key,
)
from service.observe import metrics

ROUTE_NAME = (
    "plugin.wechat-chat-sidebar.frontend.controller.customer.customer.couponsOfMemberByStatusV2"
)
PATH_PLUGIN = "/" + ROUTE_NAME
PATH_MALL_ROUTER = "/addons/yun_shop/api.php"
PATH_SHORT = "/api/v2/coupons"
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
T = TypeVar("T")


def _bad_request(field: str, msg: str) -> ApiError:
    return ApiError(400, msg, {field: [msg]})


def _last_wins(values: MultiDictProxy[Any]) -> dict[str, Any]:
    # PHP's $_GET/$_POST keep the last of repeated keys; the mall's callers rely on that.
    return {key: value for key, value in values.items() if isinstance(value, str)}


async def read_params(request: web.Request) -> dict[str, Any]:
    """Query string, overlaid by the body (the body wins), per its content type."""
    params = _last_wins(request.query)
    if request.method != "POST" or not request.body_exists:
        return params
    params.update(await _bounded(request, _read_body(request)))
    return params


async def _bounded(request: web.Request, reading: Awaitable[T]) -> T:
    """Reading the body, with its errors as the caller's."""
    try:
        # A client trickling its body must not hold the request open for long.
        async with asyncio.timeout(request.app[settings_key].body_timeout_seconds):
            return await reading
    except TimeoutError:
        msg = "请求体发送超时"
        raise ApiError(408, msg, {"body": [msg]}) from None
    except BAD_BODY:
        # A charset Python does not know, a corrupt compressed body, broken form encoding.
        raise _bad_request("body", "请求体无法解析，请检查编码与内容类型") from None


# What reading a malformed body raises inside aiohttp and the codecs (never a server fault).
# A multipart part with a malformed header raises the HTTP parser's own error (found by the
# fuzzer: a 500 before).
BAD_BODY = (ValueError, UnicodeDecodeError, LookupError, AssertionError,
            web.RequestPayloadError, HttpProcessingError)


async def _read_body(request: web.Request) -> dict[str, Any]:
    ctype = request.content_type
    if ctype in FORM_TYPES:
        return _last_wins(await request.post())
    raw = await request.read()
    if not raw.strip():
        return {}
    if ctype in JSON_TYPES:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _bad_request("body", "请求体不是合法的 JSON") from None
        if not isinstance(body, dict):
            raise _bad_request("body", "JSON 请求体必须是一个对象")
        return body
    raise _bad_request("body", "不支持的请求体类型，请使用表单、multipart 或 JSON")


def validate(schema: Schema, raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema's result for these raw parameters. Loading is pure, and the sidebar sends the
    same few parameter sets over and over: valid ones are memoised (bounded LRU)."""
    try:
        # The type is part of the key: True == 1 == 1.0 in Python, and only 1 is a valid page.
        key = (id(schema), tuple(sorted((k, type(v).__name__, v) for k, v in raw.items())))
        hash(key)
    except TypeError:  # a JSON body with a list or object in it: never valid, never cached
        return _load(schema, raw)
    cached = _VALIDATED.get(key)
    if cached is None:
        cached = _load(schema, raw)
        if len(_VALIDATED) >= _VALIDATED_MAX:
            _VALIDATED.pop(next(iter(_VALIDATED)))
        _VALIDATED[key] = cached
    return cached


_VALIDATED: dict[tuple, Mapping[str, Any]] = {}
_VALIDATED_MAX = 4096


def _load(schema: Schema, raw: Mapping[str, Any]) -> Mapping[str, Any]:
    try:
        return MappingProxyType(schema.load(raw))
    except ValidationError as exc:
        errors = exc.normalized_messages()
        raise ApiError(400, first_message(errors), errors) from None


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    """What a request asks for whatever the time: the token's claims (its time claims are
    checked on each request) and the page, the parameters validated."""

    claims: Claims
    query: PageQuery
    field: str  # the page's field in the member's cache entries


class ResolvedMemo(dict):
    """A request's path with its query string, its Authorization header and a small POST body
    (`coupons`, `_body_memo_key`), resolved once. The sidebar repeats the same few requests, and
    parsing, validating and checking them again was most of a local hit's own cost. Only what
    succeeded is kept; bounded (4,096 keys of at most about 1.5 KiB), oldest out first."""

    def __init__(self, max_entries: int = 4096) -> None:
        super().__init__()  # a dict itself: `get` is one C call on the hot path
        self.max_entries = max_entries

    def put(self, key: tuple, resolved: Resolved) -> None:
        if len(self) >= self.max_entries:
            self.pop(next(iter(self)))
        self[key] = resolved


class LocalAnswers:
    """The edge's fast path for the coupons GET routes (service/edge.py): a request resolved
    once before, answered from this process's copy of its page without waiting on anything,
    as prepared bytes where it may be (service/prebuilt.py); None for anything else, which
    `coupons` then answers (an expired token's 401 included). The app's parts are looked up
    once: `app[key]` is a Python call, four per hit."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._parts: tuple[ResolvedMemo, Clock, TokenVerifier, CouponPages] | None = None

    def __call__(self, request: web.Request,
                 rid: str) -> tuple[web.StreamResponse, Principal, str] | None:
        parts = self._parts
        if parts is None:
            app = self.app
            if pages_key not in app:  # not started yet
                return None
            parts = self._parts = (app[resolved_key], app[clock_key], app[verifier_key],
                                   app[pages_key])
        memo, clock, verifier, pages = parts
        if request.method != "GET":
            return None
        resolved = memo.get(get_memo_key(request))
        if resolved is None:
            return None
        now_s = clock.now_ms() // 1000
        try:
            principal = verifier.check(resolved.claims, now_s)
        except ApiError:
            return None
        page = pages.local_hit(resolved.query, resolved.field, now_s, principal.staff_id)
        if page is None:
            # `coupons` goes on from here, in the same step of the loop: nothing to do twice.
            request[local_miss_key] = (resolved, principal)
            return None
        if (request.version == HttpVersion11 and request.keep_alive
                and hdrs.IF_NONE_MATCH not in request.headers):
            body = page.body
            return PageBytes(head_of(page.etag, "local", len(body)), rid, body), principal, "local"
        response = _page_response(request, page.body, page.etag, "local")
        response.headers[X_REQUEST_ID] = rid
        return response, principal, "local"


async def coupons(request: web.Request) -> web.Response:
    app = request.app
    now_ms = app[clock_key].now_ms()
    now_s = now_ms // 1000
    pages = app[pages_key]
    tried = request.get(local_miss_key)
    if tried is not None:  # the fast path resolved it and found no local copy
        resolved, principal = tried
        request[principal_key] = principal  # for the request log line (tenant, member hash)
    else:
        key = (get_memo_key(request) if request.method == "GET"
               else await _body_memo_key(request))
        memo = app[resolved_key]
        resolved = memo.get(key) if key is not None else None
        if resolved is None:
            resolved = await _resolve(request, now_s)
            if key is not None:
                memo.put(key, resolved)
        principal = app[verifier_key].check(resolved.claims, now_s)
        request[principal_key] = principal
        page = pages.local_hit(resolved.query, resolved.field, now_s, principal.staff_id)
        if page is not None:
            return _page_response(request, page.body, page.etag, "local")
    now = dt.datetime.fromtimestamp(now_s, dt.UTC)
    result = await pages.get(resolved.query, now, staff_id=principal.staff_id, now_ms=now_ms)
    return _page_response(request, result.body, result.etag, result.outcome)


# The sidebar POSTs a small form; a body up to this size is part of the memo's key.
MEMO_BODY_BYTES = 1024
# A multipart body is read as a stream by aiohttp: it cannot be read once for the key and again
# for the parameters.
MEMO_BODY_TYPES = ("application/x-www-form-urlencoded", "application/json")


def get_memo_key(request: web.Request) -> tuple:
    """What decides a GET's meaning apart from the time: its path, query and Authorization."""
    return (request.raw_path, request.headers.get(hdrs.AUTHORIZATION))


async def _body_memo_key(request: web.Request) -> tuple | None:
    """What decides a POST's meaning apart from the time (a GET's: `get_memo_key`); None: not
    memoised."""
    if request.method != "POST":
        return None
    length = request.content_length
    if (length is None or length > MEMO_BODY_BYTES or request.content_type not in MEMO_BODY_TYPES
            or not request.content.is_eof()):
        return None
    # Whole in the buffer, so this cannot wait; kept by aiohttp for read_params (post() and
    # read() reuse it). A body that fails here fails again there, after the token's check, so
    # the errors keep their order (401 before 400).
    try:
        body = await request.read()
    except BAD_BODY:
        return None
    return (*get_memo_key(request), request.content_type,
            request.headers.get("Content-Encoding"), request.charset, body)


async def _resolve(request: web.Request, now_s: int) -> Resolved:
    """The token checked, then the parameters: the errors in the contract's order."""
    app = request.app
    mall_router = request.path == PATH_MALL_ROUTER
    if mall_router and request.query.get("route") != ROUTE_NAME:
        raise web.HTTPNotFound()
    verifier = app[verifier_key]
    claims = verifier.claims_of(request)
    principal = verifier.check(claims, now_s)
    request[principal_key] = principal
    params = validate(MALL_ROUTER_SCHEMA if mall_router else COUPONS_SCHEMA,
                      await read_params(request))
    if mall_router and params["i"] != principal.uniacid:
        msg = "参数 i 与身份令牌的商户不一致"
        raise ApiError(403, msg, {"i": [msg]})
    # A token naming the member decides alone (a `user_id` beside it is ignored); a staff token
    # reads only the contact it names, if its staff member follows that contact.
    contact = None
    if principal.member_id is None:
        contact = params.get("user_id")
        if contact is None:
            msg = "缺少参数 user_id（身份令牌未指定会员时必填）"
            raise ApiError(400, msg, {"user_id": [msg]})
    query = PageQuery(
        uniacid=principal.uniacid,
        member_id=principal.member_id,
        status=params["status_request"],
        coupon_type=params["coupon_type"],
        page=params["page"],
        pagesize=params["pagesize"],
        staff_userid=principal.staff_id if contact is not None else None,
        external_userid=contact,
    )
    return Resolved(claims, query, app[pages_key].field(query))


def _page_response(request: web.Request, body: bytes, etag: str, outcome: str) -> web.Response:
    headers = page_headers(etag, outcome)
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match and etag_matches(if_none_match, headers["ETag"]):
        headers = headers.copy()
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers)


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return etag in candidates or "*" in candidates


_MAX_ID = 2**63 - 1


async def use_member_coupon(request: web.Request) -> web.Response:
    """The mall marks a coupon used; the member's cached pages are gone before this answers."""
    app = request.app
    settings = app[settings_key]
    authenticate_service(request, settings.internal_service_token)
    raw_id = request.match_info["id"]
    member_coupon_id = int(raw_id) if len(raw_id) <= 19 else 0
    if not 0 < member_coupon_id <= _MAX_ID:
        msg = "参数 id 必须是正整数"
        raise ApiError(400, msg, {"id": [msg]})
    now = app[clock_key].now()
    try:
        used = await app[repository_key].use(member_coupon_id, now)
    except UseRefused as exc:
        if exc.reason == "already_used":
            msg = "该优惠券已使用"
            raise ApiError(409, msg, {"id": [msg]}) from None
        msg = "优惠券不存在"
        raise ApiError(404, msg, {"id": [msg]}) from None
    # Before answering: the next read through Redis must already see the use. If Redis fails
    # here the cache is untrusted (and bypassed) until coverage is proven again.
    await app[pages_key].invalidate_members(used.uniacid, [used.uid])
    metrics.CACHE_INVALIDATIONS.labels("use_api").inc()
    body = {"result": 1, "msg": "", "data": {
        "id": used.id, "uniacid": used.uniacid, "uid": used.uid, "used": 1,
        "use_time": int(used.use_time.timestamp()),
    }}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[openapi_key], content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[draining_key].is_set():
        # Shutting down: a load balancer must stop sending before the listener closes.
        return web.json_response({"status": "draining", "checks": {}}, status=503,
                                 dumps=json.dumps)
    timeout = app[settings_key].readiness_timeout_seconds
    checks: dict[str, str] = {}

    async def check(name: str, probe) -> None:
        try:
            async with asyncio.timeout(timeout):
                await probe
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the kind is enough detail
            checks[name] = f"unavailable ({type(exc).__name__})"

    await asyncio.gather(check("database", app[repository_key].ping()),
                         check("redis", app[redis_key].ping()))
    status = 200 if all(v == "ok" for v in checks.values()) else 503
    return web.json_response({"status": "ok" if status == 200 else "unavailable",
                              "checks": checks}, status=status, dumps=json.dumps)


def setup_routes(app: web.Application, edge: Edge) -> None:
    """Every route, through the edge; `Edge.close` (service/app.py) after the last one."""
    app[resolved_key] = ResolvedMemo()
    router = app.router
    local_answers = LocalAnswers(app)
    for path in (PATH_PLUGIN, PATH_MALL_ROUTER, PATH_SHORT):
        edge.route(router, "GET", path, coupons, fast=local_answers)
        edge.route(router, "POST", path, coupons)
    edge.route(router, "POST", r"/internal/member-coupons/{id:\d+}/use", use_member_coupon)
    edge.route(router, "GET", "/healthz", healthz)
    edge.route(router, "GET", "/readyz", readyz)
    edge.route(router, "GET", "/openapi.json", openapi_json)
