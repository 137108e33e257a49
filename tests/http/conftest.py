"""Fixtures of the HTTP edge's tests."""

from __future__ import annotations

import pytest

from tests.support.common import token_for


@pytest.fixture
async def tok(rows) -> str:
    """Member 1 of tenant 1 holding one unused mall-wide coupon (coupon_type 1). test_routes.py
    arranges a `tok` of its own, with coupons in every tab."""
    await rows.member(1, 1)
    cid = await rows.coupon(1, name="平台券", use_type=0)
    await rows.member_coupon(cid, uid=1, uniacid=1)
    return token_for(1, 1)
