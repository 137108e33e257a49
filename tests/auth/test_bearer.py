"""The member comes from the bearer token: every way a token can be wrong is a 401, every way the
member can be wrong is a 404 or 403, and one member never sees another's coupons."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
from typing import Any

import jwt
import pytest

from service.http.coupons import PATH_MALL_ROUTER, PATH_PLUGIN, PATH_SHORT, ROUTE_NAME
from tests.support.api import coupons, items_of
from tests.support.common import NOW, SECRET, token_for
from tests.support.pages import settle

CJK = re.compile(r"[\u4e00-\u9fff]")
T = int(NOW.timestamp())


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"uniacid": 1, "member_id": 1, "sub": "staff-1", "iat": T,
                            "exp": T + 3600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def sign(payload: dict[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any] | bytes, *,
              secret: str | None = SECRET, signature: str | None = None,
              digestmod: Any = hashlib.sha256) -> str:
    """A JWT assembled by hand, for headers and payloads PyJWT would refuse to produce."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(raw)}"
    if signature is None:
        digest = hmac.new(secret.encode(), signing_input.encode(), digestmod).digest()
        signature = b64(digest)
    return f"{signing_input}.{signature}"


@pytest.fixture
async def member(rows) -> int:
    """Member 1 of tenant 1 with one unused coupon; returns that member coupon's id."""
    await rows.member(1, 1)
    cid = await rows.coupon(1, name="会员1的券")
    return await rows.member_coupon(cid, uid=1, uniacid=1)


async def unauthorized(client, authorization: str | None, *, expect: str | None = None,
                       path: str = PATH_SHORT) -> dict[str, Any]:
    headers = {} if authorization is None else {"Authorization": authorization}
    params = {"client": "work", "type": "17"}
    if path == PATH_MALL_ROUTER:
        params |= {"route": ROUTE_NAME, "i": "1"}
    resp = await client.get(path, params=params, headers=headers)
    body = await resp.json()
    assert resp.status == 401, body
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["result"] == 0 and list(body["data"]["errors"]) == ["authorization"]
    assert CJK.search(body["msg"]) and body["msg"] in body["data"]["errors"]["authorization"]
    assert "Traceback" not in body["msg"] and SECRET not in json.dumps(body)
    if expect is not None:
        assert expect in body["msg"], body["msg"]
    # Through the shared helper too: the 401 is the error envelope.
    await coupons(client, None, expected_status=401, path=path,
                  headers=headers)
    return body


# --- the Authorization header ----------------------------------------------------------------

async def test_valid_token_is_accepted(client, member):
    body = await coupons(client, token_for(1, 1))
    assert [item["id"] for item in items_of(body)] == [member]


@pytest.mark.parametrize("path", [PATH_SHORT, PATH_PLUGIN, PATH_MALL_ROUTER])
async def test_missing_authorization(client, member, path):
    await unauthorized(client, None, path=path)


async def test_missing_authorization_with_post_body(client, member):
    body = await coupons(client, None, expected_status=401, method="POST", body="json")
    assert list(body["data"]["errors"]) == ["authorization"]


@pytest.mark.parametrize("template", [
    "Basic {t}", "Token {t}", "JWT {t}", "Bearer:{t}", "{t}", "Bearer{t}", "Bear {t}",
    "Bearer-{t}", "Digest {t}",
])
async def test_wrong_scheme(client, member, template):
    await unauthorized(client, template.format(t=token_for(1, 1)))


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer    ", "Bearer \t", " "])
async def test_empty_token(client, member, header):
    await unauthorized(client, header)


async def test_scheme_is_case_insensitive(client, member):
    for scheme in ("bearer", "BEARER", "Bearer"):
        body = await coupons(client, None, headers={"Authorization": f"{scheme} {token_for()}"})
        assert [item["id"] for item in items_of(body)] == [member]


@pytest.mark.parametrize("token", [
    "abc", "a.b.c", "..", "....", "eyJ.eyJ.sig", "null", "undefined", "Bearer",
    "x" * 5000, "\u4e2d\u6587", "e30.e30.", "e30.e30.e30",
])
async def test_garbage_token(client, member, token):
    await unauthorized(client, f"Bearer {token}")


async def test_two_tokens_in_one_header(client, member):
    await unauthorized(client, f"Bearer {token_for()} {token_for()}")


# --- signature and algorithm -----------------------------------------------------------------

