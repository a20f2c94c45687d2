"""Customers, contacts, facilities and assets as encoder specs, and what a shape reads.

The compiled reads (``server.compiled_reads``) answer `customer`, `customers` and `node`
by reading the rows and children a selection reaches in one statement
(``db.queries.record_rows``) and encoding them with these specs. The expressions are the
conversions the typed ``from_row`` classmethods and field resolvers apply
(``schema/customers.py`` and its siblings); ``tests/api/test_compiled_reads.py`` compares
the two paths byte for byte. Fields with arguments or that walk back up the tree
(``Contact.customer``, ``Asset.facility``, credentials) are not in the specs: a selection
that asks for one is resolved the typed way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from db.entities import ASSET as ASSET_ENTITY
from db.entities import CONTACT as CONTACT_ENTITY
from db.entities import CUSTOMER as CUSTOMER_ENTITY
from db.entities import FACILITY as FACILITY_ENTITY
from db.entities import EntitySpec
from db.queries.record_rows import DEFINITIONS, Children, Level
from resolvers.selection_json.shapes import Nested, ObjectSpec, Shape
from schema.custom_fields import chosen_badges
from schema.customers import display_name
from schema.node import to_global_id


def _optional(expression: str, conversion: str) -> str:
    return f"(None if ({expression}) is None else {conversion.format(expression)})"


_NAMES: dict[str, Any] = {
    "GID": to_global_id,
    "DISPLAY_NAME": display_name,
    "BADGES": chosen_badges,
    "float": float,
    "bool": bool,
}

PHONE = ObjectSpec(name="Phone", fields={"type": "v['type']", "number": "v['number']"})

_ADDRESS_LINES = {
    "line1": "v.get('line1')",
    "line2": "v.get('line2')",
    "city": "v.get('city')",
    "region": "v.get('region')",
    "postalCode": "v.get('postalCode')",
    "country": "v.get('country')",
}
ADDRESS = ObjectSpec(name="Address", fields={"type": "v['type']", **_ADDRESS_LINES})
SITE_ADDRESS = ObjectSpec(name="SiteAddress", fields=_ADDRESS_LINES)

CUSTOMER_SETTINGS = ObjectSpec(
    name="CustomerSettings",
    fields={
        "taxFree": "bool(v.get('taxFree', False))",
        "taxRate": _optional("v.get('taxRate')", "float({})"),
        "smsEnabled": "bool(v.get('smsEnabled', False))",
        "billingEmails": "bool(v.get('billingEmails', True))",
        "marketingEmails": "bool(v.get('marketingEmails', False))",
        "reportEmails": "bool(v.get('reportEmails', True))",
        "noEmail": "bool(v.get('noEmail', False))",
    },
    names=_NAMES,
)

# A custom field value is built from (definition row, the record's stored values).
CUSTOM_FIELD_VALUE = ObjectSpec(
    name="CustomFieldValue",
    fields={
        "key": "v[0]['key']",
        "label": "v[0]['label']",
        "fieldType": "v[0]['field_type']",
        "value": "v[1].get(v[0]['key'])",
    },
)
BADGE = ObjectSpec(
    name="Badge", fields={"fieldKey": "v['field_key']", "label": "v['label']", "icon": "v['icon']"}
)
# Fields that need the record type's custom field definitions (attached under DEFINITIONS).
NEEDS_DEFINITIONS = frozenset({"customFields", "badges"})


def _record_fields(type_name: str) -> dict[str, str | Nested]:
    """Node and SyncedRecord fields, and custom field values, of every synced record."""
    return {
        "id": f"GID({type_name!r}, v['id'])",
        "recordId": "str(v['id'])",
        "version": "v['version']",
        "createdAt": "v['created_at'].isoformat()",
        "updatedAt": "v['updated_at'].isoformat()",
        "customFields": Nested(
            f"[(d, v['custom_fields']) for d in v[{DEFINITIONS!r}]]", CUSTOM_FIELD_VALUE
        ),
    }


ASSET = ObjectSpec(
    name="Asset",
    fields={
        **_record_fields("Asset"),
        "kind": "v['kind']",
        "manufacturer": "v['manufacturer']",
        "model": "v['model']",
        "serialNumber": "v['serial_number']",
        "installDate": _optional("v['install_date']", "{}.isoformat()"),
        "location": "v['location']",
        "notes": "v['notes']",
    },
    names=_NAMES,
)
FACILITY = ObjectSpec(
    name="Facility",
    fields={
        **_record_fields("Facility"),
        "name": "v['name']",
        "address": Nested("v['address']", SITE_ADDRESS, many=False),
        "notes": "v['notes']",
        "assets": Nested("v['_assets']", ASSET),
    },
    names=_NAMES,
)
CONTACT = ObjectSpec(
    name="Contact",
    fields={
        **_record_fields("Contact"),
        "firstName": "v['first_name']",
        "lastName": "v['last_name']",
        "title": "v['title']",
        "email": "v['email']",
        "phones": Nested("v['phones']", PHONE),
        "notes": "v['notes']",
    },
    names=_NAMES,
)
CUSTOMER = ObjectSpec(
    name="Customer",
    fields={
        **_record_fields("Customer"),
        "businessName": "v['business_name']",
        "firstName": "v['first_name']",
        "lastName": "v['last_name']",
        "email": "v['email']",
        "phones": Nested("v['phones']", PHONE),
        "addresses": Nested("v['addresses']", ADDRESS),
        "notificationEmails": "list(v['notification_emails'])",
        "invoiceCcEmails": "list(v['invoice_cc_emails'])",
        "settings": Nested("v['settings']", CUSTOMER_SETTINGS, many=False),
        "archived": "v['archived']",
        "displayName": "DISPLAY_NAME(v['business_name'], v['first_name'], v['last_name'])",
        "badges": Nested(f"BADGES(v[{DEFINITIONS!r}], v['custom_fields'])", BADGE),
        "contacts": Nested("v['_contacts']", CONTACT),
        "facilities": Nested("v['_facilities']", FACILITY),
    },
    names=_NAMES,
)
# Edges of `customers`: the values are ``schema.pagination.Edge`` objects holding rows.
CUSTOMER_EDGE = ObjectSpec(
    name="CustomerEdge",
    fields={"cursor": "v.cursor", "node": Nested("v.node", CUSTOMER, many=False)},
)
PAGE_INFO = ObjectSpec(
    name="PageInfo",
    fields={
        "hasNextPage": "v.has_next_page",
        "hasPreviousPage": "v.has_previous_page",
        "startCursor": "v.start_cursor",
        "endCursor": "v.end_cursor",
    },
)
# `customers` answered whole: the value holds ``edges`` (``schema.pagination.Edge``
# objects of rows), ``page_info`` and the ``total`` the page's statement counted.
CUSTOMER_CONNECTION = ObjectSpec(
    name="CustomerConnection",
    fields={
        "totalCount": "v.total",
        "pageInfo": Nested("v.page_info", PAGE_INFO, many=False),
        "edges": Nested("v.edges", CUSTOMER_EDGE),
    },
)


@dataclass(frozen=True)
class Record:
    """A synced record type the compiled reads answer: its spec and table."""

    spec: ObjectSpec
    entity: EntitySpec


# By GraphQL type name (also the type name of their global ids).
RECORDS = {
    "Customer": Record(CUSTOMER, CUSTOMER_ENTITY),
    "Contact": Record(CONTACT, CONTACT_ENTITY),
    "Facility": Record(FACILITY, FACILITY_ENTITY),
    "Asset": Record(ASSET, ASSET_ENTITY),
}


@dataclass(frozen=True)
class _ListField:
    """A list field whose items are the live rows of ``entity`` under the parent's id."""

    entity: EntitySpec
    parent_column: str
    key: str


