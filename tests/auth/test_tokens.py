"""RS256/ES256 tokens of the mall's login service beside HS256, and the attacks on them:
algorithm confusion, `alg: none`, a missing `exp`, tokens from the future, foreign keys."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.settings import SettingsError, load_settings
from tests.support.api import coupons, items_of
from tests.support.common import NOW, SECRET

T = int(NOW.timestamp())


def pem(private_key: Any) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"uniacid": 1, "member_id": 1, "sub": "staff-1", "iat": T,
                            "exp": T + 3600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
async def member(rows) -> int:
    await rows.member(1, 1)
    cid = await rows.coupon(1, name="券")
    return await rows.member_coupon(cid)


@pytest.fixture
async def rsa_client(make_client, settings, rsa_key):
    return await make_client(dataclasses.replace(settings, auth_jwt_public_key=pem(rsa_key)))


async def refused(client, token: str) -> None:
    body = await coupons(client, token, expected_status=401)
    assert list(body["data"]["errors"]) == ["authorization"]


async def test_rs256_token_of_the_login_service_is_accepted(rsa_client, rsa_key, member):
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert [i["id"] for i in items_of(await coupons(rsa_client, token))] == [member]


async def test_hs256_still_accepted_beside_a_public_key(rsa_client, member):
    await coupons(rsa_client, jwt.encode(claims(), SECRET, algorithm="HS256"))


async def test_es256_with_an_ec_key(make_client, settings, ec_key, rsa_key, member):
    client = await make_client(dataclasses.replace(settings, auth_jwt_public_key=pem(ec_key)))
    await coupons(client, jwt.encode(claims(), ec_key, algorithm="ES256"))
    # The key decides the algorithm: an RS256 token is refused by an ES256 deployment.
    await refused(client, jwt.encode(claims(), rsa_key, algorithm="RS256"))


async def test_public_key_from_a_file(make_client, settings, rsa_key, tmp_path: Path, member):
    path = tmp_path / "login.pub.pem"
    path.write_text(pem(rsa_key))
    client = await make_client(dataclasses.replace(settings, auth_jwt_public_key=str(path)))
    await coupons(client, jwt.encode(claims(), rsa_key, algorithm="RS256"))


async def test_rs256_refused_without_a_configured_key(client, rsa_key, member):
    await refused(client, jwt.encode(claims(), rsa_key, algorithm="RS256"))


async def test_algorithm_confusion_public_key_as_hmac_secret(rsa_client, rsa_key, member):
    """The classic attack: sign HS256 with the (public) PEM as the HMAC secret."""
    public_pem = pem(rsa_key).encode()
    for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384),
                        ("HS512", hashlib.sha512)):
        head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        body = b64(json.dumps(claims()).encode())
        sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), digest).digest())
        await refused(rsa_client, f"{head}.{body}.{sig}")


async def test_token_signed_by_another_private_key(rsa_client, member):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await refused(rsa_client, jwt.encode(claims(), stranger, algorithm="RS256"))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_with_a_public_key_configured(rsa_client, member, alg):
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    await refused(rsa_client, f"{head}.{b64(json.dumps(claims()).encode())}.")


@pytest.mark.parametrize("alg", ["PS256", "RS384", "RS512", "ES384", "EdDSA"])
async def test_other_asymmetric_algorithms_refused(rsa_client, rsa_key, member, alg):
    if alg.startswith("ES") or alg == "EdDSA":
        head = b64(json.dumps({"alg": alg}).encode())
        token = f"{head}.{b64(json.dumps(claims()).encode())}.{b64(b'x' * 64)}"
    else:
        token = jwt.encode(claims(), rsa_key, algorithm=alg)
    await refused(rsa_client, token)


async def test_asymmetric_token_without_exp(rsa_client, rsa_key, member):
    await refused(rsa_client, jwt.encode(claims(exp=...), rsa_key, algorithm="RS256"))


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (10, True), (11, False), (86_400, False)])
async def test_iat_in_the_future_beyond_the_leeway(client, member, offset, ok):
    token = jwt.encode(claims(iat=T + offset), SECRET, algorithm="HS256")
    await coupons(client, token, expected_status=200 if ok else 401)


@pytest.mark.parametrize("iat", ["now", True, None, [T]])
async def test_iat_of_wrong_type(client, member, iat):
    await refused(client, jwt.encode(claims(iat=iat), SECRET, algorithm="HS256"))


async def test_overlong_sub_refused(client, member):
    await refused(client, jwt.encode(claims(sub="s" * 129), SECRET, algorithm="HS256"))
    await coupons(client, jwt.encode(claims(sub="s" * 128), SECRET, algorithm="HS256"))


async def test_skew_beyond_leeway_refused_on_exp_and_nbf(rsa_client, rsa_key, member):
    for token_claims in (claims(exp=T - 11), claims(nbf=T + 11)):
        await refused(rsa_client, jwt.encode(token_claims, rsa_key, algorithm="RS256"))
    for token_claims in (claims(exp=T - 9), claims(nbf=T + 9)):
        await coupons(rsa_client, jwt.encode(token_claims, rsa_key, algorithm="RS256"))


# Settings ---------------------------------------------------------------------------------------

def _load(tmp_path: Path, **overrides: Any):
    return load_settings(env={"AUTH_JWT_SECRET": SECRET}, config_dir=tmp_path, **overrides)


def test_public_key_settings_refusals(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    for value, message in ((pem(weak), "2048"), (pem(p384), "P-256"),
                           ("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "PEM"),
                           (str(tmp_path / "missing.pem"), "path")):
        with pytest.raises(SettingsError, match="AUTH_JWT_PUBLIC_KEY") as info:
            _load(tmp_path, auth_jwt_public_key=value)
        assert message in str(info.value)


def test_public_key_with_escaped_newlines_and_masked(tmp_path: Path, rsa_key) -> None:
    escaped = pem(rsa_key).replace("\n", "\\n")
    settings = _load(tmp_path, auth_jwt_public_key=escaped)
    assert settings.masked()["auth_jwt_public_key"] == "<PEM text>"


@pytest.mark.parametrize("leeway", [-1, 61, 3600])
def test_leeway_is_small(tmp_path: Path, leeway: int) -> None:
    with pytest.raises(SettingsError, match="AUTH_JWT_LEEWAY_SECONDS"):
        _load(tmp_path, auth_jwt_leeway_seconds=leeway)
