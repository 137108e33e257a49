"""Readers: the requests each one cycles through as fast as it can, and what each read saw."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.support.common import token_for
from tests.support.freshness.model import (
    CONTACT,
    CONTACT_STAFF,
    CONTACT_TARGET,
    ROUTE,
    TENANT1,
    TENANT2,
    UNIACID,
    Page,
    Sig,
    observed,
)


@dataclasses.dataclass(slots=True)
class Read:
    page: Page
    method: str
    s: float            # monotonic, before the request was sent
    sw: float           # time.time() then
    r: float            # monotonic, once the whole answer was read
    rw: float
    status: int
    sig: Sig | None
    cache: str | None   # X-Cache, for the report only (never judged on)


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    page: Page
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def plans(base: str, token_ttl: int) -> list[list[Request]]:
    """Per reader the requests it cycles through; each reader has a token (staff sub) of its
    own, several readers per member, every reader on few pages so that they stay hot."""
    counter = itertools.count(1)
    now = int(time.time())

    def token(uid: int | None, staff: str | None = None, uniacid: int = 1) -> dict[str, str]:
        sub = staff or f"reader-{next(counter)}"
        return {"Authorization": "Bearer " + token_for(uniacid, uid, staff=sub, ttl=token_ttl,
                                                       now=now)}

    def get(headers: dict[str, str], target: Any, coupon_type: int = 0, number: int = 1,
            size: int = 15) -> Request:
        uid = TENANT1[0] if target == CONTACT_TARGET else target
        query = {"i": UNIACID[uid], "type": 17, "route": ROUTE, "client": "work",
                 "page": number, "coupon_type": coupon_type}
        if size != 15:
            query["pagesize"] = size
        if target == CONTACT_TARGET:
            query["user_id"] = CONTACT
        return Request((target, 1, coupon_type, number, size), "GET",
                       f"{base}/addons/yun_shop/api.php?{urlencode(query)}", headers, None)

    def post(headers: dict[str, str], target: Any, status: int, coupon_type: int = 0,
             number: int = 1, size: int = 15) -> Request:
        form = {"client": "work", "type": 17, "page": number, "coupon_type": coupon_type,
                "status_request": status, "pagesize": size}
        if target == CONTACT_TARGET:
            form["user_id"] = CONTACT
        return Request((target, status, coupon_type, number, size), "POST", f"{base}/{ROUTE}",
                       {**headers, **FORM}, urlencode(form).encode())

    readers: list[list[Request]] = []
    for uid in TENANT1:
        hot, mixed, tabs = token(uid), token(uid), token(uid)
        readers.append([get(hot, uid)])
        readers.append([post(mixed, uid, 1), get(mixed, uid), post(mixed, uid, 3)])
        readers.append([get(tabs, uid, 9), post(tabs, uid, 2), get(tabs, uid, 3),
                        get(tabs, uid, 0, 2, 5), get(tabs, uid, 2)])
    one, two = token(None, CONTACT_STAFF[0]), token(None, CONTACT_STAFF[1])
    readers.append([get(one, CONTACT_TARGET)])
    readers.append([post(two, CONTACT_TARGET, 1), post(two, CONTACT_TARGET, 3)])
    for uid in TENANT2:
        other = token(uid, uniacid=2)
        readers.append([get(other, uid), post(other, uid, 3)])
    return readers


async def reader(session: aiohttp.ClientSession, requests: list[Request], reads: list[Read],
                 errors: list[tuple[float, str]], stop: asyncio.Event,
                 canon: dict[Sig, Sig]) -> None:
    for request in itertools.cycle(requests):
        if stop.is_set():
            return
        s, sw = time.monotonic(), time.time()
        try:
            async with session.request(request.method, request.url, headers=request.headers,
                                       data=request.body) as resp:
                body = await resp.read()
                status, cache = resp.status, resp.headers.get("X-Cache")
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors.append((s, type(exc).__name__))
            await asyncio.sleep(0.02)
            continue
        r, rw = time.monotonic(), time.time()
        sig = observed(body) if status == 200 else None
        if sig is not None:
            sig = canon.setdefault(sig, sig)   # one copy of each version: long runs stay small
        reads.append(Read(request.page, request.method, s, sw, r, rw, status, sig, cache))
        if status != 200:
            await asyncio.sleep(0.02)   # a 429 or a 503: no hot loop of refusals
