"""The route table: every route through the edge (service/http/edge.py)."""

from __future__ import annotations

from aiohttp import web

from service.http.coupons import PATHS, Coupons
from service.http.devpages import setup_dev_pages
from service.http.edge import Edge
from service.http.health import healthz, metrics_page, openapi_json, readyz
from service.http.internal import use_member_coupon
from service.keys import settings_key


def setup_routes(app: web.Application, edge: Edge) -> None:
    """Every route, then `Edge.close`: a 405 per known path, a 404 for any other."""
    router = app.router
    coupons = Coupons(app)
    for path in PATHS:
        edge.route(router, "GET", path, coupons, fast=coupons.fast, admit=True)
        edge.route(router, "POST", path, coupons, admit=True)
    edge.route(router, "POST", r"/internal/member-coupons/{id:\d+}/use", use_member_coupon)
    edge.route(router, "GET", "/healthz", healthz)
    edge.route(router, "GET", "/readyz", readyz)
    edge.route(router, "GET", "/openapi.json", openapi_json)
    edge.route(router, "GET", "/metrics", metrics_page)
    if app[settings_key].dev_pages:
        setup_dev_pages(app, edge)
    edge.close(router)
