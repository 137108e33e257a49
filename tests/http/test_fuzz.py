"""schemathesis against a live server on 127.0.0.1, driven by /openapi.json: zero 5xx, and
every response (status, content type, headers, body) valid against the document.

Positive and negative examples for every operation, a valid staff token (or the service token)
injected unless the case is about auth. FUZZ_EXAMPLES sets the examples per operation and mode
(default small so the suite stays short; `make fuzz` runs a long one).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.clock import FixedClock
from service.db.repository import init_connection
from service.http.openapi import build_spec
from tests.support.common import NOW, SECRET, SERVICE_TOKEN, token_for
from tests.support.live import live_server
from tests.support.rows import FIXTURES, Rows

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


async def _arrange(database_url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        await FIXTURES.truncate_all(conn)
        rows = Rows(conn)
        await rows.tenant(1, transfer=True)
        for uid in (1, 2):
            await rows.member(uid, 1)
        for use_type in range(10):
            cid = await rows.coupon(1, name=f"券{use_type}", use_type=use_type,
                                    use_conditions={"store_ids": [1], "good_ids": []}
                                    if use_type == 9 else None)
            for used in (0, 1):
                await rows.member_coupon(cid, uid=1, used=used)
        await rows.contact("wm-fuzz", 1)
    finally:
        await conn.close()


@pytest.fixture(scope="module", params=["http", "mall"])
def server(request, database_url: str, redis_url: str) -> Iterator[str]:
    """The live server in each ERROR_STYLE: the document describes both."""
    from service.settings import load_settings

    asyncio.run(_arrange(database_url))
    app_settings = load_settings(
        env={}, database_url=database_url, redis_url=redis_url, auth_jwt_secret=SECRET,
        internal_service_token=SERVICE_TOKEN, db_pool_min_size=1, db_pool_max_size=4,
        rate_limit_staff_per_minute=1_000_000, rate_limit_staff_burst=100_000,
        rate_limit_member_per_minute=1_000_000, rate_limit_member_burst=100_000,
        error_style=request.param)
    with live_server(app_settings, FixedClock(NOW)) as url:
        yield url


def test_the_served_document_is_the_generated_one(server: str) -> None:
    served = requests.get(f"{server}/openapi.json", timeout=5).json()
    assert served == build_spec()
    assert served["openapi"].startswith("3.")
    paths = served["paths"]
    assert set(paths) == {
        "/plugin.wechat-chat-sidebar.frontend.controller.customer.customer."
        "couponsOfMemberByStatusV2", "/addons/yun_shop/api.php", "/api/v2/coupons",
        "/internal/member-coupons/{id}/use", "/healthz", "/readyz", "/openapi.json"}
    coupons = paths["/api/v2/coupons"]
    assert set(coupons) == {"get", "post"}
    assert {str(s) for s in coupons["get"]["responses"]} == {
        "200", "304", "400", "401", "403", "404", "405", "408", "413", "429", "503"}
    assert set(coupons["post"]["requestBody"]["content"]) == {
        "application/x-www-form-urlencoded", "multipart/form-data", "application/json"}
    names = {p.get("name") for p in coupons["get"]["parameters"]}
    assert names >= {"client", "type", "page", "status_request", "coupon_type", "pagesize",
                     "user_id", "If-None-Match"}
    assert served["components"]["securitySchemes"]["staffToken"]["scheme"] == "bearer"
    assert {"CouponsList", "CouponsPaginator", "ErrorEnvelope"} <= set(
        served["components"]["schemas"])


def _operations():
    schema = schemathesis.openapi.from_dict(build_spec())
    for result in schema.get_all_operations():
        yield result.ok()


# Negative examples need something to break: operations without parameters get positive only.
CASES = [(op, mode) for op in _operations()
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or op.path.startswith(("/api", "/plugin", "/addons",
                                                                   "/internal"))]


@pytest.mark.parametrize(("operation", "mode"), CASES,
                         ids=[f"{op.label}-{mode.value}" for op, mode in CASES])
def test_fuzz(server: str, operation, mode) -> None:
    staff = {"Authorization": f"Bearer {token_for(1, 1)}"}
    contact = {"Authorization": f"Bearer {token_for(1, None)}"}
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    session = requests.Session()
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        if operation.path.startswith("/internal/"):
            headers = service
        else:
            # Alternate the two kinds of staff token: member_id, or the contact's user_id.
            headers = contact if (case.query or {}).get("user_id") == "wm-fuzz" else staff
        response = case.call_and_validate(base_url=server, session=session, headers=headers,
                                          checks=CHECKS, timeout=10)
        # Under ERROR_STYLE=mall an error is a 200 that names its status in X-Error-Status.
        status = int(response.headers.get("X-Error-Status", response.status_code))
        seen[status] = seen.get(status, 0) + 1

    run()
    assert seen and not any(status >= 500 for status in seen if status != 503), seen
    if not operation.path.startswith(("/readyz",)):
        assert 503 not in seen, seen  # a healthy database never answers 503 here
    if mode is GenerationMode.POSITIVE and operation.path.startswith(("/api", "/plugin")):
        assert 200 in seen, seen  # valid examples with a valid token do reach the pages
