"""The console in a real browser: Playwright for Python driving Debian's Chromium (installed
with ``apt-get install chromium``; Playwright's own browser download is not used).

One gateway and one browser for the module; the flows run in order, each building on the last,
the way an operator and a customer would meet the console on a new gateway. Every page visited
is saved as a screenshot (``RELAYGATE_SCREENSHOTS`` names the folder; a temporary one
otherwise), and no page may log an error to the browser's console.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import FAST_HASH
from tests.console.support import PASSWORD, setup_link
from tests.support.gateway import GatewayProcess
from tests.support.services import REQUIRE

CHROMIUM = "/usr/bin/chromium"
ADMIN = "admin@example.com"
MEMBER = "customer@example.com"
MODEL = "relaygate-simulator"


def _browser_or_skip() -> Any:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"{reason} (RELAYGATE_REQUIRE_SERVICES=1 makes it mandatory)")
        pytest.skip(reason)
    return sync_playwright


@dataclass
class Run:
    """What the flows share: the gateway, the browser, screenshots, console errors."""

    gateway: GatewayProcess
    browser: Any
    shots: Path
    errors: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    count: int = 0

    def page(self, width: int = 1280) -> Any:
        context = self.browser.new_context(viewport={"width": width, "height": 900},
                                           base_url=self.gateway.url)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        return page

    def shot(self, page: Any, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.shots / f"{self.count:02d}-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    sync_playwright = _browser_or_skip()
    from tests.conftest import catalog

    directory = tmp_path_factory.mktemp("browser-gw")
    config = catalog("http://127.0.0.1:9/v1", key_refresh_seconds=0.1, **FAST_HASH)
    gateway = GatewayProcess(directory, config).start()
    shots = Path(os.environ.get("RELAYGATE_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--no-sandbox"])
            try:
                yield Run(gateway, browser, shots)
            finally:
                browser.close()
    finally:
        gateway.stop()


def _chart_total(page: Any, selector: str = ".chart[data-chart]") -> float:
    raw = page.locator(f"{selector} script[type='application/json']").first.text_content()
    chart = json.loads(raw)
    return float(sum(sum(s["values"]) for s in chart["series"]))


def test_first_run_setup(run: Run) -> None:
    page = run.page()
    page.goto(setup_link(run.gateway))
    run.shot(page, "setup")
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_again]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/console/sign-in?created=1")
    run.shot(page, "sign-in")
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/console/accounts")
    run.state["admin_cookies"] = json.dumps(page.context.cookies())
    page.context.close()


def _admin(run: Run) -> Any:
    page = run.page()
    page.context.add_cookies(json.loads(run.state["admin_cookies"]))
    return page


def test_the_admin_creates_an_account_tops_it_up_and_generates_codes(run: Run) -> None:
    page = _admin(run)
    page.goto("/console/accounts")
    page.fill("input[name=name]", "Acme <b>Labs</b>")
    page.fill("input[name=credits_usd]", "1")
    page.click("text=Create account")
    page.wait_for_url(re.compile(r".*/console/accounts/acct_\w+$"))
    run.state["account"] = page.url.rsplit("/", 1)[1]
    assert page.locator("h1").text_content().startswith("Acme <b>Labs</b>")
    page.fill("input[name=amount_usd]", "4")
    page.fill("input[name=note]", "welcome credit")
    page.click("text=Add credits")
    page.wait_for_selector("text=Credits added.")
    assert page.locator("[data-testid=balance]").text_content() == "$5.00"
    page.fill("form[action$='/members'] input[name=email]", MEMBER)
    page.fill("form[action$='/members'] input[name=password]", PASSWORD)
    page.click("text=Add member")
    page.wait_for_selector("text=Member added")
    run.shot(page, "account")
    page.goto("/console/accounts")
    run.shot(page, "accounts")
    page.goto("/console/codes")
    page.fill("input[name=count]", "3")
    page.fill("input[name=amount_usd]", "2")
    page.click("button[value=page]")
    codes = page.locator("[data-testid=new-codes]").text_content().split()
    assert len(codes) == 3
    run.state["code"] = codes[0]
    run.shot(page, "codes")
    for name in ("models", "upstreams", "tokens", "audit"):
        page.goto(f"/console/{name}")
        run.shot(page, name)
    page.context.close()


def _member(run: Run, width: int = 1280) -> Any:
    page = run.page(width)
    if "member_cookies" in run.state:
        page.context.add_cookies(json.loads(run.state["member_cookies"]))
    return page


def test_the_customer_signs_in_and_creates_a_key_shown_once(run: Run) -> None:
    page = _member(run)
    page.goto("/console/keys")
    page.wait_for_url("**/console/sign-in?next=*")
    page.fill("input[name=email]", MEMBER)
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/console/keys")
    run.state["member_cookies"] = json.dumps(page.context.cookies())
    page.fill("details.panel input[name=name]", "laptop")
    page.click("text=Create key")
    key = page.locator("[data-testid=new-key]").text_content()
    assert key.startswith("sk-")
    run.state["key"] = key
    page.click("button[data-copy]")
    run.shot(page, "key-created")
    page.reload()
    assert key not in page.content()
    page.context.close()


def test_an_sdk_request_shows_in_the_log_and_the_chart(run: Run) -> None:
    from openai import OpenAI

    page = _member(run)
    page.goto("/console/overview")
    before = _chart_total(page)
    client = OpenAI(base_url=run.gateway.url + "/v1", api_key=run.state["key"], max_retries=0)
    run.gateway.wait_until(lambda: run.gateway.get("/v1/credits", run.state["key"])[0] == 200)
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Please introduce yourself"}])
    assert answer.usage is not None
    request_id = answer.id

    def in_log() -> bool:
        page.goto("/console/requests")
        return request_id in page.content()

    run.gateway.wait_until(in_log, message="the request in the log")
    page.click(f"summary:has-text('{request_id}')")
    assert page.locator("table.breakdown").first.is_visible()
    run.shot(page, "requests")
    page.goto("/console/overview")
    assert _chart_total(page) > before
    page.wait_for_selector(".chart .uplot canvas")
    run.shot(page, "overview")
    page.goto("/console/usage")
    page.wait_for_selector(".chart .uplot canvas")
    run.shot(page, "usage")
    page.context.close()


def test_the_customer_redeems_a_code(run: Run) -> None:
    page = _member(run)
    page.goto("/console/billing")
    before = page.locator("[data-testid=balance]").text_content()
    page.fill("input[name=code]", run.state["code"])
    page.click("main button[type=submit]")
    page.wait_for_selector("text=Code redeemed")
    after = page.locator("[data-testid=balance]").text_content()
    assert float(after.lstrip("$")) == pytest.approx(float(before.lstrip("$")) + 2)
    assert page.locator("text=redemption code").count() >= 1
    run.shot(page, "billing")
    page.context.close()


def test_a_402_link_opens_the_billing_page(run: Run) -> None:
    from openai import APIStatusError, OpenAI

    page = _member(run)
    page.goto("/console/keys")
    page.click("details.panel summary")
    page.fill("details.panel input[name=name]", "capped")
    page.fill("details.panel input[name=spend_limit_usd]", "0.000001")
    page.click("text=Create key")
    capped = page.locator("[data-testid=new-key]").text_content()
    run.gateway.wait_until(lambda: run.gateway.get("/v1/credits", capped)[0] == 200)
    client = OpenAI(base_url=run.gateway.url + "/v1", api_key=capped, max_retries=0)
    with pytest.raises(APIStatusError) as raised:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 402
    body: Any = raised.value.body
    error = body.get("error", body)
    link = error["fallback_suggestion"]
    page.goto(link)
    assert page.url == link
    page.wait_for_selector("text=Redeem a code")
    page.context.close()


def test_a_member_cannot_open_another_accounts_pages(run: Run) -> None:
    page = _admin(run)
    page.goto("/console/accounts")
    page.click("details.panel summary")
    page.fill("input[name=name]", "Someone else")
    page.click("text=Create account")
    page.wait_for_url(re.compile(r".*/console/accounts/acct_\w+$"))
    other = page.url.rsplit("/", 1)[1]
    page.context.close()
    errors = len(run.errors)
    page = _member(run)
    response = page.goto(f"/console/accounts/{other}")
    assert response.status == 403
    page.goto(f"/console/overview?account={other}")
    assert "Acme" in page.locator("h1").text_content()
    page.context.close()
    del run.errors[errors:]  # the 403 itself is logged by the browser as a failed load


def test_the_layout_holds_at_phone_width(run: Run) -> None:
    page = _member(run, width=375)
    for name in ("overview", "keys", "usage", "requests", "billing"):
        page.goto(f"/console/{name}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (name, overflow)
        run.shot(page, f"phone-{name}")
    page.context.close()


def test_the_language_switcher(run: Run) -> None:
    page = _member(run)
    page.goto("/console/overview")
    page.select_option("select#language", "de")
    page.wait_for_selector("text=Übersicht")
    run.shot(page, "overview-de")
    page.select_option("select#language", "ko")
    page.wait_for_selector("text=개요")
    run.shot(page, "overview-ko")
    page.select_option("select#language", "en")
    page.wait_for_selector("text=Overview")
    page.context.close()


def test_no_page_logged_an_error(run: Run) -> None:
    assert run.errors == []
    assert run.count >= 15
