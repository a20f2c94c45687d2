"""Every read path of the records, for tests that check no accepted write breaks a read.

``read_everything`` sends each read a client can make of customers, contacts, facilities
and assets (customer reads and ``node`` with and without custom fields, the child lists, a pull
from the start, the external sync window and its export) and fails the test on any error.
The live subscription is not read here: it encodes changes with the pull's encoder.
"""

from __future__ import annotations

from typing import Any

from tests.api.sync_client import Device
from tests.conftest import Api

SYNC_CATEGORIES = (
    "CONFLICT",
    "NEW_LOCAL",
    "NEW_EXTERNAL",
    "DELETED",
    "DEACTIVATED",
    "SYNCHRONIZED",
    "INACTIVE",
)

CUSTOM = "customFields { key label fieldType value }"
CONTACT = f"id version firstName lastName title email phones {{ type number }} notes {CUSTOM}"
ASSET = f"""id version kind manufacturer model serialNumber installDate location notes {CUSTOM}"""
FACILITY = f"""id version name notes {CUSTOM}
  address {{ line1 line2 city region postalCode country }}"""
CUSTOMER = f"""id version businessName firstName lastName displayName email archived
  phones {{ type number }}
  addresses {{ type line1 line2 city region postalCode country }}
  notificationEmails invoiceCcEmails
  settings {{ taxFree taxRate smsEnabled billingEmails marketingEmails reportEmails noEmail }}
  {CUSTOM} badges {{ fieldKey label icon }}"""
# Without custom fields and badges: the selection of the frontend's reads.
CUSTOMER_PLAIN = CUSTOMER.replace(CUSTOM, "").replace("badges { fieldKey label icon }", "")

CUSTOMER_TREE = f"""query($id: ID!) {{ customer(id: $id) {{ {CUSTOMER}
  contacts {{ {CONTACT} }} facilities {{ {FACILITY} assets {{ {ASSET} }} }} }} }}"""
CUSTOMER_TREE_PLAIN = f"""query($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_PLAIN}
  contacts {{ id firstName email phones {{ type number }} }}
  facilities {{ id name assets {{ id kind installDate }} }} }} }}"""
CUSTOMERS = f"""query($after: String, $archived: Boolean) {{
  customers(first: 100, after: $after, filter: {{archived: $archived}}) {{
  totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {CUSTOMER}
  contacts {{ {CONTACT} }} facilities {{ {FACILITY} assets {{ {ASSET} }} }} }} }} }} }}"""
CUSTOMERS_PLAIN = f"""query($after: String, $archived: Boolean) {{
  customers(first: 100, after: $after, filter: {{archived: $archived}}) {{
  totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {CUSTOMER_PLAIN} }} }} }} }}"""
NODE = f"""query($id: ID!) {{ node(id: $id) {{ __typename
  ... on Customer {{ {CUSTOMER} }} ... on Contact {{ {CONTACT} }}
  ... on Facility {{ {FACILITY} }} ... on Asset {{ {ASSET} }} }} }}"""
CHILD_LISTS = f"""query {{
  contacts(first: 100) {{ totalCount edges {{ node {{ {CONTACT} }} }} }}
  facilities(first: 100) {{ totalCount edges {{ node {{ {FACILITY} }} }} }}
  assets(first: 100) {{ totalCount edges {{ node {{ {ASSET} }} }} }} }}"""
WINDOW = """query($s: ID!, $c: SyncCategory!) { syncWindow(sourceId: $s, category: $c, first: 100) {
  totalCount counts { category count }
  pairs { category externalId customerId
    fields { field localValue externalValue syncedValue state }
    conflicts { field localValue externalValue } customer { businessName email } } } }"""
EXPORT = """query($s: ID!) { exportLocal(sourceId: $s) }"""


async def customers_of(api: Api, query: str = CUSTOMERS) -> list[dict[str, Any]]:
    """Every customer, archived or not, page by page through ``query``."""
    found: list[dict[str, Any]] = []
    for archived in (False, True):
        after = None
        while True:
            page = (await api(query, {"after": after, "archived": archived}))["customers"]
            found.extend(edge["node"] for edge in page["edges"])
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
    return found


async def read_everything(
    api: Api, *, ids: list[str] | None = None, source: str | None = None
) -> dict[str, Any]:
    """Run every read path as ``api``'s user (fails the test on any error); returns what
    the reads found: ``customers`` (the list), ``nodes`` (by id) and ``pulled`` (a fresh
    device's store after a pull from the start)."""
    customers = await customers_of(api)
    await customers_of(api, CUSTOMERS_PLAIN)
    for customer in customers:
        tree = (await api(CUSTOMER_TREE, {"id": customer["id"]}))["customer"]
        assert tree is not None, customer["id"]
        assert (await api(CUSTOMER_TREE_PLAIN, {"id": customer["id"]}))["customer"] is not None
    lists = await api(CHILD_LISTS)
    nodes: dict[str, Any] = {}
    wanted = set(ids or []) | {c["id"] for c in customers}
    wanted |= {edge["node"]["id"] for name in lists for edge in lists[name]["edges"]}
    for global_id in sorted(wanted):
        nodes[global_id] = (await api(NODE, {"id": global_id}))["node"]
    device = await Device(api).register()
    await device.sync(limit=1000)
    if source is not None:
        for category in SYNC_CATEGORIES:
            await api(WINDOW, {"s": source, "c": category})
        await api(EXPORT, {"s": source})
    return {"customers": customers, "nodes": nodes, "pulled": device.store}
