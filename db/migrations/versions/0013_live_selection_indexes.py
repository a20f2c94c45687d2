"""Indexes for live delivery: selections and modes changed within a seq window.

Each live read asks which devices' selections (``device_customers.changed_seq``) or modes
(``devices.mode_since_seq``) changed within the batch's seq window, so that those devices
re-pull. Without an index on the seq, the read had to name every device with an open
subscription on the worker (an array of up to 10,000 ids per read, ~200 ms at 10,000
subscriptions). With these indexes it reads the window's few rows by range and the worker
keeps the ones it serves.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 14:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two indexes."""
    op.create_index(
        "ix_device_customers_org_changed", "device_customers", ["org_id", "changed_seq"]
    )
    op.create_index("ix_devices_org_mode_since", "devices", ["org_id", "mode_since_seq"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_devices_org_mode_since", table_name="devices")
    op.drop_index("ix_device_customers_org_changed", table_name="device_customers")
