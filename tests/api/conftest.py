"""Fixtures of the API tests that compare the two read paths (``compare_paths``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from server.app import create_app
from tests.api.compare_paths import Compare


@pytest.fixture
async def executor(settings, db) -> AsyncIterator[httpx.AsyncClient]:
    """The same app with compiled reads off: every request through the executor."""
    app = create_app(settings.model_copy(update={"compiled_reads": False}), database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as c:
        yield c


@pytest.fixture
def compare(client, executor) -> Compare:
    return Compare(client, executor)