async def test_wrong_signature(client, member):
    other = "another-secret-0123456789abcdef0123456789abcdef"
    await unauthorized(client, f"Bearer {token_for(1, 1, secret=other)}")


async def test_tampered_payload(client, member):
    head, _, sig = token_for(1, 1).split(".")
    forged = b64(json.dumps(claims(member_id=2)).encode())
    await unauthorized(client, f"Bearer {head}.{forged}.{sig}")


async def test_truncated_or_stripped_signature(client, member):
    token = token_for(1, 1)
    await unauthorized(client, f"Bearer {token[:-3]}")
    await unauthorized(client, "Bearer " + token.rsplit(".", 1)[0] + ".")
    await unauthorized(client, "Bearer " + token.rsplit(".", 1)[0])


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none(client, member, alg):
    token = hand_made({"alg": alg, "typ": "JWT"}, claims(), signature="")
    await unauthorized(client, f"Bearer {token}")


async def test_alg_none_from_pyjwt(client, member):
    token = jwt.encode(claims(), None, algorithm="none")
    await unauthorized(client, f"Bearer {token}")


@pytest.mark.parametrize(("alg", "digestmod"), [("HS384", hashlib.sha384),
                                                 ("HS512", hashlib.sha512)])
async def test_other_hmac_algorithms_rejected(client, member, alg, digestmod):
    # Correctly signed with the service's secret, but not with the one accepted algorithm.
    token = hand_made({"alg": alg, "typ": "JWT"}, claims(), digestmod=digestmod)
    await unauthorized(client, f"Bearer {token}")



@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "EdDSA", "hs256", ""])
async def test_header_claiming_other_algorithm_rejected(client, member, alg):
    # Signed with HMAC-SHA256 and the right secret, but the header names another algorithm.
    token = hand_made({"alg": alg, "typ": "JWT"}, claims())
    await unauthorized(client, f"Bearer {token}")


async def test_hand_made_hs256_token_is_accepted(client, member):
    """The hand-made tokens above fail for the reason under test, not for being hand-made."""
    token = hand_made({"alg": "HS256", "typ": "JWT"}, claims())
    body = await coupons(client, token)
    assert [item["id"] for item in items_of(body)] == [member]


@pytest.mark.parametrize("payload", [b"[]", b'"x"', b"not json", b"1"])
async def test_payload_not_an_object(client, member, payload):
    await unauthorized(client, f"Bearer {hand_made({'alg': 'HS256'}, payload)}")


# --- expiry against the service's clock ------------------------------------------------------

@pytest.mark.parametrize("offset", [3600, 1, 0, -1, -5, -9])
async def test_exp_within_leeway_accepted(client, member, offset):
    await coupons(client, sign(claims(exp=T + offset)))


@pytest.mark.parametrize("offset", [-11, -60, -3600, -(10**9)])
async def test_expired(client, member, offset):
    await unauthorized(client, f"Bearer {sign(claims(exp=T + offset))}", expect="过期")


async def test_expiry_follows_the_clock(client, clock, member):
    token = token_for(1, 1, ttl=60)
    await coupons(client, token)
    clock.advance(60 + 5)
    await coupons(client, token)
    clock.advance(6)  # now 11 s past exp
    await unauthorized(client, f"Bearer {token}", expect="过期")
    clock.set(NOW)
    await coupons(client, token)


async def test_a_memoised_request_still_checks_the_token_times(client, clock, member, db):
    """A repeated GET skips parsing and validation (ResolvedMemo) and is answered from the
    local layer, but the token's exp and nbf are checked against the clock every time."""
    headers = {"Authorization": f"Bearer {token_for(1, 1, ttl=60)}"}
    params = {"client": "work", "type": "17"}
    # The rows' own invalidations applied first: one arriving after the miss began would
    # (rightly) refuse its fill.
    await settle(client, db)
    first = await client.get(PATH_SHORT, params=params, headers=headers)
    assert first.status == 200 and first.headers["X-Cache"] == "miss"
    again = await client.get(PATH_SHORT, params=params, headers=headers)
    assert again.status == 200 and again.headers["X-Cache"] == "local"
    assert await again.read() == await first.read()
    clock.advance(60 + 11)
    late = await client.get(PATH_SHORT, params=params, headers=headers)
    assert late.status == 401 and "过期" in (await late.json())["msg"]
    # Not before: a token whose nbf the clock has not reached, memoised while it was valid.
    token = sign(claims(nbf=T + 60, exp=T + 3600))
    clock.set(NOW + dt.timedelta(seconds=60))
    assert (await client.get(PATH_SHORT, params=params,
                             headers={"Authorization": f"Bearer {token}"})).status == 200
    clock.set(NOW)
    assert (await client.get(PATH_SHORT, params=params,
                             headers={"Authorization": f"Bearer {token}"})).status == 401


