"""Customers, contacts, facilities and assets as encoder specs: reads answered in one pass.

A frontend's customer list (50 customers with their contacts, facilities and assets) is
1,300 records, about 1,650 JSON objects; graphql-core would complete each of their fields
in Python, one resolver call and one type check at a time. When the client's selection
reduces to a shape (``resolvers.encoded``), the resolver instead loads every level the
shape reaches with one statement per level and list field (reading only the columns the
selection uses), attaches the children to their parents' rows, and encodes the whole tree
with generated functions.

The expressions below are the conversions the typed ``from_row`` classmethods and field
resolvers apply (``schema/customers.py`` and its siblings); ``tests/api/test_encoded_reads.py``
compares the two paths field for field. Fields with arguments or that walk back up the tree
(``Contact.customer``, ``Asset.facility``, credentials) are not in the specs: a selection
that asks for one is resolved the ordinary way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from db.entities import ASSET as ASSET_ENTITY
from db.entities import CONTACT as CONTACT_ENTITY
from db.entities import FACILITY as FACILITY_ENTITY
from db.entities import EntitySpec
from db.queries import record_tree, records
from resolvers import encoded
from resolvers.encoded import Nested, ObjectSpec, Shape
from schema.custom_fields import chosen_badges
from schema.customers import display_name
from schema.node import to_global_id

if TYPE_CHECKING:
    from resolvers.context import Context

Row = dict[str, Any]

# Keys under which children and custom field definitions are attached to a parent's row;
# column names never start with an underscore. Expressions name the columns they read as
# ``v['column']``: ``row_columns`` finds them there.
DEFINITIONS = "_definitions"


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


@dataclass(frozen=True)
class Children:
    """A list field whose items are the live rows of ``entity`` under the parent's id."""

    entity: EntitySpec
    parent_column: str
    key: str


CHILDREN: dict[tuple[str, str], Children] = {
    ("Customer", "contacts"): Children(CONTACT_ENTITY, "customer_id", "_contacts"),
    ("Customer", "facilities"): Children(FACILITY_ENTITY, "customer_id", "_facilities"),
    ("Facility", "assets"): Children(ASSET_ENTITY, "facility_id", "_assets"),
}
CUSTOM_FIELD_ENTITY = {
    "Customer": "CUSTOMER",
    "Contact": "CONTACT",
    "Facility": "FACILITY",
    "Asset": "ASSET",
}
_ROW_COLUMN = re.compile(r"\bv\['([a-z][a-z_]*)'\]")


def row_columns(spec: ObjectSpec, shapes: Iterable[Shape]) -> set[str]:
    """The table columns ``spec``'s builder reads for ``shapes`` (its expressions name them
    as ``v['column']``; underscored keys are attached children, not columns)."""
    columns = {"id"}
    for shape in shapes:
        for _key, name, _nested in shape:
            member = spec.fields.get(name)
            if member is not None:
                expression = member.expression if isinstance(member, Nested) else member
                columns.update(_ROW_COLUMN.findall(expression))
    return columns


async def attach(ctx: Context, spec: ObjectSpec, shape: Shape, rows: Sequence[Row]) -> None:
    """Load what ``shape`` reaches below ``rows`` and attach it to them, so ``spec``'s
    builder finds it there: one statement per list field and level, each reading only the
    columns the selection uses (a list page's assets without their version vectors and
    custom fields, when those are not asked for, decode in half the time)."""
    if not rows:
        return
    by_field: dict[str, list[Shape]] = {}
    for _key, name, nested in shape:
        if name in ("customFields", "badges") and DEFINITIONS not in rows[0]:
            definitions = await ctx.loaders.field_definitions_by_entity.load(
                CUSTOM_FIELD_ENTITY[spec.name]
            )
            for row in rows:
                row[DEFINITIONS] = definitions
        if nested is not None and (spec.name, name) in CHILDREN:
            by_field.setdefault(name, []).append(nested)
    for name, shapes in by_field.items():
        children = CHILDREN[(spec.name, name)]
        member = spec.fields[name]
        assert isinstance(member, Nested)
        columns = row_columns(member.spec, shapes) | {children.parent_column}
        org_id = await ctx.org_id()
        async with ctx.read() as conn:
            grouped = await records.by_parent(
                conn,
                children.entity,
                org_id,
                children.parent_column,
                [row["id"] for row in rows],
                sorted(columns),
            )
        for row, items in zip(rows, grouped, strict=True):
            row[children.key] = items
        items = [item for group in grouped for item in group]
        for nested in shapes:
            await attach(ctx, member.spec, nested, items)


def encode_one(spec: ObjectSpec, shape: Shape, value: Any) -> bytes:
    """One object as JSON in ``shape``."""
    return orjson.dumps(encoded.builder(spec, shape)(value))


def tree_level(spec: ObjectSpec, shape: Shape) -> record_tree.Level | None:
    """What ``shape`` reads of ``spec``'s rows as a ``db.queries.record_tree`` level (the
    columns its builder uses, children attached under the keys ``attach`` uses); None
    when it needs more than rows (custom field definitions)."""
    columns = row_columns(spec, [shape])
    children: list[record_tree.Children] = []
    for _key, name, nested in shape:
        if name in ("customFields", "badges"):
            return None
        children_of = CHILDREN.get((spec.name, name))
        if nested is None or children_of is None:
            continue
        member = spec.fields[name]
        assert isinstance(member, Nested)
        level = tree_level(member.spec, nested)
        if level is None:
            return None
        if any(c.key == children_of.key for c in children):
            return None  # the same list under two response keys: one attachment serves both
        children.append(
            record_tree.Children(
                key=children_of.key,
                table=children_of.entity.table,
                entity=children_of.entity.type.value,
                parent_column=children_of.parent_column,
                level=level,
            )
        )
    return record_tree.Level(tuple(sorted(columns)), tuple(children))


PAGE_INFO = ObjectSpec(
    name="PageInfo",
    fields={
        "hasNextPage": "v.has_next_page",
        "hasPreviousPage": "v.has_previous_page",
        "startCursor": "v.start_cursor",
        "endCursor": "v.end_cursor",
    },
)
# `customers` answered whole (server/compiled_reads.py): the value holds ``edges``
# (``schema.pagination.Edge`` objects of rows), ``page_info`` and the ``total`` the page's
# statement counted.
CUSTOMER_CONNECTION = ObjectSpec(
    name="CustomerConnection",
    fields={
        "totalCount": "v.total",
        "pageInfo": Nested("v.page_info", PAGE_INFO, many=False),
        "edges": Nested("v.edges", CUSTOMER_EDGE),
    },
)
