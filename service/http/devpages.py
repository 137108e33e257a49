"""Pages for a local try, served only in development (DEV_PAGES, which production refuses):

- `/demo/`: a coupons tab that behaves as the mall's own WeCom sidebar page does
  (docs/CONTRACT.md, "The mall's sidebar page, as it behaves"), plain HTML and JS from
  `service/http/static/demo/`, with demo people to switch between (`/demo/people.json` mints
  their tokens);
- `/docs/`: Swagger UI over `/openapi.json`, its assets from the swagger-ui-bundle package.

Every file is named in a table: nothing else under these paths is served, and no path from the
request ever reaches the file system.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import orjson
from aiohttp import web

from service.auth.tokens import issue_token
from service.http.coupons import PATH_MALL_ROUTER, ROUTE_NAME
from service.http.edge import Edge
from service.keys import clock_key, settings_key

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
DEMO_FILES = {"": "index.html", "sidebar.js": "sidebar.js", "sidebar.css": "sidebar.css"}
DOCS_FILES = {"": "index.html", "init.js": "init.js"}
BUNDLE_FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                "favicon-32x32.png", "favicon-16x16.png")
# The page's own files only: no CDN, no inline script (a stray external URL would be refused).
DEMO_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'")
# Swagger UI sets inline styles on its elements.
DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
TOKEN_TTL_SECONDS = 3600

# Who the demo page can be: (key, label, uniacid, member_id or None, the contact it names).
PEOPLE = (
    ("member-1", "会员 1：种子示例的六张券（已过期）和各类券", 1, 1, None),
    ("member-2", "会员 2：130 张未使用的券（滚动到底）", 1, 2, None),
    ("staff-contact", "员工令牌 + 外部联系人 wm_demo_1（会员 1）", 1, None, "wm_demo_1"),
    ("tenant-2", "二号商户的会员 1001（门店、酒店插件关闭）", 2, 1001, None),
    ("other-tenant", "令牌属商户 1，会员属商户 2（提示 403）", 1, 1001, None),
    ("expired", "过期的令牌（提示 401）", 1, 1, None),
)


def swagger_ui_dir() -> Path | None:
    """The Swagger UI assets of the swagger-ui-bundle package, if installed."""
    if importlib.util.find_spec("swagger_ui_bundle") is None:
        return None
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def _file(path: Path, csp: str | None = None) -> web.FileResponse:
    response = web.FileResponse(path)
    if csp is not None:
        response.headers["Content-Security-Policy"] = csp
    return response


async def demo_file(request: web.Request) -> web.StreamResponse:
    name = DEMO_FILES.get(request.match_info.get("name", ""))
    if name is None:
        raise web.HTTPNotFound()
    return _file(STATIC / "demo" / name, DEMO_CSP)


async def demo_people(request: web.Request) -> web.Response:
    """The demo people and a fresh token for each, signed with this process's secret; the
    expired one ran out an hour ago."""
    app = request.app
    secret = app[settings_key].auth_jwt_secret
    now = app[clock_key].now_ms() // 1000
    people = []
    for key, label, uniacid, member_id, contact in PEOPLE:
        issued = now - 2 * TOKEN_TTL_SECONDS if key == "expired" else now
        people.append({
            "key": key, "label": label, "uniacid": uniacid, "user_id": contact,
            "token": issue_token(secret, uniacid, member_id, "demo-staff", TOKEN_TTL_SECONDS,
                                 issued)})
    body = {"route": ROUTE_NAME, "path": PATH_MALL_ROUTER, "people": people}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def docs_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "")
    if name in DOCS_FILES:
        return _file(STATIC / "docs" / DOCS_FILES[name], DOCS_CSP)
    bundle = swagger_ui_dir()
    if name not in BUNDLE_FILES or bundle is None:
        raise web.HTTPNotFound()
    return _file(bundle / name, DOCS_CSP)


async def redirect_to_slash(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.path + "/")


def setup_dev_pages(app: web.Application, edge: Edge) -> None:
    router = app.router
    edge.route(router, "GET", "/demo", redirect_to_slash)
    edge.route(router, "GET", "/demo/", demo_file)
    edge.route(router, "GET", "/demo/people.json", demo_people)
    edge.route(router, "GET", "/demo/{name:[a-z]+\\.(?:js|css)}", demo_file)
    edge.route(router, "GET", "/docs", redirect_to_slash)
    edge.route(router, "GET", "/docs/", docs_file)
    edge.route(router, "GET", "/docs/{name:[a-z0-9-]+\\.(?:js|css|png)}", docs_file)
    if swagger_ui_dir() is None:
        log.warning("/docs needs the swagger-ui-bundle package: pip install '.[dev]'")
