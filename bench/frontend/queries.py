"""The three frontend reads, as one document per server, and the check that both servers
answer them with the same data.

Both documents select the same fields in the same shape (``edges { node }`` on both
sides). Where the schemas differ in kind, not content: our ids are global ids
(base64 ``Customer:<uuid>``), PostGraphile's ``rowId`` is the uuid; our JSONB-backed
fields are typed objects (``phones { type number }``), PostGraphile's are its ``JSON``
scalar (the stored value as is); relation names follow PostGraphile's inflection
(``contactsByCustomerIdList``). Custom fields, badges and credentials are left out: ours
join definitions and decrypt/mask, which the views cannot express as the same data.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Seeded business names start with one of 15 words, so each matches ~470 customers (and
# no person: their names and emails hold none of them). "maple" sits mid-alphabet: a plan
# that walks the name index in order meets its matches only after ~40% of the tenant,
# where "acme" (first) would find 20 at once and flatter that plan.
PREFIX = "maple"
LIST_SIZE = 50
SEARCH_SIZE = 20

# --------------------------------------------------------------------------- fieldsync

_F_PHONES = "phones { type number }"
_F_CUSTOMER = f"""id displayName businessName firstName lastName email {_F_PHONES}
      archived createdAt updatedAt"""
_F_CONTACT = f"id firstName lastName title email {_F_PHONES}"
_F_ADDRESS = "line1 line2 city region postalCode country"
_F_ASSET = "id kind manufacturer model serialNumber installDate location"
_F_LIST_NODE = f"""{_F_CUSTOMER}
      contacts {{ {_F_CONTACT} }}
      facilities {{ id name address {{ {_F_ADDRESS} }}
        assets {{ {_F_ASSET} }} }}"""

FIELDSYNC_A = f"""query FrontendList {{
  customers(first: {LIST_SIZE}, orderBy: {{field: NAME, direction: ASC}}) {{
    totalCount
    edges {{ node {{
      {_F_LIST_NODE}
    }} }}
  }}
}}"""

FIELDSYNC_B = f"""query CustomerDetail($id: ID!) {{
  customer(id: $id) {{
    {_F_CUSTOMER} version
    addresses {{ type {_F_ADDRESS} }}
    notificationEmails invoiceCcEmails
    settings {{ taxFree taxRate smsEnabled billingEmails marketingEmails reportEmails noEmail }}
    contacts {{ {_F_CONTACT} notes version createdAt updatedAt }}
    facilities {{ id name address {{ {_F_ADDRESS} }} notes version createdAt updatedAt
      assets {{ {_F_ASSET} notes version createdAt updatedAt }} }}
  }}
}}"""

FIELDSYNC_C = f"""query CustomerSearch($search: String!) {{
  customers(first: {SEARCH_SIZE}, filter: {{search: $search}},
            orderBy: {{field: NAME, direction: ASC}}) {{
    totalCount
    edges {{ node {{ {_F_CUSTOMER} }} }}
  }}
}}"""

# --------------------------------------------------------------------------- PostGraphile

_P_CUSTOMER = """rowId displayName businessName firstName lastName email phones
      archived createdAt updatedAt"""
_P_CONTACT = "rowId firstName lastName title email phones"
_P_ASSET = "rowId kind manufacturer model serialNumber installDate location"
_P_LIST_NODE = f"""{_P_CUSTOMER}
      contactsByCustomerIdList {{ {_P_CONTACT} }}
      facilitiesByCustomerIdList {{ rowId name address
        assetsByFacilityIdList {{ {_P_ASSET} }} }}"""

# Same rows as ours: live (the view), not archived (our default filter), by name then id
# (our keyset order).
POSTGRAPHILE_A = f"""query FrontendList {{
  allCustomers(first: {LIST_SIZE}, condition: {{archived: false}},
               orderBy: [SORT_NAME_ASC, ROW_ID_ASC]) {{
    totalCount
    edges {{ node {{
      {_P_LIST_NODE}
    }} }}
  }}
}}"""

POSTGRAPHILE_B = f"""query CustomerDetail($id: UUID!) {{
  customerByRowId(rowId: $id) {{
    {_P_CUSTOMER} version
    addresses notificationEmails invoiceCcEmails settings
    contactsByCustomerIdList {{ {_P_CONTACT} notes version createdAt updatedAt }}
    facilitiesByCustomerIdList {{ rowId name address notes version createdAt updatedAt
      assetsByFacilityIdList {{ {_P_ASSET} notes version createdAt updatedAt }} }}
  }}
}}"""

# {search} is filled in by build(): the prefix function (the issue's "search by name
# prefix"; default) or the one with fieldsync's semantics, aliased to the same key.
POSTGRAPHILE_C = f"""query CustomerSearch($search: String!) {{
  {{search}}(first: {SEARCH_SIZE}) {{
    totalCount
    edges {{ node {{ {_P_CUSTOMER} }} }}
  }}
}}"""


@dataclass(frozen=True)
class Query:
    """One read, as each server's request body."""

    key: str
    title: str
    fieldsync: dict[str, Any]
    postgraphile: dict[str, Any]


