"""Custom field definitions per tenant and entity type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.tables import custom_field_definitions as cfd


async def definitions_for(
    conn: AsyncConnection, org_id: UUID, entity_types: Sequence[str]
) -> list[dict[str, Any]]:
    """Definitions of these entity types, by position then key."""
    query = (
        select(cfd)
        .where(cfd.c.org_id == org_id, cfd.c.entity_type.in_(list(entity_types)))
        .order_by(cfd.c.entity_type, cfd.c.position, cfd.c.key)
    )
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def definitions_by_ids(
    conn: AsyncConnection, org_id: UUID, ids: Sequence[UUID]
) -> list[dict[str, Any]]:
    """The tenant's definitions with these ids (any order): ``node(id:)``'s batch."""
    query = select(cfd).where(cfd.c.org_id == org_id, cfd.c.id.in_(list(ids)))
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def get_definition(
    conn: AsyncConnection, org_id: UUID, def_id: UUID
) -> dict[str, Any] | None:
    """One definition, or None."""
    query = select(cfd).where(cfd.c.org_id == org_id, cfd.c.id == def_id)
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def create_definition(
    conn: AsyncConnection, org_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Insert a definition; the caller maps the (entity_type, key) unique violation."""
    result = await conn.execute(
        cfd.insert().values({**values, "org_id": org_id, "id": uuid4()}).returning(cfd)
    )
    return dict(result.mappings().one())


async def update_definition(
    conn: AsyncConnection, org_id: UUID, def_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Change a definition's label, options, requiredness or position."""
    result = await conn.execute(
        update(cfd).where(cfd.c.org_id == org_id, cfd.c.id == def_id).values(values).returning(cfd)
    )
    row = result.mappings().first()
    return dict(row) if row else None


async def delete_definition(conn: AsyncConnection, org_id: UUID, def_id: UUID) -> bool:
    """Remove a definition; stored values under its key are ignored from then on."""
    result = await conn.execute(delete(cfd).where(cfd.c.org_id == org_id, cfd.c.id == def_id))
    return bool(result.rowcount)
