"""Many records with the children a read selects, each level as one JSON value.

For a list page (50 customers, their contacts, their facilities and those facilities'
assets: 1,300 records) nested ``ARRAY(SELECT ROW(...))`` values are slow to produce:
PostgreSQL's binary output of an array of anonymous records looks up every column's output
function per record (10 ms of server CPU for a page's 1,000 assets), and plain rows of a
``UNION ALL`` cost the server little but asyncpg 6 ms to decode (every level's columns in
every row). So each level is a CTE (its rows of all the previous level's parents, read
set-wise by ``= ANY(parent ids)``, in ``records.by_parent`` order) sent as one
``json_agg`` of arrays, which orjson decodes in a fraction of that: the page's statement
then costs about a third of the CPU of either.

JSON carries uuids and timestamps as text: ids stay strings (the encoders format them into
global ids and cursors alike), timestamps and dates become ``datetime`` and ``date`` again,
as asyncpg would have returned them (timestamps in UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Date, DateTime, Table

from db.queries.record_tree import Level, Row
from db.queries.records import ORDER_BY_PARENT, UNREAD_COLUMNS


@dataclass(frozen=True)
class Part:
    """One level of the tree: its table and columns, and where its rows attach."""

    table: Table
    columns: tuple[str, ...]
    cte: str
    parent: int | None = None  # the parent part's index
    parent_column: str | None = None
    entity: str | None = None
    key: str | None = None  # the key the rows attach under on the parent's rows


@cache
def parts(root: Table, level: Level) -> tuple[Part, ...]:
    """The parts of ``level`` read from ``root`` (part 0, the CTE ``page``) and below."""
    found = [Part(root, level.columns, "page")]

    def walk(level: Level, index: int) -> None:
        for child in level.children:
            found.append(
                Part(
                    child.table,
                    child.level.columns,
                    f"c{len(found)}",
                    parent=index,
                    parent_column=child.parent_column,
                    entity=child.entity,
                    key=child.key,
                )
            )
            walk(child.level, len(found) - 1)

    walk(level, 0)
    for part in found:
        unknown = [c for c in part.columns if c not in part.table.c or c in UNREAD_COLUMNS]
        if unknown:
            raise ValueError(f"{part.table.name} has no readable columns {unknown}")
    return tuple(found)


def child_ctes(tree: Sequence[Part]) -> list[str]:
    """The CTEs of every part but the root (the caller writes ``page``, which must have an
    ``id`` column and each row's position as ``n``)."""
    ctes = []
    for part in tree[1:]:
        assert part.parent is not None
        assert part.parent_column is not None
        parent = tree[part.parent].cte
        order = ORDER_BY_PARENT.get(part.entity or "", "id")
        columns = ", ".join(f"t.{c}" for c in part.columns)
        ctes.append(
            f"{part.cte} AS MATERIALIZED (SELECT {columns}, t.{part.parent_column} AS parent,"
            f" row_number() OVER (ORDER BY t.{part.parent_column}, t.{order}, t.id) AS n"
            f" FROM {part.table.name} t WHERE t.org_id = $1 AND NOT t.deleted"
            f" AND t.{part.parent_column} = ANY(ARRAY(SELECT id FROM {parent})))"
        )
    return ctes


def json_columns(tree: Sequence[Part]) -> list[str]:
    """One select-list item per part: its rows as a JSON array of arrays, in order (a
    child's array ends with its parent's id)."""
    items = []
    for part in tree:
        values = [f"x.{c}" for c in part.columns]
        if part.parent is not None:
            values.append("x.parent")
        items.append(
            f"(SELECT json_agg(json_build_array({', '.join(values)}) ORDER BY x.n)"
            f" FROM {part.cte} x)"
        )
    return items


def _timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


@cache
def _conversions(
    table: Table, columns: tuple[str, ...]
) -> tuple[tuple[str, Callable[[str], Any]], ...]:
    found: list[tuple[str, Callable[[str], Any]]] = []
    for column in columns:
        kind = table.c[column].type
        if isinstance(kind, DateTime):
            found.append((column, _timestamp))
        elif isinstance(kind, Date):
            found.append((column, date.fromisoformat))
    return tuple(found)


def decode(tree: Sequence[Part], values: Sequence[Any]) -> list[Row]:
    """The root part's rows, their children attached, from :func:`json_columns`' values
    (None for an empty part; decoded by the pool's json codec, or text without one)."""
    by_part: list[list[Row]] = []
    for part, value in zip(tree, values, strict=True):
        items: list[list[Any]] = orjson.loads(value) if isinstance(value, str) else value or []
        conversions = _conversions(part.table, part.columns)
        rows: list[Row] = []
        for item in items:
            row = dict(zip(part.columns, item, strict=False))
            for column, convert in conversions:
                if row[column] is not None:
                    row[column] = convert(row[column])
            rows.append(row)
        by_part.append(rows)
        if part.parent is None:
            continue
        assert part.key is not None
        groups: dict[str, list[Row]] = {}
        count = len(part.columns)
        for item, row in zip(items, rows, strict=True):
            groups.setdefault(item[count], []).append(row)
        for parent_row in by_part[part.parent]:
            parent_row[part.key] = groups.get(parent_row["id"], [])
    return by_part[0]
