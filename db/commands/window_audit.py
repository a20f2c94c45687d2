"""Who did what in the external-system sync window: the actor and the audit trail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw


@dataclass(frozen=True)
class Actor:
    """Who acts: a signed-in user, or the command line (``id`` None)."""

    id: UUID | None
    name: str


@dataclass(frozen=True)
class AuditEntry:
    """One audit line before it is stored."""

    action: str
    external_id: str | None
    customer_id: UUID | None
    details: Mapping[str, Any] = field(default_factory=dict)


_AUDIT = (
    "INSERT INTO external_audit"
    " (org_id, id, source_id, external_id, customer_id, action, actor_id, actor, at, details)"
    " SELECT $1::uuid, u.id, $2::uuid, u.external_id, u.customer_id, u.action, $3::uuid,"
    " $4::text, now(), u.details::jsonb"
    " FROM unnest($5::uuid[], $6::text[], $7::uuid[], $8::text[], $9::text[])"
    " AS u(id, external_id, customer_id, action, details)"
)


async def write_audit(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    actor: Actor,
    entries: Sequence[AuditEntry],
) -> None:
    """Store audit lines of one source in one statement."""
    if not entries:
        return
    await raw.execute(
        conn,
        _AUDIT,
        org_id,
        source_id,
        actor.id,
        actor.name,
        [uuid4() for _ in entries],
        [e.external_id for e in entries],
        [e.customer_id for e in entries],
        [e.action for e in entries],
        [json_text(e.details) for e in entries],
    )


def json_text(value: object) -> str:
    """``value`` as JSON text (for ``::jsonb`` parameters)."""
    return orjson.dumps(value).decode()
