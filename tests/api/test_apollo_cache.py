"""Apollo Client's normalised cache returns what the server sent for the sync API.

A normalised cache stores every object that has an ``id`` under ``Type:id`` and merges
objects with the same key. A sync type that borrowed another object's id (a push result
carrying its record's id) made two results of one push into one object, and a sync state
without a key of its own kept showing an old status after a refetch. The Node script runs
the real ``@apollo/client`` ``InMemoryCache`` against a server process and prints both
what came over the wire and what Apollo returned, step by step.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.credential_queries import make_credential, reveal
from tests.api.queries import make_tree
from tests.api.sync_client import Device
from tests.conftest import LiveServer, new_tenant


@pytest.fixture(scope="session")
def apollo_script(js_packages: Path) -> Path:
    """The Node script (its packages installed)."""
    return js_packages / "apollo_cache.mjs"


async def test_apollo_cache_keeps_every_result_and_the_newest_sync_state(
    live_server: LiveServer, db, apollo_script: Path
) -> None:
    """Two results for one record stay two; a refetched sync state shows the server's status."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        tenant = await new_tenant(db, http)
        created = await tenant.admin(
            'mutation { createCustomer(input: {businessName: "Acme"})'
            " { ... on Customer { id recordId } } }"
        )
        record_id = created["createCustomer"]["recordId"]
        device = await Device(tenant.admin).register()
        await device.sync()
        # Two changes of one record in one push, with different outcomes.
        changes = [
            device.change("customer", record_id, {"lastName": "Lee"}),
            device.change("customer", record_id, {"email": "not an email"}),
        ]
        token = tenant.admin.token
    process = await asyncio.create_subprocess_exec(
        "node",
        str(apollo_script),
        f"{live_server.url}/graphql",
        token,
        device.id,
        json.dumps(changes),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    steps = {step["name"]: step for step in json.loads(out)}
    for name, step in steps.items():
        assert step["apollo"] == step["server"], name
    results = steps["push"]["server"]["pushChanges"]["results"]
    assert [(r["clientMutationId"], r["outcome"]) for r in results] == [
        (changes[0]["clientMutationId"], "APPLIED"),
        (changes[1]["clientMutationId"], "VALIDATION_FAILED"),
    ]
    before = steps["state before pull"]["server"]["syncState"]
    after = steps["state after pull"]["server"]["syncState"]
    # The push moved the head past the device's checkpoint: behind until it pulls.
    assert (before["status"], after["status"]) == ("BEHIND", "SYNCED")
    assert before["id"] == after["id"]
    assert after["deviceId"] == device.id
    assert steps["state from cache"]["apollo"]["syncState"]["status"] == "SYNCED"
    [listed] = steps["devices after pull"]["server"]["devices"]
    assert listed["syncState"]["status"] == "SYNCED"
    assert uuid.UUID(record_id)


POSSIBLE_TYPES = (
    Path(__file__).resolve().parents[2] / "clients" / "frontend" / "possible-types.json"
)
NODE_TYPES = {
    "Customer",
    "Contact",
    "Facility",
    "Asset",
    "Credential",
    "User",
    "CustomFieldDefinition",
    "ExternalSource",
    "ImportBatch",
    "CredentialAccess",
}


async def one_of_each_node(api) -> tuple[list[str], str]:
    """Global ids of an object of each Node type `node(id:)` resolves (all but Device and
    SyncConflict) of a fresh tenant with a registered device, and the customer's id."""
    tree = await make_tree(api, "Acme Doors")
    credential = await make_credential(api, {"customerId": tree["customer"]}, password="pw")
    assert (await reveal(api, credential["id"]))["__typename"] == "RevealedPassword"
    field = (
        await api(
            """mutation($input: CreateCustomFieldInput!) { createCustomField(input: $input) {
              ... on CustomFieldDefinition { id } } }""",
            {
                "input": {
                    "entityType": "CUSTOMER",
                    "key": "tier",
                    "label": "Tier",
                    "fieldType": "TEXT",
                }
            },
        )
    )["createCustomField"]
    source = (
        await api(
            """mutation($input: CreateExternalSourceInput!) {
              createExternalSource(input: $input) { ... on ExternalSource { id } } }""",
            {
                "input": {
                    "name": "Accounting",
                    "mapping": [
                        {"column": "No", "field": "externalId"},
                        {"column": "Company", "field": "businessName"},
                    ],
                }
            },
        )
    )["createExternalSource"]
    imported = await api(
        """mutation($s: ID!) { importExternalRecords(sourceId: $s, content: "No,Company\\r\\nA-1,Acme\\r\\n") {
          __typename } }""",
        {"s": source["id"]},
    )
    assert imported["importExternalRecords"]["__typename"] == "ImportBatch", imported
    lists = await api(
        """query($s: ID!) { me { id } importBatches(sourceId: $s) { id }
          credentialAccessReport { edges { node { id } } } }""",
        {"s": source["id"]},
    )
    await Device(api).register()
    ids = [
        *tree.values(),
        credential["id"],
        lists["me"]["id"],
        field["id"],
        source["id"],
        lists["importBatches"][0]["id"],
        lists["credentialAccessReport"]["edges"][0]["node"]["id"],
    ]
    return ids, tree["customer"]


async def test_apollo_normalises_every_node_with_the_shipped_possible_types(
    live_server: LiveServer, db, js_packages: Path
) -> None:
    """With clients/frontend/possible-types.json, InMemoryCache keys every object that has
    an identity under `Type:id`, returns what the server sent, reads each object back by
    its cache id through a fragment on the Node interface (with SyncedRecord and member
    fragments), and a union member returned by a mutation updates the cached object."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        tenant = await new_tenant(db, http)
        ids, customer = await one_of_each_node(tenant.admin)
        token = tenant.admin.token
    process = await asyncio.create_subprocess_exec(
        "node",
        str(js_packages / "apollo_nodes.mjs"),
        f"{live_server.url}/graphql",
        token,
        str(POSSIBLE_TYPES),
        json.dumps(ids),
        customer,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    steps = json.loads(out)
    seen = set()
    for step in steps:
        assert step["unnormalised"] == [], step["name"]
        if step["name"].startswith("node "):
            node = step["server"]["node"]
            assert node is not None, step
            seen.add(node["__typename"])
            assert step["apollo"] == step["server"], step["name"]
            assert step["cacheId"] == f"{node['__typename']}:{node['id']}"
            assert step["readBack"] == node, step["name"]
    assert seen == NODE_TYPES
    listing = next(s for s in steps if s["name"] == "lists")
    assert listing["apollo"] == listing["server"]
    [device] = listing["server"]["devices"]
    assert device["__typename"] == "Device"
    update = next(s for s in steps if s["name"] == "update")
    assert update["server"]["updateCustomer"]["displayName"] == "Renamed Doors"
    assert update["apollo"]["node"]["displayName"] == "Renamed Doors"
