"""Customers, contacts, facilities and assets as encoder specs, and what a shape reads.

The compiled reads (``server.compiled_reads``) answer `customer`, `customers` and `node`
by reading the rows and children a selection reaches in one statement
(``db.queries.record_rows``) and encoding them with these specs. Each extends the spec of
its type's row, declared next to the type (``schema.customers.CUSTOMER_ROW`` and its
siblings), from which the typed ``from_row`` builds the strawberry object
(``schema.encoding.typed_builder``); ``tests/api/test_compiled_reads.py`` compares the
two paths byte for byte. What is added here is what the typed type resolves with
DataLoaders (custom fields, badges, the children lists), read from what the statement
attached to the row instead. Fields with arguments or that walk back up the tree
(``Contact.customer``, ``Asset.facility``, credentials) are not in the specs: a selection
that asks for one is resolved the typed way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from db.entities import ASSET as ASSET_ENTITY
from db.entities import CONTACT as CONTACT_ENTITY
from db.entities import CUSTOMER as CUSTOMER_ENTITY
from db.entities import FACILITY as FACILITY_ENTITY
from db.entities import EntitySpec
from db.queries.record_rows import DEFINITIONS, Children, Level
from resolvers.selection_json.shapes import Shape
from schema.assets import ASSET_ROW
from schema.contacts import CONTACT_ROW
from schema.custom_fields import BADGE, CUSTOM_FIELD_VALUE, chosen_badges
from schema.customers import CUSTOMER_ROW
from schema.encoding import Nested, ObjectSpec
from schema.facilities import FACILITY_ROW

# Fields that need the record type's custom field definitions (attached under DEFINITIONS).
NEEDS_DEFINITIONS = frozenset({"customFields", "badges"})


def _attached(row_spec: ObjectSpec, fields: Mapping[str, Nested]) -> ObjectSpec:
    """``row_spec`` (the type's conversions of its row, next to the type) with the fields the
    typed path resolves with DataLoaders, read from what the statement attached to the row:
    custom field definitions (under DEFINITIONS) and the children lists of ``_CHILDREN``."""
    custom_fields = Nested(
        f"[(d, v['custom_fields']) for d in v[{DEFINITIONS!r}]]", CUSTOM_FIELD_VALUE
    )
    return ObjectSpec(
        name=row_spec.name,
        fields={**row_spec.fields, "customFields": custom_fields, **fields},
        names={**row_spec.names, "BADGES": chosen_badges},
    )


# The values are rows with their attachments.
ASSET = _attached(ASSET_ROW, {})
FACILITY = _attached(FACILITY_ROW, {"assets": Nested("v['_assets']", ASSET)})
CONTACT = _attached(CONTACT_ROW, {})
CUSTOMER = _attached(
    CUSTOMER_ROW,
    {
        "badges": Nested(f"BADGES(v[{DEFINITIONS!r}], v['custom_fields'])", BADGE),
        "contacts": Nested("v['_contacts']", CONTACT),
        "facilities": Nested("v['_facilities']", FACILITY),
    },
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
            expression = member if isinstance(member, str) else member.expression
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
