"""A page of the customer list with the children a read selects, in one statement.

The compiled form of ``customers(first, after, filter, orderBy)`` (``server/compiled_reads.py``):
the same rows, order and keyset as ``db.queries.customers.customer_page`` builds through
SQLAlchemy, the children each level of the selection reaches (``db.queries.record_rows``:
one set-wise read per level, sent as JSON), the filtered total when the read asks for it,
and the caller's user row: one round trip where the executor sends five or more
statements.
``tests/api/test_compiled_reads.py`` compares the two paths' answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

import asyncpg

from db.queries import record_rows
from db.queries.customers import TRIGRAM, CustomerSort
from db.queries.pages import Page
from db.queries.record_tree import USER_COLUMNS, Level
from db.queries.text import escape_like, holds_nul
from db.tables import customers

SORT_TYPES = {
    CustomerSort.NAME: "text",
    CustomerSort.CREATED_AT: "timestamptz",
    CustomerSort.UPDATED_AT: "timestamptz",
}


@dataclass(frozen=True)
class ListRequest:
    """What one request asks of the list (the values; :class:`ListForm` is their form)."""

    first: int
    after: tuple[Any, UUID] | None
    descending: bool
    sort: CustomerSort
    archived: bool | None
    email: str | None
    search: str | None

    def usable(self) -> bool:
        """False for values the executor treats specially (a NUL byte matches nothing, a
        cursor of another ordering fails): the caller lets the executor answer those."""
        if holds_nul(self.email or "") or holds_nul(self.search or ""):
            return False
        if self.after is None:
            return True
        wanted = str if self.sort is CustomerSort.NAME else datetime
        return isinstance(self.after[0], wanted)


@dataclass(frozen=True)
class ListForm:
    """The statement's form: which filters and clauses it has (a few dozen distinct ones)."""

    level: Level
    sort: CustomerSort
    descending: bool
    after: bool
    archived: bool
    email: bool
    search: bool
    count: bool


@dataclass(frozen=True)
class ListRead:
    """The statement's answer: the caller's checked columns, the page and the total."""

    user: Mapping[str, Any] | None
    page: Page
    total: int | None


def form_of(request: ListRequest, level: Level, *, count: bool) -> ListForm:
    """The statement form serving ``request``; ``level`` must read the sort column."""
    return ListForm(
        level=level,
        sort=request.sort,
        descending=request.descending,
        after=request.after is not None,
        archived=request.archived is not None,
        email=request.email is not None,
        search=bool(request.search),
        count=count,
    )


def _is_trigram(request: ListRequest) -> bool:
    return bool(request.search) and len((request.search or "").strip()) >= TRIGRAM


@cache
def statement(form: ListForm, trigram: bool) -> tuple[str, tuple[str, ...]]:
    """The statement text and its parameters' names in order (``$1`` tenant, ``$2`` the
    caller, ``$3`` the row limit, then the filters the form has)."""
    names = ["org", "user", "limit"]

    def param(name: str, sql_type: str) -> str:
        names.append(name)
        return f"${len(names)}::{sql_type}"

    where = ["c.org_id = $1", "NOT c.deleted"]
    if form.archived:
        where.append(f"c.archived = {param('archived', 'boolean')}")
    if form.email:
        where.append(f"lower(c.email) = {param('email', 'text')}")
    if form.search:
        where.append(f"c.search_text LIKE {param('search', 'text')} ESCAPE '\\'")
    # Portal users see only their own customer (``only_id`` of ``customer_page``'s caller).
    where.append("(u.role <> 'PORTAL' OR u.customer_id IS NULL OR c.id = u.customer_id)")
    filtered = " AND ".join(where)
    sort = f"c.{form.sort.value}"
    if form.sort is CustomerSort.NAME and trigram:
        # An expression no index has, as ``customer_page`` sorts a search by name (and why).
        sort = f"({sort} || '')"
    keyset = ""
    if form.after:
        bound = f"({param('after_sort', SORT_TYPES[form.sort])}, {param('after_id', 'uuid')})"
        keyset = f" AND ({sort}, c.id) {'<' if form.descending else '>'} {bound}"
    direction = "DESC" if form.descending else "ASC"
    tree = record_rows.parts(customers, form.level)
    columns = ", ".join(f"c.{c}" for c in form.level.columns)
    page = (
        f"page AS MATERIALIZED (SELECT {columns},"
        f" row_number() OVER (ORDER BY {sort} {direction}, c.id {direction}) AS n"
        f" FROM customers c, users u WHERE u.org_id = $1 AND u.id = $2 AND {filtered}{keyset}"
        f" ORDER BY {sort} {direction}, c.id {direction} LIMIT $3)"
    )
    total = f"(SELECT count(*) FROM customers c WHERE {filtered})" if form.count else "NULL"
    user = ", ".join(f"u.{c}" for c in USER_COLUMNS)
    sql = (
        f"WITH {', '.join([page, *record_rows.child_ctes(tree)])}"
        f" SELECT {user}, {total}::bigint AS total, {', '.join(record_rows.json_columns(tree))}"
        f" FROM users u WHERE u.org_id = $1 AND u.id = $2"
    )
    return sql, tuple(names)


def _arguments(
    request: ListRequest, names: Sequence[str], org_id: UUID, user_id: UUID
) -> list[Any]:
    values: dict[str, Any] = {"org": org_id, "user": user_id, "limit": request.first + 1}
    values["archived"] = request.archived
    values["email"] = request.email.lower() if request.email is not None else None
    if request.search:
        values["search"] = "%" + escape_like(request.search.strip().lower()) + "%"
    if request.after is not None:
        values["after_sort"], values["after_id"] = request.after
    return [values[name] for name in names]


async def read(
    conn: asyncpg.Connection,
    request: ListRequest,
    form: ListForm,
    *,
    org_id: UUID,
    user_id: UUID,
) -> ListRead:
    """Run the statement on ``conn`` (in a transaction scoped to ``org_id``)."""
    sql, names = statement(form, _is_trigram(request))
    rows = await conn.fetch(sql, *_arguments(request, names, org_id, user_id))
    if not rows:
        return ListRead(None, Page([], has_next=False), None)
    row = rows[0]
    user = {c: row[c] for c in USER_COLUMNS}
    first_part = len(USER_COLUMNS) + 1
    records = record_rows.decode(record_rows.parts(customers, form.level), row[first_part:])
    page = Page(records[: request.first], has_next=len(records) > request.first)
    total = row["total"]
    return ListRead(user, page, None if total is None else int(total))
