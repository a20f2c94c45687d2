"""Row-level security and app-role grants for tenant tables, shared by migrations."""

from __future__ import annotations

from collections.abc import Iterable

from alembic import op

# A missing or empty setting becomes NULL, so a transaction without a tenant matches no row.
CURRENT_ORG = "NULLIF(current_setting('app.org_id', true), '')::uuid"


def secure_tenant_tables(
    role: str, tables: Iterable[str], privileges: str = "SELECT, INSERT, UPDATE, DELETE"
) -> None:
    """Grant the app role ``privileges`` and enable + force a tenant-isolation policy on
    each table."""
    for table in tables:
        op.execute(f'GRANT {privileges} ON "{table}" TO "{role}"')
        op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
        op.execute(
            f'CREATE POLICY tenant_isolation ON "{table}" '
            f"USING (org_id = {CURRENT_ORG}) WITH CHECK (org_id = {CURRENT_ORG})"
        )
