"""Types of the live `changes` subscription."""

from __future__ import annotations

import strawberry

from schema.encoding import Nested, ObjectSpec
from schema.sync import CHANGE, Change


@strawberry.type(
    description="A batch of live changes for a device: catch-up pages first, then one batch"
    " per committed transaction that touches its customers (see docs/subscriptions.md)."
)
class ChangeBatch:
    """One `next` payload of the `changes` subscription."""

    changes: list[Change] = strawberry.field(
        description="In seq order; each record at most once per batch, except a customer"
        " that left and came back: EVICTs first, then whole."
    )
    checkpoint: str = strawberry.field(
        description="Store it after applying the batch; resume (subscription or `pull`, with"
        " the same `types`) from it."
    )
    reset: bool = strawberry.field(
        description="The feed started over (the checkpoint was older than the tombstone"
        " horizon): drop every local record of the feed's types, then apply this batch."
    )


# A ChangeBatch from a live batch (``sync.hub.Batch``).
CHANGE_BATCH = ObjectSpec(
    name="ChangeBatch",
    fields={
        "changes": Nested("v.changes", CHANGE),
        "checkpoint": "v.checkpoint",
        "reset": "v.reset",
    },
)
