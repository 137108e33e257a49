"""Who is asking: the member comes from the caller's bearer token, never from a parameter.

Two kinds of staff token (contract: The member; README: Security):
- with `member_id`: the member is the token's;
- without it (the WeCom sidebar knows only the contact it chats with): the request names the
  contact's `external_userid` and the service resolves the member, only for a contact that the
  token's staff member (`sub`) follows.
HS256 tokens are verified with AUTH_JWT_SECRET; RS256 or ES256 ones (the mall's login service)
with AUTH_JWT_PUBLIC_KEY. The algorithm named in a token's header only picks which of the two
keys to try, and each key verifies exactly one algorithm: a token cannot make the public key act
as an HMAC secret, and `alg: none` matches neither.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
from collections.abc import Mapping
from typing import Any

import jwt
from aiohttp import web

from service.auth.keys import load_public_key
from service.settings import Settings

HMAC_ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "sub", "uniacid"]
# A staff id ends up in rate-limit keys and SQL parameters: bounded like WeCom's userids (64).
MAX_SUB_CHARS = 128


class Unauthorized(Exception):
    """No valid token: `msg` says why, in the caller's words (401, service/http/errors.py)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    uniacid: int
    member_id: int | None  # None: a staff token; the member comes from the named contact
    staff_id: str


# The principal and the token's exp, nbf and iat.
Claims = tuple[Principal, float, float, float]


def _positive_int(claims: Mapping[str, Any], name: str, limit: int) -> int:
    value = claims.get(name)
    # bool is an int in Python; a token saying `"uniacid": true` is malformed, not tenant 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < limit:
        raise Unauthorized("身份令牌无效")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TokenVerifier:
    """Built once per app from the settings (parsing a PEM key per request would cost more than
    verifying the token)."""

    def __init__(self, secret: str, leeway: int, public_key: str = "",
                 memo_entries: int = 8192) -> None:
        self._keys: dict[str, Any] = {HMAC_ALGORITHM: secret}
        if public_key:
            key, algorithm = load_public_key(public_key)
            self._keys[algorithm] = key
        self.leeway = leeway
        # Signatures and claims by token, for the active population (MEMO_ENTRIES): with
        # 20,000 staff tokens in use, 8,192 entries missed on most requests and PyJWT was a
        # sixth of the process (issue 13). An entry is the token (~200 B) and its claims.
        self._decode = functools.lru_cache(maxsize=memo_entries)(self._decode_uncached)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(settings.auth_jwt_secret, settings.auth_jwt_leeway_seconds,
                   settings.auth_jwt_public_key, settings.memo_entries)

    @property
    def algorithms(self) -> list[str]:
        return sorted(self._keys)

    def authenticate(self, request: web.Request, now: int) -> Principal:
        """The caller's principal; `now` (unix seconds) is the app's clock, so that expiry
        follows the same clock as coupon status."""
        return self.check(self.claims_of(request), now)

    def claims_of(self, request: web.Request) -> Claims:
        """What the token says whatever the time (signature, principal, time claims)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise Unauthorized("缺少身份令牌，请在 Authorization 头中携带 Bearer 令牌")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("身份令牌格式不正确，应为 Authorization: Bearer <令牌>")
        return self._decode(token.strip())

    def check(self, claims: Claims, now: int) -> Principal:
        """The principal if the token is valid at `now`."""
        principal, exp, nbf, iat = claims
        leeway = self.leeway
        # A token from the future (beyond the skew allowed) is refused, not trusted for longer.
        if nbf > now + leeway or iat > now + leeway:
            raise Unauthorized("身份令牌无效")
        if exp + leeway <= now:
            raise Unauthorized("身份令牌已过期")
        return principal

    def _decode_uncached(self, token: str) -> Claims:
        """Signature and claims: what depends on the token alone (time claims are checked per
        request). Memoised per verifier: a sidebar repeats its token on every call, and this is
        the most expensive step of a cached answer; a failure raises and is not cached."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
            if key is None:
                raise Unauthorized("身份令牌无效")
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options={"require": REQUIRED_CLAIMS, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "verify_aud": False, "verify_iss": False},
            )
        except jwt.PyJWTError:
            raise Unauthorized("身份令牌无效") from None
        exp, nbf, iat = claims.get("exp"), claims.get("nbf", 0), claims.get("iat", 0)
        if not _number(exp) or not _number(nbf) or not _number(iat):
            raise Unauthorized("身份令牌无效")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS:
            raise Unauthorized("身份令牌无效")
        member_id = None
        if "member_id" in claims:
            member_id = _positive_int(claims, "member_id", 2**63)
        principal = Principal(
            uniacid=_positive_int(claims, "uniacid", 2**31),  # yz_* uniacid columns are int4
            member_id=member_id,
            staff_id=sub,
        )
        return principal, exp, nbf, iat


def authenticate_service(request: web.Request, token: str) -> None:
    """The mall's own service token for /internal/*: a fixed secret, distinct from staff JWTs."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if (not token or scheme.lower() != "bearer"
            or not hmac.compare_digest(presented.strip().encode(), token.encode())):
        raise Unauthorized("服务令牌无效")


def issue_token(secret: str, uniacid: int, member_id: int | None, staff_id: str,
                ttl_seconds: int, now: int) -> str:
    """A token for local tries and tests (the mall's login service issues the real ones);
    `member_id` None: a staff token for the sidebar's contact flow."""
    claims: dict[str, Any] = {"uniacid": uniacid, "sub": staff_id, "iat": now,
                              "exp": now + ttl_seconds}
    if member_id is not None:
        claims["member_id"] = member_id
    return jwt.encode(claims, secret, algorithm=HMAC_ALGORITHM)
