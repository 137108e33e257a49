"""RENDER_VERSION guards warm deploys: a new version's process takes over the cache of the old
one (service/cache/listener.py), so a change in what a page's bytes are for the same rows must
come with a new RENDER_VERSION (service/coupons/render.py), which renames every cached page.

Here every tab of both statuses and shapes is rendered from fixed rows on the fixed clock and
the bytes hashed: when they change, this fails until RENDER_VERSION is raised and its digest
recorded below."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

from service.coupons.pages import RENDER_VERSION
from tests.support.api import PATH_SHORT
from tests.support.common import NOW, SHANGHAI, token_for

# RENDER_VERSION -> the digest of every page below, rendered by that version.
DIGESTS = {
    2: "c9d9602790dd068eda8dd619eb8f1ec0f95a30bb61b4bed6b306fc31204170af",
}


async def _rows(rows) -> None:
    await rows.tenant(1, transfer=True)
    await rows.member(1, 1)
    await rows.store(1, "一号店")
    await rows.goods(10, "商品A")
    fixed = {"time_limit": 1, "time_start": dt.datetime(2026, 6, 1, tzinfo=SHANGHAI),
             "time_end": dt.datetime(2026, 6, 17, 23, 59, 59, tzinfo=SHANGHAI)}
    kinds = [
        {"use_type": 0, "name": "满100减10", "enough": 100},
        {"use_type": 1, "categorynames": ["服装"], "category_ids": ["3"], "coupon_method": 2,
         "discount": 8.5},
        {"use_type": 2, "goods_ids": ["10"], "goods_names": ["商品A"], **fixed},
        {"use_type": 3, "suppliernames": ["供应商"]},
        {"use_type": 4, "storenames": ["一号店"]},
        {"use_type": 6},
        {"use_type": 8, "goods_names": ["兑换品"], "time_days": 7},
        {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [1],
                                           "is_all_good": 0, "good_ids": [10]}},
    ]
    for n, kind in enumerate(kinds):
        cid = await rows.coupon(1, **kind)
        await rows.member_coupon(cid, id=100 + n, get_time=NOW - dt.timedelta(hours=n + 1))
        await rows.member_coupon(cid, id=200 + n, used=1, use_time=NOW - dt.timedelta(hours=1),
                                 get_time=NOW - dt.timedelta(days=2, hours=n))
        await rows.member_coupon(cid, id=300 + n, get_time=NOW - dt.timedelta(days=40 + n))


async def test_the_bytes_of_every_tab_belong_to_the_render_version(make_client, settings, rows):
    await _rows(rows)
    digest = hashlib.sha256()
    for shape in ("list", "paginator"):
        client = await make_client(dataclasses.replace(settings, response_shape=shape,
                                                       local_cache_enabled=False))
        for status in (1, 2, 3):
            for coupon_type in range(11 if status == 1 else 10):
                resp = await client.get(PATH_SHORT, params={
                    "client": "work", "type": "17", "status_request": str(status),
                    "coupon_type": str(coupon_type), "pagesize": "5"},
                    headers={"Authorization": f"Bearer {token_for()}"})
                assert resp.status == 200
                digest.update(await resp.read())
    assert DIGESTS.get(RENDER_VERSION) == digest.hexdigest(), (
        "the rendered bytes changed: raise RENDER_VERSION in service/coupons/render.py, then "
        f"record its digest here, {digest.hexdigest()!r}")
