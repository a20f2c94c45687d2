"""Reads of the external-system sync window: sources, window pages, counts, audit, export."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.queries.pages import Row
from db.tables import external_audit, external_import_batches, external_sources
from sync.window import Category

# The customer columns the window compares, joined to each external record.
CUSTOMER_COLUMNS = (
    "c.id AS c_id, c.deleted AS c_deleted, c.archived AS c_archived,"
    " c.business_name, c.first_name, c.last_name, c.email, c.phones"
)
PAIR_COLUMNS = (
    "e.external_id, e.values, e.active, e.deleted, e.line, e.customer_id, e.synced,"
    " e.sync_active, e.auto_match, e.category, e.conflicts, e.pending, e.updated_at, "
    + CUSTOMER_COLUMNS
)
_JOIN = (
    "FROM external_records e LEFT JOIN customers c ON c.org_id = e.org_id AND c.id = e.customer_id"
)


async def get_source(conn: AsyncConnection, org_id: UUID, source_id: UUID) -> Row | None:
    """One source of the tenant."""
    result = await conn.execute(
        select(external_sources).where(
            external_sources.c.org_id == org_id, external_sources.c.id == source_id
        )
    )
    row = result.mappings().one_or_none()
    return dict(row) if row else None


async def sources_by_ids(conn: AsyncConnection, org_id: UUID, ids: Sequence[UUID]) -> list[Row]:
    """The tenant's sources with these ids (any order): ``node(id:)``'s batch."""
    result = await conn.execute(
        select(external_sources).where(
            external_sources.c.org_id == org_id, external_sources.c.id.in_(list(ids))
        )
    )
    return [dict(r) for r in result.mappings()]


async def source_by_name(conn: AsyncConnection, org_id: UUID, name: str) -> Row | None:
    """The source named ``name`` (any case)."""
    result = await conn.execute(
        select(external_sources).where(
            external_sources.c.org_id == org_id,
            func.lower(external_sources.c.name) == name.strip().lower(),
        )
    )
    row = result.mappings().one_or_none()
    return dict(row) if row else None


async def list_sources(conn: AsyncConnection, org_id: UUID) -> list[Row]:
    """Every source of the tenant, by name."""
    result = await conn.execute(
        select(external_sources)
        .where(external_sources.c.org_id == org_id)
        .order_by(func.lower(external_sources.c.name))
    )
    return [dict(r) for r in result.mappings()]


_COUNTS = (
    "SELECT category, count(*) AS n FROM external_records"
    " WHERE org_id = $1 AND source_id = $2 AND category IS NOT NULL GROUP BY category"
)
_NEW_LOCAL = (
    "FROM customers c WHERE c.org_id = $1 AND NOT c.deleted AND NOT c.archived"
    " AND NOT EXISTS (SELECT 1 FROM external_records e WHERE e.org_id = $1"
    " AND e.source_id = $2 AND e.customer_id = c.id)"
)

# Live customers minus the paired ones: two linear counts. The anti-join of _NEW_LOCAL,
# planned inside an import's transaction (before statistics know the new links), probed
# the links once per customer.
_NEW_LOCAL_COUNT = (
    "SELECT (SELECT count(*) FROM customers WHERE org_id = $1 AND NOT deleted"
    " AND NOT archived) - (SELECT count(*) FROM external_records e JOIN customers c"
    " ON c.org_id = $1 AND c.id = e.customer_id WHERE e.org_id = $1 AND e.source_id = $2"
    " AND NOT c.deleted AND NOT c.archived) AS n"
)


async def category_counts(
    conn: AsyncConnection, org_id: UUID, source_id: UUID
) -> dict[Category, int]:
    """How many pairs each category holds (every category, zeros included).

    NEW_LOCAL is counted live: live, unarchived customers without a link to this source.
    """
    counts = dict.fromkeys(Category, 0)
    for record in await raw.fetch(conn, _COUNTS, org_id, source_id):
        counts[Category(record["category"])] = record["n"]
    [local] = await raw.fetch(conn, _NEW_LOCAL_COUNT, org_id, source_id)
    counts[Category.NEW_LOCAL] = local["n"]
    return counts


async def pair_page(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    category: Category,
    *,
    after: str | None,
    first: int,
) -> tuple[list[Row], bool]:
    """One page of a category's pairs in external id order, and whether more follow."""
    rows = await raw.fetch(
        conn,
        f"SELECT {PAIR_COLUMNS} {_JOIN} WHERE e.org_id = $1 AND e.source_id = $2"
        " AND e.category = $3 AND ($4::text IS NULL OR e.external_id > $4)"
        " ORDER BY e.external_id LIMIT $5",
        org_id,
        source_id,
        category.value,
        after,
        first + 1,
    )
    return [dict(r) for r in rows[:first]], len(rows) > first


