"""An index for pulls: customers re-enabled after a checkpoint.

A pull backfills the customers that became visible to a device after its checkpoint. In ALL
mode, once the device's mode is older than the checkpoint, those are only the customers
restored (re-enabled) since: without this index every page scanned the tenant's customers
to find none. Partial (only customers ever re-enabled): every other customer update, which
cannot be HOT because `seq` is indexed, would otherwise pay one more index insertion.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 15:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the index."""
    op.create_index(
        "ix_customers_org_restored",
        "customers",
        ["org_id", "restored_seq"],
        postgresql_where=sa.text("restored_seq > 0"),
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_customers_org_restored", table_name="customers")
