"""Per-type feeds and evictions as records (sync contract v2).

- ``devices.feed_positions``: where each record type's feed of the device stands. A device
  may run one feed per type at once; each pull merges only its own types' keys, and
  ``checkpoint_seq`` (sync state, compaction horizon) becomes the least of them. Devices
  that pulled before have pulled every type together: each type starts at their checkpoint.
- ``devices.selected_since_seq``: the last switch from ALL to SELECTED. A pull from before
  it evicts the customers not chosen then, even once the device is back in ALL mode (then
  evicted first, and sent whole again). Devices in SELECTED mode switched at their mode seq.
- ``device_customers.left_seq``: the last seq the device unselected the customer at, kept
  when it is selected again, so a pull from before evicts it first and then sends it whole.
  Unselections before this migration are not known as such: a customer unselected and
  selected again before it is only sent whole again, as before.

Constant defaults: no table rewrite.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The record types of contract v1's one feed.
TYPES = ("customer", "contact", "facility", "asset", "credential")


def upgrade() -> None:
    """Add the columns and start every type's feed where the device's pulls stood."""
    op.add_column(
        "devices",
        sa.Column(
            "feed_positions",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "devices",
        sa.Column(
            "selected_since_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column(
        "device_customers",
        sa.Column("left_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    types = ", ".join(f"'{t}'" for t in TYPES)
    # Across tenants: the owner is exempt from row-level security only while it is not
    # forced (a superuser always is); the migration's transaction makes this atomic.
    op.execute("ALTER TABLE devices NO FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""
        UPDATE devices SET feed_positions = (
          SELECT jsonb_object_agg(t, checkpoint_seq) FROM unnest(ARRAY[{types}]) AS t)
        WHERE last_pull_at IS NOT NULL
        """
    )
    op.execute(
        "UPDATE devices SET selected_since_seq = mode_since_seq WHERE selection_mode = 'SELECTED'"
    )
    op.execute("ALTER TABLE devices FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    """Drop them (checkpoint_seq keeps the slowest feed's position)."""
    op.drop_column("device_customers", "left_seq")
    op.drop_column("devices", "selected_since_seq")
    op.drop_column("devices", "feed_positions")
