"""marshmallow at the edge: the endpoint's parameters, strict, with Chinese messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

_INT = re.compile(r"[+-]?[0-9]{1,18}")
# A WeCom external_userid (`wm...`, 32 characters today): printable ASCII, no spaces, bounded.
USER_ID_PATTERN = "^[\\x21-\\x7e]{1,128}$"
_USER_ID = re.compile(r"[\x21-\x7e]{1,128}")
USER_ID_RULE = "参数 user_id 必须是 1 到 128 个可见 ASCII 字符"


def _user_id(value: str) -> None:
    # fullmatch: `$` in a pattern would let a trailing newline through.
    if not _USER_ID.fullmatch(value):
        raise ValidationError(USER_ID_RULE)


class StrictInt(fields.Field):
    """An int, or a string of decimal digits: never a float, `1e3`, a bool or blank."""

    def __init__(self, *, minimum: int, maximum: int, **kwargs: Any) -> None:
        name = kwargs.pop("name")
        rule = (
            f"参数 {name} 必须是 {minimum}"
            if minimum == maximum
            else f"参数 {name} 必须是 {minimum} 到 {maximum} 之间的整数"
        )
        kwargs.setdefault("validate", validate.Range(minimum, maximum, error=rule))
        kwargs["error_messages"] = {
            "required": f"缺少参数 {name}",
            "null": f"参数 {name} 不能为空",
            "invalid": rule,
        }
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT.fullmatch(value):
            return int(value)
        raise self.make_error("invalid")


def _exact(name: str, expected: Any) -> dict[str, Any]:
    rule = f"参数 {name} 必须是 {expected}"
    return {
        "required": True,
        "validate": validate.Equal(expected, error=rule),
        "error_messages": {"required": f"缺少参数 {name}", "null": rule, "invalid": rule},
    }


class CouponsQuerySchema(Schema):
    """The parameters of `couponsOfMemberByStatusV2` (contract: Parameters)."""

    class Meta:
        unknown = EXCLUDE

    client = fields.String(**_exact("client", "work"))
    type = StrictInt(name="type", minimum=17, maximum=17, required=True)
    page = StrictInt(name="page", minimum=1, maximum=100_000, load_default=1)
    status_request = StrictInt(name="status_request", minimum=1, maximum=3, load_default=1)
    coupon_type = StrictInt(name="coupon_type", minimum=0, maximum=10, load_default=1)
    pagesize = StrictInt(name="pagesize", minimum=1, maximum=50, load_default=15)
    # The WeCom contact, for a staff token without member_id (ignored otherwise).
    user_id = fields.String(
        validate=_user_id,
        error_messages={"invalid": USER_ID_RULE, "null": USER_ID_RULE},
        metadata={"description": "WeCom external_userid of the contact (staff tokens only)",
                  "pattern": USER_ID_PATTERN, "minLength": 1, "maxLength": 128},
    )


class MallRouterSchema(CouponsQuerySchema):
    """The mall's own router form adds the tenant `i`, which must match the caller's."""

    i = StrictInt(name="i", minimum=1, maximum=2**31 - 1, required=True)


# The order in which a failure is named in `msg` when several parameters are wrong.
FIELD_ORDER = ("i", "client", "type", "page", "status_request", "coupon_type", "pagesize",
               "user_id")

COUPONS_SCHEMA = CouponsQuerySchema()
MALL_ROUTER_SCHEMA = MallRouterSchema()


def load_params(schema: Schema, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validated parameters; raises ValidationError whose messages name each parameter."""
    return schema.load(raw)


def first_message(errors: Mapping[str, Any]) -> str:
    ordered = sorted(errors, key=lambda k: FIELD_ORDER.index(k) if k in FIELD_ORDER else 99)
    first = errors[ordered[0]]
    return first[0] if isinstance(first, list) else str(first)


__all__ = ["COUPONS_SCHEMA", "MALL_ROUTER_SCHEMA", "ValidationError", "first_message",
           "load_params"]
