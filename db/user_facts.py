"""What decides whether a user's open subscriptions may go on, and how they filter.

Read for the live hub's periodic re-check of subscribed users (``db/live.py``) and for the
first pages of subscribers that join together (``db/catch_up.py``): one statement, one rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw

USERS = (
    "SELECT id, active, token_epoch, role, can_sync_by_customer FROM users"
    " WHERE org_id = $1 AND id = ANY($2::uuid[])"
)


@dataclass(frozen=True)
class UserFacts:
    """A subscribed user as the hub sees it."""

    active: bool
    token_epoch: int
    may_select: bool


async def user_facts(
    conn: AsyncConnection, org_id: UUID, user_ids: Sequence[UUID]
) -> dict[UUID, UserFacts]:
    """Current facts of ``user_ids`` (a user missing from the result was deleted)."""
    if not user_ids:
        return {}
    return {
        r["id"]: UserFacts(
            active=bool(r["active"]),
            token_epoch=int(r["token_epoch"]),
            # The same rule as resolvers/sync.py's `_may_select`.
            may_select=r["role"] == "ADMIN" or bool(r["can_sync_by_customer"]),
        )
        for r in await raw.fetch(conn, USERS, org_id, list(user_ids))
    }
