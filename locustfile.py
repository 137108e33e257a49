"""The sidebar's real traffic, for locust.

    locust -f locustfile.py --headless -u 200 -r 20 -t 2m --host http://127.0.0.1:8080

A user is a staff member with the chat sidebar open on one customer after another: open the
coupons tab (unused, 全部), switch tabs, scroll pages until `last_page`, and now and then the mall
marks one of the customer's coupons used through the write API. The unused tab is asked for as
the mall's sidebar page asks (a GET through the mall's router, no status_request); the other
statuses as the seed documents it (a POST form). Either RESPONSE_SHAPE is read, and an error is
a failure whether it came as its own status or, under ERROR_STYLE=mall, as a 200 with
`result: 0`. Customers are drawn with a Zipf
skew (a few are chatted with all the time). Settings come from the environment:
AUTH_JWT_SECRET and INTERNAL_SERVICE_TOKEN (as the service's), COUPONS_UNIACID (1),
COUPONS_MEMBERS (e.g. "1-20" for the demo data), COUPONS_ZIPF_S (1.2), COUPONS_USE_RATIO (0.01).
At the end it prints the cache outcomes seen in `X-Cache` (hit ratio).
"""

from __future__ import annotations

import base64
import bisect
import collections
import hashlib
import hmac
import itertools
import json
import os
import random
import time

from locust import HttpUser, between, events, task

SECRET = os.environ.get("AUTH_JWT_SECRET", "dev-only-secret-change-me-0123456789abcdef")
SERVICE_TOKEN = os.environ.get("INTERNAL_SERVICE_TOKEN",
                               "dev-only-internal-token-change-me-0123456789")
UNIACID = int(os.environ.get("COUPONS_UNIACID", "1"))
LOW, HIGH = (int(x) for x in os.environ.get("COUPONS_MEMBERS", "1-20").split("-"))
ZIPF_S = float(os.environ.get("COUPONS_ZIPF_S", "1.2"))
USE_RATIO = float(os.environ.get("COUPONS_USE_RATIO", "0.01"))
ROUTE = "plugin.wechat-chat-sidebar.frontend.controller.customer.customer.couponsOfMemberByStatusV2"
PATH = "/" + ROUTE
MALL_ROUTER = "/addons/yun_shop/api.php"

MEMBERS = list(range(LOW, HIGH + 1))
random.Random(7).shuffle(MEMBERS)  # popularity is not the id order
_WEIGHTS = list(itertools.accumulate(1 / (rank ** ZIPF_S) for rank in range(1, len(MEMBERS) + 1)))
OUTCOMES: collections.Counter[str] = collections.Counter()


def zipf_member() -> int:
    return MEMBERS[bisect.bisect_left(_WEIGHTS, random.random() * _WEIGHTS[-1])]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def staff_token(staff: str, member: int) -> str:
    """An HS256 JWT (RFC 7519) signed with the standard library: the locust image has no PyJWT,
    and tests/runtime/test_locustfile.py checks that PyJWT verifies what this signs."""
    now = int(time.time())
    claims = {"uniacid": UNIACID, "member_id": member, "sub": staff, "iat": now, "exp": now + 3600}
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


class SidebarUser(HttpUser):
    wait_time = between(0.5, 3)

    def on_start(self) -> None:
        # Each simulated user is one staff member (rate limits are per staff and per member).
        self.staff = f"locust-staff-{random.getrandbits(32):08x}"
        self.open_customer()

    def open_customer(self) -> None:
        self.member = zipf_member()
        self.headers = {"Authorization": f"Bearer {staff_token(self.staff, self.member)}"}
        self.status, self.coupon_type, self.page, self.last_page = 1, 0, 1, 1
        self.unused_ids: list[int] = []
        self.fetch()

    def fetch(self) -> None:
        params = {"client": "work", "type": 17, "coupon_type": self.coupon_type,
                  "page": self.page}
        name = f"coupons s{self.status} page{'1' if self.page == 1 else 'N'}"
        if self.status == 1:  # as the mall's page: GET through its router
            request = self.client.get(MALL_ROUTER, params={"i": UNIACID, "route": ROUTE, **params},
                                      headers=self.headers, name=name, catch_response=True)
        else:  # as the seed: a POST form on the plugin route
            request = self.client.post(PATH, data={**params, "status_request": self.status},
                                       headers=self.headers, name=name, catch_response=True)
        with request as resp:
            OUTCOMES[resp.headers.get("X-Cache", "none")] += 1
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            body = resp.json()
            if body.get("result") != 1:
                resp.failure(f"{resp.headers.get('X-Error-Status', 'result 0')}: "
                             f"{body.get('msg')}")
                return
            payload = body["data"]
            # RESPONSE_SHAPE paginator: the page is data.data; list: data itself.
            page = payload["data"] if isinstance(payload["data"], dict) else payload
            self.last_page = page.get("last_page", 1)
            if self.status == 1:
                self.unused_ids = [item["id"] for item in page["data"]]

    @task(3)
    def next_customer(self) -> None:
        self.open_customer()

    @task(4)
    def switch_tab(self) -> None:
        self.status = random.choice((1, 1, 2, 3))
        self.coupon_type = random.choice((0, 0, 1, 2, 4, 7, 10)) if self.status == 1 else 0
        self.page = 1
        self.fetch()

    @task(4)
    def scroll(self) -> None:
        if self.page < self.last_page:
            self.page += 1
            self.fetch()

    @task(1)
    def use_a_coupon(self) -> None:
        if not self.unused_ids or random.random() > USE_RATIO * 10:
            return
        coupon_id = self.unused_ids.pop(0)
        with self.client.post(f"/internal/member-coupons/{coupon_id}/use",
                              headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
                              name="use coupon", catch_response=True) as resp:
            # 409: another user used it first (under ERROR_STYLE=mall: a 200 that says so).
            status = int(resp.headers.get("X-Error-Status", resp.status_code))
            if status in (200, 409):
                resp.success()
            else:
                resp.failure(f"HTTP {status}")


@events.test_stop.add_listener
def report_cache(**_kwargs) -> None:
    total = sum(OUTCOMES.values()) or 1
    served = OUTCOMES["local"] + OUTCOMES["hit"] + OUTCOMES["coalesced"]
    print(f"cache outcomes: {dict(OUTCOMES)}; hit ratio {served / total:.3f}")