PG_SEARCH = {
    "prefix": "searchCustomers(prefix: $search",
    "substring": "searchCustomers: searchCustomersSubstring(needle: $search",
}


def build(
    detail_id: uuid.UUID, pg_search: str = "prefix", prefix: str = PREFIX
) -> dict[str, Query]:
    """The three reads; (b) reads the customer ``detail_id``; (c) searches ``prefix``,
    PostGraphile with the ``pg_search`` function (``prefix`` or ``substring``)."""
    global_id = base64.b64encode(f"Customer:{detail_id}".encode()).decode()
    return {
        "a": Query(
            "a",
            f"first {LIST_SIZE} customers by name + contacts + facilities + assets",
            {"query": FIELDSYNC_A, "variables": {}},
            {"query": POSTGRAPHILE_A, "variables": {}},
        ),
        "b": Query(
            "b",
            "one customer's detail by id + contacts + facilities + assets",
            {"query": FIELDSYNC_B, "variables": {"id": global_id}},
            {"query": POSTGRAPHILE_B, "variables": {"id": str(detail_id)}},
        ),
        "c": Query(
            "c",
            f"name-prefix search {prefix!r}, first {SEARCH_SIZE}",
            {"query": FIELDSYNC_C, "variables": {"search": prefix}},
            {
                "query": POSTGRAPHILE_C.replace("{search}(", PG_SEARCH[pg_search] + ", "),
                "variables": {"search": prefix},
            },
        ),
    }


# --------------------------------------------------------------------------- comparison


def _uuid_of(global_id: str) -> str:
    return base64.b64decode(global_id).decode().partition(":")[2]


def _when(value: str) -> datetime:
    # Both are ISO 8601; spellings of the offset and fraction may differ.
    return datetime.fromisoformat(value)


