"""The coupons endpoint (`couponsOfMemberByStatusV2`, its three routes): one handler, and the hot
path that is its first step.

A request goes one way, whichever layer answers it:
1. its meaning is resolved (the token checked, then the parameters: the errors in the
   contract's order), or found in the memo of resolved requests (service/hotpath/memo.py);
2. `_local` answers from this process's copy of the page if nothing has to be awaited first;
3. otherwise `CouponPages.get` waits for what it needs (the limiter, Redis, PostgreSQL);
4. `page_answer` (service/hotpath/prebuilt.py) turns the page into the response.

The edge (service/http/edge.py) runs `fast` before it awaits anything: steps 1 (from the memo only;
for a POST, when its small body is all in aiohttp's buffer) and 2, without a coroutine. When it
cannot answer, the handler goes on from what `fast` resolved (`resolution_key`), so nothing is done
twice. HOT_PATH_ENABLED=false turns the memos, `fast` and the prepared bytes off: every request is
resolved and answered by aiohttp's own response objects.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from service.auth.tokens import Principal, TokenVerifier, Unauthorized
from service.clock import Clock
from service.compat import aiohttp as compat_aiohttp
from service.coupons.pages import CouponPages
from service.db.repository import PageQuery
from service.hotpath.memo import Resolved, ResolvedMemo, buffered_post_key, get_key, post_key
from service.hotpath.prebuilt import page_answer
from service.http.errors import ApiError, bad_request
from service.http.params import BAD_BODY, Validator, read_params
from service.http.schemas import COUPONS_SCHEMA, MALL_ROUTER_SCHEMA
from service.keys import (
    clock_key,
    pages_key,
    principal_key,
    request_id_key,
    settings_key,
    verifier_key,
)

ROUTE_NAME = (
    "plugin.wechat-chat-sidebar.frontend.controller.customer.customer.couponsOfMemberByStatusV2"
)
PATH_PLUGIN = "/" + ROUTE_NAME
PATH_MALL_ROUTER = "/addons/yun_shop/api.php"
PATH_SHORT = "/api/v2/coupons"
PATHS = (PATH_PLUGIN, PATH_MALL_ROUTER, PATH_SHORT)

# What `fast` resolved for a request it could not answer: the handler goes on from it.
resolution_key = web.RequestKey("resolution_key", tuple)


class Coupons:
    """The handler of the coupons routes, with its hot path (`fast`: None when it is off)."""

    def __init__(self, app: web.Application) -> None:
        settings = app[settings_key]
        self.app = app
        hot = settings.hot_path_enabled
        self.memo: ResolvedMemo | None = ResolvedMemo(settings.memo_entries) if hot else None
        # Read here, not at import: service/compat/aiohttp.py decides per aiohttp version.
        self.prepared = hot and compat_aiohttp.PREPARED_BYTES
        self.validate = Validator() if hot else Validator(max_entries=0)
        self.body_timeout = settings.body_timeout_seconds
        self.fast = self._fast if hot else None
        # The app's parts, looked up once it has started: `app[key]` is a Python call, and the
        # hot path would make four of them per hit.
        self._parts: tuple[CouponPages, Clock, TokenVerifier] | None = None

    @property
    def pages(self) -> CouponPages:
        return self.app[pages_key]

    def _started(self) -> tuple[CouponPages, Clock, TokenVerifier] | None:
        parts = self._parts
        if parts is None and pages_key in self.app:
            app = self.app
            parts = self._parts = (app[pages_key], app[clock_key], app[verifier_key])
        return parts

    def _local(self, request: web.Request, rid: str, resolved: Resolved, principal: Principal,
               now_s: int, pages: CouponPages) -> web.StreamResponse | None:
        """Step 2: this process's copy of the page, if nothing has to be awaited first."""
        page = pages.local_hit(resolved.query, resolved.field, now_s, principal.staff_id)
        if page is None:
            return None
        return page_answer(request, rid, page.body, page.etag, "local", self.prepared)

    def _fast(self, request: web.Request,
              rid: str) -> tuple[web.StreamResponse, Principal, str] | None:
        """The edge's fast path: a GET, or a POST whose small body is all buffered, resolved
        before and answered locally, or None."""
        memo = self.memo
        if memo is None:
            return None
        method = request.method
        if method == "GET":
            key = get_key(request)
        elif method == "POST":
            key = buffered_post_key(request)
            if key is None:
                return None
        else:
            return None
        resolved = memo.get(key)
        if resolved is None:
            return None
        parts = self._started()
        if parts is None:
            return None
        pages, clock, verifier = parts
        now_s = clock.now_ms() // 1000
        try:
            principal = verifier.check(resolved.claims, now_s)
        except Unauthorized:
            return None  # the handler answers it, as any other request
        response = self._local(request, rid, resolved, principal, now_s, pages)
        if response is None:
            request[resolution_key] = (resolved, principal)
            return None
        return response, principal, "local"

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        app = self.app
        rid = request[request_id_key]
        now_ms = app[clock_key].now_ms()
        now_s = now_ms // 1000
        tried = request.get(resolution_key)
        if tried is not None:  # `fast` resolved it and found no local copy
            resolved, principal = tried
            request[principal_key] = principal  # for the request log line (tenant, member)
        else:
            resolved = await self._resolved(request, now_s)
            principal = app[verifier_key].check(resolved.claims, now_s)
            request[principal_key] = principal
            response = self._local(request, rid, resolved, principal, now_s, self.pages)
            if response is not None:
                return response
        now = dt.datetime.fromtimestamp(now_s, dt.UTC)
        result = await self.pages.get(resolved.query, now, staff_id=principal.staff_id,
                                      now_ms=now_ms)
        return page_answer(request, rid, result.body, result.etag, result.outcome, self.prepared)

    async def _resolved(self, request: web.Request, now_s: int) -> Resolved:
        """Step 1: from the memo, or resolved and kept there."""
        memo = self.memo
        if memo is None:
            return await self.resolve(request, now_s)
        key = get_key(request) if request.method == "GET" else await post_key(request, BAD_BODY)
        resolved = memo.get(key) if key is not None else None
        if resolved is None:
            resolved = await self.resolve(request, now_s)
            if key is not None:
                memo.put(key, resolved)
        return resolved

    async def resolve(self, request: web.Request, now_s: int) -> Resolved:
        """What the request asks for: the token checked, then the parameters (the errors in the
        contract's order). It reads only the memo key's inputs (service/hotpath/memo.py)."""
        app = self.app
        mall_router = request.path == PATH_MALL_ROUTER
        if mall_router and request.query.get("route") != ROUTE_NAME:
            raise web.HTTPNotFound()
        verifier = app[verifier_key]
        claims = verifier.claims_of(request)
        principal = verifier.check(claims, now_s)
        request[principal_key] = principal
        params = self.validate(MALL_ROUTER_SCHEMA if mall_router else COUPONS_SCHEMA,
                               await read_params(request, self.body_timeout))
        if mall_router and params["i"] != principal.uniacid:
            msg = "参数 i 与身份令牌的商户不一致"
            raise ApiError(403, msg, {"i": [msg]})
        # A token naming the member decides alone (a `user_id` beside it is ignored); a staff
        # token reads only the contact it names, if its staff member follows that contact.
        contact = None
        if principal.member_id is None:
            contact = params.get("user_id")
            if contact is None:
                raise bad_request("user_id", "缺少参数 user_id（身份令牌未指定会员时必填）")
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
        return Resolved(claims, query, self.pages.field(query))
