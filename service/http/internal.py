"""The mall's write API: `POST /internal/member-coupons/{id}/use`, with the service token."""

from __future__ import annotations

import orjson
from aiohttp import web

from service.auth.tokens import authenticate_service
from service.http.errors import bad_request
from service.keys import clock_key, pages_key, repository_key, settings_key
from service.observe import metrics

_MAX_ID = 2**63 - 1


async def use_member_coupon(request: web.Request) -> web.Response:
    """The mall marks a coupon used, exactly once (UseRefused otherwise: 404 or 409); the
    member's cached pages are gone before this answers."""
    app = request.app
    authenticate_service(request, app[settings_key].internal_service_token)
    raw_id = request.match_info["id"]
    member_coupon_id = int(raw_id) if len(raw_id) <= 19 else 0
    if not 0 < member_coupon_id <= _MAX_ID:
        raise bad_request("id", "参数 id 必须是正整数")
    used = await app[repository_key].use(member_coupon_id, app[clock_key].now())
    # Before answering: the next read through Redis must already see the use. If Redis fails
    # here the cache is untrusted (and bypassed) until coverage is proven again.
    await app[pages_key].invalidate_members(used.uniacid, [used.member_id])
    metrics.CACHE_INVALIDATIONS.labels("use_api").inc()
    body = {"result": 1, "msg": "", "data": {
        "id": used.id, "uniacid": used.uniacid, "uid": used.member_id, "used": 1,
        "use_time": int(used.use_time.timestamp()),
    }}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