_CHILDREN: dict[tuple[str, str], _ListField] = {
    ("Customer", "contacts"): _ListField(CONTACT_ENTITY, "customer_id", "_contacts"),
    ("Customer", "facilities"): _ListField(FACILITY_ENTITY, "customer_id", "_facilities"),
    ("Facility", "assets"): _ListField(ASSET_ENTITY, "facility_id", "_assets"),
}
_ROW_COLUMN = re.compile(r"\bv\['([a-z][a-z_]*)'\]")


def _row_columns(spec: ObjectSpec, shape: Shape) -> set[str]:
    """The table columns ``spec``'s builder reads for ``shape`` (its expressions name them
    as ``v['column']``; underscored keys are attached children, not columns)."""
    columns = {"id"}
    for _key, name, _nested in shape:
        member = spec.fields.get(name)
        if member is not None:
            expression = member.expression if isinstance(member, Nested) else member
            columns.update(_ROW_COLUMN.findall(expression))
    return columns


def tree_level(spec: ObjectSpec, shape: Shape, extra: Iterable[str] = ()) -> Level | None:
    """What ``shape`` reads of ``spec``'s rows (and the columns ``extra``) as a
    ``db.queries.record_rows`` level: the columns its builder uses, children attached
    under the keys its expressions read, definitions when it selects custom fields or
    badges. None when one list is selected under two response keys with different
    selections (one attachment could not serve both)."""
    columns = _row_columns(spec, shape) | set(extra)
    children: list[Children] = []
    definitions = None
    for _key, name, nested in shape:
        if name in NEEDS_DEFINITIONS:
            definitions = spec.name.upper()
        list_field = _CHILDREN.get((spec.name, name))
        if nested is None or list_field is None:
            continue
        member = spec.fields[name]
        assert isinstance(member, Nested)
        level = tree_level(member.spec, nested)
        if level is None:
            return None
        child = Children(
            key=list_field.key,
            table=list_field.entity.table,
            entity=list_field.entity.type.value,
            parent_column=list_field.parent_column,
            level=level,
        )
        if any(c.key == child.key for c in children):
            if child not in children:
                return None
            continue
        children.append(child)
    return Level(tuple(sorted(columns)), tuple(children), definitions)
