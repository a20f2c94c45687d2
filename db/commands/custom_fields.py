"""Custom field definitions: checked creation and changes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.errors import DuplicateError, NotFoundError, RecordValidationError
from db.queries import custom_fields as queries
from sync.validation import FIELD_TYPES

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _check_options(
    field_type: str, options: Sequence[Mapping[str, Any]], errors: dict[str, str]
) -> None:
    if field_type == "DROPDOWN":
        values = [o["value"] for o in options]
        if not values:
            errors["options"] = "a dropdown needs at least one option"
        elif len(set(values)) != len(values):
            errors["options"] = "option values must be unique"
        elif any(
            not str(v).strip() or not str(o["label"]).strip()
            for v, o in zip(values, options, strict=True)
        ):
            errors["options"] = "every option needs a value and a label"
    elif options:
        errors["options"] = "only dropdown fields have options"


async def create_definition(
    conn: AsyncConnection, org_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Add a definition; keys are lower_snake_case and unique per entity type."""
    errors: dict[str, str] = {}
    if not KEY_PATTERN.match(values["key"]):
        errors["key"] = "use 1-63 lower-case letters, digits or underscores, starting with a letter"
    if not values["label"].strip():
        errors["label"] = "is required"
    if values["field_type"] not in FIELD_TYPES:
        errors["fieldType"] = f"must be one of {sorted(FIELD_TYPES)}"
    _check_options(values["field_type"], values["options"], errors)
    if errors:
        raise RecordValidationError(errors)
    try:
        async with conn.begin_nested():
            return await queries.create_definition(conn, org_id, values)
    except IntegrityError as exc:
        raise DuplicateError(
            f"a {values['entity_type'].lower()} custom field with key {values['key']!r} exists"
        ) from exc


async def update_definition(
    conn: AsyncConnection, org_id: UUID, def_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Change label, options, requiredness or position of a definition."""
    current = await queries.get_definition(conn, org_id, def_id)
    if current is None:
        raise NotFoundError("custom field", def_id)
    errors: dict[str, str] = {}
    if "label" in values and not str(values["label"]).strip():
        errors["label"] = "is required"
    if "options" in values:
        _check_options(current["field_type"], values["options"], errors)
    if errors:
        raise RecordValidationError(errors)
    row = await queries.update_definition(conn, org_id, def_id, values)
    assert row is not None
    return row


async def delete_definition(conn: AsyncConnection, org_id: UUID, def_id: UUID) -> dict[str, Any]:
    """Remove a definition; returns the removed row."""
    current = await queries.get_definition(conn, org_id, def_id)
    if current is None or not await queries.delete_definition(conn, org_id, def_id):
        raise NotFoundError("custom field", def_id)
    return current
