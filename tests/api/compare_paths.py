"""Both read paths for one request: the helpers of the compiled-reads equivalence tests.

``compare`` sends a request to the normal app (compiled reads on) and to the same app with
compiled reads off (every request through the executor) and checks the two answers are
identical byte for byte; the compiled-reads counter says which path answered.
"""

from __future__ import annotations

from typing import Any

import httpx

from server import metrics
from tests.api.queries import (
    CREATE_ASSET,
    CREATE_CONTACT,
    CREATE_FACILITY,
    CREATE_FIELD,
    make_customer,
)


def compiled_count() -> float:
    return metrics.COMPILED_READS._value.get()  # type: ignore[attr-defined, no-any-return]


class Compare:
    """Sends one request to both apps and checks they answer alike."""

    def __init__(self, client: httpx.AsyncClient, executor: httpx.AsyncClient) -> None:
        self.client = client
        self.executor = executor

    async def __call__(
        self,
        token: str | None,
        body: Any,
        *,
        compiled: bool,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Both answers equal; ``compiled`` says whether the compiled path answered."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        before = compiled_count()
        ours = await self.client.post("/graphql", json=body, headers=sent)
        answered = compiled_count() - before
        theirs = await self.executor.post("/graphql", json=body, headers=sent)
        assert answered == (1 if compiled else 0), ours.content
        assert ours.status_code == theirs.status_code
        assert ours.headers["content-type"] == theirs.headers["content-type"]
        assert ours.content == theirs.content, (ours.content, theirs.content)
        return ours


async def define_fields(api) -> None:
    """A dropdown with a badge icon and a number field on every record type."""
    for entity in ("CUSTOMER", "CONTACT", "FACILITY", "ASSET"):
        inputs = [
            {
                "entityType": entity,
                "key": "tier",
                "label": "Tier",
                "fieldType": "DROPDOWN",
                "options": [
                    {"value": "gold", "label": "Gold", "badgeIcon": "star"},
                    {"value": "basic", "label": "Basic"},
                ],
            },
            {"entityType": entity, "key": "floors", "label": "Floors", "fieldType": "NUMBER"},
        ]
        for payload in inputs:
            created = await api(CREATE_FIELD, {"input": payload})
            assert created["createCustomField"]["__typename"] == "CustomFieldDefinition", created


async def make_rich_customer(api, name: str) -> str:
    """A customer using every field, with two contacts, two facilities and assets."""
    tier = [{"key": "tier", "value": "gold"}, {"key": "floors", "value": 3}]
    customer = await make_customer(
        api,
        businessName=name,
        email=f"{name.lower()}@example.com",
        phones=[{"type": "MOBILE", "number": "+1 555 0100"}],
        addresses=[{"type": "BILL_TO", "line1": "1 Main St", "city": "Oslo", "postalCode": "0150"}],
        notificationEmails=["ops@example.com"],
        settings={"taxRate": 25, "smsEnabled": True},
        customFields=tier,
    )
    for first in ("Zed", "Ann"):
        contact = {"customerId": customer["id"], "firstName": first, "lastName": first + "son"}
        created = await api(CREATE_CONTACT, {"input": {**contact, "customFields": tier[:1]}})
        assert created["createContact"]["__typename"] == "Contact", created
    for site in ("Warehouse", "HQ"):
        facility = await api(
            CREATE_FACILITY,
            {"input": {"customerId": customer["id"], "name": site, "address": {"city": "Bergen"}}},
        )
        assert facility["createFacility"]["__typename"] == "Facility", facility
        for kind, date in (("Fire door", "2024-02-29"), ("Shutter", None)):
            asset = {
                "facilityId": facility["createFacility"]["id"],
                "kind": kind,
                "installDate": date,
                "notes": 'quote " and \\ backslash, ünïcode',
                "customFields": tier[1:],
            }
            created = await api(CREATE_ASSET, {"input": asset})
            assert created["createAsset"]["__typename"] == "Asset", created
    return str(customer["id"])
