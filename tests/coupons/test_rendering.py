"""What an item says, through the endpoint: `api_limit` and `coupon_type_name` for every
use_type (stores, goods, hotels, use_type 9's conditions, other tenants' names never shown), an
unknown use_type, money with two decimals and a whole item as the contract renders it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.tabs import ids_of, item_by_id, sh

# ---------------------------------------------------------------------------------------------
# api_limit, coupon_type_name and money through the endpoint
# ---------------------------------------------------------------------------------------------


LIMIT_CASES = [
    ("mall", {"use_type": 0}, None, "商城通用", "平台商品"),
    ("categories", {"use_type": 1, "category_ids": ["3", "4"], "categorynames": ["服装", "鞋帽"]},
     None, "适用于下列分类: 服装,鞋帽", "分类商品"),
    ("goods", {"use_type": 2, "goods_ids": ["64", "65"], "goods_names": ["苹果", "香蕉"]},
     None, "适用于下列商品: 苹果,香蕉", "指定商品"),
    ("suppliers", {"use_type": 3, "suppliernames": ["供应商甲", "供应商乙"]},
     None, "适用于下列供应商: 供应商甲,供应商乙", "供应商商品"),
    ("stores", {"use_type": 4, "storeids": ["1", "2"], "storenames": ["东店", "西店"]},
     None, "适用于下列门店: 东店,西店", "门店商品"),
    ("one store", {"use_type": 5, "storeids": ["3"], "storenames": ["南店"]},
     None, "适用于下列门店: 南店", "门店商品"),
    ("one hotel", {"use_type": 6}, [(7, "如家")], "适用于酒店 :如家", "酒店商品"),
    ("several hotels", {"use_type": 7}, [(3, "汉庭"), (4, "全季")],
     "适用于下列酒店: 汉庭,全季", "酒店商品"),
    ("another tenant's hotel is not named", {"use_type": 7},
     [(3, "汉庭"), (8, "别家的酒店", 2), (4, "全季")], "适用于下列酒店: 汉庭,全季", "酒店商品"),
    ("exchange", {"use_type": 8, "goods_ids": ["70"], "goods_names": ["兑换商品"]},
     None, "适用于下列商品: 兑换商品", "兑换券"),
    ("9 all stores all goods",
     {"use_type": 9, "use_conditions": {"is_all_store": 1, "store_ids": [], "is_all_good": 1,
                                        "good_ids": []}},
     None, "全部门店、平台自营商品", "商品和门店"),
    ("9 some stores some goods",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [1, 2], "is_all_good": 0,
                                        "good_ids": [10, 11]}},
     None, "门店:一号店,二号店、商品:商品A,商品B", "商品和门店"),
    ("9 all stores some goods",
     {"use_type": 9, "use_conditions": {"is_all_store": 1, "store_ids": [], "is_all_good": 0,
                                        "good_ids": [10]}},
     None, "全部门店、商品:商品A", "商品和门店"),
    ("9 some stores all goods",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [2], "is_all_good": 1,
                                        "good_ids": []}},
     None, "门店:二号店、平台自营商品", "商品和门店"),
    ("9 ids as strings",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": ["1"], "is_all_good": 0,
                                        "good_ids": ["11"]}},
     None, "门店:一号店、商品:商品B", "商品和门店"),
    ("9 goods only",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [], "is_all_good": 0,
                                        "good_ids": [11]}},
     None, "商品:商品B", "商品和门店"),
    ("9 all goods only",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [], "is_all_good": 1,
                                        "good_ids": []}},
     None, "平台自营商品", "商品和门店"),
    ("9 nothing selected",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [], "is_all_good": 0,
                                        "good_ids": []}},
     None, "无适用范围", "商品和门店"),
    ("9 no conditions", {"use_type": 9, "use_conditions": None},
     None, "无适用范围", "商品和门店"),
    ("9 another tenant's store is not named",
     {"use_type": 9, "use_conditions": {"is_all_store": 0, "store_ids": [1, 5], "is_all_good": 1,
                                        "good_ids": []}},
     None, "门店:一号店、平台自营商品", "商品和门店"),
]


@pytest.mark.parametrize(("fields", "hotels", "api_limit", "type_name"),
                         [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES])
async def test_api_limit_and_coupon_type_name(client, rows, fields, hotels, api_limit,
                                              type_name):
    await rows.member(1, 1)
    await rows.store(1, "一号店")
    await rows.store(2, "二号店")
    await rows.store(5, "别家的店", uniacid=2)
    await rows.goods(10, "商品A")
    await rows.goods(11, "商品B")
    cid = await rows.coupon(1, **fields)
    other = await rows.coupon(1, use_type=fields["use_type"])
    for hotel_id, name, *tenant in hotels or ():
        await rows.hotel(hotel_id, name, uniacid=tenant[0] if tenant else 1, coupon_ids=(cid,))
    await rows.hotel(9, "别的券的酒店", coupon_ids=(other,))  # must not be named for cid
    mc = await rows.member_coupon(cid)
    item = await item_by_id(client, mc, 1)
    assert item["api_limit"] == api_limit
    assert item["belongs_to_coupon"]["coupon_type_name"] == type_name
    assert item["belongs_to_coupon"]["use_type"] == fields["use_type"]
    if "use_conditions" in fields:
        assert item["belongs_to_coupon"]["use_conditions"] == fields["use_conditions"]
    for key in ("category_ids", "categorynames", "goods_ids", "goods_names", "storenames"):
        assert item["belongs_to_coupon"][key] == fields.get(key)


async def test_unknown_use_type_is_enjoy_shopping(client, rows):
    await rows.member(1, 1)
    cid = await rows.coupon(1, use_type=42)
    mc = await rows.member_coupon(cid)
    item = await item_by_id(client, mc, 1)
    assert item["api_limit"] == "Enjoy shopping"
    assert item["belongs_to_coupon"]["use_type"] == 42
    for coupon_type in (1, 2, 3, 4, 5, 6, 9):
        assert await ids_of(client, 1, coupon_type) == []
    assert await ids_of(client, 1, 7) == [mc]


async def test_money_fields_have_two_decimals_and_full_item_renders(client, rows):
    await rows.member(1, 1)
    cid = await rows.coupon(
        1, name="八五折", coupon_method=2, deduct=10, discount=Decimal("8.5"), enough=100,
        money=Decimal("12.3"), credit=5, total=200, plugin_id=0, use_type=2,
        goods_ids=["64"], goods_names=["爱心值测试"], time_limit=0, time_days=1)
    mc = await rows.member_coupon(cid, id=155, get_time=sh(2026, 6, 14, 0, 0, 0))
    item = await item_by_id(client, mc, 1)
    assert item == {
        "id": 155,
        "coupon_id": cid,
        "used": 0,
        "use_time": 0,
        "get_time": "2026-06-14 00:00:00",
        "near_expiration": 1,
        "time_start": "2026-06-14",
        "time_end": "2026-06-15 23:59:59",
        "belongs_to_coupon": {
            "id": cid,
            "name": "八五折",
            "coupon_method": 2,
            "deduct": "10.00",
            "discount": "8.50",
            "enough": 100,
            "use_type": 2,
            "category_ids": None,
            "categorynames": None,
            "goods_ids": ["64"],
            "goods_names": ["爱心值测试"],
            "storenames": None,
            "time_limit": 0,
            "time_days": 1,
            "time_start": None,
            "time_end": None,
            "total": 200,
            "money": "12.30",
            "credit": 5,
            "plugin_id": 0,
            "use_conditions": None,
            "coupon_type_name": "指定商品",
        },
        "api_limit": "适用于下列商品: 爱心值测试",
    }


@pytest.mark.parametrize(("deduct", "discount", "money", "want"), [
    (10, 0, 0, ("10.00", "0.00", "0.00")),
    (Decimal("8.5"), Decimal("9.99"), Decimal("0.1"), ("8.50", "9.99", "0.10")),
    (Decimal("1234.56"), 1, Decimal("100"), ("1234.56", "1.00", "100.00")),
])
async def test_money_formatting(client, rows, deduct, discount, money, want):
    await rows.member(1, 1)
    cid = await rows.coupon(1, deduct=deduct, discount=discount, money=money)
    mc = await rows.member_coupon(cid)
    coupon = (await item_by_id(client, mc, 1))["belongs_to_coupon"]
    assert (coupon["deduct"], coupon["discount"], coupon["money"]) == want
