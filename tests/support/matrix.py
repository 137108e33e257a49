"""The status × type matrix, by hand: member coupons of every use_type and method, in every
state (unused, near expiration, expired, used, deleted), with the tab each must show in and
whether it is near expiration; and the contract's coupon_type table. Expected results come from
these tables, never from re-deriving the service's SQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from tests.support.common import NOW
from tests.support.tabs import sh

# Timing presets at NOW = 2026-06-15 10:00:00 (Shanghai): coupon columns and the get_time.
DEFAULT_GET = sh(2026, 6, 14, 10, 0, 0)
TIMINGS: dict[str, tuple[dict[str, Any], dt.datetime]] = {
    # fixed range ending far in the future
    "FAR": ({"time_limit": 1, "time_start": sh(2026, 6, 1),
             "time_end": sh(2026, 12, 31, 23, 59, 59)}, DEFAULT_GET),
    # time_days 0: never expires
    "NEVER": ({"time_limit": 0, "time_days": 0}, sh(2025, 1, 1, 8, 0, 0)),
    # 30 days after 2026-06-10: ends 2026-07-10 23:59:59
    "DAYS_FAR": ({"time_limit": 0, "time_days": 30}, sh(2026, 6, 10, 15, 0, 0)),
    # fixed range ending in 2 days 14 hours: within the 3-day window
    "NEAR_FIXED": ({"time_limit": 1, "time_start": sh(2026, 6, 1),
                    "time_end": sh(2026, 6, 17, 23, 59, 59)}, DEFAULT_GET),
    # 2 days after 2026-06-14: ends 2026-06-16 23:59:59
    "NEAR_DAYS": ({"time_limit": 0, "time_days": 2}, sh(2026, 6, 14, 9, 0, 0)),
    # 1 day after 2026-06-14 09:00: ends today 23:59:59, although 25 hours have passed
    "NEAR_TODAY": ({"time_limit": 0, "time_days": 1}, sh(2026, 6, 14, 9, 0, 0)),
    # fixed range that ended on 2026-06-10
    "EXP_FIXED": ({"time_limit": 1, "time_start": sh(2026, 5, 1),
                   "time_end": sh(2026, 6, 10, 23, 59, 59)}, DEFAULT_GET),
    # 5 days after 2026-06-01: ended 2026-06-06 23:59:59
    "EXP_DAYS": ({"time_limit": 0, "time_days": 5}, sh(2026, 6, 1, 12, 0, 0)),
    # 1 day after 2026-06-13 20:00: ended yesterday 23:59:59 (less than 24h after receipt + 1 day)
    "EXP_YESTERDAY": ({"time_limit": 0, "time_days": 1}, sh(2026, 6, 13, 20, 0, 0)),
}


@dataclasses.dataclass(frozen=True)
class MC:
    id: int
    use_type: int
    method: int
    timing: str
    used: int = 0
    deleted: int = 0
    tab: int | None = 1  # the tab it must show in, by hand; None: never shows
    near: int = 0  # near_expiration it must show (tab 1 only)


MATRIX = [
    MC(101, 0, 1, "FAR"),
    MC(102, 0, 2, "NEAR_FIXED", near=1),
    MC(103, 0, 1, "EXP_FIXED", tab=2),
    MC(104, 0, 2, "FAR", used=1, tab=3),
    MC(105, 0, 1, "FAR", used=1, deleted=1, tab=None),
    MC(111, 1, 2, "NEVER"),
    MC(112, 1, 1, "EXP_DAYS", tab=2),
    MC(113, 1, 1, "EXP_FIXED", used=1, tab=3),
    MC(121, 2, 1, "DAYS_FAR"),
    MC(122, 2, 2, "NEAR_DAYS", near=1),
    MC(123, 2, 1, "FAR", deleted=1, tab=None),
    MC(124, 2, 2, "EXP_YESTERDAY", tab=2),
    MC(131, 3, 2, "FAR"),
    MC(132, 3, 1, "EXP_YESTERDAY", tab=2),
    MC(133, 3, 1, "NEAR_TODAY", near=1),
    MC(141, 4, 1, "FAR"),
    MC(142, 4, 2, "NEVER", used=1, tab=3),
    MC(143, 4, 2, "EXP_FIXED", tab=2),
    MC(151, 5, 2, "NEAR_FIXED", near=1),
    MC(152, 5, 1, "EXP_FIXED", tab=2),
    MC(153, 5, 1, "NEVER"),
    MC(161, 6, 1, "NEVER"),
    MC(162, 6, 2, "EXP_DAYS", tab=2),
    MC(163, 6, 2, "NEAR_TODAY", used=1, tab=3),
    MC(171, 7, 2, "FAR"),
    MC(172, 7, 1, "FAR", used=1, tab=3),
    MC(173, 7, 1, "NEAR_FIXED", near=1),
    MC(181, 8, 1, "DAYS_FAR"),
    MC(182, 8, 2, "EXP_FIXED", tab=2),
    MC(183, 8, 1, "NEAR_DAYS", near=1),
    MC(184, 8, 2, "NEAR_FIXED", deleted=1, tab=None),
    MC(191, 9, 2, "FAR"),
    MC(192, 9, 1, "NEAR_FIXED", near=1),
    MC(193, 9, 2, "EXP_FIXED", used=1, tab=3),
    MC(194, 9, 1, "EXP_FIXED", deleted=1, tab=None),
]

# The contract's coupon_type table, by hand: (use_types or None, coupon_method or None).
COUPON_TYPES: dict[int, tuple[set[int] | None, int | None]] = {
    0: (None, None), 1: ({0}, None), 2: ({4, 5}, None), 3: ({6, 7}, None), 4: ({2}, None),
    5: ({1}, None), 6: ({8}, None), 7: (None, 1), 8: (None, 2), 9: ({9}, None),
    10: (None, None),
}


def expected_ids(status: int, coupon_type: int) -> set[int]:
    use_types, method = COUPON_TYPES[coupon_type]
    out = set()
    for mc in MATRIX:
        if mc.tab != status:
            continue
        if use_types is not None and mc.use_type not in use_types:
            continue
        if method is not None and mc.method != method:
            continue
        if coupon_type == 10 and not (status == 1 and mc.near):
            continue
        out.add(mc.id)
    return out


USE_TIME = NOW - dt.timedelta(hours=2)


async def build_matrix(rows) -> None:
    await rows.member(1, 1)
    for mc in MATRIX:
        fields, get_time = TIMINGS[mc.timing]
        cid = await rows.coupon(1, use_type=mc.use_type, coupon_method=mc.method,
                                name=f"券{mc.id}", **fields)
        await rows.member_coupon(cid, id=mc.id, used=mc.used, deleted=mc.deleted,
                                 get_time=get_time, use_time=USE_TIME if mc.used else None)
