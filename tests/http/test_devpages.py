"""The development pages: the demo sidebar page in a real headless Chromium, behaving as the
mall's own page does under the mall profile, and Swagger UI at /docs/; neither outside
development.

The browser is Debian's chromium with its chromium-driver, driven by selenium. Where they are
not installed the browser tests are skipped, naming the command that installs them; CI sets
REQUIRE_BROWSER=1 (.ci/run), which turns that skip into a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from service.clock import SystemClock
from service.runtime.demo import load_demo_data
from service.settings import SettingsError, load_settings
from tests.support.common import SECRET
from tests.support.live import live_server
from tests.support.rows import arranging_connection

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
SEED_IDS = ["155", "150", "146", "135", "134", "12"]
WAIT_SECONDS = 30  # a loaded 2-core machine scrolls nine pages slowly


def _browser_missing() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return f"headless Chromium is not installed; install it with: {INSTALL}"
    return None


@pytest.fixture(scope="module")
def site(database_url: str, redis_url: str) -> Iterator[str]:
    """`make run`'s service: the demo data, the mall profile, development pages, the project's
    default rate limits, the real clock (the demo's dates follow now()). A CACHE_PREFIX of its
    own: no rate-limit bucket or cache epoch that another test left in the session's Redis."""
    async def arrange() -> None:
        async with arranging_connection(database_url):
            pass
        await load_demo_data(database_url)

    asyncio.run(arrange())
    settings = load_settings(env={}, database_url=database_url, redis_url=redis_url,
                             auth_jwt_secret=SECRET, response_shape="paginator",
                             error_style="mall", dev_pages=True, db_pool_min_size=1,
                             db_pool_max_size=4, cache_prefix=f"demo{secrets.token_hex(4)}")
    with live_server(settings, SystemClock()) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # As root, in a sandbox with no network but loopback: no sandbox, no background calls out.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=420,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.05).until(
            lambda d: condition(d), message=what)
    except TimeoutException:
        # What the page showed when it stopped: enough to tell a stall from a refusal.
        toast = driver.find_element("id", "toast")
        raise AssertionError(
            f"{what}: {len(_ids(driver))} coupons, more={_more(driver)!r}, "
            f"toast={toast.text!r} (shown: {toast.is_displayed()}), "
            f"console={driver.get_log('browser')}") from None


def _ids(driver) -> list[str]:
    return [li.get_attribute("data-id") for li in driver.find_elements("css selector", ".coupon")]


def _more(driver) -> str:
    return driver.find_element("id", "more").text


def _settled(driver) -> bool:
    return _more(driver) in ("没有更多了", "暂无优惠券") or (not _more(driver) and not _ids(driver))


def _choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def test_the_demo_page_walks_tabs_scrolls_and_toasts(site, browser):
    browser.get(f"{site}/demo/")
    # Member 1, tab 全部 of the unused coupons: its tabs come from search_array.
    _wait(browser, lambda d: len(d.find_elements("css selector", ".tab")) == 11, "11 tabs")
    tabs = browser.find_elements("css selector", ".tab")
    assert [t.text for t in tabs][:3] == ["全部", "平台", "门店"] and tabs[-1].text == "快过期"
    _wait(browser, _settled, "member 1's first tab")
    assert "active" in tabs[0].get_attribute("class")
    everything = _ids(browser)
    # One live coupon of every kind (coupon 112 ends tonight: 11 from midnight on, Shanghai).
    assert len(everything) in (11, 12), everything

    # A tab switch asks for that coupon_type: 平台 is use_type 0 only.
    tabs[1].click()
    _wait(browser, lambda d: _settled(d) and _ids(d) != everything, "the 平台 tab")
    kinds = {e.text for e in browser.find_elements("css selector", ".coupon .type")}
    assert kinds == {"平台商品"}, kinds
    # Every coupon shows its amount, threshold, type, name and validity.
    first = browser.find_element("css selector", ".coupon")
    assert first.find_element("css selector", ".amount").text.startswith("¥")
    assert "-" in first.find_element("css selector", ".time").text

    # The expired tab holds the seed's six coupons, in the seed's order.
    browser.find_elements("css selector", ".tab")[0].click()
    _choose(browser, "status", "2")
    _wait(browser, lambda d: _settled(d) and set(SEED_IDS) <= set(_ids(d)), "the seed's six")
    ids = _ids(browser)
    assert [i for i in ids if i in SEED_IDS] == SEED_IDS
    assert len(browser.find_elements("css selector", ".tab")) == 10  # no 快过期 there

    # Member 2 scrolls to the end: 130 coupons over nine pages, then 没有更多了.
    _choose(browser, "status", "")
    _choose(browser, "who", "member-2")

    def scrolled_to_the_end(d) -> bool:
        d.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        return _more(d) == "没有更多了"

    _wait(browser, scrolled_to_the_end, "member 2 scrolled to the end")
    ids = _ids(browser)
    assert len(ids) == 130 and len(set(ids)) == 130

    # An expired token: the toast says so (the mall profile answers it as HTTP 200, result 0).
    _choose(browser, "who", "expired")
    toast = browser.find_element("id", "toast")
    _wait(browser, lambda d: toast.is_displayed() and toast.text, "the toast")
    assert toast.text == "身份令牌已过期" and _ids(browser) == []
    _choose(browser, "who", "other-tenant")
    _wait(browser, lambda d: toast.text == "该会员不属于当前商户", "the other tenant's toast")


def test_swagger_ui_renders_the_document(site, browser):
    browser.get(f"{site}/docs/")
    _wait(browser, lambda d: len(d.find_elements("css selector", ".opblock")) >= 8,
          "Swagger UI's operations")
    text = browser.find_element("id", "swagger-ui").text
    assert "/api/v2/coupons" in text and "coupons-sidebar" in text


async def test_no_dev_pages_unless_turned_on(make_client, settings, rows):
    client = await make_client(dataclasses.replace(settings, dev_pages=False))
    for path in ("/demo/", "/demo/people.json", "/demo/sidebar.js", "/docs/", "/docs/init.js"):
        resp = await client.get(path)
        assert resp.status == 404, path


async def test_dev_pages_serve_only_their_own_files(make_client, settings, rows):
    client = await make_client(dataclasses.replace(settings, dev_pages=True))
    resp = await client.get("/demo/")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert "http" not in (await resp.text()).replace("http-equiv", "")  # no CDN, no other host
    for path in ("/demo/../settings.py", "/demo/%2e%2e/app.py", "/demo/other.js",
                 "/docs/index.j2", "/docs/swagger-ui.js.map", "/docs/../../etc/passwd"):
        resp = await client.get(path)
        assert resp.status == 404, path
    people = await (await client.get("/demo/people.json")).json()
    assert [p["key"] for p in people["people"]][:2] == ["member-1", "member-2"]


def test_production_refuses_dev_pages():
    with pytest.raises(SettingsError, match="DEV_PAGES"):
        load_settings(env={"APP_ENV": "production", "AUTH_JWT_SECRET": "p" * 40,
                           "DEV_PAGES": "true"})
