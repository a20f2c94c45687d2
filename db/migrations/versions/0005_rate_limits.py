"""Rate-limit events: login attempts and password reveals per email and per address.

Several workers and instances serve one database, so the sliding windows live here rather
than in process memory. Logins happen before a tenant is known, so this table has no
``org_id`` and no row-level security; keys are SHA-256 digests, never raw emails or
addresses. The app role may read, add and prune rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the table, its index and the app role's grants."""
    op.create_table(
        "rate_limit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
    )
    op.create_index("ix_rate_limit_events_kind_key_at", "rate_limit_events", ["kind", "key", "at"])
    role = context.config.attributes.get("app_role", "fieldsync_app")
    op.execute(f'GRANT SELECT, INSERT, DELETE ON "rate_limit_events" TO "{role}"')


def downgrade() -> None:
    """Drop the table."""
    op.drop_index("ix_rate_limit_events_kind_key_at", table_name="rate_limit_events")
    op.drop_table("rate_limit_events")
