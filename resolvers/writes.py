"""The shared shape of every record mutation: authorise, run in a transaction, map errors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from db.commands import records as commands
from db.entities import EntitySpec, EntityType
from db.errors import DomainError, ForbiddenError, is_transient
from resolvers.context import CurrentUser, Info, PublicError
from schema.customers import DeletedRecord
from schema.errors import NotFound, UserError, error_from, not_found
from schema.node import InvalidIdError, from_global_id, to_global_id

Row = dict[str, Any]
TYPE_NAMES = {
    EntityType.CUSTOMER: "Customer",
    EntityType.CONTACT: "Contact",
    EntityType.FACILITY: "Facility",
    EntityType.ASSET: "Asset",
}
T = TypeVar("T")
# What a write runs in its transaction: called with the connection and the caller.
Action = Callable[[AsyncConnection, CurrentUser], Awaitable[T]]
# Runs of one write transaction that PostgreSQL may abort for a concurrent one (run_write).
TRANSIENT_ATTEMPTS = 4
log = structlog.get_logger("fieldsync.writes")


def decode_id(global_id: str, type_name: str) -> UUID:
    """The uuid of a global id of ``type_name``; raises InvalidIdError otherwise."""
    return from_global_id(global_id, type_name)[1]


async def run_write(
    info: Info,
    action: Action[T],
    *,
    client_id: str | None = None,
    allowed: Callable[[CurrentUser], bool] = lambda user: user.can_edit_records,
    refusal: str = "your role may not change this",
) -> T | UserError:
    """Run ``action`` in one tenant transaction; what it returns, or the union member of
    the domain error that rolled it back (nothing is half-written). A caller ``allowed``
    refuses gets ``Forbidden`` with ``refusal``, which says who may.

    The error is typed as the ``UserError`` interface: which members a command can produce
    is known only at run time, so a mutation returning it declares its GraphQL union with
    ``graphql_type`` and ``<record> | UserError`` as its Python type.

    A transaction PostgreSQL aborted because of a concurrent one (a deadlock between two
    pushes that lock a customer and the tenant's seq row in opposite orders, a
    serialization failure) is run again from the start, a few times with a short jittered
    pause, instead of failing the request: its writes were all rolled back.
    """
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            async with info.context.caller_write() as (conn, user):
                if not allowed(user):
                    return error_from(ForbiddenError(refusal))
                return await action(conn, user)
        except DomainError as exc:
            return error_from(exc, client_id)
        except Exception as exc:
            if attempt == TRANSIENT_ATTEMPTS or not is_transient(exc):
                raise
            log.info("transaction retried", attempt=attempt, reason=type(exc).__name__)
            await asyncio.sleep(random.uniform(0, 0.05 * attempt))  # noqa: S311 - jitter
    raise AssertionError("unreachable")  # pragma: no cover


def page_size(info: Info, first: int) -> int:
    """Validate ``first`` against the configured cap."""
    cap = info.context.settings.max_page_size
    if not 1 <= first <= cap:
        raise PublicError(f"`first` must be between 1 and {cap}", "BAD_USER_INPUT")
    return first


def bad_id(global_id: str, exc: InvalidIdError) -> NotFound:
    """The NotFound member for a malformed or wrongly typed id."""
    return not_found(global_id, str(exc))


async def save_record(
    info: Info,
    spec: EntitySpec,
    from_row: Callable[[Row], T],
    *,
    global_id: str | None,
    patch: dict[str, Any],
    links: dict[str, UUID] | None = None,
    base_version: Mapping[str, int] | None = None,
) -> T | UserError:
    """Create (``global_id`` None) or update one record; the typed object or error.

    ``base_version`` (updates) applies the sync rules instead of last-writer-wins."""
    type_name = TYPE_NAMES[spec.type]
    record_id = None
    if global_id is not None:
        try:
            record_id = decode_id(global_id, type_name)
        except InvalidIdError as exc:
            return bad_id(global_id, exc)
    result = await run_write(
        info,
        lambda conn, user: commands.save(
            conn,
            org_id=user.org_id,
            spec=spec,
            record_id=record_id,
            patch=patch,
            links=links,
            max_length=info.context.settings.max_string_length,
            base_version=base_version,
        ),
        client_id=global_id,
    )
    return result if isinstance(result, UserError) else from_row(result)


async def delete_record(info: Info, spec: EntitySpec, global_id: str) -> DeletedRecord | UserError:
    """Tombstone one record; DeletedRecord or the typed refusal."""
    try:
        record_id = decode_id(global_id, TYPE_NAMES[spec.type])
    except InvalidIdError as exc:
        return bad_id(global_id, exc)
    result = await run_write(
        info,
        lambda conn, user: commands.delete(
            conn, org_id=user.org_id, spec=spec, record_id=record_id
        ),
        client_id=global_id,
    )
    if isinstance(result, UserError):
        return result
    # The global id even when the record was named by its uuid: the field says so.
    record = to_global_id(TYPE_NAMES[spec.type], record_id)
    return DeletedRecord(id=record, deleted_at=result["updated_at"])


def link(global_id: str, type_name: str) -> UUID | NotFound:
    """The uuid of a parent's global id, or the NotFound member."""
    try:
        return decode_id(global_id, type_name)
    except InvalidIdError as exc:
        return bad_id(global_id, exc)
