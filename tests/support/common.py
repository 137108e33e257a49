"""What every test shares: the fixed "now" of the suite's clock, the secrets its settings carry,
and staff tokens issued with them."""

from __future__ import annotations

import datetime as dt

from service.auth.tokens import issue_token

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
SERVICE_TOKEN = "test-service-token-0123456789abcdef0123456789"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
# A fixed "now" for most tests: 2026-06-15 10:00:00 in Shanghai.
NOW = dt.datetime(2026, 6, 15, 10, 0, 0, tzinfo=SHANGHAI)


def token_for(uniacid: int = 1, member_id: int | None = 1, *, secret: str = SECRET,
              ttl: int = 3600, staff: str = "staff-1", now: int | None = None) -> str:
    return issue_token(secret, uniacid, member_id, staff, ttl, int(now or NOW.timestamp()))
