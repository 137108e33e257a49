"""One helper per endpoint: it calls, checks the status and the response's shape, returns JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from service.http.coupons import PATH_MALL_ROUTER, PATH_PLUGIN, PATH_SHORT, ROUTE_NAME

# The repository's own copy of the seed (docs/seed/): a clone needs nothing beside it.
SEED_DIR = Path(__file__).resolve().parent.parent.parent / "docs" / "seed"
SEED = json.loads((SEED_DIR / "example-response.json").read_text(encoding="utf-8"))
ITEM_KEYS = list(SEED["data"]["data"][0])
COUPON_KEYS = list(SEED["data"]["data"][0]["belongs_to_coupon"])
LIST_KEYS = ["set", "data", "search_array", "current_page", "per_page", "total", "last_page"]
PAGINATOR_KEYS = ["current_page", "data", "per_page", "total", "last_page", "from", "to"]
ERROR_STATUSES = {400, 401, 403, 404, 405, 413, 429, 503}
PATHS = (PATH_PLUGIN, PATH_MALL_ROUTER, PATH_SHORT)


def check_item(item: dict[str, Any]) -> None:
    assert list(item) == ITEM_KEYS
    assert list(item["belongs_to_coupon"]) == COUPON_KEYS
    assert item["used"] in (0, 1) and item["near_expiration"] in (0, 1)
    assert isinstance(item["use_time"], int) and isinstance(item["api_limit"], str)
    for money in ("deduct", "discount", "money"):
        value = item["belongs_to_coupon"][money]
        assert isinstance(value, str) and value.count(".") == 1 and len(value.split(".")[1]) == 2


def check_success(body: dict[str, Any], shape: str = "list") -> None:
    assert body["result"] == 1 and body["msg"] == ""
    data = body["data"]
    assert isinstance(data["set"]["transfer"], bool)
    assert data["search_array"][:10] == SEED["data"]["search_array"][:10]
    if shape == "list":
        assert list(data) == LIST_KEYS
        items = data["data"]
        page = data
    else:
        assert list(data) == ["set", "data", "search_array"]
        page = data["data"]
        assert list(page) == PAGINATOR_KEYS
        items = page["data"]
    assert page["last_page"] >= 1 and page["total"] >= len(items)
    for item in items:
        check_item(item)


def check_error(body: dict[str, Any]) -> None:
    assert list(body) == ["result", "msg", "data"]
    assert body["result"] == 0
    assert isinstance(body["msg"], str) and body["msg"]
    assert list(body["data"]) == ["errors"] and isinstance(body["data"]["errors"], dict)
    for messages in body["data"]["errors"].values():
        assert messages and all(isinstance(m, str) for m in messages)


def items_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    data = body["data"]["data"]
    return data["data"] if isinstance(data, dict) else data


async def coupons(
    client: TestClient,
    token: str | None,
    *,
    expected_status: int = 200,
    method: str = "GET",
    path: str = PATH_SHORT,
    body: str | None = None,
    shape: str = "list",
    headers: dict[str, str] | None = None,
    raw_body: bytes | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Call the coupons endpoint. `body` in (None, "form", "multipart", "json") says where the
    parameters go on a POST; a parameter given as None is left out; `client=work&type=17` and,
    on the mall router path, `route` and `i=1` are filled in unless given."""
    params = {"client": "work", "type": 17, **params}
    query: dict[str, str] = {}
    if path == PATH_MALL_ROUTER:
        query["route"] = params.pop("route", ROUTE_NAME)
        query["i"] = params.pop("i", 1)
        query = {k: str(v) for k, v in query.items() if v is not None}
    params = {k: v for k, v in params.items() if v is not None}
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    kwargs: dict[str, Any] = {"headers": hdrs}
    if body is None and raw_body is None:
        query.update({k: str(v) for k, v in params.items()})
    elif raw_body is not None:
        kwargs["data"] = raw_body
    elif body == "form":
        kwargs["data"] = {k: str(v) for k, v in params.items()}
    elif body == "multipart":
        form = aiohttp.FormData()
        for k, v in params.items():
            form.add_field(k, str(v))
        form._is_multipart = True
        kwargs["data"] = form
    elif body == "json":
        kwargs["json"] = params
    else:
        raise ValueError(body)
    resp = await client.request(method, path, params=query, **kwargs)
    text = await resp.text()
    assert resp.status == expected_status, f"{resp.status}: {text}"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "X-Request-ID" in resp.headers
    if method == "HEAD":
        return {}
    assert resp.content_type == "application/json", resp.content_type
    result = json.loads(text)
    if expected_status == 200:
        check_success(result, shape)
    else:
        assert expected_status in ERROR_STATUSES
        check_error(result)
    return result
