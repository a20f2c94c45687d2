"""Pieces shared by the synced record types: sync metadata and patch building."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import strawberry

from schema.encoding import Serialized
from schema.node import to_global_id
from schema.scalars import VersionVector
from sync.validation import camel


@strawberry.interface(
    description="A record that syncs to devices: versioned, tombstoned on delete."
)
class SyncedRecord:
    """Sync metadata every synced record exposes."""

    record_id: strawberry.ID = strawberry.field(
        description="The record's uuid: its id in the sync API (`Change.recordId`, patches)."
        " Every id argument accepts it as well as the global `id`."
    )
    version: VersionVector = strawberry.field(
        description="Current version vector; send it back as `baseVersion` when editing."
    )
    created_at: datetime = strawberry.field(description="When the record was created.")
    updated_at: datetime = strawberry.field(description="When the record last changed.")


def record_fields(type_name: str) -> dict[str, str | Serialized]:
    """The Node and SyncedRecord fields of a synced record's spec, from its row
    (the expressions need ``RECORD_NAMES``)."""
    return {
        "id": f"GID({type_name!r}, v['id'])",
        "recordId": "str(v['id'])",
        "version": "v['version']",
        "createdAt": Serialized("v['created_at']", "{0}.isoformat()"),
        "updatedAt": Serialized("v['updated_at']", "{0}.isoformat()"),
    }


RECORD_NAMES = {"GID": to_global_id}
# The private values every synced record type's resolvers read (its children and custom
# fields are resolved from these).
RECORD_PRIVATE = {"uuid": "v['id']", "stored_custom_fields": "v['custom_fields']"}


BASE_VERSION_DOC = (
    "Edit from this version: fields changed by others since are not overwritten silently."
)


# Values that are JSON as they are: a patch's text, numbers and flags are most of what it
# holds, and each is then taken by one set lookup instead of three checks.
_AS_IS = frozenset({str, int, float, bool, type(None)})


def patch_from(
    input_obj: object,
    *,
    renames: Mapping[str, str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Column -> value for every input field the client set (UNSET fields are left out).

    Nested inputs become plain dicts with snake_case keys, as the tables store them.
    Fields in ``exclude`` are left out (``customFields``: client JSON of any depth, which
    :func:`schema.custom_fields.set_custom_fields` takes as it is, never walked here).
    """
    patch: dict[str, Any] = {}
    for name, value in vars(input_obj).items():
        if value is strawberry.UNSET or name in exclude:
            continue
        column = renames.get(name, name) if renames else name
        patch[column] = value if type(value) in _AS_IS else plain(value)
    return patch


def plain(value: Any) -> Any:
    """Strawberry inputs and enums to JSON-able Python values."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        # No input type of the schema nests lists: a list in a list is JSON a client sent
        # through a JSON scalar, kept as it is (and never walked to whatever depth it has).
        return [v if isinstance(v, list) else plain(v) for v in value]
    if hasattr(kind, "__strawberry_definition__"):
        # Nested objects are stored as the API shows them (camelCase), so pulls and pushes
        # carry the same JSON a client sends.
        return {
            camel(k): v if type(v) in _AS_IS else plain(v)
            for k, v in vars(value).items()
            if v is not strawberry.UNSET
        }
    return value
