"""The demo's member 1, rendered by the service, equals the seed example item for item."""

from __future__ import annotations

from service.runtime.demo import load_demo_data
from tests.support.api import SEED, coupons, items_of
from tests.support.common import token_for


async def test_seed_items_render_exactly_as_the_seed_example(client, db, database_url):
    await load_demo_data(database_url)
    seed_items = SEED["data"]["data"]
    seed_ids = [item["id"] for item in seed_items]
    # The seed's coupons are from 2017: today they sit in the expired tab, in the seed's order.
    body = await coupons(client, token_for(1, 1), status_request=2, coupon_type=0, pagesize=50)
    rendered = [item for item in items_of(body) if item["id"] in seed_ids]
    assert rendered == seed_items
    assert body["data"]["set"] == SEED["data"]["set"]


async def test_seed_search_array_for_unused_tab(client, db, database_url):
    await load_demo_data(database_url)
    body = await coupons(client, token_for(1, 1), status_request=1)
    assert body["data"]["search_array"] == SEED["data"]["search_array"]
