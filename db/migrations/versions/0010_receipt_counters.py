"""Push receipts remember their change's counter.

A device's batches may reach the server in any order (sent in parallel, one per record
type, as offline-first clients do): a counter below the highest one pushed is no longer a
sign of a restored app by itself. A counter already carried by another stored change is:
so each receipt keeps its counter, and an index finds them by device. Receipts stored
before this migration have none (their counters cannot be checked for reuse).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The column and its index."""
    op.add_column("push_receipts", sa.Column("counter", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_push_receipts_device_counter",
        "push_receipts",
        ["org_id", "device_id", "counter"],
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_push_receipts_device_counter", table_name="push_receipts")
    op.drop_column("push_receipts", "counter")
