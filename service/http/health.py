"""What operators and load balancers read: /healthz, /readyz, /metrics, /openapi.json."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.keys import (
    draining_key,
    openapi_key,
    recorder_key,
    redis_key,
    repository_key,
    settings_key,
)
from service.observe import metrics


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


async def metrics_page(request: web.Request) -> web.Response:
    # This process's batch first (service/observe/recorder.py); other workers' are at most one
    # flush interval behind.
    request.app[recorder_key].flush()
    body = generate_latest(metrics.registry())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[openapi_key], content_type="application/json")
