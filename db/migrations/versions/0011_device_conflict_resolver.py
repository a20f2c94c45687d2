"""Devices say who resolves their conflicts: the server (the tenant's policy) or the app.

``SERVER`` (every existing device) keeps today's behaviour: the tenant's policy per record
type settles a field changed on both sides, and ``MANUAL`` stores a conflict for a person.
A ``CLIENT`` device gets every conflict back in its push result, with the record, and
pushes its own decision; nothing is stored for it. The check keeps any other value out,
so the push never meets a resolver it does not know.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The column (a constant default: no table rewrite) and its check."""
    op.add_column(
        "devices",
        sa.Column(
            "conflict_resolver", sa.Text(), server_default=sa.text("'SERVER'"), nullable=False
        ),
    )
    op.create_check_constraint(
        op.f("ck_devices_conflict_resolver"),
        "devices",
        "conflict_resolver IN ('SERVER', 'CLIENT')",
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_constraint(op.f("ck_devices_conflict_resolver"), "devices", type_="check")
    op.drop_column("devices", "conflict_resolver")
