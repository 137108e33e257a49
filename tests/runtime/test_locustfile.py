"""locustfile.py signs its staff tokens with the standard library (the locust image has no
PyJWT): the service's own verifier accepts them. The file is read, not imported (importing it
needs locust, which only the bench extra installs); `make compose-check` runs it for real."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from tests.support.processes import REPO

NEEDED = {"_b64", "staff_token"}


def signer(secret: str, uniacid: int):
    tree = ast.parse((REPO / "locustfile.py").read_text(encoding="utf-8"))
    functions = [node for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name in NEEDED]
    assert {f.name for f in functions} == NEEDED
    scope = {"base64": base64, "hashlib": hashlib, "hmac": hmac, "json": json, "time": time,
             "SECRET": secret, "UNIACID": uniacid}
    exec(compile(ast.Module(body=functions, type_ignores=[]), "locustfile.py", "exec"), scope)
    return scope["staff_token"]


def test_its_tokens_verify_as_hs256_staff_tokens() -> None:
    secret = "s" * 40
    token = signer(secret, 7)("staff-1", 42)
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert (claims["uniacid"], claims["member_id"], claims["sub"]) == (7, 42, "staff-1")
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_another_secret_does_not_verify() -> None:
    token = signer("s" * 40, 1)("staff-1", 1)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "t" * 40, algorithms=["HS256"])
