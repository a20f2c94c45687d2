"""Stored values back in their fields' shapes.

Before every write path checked shapes (sync/validation.py ``shape_errors``), a conflict's
MERGE values could store ``{"evil": true}`` where a list of phones belongs, ``customFields:
[]`` stored a list where a map belongs, and a blank email was accepted (and then "taken"
for everyone). Reads of such rows failed. This puts the containers of existing rows back in
shape: a blank email becomes null, a map field that holds anything else an empty map, a
list field that holds anything else an empty list. It writes no new version: the values
were unreadable, so no device could have held them in a form worth syncing again, and the
next edit of the record goes through the write path as usual.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 06:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# table -> (map columns, list columns, email column)
_SHAPES = {
    "customers": (
        ("custom_fields", "settings"),
        ("phones", "addresses", "notification_emails", "invoice_cc_emails"),
        "email",
    ),
    "contacts": (("custom_fields",), ("phones",), "email"),
    "facilities": (("custom_fields", "address"), (), None),
    "assets": (("custom_fields",), (), None),
}


def upgrade() -> None:
    """One UPDATE per table, touching only rows out of shape."""
    for table, (maps, lists, email) in _SHAPES.items():
        sets = [
            f"{c} = CASE WHEN jsonb_typeof({c}) = 'object' THEN {c} ELSE '{{}}'::jsonb END"
            for c in maps
        ] + [
            f"{c} = CASE WHEN jsonb_typeof({c}) = 'array' THEN {c} ELSE '[]'::jsonb END"
            for c in lists
        ]
        wrong = [f"jsonb_typeof({c}) IS DISTINCT FROM 'object'" for c in maps] + [
            f"jsonb_typeof({c}) IS DISTINCT FROM 'array'" for c in lists
        ]
        if email is not None:
            sets.append(f"{email} = CASE WHEN btrim({email}) = '' THEN NULL ELSE {email} END")
            wrong.append(f"btrim({email}) = ''")
        # Across tenants: the owner is exempt from row-level security only while it is not
        # forced (a superuser always is); the migration's transaction makes this atomic.
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE {' OR '.join(wrong)}")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    """Nothing to undo: the values put back in shape were unreadable."""