def _address(value: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("line1", "line2", "city", "region", "postalCode", "country")
    return {k: (value or {}).get(k) for k in keys}


def _canon_customer(node: dict[str, Any], *, ours: bool) -> dict[str, Any]:
    """One customer (and what hangs off it) in a server-neutral form."""
    rid = "id" if ours else "rowId"
    ident = _uuid_of if ours else str
    contacts_key = "contacts" if ours else "contactsByCustomerIdList"
    facilities_key = "facilities" if ours else "facilitiesByCustomerIdList"
    assets_key = "assets" if ours else "assetsByFacilityIdList"
    out: dict[str, Any] = {
        "id": ident(node[rid]),
        **{
            k: node[k]
            for k in ("displayName", "businessName", "firstName", "lastName", "email", "archived")
        },
        "phones": [{"type": p["type"], "number": p["number"]} for p in node["phones"]],
        "createdAt": _when(node["createdAt"]),
        "updatedAt": _when(node["updatedAt"]),
    }
    if "addresses" in node:
        out["addresses"] = [{"type": a["type"], **_address(a)} for a in node["addresses"]]
        out["notificationEmails"] = node["notificationEmails"]
        out["invoiceCcEmails"] = node["invoiceCcEmails"]
        out["version"] = node["version"]
    if contacts_key in node:
        # Child order is not part of either API's contract: compare by id.
        out["contacts"] = sorted(
            (
                {
                    "id": ident(c[rid]),
                    **{k: c[k] for k in ("firstName", "lastName", "title", "email")},
                    "phones": [{"type": p["type"], "number": p["number"]} for p in c["phones"]],
                }
                for c in node[contacts_key]
            ),
            key=lambda c: c["id"],
        )
        out["facilities"] = sorted(
            (
                {
                    "id": ident(f[rid]),
                    "name": f["name"],
                    "address": _address(f["address"]),
                    "assets": sorted(
                        (
                            {
                                "id": ident(a[rid]),
                                **{
                                    k: a[k]
                                    for k in (
                                        "kind",
                                        "manufacturer",
                                        "model",
                                        "serialNumber",
                                        "installDate",
                                        "location",
                                    )
                                },
                            }
                            for a in f[assets_key]
                        ),
                        key=lambda a: a["id"],
                    ),
                }
                for f in node[facilities_key]
            ),
            key=lambda f: f["id"],
        )
    return out


def canonical(key: str, data: dict[str, Any], *, ours: bool) -> dict[str, Any]:
    """A response's ``data`` in a server-neutral form: customers in response order."""
    if key == "b":
        node = data["customer" if ours else "customerByRowId"]
        return {"total": None, "customers": [_canon_customer(node, ours=ours)] if node else []}
    conn = data["customers" if ours else ("allCustomers" if key == "a" else "searchCustomers")]
    return {
        "total": conn["totalCount"],
        "customers": [_canon_customer(e["node"], ours=ours) for e in conn["edges"]],
    }


@dataclass(frozen=True)
class Counts:
    """What one response holds."""

    customers: int
    contacts: int
    facilities: int
    assets: int
    json_objects: int  # every JSON object in ``data`` (edges, nodes, phones, ...)
    response_bytes: int

    def records(self) -> int:
        """Customers + contacts + facilities + assets."""
        return self.customers + self.contacts + self.facilities + self.assets


def _objects(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_objects(v) for v in value.values())
    if isinstance(value, list):
        return sum(_objects(v) for v in value)
    return 0


def counts(canon: dict[str, Any], data: dict[str, Any], size: int) -> Counts:
    """Record counts of a canonical response, JSON objects of the raw one."""
    customers = canon["customers"]
    facilities = [f for c in customers for f in c.get("facilities", [])]
    return Counts(
        customers=len(customers),
        contacts=sum(len(c.get("contacts", [])) for c in customers),
        facilities=len(facilities),
        assets=sum(len(f["assets"]) for f in facilities),
        json_objects=_objects(data),
        response_bytes=size,
    )


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Human-readable differences between two canonical responses (empty when equal)."""
    problems: list[str] = []
    if ours["total"] != theirs["total"]:
        problems.append(f"totalCount {ours['total']} != {theirs['total']}")
    a, b = ours["customers"], theirs["customers"]
    if [c["id"] for c in a] != [c["id"] for c in b]:
        problems.append(
            f"customer ids/order differ: {[c['id'] for c in a][:5]}... vs"
            f" {[c['id'] for c in b][:5]}..."
        )
        return problems
    for x, y in zip(a, b, strict=True):
        for field in x:
            if x[field] != y.get(field):
                problems.append(
                    f"customer {x['id']} field {field}: {x[field]!r} != {y.get(field)!r}"
                )
    return problems[:20]
