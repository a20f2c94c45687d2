"""Types of the live `changes` subscription."""

from __future__ import annotations

import strawberry

from schema.sync import Change


@strawberry.type(
    description="A batch of live changes for a device: catch-up pages first, then one batch"
    " per committed transaction that touches its customers (see docs/subscriptions.md)."
)
class ChangeBatch:
    """One `next` payload of the `changes` subscription."""

    changes: list[Change] = strawberry.field(
        description="In seq order; each record at most once per batch."
    )
    checkpoint: str = strawberry.field(
        description="Store it after applying the batch; resume (subscription or `pull`) from it."
    )
    evicted_customer_ids: list[strawberry.ID] = strawberry.field(
        description="Customers to drop from the device (unselected or archived)."
    )
