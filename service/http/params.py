"""A request's parameters: the query string overlaid by the body (the body wins), per its content
type, then validated by the marshmallow schemas (service/http/schemas.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from marshmallow import Schema, ValidationError
from multidict import MultiDictProxy

from service.http.errors import ApiError, bad_request
from service.http.schemas import first_message

JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# What reading a malformed body raises inside aiohttp and the codecs (never a server fault):
# a charset Python does not know, a corrupt compressed body, broken form encoding. A multipart
# part with a malformed header raises the HTTP parser's own error (found by the fuzzer: a 500
# before).
BAD_BODY = (ValueError, UnicodeDecodeError, LookupError, AssertionError,
            web.RequestPayloadError, HttpProcessingError)
T = TypeVar("T")


def _last_wins(values: MultiDictProxy[Any]) -> dict[str, Any]:
    # PHP's $_GET/$_POST keep the last of repeated keys; the mall's callers rely on that.
    return {key: value for key, value in values.items() if isinstance(value, str)}


async def read_params(request: web.Request, body_timeout: float) -> dict[str, Any]:
    """Query string, overlaid by the body (the body wins), per its content type."""
    params = _last_wins(request.query)
    if request.method != "POST" or not request.body_exists:
        return params
    params.update(await _bounded(_read_body(request), body_timeout))
    return params


async def _bounded(reading: Awaitable[T], seconds: float) -> T:
    """Reading the body, with its errors as the caller's."""
    try:
        # A client trickling its body must not hold the request open for long.
        async with asyncio.timeout(seconds):
            return await reading
    except TimeoutError:
        msg = "请求体发送超时"
        raise ApiError(408, msg, {"body": [msg]}) from None
    except BAD_BODY:
        raise bad_request("body", "请求体无法解析，请检查编码与内容类型") from None


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
            raise bad_request("body", "请求体不是合法的 JSON") from None
        if not isinstance(body, dict):
            raise bad_request("body", "JSON 请求体必须是一个对象")
        return body
    raise bad_request("body", "不支持的请求体类型，请使用表单、multipart 或 JSON")


class Validator:
    """The schema's result for raw parameters. Loading is pure, and the sidebar sends the same
    few parameter sets over and over: valid ones are memoised (bounded, oldest out first)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._valid: dict[tuple, Mapping[str, Any]] = {}

    def __call__(self, schema: Schema, raw: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self.max_entries:
            return _load(schema, raw)
        try:
            # The type is part of the key: True == 1 == 1.0 in Python, and only 1 is a page.
            key = (id(schema), tuple(sorted((k, type(v).__name__, v) for k, v in raw.items())))
            hash(key)
        except TypeError:  # a JSON body with a list or object in it: never valid, never kept
            return _load(schema, raw)
        cached = self._valid.get(key)
        if cached is None:
            cached = _load(schema, raw)
            if len(self._valid) >= self.max_entries:
                self._valid.pop(next(iter(self._valid)))
            self._valid[key] = cached
        return cached


def _load(schema: Schema, raw: Mapping[str, Any]) -> Mapping[str, Any]:
    try:
        return MappingProxyType(schema.load(raw))
    except ValidationError as exc:
        errors = exc.normalized_messages()
        raise ApiError(400, first_message(errors), errors) from None
