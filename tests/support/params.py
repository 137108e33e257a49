"""What a refused parameter looks like: a 400 envelope whose `data.errors` is keyed by exactly
the parameters at fault and whose Chinese `msg` names one of them."""

from __future__ import annotations

import re
from typing import Any

from tests.support.api import check_error

CJK = re.compile(r"[\u4e00-\u9fff]")
# The two parameters every request must carry, valid.
VALID = {"client": "work", "type": 17}


def assert_names(body: dict[str, Any], *fields: str) -> None:
    """A 400 whose errors are keyed by exactly `fields` and whose msg names one of them."""
    check_error(body)
    errors = body["data"]["errors"]
    assert set(errors) == set(fields), errors
    msg = body["msg"]
    assert CJK.search(msg), msg
    assert "Traceback" not in msg and "\n" not in msg
    named = [f for f in fields if re.search(rf"(?<![a-z_]){f}(?![a-z_])", msg)]
    assert named, f"msg {msg!r} names none of {fields}"
    assert msg in errors[named[0]], (msg, errors)
    for field in fields:
        for message in errors[field]:
            assert CJK.search(message) and field in message, (field, message)
