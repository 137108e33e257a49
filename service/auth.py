"""Who is asking: the member comes from the caller's bearer token, never from a parameter."""

from __future__ import annotations

import dataclasses
import functools
import hmac
from collections.abc import Mapping
from typing import Any

import jwt
from aiohttp import web

from service.errors import ApiError

ALGORITHMS = ["HS256"]
REQUIRED_CLAIMS = ["exp", "sub", "uniacid", "member_id"]
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="coupons"'}


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    uniacid: int
    member_id: int
    staff_id: str


def _unauthorized(msg: str) -> ApiError:
    return ApiError(401, msg, {"authorization": [msg]}, _CHALLENGE)


def _positive_int(claims: Mapping[str, Any], name: str, limit: int) -> int:
    value = claims.get(name)
    # bool is an int in Python; a token saying `"uniacid": true` is malformed, not tenant 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < limit:
        raise _unauthorized("身份令牌无效")
    return value


@functools.lru_cache(maxsize=8192)
def _verified(token: str, secret: str) -> tuple[Principal, float, float]:
    """Signature and claims of a token, memoised: a sidebar repeats its token on every call, and
    verifying it is the most expensive step of a cached answer. Only what depends on the token
    alone is cached (a failure raises, and is not); `exp`/`nbf` are returned to be checked
    against the clock on every request."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            options={"require": REQUIRED_CLAIMS, "verify_exp": False, "verify_nbf": False,
                     "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise _unauthorized("身份令牌无效") from None
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    sub = claims.get("sub")
    if (isinstance(exp, bool) or not isinstance(exp, int | float)
            or isinstance(nbf, bool) or not isinstance(nbf, int | float)
            or not isinstance(sub, str) or not sub):
        raise _unauthorized("身份令牌无效")
    principal = Principal(
        uniacid=_positive_int(claims, "uniacid", 2**31),  # yz_* uniacid columns are int4
        member_id=_positive_int(claims, "member_id", 2**63),
        staff_id=sub,
    )
    return principal, exp, nbf


def authenticate(request: web.Request, secret: str, leeway: int, now: int) -> Principal:
    """The caller's principal; `now` (unix seconds) is the app's clock, so that expiry follows
    the same clock as coupon status."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _unauthorized("缺少身份令牌，请在 Authorization 头中携带 Bearer 令牌")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("身份令牌格式不正确，应为 Authorization: Bearer <令牌>")
    principal, exp, nbf = _verified(token.strip(), secret)
    if nbf > now + leeway:
        raise _unauthorized("身份令牌无效")
    if exp + leeway <= now:
        raise _unauthorized("身份令牌已过期")
    return principal


def authenticate_service(request: web.Request, token: str) -> None:
    """The mall's own service token for /internal/*: a fixed secret, distinct from staff JWTs."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if (not token or scheme.lower() != "bearer"
            or not hmac.compare_digest(presented.strip().encode(), token.encode())):
        raise _unauthorized("服务令牌无效")


def issue_token(secret: str, uniacid: int, member_id: int, staff_id: str, ttl_seconds: int,
                now: int) -> str:
    """A token for local tries and tests (the mall's login service issues the real ones)."""
    claims = {"uniacid": uniacid, "member_id": member_id, "sub": staff_id,
              "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm="HS256")
