"""Tenants: creation and lookups."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import set_tenant
from db.entities import EntityType
from db.tables import org_seq, orgs
from sync.decision import ConflictPolicy


async def create_org(conn: AsyncConnection, name: str, *, org_id: UUID | None = None) -> UUID:
    """Create a tenant with its seq counter; scopes ``conn``'s transaction to it."""
    org_id = org_id or uuid4()
    await set_tenant(conn, org_id)
    await conn.execute(orgs.insert().values(org_id=org_id, name=name))
    await conn.execute(org_seq.insert().values(org_id=org_id, last_seq=0))
    return org_id


async def get_org(conn: AsyncConnection, org_id: UUID) -> dict[str, Any] | None:
    """The tenant row, if visible."""
    row = (await conn.execute(select(orgs).where(orgs.c.org_id == org_id))).mappings().first()
    return dict(row) if row else None


async def head_seq(conn: AsyncConnection, org_id: UUID) -> int:
    """The tenant's newest allocated change seq (0 before any write)."""
    query = select(func.coalesce(func.max(org_seq.c.last_seq), 0)).where(org_seq.c.org_id == org_id)
    return int((await conn.execute(query)).scalar_one())


async def tenant_count(conn: AsyncConnection) -> int:
    """How many tenants the database holds (a count only; no tenant's rows are read)."""
    return int((await conn.execute(select(func.fieldsync_tenant_count()))).scalar_one())


async def conflict_policies(
    conn: AsyncConnection, org_id: UUID
) -> dict[EntityType, ConflictPolicy]:
    """The tenant's policy per entity type (MANUAL unless set)."""
    stored = (
        await conn.execute(select(orgs.c.conflict_policies).where(orgs.c.org_id == org_id))
    ).scalar_one()
    return {t: ConflictPolicy(stored.get(t.value, "MANUAL")) for t in EntityType}


async def tenant_ids(conn: AsyncConnection) -> list[UUID]:
    """Every tenant's id (for maintenance jobs; reads no tenant's rows)."""
    result = await conn.execute(select(func.fieldsync_tenant_ids()))
    return list(result.scalars())
