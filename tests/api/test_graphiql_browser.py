"""GraphiQL in headless Chromium against a live server: offline assets, sign-in, bearer token.

Every request the page makes is recorded (and any that would leave 127.0.0.1 is
aborted), so a CDN reference anywhere in the page or the vendored bundles fails here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
ME_QUERY = "{ me { email role } }"
TIMEOUT_MS = 10_000


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; the browser tests are skipped where it is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: `apt-get install chromium` to run the browser tests")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """Chromium launched headless with background networking off."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class OfflinePage:
    """A fresh browser context and page that records every request and page error."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []

    def foreign_requests(self) -> list[str]:
        """Requests to anything but 127.0.0.1 (data: and blob: URLs never leave the page)."""
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("data", "blob")
            and urlsplit(url).hostname != "127.0.0.1"
        ]

    def assert_offline_and_clean(self) -> None:
        """Nothing left 127.0.0.1, the assets came from the static mount, and no page error."""
        assert self.requests, "no request was recorded"
        assert self.foreign_requests() == [], "the page reached beyond 127.0.0.1"
        assets = [url for url in self.requests if "/graphiql/static/" in url]
        assert any(url.endswith("/graphiql.min.js") for url in assets), self.requests
        assert self.errors == [], "uncaught errors in the page"


@pytest.fixture
async def offline(browser: Browser) -> AsyncIterator[OfflinePage]:
    """A page in a new context (empty localStorage), with external traffic recorded and cut."""
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    recorder = OfflinePage(page)
    context.on("request", lambda request: recorder.requests.append(request.url))
    page.on("pageerror", lambda error: recorder.errors.append(str(error)))

    async def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            await route.abort("blockedbyclient")

    await context.route("**/*", only_loopback)
    try:
        yield recorder
    finally:
        await context.close()


async def open_graphiql(page: Page, base_url: str) -> None:
    """Open GraphiQL with ``ME_QUERY`` prefilled from ``?query=`` and wait for the editor."""
    response = await page.goto(f"{base_url}/graphql?query={quote(ME_QUERY)}")
    assert response is not None
    assert response.ok
    assert "text/html" in response.headers["content-type"]
    await expect(page.locator(".graphiql-query-editor")).to_contain_text("role")
    await expect(page.locator("#fs-status")).to_have_text("Not signed in")


async def run_query(page: Page) -> None:
    """Press GraphiQL's run button."""
    await page.locator("button.graphiql-execute-button").click()


async def test_query_without_sign_in_is_refused(offline, live_server):
    """Before signing in the query runs without a token and the server refuses it;
    a wrong password shows the server's message in the bar and stores nothing."""
    page = offline.page
    await open_graphiql(page, live_server.url)

    async with page.expect_request(
        lambda r: r.method == "POST" and ME_QUERY in (r.post_data or "")
    ) as sent:
        await run_query(page)
    assert "authorization" not in (await sent.value).headers
    await expect(page.locator(".graphiql-response")).to_contain_text("Authentication required")

    await page.fill("#fs-email", live_server.admin_email)
    await page.fill("#fs-password", live_server.admin_password + "-wrong")
    await page.click("#fs-signin")
    await expect(page.locator("#fs-status")).to_have_class(re.compile(r"\bfs-status-error\b"))
    await expect(page.locator("#fs-status")).not_to_contain_text("Signed in")
    assert await page.evaluate("localStorage.getItem('fieldsync.token')") is None
    offline.assert_offline_and_clean()


async def test_sign_in_then_query_as_admin(offline, live_server):
    """Signing in through the bar stores the token; the run button then sends it and the
    result pane shows the admin. The Headers editor is still there, and offline."""
    page = offline.page
    await open_graphiql(page, live_server.url)
    await expect(page.get_by_role("button", name="Headers")).to_be_visible()

    await page.fill("#fs-email", live_server.admin_email)
    await page.fill("#fs-password", live_server.admin_password)
    await page.click("#fs-signin")
    await expect(page.locator("#fs-status")).to_have_text(f"Signed in as {live_server.admin_email}")
    token = await page.evaluate("localStorage.getItem('fieldsync.token')")
    assert token

    async with page.expect_request(
        lambda r: r.method == "POST" and ME_QUERY in (r.post_data or "")
    ) as sent:
        await run_query(page)
    assert (await sent.value).headers.get("authorization") == f"Bearer {token}"
    result = page.locator(".graphiql-response")
    await expect(result).to_contain_text(live_server.admin_email)
    await expect(result).to_contain_text("ADMIN")
    assert "Authentication required" not in await result.inner_text()

    await page.click("#fs-signout")
    await expect(page.locator("#fs-status")).to_have_text("Signed out")
    assert await page.evaluate("localStorage.getItem('fieldsync.token')") is None
    offline.assert_offline_and_clean()
