"""External sources of the sync window: register one, change its direction or mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import func, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.errors import DuplicateError, NotFoundError, RecordValidationError
from db.queries import external as queries
from db.queries.pages import Row
from db.tables import external_sources
from sync.validation import text_problem
from sync.window import (
    MAX_NAME,
    Direction,
    mapping_problems,
)


def _mapping(raw_mapping: Sequence[tuple[str, str]]) -> list[list[str]]:
    problems = mapping_problems(raw_mapping)
    if problems:
        raise RecordValidationError(problems)
    return [[column.strip(), target] for column, target in raw_mapping]


def source_mapping(source: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A stored source's mapping as (column, target) pairs."""
    return [(column, target) for column, target in source["mapping"]]


async def create_source(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    name: str,
    kind: str,
    direction: Direction,
    mapping: Sequence[tuple[str, str]],
) -> Row:
    """Register a source; its mapping must name existing customer fields (else refused)."""
    problems: dict[str, str] = {}
    if not name.strip():
        problems["name"] = "is empty"
    for label, value in (("name", name), ("kind", kind)):
        problem = text_problem(value, MAX_NAME)
        if problem is not None:
            problems[label] = problem
    try:
        stored = _mapping(mapping)
    except RecordValidationError as exc:
        problems.update(exc.field_errors)
    if problems:
        raise RecordValidationError(problems)
    if await queries.source_by_name(conn, org_id, name) is not None:
        raise DuplicateError(f"a source named {name.strip()!r} already exists")
    source_id = uuid4()
    row = {
        "org_id": org_id,
        "id": source_id,
        "name": name.strip(),
        "kind": kind.strip() or "other",
        "direction": direction.value,
        "mapping": stored,
    }
    await conn.execute(insert(external_sources).values(**row))
    found = await queries.get_source(conn, org_id, source_id)
    assert found is not None
    return found


async def update_source(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source_id: UUID,
    direction: Direction | None,
    mapping: Sequence[tuple[str, str]] | None,
) -> Row:
    """Change a source's direction or mapping (applies from the next import)."""
    if await queries.get_source(conn, org_id, source_id) is None:
        raise NotFoundError("external source", source_id)
    values: dict[str, Any] = {"updated_at": func.now()}
    if direction is not None:
        values["direction"] = direction.value
    if mapping is not None:
        values["mapping"] = _mapping(mapping)
    await conn.execute(
        update(external_sources)
        .where(external_sources.c.org_id == org_id, external_sources.c.id == source_id)
        .values(**values)
    )
    found = await queries.get_source(conn, org_id, source_id)
    assert found is not None
    return found


async def load_source(conn: AsyncConnection, org_id: UUID, source_id: UUID, *, lock: bool) -> Row:
    """A source row; ``lock`` takes its lock (imports and actions of one source queue).

    Raises NotFoundError for an unknown source."""
    rows = await raw.fetch(
        conn,
        "SELECT id, name, direction, mapping FROM external_sources WHERE org_id = $1 AND id = $2"
        + (" FOR UPDATE" if lock else ""),
        org_id,
        source_id,
    )
    if not rows:
        raise NotFoundError("external source", source_id)
    return dict(rows[0])