async def test_clock_not_wall_time_decides(client, clock, member):
    # Far in the future of the service's clock a token of NOW has long expired...
    clock.set(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
    await unauthorized(client, f"Bearer {token_for()}", expect="过期")
    # ...and a token issued in 2001 is valid while the service's clock says 2001.
    old = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    clock.set(old)
    await coupons(client, token_for(now=int(old.timestamp())))


@pytest.mark.parametrize("exp", ["9999999999", None, True, [T + 60], {"t": 1}, "", "soon"])
async def test_exp_of_wrong_type(client, member, exp):
    await unauthorized(client, f"Bearer {hand_made({'alg': 'HS256'}, claims(exp=exp))}")


async def test_float_exp_accepted(client, member):
    await coupons(client, sign(claims(exp=T + 60.5)))


# --- nbf ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [11, 60, 3600, 10**9])
async def test_nbf_in_future(client, member, offset):
    await unauthorized(client, f"Bearer {sign(claims(nbf=T + offset))}")


@pytest.mark.parametrize("offset", [-3600, 0, 5])
async def test_nbf_now_or_past_accepted(client, member, offset):
    await coupons(client, sign(claims(nbf=T + offset)))


@pytest.mark.parametrize("nbf", ["0", True, None, [0]])
async def test_nbf_of_wrong_type(client, member, nbf):
    await unauthorized(client, f"Bearer {hand_made({'alg': 'HS256'}, claims(nbf=nbf))}")


async def test_nbf_follows_the_clock(client, clock, member):
    token = sign(claims(nbf=T + 60, exp=T + 3600))
    await unauthorized(client, f"Bearer {token}")
    clock.advance(60)
    await coupons(client, token)


# --- required claims and their types ---------------------------------------------------------

@pytest.mark.parametrize("missing", ["exp", "sub", "uniacid"])
async def test_missing_required_claim(client, member, missing):
    await unauthorized(client, f"Bearer {sign(claims(**{missing: ...}))}")


async def test_staff_token_without_member_id_must_name_the_contact(client, member):
    # Without member_id the token is a staff token: the request must say which contact.
    body = await coupons(client, sign(claims(member_id=...)), expected_status=400)
    assert list(body["data"]["errors"]) == ["user_id"]


async def test_iat_is_not_required(client, member):
    await coupons(client, sign(claims(iat=...)))


@pytest.mark.parametrize("value", ["1", True, False, 0, -1, 2**31, 2**63, 1.0, 1.5, None,
                                   [1], {"id": 1}, ""], ids=repr)
async def test_uniacid_of_wrong_type_or_range(client, member, value):
    await unauthorized(client, f"Bearer {hand_made({'alg': 'HS256'}, claims(uniacid=value))}")


@pytest.mark.parametrize("value", ["1", True, False, 0, -1, 2**63, 2**64, 1.0, None, [1], ""],
                         ids=repr)
async def test_member_id_of_wrong_type_or_range(client, member, value):
    await unauthorized(client,
                       f"Bearer {hand_made({'alg': 'HS256'}, claims(member_id=value))}")


@pytest.mark.parametrize("value", [1, 0, True, None, "", ["staff"], {"id": "s"}], ids=repr)
async def test_sub_of_wrong_type(client, member, value):
    await unauthorized(client, f"Bearer {hand_made({'alg': 'HS256'}, claims(sub=value))}")


async def test_largest_uniacid_passes_auth(client, rows):
    top = 2**31 - 1
    await rows.member(7, top)
    cid = await rows.coupon(top, name="大商户券")
    mc = await rows.member_coupon(cid, uid=7, uniacid=top)
    body = await coupons(client, token_for(top, 7))
    assert [item["id"] for item in items_of(body)] == [mc]


async def test_largest_member_id_passes_auth_and_is_not_found(client, member):
    body = await coupons(client, token_for(1, 2**63 - 1), expected_status=404)
    assert list(body["data"]["errors"]) == ["member_id"]


# --- the member --------------------------------------------------------------------------------

async def test_member_not_found(client, member):
    body = await coupons(client, token_for(1, 999), expected_status=404)
    assert list(body["data"]["errors"]) == ["member_id"] and CJK.search(body["msg"])


async def test_member_not_found_in_empty_database(client, db):
    await coupons(client, token_for(1, 1), expected_status=404)


async def test_member_of_another_tenant(client, rows, member):
    await rows.member(5, 2)
    cid = await rows.coupon(2, name="商户2的券")
    await rows.member_coupon(cid, uid=5, uniacid=2)
    body = await coupons(client, token_for(1, 5), expected_status=403)
    assert list(body["data"]["errors"]) == ["member_id"] and CJK.search(body["msg"])
    assert "商户2的券" not in json.dumps(body, ensure_ascii=False)
    # ...and tenant 2's token for member 1 of tenant 1 is refused the same way.
    await coupons(client, token_for(2, 1), expected_status=403)


async def test_member_of_another_tenant_on_every_route(client, rows, member):
    await rows.member(5, 2)
    for path in (PATH_SHORT, PATH_PLUGIN):
        await coupons(client, token_for(1, 5), expected_status=403, path=path)
    await coupons(client, token_for(1, 5), expected_status=403, path=PATH_MALL_ROUTER, i=1)


@pytest.mark.parametrize("i", [2, 10, 2**31 - 1])
async def test_mall_router_tenant_mismatch(client, member, i):
    body = await coupons(client, token_for(1, 1), expected_status=403, path=PATH_MALL_ROUTER,
                         i=i)
    assert list(body["data"]["errors"]) == ["i"] and CJK.search(body["msg"])
    assert "i" in body["msg"]


async def test_mall_router_tenant_mismatch_either_way(client, rows, member):
    await rows.member(5, 2)
    cid = await rows.coupon(2, name="商户2的券")
    mc = await rows.member_coupon(cid, uid=5, uniacid=2)
    await coupons(client, token_for(2, 5), expected_status=403, path=PATH_MALL_ROUTER, i=1)
    body = await coupons(client, token_for(2, 5), path=PATH_MALL_ROUTER, i=2)
    assert [item["id"] for item in items_of(body)] == [mc]


async def test_mall_router_tenant_match(client, member):
    body = await coupons(client, token_for(1, 1), path=PATH_MALL_ROUTER, i=1)
    assert [item["id"] for item in items_of(body)] == [member]


async def test_mall_router_i_in_body_cannot_switch_tenant(client, rows, member):
    # Whether `i` is read from the query or overridden by the body, the tenant is the token's.
    await rows.member(5, 2)
    other = await rows.coupon(2, name="商户2的券")
    await rows.member_coupon(other, uid=5, uniacid=2)
    resp = await client.post(
        PATH_MALL_ROUTER,
        params={"route": ROUTE_NAME, "i": "1"},
        json={"client": "work", "type": 17, "i": 2},
        headers={"Authorization": f"Bearer {token_for(1, 1)}"},
    )
    text = await resp.text()
    assert resp.status in (200, 403), text
    assert "商户2的券" not in text
    if resp.status == 200:
        assert [item["id"] for item in items_of(json.loads(text))] == [member]


async def test_token_for_a_never_returns_b(client, rows, clock):
    await rows.member(1, 1)
    await rows.member(2, 1)
    await rows.member(3, 2)
    mine: dict[int, list[int]] = {1: [], 2: [], 3: []}
    for uid, uniacid in ((1, 1), (2, 1), (3, 2)):
        for used in (0, 1):
            cid = await rows.coupon(uniacid, name=f"m{uid}-{used}", use_type=0)
            mine[uid].append(await rows.member_coupon(cid, uid=uid, uniacid=uniacid, used=used))
    # A row with member 1's uid but tenant 2: not member 1's coupon in tenant 1.
    stray = await rows.coupon(2, name="stray")
    stray_mc = await rows.member_coupon(stray, uid=1, uniacid=2)
    for uid, uniacid in ((1, 1), (2, 1), (3, 2)):
        seen: set[int] = set()
        token = token_for(uniacid, uid)
        for status in (1, 2, 3):
            for coupon_type in range(11):
                body = await coupons(client, token, status_request=status,
                                     coupon_type=coupon_type, pagesize=50,
                                     member_id=2 if uid == 1 else 1, uid=3)
                seen |= {item["id"] for item in items_of(body)}
                for item in items_of(body):
                    assert item["belongs_to_coupon"]["name"].startswith(f"m{uid}-")
        assert seen == set(mine[uid])
        assert stray_mc not in seen
