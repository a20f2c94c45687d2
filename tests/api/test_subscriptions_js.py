"""The npm `graphql-ws` client (Node) subscribes, receives, disconnects and resumes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.api.test_subscriptions import customers, phone
from tests.conftest import new_tenant


@pytest.fixture(scope="session")
def node_client(js_packages: Path) -> Path:
    """The Node script this test runs (its packages installed)."""
    return js_packages / "subscribe.mjs"


async def run_client(
    script: Path, url: str, token: str, device: str, since: str | None, count: int, *, on_first=None
):
    """Run the Node client until it has `count` changes; returns its payloads."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        url,
        token,
        device,
        since or "",
        str(count),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        batches = []
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            if not line:
                break
            batches.append(json.loads(line))
            if len(batches) == 1 and on_first is not None:
                await on_first()
        stderr = (await asyncio.wait_for(process.stderr.read(), 10)).decode()
        assert await asyncio.wait_for(process.wait(), 10) == 0, stderr
        return batches
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_graphql_ws_client_subscribes_and_resumes(server_pair, db, node_client):
    """graphql-ws catches up, gets a live change on the other instance, disconnects, and resumes from its checkpoint."""
    a, b = server_pair
    async with httpx.AsyncClient(base_url=a.url, timeout=60) as http:
        tenant = await new_tenant(db, http)
        device = await phone(tenant)
        existing = await customers(tenant.admin, 2)
        created: list[str] = []

        async def write_live() -> None:
            created.extend(await customers(tenant.admin, 1, "Live"))

        batches = await run_client(
            node_client, b.ws_url, device.api.token, device.id, None, 3, on_first=write_live
        )
        assert sorted(c["recordId"] for c in batches[0]["changes"]) == sorted(existing)
        assert [c["recordId"] for batch in batches[1:] for c in batch["changes"]] == created
        # Disconnected: a change happens meanwhile; resuming delivers exactly it.
        missed = await customers(tenant.admin, 1, "Missed")
        resumed = await run_client(
            node_client, a.ws_url, device.api.token, device.id, batches[-1]["checkpoint"], 1
        )
        assert [c["recordId"] for batch in resumed for c in batch["changes"]] == missed