async def new_local_page(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    *,
    after: tuple[str, UUID] | None,
    first: int,
) -> tuple[list[Row], bool]:
    """One page of NEW_LOCAL customers by (sort name, id), and whether more follow."""
    rows = await raw.fetch(
        conn,
        "SELECT c.id AS c_id, c.deleted AS c_deleted, c.archived AS c_archived, c.sort_name,"
        " c.business_name, c.first_name, c.last_name, c.email, c.phones " + _NEW_LOCAL + ""
        " AND ($3::text IS NULL OR (c.sort_name, c.id) > ($3::text, $4::uuid))"
        " ORDER BY c.sort_name, c.id LIMIT $5",
        org_id,
        source_id,
        after[0] if after else None,
        after[1] if after else None,
        first + 1,
    )
    return [dict(r) for r in rows[:first]], len(rows) > first


async def pairs_by_external_id(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    external_ids: Sequence[str],
    *,
    lock: bool = False,
) -> dict[str, Row]:
    """Pairs of these external ids (with their customers' values), optionally locked."""
    rows = await raw.fetch(
        conn,
        f"SELECT {PAIR_COLUMNS} {_JOIN} WHERE e.org_id = $1 AND e.source_id = $2"
        " AND e.external_id = ANY($3::text[])" + (" FOR UPDATE OF e" if lock else ""),
        org_id,
        source_id,
        list(external_ids),
    )
    return {r["external_id"]: dict(r) for r in rows}


async def all_pairs(conn: AsyncConnection, org_id: UUID, source_id: UUID) -> list[Row]:
    """Every external record of a source with its customer's values (one statement)."""
    rows = await raw.fetch(
        conn,
        f"SELECT {PAIR_COLUMNS} {_JOIN} WHERE e.org_id = $1 AND e.source_id = $2",
        org_id,
        source_id,
    )
    return [dict(r) for r in rows]


async def linked_customers(
    conn: AsyncConnection, org_id: UUID, source_id: UUID, customer_ids: Sequence[UUID]
) -> set[UUID]:
    """Which of ``customer_ids`` already have a link to this source."""
    rows = await raw.fetch(
        conn,
        "SELECT customer_id FROM external_records WHERE org_id = $1 AND source_id = $2"
        " AND customer_id = ANY($3::uuid[])",
        org_id,
        source_id,
        list(customer_ids),
    )
    return {r["customer_id"] for r in rows}


async def audit_entries(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    *,
    external_ids: Sequence[str] = (),
    customer_ids: Sequence[UUID] = (),
) -> list[Row]:
    """Audit entries of some pairs (by external id or customer), oldest first."""
    if not external_ids and not customer_ids:
        return []
    table = external_audit
    result = await conn.execute(
        select(table)
        .where(
            table.c.org_id == org_id,
            table.c.source_id == source_id,
            table.c.external_id.in_(list(external_ids))
            | table.c.customer_id.in_(list(customer_ids)),
        )
        .order_by(table.c.at, table.c.id)
    )
    return [dict(r) for r in result.mappings()]


async def batches(conn: AsyncConnection, org_id: UUID, source_id: UUID, *, limit: int) -> list[Row]:
    """The source's import batches, newest first."""
    table = external_import_batches
    result = await conn.execute(
        select(table)
        .where(table.c.org_id == org_id, table.c.source_id == source_id)
        .order_by(table.c.created_at.desc(), table.c.id)
        .limit(limit)
    )
    return [dict(r) for r in result.mappings()]


async def batches_by_ids(conn: AsyncConnection, org_id: UUID, ids: Sequence[UUID]) -> list[Row]:
    """The tenant's import batches with these ids (any order): ``node(id:)``'s batch."""
    table = external_import_batches
    result = await conn.execute(
        select(table).where(table.c.org_id == org_id, table.c.id.in_(list(ids)))
    )
    return [dict(r) for r in result.mappings()]


async def last_applied_batch(conn: AsyncConnection, org_id: UUID, source_id: UUID) -> Row | None:
    """The newest import that was applied (refused ones changed nothing)."""
    table = external_import_batches
    result = await conn.execute(
        select(table)
        .where(
            table.c.org_id == org_id,
            table.c.source_id == source_id,
            table.c.status == "APPLIED",
        )
        .order_by(table.c.created_at.desc())
        .limit(1)
    )
    row = result.mappings().one_or_none()
    return dict(row) if row else None


async def export_rows(conn: AsyncConnection, org_id: UUID, source_id: UUID) -> list[Row]:
    """The local side to export: linked pairs whose sync is on and both sides live (by
    external id), then the customers new here (by name)."""
    linked = await raw.fetch(
        conn,
        f"SELECT {PAIR_COLUMNS} {_JOIN} WHERE e.org_id = $1 AND e.source_id = $2"
        " AND e.customer_id IS NOT NULL AND e.sync_active AND NOT e.deleted"
        " AND c.id IS NOT NULL AND NOT c.deleted ORDER BY e.external_id",
        org_id,
        source_id,
    )
    local = await raw.fetch(
        conn,
        "SELECT NULL::text AS external_id, c.business_name, c.first_name, c.last_name,"
        " c.email, c.phones " + _NEW_LOCAL + " ORDER BY c.sort_name, c.id",
        org_id,
        source_id,
    )
    return [dict(r) for r in (*linked, *local)]
