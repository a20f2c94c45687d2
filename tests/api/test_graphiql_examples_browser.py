"""The admin examples in the browser: tabs for a fresh browser, the Examples menu later.

Needs Chromium like tests/api/test_graphiql_browser.py (skipped where it is missing).
"""

from __future__ import annotations

import pytest
from graphql import OperationDefinitionNode, parse
from playwright.async_api import expect

from server.graphiql import admin_examples
from tests.api import test_graphiql_browser as browser_tests

# The Chromium fixtures of the GraphiQL browser tests (a fresh context per test).
chromium = browser_tests.chromium
browser = browser_tests.browser
offline = browser_tests.offline

pytestmark = pytest.mark.browser


def first_operation(query: str) -> str:
    """The name GraphiQL gives a tab of this document (its first operation's)."""
    for definition in parse(query).definitions:
        if isinstance(definition, OperationDefinitionNode) and definition.name is not None:
            return definition.name.value
    raise AssertionError("an example without a named operation")


async def test_a_fresh_browser_opens_every_example_as_a_tab(offline, live_server):
    """Without saved tabs the page starts with the welcome tab and one tab per example,
    titled by its operation; nothing is fetched from beyond the server."""
    page = offline.page
    response = await page.goto(f"{live_server.url}/graphql")
    assert response is not None
    assert response.ok
    await expect(page.locator(".graphiql-query-editor")).to_contain_text("me")
    for example in admin_examples():
        await expect(page.locator("body")).to_contain_text(first_operation(example.query))
    offline.assert_offline_and_clean()


async def test_the_examples_menu_opens_an_example_in_the_editor(offline, live_server):
    """Choosing an example in the bar's menu opens it (with its variables) in a tab."""
    page = offline.page
    await page.goto(f"{live_server.url}/graphql")
    report = next(e for e in admin_examples() if "credentialAccessReport" in e.query)
    async with page.expect_navigation():
        await page.select_option("#fs-examples", label=report.title)
    await expect(page.locator(".graphiql-query-editor")).to_contain_text("credentialAccessReport")
    offline.assert_offline_and_clean()
