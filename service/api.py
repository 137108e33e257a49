"""The HTTP edge: routes, parameter parsing and the response envelope."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from marshmallow import Schema, ValidationError
from multidict import MultiDictProxy

from service import domain
from service.auth import authenticate
from service.errors import ApiError
from service.keys import clock_key, redis_key, repository_key, settings_key
from service.repository import CouponPage, PageQuery
from service.schemas import COUPONS_SCHEMA, MALL_ROUTER_SCHEMA, first_message

ROUTE_NAME = "plugin.wechat-chat-sidebar.frontend.controller.customer.customer.couponsOfMemberByStatusV2"
PATH_PLUGIN = "/" + ROUTE_NAME
PATH_MALL_ROUTER = "/addons/yun_shop/api.php"
PATH_SHORT = "/api/v2/coupons"
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


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
    try:
        body = await _read_body(request)
    except BAD_BODY:
        # A charset Python does not know, a corrupt compressed body, broken form encoding.
        raise _bad_request("body", "请求体无法解析，请检查编码与内容类型") from None
    params.update(body)
    return params


# What reading a malformed body raises inside aiohttp and the codecs (never a server fault).
BAD_BODY = (ValueError, UnicodeDecodeError, LookupError, AssertionError,
            web.RequestPayloadError)


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


def validate(schema: Schema, raw: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(raw)
    except ValidationError as exc:
        errors = exc.normalized_messages()
        raise ApiError(400, first_message(errors), errors) from None


def render_page(page: CouponPage, query: PageQuery, shape: str, settings_tz) -> dict[str, Any]:
    items = [domain.render_coupon(row, settings_tz, page.store_plugin) for row in page.rows]
    last = domain.last_page(page.total, query.pagesize)
    data: dict[str, Any] = {"set": {"transfer": page.coupon_transfer}}
    if shape == "paginator":
        offset = (query.page - 1) * query.pagesize
        data["data"] = {
            "current_page": query.page,
            "data": items,
            "per_page": query.pagesize,
            "total": page.total,
            "last_page": last,
            "from": offset + 1 if items else None,
            "to": offset + len(items) if items else None,
        }
        data["search_array"] = domain.search_array(query.status)
    else:
        data["data"] = items
        data["search_array"] = domain.search_array(query.status)
        data.update(current_page=query.page, per_page=query.pagesize, total=page.total,
                    last_page=last)
    return {"result": 1, "msg": "", "data": data}


async def coupons(request: web.Request) -> web.Response:
    app = request.app
    settings = app[settings_key]
    mall_router = request.path == PATH_MALL_ROUTER
    if mall_router and request.query.get("route") != ROUTE_NAME:
        raise web.HTTPNotFound()
    now = app[clock_key].now()
    principal = authenticate(request, settings.auth_jwt_secret, settings.auth_jwt_leeway_seconds,
                             int(now.timestamp()))
    params = validate(MALL_ROUTER_SCHEMA if mall_router else COUPONS_SCHEMA,
                      await read_params(request))
    if mall_router and params["i"] != principal.uniacid:
        msg = "参数 i 与身份令牌的商户不一致"
        raise ApiError(403, msg, {"i": [msg]})
    query = PageQuery(
        uniacid=principal.uniacid,
        member_id=principal.member_id,
        status=params["status_request"],
        coupon_type=params["coupon_type"],
        page=params["page"],
        pagesize=params["pagesize"],
    )
    page = await app[repository_key].page(query, now)
    if page.member_uniacid is None:
        raise ApiError(404, "会员不存在", {"member_id": ["会员不存在"]})
    if page.member_uniacid != principal.uniacid:
        msg = "该会员不属于当前商户"
        raise ApiError(403, msg, {"member_id": [msg]})
    body = render_page(page, query, settings.response_shape, settings.tz)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
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


def setup_routes(app: web.Application) -> None:
    for path in (PATH_PLUGIN, PATH_MALL_ROUTER, PATH_SHORT):
        app.router.add_get(path, coupons)
        app.router.add_post(path, coupons)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
